// kernels/pool.cu — pooling kernels: one thread per output (forward), one thread per input
// element gathering its windows (backward; deterministic, no atomics), warp per image (global).
// Generic over the storage type (f32, bf16, f16): max pooling compares widened values, every sum
// (average pooling, the backward passes) is fp32 and rounded once.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <cstdint>
#include <cuda_runtime.h>

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/storage.cuh"
#include "ops/pool.hpp"

namespace cudl::kernels {

/// Window geometry: x (n, c, h, w) -> y (n, c, p, q), kernel (kh, kw), stride (sh, sw), padding (ph, pw).
struct Pool2dShape {
  int64_t n, c, h, w, p, q;
  int kh, kw, sh, sw, ph, pw;
};

namespace {

constexpr int kPoolBlock = 256;
constexpr int kPoolWarps = kPoolBlock / kWarpSize;

__device__ __forceinline__ bool is_nan(float v) { return v != v; }

/// Flat index (into h * w) of the maximum of window (p, q) of one image; first in row-major
/// window order wins ties, NaN counts as the maximum (first NaN wins). Mirrors src/cpu/pool.cpp.
template <typename T>
__device__ __forceinline__ int window_argmax(const T* __restrict__ img, const Pool2dShape& s, int64_t p, int64_t q,
                                             float& best_v) {
  int best = -1;
  best_v = 0.f;
  const int64_t h0 = p * s.sh - s.ph, w0 = q * s.sw - s.pw;
  for (int i = 0; i < s.kh; ++i) {
    const int64_t hh = h0 + i;
    if (hh < 0 || hh >= s.h) continue;
    for (int j = 0; j < s.kw; ++j) {
      const int64_t ww = w0 + j;
      if (ww < 0 || ww >= s.w) continue;
      const float v = to_float(img[hh * s.w + ww]);
      if (best < 0 || (!is_nan(best_v) && (v > best_v || is_nan(v)))) {
        best = static_cast<int>(hh * s.w + ww);
        best_v = v;
      }
    }
  }
  return best;
}

/// Range [first, last] of window positions along one axis whose window covers input coordinate i.
__device__ __forceinline__ void covering_windows(int64_t i, int k, int stride, int pad, int64_t out, int64_t& first,
                                                 int64_t& last) {
  const int64_t lo = i + pad - k + 1;  // smallest start (in padded coordinates) that still covers i
  first = lo <= 0 ? 0 : (lo + stride - 1) / stride;
  last = (i + pad) / stride;
  if (last > out - 1) last = out - 1;
}

template <typename T>
__global__ void __launch_bounds__(kPoolBlock)
    max_pool2d_kernel(const T* __restrict__ x, T* __restrict__ y, int32_t* __restrict__ argmax, Pool2dShape s) {
  const int64_t total = s.n * s.c * s.p * s.q;
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t q = o % s.q, p = (o / s.q) % s.p, img = o / (s.p * s.q);
    float v;
    const int k = window_argmax(x + img * s.h * s.w, s, p, q, v);
    y[o] = from_float<T>(v);  // exact: v is one of x's values
    if (argmax) argmax[o] = k;
  }
}

/// Each input cell visits the windows covering it in (p, q) order; a window contributes when the
/// cell holds the window's max value and is its argmax (recomputed only in that case).
template <typename T>
__global__ void __launch_bounds__(kPoolBlock)
    max_pool2d_backward_kernel(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ dy,
                               T* __restrict__ dx, Pool2dShape s) {
  const int64_t total = s.n * s.c * s.h * s.w;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t col = i % s.w, row = (i / s.w) % s.h, img = i / (s.h * s.w);
    const T* xi = x + img * s.h * s.w;
    const float v = to_float(x[i]);
    const int self = static_cast<int>(row * s.w + col);
    int64_t p0, p1, q0, q1;
    covering_windows(row, s.kh, s.sh, s.ph, s.p, p0, p1);
    covering_windows(col, s.kw, s.sw, s.pw, s.q, q0, q1);
    float acc = 0.f;
    for (int64_t p = p0; p <= p1; ++p)
      for (int64_t q = q0; q <= q1; ++q) {
        const int64_t o = (img * s.p + p) * s.q + q;
        const float m = to_float(y[o]);
        if (!(m == v || (is_nan(m) && is_nan(v)))) continue;
        float unused;
        if (window_argmax(xi, s, p, q, unused) == self) acc += to_float(dy[o]);
      }
    dx[i] = from_float<T>(acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kPoolBlock)
    avg_pool2d_kernel(const T* __restrict__ x, T* __restrict__ y, Pool2dShape s) {
  const int64_t total = s.n * s.c * s.p * s.q;
  const float inv_area = 1.f / static_cast<float>(s.kh * s.kw);
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t q = o % s.q, p = (o / s.q) % s.p, img = o / (s.p * s.q);
    const T* xi = x + img * s.h * s.w;
    const int64_t h0 = p * s.sh - s.ph, w0 = q * s.sw - s.pw;
    float acc = 0.f;
    for (int i = 0; i < s.kh; ++i) {
      const int64_t hh = h0 + i;
      if (hh < 0 || hh >= s.h) continue;
      for (int j = 0; j < s.kw; ++j) {
        const int64_t ww = w0 + j;
        if (ww >= 0 && ww < s.w) acc += to_float(xi[hh * s.w + ww]);
      }
    }
    y[o] = from_float<T>(acc * inv_area);
  }
}

template <typename T>
__global__ void __launch_bounds__(kPoolBlock)
    avg_pool2d_backward_kernel(const T* __restrict__ dy, T* __restrict__ dx, Pool2dShape s) {
  const int64_t total = s.n * s.c * s.h * s.w;
  const float inv_area = 1.f / static_cast<float>(s.kh * s.kw);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t col = i % s.w, row = (i / s.w) % s.h, img = i / (s.h * s.w);
    int64_t p0, p1, q0, q1;
    covering_windows(row, s.kh, s.sh, s.ph, s.p, p0, p1);
    covering_windows(col, s.kw, s.sw, s.pw, s.q, q0, q1);
    float acc = 0.f;
    for (int64_t p = p0; p <= p1; ++p)
      for (int64_t q = q0; q <= q1; ++q) acc += to_float(dy[(img * s.p + p) * s.q + q]);
    dx[i] = from_float<T>(acc * inv_area);
  }
}

