// cpu/softmax.cpp — CPU reference implementations of the softmax op family (the spec for these ops):
// softmax and log-softmax along the last axis (max subtracted first) and their gradients.
#include "ops/softmax.hpp"

#include <cmath>
#include <limits>

#include "backend/backend.hpp"
#include "ops/common.hpp"

namespace cudl {

namespace {

// Row maximum; NaN if the row holds one (then every output of the row is NaN, like torch).
double row_max(const float* x, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    if (std::isnan(x[j])) return x[j];
    if (x[j] > m) m = x[j];
  }
  return m;
}

// Softmax / log-softmax of each row: y = exp(x - max) / sum, or (x - max) - log(sum). A row of
// -inf gives NaN (-inf - -inf), a row holding +inf gives NaN (its sum is NaN), like torch.
void softmax_rows(const OpCall& call, bool log) {
  const ops::SoftmaxArgs p = ops::check_softmax_call(call);
  const float* x = p.x.as<float>();
  float* y = p.y.as<float>();
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* xr = x + r * p.cols;
    float* yr = y + r * p.cols;
    const double m = row_max(xr, p.cols);
    double s = 0;
    for (int64_t j = 0; j < p.cols; ++j) s += std::exp(xr[j] - m);
    for (int64_t j = 0; j < p.cols; ++j)
      yr[j] = static_cast<float>(log ? (xr[j] - m) - std::log(s) : std::exp(xr[j] - m) / s);
  }
}

void cpu_softmax(const OpCall& call) { softmax_rows(call, false); }
void cpu_log_softmax(const OpCall& call) { softmax_rows(call, true); }

// softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy).
void softmax_backward_rows(const OpCall& call, bool log) {
  const ops::SoftmaxArgs p = ops::check_softmax_call(call);
  const float* y = p.y.as<float>();
  const float* dy = p.dy.as<float>();
  float* dx = p.dx.as<float>();
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* yr = y + r * p.cols;
    const float* dyr = dy + r * p.cols;
    float* dxr = dx + r * p.cols;
    double s = 0;
    for (int64_t j = 0; j < p.cols; ++j) s += log ? dyr[j] : static_cast<double>(dyr[j]) * yr[j];
    for (int64_t j = 0; j < p.cols; ++j)
      dxr[j] = static_cast<float>(log ? dyr[j] - std::exp(static_cast<double>(yr[j])) * s : yr[j] * (dyr[j] - s));
  }
}

void cpu_softmax_backward(const OpCall& call) { softmax_backward_rows(call, false); }
void cpu_log_softmax_backward(const OpCall& call) { softmax_backward_rows(call, true); }

}  // namespace

void register_cpu_softmax_ops(OpTable& t) {
  t.add(OpKind::Softmax, cpu_softmax);
  t.add(OpKind::SoftmaxBackward, cpu_softmax_backward);
  t.add(OpKind::LogSoftmax, cpu_log_softmax);
  t.add(OpKind::LogSoftmaxBackward, cpu_log_softmax_backward);
}

}  // namespace cudl
