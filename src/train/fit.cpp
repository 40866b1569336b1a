// train/fit.cpp — running a compiled model over a dataset: fit (epochs of device-side batches,
// metrics read once per epoch) and evaluate. Prediction and the per-batch calls are in batch.cpp.
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

#include "cudl/distributed.hpp"
#include "cudl/error.hpp"
#include "data/prefetch.hpp"
#include "train/model_impl.hpp"
#include "train/model_internals.hpp"

namespace cudl {

namespace {

bool stdout_is_tty() { return isatty(fileno(stdout)) != 0; }

/// The rows the data nodes gather from. Device placement: the dataset on the device and the
/// epoch's order as the permutation. Streaming: a prefetcher's two staging slots and the fixed
/// permutation i -> i mod (2 * batch), so step s reads slot s % 2, where its rows were staged.
struct DataSource {
  std::vector<Tensor> x;  // one table per model input
  Tensor y, perm;
  std::unique_ptr<data::BatchPrefetcher> prefetch;
  int64_t n = 0, batch = 0;  // n: rows of an epoch's order (the dataset's, or this rank's shard)

  DataSource(const Dataset& d, int64_t B, Device dev, DataPlacement placement, int64_t order_rows = -1)
      : n(order_rows >= 0 ? order_rows : d.size()), batch(B) {
    const std::vector<Tensor> xs = d.inputs();
    if (placement == DataPlacement::Auto) {
      size_t bytes = d.y.defined() ? d.y.nbytes() : 0;
      for (const Tensor& t : xs) bytes += t.nbytes();
      const bool fits = !dev.is_cuda() || bytes <= cuda_device_info(dev.index()).total_memory / 2;
      if (!fits && xs.size() > 1)
        CUDL_FAIL("the ", xs.size(), " inputs and targets take ", bytes, " bytes, more than half of ", dev,
                  "'s memory, and streaming takes single-input data only");
      placement = fits ? DataPlacement::Device : DataPlacement::Stream;
    }
    if (placement == DataPlacement::Stream) {
      if (xs.size() > 1)
        CUDL_FAIL("DataPlacement::Stream streams single-input data; this data has ", xs.size(),
                  " inputs (use DataPlacement::Device)");
      prefetch = std::make_unique<data::BatchPrefetcher>(xs[0], d.y, B, dev);
      x = {prefetch->x()};
      y = prefetch->y();
      std::vector<int32_t> slots(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) slots[i] = static_cast<int32_t>(i % (2 * B));
      perm = Tensor::from_vector(slots, Shape{n}, dev);
      return;
    }
    for (const Tensor& t : xs) x.push_back(t.device() == dev ? t : t.to(dev));
    y = d.y.device() == dev ? d.y : d.y.to(dev);
    perm = Tensor::zeros(Shape{n}, DType::i32, dev);
  }
  /// The program's view of these rows.
  Model::Impl::DataSpec spec(const Dataset& d) const {
    Model::Impl::DataSpec s;
    s.set_tables(x, y);
    s.perm = perm;
    s.mean = d.mean;
    s.std = d.std;
    return s;
  }
  /// The epoch's order of rows (each batch takes the next `batch` of them).
  void begin_epoch(const std::vector<int32_t>& order) {
    order_ = &order;
    if (!prefetch)
      perm.copy_from(Tensor::from_vector(order, Shape{n}));  // one upload per epoch
    else
      stage(0);
  }
  /// Runs step s of the epoch: when streaming, stages step s + 1 first (its copy overlaps step s)
  /// and orders step s after its own copy.
  void run_step(int64_t s, graph::Executor& exec) {
    if (prefetch) {
      if ((s + 1) * batch < n) stage(s + 1);
      prefetch->begin_step(s);
    }
    exec.run();
    if (prefetch) prefetch->end_step(s);
  }

