// tests/emu/tests/test_emu_kernels.cpp — the SIMT executor on known-correct kernels: each gives the
// exact answer (checked against plain loops) under forward, reverse and several shuffle schedules.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "emu/emu.hpp"
#include "kernels/launch.cuh"

namespace {

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

// Block sum in shared memory (tree with sequential addressing); any block size up to 1024.
__global__ void block_sum_kernel(const int* __restrict__ in, int* __restrict__ out, int n) {
  __shared__ int s[1024];
  const unsigned t = threadIdx.x;
  const int i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? in[i] : 0;
  __syncthreads();
  unsigned p = 1;
  while (p < blockDim.x) p <<= 1;
  for (unsigned stride = p / 2; stride > 0; stride >>= 1) {
    if (t < stride && t + stride < blockDim.x) s[t] += s[t + stride];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

// Block sum: warp shuffles, then the warp sums through shared memory (full warps only).
__global__ void warp_sum_kernel(const float* __restrict__ in, float* __restrict__ out, int n) {
  __shared__ float warp_sums[32];
  const unsigned t = threadIdx.x, lane = t % 32, warp = t / 32;
  float v = 0.f;
  for (int i = blockIdx.x * blockDim.x + t; i < n; i += gridDim.x * blockDim.x) v += in[i];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < blockDim.x / 32 ? warp_sums[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) out[blockIdx.x] = v;
  }
}

// Inclusive scan of one block (Hillis-Steele, double-buffered shared memory).
__global__ void block_scan_kernel(const int* __restrict__ in, int* __restrict__ out, int n) {
  __shared__ int buf[2][1024];
  const unsigned t = threadIdx.x;
  int cur = 0;
  buf[cur][t] = (int)t < n ? in[t] : 0;
  __syncthreads();
  for (unsigned off = 1; off < blockDim.x; off <<= 1) {
    const int nxt = 1 - cur;
    buf[nxt][t] = buf[cur][t] + (t >= off ? buf[cur][t - off] : 0);
    __syncthreads();
    cur = nxt;
  }
  if ((int)t < n) out[t] = buf[cur][t];
}

// Inclusive scan with __shfl_up_sync inside warps and a second pass over the warp totals.
__global__ void warp_scan_kernel(const int* __restrict__ in, int* __restrict__ out, int n) {
  __shared__ int totals[32];
  const unsigned t = threadIdx.x, lane = t % 32, warp = t / 32;
  int v = (int)t < n ? in[t] : 0;
  for (unsigned d = 1; d < 32; d <<= 1) {
    const int up = __shfl_up_sync(0xffffffffu, v, d);
    if (lane >= d) v += up;
  }
  if (lane == 31) totals[warp] = v;
  __syncthreads();
  if (warp == 0) {
    int w = lane < blockDim.x / 32 ? totals[lane] : 0;
    for (unsigned d = 1; d < 32; d <<= 1) {
      const int up = __shfl_up_sync(0xffffffffu, w, d);
      if (lane >= d) w += up;
    }
    totals[lane] = w;
  }
  __syncthreads();
  if (warp > 0) v += totals[warp - 1];
  if ((int)t < n) out[t] = v;
}

// Histogram: per-block shared histogram with shared atomics, merged with global atomics.
__global__ void histogram_kernel(const unsigned* __restrict__ in, unsigned* __restrict__ hist, int n, int bins) {
  __shared__ unsigned local[256];
  for (int b = threadIdx.x; b < bins; b += blockDim.x) local[b] = 0;
  __syncthreads();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    atomicAdd(&local[in[i] % bins], 1u);
  __syncthreads();
  for (int b = threadIdx.x; b < bins; b += blockDim.x) atomicAdd(&hist[b], local[b]);
}

// Other atomics on one counter set: [0] max, [1] min, [2] float sum, [3] CAS-increment, [4] exch
// count, [5] ull sum (as two ints), [6] double sum.
__global__ void atomics_kernel(const int* __restrict__ in, int n, int* imax, int* imin, float* fsum, int* cas_count,
                               unsigned long long* usum, double* dsum, int* sub) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    atomicMax(imax, in[i]);
    atomicMin(imin, in[i]);
    atomicAdd(fsum, (float)in[i]);
    int old = *cas_count, assumed;
    do {
      assumed = old;
      old = atomicCAS(cas_count, assumed, assumed + 1);
    } while (old != assumed);
    atomicAdd(usum, (unsigned long long)in[i]);
    atomicAdd(dsum, 0.5 * in[i]);
    atomicSub(sub, in[i]);
  }
}

