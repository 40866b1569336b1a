// kernels/random.cu — dropout (forward/backward; f32, bf16 or f16 storage), uniform and normal fills
// (f32). One thread per 16 bytes of data (1 or 2 Philox blocks of 4 elements; 16-byte loads/stores when
// aligned), grid-stride.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <cstdint>
#include <type_traits>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "backend/backend.hpp"
#include "backend/philox.hpp"
#include "cuda/context.hpp"
#include "cuda/storage_type.hpp"
#include "ops/random.hpp"

namespace cudl::kernels {

namespace {
constexpr int kBlock = 256;
}  // namespace

// --- dropout ---------------------------------------------------------------------------------------

/// The keep decisions of one block of 4 elements.
struct DropoutBlock {
  bool keep[4];
  __device__ __forceinline__ DropoutBlock(uint64_t seed, uint64_t offset, uint64_t stream_id, uint64_t b,
                                          uint32_t threshold) {
    const philox::U32x4 w = philox::block_words(seed, offset, stream_id, b);
    keep[0] = philox::keep(w.x, threshold);
    keep[1] = philox::keep(w.y, threshold);
    keep[2] = philox::keep(w.z, threshold);
    keep[3] = philox::keep(w.w, threshold);
  }
};

/// kN bytes of the u8 mask as one access (4 for f32 groups, 8 for 16-bit ones).
template <int kN>
using MaskWord = std::conditional_t<kN == 4, uint32_t, uint64_t>;

// x, y, mask: (n); rng: {seed, offset} on the device. T: float, __nv_bfloat16 or __half. One thread
// per group of kVec16<T> elements (1 or 2 Philox blocks): one 16-byte load and store of x / y and one
// mask word when `vec`; y = keep ? x * scale (fp32) : 0, rounded to T.
template <typename T>
static __global__ void dropout_kernel(const T* __restrict__ x, const int64_t* __restrict__ rng, T* __restrict__ y,
                                      uint8_t* __restrict__ mask, int64_t n, uint32_t threshold, float scale,
                                      uint64_t stream_id, bool vec) {
  constexpr int kN = kVec16<T>, kBlocksPerGroup = kN / 4;
  const uint64_t seed = static_cast<uint64_t>(rng[0]), offset = static_cast<uint64_t>(rng[1]);
  const int64_t groups = (n + kN - 1) / kN;
  for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < groups; g += (int64_t)gridDim.x * blockDim.x) {
    bool keep[kN];
    for (int j = 0; j < kBlocksPerGroup; ++j) {
      const DropoutBlock d(seed, offset, stream_id, static_cast<uint64_t>(g * kBlocksPerGroup + j), threshold);
      for (int k = 0; k < 4; ++k) keep[4 * j + k] = d.keep[k];
    }
    const int64_t i0 = g * kN;
    if (vec && i0 + kN <= n) {
      float v[kN];
      load16(x, g, v);
      uint8_t m[kN];
      for (int k = 0; k < kN; ++k) {
        v[k] = keep[k] ? v[k] * scale : 0.0f;
        m[k] = keep[k] ? 1 : 0;
      }
      store16(y, g, v);
      if (mask) {
        MaskWord<kN> w;
        memcpy(&w, m, kN);
        reinterpret_cast<MaskWord<kN>*>(mask)[g] = w;
      }
    } else {
      for (int k = 0; k < kN && i0 + k < n; ++k) {
        y[i0 + k] = from_float<T>(keep[k] ? to_float(x[i0 + k]) * scale : 0.0f);
        if (mask) mask[i0 + k] = keep[k] ? 1 : 0;
      }
    }
  }
}

