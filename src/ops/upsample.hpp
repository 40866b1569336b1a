// ops/upsample.hpp — the upsampling op family's contract: typed attributes, the bilinear weights shared
// by the CPU reference and the kernels, named arguments and the check both backends run first.
#pragma once

#include <cstdint>

#include "backend/hd.hpp"
#include "backend/op.hpp"

// --- upsampling (kernels/upsample.cu, src/cpu/upsample.cpp) ---
// Upsample2d          in: x (N, C, H, W)    out: y (N, C, H*sh, W*sw)
//                       i[0..1] = scale h, w (>= 1)  i[2] = UpsampleMode (Nearest, Bilinear)
//                       nearest: y[oh, ow] = x[oh / sh, ow / sw]. bilinear: half-pixel centres
//                       (align_corners = false, as Keras UpSampling2D and PyTorch): source coordinate
//                       max((o + 0.5) / s - 0.5, 0), neighbours floor and min(floor + 1, H - 1); both
//                       are read even where a weight is 0 (NaN there propagates, as in PyTorch).
// Upsample2dBackward  in: dy (N, C, H*sh, W*sw)   out: dx (N, C, H, W); attrs as Upsample2d. Each dx
//                       element gathers the dy elements that read it, in row-major order (no atomics).

namespace cudl {

enum class UpsampleMode : int64_t { Nearest = 0, Bilinear = 1 };

namespace ops {

/// Upsample2d, Upsample2dBackward: i[0..1] = scale h, w; i[2] = UpsampleMode.
struct Upsample2dAttrs {
  int64_t scale_h = 2, scale_w = 2;
  UpsampleMode mode = UpsampleMode::Nearest;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = scale_h, a.i[1] = scale_w, a.i[2] = static_cast<int64_t>(mode);
    return a;
  }
  static Upsample2dAttrs from(const OpAttrs& a) { return {a.i[0], a.i[1], static_cast<UpsampleMode>(a.i[2])}; }
};

/// Bilinear source of output row (or column) o along an axis of `in` elements upsampled by `scale`:
/// neighbours i0 <= i1 and the weight l of i1 (i0 gets 1 - l).
CUDL_HD void upsample_source(int64_t o, int64_t in, int64_t scale, int64_t& i0, int64_t& i1, float& l) {
  float src = (static_cast<float>(o) + 0.5f) / static_cast<float>(scale) - 0.5f;
  if (src < 0.f) src = 0.f;
  i0 = static_cast<int64_t>(src);  // floor: src >= 0
  if (i0 > in - 1) i0 = in - 1;
  i1 = i0 + 1 < in ? i0 + 1 : in - 1;
  l = src - static_cast<float>(i0);
}

/// Weight of input row i in output row o: nearest 1 when i == o / scale; bilinear 1 - l for i0 and
/// l for i1 (their sum when they coincide at the border).
CUDL_HD float upsample_weight(int64_t o, int64_t i, int64_t in, int64_t scale, bool bilinear) {
  if (!bilinear) return o / scale == i ? 1.f : 0.f;
  int64_t i0, i1;
  float l;
  upsample_source(o, in, scale, i0, i1, l);
  return (i0 == i ? 1.f - l : 0.f) + (i1 == i ? l : 0.f);
}

/// Reads element k of a plane as float: the CPU reference's f32 planes; the kernels pass their own,
/// widening bf16 / f16.
struct F32Plane {
  const float* p;
  CUDL_HD float operator()(int64_t k) const { return p[k]; }
};

/// y[oh, ow] of one plane x (h, w) upsampled by (sh, sw): the op's value, shared by the CPU
/// reference and the kernel. `x(k)` returns the plane's element k as float.
template <typename Plane>
CUDL_HD float upsample_at(Plane x, int64_t h, int64_t w, int64_t sh, int64_t sw, bool bilinear, int64_t oh,
                          int64_t ow) {
  if (!bilinear) return x((oh / sh) * w + ow / sw);
  int64_t i0, i1, j0, j1;
  float lh, lw;
  upsample_source(oh, h, sh, i0, i1, lh);
  upsample_source(ow, w, sw, j0, j1, lw);
  const float top = (1.f - lw) * x(i0 * w + j0) + lw * x(i0 * w + j1);
  const float bottom = (1.f - lw) * x(i1 * w + j0) + lw * x(i1 * w + j1);
  return (1.f - lh) * top + lh * bottom;
}

/// Output rows that may read input row i (a superset; upsample_weight is 0 for the others):
/// [first, last) within [0, in * scale).
CUDL_HD void upsample_sources(int64_t i, int64_t in, int64_t scale, bool bilinear, int64_t& first, int64_t& last) {
  if (!bilinear) {
    first = i * scale, last = (i + 1) * scale;
    return;
  }
  first = (i - 1) * scale > 0 ? (i - 1) * scale : 0;
  last = (i + 2) * scale < in * scale ? (i + 2) * scale : in * scale;
}

/// dx[i, j] of one plane: the dy (h*sh, w*sw) elements that read x[i, j], times their weights,
/// summed in row-major order (the gradient of upsample_at). `dy(k)` as `x(k)` there.
template <typename Plane>
CUDL_HD float upsample_grad_at(Plane dy, int64_t h, int64_t w, int64_t sh, int64_t sw, bool bilinear, int64_t i,
                               int64_t j) {
  int64_t oh0, oh1, ow0, ow1;
  upsample_sources(i, h, sh, bilinear, oh0, oh1);
  upsample_sources(j, w, sw, bilinear, ow0, ow1);
  float acc = 0.f;
  for (int64_t oh = oh0; oh < oh1; ++oh) {
    const float wh = upsample_weight(oh, i, h, sh, bilinear);
    if (wh == 0.f) continue;
    for (int64_t ow = ow0; ow < ow1; ++ow) {
      const float ww = upsample_weight(ow, j, w, sw, bilinear);
      if (ww != 0.f) acc += wh * ww * dy(oh * w * sw + ow);
    }
  }
  return acc;
}

/// A validated Upsample2d (x -> y) or Upsample2dBackward (dy -> dx) call: sizes of the small
/// (N, C, H, W) and large (N, C, H*sh, W*sw) side; x/dx are the small tensors, y/dy the large.
struct Upsample2dArgs {
  TensorView x, y, dy, dx;
  int64_t N = 0, C = 0, H = 0, W = 0, sh = 1, sw = 1;
  bool bilinear = false;
  DType storage = DType::f32;  // of x and y (dy and dx): f32, bf16 or f16 (ops/precision.hpp)
  int64_t Ho() const { return H * sh; }
  int64_t Wo() const { return W * sw; }
};
Upsample2dArgs check_upsample2d_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