// Tiled transpose through a padded shared tile; 32x8 threads per 32x32 tile, any matrix shape.
constexpr int kTile = 32, kRows = 8;
__global__ void transpose_kernel(const float* __restrict__ in, float* __restrict__ out, int rows, int cols) {
  __shared__ float tile[kTile][kTile + 1];
  int x = blockIdx.x * kTile + threadIdx.x;
  int y = blockIdx.y * kTile + threadIdx.y;
  for (int j = 0; j < kTile; j += kRows)
    if (x < cols && y + j < rows) tile[threadIdx.y + j][threadIdx.x] = in[(y + j) * cols + x];
  __syncthreads();
  x = blockIdx.y * kTile + threadIdx.x;
  y = blockIdx.x * kTile + threadIdx.y;
  for (int j = 0; j < kTile; j += kRows)
    if (x < rows && y + j < cols) out[(y + j) * rows + x] = tile[threadIdx.x][threadIdx.y + j];
}

// Reverses each block's chunk through dynamic shared memory.
__global__ void reverse_dynamic_kernel(const double* __restrict__ in, double* __restrict__ out, int n) {
  CUDL_DYNAMIC_SHARED(double, buf);
  const unsigned t = threadIdx.x;
  const int base = blockIdx.x * blockDim.x;
  if (base + (int)t < n) buf[t] = in[base + t];
  __syncthreads();
  const int chunk = min((int)blockDim.x, n - base);
  if ((int)t < chunk) out[base + t] = buf[chunk - 1 - t];
}

// Every thread of a 3-D grid of 3-D blocks records its coordinates at its global linear index.
__global__ void coords_kernel(int4* __restrict__ out) {
  const unsigned bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  const unsigned tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  int4 v;
  v.x = (int)(threadIdx.x | blockIdx.x << 16);
  v.y = (int)(threadIdx.y | blockIdx.y << 16);
  v.z = (int)(threadIdx.z | blockIdx.z << 16);
  v.w = (int)(tx % warpSize);
  out[bx * threads + tx] = v;
}

// Votes, broadcast shuffles, segmented shuffles (width 8) and __syncthreads_count/and/or.
__global__ void votes_kernel(const int* __restrict__ in, unsigned* __restrict__ out) {
  const unsigned t = threadIdx.x, lane = t % 32;
  const int v = in[blockIdx.x * blockDim.x + t];
  unsigned* o = out + (blockIdx.x * blockDim.x + t) * 8;
  o[0] = __ballot_sync(0xffffffffu, v > 0);
  o[1] = __any_sync(0xffffffffu, v > 5);
  o[2] = __all_sync(0xffffffffu, v >= 0);
  o[3] = __shfl_sync(0xffffffffu, v, 3);  // broadcast lane 3
  int seg = v;                            // sum over segments of 8 lanes
  for (int d = 4; d > 0; d >>= 1) seg += __shfl_xor_sync(0xffffffffu, seg, d, 8);
  o[4] = (unsigned)seg;
  o[5] = (unsigned)__syncthreads_count(v > 0);
  o[6] = (unsigned)__syncthreads_and(v >= 0);
  o[7] = (unsigned)__syncthreads_or(v > 8);
  (void)lane;
}

