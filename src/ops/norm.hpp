// ops/norm.hpp — the normalisation op family's contract (batch norm, layer norm): typed attributes,
// named arguments and the checks the CPU reference and the CUDA backend run first.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- normalisation (kernels/norm.cu, src/cpu/norm.cpp) ---
// BatchNormTrain  in: x (N,C,...), gamma (C), beta (C), running_mean (C), running_var (C)
//                   out: y, saved_mean (C), saved_invstd (C); running stats updated in place:
//                   r = (1-f[1])*r + f[1]*batch (running_var uses the unbiased variance); f[0]=eps
//                   gamma/beta may be undefined (1/0); running stats may be undefined (not updated);
//                   saved_* may be undefined. With N*spatial == 1 the variance is 0 (y = beta) and
//                   the unbiased variance is taken as 0, so running_var stays finite.
// BatchNormInference    in: x, gamma, beta, running_mean, running_var   out: y; f[0]=eps
// BatchNormBackward     in: x, gamma, saved_mean, saved_invstd, dy   out: dx, dgamma, dbeta
// BatchNormInferenceBackward  in: dy (N,C,...), gamma (C), running_var (C)   out: dx; f[0]=eps
//                   the data gradient of BatchNormInference: dx = dy * gamma / sqrt(running_var + eps)
//                   (gamma may be undefined: 1). A frozen BatchNorm layer (Keras trainable=False) runs
//                   BatchNormInference in a training graph; gradients reach the layers below through
//                   this op, and the frozen layer's parameters and running statistics get none.
// Synchronised batch norm (data-parallel: the statistics of the global batch, all ranks' rows), in
// pieces with an AllReduce (ops/collective.hpp, sum) of the per-rank sums between them; f32 only:
// BatchNormStats  in: x (N,C,...), [shift (C)]   out: stats (3, C): row 0 sum(x - k), row 1
//                   sum((x - k)^2), row 2 the count N*spatial, per channel (k = shift, or 0), this
//                   rank's rows. The shift is the same on every rank (the running mean), so the sums
//                   of the ranks add up, and it keeps sum((x-k)^2)/M - (sum(x-k)/M)^2 from cancelling.
// BatchNormApply  in: x, gamma, beta, running_mean, running_var, stats (3, C), [shift (C)]
//                   out: y, [saved_mean, saved_invstd]; as BatchNormTrain but with the statistics of
//                   `stats` (all ranks' sums): M = stats[2], mean = k + stats[0]/M, variance
//                   stats[1]/M - (stats[0]/M)^2 (at least 0). shift may be running_mean itself (it is
//                   read before the running statistics are updated). f[0]=eps, f[1]=momentum.
// BatchNormBackwardReduce  in: x, saved_mean, saved_invstd, dy   out: sums (2, C): row 0 sum(dy),
//                   row 1 sum(dy * xhat) over this rank's rows; [dgamma], [dbeta] (the same sums:
//                   the parameter gradients of this rank's loss, averaged with the other gradients).
// BatchNormBackwardApply  in: x, gamma, saved_mean, saved_invstd, dy, sums (2, C), stats (3, C)
//                   out: dx = gamma invstd (dy - sums[0]/M - xhat sums[1]/M) with the all-reduced
//                   sums and M = stats[2] (all ranks' count). gamma may be undefined (1).
// LayerNorm       in: x (..., D), [gamma (D)], [beta (D)]   out: y, mean (rows), rstd (rows); f[0]=eps
// LayerNormBackward     in: x, gamma, mean, rstd, dy   out: dx, dgamma, dbeta
//                   x, y, dy, dx of the storage type; gamma, beta, mean, rstd, dgamma, dbeta f32
//                   norms: biased variance, invstd/rstd = 1/sqrt(var + eps); gamma and each output of
//                   the backward ops may be undefined; mean/rstd may be undefined in LayerNorm

