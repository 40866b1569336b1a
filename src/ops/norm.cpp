// ops/norm.cpp — argument checks of the norm op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/norm.hpp"

#include <cmath>
#include <vector>

#include "cudl/error.hpp"
#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

namespace {

/// Throws unless `v` is a defined tensor of dtype `dt` (f32 unless given) and exactly `shape`.
void expect_f32(const OpCall& call, const TensorView& v, const char* what, const Shape& shape, const Shape& x_shape,
                DType dt = DType::f32) {
  if (!v.defined()) CUDL_FAIL(op_name(call.op), " (", call.label, "): ", what, " is required");
  if (v.dtype != dt)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): ", what, " must be ", dt, ", got ", v.dtype, " (shape ", v.shape,
              ")");
  if (v.shape != shape)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): ", what, " must have shape ", shape, " for x ", x_shape, ", got ",
              v.shape);
}

/// Like expect_f32 but only checks the element count (row statistics may be (rows,) or x's leading dims).
void expect_f32_numel(const OpCall& call, const TensorView& v, const char* what, int64_t numel, const Shape& x_shape) {
  if (v.dtype != DType::f32 || v.numel() != numel)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): ", what, " must be f32 with ", numel, " elements for x ", x_shape,
              ", got ", v.dtype, " ", v.shape);
}

void expect_counts(const OpCall& call, int min_in, int max_in, int min_out, int max_out, const char* signature) {
  if (call.n_inputs < min_in || call.n_inputs > max_in || call.n_outputs < min_out || call.n_outputs > max_out)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): expects ", signature, ", got ", call.n_inputs, " inputs and ",
              call.n_outputs, " outputs");
}

double checked_eps(const OpCall& call, double eps) {
  if (!(eps >= 0) || std::isinf(eps))
    CUDL_FAIL(op_name(call.op), " (", call.label, "): eps f[0] must be finite and >= 0, got ", eps);
  return eps;
}

using op_checks::opt_in;
using op_checks::opt_out;

/// Checks that `v` (the op's `what`) is a defined (N, C, ...) tensor of the call's storage type
/// (ops/precision.hpp: x, y, dy, dx follow it; the per-channel tensors stay f32) with values in
/// every channel, and sets p.storage, p.n, p.c and p.spatial from it.
void channel_layout(const OpCall& call, const TensorView& v, const char* what, BatchNormArgs& p) {
  const char* name = op_name(call.op);
  p.storage = check_storage(call);
  if (!v.defined()) CUDL_FAIL(name, " (", call.label, "): ", what, " is required");
  if (v.dtype != p.storage)
    CUDL_FAIL(name, " (", call.label, "): ", what, " must be ", p.storage, ", got ", v.dtype, " (shape ", v.shape, ")");
  if (v.shape.rank() < 2) CUDL_FAIL(name, " (", call.label, "): ", what, " must be (N, C, ...), got shape ", v.shape);
  p.n = v.shape[0];
  p.c = v.shape[1];
  for (int k = 2; k < v.shape.rank(); ++k) p.spatial *= v.shape[k];
  if (p.per_channel() < 1 || p.c < 1)
    CUDL_FAIL(name, " (", call.label, "): ", what, " ", v.shape, " has no values per channel");
}

BatchNormArgs with_views(const OpCall& call, BatchNormArgs p) {
  p.x = call.in(0);
  p.gamma = opt_in(call, 1);
  if (call.op == OpKind::BatchNormBackward) {
    p.saved_mean = call.in(2), p.saved_invstd = call.in(3), p.dy = call.in(4);
    p.dx = opt_out(call, 0), p.dgamma = opt_out(call, 1), p.dbeta = opt_out(call, 2);
    return p;
  }
  p.beta = opt_in(call, 2);
  if (p.has_running || call.op == OpKind::BatchNormInference) p.running_mean = call.in(3), p.running_var = call.in(4);
  p.y = call.out(0);
  if (p.has_saved) p.saved_mean = call.out(1), p.saved_invstd = call.out(2);
  return p;
}

LayerNormArgs with_views(const OpCall& call, LayerNormArgs p) {
  p.x = call.in(0);
  p.gamma = opt_in(call, 1);
  if (call.op == OpKind::LayerNormBackward) {
    p.mean = call.in(2), p.rstd = call.in(3), p.dy = call.in(4);
    p.dx = opt_out(call, 0), p.dgamma = opt_out(call, 1), p.dbeta = opt_out(call, 2);
    return p;
  }
  p.beta = opt_in(call, 2);
  p.y = call.out(0);
  if (p.has_stats) p.mean = call.out(1), p.rstd = call.out(2);
  return p;
}

}  // namespace