// Partial warps (block size not a multiple of 32): subsets synchronise with their own masks, which
// name only the lanes that exist, and shuffles read only lanes in the mask (as on the GPU).
__global__ void partial_warp_kernel(int* __restrict__ out) {
  const unsigned t = threadIdx.x, lane = t % 32;
  const unsigned present = min(32u, blockDim.x - (t - lane));  // lanes of this warp
  const unsigned mask = present == 32 ? 0xffffffffu : (1u << present) - 1;
  if (__ballot_sync(mask, 1) != mask) __trap();
  int v = (int)t;
  // Reduce within the present lanes; a lane whose partner is absent reads itself and discards it.
  for (unsigned o = 16; o > 0; o >>= 1) {
    const int other = __shfl_sync(mask, v, lane + o < present ? lane + o : lane);
    if (lane + o < present) v += other;
  }
  __syncwarp(mask);
  if (lane == 0) out[t / 32] = v;
  // Two disjoint halves of a warp synchronise independently, in divergent branches.
  if (blockDim.x >= 32 && t < 32) {
    if (lane < 16) {
      int h = __shfl_xor_sync(0x0000ffffu, (int)lane, 1);
      out[8 + lane] = h;
    } else {
      int h = __shfl_xor_sync(0xffff0000u, (int)lane, 2);
      out[8 + lane] = h;
    }
  }
}

// Warp-aggregated atomics: the lanes that reach __activemask (after a divergent early exit) take
// consecutive slots with one atomicAdd per warp.
__global__ void aggregated_append_kernel(int* __restrict__ counter, int* __restrict__ slots, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n || i % 3 == 0) return;
  const unsigned m = __activemask();
  const int lane = threadIdx.x % 32, leader = __ffs(m) - 1;
  int base = 0;
  if (lane == leader) base = atomicAdd(counter, __popc(m));
  base = __shfl_sync(m, base, leader);
  slots[base + __popc(m & ((1u << lane) - 1))] = i;
}

