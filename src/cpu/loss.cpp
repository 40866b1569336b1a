// cpu/loss.cpp — CPU reference implementations of the loss op family (the spec for these ops):
// per-element and per-sample losses in double, Mean/Sum reduction, fused gradient and accuracy.
#include "ops/loss.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/backend.hpp"
#include "cudl/error.hpp"

namespace cudl {

namespace {

/// d loss / d pred times dloss, divided by the count under Mean (`divisor`, p.divisor() by
/// default; 0 when CE ignores every row: then no row has a gradient).
double grad_scale(const OpCall& call, const ops::LossArgs& p, int64_t divisor = -1) {
  if (divisor < 0) divisor = p.divisor();
  double s = p.has_dloss ? static_cast<double>(*p.dloss.as<float>()) : 1.0;
  if (p.mean) s = divisor > 0 ? s / static_cast<double>(divisor) : 0.0;
  return s;
}

/// Writes the loss and adds it to the loss accumulator (in f32, as an Accumulate node would).
/// `divisor` as in grad_scale; a Mean over no rows is 0.
void write_loss(const OpCall& call, const ops::LossArgs& p, double total, int64_t divisor = -1) {
  if (divisor < 0) divisor = p.divisor();
  const float loss = static_cast<float>(p.mean ? (divisor > 0 ? total / static_cast<double>(divisor) : 0.0) : total);
  if (p.has_loss) *p.loss.as<float>() = loss;
  if (p.has_loss_acc) *p.loss_acc.as<float>() += p.acc_scale * loss;
}

// --- per-element losses: value(pred, target) and d value / d pred, in double -------------------

struct Mse {
  double value(double x, double t) const { return (x - t) * (x - t); }
  double grad(double x, double t) const { return 2 * (x - t); }
};
struct L1 {
  double value(double x, double t) const { return std::fabs(x - t); }
  double grad(double x, double t) const {
    const double d = x - t;
    return d > 0 ? 1.0 : d < 0 ? -1.0 : d;  // sign, 0 at 0, NaN stays NaN
  }
};
struct Huber {
  double delta;
  double value(double x, double t) const {
    const double d = std::fabs(x - t);
    return d < delta ? 0.5 * d * d : delta * (d - 0.5 * delta);
  }
  double grad(double x, double t) const {
    const double d = x - t;
    return d < -delta ? -delta : d > delta ? delta : d;
  }
};
struct Bce {  // PyTorch: logs clamped at -100; gradient denominator clamped at 1e-12
  double value(double x, double t) const {
    return -(t * std::max(std::log(x), -100.0) + (1 - t) * std::max(std::log1p(-x), -100.0));
  }
  double grad(double x, double t) const { return (x - t) / std::max((1 - x) * x, 1e-12); }
};
struct BceWithLogits {  // max(x, 0) - x t + log(1 + exp(-|x|)); gradient sigmoid(x) - t
  double value(double x, double t) const { return std::max(x, 0.0) - x * t + std::log1p(std::exp(-std::fabs(x))); }
  double grad(double x, double t) const { return 1 / (1 + std::exp(-x)) - t; }
};

template <typename F>
void elementwise_loss(const OpCall& call, F f) {
  const ops::LossArgs p = ops::check_loss_call(call);
  const float* x = p.pred.as<float>();
  const float* t = p.target.as<float>();
  float* dx = p.dpred.as<float>();
  const double scale = grad_scale(call, p);
  double total = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    total += f.value(x[i], t[i]);
    if (dx) dx[i] = static_cast<float>(f.grad(x[i], t[i]) * scale);
  }
  write_loss(call, p, total);
}

void mse_loss(const OpCall& call) { elementwise_loss(call, Mse{}); }
void l1_loss(const OpCall& call) { elementwise_loss(call, L1{}); }
void huber_loss(const OpCall& call) { elementwise_loss(call, Huber{ops::LossAttrs::from(call.attrs).param}); }
void bce_loss(const OpCall& call) { elementwise_loss(call, Bce{}); }
void bce_with_logits_loss(const OpCall& call) { elementwise_loss(call, BceWithLogits{}); }

// --- per-sample losses over rows of (N, C) ------------------------------------------------------

/// log(sum(exp(x))) of a row, through the row max (NaN when the row holds a NaN or +Inf, or is all -Inf).
double log_sum_exp(const float* x, int64_t c) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < c; ++j) m = std::max(m, static_cast<double>(x[j]));
  double s = 0;
  for (int64_t j = 0; j < c; ++j) s += std::exp(x[j] - m);
  return m + std::log(s);
}

/// Index of the row maximum; NaN counts as larger than any number; ties: the first index.
int64_t row_argmax(const float* x, int64_t c) {
  int64_t best = 0;
  for (int64_t j = 1; j < c; ++j) {
    if (std::isnan(x[best])) break;
    if (std::isnan(x[j]) || x[j] > x[best]) best = j;
  }
  return best;
}

