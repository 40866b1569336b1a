// kernels/random.cuh — launchers of the random kernels (dropout, uniform, normal) built on the
// Philox-4x32-10 generator in backend/philox.hpp; the counter layout is documented there.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace cudl::kernels {

/// y = keep ? x * scale : 0, mask = keep; keep from philox::keep(word, threshold). rng: device
/// i64[2] {seed, offset}, read by the kernel (so a captured graph sees the current state).
/// T: float, __nv_bfloat16 or __half (instantiated in random.cu); the product is fp32, rounded to T
/// to nearest even; the mask does not depend on T. One launch whatever T is.
template <typename T>
void dropout_cuda(const T* x, const int64_t* rng, T* y, uint8_t* mask, int64_t n, uint32_t threshold, float scale,
                  uint64_t stream_id, cudaStream_t stream);
/// dx = mask ? dy * scale : 0 (T as for dropout_cuda)
template <typename T>
void dropout_backward_cuda(const T* dy, const uint8_t* mask, T* dx, int64_t n, float scale, cudaStream_t stream);
/// y = fma(range, uniform01(word), lo)
void random_uniform_cuda(float* y, int64_t n, uint64_t seed, uint64_t offset, uint64_t stream_id, float lo, float range,
                         cudaStream_t stream);
/// y = fma(stddev, z, mean), z by Box-Muller on word pairs (0, 1) and (2, 3) of each block. rng
/// (nullable): device i64[2] {seed, offset}, read by the kernel; then seed = rng[0] and the offset is
/// rng[1] + offset.
void random_normal_cuda(float* y, const int64_t* rng, int64_t n, uint64_t seed, uint64_t offset, uint64_t stream_id,
                        float mean, float stddev, cudaStream_t stream);

}  // namespace cudl::kernels
