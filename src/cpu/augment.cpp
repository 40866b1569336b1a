// cpu/augment.cpp — CPU reference of the image augmentation family (AugmentImages): the spec.
// Per-image transforms come from backend/augment.hpp, keyed by (seed, offset, image, stream).
#include "ops/augment.hpp"

#include <cmath>

#include "backend/augment.hpp"
#include "backend/backend.hpp"
#include "ops/common.hpp"

namespace cudl {
namespace {

// in: x (B, C, H, W), rng {seed, offset}   out: y (B, C, H, W)
void augment_images(const OpCall& c) {
  const ops::AugmentArgs pr = ops::check_augment_call(c);
  const int64_t* rng = pr.rng.as<int64_t>();
  const uint64_t seed = static_cast<uint64_t>(rng[0]), offset = static_cast<uint64_t>(rng[1]);
  const float* x = pr.x.as<float>();
  float* y = pr.y.as<float>();
  const int64_t plane = pr.H * pr.W;
  for (int64_t b = 0; b < pr.B; ++b) {
    const augment::Transform t =
        augment::image_transform(seed, offset, pr.stream, static_cast<uint64_t>(b), pr.max_shift, pr.max_radians);
    for (int64_t ch = 0; ch < pr.C; ++ch) {
      const float* src = x + (b * pr.C + ch) * plane;
      float* dst = y + (b * pr.C + ch) * plane;
      for (int64_t r = 0; r < pr.H; ++r)
        for (int64_t col = 0; col < pr.W; ++col)
          dst[r * pr.W + col] = augment::transformed_pixel(src, pr.H, pr.W, col, r, t, pr.fill);
    }
  }
}

}  // namespace

void register_cpu_augment_ops(OpTable& t) { t.add(OpKind::AugmentImages, augment_images); }

}  // namespace cudl
