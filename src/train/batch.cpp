// train/batch.cpp — a compiled model on data the host hands over: predict, the per-batch calls
// (train_on_batch, test_on_batch, predict_on_batch) on cached programs, and ensembles.
#include "cudl/error.hpp"
#include "train/model_impl.hpp"

namespace cudl {

namespace {

/// x as the model's input takes it: u8 images become (u / 255 - mean) / std in f32 on the host;
/// f32 features and i32 indices pass as they are (check_input has matched them to the model).
Tensor as_input(const Model::Impl& m, const Tensor& x, float mean, float stdv, const char* what) {
  if (x.dtype() == DType::f32 || x.dtype() == DType::i32) return x;
  if (x.dtype() != DType::u8) CUDL_FAIL("model ", m.name, ": ", what, ": x must be f32 or u8, got ", x.dtype());
  std::vector<uint8_t> raw = x.to(Device::cpu()).to_vector<uint8_t>();
  std::vector<float> f(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) f[i] = (raw[i] / 255.f - mean) / stdv;
  return Tensor::from_vector(f, x.shape());
}

/// Every input as the model takes it (as_input).
std::vector<Tensor> as_inputs(const Model::Impl& m, const std::vector<Tensor>& xs, float mean, float stdv,
                              const char* what) {
  std::vector<Tensor> out;
  for (const Tensor& x : xs) out.push_back(as_input(m, x, mean, stdv, what));
  return out;
}

/// A per-batch call's (xs, y) after checking them (compiled model, each input's shape, rows,
/// targets); the inputs as the model takes them.
std::vector<Tensor> checked_batch(Model::Impl& m, const std::vector<Tensor>& xs, const Tensor& y, const char* what) {
  m.require_compiled(what);
  m.check_inputs(xs, what);
  if (xs[0].shape()[0] == 0) CUDL_FAIL("model ", m.name, ": ", what, " on an empty batch");
  if (!y.defined()) CUDL_FAIL("model ", m.name, ": ", what, ": y is undefined");
  m.check_targets(y, xs[0].shape()[0]);
  return as_inputs(m, xs, 0.f, 1.f, what);
}

/// Copies a batch into a per-batch program's input buffers (y may be given as any shape of its numel).
void feed(const Model::Impl& m, Model::Impl::Program& p, const std::vector<Tensor>& xs, const Tensor& y) {
  Tensor dst = p.exec->tensor(p.y);
  if (y.numel() != dst.numel())
    CUDL_FAIL("model ", m.name, ": the batch's targets are ", y.shape(), " but its loss needs ", dst.shape());
  for (size_t k = 0; k < xs.size(); ++k) p.exec->tensor(p.x[k]).copy_from(xs[k]);
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

Tensor Model::predict(const Dataset& data, int64_t batch_size) {
  Impl& m = impl();
  m.require_compiled("predict");
  m.check_inputs(data, "predict");
  if (batch_size <= 0) CUDL_FAIL("model ", m.name, ": predict batch_size must be positive, got ", batch_size);
  const int64_t N = data.size();
  std::vector<int64_t> od{N};
  od.insert(od.end(), m.output->shape.dims().begin(), m.output->shape.dims().end());
  Tensor out = Tensor::empty(Shape(od), DType::f32, Device::cpu());
  if (N == 0) return out;
  const std::vector<Tensor> xf = as_inputs(m, data.inputs(), data.mean, data.std, "predict");
  const int64_t B = std::min(batch_size, N);
  const size_t out_row = out.nbytes() / N;
  for (int64_t s = 0; s < N; s += B) {
    const int64_t b = std::min(B, N - s);
    Impl::Program& p = batch_program(m.predict_batch, b, [&] { return m.predict_program(b); });
    for (size_t k = 0; k < xf.size(); ++k) {
      Tensor dst = p.exec->tensor(p.x[k]);
      dst.copy_from(xf[k].view_bytes(s * (xf[k].nbytes() / N), dst.shape(), xf[k].dtype()));
    }
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

Tensor Model::predict(const std::vector<Tensor>& xs, int64_t batch_size) {
  Dataset d;
  d.xs = xs;
  return predict(d, batch_size);
}

Logs Model::train_on_batch(const Tensor& x, const Tensor& y, bool read_logs) {
  return train_on_batch(std::vector<Tensor>{x}, y, read_logs);
}

Logs Model::train_on_batch(const std::vector<Tensor>& xs, const Tensor& y, bool read_logs) {
  Impl& m = impl();
  const std::vector<Tensor> xf = checked_batch(m, xs, y, "train_on_batch");
  const int64_t rows = xf[0].shape()[0];
  Impl::Program& p = batch_program(m.train_batch, rows, [&] {
    Impl::DataSpec feed;
    feed.gather = false;
    Impl::Program p = m.train_program(rows, feed);
    m.report = m.report_of(p.exec->graph(), p.exec->plan(), rows);
    return p;
  });
  feed(m, p, xf, y);
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

Logs Model::test_on_batch(const Tensor& x, const Tensor& y) { return test_on_batch(std::vector<Tensor>{x}, y); }

Logs Model::test_on_batch(const std::vector<Tensor>& xs, const Tensor& y) {
  Impl& m = impl();
  const std::vector<Tensor> xf = checked_batch(m, xs, y, "test_on_batch");
  const int64_t rows = xf[0].shape()[0];
  // Its own accumulators, so the logs of the last train_on_batch stay readable; they persist
  // across calls because the cached programs of earlier calls write them.
  auto saved = m.accumulators;
  m.accumulators = m.test_accumulators;
  Logs logs;
  try {
    Impl::Program& p = batch_program(m.test_batch, rows, [&] {
      Impl::DataSpec feed;
      feed.gather = false;
      return m.eval_program(rows, feed);
    });
    feed(m, p, xf, y);
    p.exec->run();
    logs = m.read_metrics(static_cast<double>(rows));
  } catch (...) {
    m.test_accumulators = m.accumulators;
    m.accumulators = saved;
    throw;
  }
  m.test_accumulators = m.accumulators;
  m.accumulators = saved;
  return logs;
}

Tensor Model::predict_on_batch(const Tensor& x) { return predict_on_batch(std::vector<Tensor>{x}); }

Tensor Model::predict_on_batch(const std::vector<Tensor>& xs) {
  Impl& m = impl();
  m.require_compiled("predict_on_batch");
  m.check_inputs(xs, "predict_on_batch");
  if (xs[0].shape()[0] == 0) CUDL_FAIL("model ", m.name, ": predict_on_batch on an empty batch");
  return predict(xs, xs[0].shape()[0]);
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

}  // namespace cudl