/// y = keep ? x * scale : 0, mask = keep; keep from philox::keep(word, threshold). rng: device
/// i64[2] {seed, offset}, read by the kernel (so a captured graph sees the current state).
/// T: float, __nv_bfloat16 or __half (the entries below dispatch on the storage type); the product is fp32, rounded to T
/// to nearest even; the mask does not depend on T. One launch whatever T is.
template <typename T>
void dropout_cuda(const T* x, const int64_t* rng, T* y, uint8_t* mask, int64_t n, uint32_t threshold, float scale,
                  uint64_t stream_id, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kN = kVec16<T>;
  const bool vec = aligned16(x) && aligned16(y) && (mask == nullptr || aligned_to<kN>(mask));
  launch<dropout_kernel<T>>(grid_for((n + kN - 1) / kN, kBlock), kBlock, 0, stream, x, rng, y, mask, n, threshold,
                            scale, stream_id, vec);
}

// dy, mask, dx: (n); dx = mask ? dy * scale (fp32) : 0, rounded to T.
// dx may be dy (the planner runs DropoutBackward in place): no __restrict__.
template <typename T>
static __global__ void dropout_backward_kernel(const T* dy, const uint8_t* mask, T* dx, int64_t n, float scale,
                                               bool vec) {
  constexpr int kN = kVec16<T>;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t tail = 0;
  if (vec) {
    const int64_t groups = n / kN;
    for (int64_t g = first; g < groups; g += stride) {
      float v[kN];
      load16(dy, g, v);
      const MaskWord<kN> w = reinterpret_cast<const MaskWord<kN>*>(mask)[g];
      uint8_t m[kN];
      memcpy(m, &w, kN);
      for (int k = 0; k < kN; ++k) v[k] = m[k] ? v[k] * scale : 0.0f;
      store16(dx, g, v);
    }
    tail = groups * kN;
  }
  for (int64_t i = tail + first; i < n; i += stride) dx[i] = from_float<T>(mask[i] ? to_float(dy[i]) * scale : 0.0f);
}

/// dx = mask ? dy * scale : 0 (T as for dropout_cuda)
template <typename T>
void dropout_backward_cuda(const T* dy, const uint8_t* mask, T* dx, int64_t n, float scale, cudaStream_t stream) {
  if (n == 0) return;
  constexpr int kN = kVec16<T>;
  const bool vec = aligned16(dy) && aligned16(dx) && aligned_to<kN>(mask);
  launch<dropout_backward_kernel<T>>(grid_for((n + kN - 1) / kN, kBlock), kBlock, 0, stream, dy, mask, dx, n, scale,
                                     vec);
}

// --- uniform / normal ----------------------------------------------------------------------------

/// Stores 4 values of block b (fewer at the end), as one float4 when aligned.
__device__ __forceinline__ void store_block(float* y, int64_t n, int64_t b, const float (&v)[4], bool vec) {
  const int64_t i0 = b * 4;
  if (vec && i0 + 4 <= n) {
    reinterpret_cast<float4*>(y)[b] = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    for (int k = 0; k < 4 && i0 + k < n; ++k) y[i0 + k] = v[k];
  }
}

static __global__ void random_uniform_kernel(float* __restrict__ y, int64_t n, uint64_t seed, uint64_t offset,
                                             uint64_t stream_id, float lo, float range, bool vec) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < blocks; b += (int64_t)gridDim.x * blockDim.x) {
    const philox::U32x4 w = philox::block_words(seed, offset, stream_id, static_cast<uint64_t>(b));
    const float v[4] = {fmaf(range, philox::uniform01(w.x), lo), fmaf(range, philox::uniform01(w.y), lo),
                        fmaf(range, philox::uniform01(w.z), lo), fmaf(range, philox::uniform01(w.w), lo)};
    store_block(y, n, b, v, vec);
  }
}

/// y = fma(range, uniform01(word), lo)
void random_uniform_cuda(float* y, int64_t n, uint64_t seed, uint64_t offset, uint64_t stream_id, float lo, float range,
                         cudaStream_t stream) {
  if (n == 0) return;
  launch<random_uniform_kernel>(grid_for((n + 3) / 4, kBlock), kBlock, 0, stream, y, n, seed, offset, stream_id, lo,
                                range, aligned16(y));
}

