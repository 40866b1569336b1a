// kernels/upsample.cu — nearest / bilinear 2-D upsampling (one thread per output) and its backward
// (one thread per input element gathering its outputs; no atomics), in f32, bf16 or f16 storage with
// fp32 math. Weights from ops/upsample.hpp.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <cstdint>
#include <cuda_runtime.h>

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "cuda/storage_type.hpp"
#include "ops/upsample.hpp"

namespace cudl::kernels {

/// Planes (n*c) of h x w upsampled by (sh, sw) to (h*sh) x (w*sw).
struct UpsampleShape {
  int64_t planes, h, w, sh, sw;
  int bilinear;
};

namespace {

constexpr int kUpsampleBlock = 256;

/// Element k of a plane of T, widened to float (ops::upsample_at reads through it).
template <typename T>
struct StoragePlane {
  const T* p;
  __device__ float operator()(int64_t k) const { return to_float(p[k]); }
};

// x: (planes, h, w)   y: (planes, h*sh, w*sw); fp32 math, one rounding per store
template <typename T>
__global__ void upsample2d_kernel(const T* __restrict__ x, T* __restrict__ y, UpsampleShape s) {
  const int64_t Ho = s.h * s.sh, Wo = s.w * s.sw, n = s.planes * Ho * Wo;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t ow = idx % Wo, oh = (idx / Wo) % Ho, plane = idx / (Ho * Wo);
    y[idx] = from_float<T>(
        ops::upsample_at(StoragePlane<T>{x + plane * s.h * s.w}, s.h, s.w, s.sh, s.sw, s.bilinear != 0, oh, ow));
  }
}

// dy: (planes, h*sh, w*sw)   dx: (planes, h, w); the sum in fp32, rounded once
template <typename T>
__global__ void upsample2d_backward_kernel(const T* __restrict__ dy, T* __restrict__ dx, UpsampleShape s) {
  const int64_t n = s.planes * s.h * s.w;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < n; idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t j = idx % s.w, i = (idx / s.w) % s.h, plane = idx / (s.h * s.w);
    dx[idx] = from_float<T>(ops::upsample_grad_at(StoragePlane<T>{dy + plane * s.h * s.sh * s.w * s.sw}, s.h, s.w,
                                                  s.sh, s.sw, s.bilinear != 0, i, j));
  }
}

}  // namespace

/// y (planes, h*sh, w*sw) from x (planes, h, w), both T (float, __nv_bfloat16 or __half); one thread
/// per output element.
template <typename T>
void upsample2d_cuda(const T* x, T* y, const UpsampleShape& s, cudaStream_t stream) {
  const int64_t n = s.planes * s.h * s.sh * s.w * s.sw;
  if (n == 0) return;
  launch<upsample2d_kernel<T>>(grid_for(n, kUpsampleBlock), kUpsampleBlock, 0, stream, x, y, s);
}

/// dx (planes, h, w) from dy (planes, h*sh, w*sw); one thread per input element, gathering the
/// outputs that read it in row-major order (the CPU reference's order).
template <typename T>
void upsample2d_backward_cuda(const T* dy, T* dx, const UpsampleShape& s, cudaStream_t stream) {
  const int64_t n = s.planes * s.h * s.w;
  if (n == 0) return;
  launch<upsample2d_backward_kernel<T>>(grid_for(n, kUpsampleBlock), kUpsampleBlock, 0, stream, dy, dx, s);
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
  with_storage_type(g.storage, "Upsample2d", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::upsample2d_cuda(g.x.as<T>(), g.y.as<T>(), shape_of(g), cuda_context(c).stream());
  });
}

void cuda_upsample2d_backward(const OpCall& c) {
  const ops::Upsample2dArgs g = ops::check_upsample2d_call(c);
  with_storage_type(g.storage, "Upsample2dBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::upsample2d_backward_cuda(g.dy.as<T>(), g.dx.as<T>(), shape_of(g), cuda_context(c).stream());
  });
}

}  // namespace

void register_cuda_upsample_ops(OpTable& t) {
  t.add(OpKind::Upsample2d, cuda_upsample2d);
  t.add(OpKind::Upsample2dBackward, cuda_upsample2d_backward);
}

}  // namespace cudl