namespace {

/// BatchNormInferenceBackward: dy (N, C, ...), gamma (C) or undefined, running_var (C) -> dx.
BatchNormArgs check_batch_norm_inference_backward(const OpCall& call) {
  expect_counts(call, 3, 3, 1, 1, "(dy, gamma, running_var) -> (dx)");
  BatchNormArgs p;
  const TensorView& dy = call.in(0);
  channel_layout(call, dy, "dy", p);
  p.eps = checked_eps(call, BatchNormAttrs::from(call.attrs).eps);
  const Shape cs{p.c};
  p.has_gamma = call.has_in(1);
  if (p.has_gamma) expect_f32(call, call.in(1), "gamma", cs, dy.shape);
  expect_f32(call, call.in(2), "running_var", cs, dy.shape);
  expect_f32(call, call.out(0), "dx", dy.shape, dy.shape, p.storage);
  p.dy = dy;
  p.gamma = opt_in(call, 1);
  p.running_var = call.in(2);
  p.dx = call.out(0);
  p.has_dx = true;
  return p;
}

}  // namespace

BatchNormArgs check_batch_norm_call(const OpCall& call) {
  if (call.op == OpKind::BatchNormInferenceBackward) return check_batch_norm_inference_backward(call);
  const char* name = op_name(call.op);
  BatchNormArgs p;
  const BatchNormAttrs attrs = BatchNormAttrs::from(call.attrs);
  if (call.op == OpKind::BatchNormTrain)
    expect_counts(call, 5, 5, 1, 3, "(x, gamma, beta, running_mean, running_var) -> (y, [saved_mean, saved_invstd])");
  else if (call.op == OpKind::BatchNormInference)
    expect_counts(call, 5, 5, 1, 1, "(x, gamma, beta, running_mean, running_var) -> (y)");
  else
    expect_counts(call, 5, 5, 3, 3, "(x, gamma, saved_mean, saved_invstd, dy) -> (dx, dgamma, dbeta)");
  const TensorView& x = call.in(0);
  channel_layout(call, x, "x", p);
  p.eps = checked_eps(call, attrs.eps);
  const Shape cs{p.c};

  if (call.op == OpKind::BatchNormBackward) {
    p.has_gamma = call.has_in(1);
    if (p.has_gamma) expect_f32(call, call.in(1), "gamma", cs, x.shape);
    expect_f32(call, call.in(2), "saved_mean", cs, x.shape);
    expect_f32(call, call.in(3), "saved_invstd", cs, x.shape);
    expect_f32(call, call.in(4), "dy", x.shape, x.shape, p.storage);
    p.has_dx = call.has_out(0);
    p.has_dgamma = call.has_out(1);
    p.has_dbeta = call.has_out(2);
    if (p.has_dx) expect_f32(call, call.out(0), "dx", x.shape, x.shape, p.storage);
    if (p.has_dgamma) expect_f32(call, call.out(1), "dgamma", cs, x.shape);
    if (p.has_dbeta) expect_f32(call, call.out(2), "dbeta", cs, x.shape);
    if (!p.has_dx && !p.has_dgamma && !p.has_dbeta)
      CUDL_FAIL(name, " (", call.label, "): no output requested (dx, dgamma and dbeta are all undefined)");
    return with_views(call, p);
  }

  p.has_gamma = call.has_in(1);
  p.has_beta = call.has_in(2);
  if (p.has_gamma) expect_f32(call, call.in(1), "gamma", cs, x.shape);
  if (p.has_beta) expect_f32(call, call.in(2), "beta", cs, x.shape);
  p.has_running = call.has_in(3) || call.has_in(4);
  if (p.has_running || call.op == OpKind::BatchNormInference) {
    expect_f32(call, call.in(3), "running_mean", cs, x.shape);
    expect_f32(call, call.in(4), "running_var", cs, x.shape);
  }
  expect_f32(call, call.out(0), "y", x.shape, x.shape, p.storage);
  if (call.op == OpKind::BatchNormTrain) {
    p.momentum = attrs.momentum;
    if (!(p.momentum >= 0 && p.momentum <= 1))
      CUDL_FAIL(name, " (", call.label, "): momentum f[1] must be in [0, 1], got ", p.momentum);
    p.has_saved = call.has_out(1) || call.has_out(2);
    if (p.has_saved) {  // both or neither
      expect_f32(call, call.out(1), "saved_mean", cs, x.shape);
      expect_f32(call, call.out(2), "saved_invstd", cs, x.shape);
    }
  }
  return with_views(call, p);
}

