// kernels/random.cuh — launchers of the random kernels (dropout, uniform, normal) built on the
// Philox-4x32-10 generator in backend/philox.hpp; the counter layout is documented there.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cudl::kernels {

/// y = keep ? x * scale : 0, mask = keep; keep from philox::keep(word, threshold). rng: device
/// i64[2] {seed, offset}, read by the kernel (so a captured graph sees the current state).
void dropout_cuda(const float* x, const int64_t* rng, float* y, uint8_t* mask, int64_t n, uint32_t threshold,
                  float scale, uint64_t stream_id, cudaStream_t stream);
/// dx = mask ? dy * scale : 0
void dropout_backward_cuda(const float* dy, const uint8_t* mask, float* dx, int64_t n, float scale,
                           cudaStream_t stream);
/// y = fma(range, uniform01(word), lo)
void random_uniform_cuda(float* y, int64_t n, uint64_t seed, uint64_t offset, uint64_t stream_id, float lo, float range,
                         cudaStream_t stream);
/// y = fma(stddev, z, mean), z by Box-Muller on word pairs (0, 1) and (2, 3) of each block. rng
/// (nullable): device i64[2] {seed, offset}, read by the kernel; then seed = rng[0] and the offset is
/// rng[1] + offset.
void random_normal_cuda(float* y, const int64_t* rng, int64_t n, uint64_t seed, uint64_t offset, uint64_t stream_id,
                        float mean, float stddev, cudaStream_t stream);

}  // namespace cudl::kernels
