// kernels/augment.cu — AugmentImages: one block row per image (grid-stride over images in y);
// thread 0 draws the image's transform into shared memory, then the block fills its pixels.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <cstdint>
#include <cuda_runtime.h>

#include "backend/augment.hpp"
#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "ops/augment.hpp"

namespace cudl::kernels {

namespace {
constexpr int kBlock = 256;
constexpr unsigned kMaxImageBlocks = 65535;  // gridDim.y limit
}  // namespace

// x, y: (B, C, H, W); rng: {seed, offset} on the device
static __global__ void augment_images_kernel(const float* __restrict__ x, const int64_t* __restrict__ rng,
                                             float* __restrict__ y, int64_t B, int64_t C, int64_t H, int64_t W,
                                             int64_t max_shift, float max_radians, float fill, uint64_t stream_id) {
  __shared__ augment::Transform transform;
  const uint64_t seed = static_cast<uint64_t>(rng[0]), offset = static_cast<uint64_t>(rng[1]);
  const int64_t plane = H * W, per_image = C * plane;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    if (threadIdx.x == 0)
      transform = augment::image_transform(seed, offset, stream_id, static_cast<uint64_t>(b), max_shift, max_radians);
    __syncthreads();
    const augment::Transform t = transform;
    const float* src = x + b * per_image;
    float* dst = y + b * per_image;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < per_image;
         i += (int64_t)gridDim.x * blockDim.x) {
      const int64_t ch = i / plane, p = i % plane;
      dst[i] = augment::transformed_pixel(src + ch * plane, H, W, p % W, p / W, t, fill);
    }
    __syncthreads();  // `transform` is rewritten for the next image
  }
}

/// y = each (C, H, W) image of x shifted and rotated by its own random transform
/// (augment::image_transform of {seed, offset} = rng, read by the kernel, so a captured graph sees
/// the current state), bilinear sampling, `fill` outside. x, y: (B, C, H, W); y must not alias x.
void augment_images_cuda(const float* x, const int64_t* rng, float* y, int64_t B, int64_t C, int64_t H, int64_t W,
                         int64_t max_shift, float max_radians, float fill, uint64_t stream_id, cudaStream_t stream) {
  const int64_t per_image = C * H * W;
  if (B == 0 || per_image == 0) return;
  const dim3 grid(grid_for(per_image, kBlock, 64), static_cast<unsigned>(B < kMaxImageBlocks ? B : kMaxImageBlocks));
  launch<augment_images_kernel>(grid, kBlock, 0, stream, x, rng, y, B, C, H, W, max_shift, max_radians, fill,
                                stream_id);
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/augment.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_augment_ops puts them into the CUDA op table.

namespace cudl {
namespace {

void cuda_augment_images(const OpCall& c) {
  const ops::AugmentArgs pr = ops::check_augment_call(c);
  kernels::augment_images_cuda(pr.x.as<float>(), pr.rng.as<int64_t>(), pr.y.as<float>(), pr.B, pr.C,
                               pr.H, pr.W, pr.max_shift, pr.max_radians, pr.fill, pr.stream, cuda_context(c).stream());
}

}  // namespace

void register_cuda_augment_ops(OpTable& t) { t.add(OpKind::AugmentImages, cuda_augment_images); }

}  // namespace cudl