SyncBatchNormArgs check_sync_batch_norm_call(const OpCall& call) {
  const char* name = op_name(call.op);
  SyncBatchNormArgs p;
  switch (call.op) {
    case OpKind::BatchNormStats:
      expect_counts(call, 2, 2, 1, 1, "(x, [shift]) -> (stats)");
      break;
    case OpKind::BatchNormApply:
      expect_counts(call, 7, 7, 1, 3,
                    "(x, gamma, beta, running_mean, running_var, stats, [shift]) -> (y, [saved_mean, saved_invstd])");
      break;
    case OpKind::BatchNormBackwardReduce:
      expect_counts(call, 4, 4, 1, 3, "(x, saved_mean, saved_invstd, dy) -> (sums, [dgamma], [dbeta])");
      break;
    case OpKind::BatchNormBackwardApply:
      expect_counts(call, 7, 7, 1, 1, "(x, gamma, saved_mean, saved_invstd, dy, sums, stats) -> (dx)");
      break;
    default:
      CUDL_FAIL(name, " (", call.label, "): not a synchronised batch norm op");
  }
  (void)check_storage(call);  // every float slot f32: synchronised batch norm has no 16-bit storage
  const TensorView& x = call.in(0);
  if (!x.defined()) CUDL_FAIL(name, " (", call.label, "): x is required");
  if (x.dtype != DType::f32)
    CUDL_FAIL(name, " (", call.label, "): x must be f32, got ", x.dtype, " (shape ", x.shape, ")");
  if (x.shape.rank() < 2) CUDL_FAIL(name, " (", call.label, "): x must be (N, C, ...), got shape ", x.shape);
  p.x = x;
  p.n = x.shape[0];
  p.c = x.shape[1];
  for (int k = 2; k < x.shape.rank(); ++k) p.spatial *= x.shape[k];
  if (p.per_channel() < 1 || p.c < 1) CUDL_FAIL(name, " (", call.label, "): x ", x.shape, " has no values per channel");
  const Shape cs{p.c}, stats_shape{3, p.c}, sums_shape{2, p.c};
  auto optional = [&](int k, const char* what) {
    if (call.has_in(k)) expect_f32(call, call.in(k), what, cs, x.shape);
    return opt_in(call, k);
  };
  switch (call.op) {
    case OpKind::BatchNormStats:
      p.shift = optional(1, "shift");
      expect_f32(call, call.out(0), "stats", stats_shape, x.shape);
      p.stats = call.out(0);
      break;
    case OpKind::BatchNormApply: {
      const SyncBatchNormAttrs a = SyncBatchNormAttrs::from(call.attrs);
      p.eps = checked_eps(call, a.eps);
      p.momentum = a.momentum;
      if (!(p.momentum >= 0 && p.momentum <= 1))
        CUDL_FAIL(name, " (", call.label, "): momentum f[1] must be in [0, 1], got ", p.momentum);
      p.gamma = optional(1, "gamma");
      p.beta = optional(2, "beta");
      p.running_mean = optional(3, "running_mean");
      p.running_var = optional(4, "running_var");
      if (p.running_mean.defined() != p.running_var.defined())
        CUDL_FAIL(name, " (", call.label, "): running_mean and running_var must both be given or both be undefined");
      expect_f32(call, call.in(5), "stats", stats_shape, x.shape);
      p.stats = call.in(5);
      p.shift = optional(6, "shift");
      expect_f32(call, call.out(0), "y", x.shape, x.shape);
      p.y = call.out(0);
      if (call.has_out(1) || call.has_out(2)) {  // both or neither
        expect_f32(call, call.out(1), "saved_mean", cs, x.shape);
        expect_f32(call, call.out(2), "saved_invstd", cs, x.shape);
        p.saved_mean = call.out(1), p.saved_invstd = call.out(2);
      }
      break;
    }
    case OpKind::BatchNormBackwardReduce:
      expect_f32(call, call.in(1), "saved_mean", cs, x.shape);
      expect_f32(call, call.in(2), "saved_invstd", cs, x.shape);
      expect_f32(call, call.in(3), "dy", x.shape, x.shape);
      expect_f32(call, call.out(0), "sums", sums_shape, x.shape);
      p.saved_mean = call.in(1), p.saved_invstd = call.in(2), p.dy = call.in(3), p.sums = call.out(0);
      if (call.has_out(1)) expect_f32(call, call.out(1), "dgamma", cs, x.shape);
      if (call.has_out(2)) expect_f32(call, call.out(2), "dbeta", cs, x.shape);
      p.dgamma = opt_out(call, 1), p.dbeta = opt_out(call, 2);
      break;
    default:  // BatchNormBackwardApply
      p.gamma = optional(1, "gamma");
      expect_f32(call, call.in(2), "saved_mean", cs, x.shape);
      expect_f32(call, call.in(3), "saved_invstd", cs, x.shape);
      expect_f32(call, call.in(4), "dy", x.shape, x.shape);
      expect_f32(call, call.in(5), "sums", sums_shape, x.shape);
      expect_f32(call, call.in(6), "stats", stats_shape, x.shape);
      expect_f32(call, call.out(0), "dx", x.shape, x.shape);
      p.saved_mean = call.in(2), p.saved_invstd = call.in(3), p.dy = call.in(4), p.sums = call.in(5);
      p.stats = call.in(6), p.dx = call.out(0);
      break;
  }
  return p;
}

