// kernels/reduce.cuh — host launchers of the reduction kernels: x viewed as (outer, R, inner) reduced over R
// to (outer, inner); sum / mean / max (+ first-occurrence index, NaN wins) / variance, and gradients.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace cudl::kernels {

/// Device scratch bytes reduce_cuda needs for this geometry (the all-axes two-pass grid reduction).
size_t reduce_workspace_bytes(int64_t outer, int64_t R, int64_t inner);

/// y[o, i] = op over r of x[(o * R + r) * inner + i]; op is a ReduceOp value. y, idx64 (Max index)
/// and idx32 (Argmax) may each be null. Var divides by R - unbiased. Deterministic (fixed order, no
/// atomics). `workspace`: reduce_workspace_bytes(...) bytes of device memory, or null when that is 0.
void reduce_cuda(int op, bool unbiased, const float* x, float* y, int64_t* idx64, int32_t* idx32, int64_t outer,
                 int64_t R, int64_t inner, void* workspace, cudaStream_t stream);

/// dx (outer, R, inner) from dy (outer, inner): Sum dy; Mean dy / R; Var dy * 2 (x - mean) / (R - unbiased)
/// with mean (outer, inner); Max dy at idx (outer, inner), 0 elsewhere. x / mean / idx only where used.
void reduce_backward_cuda(int op, bool unbiased, const float* x, const float* mean, const float* dy, const int64_t* idx,
                          float* dx, int64_t outer, int64_t R, int64_t inner, cudaStream_t stream);

}  // namespace cudl::kernels
