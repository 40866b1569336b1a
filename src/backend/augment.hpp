// backend/augment.hpp — the math of AugmentImages (random translation + rotation, bilinear
// sampling), shared by the CPU reference (src/cpu/augment.cpp) and the kernel (kernels/augment.cu).
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/hd.hpp"
#include "backend/philox.hpp"

namespace cudl::augment {

// Counter layout (the contract between CPU and CUDA; see op.hpp, AugmentImages):
//   image b of a call draws the 4 words philox4x32_10(counter = {lo32(offset), hi32(offset),
//   lo32(b), kStreamTag | lo32(stream_id)}, key = {lo32(seed), hi32(seed)}).
// Word 0 picks the horizontal shift, word 1 the vertical shift, word 2 the angle (word 3 unused).
// The tag bit keeps these counters apart from Dropout's (whose stream high word is 0), and the
// image index in the counter (not the block) means offset + 1 gives fresh numbers for every image.
constexpr uint32_t kStreamTag = 0x80000000u;

/// Output pixel (x, y) reads the input at (cos_a*u + sin_a*v + cx, -sin_a*u + cos_a*v + cy) with
/// u = x - cx - tx, v = y - cy - ty, (cx, cy) the image centre: the input translated by (tx, ty)
/// and rotated by the angle a about the centre (counter-clockwise on screen for a > 0).
struct Transform {
  float cos_a, sin_a;  // of the rotation angle
  int32_t tx, ty;      // integer shift in pixels: uniform in [-max_shift, max_shift]
};

/// Integer uniform in [0, span) from one word (multiply-shift; span <= 2^31).
CUDL_HD int64_t uniform_below(uint32_t word, uint64_t span) {
  return static_cast<int64_t>((static_cast<uint64_t>(word) * span) >> 32);
}

/// The random transform of image `image` for RNG state {seed, offset} and stream `stream_id`.
/// max_radians = max rotation; the angle is uniform in [-max_radians, max_radians).
CUDL_HD Transform image_transform(uint64_t seed, uint64_t offset, uint64_t stream_id, uint64_t image, int64_t max_shift,
                                  float max_radians) {
  const philox::U32x4 ctr{static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                          static_cast<uint32_t>(image), kStreamTag | static_cast<uint32_t>(stream_id)};
  const philox::U32x4 w = philox::philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  const uint64_t span = static_cast<uint64_t>(2 * max_shift + 1);
  Transform t;
  t.tx = static_cast<int32_t>(uniform_below(w.x, span) - max_shift);
  t.ty = static_cast<int32_t>(uniform_below(w.y, span) - max_shift);
  const float angle = max_radians * (2.0f * philox::uniform01(w.z) - 1.0f);
  t.cos_a = cosf(angle);
  t.sin_a = sinf(angle);
  return t;
}

/// Pixel (x, y) of one (H, W) plane, `fill` outside it.
CUDL_HD float pixel_or(const float* plane, int64_t H, int64_t W, int64_t x, int64_t y, float fill) {
  return (x >= 0 && x < W && y >= 0 && y < H) ? plane[y * W + x] : fill;
}

/// Output pixel (x, y) of one transformed (H, W) plane: bilinear interpolation of the input at the
/// source position, neighbours outside the image read as `fill`. Neighbours with weight exactly 0
/// are skipped, so an integer source position copies one pixel exactly (NaN/Inf included).
CUDL_HD float transformed_pixel(const float* plane, int64_t H, int64_t W, int64_t x, int64_t y, const Transform& t,
                                float fill) {
  const float cx = 0.5f * static_cast<float>(W - 1), cy = 0.5f * static_cast<float>(H - 1);
  const float u = static_cast<float>(x - t.tx) - cx, v = static_cast<float>(y - t.ty) - cy;
  const float sx = fmaf(t.cos_a, u, fmaf(t.sin_a, v, cx));
  const float sy = fmaf(-t.sin_a, u, fmaf(t.cos_a, v, cy));
  if (!(sx > -2.0f && sx < static_cast<float>(W) + 1.0f && sy > -2.0f && sy < static_cast<float>(H) + 1.0f))
    return fill;  // every neighbour is outside (also keeps the integer conversion in range)
  const float fx0 = floorf(sx), fy0 = floorf(sy);
  const float ax = sx - fx0, ay = sy - fy0;  // weights of the right / lower neighbours, in [0, 1)
  const int64_t x0 = static_cast<int64_t>(fx0), y0 = static_cast<int64_t>(fy0);
  float acc = 0.0f;
  const float wy[2] = {1.0f - ay, ay}, wx[2] = {1.0f - ax, ax};
  for (int j = 0; j < 2; ++j) {
    if (wy[j] == 0.0f) continue;
    float row = 0.0f;
    for (int i = 0; i < 2; ++i)
      if (wx[i] != 0.0f) row += wx[i] * pixel_or(plane, H, W, x0 + i, y0 + j, fill);
    acc += wy[j] * row;
  }
  return acc;
}

}  // namespace cudl::augment
