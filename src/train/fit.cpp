// train/fit.cpp — running a compiled model: fit (epochs of device-side batches, metrics read once
// per epoch), evaluate, predict, and the per-batch calls (train_on_batch, test_on_batch, ...).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

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
  Tensor x, y, perm;
  std::unique_ptr<data::BatchPrefetcher> prefetch;
  int64_t n = 0, batch = 0;

  DataSource(const Dataset& d, int64_t B, Device dev, DataPlacement placement) : n(d.size()), batch(B) {
    if (placement == DataPlacement::Auto) {
      const size_t bytes = d.x.nbytes() + (d.y.defined() ? d.y.nbytes() : 0);
      placement = dev.is_cuda() && bytes > cuda_device_info(dev.index()).total_memory / 2 ? DataPlacement::Stream
                                                                                          : DataPlacement::Device;
    }
    if (placement == DataPlacement::Stream) {
      prefetch = std::make_unique<data::BatchPrefetcher>(d.x, d.y, B, dev);
      x = prefetch->x();
      y = prefetch->y();
      std::vector<int32_t> slots(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) slots[i] = static_cast<int32_t>(i % (2 * B));
      perm = Tensor::from_vector(slots, Shape{n}, dev);
      return;
    }
    x = d.x.device() == dev ? d.x : d.x.to(dev);
    y = d.y.device() == dev ? d.y : d.y.to(dev);
    perm = Tensor::zeros(Shape{n}, DType::i32, dev);
  }
  /// The program's view of these rows.
  Model::Impl::DataSpec spec(const Dataset& d) const {
    Model::Impl::DataSpec s;
    s.x = x.shape();
    s.y = y.shape();
    s.x_dtype = x.dtype();
    s.y_dtype = y.dtype();
    s.tx = x;
    s.ty = y;
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

/// Throws unless x is (N, <the model's input shape>) with N rows; names both shapes.
void check_input(const Model::Impl& m, const Tensor& x, const char* what) {
  if (!x.defined()) CUDL_FAIL("model ", m.name, ": ", what, ": x is undefined");
  const Shape& in = m.input->shape;
  std::vector<int64_t> want{x.shape().rank() > 0 ? x.shape()[0] : 0};
  want.insert(want.end(), in.dims().begin(), in.dims().end());
  if (x.shape() != Shape(want))
    CUDL_FAIL("model ", m.name, ": ", what, ": x is ", x.shape(), " but the model takes ", Shape(want));
}

/// x as f32: u8 images become (u / 255 - mean) / std on the host.
Tensor as_f32(const Model::Impl& m, const Tensor& x, float mean, float stdv, const char* what) {
  if (x.dtype() == DType::f32) return x;
  if (x.dtype() != DType::u8) CUDL_FAIL("model ", m.name, ": ", what, ": x must be f32 or u8, got ", x.dtype());
  std::vector<uint8_t> raw = x.to(Device::cpu()).to_vector<uint8_t>();
  std::vector<float> f(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) f[i] = (raw[i] / 255.f - mean) / stdv;
  return Tensor::from_vector(f, x.shape());
}

/// A per-batch call's (x, y) after checking them (compiled model, x's shape, rows, targets); x as f32.
Tensor checked_batch(Model::Impl& m, const Tensor& x, const Tensor& y, const char* what) {
  m.require_compiled(what);
  check_input(m, x, what);
  if (x.shape()[0] == 0) CUDL_FAIL("model ", m.name, ": ", what, " on an empty batch");
  if (!y.defined()) CUDL_FAIL("model ", m.name, ": ", what, ": y is undefined");
  m.check_targets(y, x.shape()[0]);
  return as_f32(m, x, 0.f, 1.f, what);
}

/// Copies a batch into a per-batch program's input buffers (y may be given as any shape of its numel).
void feed(Model::Impl::Program& p, const Tensor& x, const Tensor& y) {
  p.exec->tensor(p.x).copy_from(x);
  Tensor dst = p.exec->tensor(p.y);
  if (y.numel() != dst.numel())
    CUDL_FAIL("model: the batch's targets are ", y.shape(), ", the model needs ", dst.shape());
  dst.copy_from(y.reshape(dst.shape()));
}

/// The cached per-batch program of `rows` rows, built by `make` on first use.
template <typename Make>
Model::Impl::Program& batch_program(std::map<int64_t, Model::Impl::Program>& cache, int64_t rows, Make make) {
  auto it = cache.find(rows);
  if (it == cache.end()) it = cache.emplace(rows, make()).first;
  return it->second;
}

}  // namespace