// Polynomial with coefficients in constant memory.
__constant__ float c_coeffs[4];
__global__ void poly_kernel(const float* __restrict__ x, float* __restrict__ y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = c_coeffs[0] + x[i] * (c_coeffs[1] + x[i] * (c_coeffs[2] + x[i] * c_coeffs[3]));
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DeviceBuffer(size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(&ptr, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);
  }
  DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void upload(const std::vector<T>& host) {
    ASSERT_EQ(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

std::vector<cudl_emu::Schedule> all_schedules() {
  std::vector<cudl_emu::Schedule> v;
  v.push_back({cudl_emu::Schedule::Forward, 0});
  v.push_back({cudl_emu::Schedule::Reverse, 0});
  for (uint64_t seed : {1ull, 2ull, 42ull, 987654321ull}) v.push_back({cudl_emu::Schedule::Shuffle, seed});
  return v;
}

std::string name_of(const cudl_emu::Schedule& s) {
  if (s.kind == cudl_emu::Schedule::Forward) return "forward";
  if (s.kind == cudl_emu::Schedule::Reverse) return "reverse";
  return "shuffle:" + std::to_string(s.seed);
}

class EmuKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = cudl_emu::schedule();
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
  }
  void TearDown() override {
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << cudl_emu::last_error_detail();
    EXPECT_EQ(cudaStreamDestroy(stream_), cudaSuccess);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    cudl_emu::set_schedule(saved_);
  }
  // Runs `body` once per schedule, with the schedule set and traced.
  template <typename F>
  void for_each_schedule(F body) {
    for (const cudl_emu::Schedule& s : all_schedules()) {
      SCOPED_TRACE("schedule " + name_of(s));
      cudl_emu::set_schedule(s);
      body();
    }
  }
  void sync() {
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << cudl_emu::last_error_detail();
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  }
  cudaStream_t stream_ = nullptr;
  cudl_emu::Schedule saved_;
};

std::vector<int> iota_mod(int n, int mod, int offset = 0) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = (i * 7919 + offset) % mod - mod / 3;
  return v;
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

TEST_F(EmuKernels, SharedMemoryBlockReduction) {
  for (int block : {256, 1024, 96, 45, 1}) {
    SCOPED_TRACE("block " + std::to_string(block));
    const int n = 3001;
    const std::vector<int> h = iota_mod(n, 1000);
    const int blocks = (n + block - 1) / block;
    std::vector<int> expect(blocks, 0);
    for (int i = 0; i < n; ++i) expect[i / block] += h[i];
    DeviceBuffer<int> in(h), out(blocks);
    for_each_schedule([&] {
      CUDL_LAUNCH(block_sum_kernel, blocks, block, 0, stream_)(in.ptr, out.ptr, n);
      sync();
      EXPECT_EQ(out.download(), expect);
    });
  }
}

TEST_F(EmuKernels, WarpShuffleReduction) {
  const int n = 10007;
  std::vector<float> h(n);
  for (int i = 0; i < n; ++i) h[i] = (float)((i * 31) % 17 - 8);  // small integers: float sums exact
  for (int block : {32, 96, 256, 1024}) {
    SCOPED_TRACE("block " + std::to_string(block));
    const int blocks = 7;
    std::vector<float> expect(blocks, 0.f);
    for (int b = 0; b < blocks; ++b)
      for (int t = 0; t < block; ++t)
        for (int i = b * block + t; i < n; i += blocks * block) expect[b] += h[i];
    DeviceBuffer<float> in(h), out(blocks);
    for_each_schedule([&] {
      CUDL_LAUNCH(warp_sum_kernel, blocks, block, 0, stream_)(in.ptr, out.ptr, n);
      sync();
      EXPECT_EQ(out.download(), expect);
    });
  }
}

TEST_F(EmuKernels, Scan) {
  for (int block : {1024, 512, 64}) {
    SCOPED_TRACE("block " + std::to_string(block));
    const int n = block - 3;
    const std::vector<int> h = iota_mod(n, 100, 5);
    std::vector<int> expect(n);
    std::partial_sum(h.begin(), h.end(), expect.begin());
    DeviceBuffer<int> in(h), out(n);
    for_each_schedule([&] {
      CUDL_LAUNCH(block_scan_kernel, 1, block, 0, stream_)(in.ptr, out.ptr, n);
      sync();
      EXPECT_EQ(out.download(), expect);
      CUDL_LAUNCH(warp_scan_kernel, 1, block, 0, stream_)(in.ptr, out.ptr, n);
      sync();
      EXPECT_EQ(out.download(), expect);
    });
  }
}

TEST_F(EmuKernels, AtomicHistogram) {
  const int n = 20011, bins = 61;
  std::vector<unsigned> h(n);
  for (int i = 0; i < n; ++i) h[i] = (unsigned)(i * 2654435761u >> 7);
  std::vector<unsigned> expect(bins, 0);
  for (unsigned v : h) expect[v % bins]++;
  DeviceBuffer<unsigned> in(h), hist(bins);
  for_each_schedule([&] {
    ASSERT_EQ(cudaMemsetAsync(hist.ptr, 0, bins * sizeof(unsigned), stream_), cudaSuccess);
    CUDL_LAUNCH(histogram_kernel, 13, 160, 0, stream_)(in.ptr, hist.ptr, n, bins);
    sync();
    EXPECT_EQ(hist.download(), expect);
  });
}

TEST_F(EmuKernels, OtherAtomics) {
  const int n = 5003;
  const std::vector<int> h = iota_mod(n, 2000);
  DeviceBuffer<int> in(h), imax(1), imin(1), cas(1), sub(1);
  DeviceBuffer<float> fsum(1);
  DeviceBuffer<unsigned long long> usum(1);
  DeviceBuffer<double> dsum(1);
  long long total = 0;
  for (int v : h) total += v;
  for_each_schedule([&] {
    imax.upload({INT32_MIN});
    imin.upload({INT32_MAX});
    cas.upload({0});
    sub.upload({0});
    fsum.upload({0.f});
    usum.upload({0ull});
    dsum.upload({0.0});
    CUDL_LAUNCH(atomics_kernel, 5, 128, 0, stream_)
    (in.ptr, n, imax.ptr, imin.ptr, fsum.ptr, cas.ptr, usum.ptr, dsum.ptr, sub.ptr);
    sync();
    EXPECT_EQ(imax.download()[0], *std::max_element(h.begin(), h.end()));
    EXPECT_EQ(imin.download()[0], *std::min_element(h.begin(), h.end()));
    EXPECT_EQ(cas.download()[0], n);
    EXPECT_EQ(fsum.download()[0], (float)total);  // |partial sums| < 2^24: exact in float
    EXPECT_EQ(usum.download()[0], (unsigned long long)total);
    EXPECT_EQ(dsum.download()[0], 0.5 * (double)total);
    EXPECT_EQ(sub.download()[0], (int)-total);
  });
}

TEST_F(EmuKernels, TiledTranspose) {
  for (auto [rows, cols] : {std::pair<int, int>{70, 45}, {32, 32}, {1, 100}, {129, 3}}) {
    SCOPED_TRACE("shape " + std::to_string(rows) + "x" + std::to_string(cols));
    std::vector<float> h(rows * cols);
    for (int i = 0; i < rows * cols; ++i) h[i] = (float)i;
    std::vector<float> expect(rows * cols);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) expect[c * rows + r] = h[r * cols + c];
    DeviceBuffer<float> in(h), out(rows * cols);
    const dim3 grid((cols + kTile - 1) / kTile, (rows + kTile - 1) / kTile), block(kTile, kRows);
    for_each_schedule([&] {
      CUDL_LAUNCH(transpose_kernel, grid, block, 0, stream_)(in.ptr, out.ptr, rows, cols);
      sync();
      EXPECT_EQ(out.download(), expect);
    });
  }
}