namespace cudl {
class DeviceCommunicator;  // backend/communicator.hpp

namespace ops {

/// BatchNormTrain / BatchNormInference / BatchNormBackward / BatchNormInferenceBackward: f[0] = eps,
/// f[1] = momentum (Train only).
struct BatchNormAttrs {
  double eps = 1e-5, momentum = 0.1;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = eps;
    a.f[1] = momentum;
    return a;
  }
  static BatchNormAttrs from(const OpAttrs& a) { return {a.f[0], a.f[1]}; }
};

/// BatchNormApply: f[0] = eps, f[1] = momentum, i[0] = the communicator whose AllReduce sums the
/// statistics (a DeviceCommunicator*; the backward pass all-reduces through it too).
struct SyncBatchNormAttrs {
  double eps = 1e-5, momentum = 0.1;
  DeviceCommunicator* comm = nullptr;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = eps;
    a.f[1] = momentum;
    a.i[0] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));
    return a;
  }
  static SyncBatchNormAttrs from(const OpAttrs& a) {
    return {a.f[0], a.f[1], reinterpret_cast<DeviceCommunicator*>(static_cast<intptr_t>(a.i[0]))};
  }
};

/// LayerNorm / LayerNormBackward: f[0] = eps.
struct LayerNormAttrs {
  double eps = 1e-5;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = eps;
    return a;
  }
  static LayerNormAttrs from(const OpAttrs& a) { return {a.f[0]}; }
};

/// Batch norm over x (N, C, *spatial): statistics per channel over N and the spatial dims.
struct BatchNormArgs {
  DType storage = DType::f32;             // x, y, dy, dx: f32, bf16 or f16 (ops/precision.hpp); the rest f32
  TensorView x, gamma, beta;              // gamma / beta may be undefined (1 / 0)
  TensorView running_mean, running_var;   // Train: undefined when not updated
  TensorView y, saved_mean, saved_invstd; // Backward: saved_mean / saved_invstd are inputs 2, 3
  TensorView dy, dx, dgamma, dbeta;       // Backward; outputs may be undefined
                                          // InferenceBackward: dy, gamma, running_var in; dx out
  int64_t n = 0, c = 0, spatial = 1;  // x is (n, c, spatial...) with `spatial` = product of dims 2..
  double eps = 0, momentum = 0;
  bool has_gamma = false, has_beta = false, has_running = false;
  bool has_saved = false;                                      // BatchNormTrain: saved_mean/saved_invstd outputs
  bool has_dx = false, has_dgamma = false, has_dbeta = false;  // BatchNormBackward outputs
  int64_t per_channel() const { return n * spatial; }          // values averaged per channel (M)
};

/// The synchronised batch norm pieces over x (N, C, *spatial), f32.
struct SyncBatchNormArgs {
  TensorView x, gamma, beta, running_mean, running_var, shift;  // each but x may be undefined
  // stats (3, C): Stats' output, an input of the others; sums (2, C): BackwardReduce's output,
  // BackwardApply's input.
  TensorView stats, sums;
  TensorView y, saved_mean, saved_invstd, dy, dx, dgamma, dbeta;
  int64_t n = 0, c = 0, spatial = 1;
  double eps = 0, momentum = 0;
  int64_t per_channel() const { return n * spatial; }  // this rank's values per channel
};

/// Layer norm over the last dim D of x (..., D): rows = numel / D.
struct LayerNormArgs {
  DType storage = DType::f32;  // x, y, dy, dx: f32, bf16 or f16 (ops/precision.hpp); the rest f32
  TensorView x, gamma, beta;   // gamma / beta may be undefined
  TensorView y, mean, rstd;    // LayerNorm: mean / rstd outputs (both or neither); Backward: inputs 2, 3
  TensorView dy, dx, dgamma, dbeta;
  int64_t rows = 0, d = 0;
  double eps = 0;
  bool has_gamma = false, has_beta = false, has_stats = false;  // LayerNorm: mean/rstd outputs
  bool has_dx = false, has_dgamma = false, has_dbeta = false;   // LayerNormBackward outputs
};

/// Validate BatchNormTrain / BatchNormInference / BatchNormBackward / BatchNormInferenceBackward
/// calls; throw cudl::Error naming the op, the call's label and the shapes.
BatchNormArgs check_batch_norm_call(const OpCall& call);
/// Validate BatchNormStats / BatchNormApply / BatchNormBackwardReduce / BatchNormBackwardApply calls.
SyncBatchNormArgs check_sync_batch_norm_call(const OpCall& call);
/// Validate LayerNorm / LayerNormBackward calls.
LayerNormArgs check_layer_norm_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
