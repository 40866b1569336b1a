// cpu/softmax.cpp — CPU reference implementations of the softmax op family (the spec for these ops):
// softmax and log-softmax along the last axis (max subtracted first) and their gradients.
#include "cpu/softmax.hpp"

#include <cmath>
#include <limits>

#include "backend/backend.hpp"
#include "cpu/op_checks.hpp"

namespace cudl {

namespace chk = op_checks;

SoftmaxProblem check_softmax_call(const OpCall& call) {
  const bool backward = call.op == OpKind::SoftmaxBackward || call.op == OpKind::LogSoftmaxBackward;
  chk::counts(call, backward ? 2 : 1, backward ? 2 : 1, 1, 1);
  const TensorView& first = chk::need_in(call, 0, backward ? "y" : "x");
  const char* first_name = backward ? "y" : "x";
  chk::dtype(call, first, first_name, DType::f32);
  if (first.shape.rank() < 1) CUDL_FAIL(chk::who(call), ": ", first_name, " must have at least one dimension");
  const std::string same = std::string("same as ") + first_name;
  if (backward) {
    const TensorView& dy = chk::need_in(call, 1, "dy");
    chk::dtype(call, dy, "dy", DType::f32);
    chk::shape(call, dy, "dy", first.shape, same);
  }
  const TensorView& out = chk::need_out(call, 0, backward ? "dx" : "y");
  chk::dtype(call, out, backward ? "dx" : "y", DType::f32);
  chk::shape(call, out, backward ? "dx" : "y", first.shape, same);
  SoftmaxProblem p;
  p.cols = first.shape[-1];
  p.rows = p.cols == 0 ? 0 : first.shape.numel() / p.cols;
  return p;
}

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
  const SoftmaxProblem p = check_softmax_call(call);
  const float* x = call.inputs[0].as<float>();
  float* y = call.outputs[0].as<float>();
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
  const SoftmaxProblem p = check_softmax_call(call);
  const float* y = call.inputs[0].as<float>();
  const float* dy = call.inputs[1].as<float>();
  float* dx = call.outputs[0].as<float>();
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
