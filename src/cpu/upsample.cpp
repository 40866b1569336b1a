// cpu/upsample.cpp — CPU reference of the upsampling op family (the spec): nearest and bilinear
// upsampling by integer factors, the backward pass gathering per input element in a fixed order
// (the per-element formulas are ops/upsample.hpp's, shared with the kernels).
#include "ops/upsample.hpp"

#include "backend/backend.hpp"

namespace cudl {
namespace {

void cpu_upsample2d(const OpCall& c) {
  const ops::Upsample2dArgs g = ops::check_upsample2d_call(c);
  const int64_t Ho = g.Ho(), Wo = g.Wo();
  for (int64_t plane = 0; plane < g.N * g.C; ++plane) {
    const float* xp = g.x.as<float>() + plane * g.H * g.W;
    float* yp = g.y.as<float>() + plane * Ho * Wo;
    for (int64_t oh = 0; oh < Ho; ++oh)
      for (int64_t ow = 0; ow < Wo; ++ow) yp[oh * Wo + ow] = ops::upsample_at(ops::F32Plane{xp}, g.H, g.W, g.sh, g.sw, g.bilinear, oh, ow);
  }
}

void cpu_upsample2d_backward(const OpCall& c) {
  const ops::Upsample2dArgs g = ops::check_upsample2d_call(c);
  for (int64_t plane = 0; plane < g.N * g.C; ++plane) {
    const float* dyp = g.dy.as<float>() + plane * g.Ho() * g.Wo();
    float* dxp = g.dx.as<float>() + plane * g.H * g.W;
    for (int64_t i = 0; i < g.H; ++i)
      for (int64_t j = 0; j < g.W; ++j)
        dxp[i * g.W + j] = ops::upsample_grad_at(ops::F32Plane{dyp}, g.H, g.W, g.sh, g.sw, g.bilinear, i, j);
  }
}

}  // namespace

void register_cpu_upsample_ops(OpTable& t) {
  t.add(OpKind::Upsample2d, cpu_upsample2d);
  t.add(OpKind::Upsample2dBackward, cpu_upsample2d_backward);
}

}  // namespace cudl
