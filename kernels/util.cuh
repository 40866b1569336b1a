// kernels/util.cuh — launchers of the graph utility kernels (step counters, metric accumulation).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cudl::kernels {

/// acc[i] += scale * x[i] for n elements; x_dtype: 0 f32, 1 i32, 2 i64, 3 u8.
void accumulate_cuda(float* acc, const void* x, int x_dtype, float scale, int64_t n, cudaStream_t stream);
/// x[i] += delta for n elements of f32, i32 or i64 (dtype 0, 1, 2).
void increment_cuda(void* x, int dtype, double delta, int64_t n, cudaStream_t stream);

/// idx[j] = perm[(*cursor + j) % n] for j < b; the cursor is read on the device.
void batch_indices_cuda(int32_t* idx, const int32_t* perm, const int64_t* cursor, int64_t n, int64_t b,
                        cudaStream_t stream);

}  // namespace cudl::kernels