/// One warp per image: mean of its hw values.
template <typename T>
__global__ void __launch_bounds__(kPoolBlock)
    global_avg_pool_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t images, int64_t hw) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const float inv = 1.f / static_cast<float>(hw);
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kPoolWarps) + warp; r < images;
       r += static_cast<int64_t>(gridDim.x) * kPoolWarps) {
    float acc = 0.f;
    for (int64_t k = lane; k < hw; k += kWarpSize) acc += to_float(x[r * hw + k]);
    acc = warp_reduce_sum(acc);
    if (lane == 0) y[r] = from_float<T>(acc * inv);
  }
}

template <typename T>
__global__ void __launch_bounds__(kPoolBlock)
    global_avg_pool_backward_kernel(const T* __restrict__ dy, T* __restrict__ dx, int64_t images, int64_t hw) {
  const float inv = 1.f / static_cast<float>(hw);
  const int64_t total = images * hw;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dx[i] = from_float<T>(to_float(dy[i / hw]) * inv);
}

}  // namespace

/// y = window max (first maximum in row-major window order; NaN counts as the maximum);
/// argmax (nullable) = flat index into h * w. x and y of storage `type` (the max is exact in any).
void max_pool2d_cuda(const void* x, void* y, int32_t* argmax, Storage type, const Pool2dShape& s, cudaStream_t stream) {
  const int64_t total = s.n * s.c * s.p * s.q;
  if (total == 0) return;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<max_pool2d_kernel<T>>(grid_for(total, kPoolBlock), kPoolBlock, 0, stream, static_cast<const T*>(x),
                                 static_cast<T*>(y), argmax, s);
  });
}

/// dx[i] = sum of dy over the windows whose argmax is i (one thread per input element, no atomics);
/// x, y, dy, dx of storage `type`, the sum in fp32 rounded once.
void max_pool2d_backward_cuda(const void* x, const void* y, const void* dy, void* dx, Storage type,
                              const Pool2dShape& s, cudaStream_t stream) {
  const int64_t total = s.n * s.c * s.h * s.w;
  if (total == 0) return;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<max_pool2d_backward_kernel<T>>(grid_for(total, kPoolBlock), kPoolBlock, 0, stream, static_cast<const T*>(x),
                                          static_cast<const T*>(y), static_cast<const T*>(dy), static_cast<T*>(dx), s);
  });
}

