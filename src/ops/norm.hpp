// cpu/norm.hpp — argument checking of the normalisation op family (batch norm, layer norm), shared
// by the CPU reference and the CUDA backend so both accept and reject the same calls.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

namespace cudl {

/// Batch norm over x (N, C, *spatial): statistics per channel over N and the spatial dims.
struct BatchNormProblem {
  int64_t n = 0, c = 0, spatial = 1;  // x is (n, c, spatial...) with `spatial` = product of dims 2..
  double eps = 0, momentum = 0;
  bool has_gamma = false, has_beta = false, has_running = false;
  bool has_saved = false;                                      // BatchNormTrain: saved_mean/saved_invstd outputs
  bool has_dx = false, has_dgamma = false, has_dbeta = false;  // BatchNormBackward outputs
  int64_t per_channel() const { return n * spatial; }          // values averaged per channel (M)
};

/// Layer norm over the last dim D of x (..., D): rows = numel / D.
struct LayerNormProblem {
  int64_t rows = 0, d = 0;
  double eps = 0;
  bool has_gamma = false, has_beta = false, has_stats = false;  // LayerNorm: mean/rstd outputs
  bool has_dx = false, has_dgamma = false, has_dbeta = false;   // LayerNormBackward outputs
};

/// Validate BatchNormTrain / BatchNormInference / BatchNormBackward calls; throw cudl::Error naming
/// the op, the call's label and the shapes.
BatchNormProblem check_batch_norm_call(const OpCall& call);
/// Validate LayerNorm / LayerNormBackward calls.
LayerNormProblem check_layer_norm_call(const OpCall& call);

}  // namespace cudl
