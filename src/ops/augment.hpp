// ops/augment.hpp — the image augmentation family's contract (AugmentImages): typed attributes,
// named arguments and the check the CPU reference and the CUDA backend run first.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- image augmentation (kernels/augment.cu, src/cpu/augment.cpp; math in backend/augment.hpp) ---
// AugmentImages   in: x (B, C, H, W), rng i64[2] {seed, offset} (device)   out: y (B, C, H, W), not x:
//                   each image shifted by an integer (tx, ty) uniform in [-i[0], i[0]]^2 and rotated about
//                   its centre by an angle uniform in [-f[0], f[0]) degrees, bilinear, f[1] outside;
//                   per-image Philox words keyed by (seed, offset, image, stream id i[1]). No backward.

namespace cudl {
namespace ops {

/// AugmentImages: i[0] = max_shift (pixels), f[0] = max_degrees, f[1] = fill, i[1] = stream id.
struct AugmentAttrs {
  int64_t max_shift = 0;
  double max_degrees = 0, fill = 0;
  int64_t stream = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = max_shift, a.f[0] = max_degrees, a.f[1] = fill, a.i[1] = stream;
    return a;
  }
  static AugmentAttrs from(const OpAttrs& a) { return {a.i[0], a.f[0], a.f[1], a.i[1]}; }
};

/// A validated AugmentImages call: x (B, C, H, W) f32, rng i64[2] -> y (B, C, H, W) f32.
struct AugmentArgs {
  TensorView x, rng, y;
  int64_t B = 0, C = 0, H = 0, W = 0;
  int64_t max_shift = 0;  // pixels
  float max_radians = 0;  // max_degrees converted
  float fill = 0;
  uint64_t stream = 0;
};
AugmentArgs check_augment_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
