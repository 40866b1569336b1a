// kernels/random.cu — dropout (forward/backward), uniform and normal fills. One thread per Philox
// block of 4 elements (float4 loads/stores when aligned), grid-stride over blocks.
#include "backend/philox.hpp"
#include "kernels/common.cuh"
#include "kernels/random.cuh"

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

// x, y, mask: (n); rng: {seed, offset} on the device
static __global__ void dropout_kernel(const float* __restrict__ x, const int64_t* __restrict__ rng,
                                      float* __restrict__ y, uint8_t* __restrict__ mask, int64_t n, uint32_t threshold,
                                      float scale, uint64_t stream_id, bool vec) {
  const uint64_t seed = static_cast<uint64_t>(rng[0]), offset = static_cast<uint64_t>(rng[1]);
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < blocks; b += (int64_t)gridDim.x * blockDim.x) {
    const DropoutBlock d(seed, offset, stream_id, static_cast<uint64_t>(b), threshold);
    const int64_t i0 = b * 4;
    if (vec && i0 + 4 <= n) {
      const float4 v = reinterpret_cast<const float4*>(x)[b];
      float4 o;
      o.x = d.keep[0] ? v.x * scale : 0.0f;
      o.y = d.keep[1] ? v.y * scale : 0.0f;
      o.z = d.keep[2] ? v.z * scale : 0.0f;
      o.w = d.keep[3] ? v.w * scale : 0.0f;
      reinterpret_cast<float4*>(y)[b] = o;
      if (mask)
        reinterpret_cast<uchar4*>(mask)[b] =
            make_uchar4(d.keep[0] ? 1 : 0, d.keep[1] ? 1 : 0, d.keep[2] ? 1 : 0, d.keep[3] ? 1 : 0);
    } else {
      for (int k = 0; k < 4 && i0 + k < n; ++k) {
        y[i0 + k] = d.keep[k] ? x[i0 + k] * scale : 0.0f;
        if (mask) mask[i0 + k] = d.keep[k] ? 1 : 0;
      }
    }
  }
}

void dropout_cuda(const float* x, const int64_t* rng, float* y, uint8_t* mask, int64_t n, uint32_t threshold,
                  float scale, uint64_t stream_id, cudaStream_t stream) {
  if (n == 0) return;
  const bool vec = aligned16(x) && aligned16(y) && (mask == nullptr || aligned_to<4>(mask));
  launch<dropout_kernel>(grid_for((n + 3) / 4, kBlock), kBlock, 0, stream, x, rng, y, mask, n, threshold, scale,
                         stream_id, vec);
}

// dy, mask, dx: (n)
// dx may be dy (the planner runs DropoutBackward in place): no __restrict__.
static __global__ void dropout_backward_kernel(const float* dy, const uint8_t* mask,
                                               float* dx, int64_t n, float scale, bool vec) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t tail = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t b = first; b < n4; b += stride) {
      const float4 g = reinterpret_cast<const float4*>(dy)[b];
      const uchar4 m = reinterpret_cast<const uchar4*>(mask)[b];
      float4 o;
      o.x = m.x ? g.x * scale : 0.0f;
      o.y = m.y ? g.y * scale : 0.0f;
      o.z = m.z ? g.z * scale : 0.0f;
      o.w = m.w ? g.w * scale : 0.0f;
      reinterpret_cast<float4*>(dx)[b] = o;
    }
    tail = n4 * 4;
  }
  for (int64_t i = tail + first; i < n; i += stride) dx[i] = mask[i] ? dy[i] * scale : 0.0f;
}

void dropout_backward_cuda(const float* dy, const uint8_t* mask, float* dx, int64_t n, float scale,
                           cudaStream_t stream) {
  if (n == 0) return;
  const bool vec = aligned16(dy) && aligned16(dx) && aligned_to<4>(mask);
  launch<dropout_backward_kernel>(grid_for((n + 3) / 4, kBlock), kBlock, 0, stream, dy, mask, dx, n, scale, vec);
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

void random_uniform_cuda(float* y, int64_t n, uint64_t seed, uint64_t offset, uint64_t stream_id, float lo, float range,
                         cudaStream_t stream) {
  if (n == 0) return;
  launch<random_uniform_kernel>(grid_for((n + 3) / 4, kBlock), kBlock, 0, stream, y, n, seed, offset, stream_id, lo,
                                range, aligned16(y));
}

static __global__ void random_normal_kernel(float* __restrict__ y, const int64_t* __restrict__ rng, int64_t n,
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
    store_block(y, n, b, v, vec);
  }
}

void random_normal_cuda(float* y, const int64_t* rng, int64_t n, uint64_t seed, uint64_t offset, uint64_t stream_id,
                        float mean, float stddev, cudaStream_t stream) {
  if (n == 0) return;
  launch<random_normal_kernel>(grid_for((n + 3) / 4, kBlock), kBlock, 0, stream, y, rng, n, seed, offset, stream_id,
                               mean, stddev, aligned16(y));
}

}  // namespace cudl::kernels