TEST_F(EmuKernels, DynamicSharedMemory) {
  const int n = 1000;
  std::vector<double> h(n);
  for (int i = 0; i < n; ++i) h[i] = i * 1.5;
  DeviceBuffer<double> in(h), out(n);
  for (int block : {128, 33, 1024}) {
    SCOPED_TRACE("block " + std::to_string(block));
    std::vector<double> expect(n);
    for (int base = 0; base < n; base += block) {
      const int chunk = std::min(block, n - base);
      for (int t = 0; t < chunk; ++t) expect[base + t] = h[base + chunk - 1 - t];
    }
    for_each_schedule([&] {
      CUDL_LAUNCH(reverse_dynamic_kernel, (n + block - 1) / block, block, block * sizeof(double), stream_)
      (in.ptr, out.ptr, n);
      sync();
      EXPECT_EQ(out.download(), expect);
    });
  }
}

TEST_F(EmuKernels, DynamicSharedMemoryIsAlignedAndPoisoned) {
  // A fresh block's dynamic shared memory holds a NaN pattern, not zeros.
  DeviceBuffer<float> out(2);
  struct K {
    static __global__ void probe(float* out) {
      CUDL_DYNAMIC_SHARED(float, buf);
      if (threadIdx.x == 0) {
        out[0] = buf[5];
        out[1] = (float)(reinterpret_cast<uintptr_t>(buf) % 16);
      }
    }
  };
  CUDL_LAUNCH(K::probe, 1, 32, 64, stream_)(out.ptr);
  sync();
  const std::vector<float> r = out.download();
  EXPECT_TRUE(std::isnan(r[0]));
  EXPECT_EQ(r[1], 0.f);
}

TEST_F(EmuKernels, ThreeDimensionalGridsAndBlocks) {
  const dim3 grid(3, 2, 2), block(5, 3, 4);  // 60 threads per block: a full and a partial warp
  const int threads = 60, blocks = 12;
  DeviceBuffer<int4> out(threads * blocks);
  for_each_schedule([&] {
    ASSERT_EQ(cudaMemsetAsync(out.ptr, 0xff, threads * blocks * sizeof(int4), stream_), cudaSuccess);
    CUDL_LAUNCH(coords_kernel, grid, block, 0, stream_)(out.ptr);
    sync();
    const std::vector<int4> r = out.download();
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx)
          for (unsigned tz = 0; tz < block.z; ++tz)
            for (unsigned ty = 0; ty < block.y; ++ty)
              for (unsigned tx = 0; tx < block.x; ++tx) {
                const unsigned b = bx + grid.x * (by + grid.y * bz);
                const unsigned t = tx + block.x * (ty + block.y * tz);
                const int4 v = r[b * threads + t];
                ASSERT_EQ(v.x, (int)(tx | bx << 16));
                ASSERT_EQ(v.y, (int)(ty | by << 16));
                ASSERT_EQ(v.z, (int)(tz | bz << 16));
                ASSERT_EQ(v.w, (int)(t % 32));
              }
  });
}

