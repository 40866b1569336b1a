// kernels/softmax.cuh — host launchers of the softmax / log-softmax kernels along the last axis of a
// contiguous (rows, cols) tensor of storage type f32, bf16 or f16 (fp32 math, results rounded to nearest
// even once), forward and backward.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/storage.cuh"

namespace cudl::kernels {

/// y = softmax(x) or log_softmax(x) per row (max subtracted first; NaN rows like torch).
void softmax_cuda(bool log, const void* x, void* y, Storage type, int64_t rows, int64_t cols, cudaStream_t stream);
/// softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy). Per row.
void softmax_backward_cuda(bool log, const void* y, const void* dy, void* dx, Storage type, int64_t rows, int64_t cols,
                           cudaStream_t stream);

}  // namespace cudl::kernels