/// y = window sum / (kh * kw) (padding counts as zeros). x, y (dy, dx) of storage `type`: the sums in
/// fp32, each result rounded once.
void avg_pool2d_cuda(const void* x, void* y, Storage type, const Pool2dShape& s, cudaStream_t stream) {
  const int64_t total = s.n * s.c * s.p * s.q;
  if (total == 0) return;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<avg_pool2d_kernel<T>>(grid_for(total, kPoolBlock), kPoolBlock, 0, stream, static_cast<const T*>(x),
                                 static_cast<T*>(y), s);
  });
}

void avg_pool2d_backward_cuda(const void* dy, void* dx, Storage type, const Pool2dShape& s, cudaStream_t stream) {
  const int64_t total = s.n * s.c * s.h * s.w;
  if (total == 0) return;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<avg_pool2d_backward_kernel<T>>(grid_for(total, kPoolBlock), kPoolBlock, 0, stream, static_cast<const T*>(dy),
                                          static_cast<T*>(dx), s);
  });
}

/// y (images) = mean of each image of hw values; backward spreads dy / hw. Storage as above.
void global_avg_pool_cuda(const void* x, void* y, Storage type, int64_t images, int64_t hw, cudaStream_t stream) {
  if (images == 0) return;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<global_avg_pool_kernel<T>>(grid_for((images + kPoolWarps - 1) / kPoolWarps, 1), kPoolBlock, 0, stream,
                                      static_cast<const T*>(x), static_cast<T*>(y), images, hw);
  });
}

void global_avg_pool_backward_cuda(const void* dy, void* dx, Storage type, int64_t images, int64_t hw,
                                   cudaStream_t stream) {
  const int64_t total = images * hw;
  if (total == 0) return;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<global_avg_pool_backward_kernel<T>>(grid_for(total, kPoolBlock), kPoolBlock, 0, stream,
                                               static_cast<const T*>(dy), static_cast<T*>(dx), images, hw);
  });
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/pool.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_pool_ops puts them into the CUDA op table.

namespace cudl {

namespace {

kernels::Pool2dShape shape_of(const ops::PoolGeometry& g) {
  return {g.n,
          g.c,
          g.h,
          g.w,
          g.p,
          g.q,
          static_cast<int>(g.kh),
          static_cast<int>(g.kw),
          static_cast<int>(g.sh),
          static_cast<int>(g.sw),
          static_cast<int>(g.ph),
          static_cast<int>(g.pw)};
}

void max_pool2d(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::max_pool2d_cuda(g.x.data, g.y.data, g.argmax.as<int32_t>(), kernels::storage_of(g.storage), shape_of(g),
                           cuda_context(call).stream());
}

void max_pool2d_backward(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::max_pool2d_backward_cuda(g.x.data, g.y.data, g.dy.data, g.dx.data, kernels::storage_of(g.storage),
                                    shape_of(g), cuda_context(call).stream());
}

void avg_pool2d(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::avg_pool2d_cuda(g.x.data, g.y.data, kernels::storage_of(g.storage), shape_of(g),
                           cuda_context(call).stream());
}

void avg_pool2d_backward(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::avg_pool2d_backward_cuda(g.dy.data, g.dx.data, kernels::storage_of(g.storage), shape_of(g),
                                    cuda_context(call).stream());
}

void global_avg_pool(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::global_avg_pool_cuda(g.x.data, g.y.data, kernels::storage_of(g.storage), g.n * g.c, g.h * g.w,
                                cuda_context(call).stream());
}

void global_avg_pool_backward(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::global_avg_pool_backward_cuda(g.dy.data, g.dx.data, kernels::storage_of(g.storage), g.n * g.c, g.h * g.w,
                                         cuda_context(call).stream());
}

}  // namespace

void register_cuda_pool_ops(OpTable& t) {
  t.add(OpKind::MaxPool2d, max_pool2d);
  t.add(OpKind::MaxPool2dBackward, max_pool2d_backward);
  t.add(OpKind::AvgPool2d, avg_pool2d);
  t.add(OpKind::AvgPool2dBackward, avg_pool2d_backward);
  t.add(OpKind::GlobalAvgPool, global_avg_pool);
  t.add(OpKind::GlobalAvgPoolBackward, global_avg_pool_backward);
}

}  // namespace cudl