/// Four values of block b into y of storage type T: float through store_block, 16 bits rounded.
template <typename T>
__device__ __forceinline__ void store_block_as(T* y, int64_t n, int64_t b, const float (&v)[4], bool vec) {
  if constexpr (std::is_same_v<T, float>) {
    store_block(y, n, b, v, vec);
  } else {
    for (int k = 0; k < 4 && b * 4 + k < n; ++k) y[b * 4 + k] = from_float<T>(v[k]);
  }
}

template <typename T>
static __global__ void random_normal_kernel(T* __restrict__ y, const int64_t* __restrict__ rng, int64_t n,
                                            uint64_t seed, uint64_t offset, uint64_t stream_id, float mean,
                                            float stddev, bool vec) {
  if (rng) {
    seed = static_cast<uint64_t>(rng[0]);
    offset += static_cast<uint64_t>(rng[1]);
  }
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < blocks; b += (int64_t)gridDim.x * blockDim.x) {
    const philox::U32x4 w = philox::block_words(seed, offset, stream_id, static_cast<uint64_t>(b));
    float z[4];
    philox::box_muller(w.x, w.y, &z[0], &z[1]);
    philox::box_muller(w.z, w.w, &z[2], &z[3]);
    const float v[4] = {fmaf(stddev, z[0], mean), fmaf(stddev, z[1], mean), fmaf(stddev, z[2], mean),
                        fmaf(stddev, z[3], mean)};
    store_block_as(y, n, b, v, vec);
  }
}

/// y = fma(stddev, z, mean) (rounded once to T), z by Box-Muller on word pairs (0, 1) and (2, 3) of
/// each block. rng (nullable): device i64[2] {seed, offset}, read by the kernel; then seed = rng[0]
/// and the offset is rng[1] + offset.
template <typename T>
void random_normal_cuda(T* y, const int64_t* rng, int64_t n, uint64_t seed, uint64_t offset, uint64_t stream_id,
                        float mean, float stddev, cudaStream_t stream) {
  if (n == 0) return;
  launch<random_normal_kernel<T>>(grid_for((n + 3) / 4, kBlock), kBlock, 0, stream, y, rng, n, seed, offset,
                                  stream_id, mean, stddev, aligned16(y));
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/random.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_random_ops puts them into the CUDA op table.

namespace cudl {
namespace {

void cuda_dropout(const OpCall& c) {
  const ops::DropoutArgs pr = ops::check_dropout_call(c);
  with_storage_type(pr.storage, "Dropout", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::dropout_cuda<T>(pr.x.as<T>(), pr.rng.as<int64_t>(), pr.y.as<T>(), pr.mask.as<uint8_t>(), pr.n,
                             pr.threshold, pr.scale, pr.stream, cuda_context(c).stream());
  });
}

void cuda_dropout_backward(const OpCall& c) {
  const ops::DropoutBackwardArgs pr = ops::check_dropout_backward_call(c);
  with_storage_type(pr.storage, "DropoutBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::dropout_backward_cuda<T>(pr.dy.as<T>(), pr.mask.as<uint8_t>(), pr.dx.as<T>(), pr.n, pr.scale,
                                      cuda_context(c).stream());
  });
}

void cuda_random_uniform(const OpCall& c) {
  const ops::RandomFillArgs pr = ops::check_random_fill_call(c);
  kernels::random_uniform_cuda(pr.y.as<float>(), pr.n, pr.seed, pr.offset, pr.stream, pr.a, pr.b,
                               cuda_context(c).stream());
}

void cuda_random_normal(const OpCall& c) {
  const ops::RandomFillArgs pr = ops::check_random_fill_call(c);
  with_storage_type(pr.storage, "RandomNormal", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::random_normal_cuda<T>(pr.y.as<T>(), pr.rng.as<int64_t>(), pr.n, pr.seed, pr.offset, pr.stream, pr.a,
                                   pr.b, cuda_context(c).stream());
  });
}

}  // namespace

void register_cuda_random_ops(OpTable& t) {
  t.add(OpKind::Dropout, cuda_dropout);
  t.add(OpKind::DropoutBackward, cuda_dropout_backward);
  t.add(OpKind::RandomUniform, cuda_random_uniform);
  t.add(OpKind::RandomNormal, cuda_random_normal);
}

}  // namespace cudl