TEST_F(EmuKernels, VotesShufflesAndBarrierReductions) {
  const int block = 64, blocks = 3, n = block * blocks;
  std::vector<int> h(n);
  for (int i = 0; i < n; ++i) h[i] = (i * 37) % 11 - 1;  // values in [-1, 9]
  DeviceBuffer<int> in(h);
  DeviceBuffer<unsigned> out(n * 8);
  std::vector<unsigned> expect(n * 8);
  for (int b = 0; b < blocks; ++b) {
    int count = 0, all_nonneg = 1, any_gt8 = 0;
    for (int t = 0; t < block; ++t) {
      const int v = h[b * block + t];
      count += v > 0;
      all_nonneg &= v >= 0;
      any_gt8 |= v > 8;
    }
    for (int t = 0; t < block; ++t) {
      const int w0 = b * block + (t / 32) * 32;
      unsigned ballot = 0;
      int any = 0, all = 1;
      for (int l = 0; l < 32; ++l) {
        ballot |= (unsigned)(h[w0 + l] > 0) << l;
        any |= h[w0 + l] > 5;
        all &= h[w0 + l] >= 0;
      }
      int seg = 0;
      for (int l = 0; l < 8; ++l) seg += h[w0 + (t % 32) / 8 * 8 + l];
      unsigned* e = &expect[(b * block + t) * 8];
      e[0] = ballot;
      e[1] = any;
      e[2] = all;
      e[3] = (unsigned)h[w0 + 3];
      e[4] = (unsigned)seg;
      e[5] = (unsigned)count;
      e[6] = (unsigned)all_nonneg;
      e[7] = (unsigned)any_gt8;
    }
  }
  for_each_schedule([&] {
    CUDL_LAUNCH(votes_kernel, blocks, block, 0, stream_)(in.ptr, out.ptr);
    sync();
    EXPECT_EQ(out.download(), expect);
  });
}

TEST_F(EmuKernels, PartialWarpsAndDisjointMasks) {
  for (int block : {45, 70, 32, 7}) {
    SCOPED_TRACE("block " + std::to_string(block));
    const int warps = (block + 31) / 32;
    std::vector<int> expect(40, -1);
    for (int w = 0; w < warps; ++w) {
      int s = 0;
      for (int t = w * 32; t < std::min(block, w * 32 + 32); ++t) s += t;
      expect[w] = s;
    }
    if (block >= 32)
      for (int l = 0; l < 32; ++l) expect[8 + l] = l < 16 ? (l ^ 1) : (l ^ 2);
    DeviceBuffer<int> out(40);
    for_each_schedule([&] {
      ASSERT_EQ(cudaMemsetAsync(out.ptr, 0xff, 40 * sizeof(int), stream_), cudaSuccess);
      CUDL_LAUNCH(partial_warp_kernel, 1, block, 0, stream_)(out.ptr);
      sync();
      EXPECT_EQ(out.download(), expect);
    });
  }
}

TEST_F(EmuKernels, ActiveMaskAggregatedAtomics) {
  const int n = 1000;
  std::vector<int> expect;
  for (int i = 0; i < n; ++i)
    if (i % 3 != 0) expect.push_back(i);
  DeviceBuffer<int> counter(1), slots(n);
  for_each_schedule([&] {
    counter.upload({0});
    CUDL_LAUNCH(aggregated_append_kernel, 9, 128, 0, stream_)(counter.ptr, slots.ptr, n);
    sync();
    ASSERT_EQ(counter.download()[0], (int)expect.size());
    std::vector<int> got = slots.download();
    got.resize(expect.size());
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, expect);
  });
}

