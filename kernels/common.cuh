// kernels/common.cuh — what every kernel file includes first: the launch macros, launch checks,
// grid sizing and small device helpers shared by the op families.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/launch.cuh"

namespace cudl::kernels {

constexpr int kWarpSize = 32;

/// Blocks for a grid-stride loop over n items: enough to fill the GPU, never more than needed.
inline unsigned grid_for(int64_t n, int block, int max_blocks = 132 * 16) {
  int64_t b = (n + block - 1) / block;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

/// Throws cudl::Error naming the kernel when the last launch failed (defined in src/cuda).
void check_launch(const char* kernel_name);

template <typename T>
__device__ __forceinline__ T warp_reduce_sum(T v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_reduce_max(T v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

/// Single-pass grids: true in exactly one block, the last one to arrive, and that block then sees
/// every write the other blocks made before they called it. Every thread of every block must call
/// it (it holds barriers), once per launch. `counter` is 0 when the grid starts
/// (CudaContext::block_counter) and 0 again when the last block has passed: atomicInc wraps it.
/// The last block reads what the others wrote with __ldcg (L2), not through a possibly stale L1.
__device__ __forceinline__ bool last_block(unsigned int* counter) {
  __shared__ int is_last;
  __threadfence();  // this block's writes reach device scope before its arrival is counted
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
    const unsigned int blocks = gridDim.x * gridDim.y * gridDim.z;
    is_last = atomicInc(counter, blocks - 1) == blocks - 1;
  }
  __syncthreads();
  const bool last = is_last != 0;
  if (last) __threadfence();
  return last;
}

}  // namespace cudl::kernels