int32_t checked_label(const OpCall& call, const ops::LossArgs& p, int64_t row) {
  const int32_t y = p.target.as<int32_t>()[row];
  if (y < 0 || y >= p.cols)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): label ", y, " of row ", row, " is out of range [0, ", p.cols,
              ") for pred ", p.pred.shape);
  return y;
}

// loss_i = (1-e) * (lse - x_y) + e * (lse - mean_c x_c)   (PyTorch's label smoothing: the target is
// (1-e) one_hot(y) + e/C); dpred = softmax - (1-e) one_hot(y) - e/C. Ignored rows: 0 and a zero row.
void cross_entropy_loss(const OpCall& call) {
  const ops::LossArgs p = ops::check_loss_call(call);
  const float* x = p.pred.as<float>();
  const int32_t* labels = p.target.as<int32_t>();
  float* dx = p.dpred.as<float>();
  auto ignored = [&](int64_t r) { return p.has_ignore && labels[r] == p.ignore_index; };
  int64_t kept = 0;
  for (int64_t r = 0; r < p.rows; ++r) kept += ignored(r) ? 0 : 1;
  const double eps = p.param, scale = grad_scale(call, p, kept);
  const int64_t c = p.cols;
  double total = 0;
  int32_t correct = 0;
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* xr = x + r * c;
    if (ignored(r)) {
      if (dx) std::fill(dx + r * c, dx + (r + 1) * c, 0.f);
      continue;
    }
    const int32_t y = checked_label(call, p, r);
    const double lse = log_sum_exp(xr, c);
    double sum_x = 0;
    for (int64_t j = 0; j < c; ++j) sum_x += xr[j];
    // The smoothing term is added only when e > 0, so -Inf logits (masked classes) keep a finite loss.
    double row = (1 - eps) * (lse - xr[y]);
    if (eps > 0) row += eps * (lse - sum_x / static_cast<double>(c));
    total += row;
    if (row_argmax(xr, c) == y) ++correct;
    if (dx) {
      for (int64_t j = 0; j < c; ++j) {
        const double target = (j == y ? 1 - eps : 0.0) + eps / static_cast<double>(c);
        dx[r * c + j] = static_cast<float>((std::exp(xr[j] - lse) - target) * scale);
      }
    }
  }
  write_loss(call, p, total, kept);
  if (p.has_correct) *p.correct.as<int32_t>() = correct;
  // (acc_scale * correct) / kept in f32, as the CUDA kernel computes it.
  if (p.has_correct_acc && kept > 0)
    *p.correct_acc.as<float>() += (p.acc_scale * static_cast<float>(correct)) / static_cast<float>(kept);
}

// loss_i = -sum_c t_c log_softmax(x)_c = sum(t) * lse - sum_c t_c x_c; dpred = softmax * sum(t) - t.
void soft_cross_entropy_loss(const OpCall& call) {
  const ops::LossArgs p = ops::check_loss_call(call);
  const float* x = p.pred.as<float>();
  const float* t = p.target.as<float>();
  float* dx = p.dpred.as<float>();
  const double scale = grad_scale(call, p);
  const int64_t c = p.cols;
  double total = 0;
  for (int64_t r = 0; r < p.rows; ++r) {
    const float* xr = x + r * c;
    const float* tr = t + r * c;
    const double lse = log_sum_exp(xr, c);
    double sum_t = 0, sum_tx = 0;
    for (int64_t j = 0; j < c; ++j) {
      sum_t += tr[j];
      sum_tx += static_cast<double>(tr[j]) * xr[j];
    }
    total += sum_t * lse - sum_tx;
    if (dx)
      for (int64_t j = 0; j < c; ++j)
        dx[r * c + j] = static_cast<float>((std::exp(xr[j] - lse) * sum_t - tr[j]) * scale);
  }
  write_loss(call, p, total);
}

// loss_i = -pred[i, y_i]; dpred = -one_hot(y).
void nll_loss(const OpCall& call) {
  const ops::LossArgs p = ops::check_loss_call(call);
  const float* x = p.pred.as<float>();
  float* dx = p.dpred.as<float>();
  const double scale = grad_scale(call, p);
  const int64_t c = p.cols;
  double total = 0;
  for (int64_t r = 0; r < p.rows; ++r) {
    const int32_t y = checked_label(call, p, r);
    total += -static_cast<double>(x[r * c + y]);
    if (dx)
      for (int64_t j = 0; j < c; ++j) dx[r * c + j] = static_cast<float>(j == y ? -scale : 0.0);
  }
  write_loss(call, p, total);
}

}  // namespace

void register_cpu_loss_ops(OpTable& t) {
  t.add(OpKind::MseLoss, mse_loss);
  t.add(OpKind::L1Loss, l1_loss);
  t.add(OpKind::HuberLoss, huber_loss);
  t.add(OpKind::BceLoss, bce_loss);
  t.add(OpKind::BceWithLogitsLoss, bce_with_logits_loss);
  t.add(OpKind::CrossEntropyLoss, cross_entropy_loss);
  t.add(OpKind::SoftCrossEntropyLoss, soft_cross_entropy_loss);
  t.add(OpKind::NllLoss, nll_loss);
}

}  // namespace cudl
