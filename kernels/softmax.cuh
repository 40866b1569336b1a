// kernels/softmax.cuh — host launchers of the softmax / log-softmax kernels along the last axis of a
// contiguous (rows, cols) f32 tensor, forward and backward.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cudl::kernels {

/// y = softmax(x) or log_softmax(x) per row (max subtracted first; NaN rows like torch).
void softmax_cuda(bool log, const float* x, float* y, int64_t rows, int64_t cols, cudaStream_t stream);
/// softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy). Per row.
void softmax_backward_cuda(bool log, const float* y, const float* dy, float* dx, int64_t rows, int64_t cols,
                           cudaStream_t stream);

}  // namespace cudl::kernels