TEST_F(EmuKernels, ConstantMemory) {
  const int n = 50;
  std::vector<float> x(n), expect(n);
  for (int i = 0; i < n; ++i) x[i] = (float)(i % 5) - 2.f;
  const float c[4] = {1.f, -2.f, 0.5f, 0.25f};
  for (int i = 0; i < n; ++i) expect[i] = c[0] + x[i] * (c[1] + x[i] * (c[2] + x[i] * c[3]));
  ASSERT_EQ(cudaMemcpyToSymbol(c_coeffs, c, sizeof c), cudaSuccess);
  float back[4] = {};
  ASSERT_EQ(cudaMemcpyFromSymbol(back, c_coeffs, sizeof back), cudaSuccess);
  EXPECT_EQ(back[3], 0.25f);
  DeviceBuffer<float> in(x), out(n);
  CUDL_LAUNCH(poly_kernel, 2, 32, 0, stream_)(in.ptr, out.ptr, n);
  sync();
  EXPECT_EQ(out.download(), expect);
}

TEST_F(EmuKernels, ArgumentsAreCopiedAtLaunch) {
  // The launch copies its arguments (as the driver does): changing the host variable afterwards,
  // before the lazy stream runs, does not change what the kernel sees.
  struct K {
    static __global__ void fill(int* out, int value, int n) {
      const int i = blockIdx.x * blockDim.x + threadIdx.x;
      if (i < n) out[i] = value;
    }
  };
  DeviceBuffer<int> out(100);
  int value = 7;
  CUDL_LAUNCH(K::fill, 4, 32, 0, stream_)(out.ptr, value, 100);
  value = 9;
  sync();
  EXPECT_EQ(out.download(), std::vector<int>(100, 7));
}

TEST_F(EmuKernels, CountsThreadsAndBarriers) {
  const int n = 1000;
  DeviceBuffer<int> in(std::vector<int>(n, 1)), out(4);
  cudl_emu::reset_counters();
  CUDL_LAUNCH(block_sum_kernel, 4, 256, 0, stream_)(in.ptr, out.ptr, n);
  sync();
  const cudl_emu::Counters c = cudl_emu::counters();
  EXPECT_EQ(c.kernel_launches, 1u);
  EXPECT_EQ(c.threads, 4u * 256u);
  EXPECT_EQ(c.barriers, 4u * 9u);  // 1 + log2(256) barriers per block
  EXPECT_EQ(out.download(), (std::vector<int>{256, 256, 256, 232}));
}

TEST_F(EmuKernels, MathIntrinsics) {
  struct K {
    static __global__ void math(float* out, int* iout) {
      out[0] = __expf(1.f);
      out[1] = __logf(2.f);
      out[2] = rsqrtf(4.f);
      out[3] = __fdividef(1.f, 8.f);
      out[4] = __saturatef(1.5f) + __saturatef(-2.f);
      out[5] = __int_as_float(__float_as_int(3.25f));
      out[6] = fmaxf(min(2.f, 3.f), max(1.f, -1.f));
      out[7] = erff(0.f) + __fmaf_rn(2.f, 3.f, 1.f);
      iout[0] = __popc(0xf0f0u);
      iout[1] = __clz(1);
      iout[2] = __ffs(8);
      iout[3] = (int)__brev(1u);
      iout[4] = __float2int_rn(2.5f) + __float2int_rn(3.5f);
      iout[5] = min(3, -4) + max(3u, 5u);
    }
  };
  DeviceBuffer<float> out(8);
  DeviceBuffer<int> iout(6);
  CUDL_LAUNCH(K::math, 1, 1, 0, stream_)(out.ptr, iout.ptr);
  sync();
  const std::vector<float> f = out.download();
  EXPECT_FLOAT_EQ(f[0], std::exp(1.f));
  EXPECT_FLOAT_EQ(f[1], std::log(2.f));
  EXPECT_FLOAT_EQ(f[2], 0.5f);
  EXPECT_FLOAT_EQ(f[3], 0.125f);
  EXPECT_FLOAT_EQ(f[4], 1.f);
  EXPECT_FLOAT_EQ(f[5], 3.25f);
  EXPECT_FLOAT_EQ(f[6], 2.f);
  EXPECT_FLOAT_EQ(f[7], 7.f);
  EXPECT_EQ(iout.download(), (std::vector<int>{8, 31, 4, (int)0x80000000u, 6, 1}));
}

}  // namespace