 private:
  void stage(int64_t s) { prefetch->stage(s, order_->data() + s * batch, std::min(batch, n - s * batch)); }
  const std::vector<int32_t>* order_ = nullptr;
};

}  // namespace

void Model::Impl::check_inputs(const Dataset& d, const char* what) const {
  if (d.x.defined() && !d.xs.empty())
    CUDL_FAIL("model ", name, ": ", what, ": the dataset gives both x and xs (", d.xs.size(),
              " tensors); a multi-input model takes xs only, a single-input one x");
  check_inputs(d.inputs(), what);
}

void Model::Impl::check_inputs(const std::vector<Tensor>& xs, const char* what) const {
  if (xs.size() != inputs.size()) {
    std::string names;
    for (const detail::VarNode* in : inputs) names += (names.empty() ? "'" : ", '") + in->name + "'";
    CUDL_FAIL("model ", name, ": ", what, ": got ", xs.size(), " input tensors but the model takes ", inputs.size(),
              " (", names, ")", inputs.size() > 1 ? ": give one per input (Dataset::xs)" : "");
  }
  for (size_t k = 0; k < xs.size(); ++k) {
    const Tensor& x = xs[k];
    const std::string label = input_label(k);
    if (!x.defined()) CUDL_FAIL("model ", name, ": ", what, ": ", label, " is undefined");
    const Shape& in = inputs[k]->shape;
    std::vector<int64_t> want{x.shape().rank() > 0 ? x.shape()[0] : 0};
    want.insert(want.end(), in.dims().begin(), in.dims().end());
    if (x.shape() != Shape(want))
      CUDL_FAIL("model ", name, ": ", what, ": ", label, " is ", x.shape(), " but the model takes ", Shape(want));
    if (!input_accepts(k, x.dtype()))
      CUDL_FAIL("model ", name, ": ", what, ": ", label, " is ", x.dtype(), " but the model takes ",
                inputs[k]->dtype == DType::i32 ? "i32 indices" : "f32 or u8 images");
    if (x.shape()[0] != xs[0].shape()[0])
      CUDL_FAIL("model ", name, ": ", what, ": ", label, " has ", x.shape()[0], " rows but ", input_label(0), " has ",
                xs[0].shape()[0]);
  }
}

namespace {

/// The first non-finite element of an f32 tensor (its flat index), or -1. Other dtypes: -1.
int64_t first_nonfinite(const Tensor& t) {
  if (!t.defined() || t.dtype() != DType::f32) return -1;
  const std::vector<float> v = t.to_vector<float>();
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) return static_cast<int64_t>(i);
  return -1;
}

}  // namespace

void Model::Impl::check_finite_data(const Dataset& d, const char* what) const {
  const std::vector<Tensor> xs = d.inputs();
  std::vector<std::pair<const Tensor*, std::string>> all;
  for (size_t k = 0; k < xs.size(); ++k) all.emplace_back(&xs[k], input_label(k));
  all.emplace_back(&d.y, "y");
  for (const auto& [t, which] : all) {
    const int64_t i = first_nonfinite(*t);
    if (i < 0) continue;
    const int64_t row = t->shape()[0] > 0 ? t->numel() / t->shape()[0] : 1;
    CUDL_FAIL("model ", name, ": ", what, ": ", which, " ", t->shape(), " holds ", t->to_vector<float>()[i],
              " at sample ", i / row, ", element ", i % row,
              " (one non-finite input poisons the weights); set FitOptions::terminate_on_nan = false to train on");
  }
}

void Model::Impl::check_finite_weights(int epoch) const {
  // A NaN can hide from the loss: a fused Dense+ReLU maps NaN to 0, so NaN weights below it can
  // still give finite logits. The parameters are read once per epoch (no per-step cost).
  for (const LayerPtr& l : layer_list)
    for (const auto& [pname, t] : std::as_const(*l).params()) {
      const int64_t i = first_nonfinite(t);
      if (i < 0) continue;
      CUDL_FAIL("model ", name, ": epoch ", epoch + 1, ": layer ", layer_name(l.get()), "'s ", pname, " ",
                t.shape(), " holds ", t.to_vector<float>()[i], " at element ", i,
                " (diverged: lower the learning rate, or check the data for NaN/Inf); set "
                "FitOptions::terminate_on_nan = false to train on");
    }
}