void Model::Impl::collect_profile(const graph::Executor& e) {
  for (const auto& op : e.profile()) {
    auto& p = profile[op.op];
    p.op = op.op;
    p.calls += op.calls;
    p.total_ms += op.total_ms;
  }
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
  check_input(m, train.x, "fit");
  if (!train.y.defined()) CUDL_FAIL("model ", m.name, ": fit: y is undefined");
  m.check_targets(train.y, N);
  if (valp) {
    check_input(m, valp->x, "validation data");
    if (!valp->y.defined()) CUDL_FAIL("model ", m.name, ": validation data: y is undefined");
    m.check_targets(valp->y, valp->size());
  }
  const Device dev = m.opts.device;
  const int64_t B = std::min(fo.batch_size, N), full = N / B, rest = N % B;
  if (fo.augment && (fo.augment_shift < 0 || !(fo.augment_rotation >= 0 && fo.augment_rotation <= 180)))
    CUDL_FAIL("model ", m.name, ": augment_shift must be >= 0 and augment_rotation in [0, 180] degrees, got ",
              fo.augment_shift, " and ", fo.augment_rotation);
  // The dataset lives on the device for the whole fit (batches are gathered there), or streams.
  DataSource src(train, B, dev, fo.data_placement);
  Impl::DataSpec spec = src.spec(train);
  spec.augment = &fo;
  graph::ExecutorOptions eo = m.exec_options();
  if (fo.debug_nonfinite) {
    eo.check_finite = true;
    eo.cuda_graphs = false;
  }
  Impl::Program main = m.train_program(B, spec, &eo);
  m.report = m.plan(B);
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
    src.begin_epoch(order);
    m.cursor.fill(0);
    for (auto& [k, t] : m.accumulators) t.fill(0);
    const int64_t steps = full + (rest ? 1 : 0);
    const bool tty = fo.verbose > 0 && stdout_is_tty();
    const int64_t log_every = fo.log_every > 0 ? fo.log_every : std::max<int64_t>(1, steps / 20);
    for (int64_t s = 0; s < steps; ++s) {
      src.run_step(s, *(s < full ? main : tail).exec);
      ++m.step;
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
    std::map<std::string, double> logs = m.read_metrics(static_cast<double>(N));
    if (fo.terminate_on_nan && !std::isfinite(logs["loss"]))
      CUDL_FAIL("model ", m.name, ": epoch ", epoch + 1, ": the training loss is ", logs["loss"],
                " (diverged: lower the learning rate, or check the data for NaN/Inf); set "
                "FitOptions::terminate_on_nan = false to train on");
    if (valp) {
      EvalResult r = evaluate(*valp, std::max<int64_t>(B, 256));
      for (const auto& [k, v] : r.metrics) logs["val_" + k] = v;
    }
    logs["epoch_seconds"] = secs;
    for (const auto& [k, v] : logs)
      if (k != "epoch_seconds") h.metrics[k].push_back(v);
    h.metrics["epoch_seconds"].push_back(secs);
    if (fo.verbose > 0) {
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
  for (auto& cb : fo.callbacks) cb->on_train_end(*this);
  return h;
}

EvalResult Model::evaluate(const Dataset& data, int64_t batch_size, DataPlacement placement) {
  Impl& m = impl();
  m.require_compiled("evaluate");
  const int64_t N = data.size();
  if (N == 0) CUDL_FAIL("model ", m.name, ": evaluate on an empty dataset");
  check_input(m, data.x, "evaluate");
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

Tensor Model::predict(const Dataset& data, int64_t batch_size) {
  Impl& m = impl();
  m.require_compiled("predict");
  check_input(m, data.x, "predict");
  if (batch_size <= 0) CUDL_FAIL("model ", m.name, ": predict batch_size must be positive, got ", batch_size);
  const int64_t N = data.x.shape()[0];
  std::vector<int64_t> od{N};
  od.insert(od.end(), m.output->shape.dims().begin(), m.output->shape.dims().end());
  Tensor out = Tensor::empty(Shape(od), DType::f32, Device::cpu());
  if (N == 0) return out;
  const Tensor xf = as_f32(m, data.x, data.mean, data.std, "predict");
  const int64_t B = std::min(batch_size, N);
  const size_t in_row = xf.nbytes() / N, out_row = out.nbytes() / N;
  for (int64_t s = 0; s < N; s += B) {
    const int64_t b = std::min(B, N - s);
    Impl::Program& p = batch_program(m.predict_batch, b, [&] { return m.predict_program(b); });
    Tensor dst = p.exec->tensor(p.x);
    dst.copy_from(xf.view_bytes(s * in_row, dst.shape(), DType::f32));
    p.exec->run();
    Tensor res = p.exec->tensor(p.out);
    out.view_bytes(s * out_row, res.shape(), DType::f32).copy_from(res);
  }
  return out;
}

Tensor Model::predict(const Tensor& x, int64_t batch_size) {
  Dataset d;
  d.x = x;
  return predict(d, batch_size);
}

Logs Model::train_on_batch(const Tensor& x, const Tensor& y, bool read_logs) {
  Impl& m = impl();
  const Tensor xf = checked_batch(m, x, y, "train_on_batch");
  const int64_t rows = xf.shape()[0];
  Impl::Program& p = batch_program(m.train_batch, rows, [&] {
    Impl::DataSpec feed;
    feed.gather = false;
    m.report = m.plan(rows);
    return m.train_program(rows, feed);
  });
  feed(p, xf, y);
  p.exec->run();
  ++m.step;
  m.last_batch_rows = rows;
  return read_logs ? m.read_metrics(static_cast<double>(rows)) : Logs{};
}

Logs Model::last_batch_logs() const {
  Impl& m = impl();
  if (m.last_batch_rows == 0) CUDL_FAIL("model ", m.name, ": last_batch_logs before any train_on_batch");
  return m.read_metrics(static_cast<double>(m.last_batch_rows));
}

Logs Model::test_on_batch(const Tensor& x, const Tensor& y) {
  Impl& m = impl();
  const Tensor xf = checked_batch(m, x, y, "test_on_batch");
  const int64_t rows = xf.shape()[0];
  // Its own accumulators, so the logs of the last train_on_batch stay readable.
  auto saved = m.accumulators;
  m.accumulators.clear();
  Logs logs;
  try {
    Impl::Program& p = batch_program(m.test_batch, rows, [&] {
      Impl::DataSpec feed;
      feed.gather = false;
      return m.eval_program(rows, feed);
    });
    feed(p, xf, y);
    p.exec->run();
    logs = m.read_metrics(static_cast<double>(rows));
  } catch (...) {
    m.accumulators = saved;
    throw;
  }
  m.accumulators = saved;
  return logs;
}

Tensor Model::predict_on_batch(const Tensor& x) {
  Impl& m = impl();
  m.require_compiled("predict_on_batch");
  check_input(m, x, "predict_on_batch");
  if (x.shape()[0] == 0) CUDL_FAIL("model ", m.name, ": predict_on_batch on an empty batch");
  return predict(x, x.shape()[0]);
}

Tensor ensemble_predict(const std::vector<Model*>& models, const Dataset& data, int64_t batch_size) {
  if (models.empty()) CUDL_FAIL("ensemble_predict: no models");
  for (size_t i = 0; i < models.size(); ++i)
    if (!models[i]) CUDL_FAIL("ensemble_predict: model ", i, " is null");
  Tensor sum;
  for (Model* m : models) {
    Tensor p = m->predict(data, batch_size);
    if (!sum.defined()) {
      sum = p;
      continue;
    }
    if (p.shape() != sum.shape())
      CUDL_FAIL("ensemble_predict: models disagree on the output shape: ", sum.shape(), " vs ", p.shape());
    float* s = sum.data_as<float>();
    const float* q = p.data_as<float>();
    for (int64_t i = 0; i < p.numel(); ++i) s[i] += q[i];
  }
  float* s = sum.data_as<float>();
  for (int64_t i = 0; i < sum.numel(); ++i) s[i] /= static_cast<float>(models.size());
  return sum;
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
  Model::Impl::DataSpec spec;
  spec.tx = data.x.to(dev);
  spec.ty = data.y.to(dev);
  spec.perm = Tensor::from_vector(order, Shape{n}, dev);
  spec.x = spec.tx.shape();
  spec.y = spec.ty.shape();
  spec.x_dtype = spec.tx.dtype();
  spec.y_dtype = spec.ty.dtype();
  spec.mean = data.mean;
  spec.std = data.std;
  return m.train_program(batch, spec, &options).exec;
}

}  // namespace cudl
