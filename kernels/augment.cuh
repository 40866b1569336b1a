// kernels/augment.cuh — launcher of the image augmentation kernel (random translation + rotation
// with bilinear sampling); the math and the Philox counter layout are in backend/augment.hpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cudl::kernels {

/// y = each (C, H, W) image of x shifted and rotated by its own random transform
/// (augment::image_transform of {seed, offset} = rng, read by the kernel, so a captured graph sees
/// the current state), bilinear sampling, `fill` outside. x, y: (B, C, H, W); y must not alias x.
void augment_images_cuda(const float* x, const int64_t* rng, float* y, int64_t B, int64_t C, int64_t H, int64_t W,
                         int64_t max_shift, float max_radians, float fill, uint64_t stream_id, cudaStream_t stream);

}  // namespace cudl::kernels
