// kernels/upsample.cu — nearest / bilinear 2-D upsampling (one thread per output) and its backward
// (one thread per input element gathering its outputs; no atomics). Weights from ops/upsample.hpp.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <cstdint>
#include <cuda_runtime.h>

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "ops/upsample.hpp"

namespace cudl::kernels {

/// Planes (n*c) of h x w upsampled by (sh, sw) to (h*sh) x (w*sw).
struct UpsampleShape {
  int64_t planes, h, w, sh, sw;
  int bilinear;
};

/// y (planes, h*sh, w*sw) from x (planes, h, w); one thread per output element.
void upsample2d_cuda(const float* x, float* y, const UpsampleShape& s, cudaStream_t stream);
/// dx (planes, h, w) from dy (planes, h*sh, w*sw); one thread per input element, gathering the
/// outputs that read it in row-major order (the CPU reference's order).
void upsample2d_backward_cuda(const float* dy, float* dx, const UpsampleShape& s, cudaStream_t stream);

namespace {

constexpr int kUpsampleBlock = 256;

// x: (planes, h, w)   y: (planes, h*sh, w*sw)
__global__ void upsample2d_kernel(const float* __restrict__ x, float* __restrict__ y, UpsampleShape s) {
  const int64_t Ho = s.h * s.sh, Wo = s.w * s.sw, n = s.planes * Ho * Wo;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ow = idx % Wo, oh = (idx / Wo) % Ho, plane = idx / (Ho * Wo);
    y[idx] = ops::upsample_at(x + plane * s.h * s.w, s.h, s.w, s.sh, s.sw, s.bilinear != 0, oh, ow);
  }
}

// dy: (planes, h*sh, w*sw)   dx: (planes, h, w)
__global__ void upsample2d_backward_kernel(const float* __restrict__ dy, float* __restrict__ dx, UpsampleShape s) {
  const int64_t n = s.planes * s.h * s.w;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = idx % s.w, i = (idx / s.w) % s.h, plane = idx / (s.h * s.w);
    dx[idx] = ops::upsample_grad_at(dy + plane * s.h * s.sh * s.w * s.sw, s.h, s.w, s.sh, s.sw, s.bilinear != 0, i, j);
  }
}

}  // namespace

void upsample2d_cuda(const float* x, float* y, const UpsampleShape& s, cudaStream_t stream) {
  const int64_t n = s.planes * s.h * s.sh * s.w * s.sw;
  if (n == 0) return;
  launch<upsample2d_kernel>(grid_for(n, kUpsampleBlock), kUpsampleBlock, 0, stream, x, y, s);
}

void upsample2d_backward_cuda(const float* dy, float* dx, const UpsampleShape& s, cudaStream_t stream) {
  const int64_t n = s.planes * s.h * s.w;
  if (n == 0) return;
  launch<upsample2d_backward_kernel>(grid_for(n, kUpsampleBlock), kUpsampleBlock, 0, stream, dy, dx, s);
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/upsample.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_upsample_ops puts them into the CUDA op table.

namespace cudl {
namespace {

kernels::UpsampleShape shape_of(const ops::Upsample2dArgs& g) {
  return {g.N * g.C, g.H, g.W, g.sh, g.sw, g.bilinear ? 1 : 0};
}

void cuda_upsample2d(const OpCall& c) {
  const ops::Upsample2dArgs g = ops::check_upsample2d_call(c);
  kernels::upsample2d_cuda(g.x.as<float>(), g.y.as<float>(), shape_of(g), cuda_context(c).stream());
}

void cuda_upsample2d_backward(const OpCall& c) {
  const ops::Upsample2dArgs g = ops::check_upsample2d_call(c);
  kernels::upsample2d_backward_cuda(g.dy.as<float>(), g.dx.as<float>(), shape_of(g), cuda_context(c).stream());
}

}  // namespace

void register_cuda_upsample_ops(OpTable& t) {
  t.add(OpKind::Upsample2d, cuda_upsample2d);
  t.add(OpKind::Upsample2dBackward, cuda_upsample2d_backward);
}

}  // namespace cudl