void Model::Impl::collect_profile(const graph::Executor& e) {
  for (const auto& op : e.profile()) {
    auto& p = profile[op.op];
    p.op = op.op;
    p.calls += op.calls;
    p.total_ms += op.total_ms;
  }
}

int Model::Impl::world_size() const { return opts.communicator ? opts.communicator->size() : 1; }
int Model::Impl::world_rank() const { return opts.communicator ? opts.communicator->rank() : 0; }

void Model::Impl::all_reduce_metrics() {
  for (auto& [k, t] : accumulators) opts.communicator->all_reduce(t, /*average=*/false);  // same keys, same order
}

History Model::fit(const Dataset& train_in, const FitOptions& fo) {
  Impl& m = impl();
  m.require_compiled("fit");
  if (fo.batch_size <= 0) CUDL_FAIL("model ", m.name, ": batch_size must be positive, got ", fo.batch_size);
  if (fo.epochs < 0) CUDL_FAIL("model ", m.name, ": epochs must be >= 0, got ", fo.epochs);
  Dataset train = train_in;
  Dataset val;
  const Dataset* valp = fo.validation_data;
  if (fo.validation_split > 0) {
    if (fo.validation_split >= 1)
      CUDL_FAIL("model ", m.name, ": validation_split must be in [0, 1), got ", fo.validation_split);
    const int64_t n = train_in.size(), nv = static_cast<int64_t>(n * fo.validation_split);
    if (nv > 0) {
      val = train_in.slice(n - nv, n);
      train = train_in.slice(0, n - nv);
      valp = &val;
    }
  }
  const int64_t N = train.size();
  if (N == 0) CUDL_FAIL("model ", m.name, ": empty training set");
  m.check_inputs(train, "fit");
  if (!train.y.defined()) CUDL_FAIL("model ", m.name, ": fit: y is undefined");
  m.check_targets(train.y, N);
  if (valp) {
    m.check_inputs(*valp, "validation data");
    if (!valp->y.defined()) CUDL_FAIL("model ", m.name, ": validation data: y is undefined");
    m.check_targets(valp->y, valp->size());
  }
  if (fo.terminate_on_nan) {
    m.check_finite_data(train, "fit");
    if (valp) m.check_finite_data(*valp, "validation data");
  }
  const Device dev = m.opts.device;
  // Data-parallel: batch_size is the global batch; each rank trains on its slice of every global
  // batch (distributed::shard) and the incomplete last global batch is dropped.
  const int W = m.world_size();
  const int64_t global_batch = std::min(fo.batch_size, N);
  if (global_batch % W != 0)
    CUDL_FAIL("model ", m.name, ": the global batch ", global_batch, " (batch_size ", fo.batch_size, ", ", N,
              " rows) must be a multiple of the ", W, " ranks");
  const int64_t B = global_batch / W, full = N / global_batch, rest = W > 1 ? 0 : N % B;
  const int verbose = m.world_rank() == 0 ? fo.verbose : 0;  // one progress line, rank 0's
  if (fo.augment && (fo.augment_shift < 0 || !(fo.augment_rotation >= 0 && fo.augment_rotation <= 180)))
    CUDL_FAIL("model ", m.name, ": augment_shift must be >= 0 and augment_rotation in [0, 180] degrees, got ",
              fo.augment_shift, " and ", fo.augment_rotation);
  // The dataset lives on the device for the whole fit (batches are gathered there), or streams.
  DataSource src(train, B, dev, fo.data_placement, W > 1 ? full * B : N);
  Impl::DataSpec spec = src.spec(train);
  spec.augment = &fo;
  graph::ExecutorOptions eo = m.exec_options();
  if (fo.debug_nonfinite) {
    eo.check_finite = true;
    eo.cuda_graphs = false;
  }
  Impl::Program main = m.train_program(B, spec, &eo);
  m.report = m.report_of(main.exec->graph(), main.exec->plan(), B);
  Impl::Program tail;
  if (rest) tail = m.train_program(rest, spec, &eo);
  m.profile.clear();

  History h;
  std::vector<int32_t> order(N);
  for (auto& cb : fo.callbacks) cb->on_train_begin(*this);
  stop_ = false;
  // Callbacks and the progress line see the model's global epoch (counting every earlier fit and a
  // resumed checkpoint's epochs), so schedules and checkpoints continue across runs.
  const int64_t last_epoch = m.epochs_done + fo.epochs;
  for (int local = 0; local < fo.epochs && !stop_; ++local) {
    const int epoch = static_cast<int>(m.epochs_done);
    for (auto& cb : fo.callbacks) cb->on_epoch_begin(*this, epoch);
    const auto t0 = std::chrono::steady_clock::now();
    std::iota(order.begin(), order.end(), 0);
    // Each epoch's order depends only on the seeds and the epoch number, so a run resumed from a
    // checkpoint (which stores the epoch) sees the same batches as an uninterrupted one.
    std::mt19937_64 rng(fo.seed ^ (m.opts.seed * 0x9E3779B97F4A7C15ull) ^
                        (static_cast<uint64_t>(m.epochs_done) * 0xD1B54A32D192ED03ull));
    if (fo.shuffle) std::shuffle(order.begin(), order.end(), rng);
    std::vector<int32_t> rank_rows;
    if (W > 1) rank_rows = distributed::shard(order, global_batch, m.world_rank(), W);
    src.begin_epoch(W > 1 ? rank_rows : order);
    m.cursor.fill(0);
    for (auto& [k, t] : m.accumulators) t.fill(0);
    m.epoch_rows = 0;
    const int64_t steps = full + (rest ? 1 : 0);
    const bool tty = verbose > 0 && stdout_is_tty();
    const int64_t log_every = fo.log_every > 0 ? fo.log_every : std::max<int64_t>(1, steps / 20);
    for (int64_t s = 0; s < steps; ++s) {
      src.run_step(s, *(s < full ? main : tail).exec);
      ++m.step;
      m.epoch_rows = std::min<int64_t>((s + 1) * B, N);
      for (auto& cb : fo.callbacks) cb->on_batch_end(*this, m.step);
      if (tty && ((s + 1) % log_every == 0 || s + 1 == steps)) {
        const double seen = static_cast<double>(std::min<int64_t>((s + 1) * B, N));
        const double loss = m.acc("loss").item(0) / seen;
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double eta = el / (s + 1) * (steps - s - 1);
        std::printf("\repoch %d/%lld %5.1f%% loss %.4f  %.0f samples/s  ETA %.1fs   ", epoch + 1, (long long)last_epoch,
                    100.0 * (s + 1) / steps, loss, seen / std::max(el, 1e-9), eta);
        std::fflush(stdout);
      }
    }
    main.exec->synchronize();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (W > 1) m.all_reduce_metrics();  // every rank reports the metrics of the whole epoch
    std::map<std::string, double> logs = m.read_metrics(static_cast<double>(W > 1 ? full * global_batch : N));
    if (fo.terminate_on_nan && !std::isfinite(logs["loss"]))
      CUDL_FAIL("model ", m.name, ": epoch ", epoch + 1, ": the training loss is ", logs["loss"],
                " (diverged: lower the learning rate, or check the data for NaN/Inf); set "
                "FitOptions::terminate_on_nan = false to train on");
    if (fo.terminate_on_nan) m.check_finite_weights(epoch);
    if (valp) {
      EvalResult r = evaluate(*valp, std::max<int64_t>(B, 256));
      for (const auto& [k, v] : r.metrics) logs["val_" + k] = v;
    }
    logs["epoch_seconds"] = secs;
    for (const auto& [k, v] : logs)
      if (k != "epoch_seconds") h.metrics[k].push_back(v);
    h.metrics["epoch_seconds"].push_back(secs);
    if (verbose > 0) {
      std::printf("%sepoch %d/%lld - %.2fs", tty ? "\r" : "", epoch + 1, (long long)last_epoch, secs);
      for (const auto& [k, v] : logs)
        if (k != "epoch_seconds") std::printf(" - %s %.4f", k.c_str(), v);
      std::printf("%s\n", tty ? "          " : "");
      std::fflush(stdout);
    }
    ++m.epochs_done;
    for (auto& cb : fo.callbacks) cb->on_epoch_end(*this, epoch, logs);
  }
  if (m.profiling) {
    m.collect_profile(*main.exec);
    if (tail.exec) m.collect_profile(*tail.exec);
  }
  m.epoch_rows = 0;  // batch_logs is for fit's batch hooks
  for (auto& cb : fo.callbacks) cb->on_train_end(*this);
  return h;
}