LayerNormArgs check_layer_norm_call(const OpCall& call) {
  const char* name = op_name(call.op);
  LayerNormArgs p;
  const LayerNormAttrs attrs = LayerNormAttrs::from(call.attrs);
  if (call.op == OpKind::LayerNorm)
    expect_counts(call, 1, 3, 1, 3, "(x, [gamma], [beta]) -> (y, [mean], [rstd])");
  else
    expect_counts(call, 5, 5, 1, 3, "(x, [gamma], mean, rstd, dy) -> (dx, [dgamma], [dbeta])");
  const TensorView& x = call.in(0);
  if (!x.defined()) CUDL_FAIL(name, " (", call.label, "): x is required");
  const DType st = p.storage = check_storage(call);  // x, y, dy, dx; the rest stays f32
  if (x.dtype != st)
    CUDL_FAIL(name, " (", call.label, "): x must be f32, bf16 or f16, got ", x.dtype, " (shape ", x.shape, ")");
  if (x.shape.rank() < 1 || x.shape[-1] < 1)
    CUDL_FAIL(name, " (", call.label, "): x must be (..., D) with D >= 1, got shape ", x.shape);
  p.d = x.shape[-1];
  p.rows = x.numel() / p.d;
  p.eps = checked_eps(call, attrs.eps);
  const Shape ds{p.d};
  p.has_gamma = call.has_in(1);
  if (p.has_gamma) expect_f32(call, call.in(1), "gamma", ds, x.shape);
  if (call.op == OpKind::LayerNorm) {
    p.has_beta = call.has_in(2);
    if (p.has_beta) expect_f32(call, call.in(2), "beta", ds, x.shape);
    expect_f32(call, call.out(0), "y", x.shape, x.shape, st);
    p.has_stats = call.has_out(1) || call.has_out(2);
    if (p.has_stats) {
      if (!call.has_out(1) || !call.has_out(2))
        CUDL_FAIL(name, " (", call.label, "): mean and rstd must be given together");
      expect_f32_numel(call, call.out(1), "mean", p.rows, x.shape);
      expect_f32_numel(call, call.out(2), "rstd", p.rows, x.shape);
    }
    return with_views(call, p);
  }
  if (!call.has_in(2) || !call.has_in(3)) CUDL_FAIL(name, " (", call.label, "): mean and rstd are required");
  expect_f32_numel(call, call.in(2), "mean", p.rows, x.shape);
  expect_f32_numel(call, call.in(3), "rstd", p.rows, x.shape);
  expect_f32(call, call.in(4), "dy", x.shape, x.shape, st);
  p.has_dx = call.has_out(0);
  p.has_dgamma = call.has_out(1);
  p.has_dbeta = call.has_out(2);
  if (p.has_dx) expect_f32(call, call.out(0), "dx", x.shape, x.shape, st);
  if (p.has_dgamma) expect_f32(call, call.out(1), "dgamma", ds, x.shape);
  if (p.has_dbeta) expect_f32(call, call.out(2), "dbeta", ds, x.shape);
  if (!p.has_dx && !p.has_dgamma && !p.has_dbeta)
    CUDL_FAIL(name, " (", call.label, "): no output requested (dx, dgamma and dbeta are all undefined)");
  return with_views(call, p);
}

}  // namespace ops
}  // namespace cudl