EvalResult Model::evaluate(const Dataset& data, int64_t batch_size, DataPlacement placement) {
  Impl& m = impl();
  m.require_compiled("evaluate");
  const int64_t N = data.size();
  if (N == 0) CUDL_FAIL("model ", m.name, ": evaluate on an empty dataset");
  m.check_inputs(data, "evaluate");
  if (!data.y.defined()) CUDL_FAIL("model ", m.name, ": evaluate: y is undefined");
  m.check_targets(data.y, N);
  if (batch_size <= 0) CUDL_FAIL("model ", m.name, ": evaluate batch_size must be positive, got ", batch_size);
  const Device dev = m.opts.device;
  std::vector<int32_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  const int64_t B = std::min(batch_size, N), full = N / B, rest = N % B;
  DataSource src(data, B, dev, placement);
  // Evaluation has its own accumulators and cursor: swap them in, restore after.
  auto saved_acc = m.accumulators;
  Tensor saved_cursor = m.cursor;
  m.accumulators.clear();
  m.cursor = Tensor::zeros(Shape{1}, DType::i64, dev);
  EvalResult r;
  try {
    const Impl::DataSpec spec = src.spec(data);
    Impl::Program main = m.eval_program(B, spec);
    src.begin_epoch(order);
    for (int64_t s = 0; s < full; ++s) src.run_step(s, *main.exec);
    if (rest) {
      Impl::Program tail = m.eval_program(rest, spec);
      src.run_step(full, *tail.exec);
    }
    r.metrics = m.read_metrics(static_cast<double>(N));
  } catch (...) {
    m.accumulators = saved_acc;
    m.cursor = saved_cursor;
    throw;
  }
  m.accumulators = saved_acc;
  m.cursor = saved_cursor;
  return r;
}

std::unique_ptr<graph::Executor> detail::ModelInternals::training_step(Model& model, const Dataset& data, int64_t batch,
                                                                       const graph::ExecutorOptions& options) {
  Model::Impl& m = model.impl();
  m.require_compiled("training_step");
  const Device dev = m.opts.device;
  const int64_t n = data.size();
  if (batch <= 0 || batch > n) CUDL_FAIL("model ", m.name, ": training_step batch ", batch, " for ", n, " rows");
  m.check_targets(data.y, n);
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  m.check_inputs(data, "training_step");
  Model::Impl::DataSpec spec;
  std::vector<Tensor> tables;
  for (const Tensor& t : data.inputs()) tables.push_back(t.to(dev));
  spec.set_tables(std::move(tables), data.y.to(dev));
  spec.perm = Tensor::from_vector(order, Shape{n}, dev);
  spec.mean = data.mean;
  spec.std = data.std;
  return m.train_program(batch, spec, &options).exec;
}

}  // namespace cudl
