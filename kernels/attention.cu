// kernels/attention.cu — scaled dot-product attention over interleaved heads (ops/attention.hpp):
// fused kernels (query/key tiles in shared memory, online softmax, backward recomputing the weights
// from the saved log-sum-exp) and the masked softmax of the unfused cuBLASLt path.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cuda_runtime.h>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.hpp"
#include "backend/philox.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cuda/matmul.hpp"
#include "cuda/sdpa.hpp"
#include "kernels/data.cuh"
#include "kernels/storage.cuh"
#include "ops/attention.hpp"
#include "ops/common.hpp"

namespace cudl::kernels {

/// One attention problem: q (B, Tq, H*D), k (B, Tk, H*D), v (B, Tk, H*Dv), heads interleaved in the
/// features; key_mask (B, Tk) or null; rng {seed, offset} on the device (read when dropout). q, k, v
/// and the fused kernels' o, do, dq, dk, dv are of `type` (f32, bf16 or f16; fp32 math, each store
/// rounded once); lse, delta, the key mask and the unfused path's matrices are f32.
struct AttentionProblem {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  Storage type = Storage::kF32;
  const float* key_mask = nullptr;
  const int64_t* rng = nullptr;
  int batch = 0, tq = 0, tk = 0, heads = 1, d = 0, dv = 0;
  float scale = 1, keep_scale = 1;
  uint32_t threshold = 0;
  uint64_t stream = 0;
  bool causal = false, dropout = false;
};

namespace {

constexpr int kRows = 16;     // query rows per tile
constexpr int kCols = 16;     // keys per tile
constexpr int kThreads = 128;
constexpr int kRowBlock = 128;  // unfused softmax: one block per row
constexpr size_t kDefaultShared = 48 * 1024;

// --- the math both paths share -----------------------------------------------------------------

/// Whether query i may attend to key j of batch b (in range, causal, key mask).
__device__ __forceinline__ bool allowed(const AttentionProblem& p, int b, int i, int j) {
  if (i >= p.tq || j >= p.tk) return false;
  if (p.causal && j > i) return false;
  return p.key_mask == nullptr || p.key_mask[static_cast<int64_t>(b) * p.tk + j] != 0.f;
}

/// keep_ij / (1-p) of weight (b, h, i, j): the Dropout op's rule on the virtual (B, H, Tq, Tk) tensor.
__device__ __forceinline__ float drop_factor(const AttentionProblem& p, uint64_t seed, uint64_t offset, int b, int h,
                                             int i, int j) {
  if (!p.dropout) return 1.f;
  const uint64_t n = ((static_cast<uint64_t>(b) * p.heads + h) * p.tq + i) * p.tk + j;
  return philox::keep_element(seed, offset, p.stream, p.threshold, n) ? p.keep_scale : 0.f;
}

struct Rng {
  uint64_t seed = 0, offset = 0;
};
__device__ __forceinline__ Rng read_rng(const AttentionProblem& p) {
  if (!p.dropout) return {};
  return {static_cast<uint64_t>(p.rng[0]), static_cast<uint64_t>(p.rng[1])};
}

/// Copies rows [row0, row0 + n_rows) of head h of x (B, T, H*width) into tile (n_rows, width) whose
/// rows are `ld` floats apart (ld >= width); rows past T are zero.
template <typename T_>
__device__ __forceinline__ void load_tile(float* tile, const T_* __restrict__ x, int b, int h, int row0, int n_rows,
                                          int T, int heads, int width, int ld) {
  const int64_t stride = static_cast<int64_t>(heads) * width;
  for (int e = threadIdx.x; e < n_rows * width; e += blockDim.x) {
    const int r = e / width, c = e % width, t = row0 + r;
    tile[r * ld + c] =
        t < T ? to_float(x[(static_cast<int64_t>(b) * T + t) * stride + static_cast<int64_t>(h) * width + c]) : 0.f;
  }
}

/// Row stride of the key and value tiles: odd, so that the 16 threads reading one element of 16
/// different keys (the score loops) hit 16 different shared-memory banks.
__host__ __device__ __forceinline__ int padded(int width) { return width | 1; }

/// The reverse of load_tile: rows of the tile that exist in x (row0 + r < T) go to head h of x.
template <typename T_>
__device__ __forceinline__ void store_tile(T_* __restrict__ x, const float* tile, int b, int h, int row0,
                                           int n_rows, int T, int heads, int width) {
  const int64_t stride = static_cast<int64_t>(heads) * width;
  for (int e = threadIdx.x; e < n_rows * width; e += blockDim.x) {
    const int r = e / width, c = e % width, t = row0 + r;
    if (t < T) x[(static_cast<int64_t>(b) * T + t) * stride + static_cast<int64_t>(h) * width + c] = from_float<T_>(tile[e]);
  }
}

/// dot of row a (length n, stride 1) and row b.
__device__ __forceinline__ float dot(const float* a, const float* b, int n) {
  float s = 0.f;
  for (int c = 0; c < n; ++c) s = fmaf(a[c], b[c], s);
  return s;
}

// --- fused forward ------------------------------------------------------------------------------

template <typename T>
static __global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(AttentionProblem p, T* __restrict__ o, float* __restrict__ lse) {
  CUDL_DYNAMIC_SHARED(float, smem);
  const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * kRows, D = p.d, Dv = p.dv, tid = threadIdx.x;
  float* sq = smem;                 // (kRows, D)
  const int ldk = padded(D), ldv = padded(Dv);
  float* sk = sq + kRows * D;       // (kCols, D), rows ldk apart
  float* sv = sk + kCols * ldk;     // (kCols, Dv), rows ldv apart
  float* ss = sv + kCols * ldv;     // (kRows, kCols): scores, then weights
  float* acc = ss + kRows * kCols;  // (kRows, Dv): Σ_j w_ij v_j, rescaled as the max moves
  float* row_m = acc + kRows * Dv;  // (kRows) running max
  float* row_l = row_m + kRows;     // (kRows) running Σ exp(s - max)
  float* row_a = row_l + kRows;     // (kRows) this tile's rescale factor
  const Rng rng = read_rng(p);
  load_tile(sq, static_cast<const T*>(p.q), b, h, i0, kRows, p.tq, p.heads, D, D);
  for (int e = tid; e < kRows * Dv; e += kThreads) acc[e] = 0.f;
  if (tid < kRows) row_m[tid] = -INFINITY, row_l[tid] = 0.f;
  const int j_end = p.causal ? min(p.tk, i0 + kRows) : p.tk;  // later keys are masked for every row
  for (int j0 = 0; j0 < j_end; j0 += kCols) {
    __syncthreads();  // the previous tile's readers are done
    load_tile(sk, static_cast<const T*>(p.k), b, h, j0, kCols, p.tk, p.heads, D, padded(D));
    load_tile(sv, static_cast<const T*>(p.v), b, h, j0, kCols, p.tk, p.heads, Dv, padded(Dv));
    __syncthreads();
    for (int e = tid; e < kRows * kCols; e += kThreads) {
      const int r = e / kCols, c = e % kCols;
      ss[e] = allowed(p, b, i0 + r, j0 + c) ? p.scale * dot(sq + r * D, sk + c * ldk, D) : -INFINITY;
    }
    __syncthreads();
    if (tid < kRows) {  // online softmax of row tid over this tile
      float* s = ss + tid * kCols;
      const float m_old = row_m[tid];
      float m = m_old;
      for (int c = 0; c < kCols; ++c) m = fmaxf(m, s[c]);
      const float alpha = m == -INFINITY ? 1.f : expf(m_old - m);
      float sum = 0.f;
      for (int c = 0; c < kCols; ++c) {
        float w = s[c] == -INFINITY ? 0.f : expf(s[c] - m);
        sum += w;
        if (w != 0.f) w *= drop_factor(p, rng.seed, rng.offset, b, h, i0 + tid, j0 + c);
        s[c] = w;
      }
      row_l[tid] = row_l[tid] * alpha + sum;
      row_m[tid] = m;
      row_a[tid] = alpha;
    }
    __syncthreads();
    for (int e = tid; e < kRows * Dv; e += kThreads) {
      const int r = e / Dv, c = e % Dv;
      float a = acc[e] * row_a[r];
      for (int j = 0; j < kCols; ++j) a = fmaf(ss[r * kCols + j], sv[j * ldv + c], a);
      acc[e] = a;
    }
  }
  __syncthreads();
  for (int e = tid; e < kRows * Dv; e += kThreads) {
    const float l = row_l[e / Dv];
    acc[e] = l > 0.f ? acc[e] / l : 0.f;
  }
  store_tile(o, acc, b, h, i0, kRows, p.tq, p.heads, Dv);  // each thread stores what it normalised
  if (tid < kRows && i0 + tid < p.tq) {
    const float l = row_l[tid];
    lse[(static_cast<int64_t>(b) * p.heads + h) * p.tq + i0 + tid] = l > 0.f ? row_m[tid] + logf(l) : -INFINITY;
  }
}

// --- fused backward -----------------------------------------------------------------------------

/// Weight p_ij = exp(s_ij - lse_i) of an allowed pair, else 0 (also for rows with no allowed key).
__device__ __forceinline__ float weight(const AttentionProblem& p, int b, int i, int j, const float* qi,
                                        const float* kj, float lse_i) {
  if (!allowed(p, b, i, j) || lse_i == -INFINITY) return 0.f;
  return expf(p.scale * dot(qi, kj, p.d) - lse_i);
}

/// dq per query tile; also writes Δ_i = do_i·o_i to delta for the dk/dv kernel.
template <typename T>
static __global__ void __launch_bounds__(kThreads)
    attention_backward_dq_kernel(AttentionProblem p, const T* __restrict__ o, const float* __restrict__ lse,
                                 const T* __restrict__ d_o, float* __restrict__ delta, T* __restrict__ dq) {
  CUDL_DYNAMIC_SHARED(float, smem);
  const int b = blockIdx.z, h = blockIdx.y, i0 = blockIdx.x * kRows, D = p.d, Dv = p.dv, tid = threadIdx.x;
  float* sq = smem;                    // (kRows, D)
  float* sdo = sq + kRows * D;         // (kRows, Dv)
  float* so = sdo + kRows * Dv;        // (kRows, Dv)
  const int ldk = padded(D), ldv = padded(Dv);
  float* sk = so + kRows * Dv;         // (kCols, D), rows ldk apart
  float* sv = sk + kCols * ldk;        // (kCols, Dv), rows ldv apart
  float* sds = sv + kCols * ldv;       // (kRows, kCols): scale * ds
  float* acc = sds + kRows * kCols;    // (kRows, D)
  float* row_lse = acc + kRows * D;    // (kRows)
  float* row_delta = row_lse + kRows;  // (kRows)
  const Rng rng = read_rng(p);
  load_tile(sq, static_cast<const T*>(p.q), b, h, i0, kRows, p.tq, p.heads, D, D);
  load_tile(sdo, d_o, b, h, i0, kRows, p.tq, p.heads, Dv, Dv);
  load_tile(so, o, b, h, i0, kRows, p.tq, p.heads, Dv, Dv);
  for (int e = tid; e < kRows * D; e += kThreads) acc[e] = 0.f;
  __syncthreads();
  const int64_t row_base = (static_cast<int64_t>(b) * p.heads + h) * p.tq;
  if (tid < kRows) {
    const int i = i0 + tid;
    row_lse[tid] = i < p.tq ? lse[row_base + i] : -INFINITY;
    const float dl = dot(sdo + tid * Dv, so + tid * Dv, Dv);
    row_delta[tid] = dl;
    if (i < p.tq) delta[row_base + i] = dl;
  }
  const int j_end = p.causal ? min(p.tk, i0 + kRows) : p.tk;
  for (int j0 = 0; j0 < j_end; j0 += kCols) {
    __syncthreads();
    load_tile(sk, static_cast<const T*>(p.k), b, h, j0, kCols, p.tk, p.heads, D, padded(D));
    load_tile(sv, static_cast<const T*>(p.v), b, h, j0, kCols, p.tk, p.heads, Dv, padded(Dv));
    __syncthreads();
    for (int e = tid; e < kRows * kCols; e += kThreads) {
      const int r = e / kCols, c = e % kCols, i = i0 + r, j = j0 + c;
      const float w = weight(p, b, i, j, sq + r * D, sk + c * ldk, row_lse[r]);
      float ds = 0.f;
      if (w != 0.f) {
        const float dp = dot(sdo + r * Dv, sv + c * ldv, Dv) * drop_factor(p, rng.seed, rng.offset, b, h, i, j);
        ds = p.scale * w * (dp - row_delta[r]);
      }
      sds[e] = ds;
    }
    __syncthreads();
    for (int e = tid; e < kRows * D; e += kThreads) {
      const int r = e / D, c = e % D;
      float a = acc[e];
      for (int j = 0; j < kCols; ++j) a = fmaf(sds[r * kCols + j], sk[j * ldk + c], a);
      acc[e] = a;
    }
  }
  __syncthreads();
  if (dq != nullptr) store_tile(dq, acc, b, h, i0, kRows, p.tq, p.heads, D);
}

/// dk and dv per key tile, looping over the query tiles that can see it.
template <typename T>
static __global__ void __launch_bounds__(kThreads)
    attention_backward_dkdv_kernel(AttentionProblem p, const float* __restrict__ lse, const T* __restrict__ d_o,
                                   const float* __restrict__ delta, T* __restrict__ dk, T* __restrict__ dv) {
  CUDL_DYNAMIC_SHARED(float, smem);
  const int b = blockIdx.z, h = blockIdx.y, j0 = blockIdx.x * kCols, D = p.d, Dv = p.dv, tid = threadIdx.x;
  const int ldk = padded(D), ldv = padded(Dv);
  float* sk = smem;                    // (kCols, D), rows ldk apart
  float* sv = sk + kCols * ldk;        // (kCols, Dv), rows ldv apart
  float* sq = sv + kCols * ldv;        // (kRows, D)
  float* sdo = sq + kRows * D;         // (kRows, Dv)
  float* sw = sdo + kRows * Dv;        // (kRows, kCols): dropped-out weights
  float* sds = sw + kRows * kCols;     // (kRows, kCols): scale * ds
  float* acc_k = sds + kRows * kCols;  // (kCols, D)
  float* acc_v = acc_k + kCols * D;    // (kCols, Dv)
  float* row_lse = acc_v + kCols * Dv; // (kRows)
  float* row_delta = row_lse + kRows;  // (kRows)
  const Rng rng = read_rng(p);
  load_tile(sk, static_cast<const T*>(p.k), b, h, j0, kCols, p.tk, p.heads, D, padded(D));
  load_tile(sv, static_cast<const T*>(p.v), b, h, j0, kCols, p.tk, p.heads, Dv, padded(Dv));
  for (int e = tid; e < kCols * D; e += kThreads) acc_k[e] = 0.f;
  for (int e = tid; e < kCols * Dv; e += kThreads) acc_v[e] = 0.f;
  const int64_t row_base = (static_cast<int64_t>(b) * p.heads + h) * p.tq;
  const int i_begin = p.causal ? j0 / kRows * kRows : 0;  // earlier queries see none of these keys
  for (int i0 = i_begin; i0 < p.tq; i0 += kRows) {
    __syncthreads();
    load_tile(sq, static_cast<const T*>(p.q), b, h, i0, kRows, p.tq, p.heads, D, D);
    load_tile(sdo, d_o, b, h, i0, kRows, p.tq, p.heads, Dv, Dv);
    if (tid < kRows) {
      const int i = i0 + tid;
      row_lse[tid] = i < p.tq ? lse[row_base + i] : -INFINITY;
      row_delta[tid] = i < p.tq ? delta[row_base + i] : 0.f;
    }
    __syncthreads();
    for (int e = tid; e < kRows * kCols; e += kThreads) {
      const int r = e / kCols, c = e % kCols, i = i0 + r, j = j0 + c;
      const float w = weight(p, b, i, j, sq + r * D, sk + c * ldk, row_lse[r]);
      float wd = 0.f, ds = 0.f;
      if (w != 0.f) {
        const float drop = drop_factor(p, rng.seed, rng.offset, b, h, i, j);
        wd = w * drop;
        ds = p.scale * w * (dot(sdo + r * Dv, sv + c * ldv, Dv) * drop - row_delta[r]);
      }
      sw[e] = wd;
      sds[e] = ds;
    }
    __syncthreads();
    for (int e = tid; e < kCols * Dv; e += kThreads) {
      const int j = e / Dv, c = e % Dv;
      float a = acc_v[e];
      for (int r = 0; r < kRows; ++r) a = fmaf(sw[r * kCols + j], sdo[r * Dv + c], a);
      acc_v[e] = a;
    }
    for (int e = tid; e < kCols * D; e += kThreads) {
      const int j = e / D, c = e % D;
      float a = acc_k[e];
      for (int r = 0; r < kRows; ++r) a = fmaf(sds[r * kCols + j], sq[r * D + c], a);
      acc_k[e] = a;
    }
  }
  __syncthreads();
  if (dk != nullptr) store_tile(dk, acc_k, b, h, j0, kCols, p.tk, p.heads, D);
  if (dv != nullptr) store_tile(dv, acc_v, b, h, j0, kCols, p.tk, p.heads, Dv);
}

// --- unfused path: masked softmax rows between the GEMMs ------------------------------------------

/// Row r of s (B*H*Tq rows of Tk) as (b, h, i).
struct RowIndex {
  int b, h, i;
};
__device__ __forceinline__ RowIndex row_index(const AttentionProblem& p, int64_t r) {
  const int i = static_cast<int>(r % p.tq);
  const int64_t bh = r / p.tq;
  return {static_cast<int>(bh / p.heads), static_cast<int>(bh % p.heads), i};
}

static __global__ void __launch_bounds__(kRowBlock)
    attention_softmax_kernel(AttentionProblem p, float* __restrict__ s, float* __restrict__ lse) {
  const int64_t r = blockIdx.x;
  const RowIndex ri = row_index(p, r);
  const Rng rng = read_rng(p);
  float* row = s + r * p.tk;
  float m = -INFINITY;
  for (int j = threadIdx.x; j < p.tk; j += blockDim.x) {
    const float v = allowed(p, ri.b, ri.i, j) ? p.scale * row[j] : -INFINITY;
    row[j] = v;
    m = fmaxf(m, v);
  }
  m = block_reduce<MaxNanOp>(m);
  float l = 0.f;
  for (int j = threadIdx.x; j < p.tk; j += blockDim.x)
    if (row[j] != -INFINITY) l += expf(row[j] - m);
  l = block_reduce_sum(l);
  const float row_lse = l > 0.f ? m + logf(l) : -INFINITY;
  for (int j = threadIdx.x; j < p.tk; j += blockDim.x) {
    const float w = row[j] == -INFINITY ? 0.f : expf(row[j] - row_lse);
    row[j] = w == 0.f ? 0.f : w * drop_factor(p, rng.seed, rng.offset, ri.b, ri.h, ri.i, j);
  }
  if (threadIdx.x == 0) lse[r] = row_lse;
}

static __global__ void __launch_bounds__(kRowBlock)
    attention_softmax_backward_kernel(AttentionProblem p, float* __restrict__ s, float* __restrict__ dp,
                                      const float* __restrict__ lse, const float* __restrict__ o,
                                      const float* __restrict__ d_o) {
  const int64_t r = blockIdx.x;
  const RowIndex ri = row_index(p, r);
  const Rng rng = read_rng(p);
  float* srow = s + r * p.tk;
  float* dprow = dp + r * p.tk;
  const float row_lse = lse[r];
  // Δ_i = do_i·o_i of the o given (as the op defines it and the fused kernel computes it: with a
  // 16-bit o that is not Σ_j w_ij drop_ij dp_ij, which the exact o would give).
  const int64_t at = (static_cast<int64_t>(ri.b) * p.tq + ri.i) * p.heads * p.dv + static_cast<int64_t>(ri.h) * p.dv;
  float delta = 0.f;
  for (int c = threadIdx.x; c < p.dv; c += blockDim.x) delta += d_o[at + c] * o[at + c];
  for (int j = threadIdx.x; j < p.tk; j += blockDim.x) {
    float w = 0.f;
    if (allowed(p, ri.b, ri.i, j) && row_lse != -INFINITY) w = expf(p.scale * srow[j] - row_lse);
    srow[j] = w;
  }
  delta = block_reduce_sum(delta);
  for (int j = threadIdx.x; j < p.tk; j += blockDim.x) {
    const float w = srow[j];
    const float drop = w == 0.f ? 0.f : drop_factor(p, rng.seed, rng.offset, ri.b, ri.h, ri.i, j);
    dprow[j] = w == 0.f ? 0.f : p.scale * w * (dprow[j] * drop - delta);
    srow[j] = w * drop;
  }
}

/// Launches a fused kernel with `shared` dynamic bytes, raising the kernel's limit past 48 KB when needed.
template <auto Kernel, typename... Args>
void launch_tiles(dim3 grid, size_t shared, cudaStream_t stream, Args&&... args) {
  if (shared > kDefaultShared) {
    const cudaError_t st = cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                static_cast<int>(shared));
    if (st != cudaSuccess) check_launch(kernel_name<Kernel>());
  }
  launch<Kernel>(grid, dim3(kThreads), shared, stream, std::forward<Args>(args)...);
}

dim3 tile_grid(const AttentionProblem& p, int rows, int tile) {
  return dim3(static_cast<unsigned>((rows + tile - 1) / tile), static_cast<unsigned>(p.heads),
              static_cast<unsigned>(p.batch));
}

}  // namespace

/// Fused forward: o (B, Tq, H*Dv) and lse (B, H, Tq), one block per (query tile, head, batch).
void attention_forward_cuda(const AttentionProblem& p, void* o, float* lse, cudaStream_t stream) {
  if (p.batch == 0 || p.tq == 0) return;
  const size_t floats =
      kRows * p.d + kCols * padded(p.d) + kCols * padded(p.dv) + kRows * kCols + kRows * p.dv + 3 * kRows;
  with_storage(p.type, [&](auto tag) {
    using T = decltype(tag);
    launch_tiles<attention_forward_kernel<T>>(tile_grid(p, p.tq, kRows), floats * sizeof(float), stream, p,
                                              static_cast<T*>(o), lse);
  });
}

template <typename T>
static void backward_tiles(const AttentionProblem& p, const T* o, const float* lse, const T* d_o, float* delta, T* dq,
                           T* dk, T* dv, cudaStream_t stream) {
  if (p.tq > 0) {
    const size_t floats =
        kRows * p.d + 2 * kRows * p.dv + kCols * padded(p.d) + kCols * padded(p.dv) + kRows * kCols + kRows * p.d +
        2 * kRows;
    launch_tiles<attention_backward_dq_kernel<T>>(tile_grid(p, p.tq, kRows), floats * sizeof(float), stream, p, o, lse,
                                               d_o, delta, dq);
  }
  if (p.tk > 0 && (dk != nullptr || dv != nullptr)) {
    const size_t floats =
        kCols * (padded(p.d) + padded(p.dv)) + kCols * (p.d + p.dv) + kRows * p.d + kRows * p.dv + 2 * kRows * kCols +
        2 * kRows;
    launch_tiles<attention_backward_dkdv_kernel<T>>(tile_grid(p, p.tk, kCols), floats * sizeof(float), stream, p, lse,
                                                 d_o, delta, dk, dv);
  }
}

/// Fused backward with recomputation: delta (B, H, Tq) is scratch (Δ_i = do_i·o_i); dq, dk, dv may be
/// null. Two kernels: dq per query tile, then dk and dv per key tile (no atomics).
void attention_backward_cuda(const AttentionProblem& p, const void* o, const float* lse, const void* d_o,
                             float* delta, void* dq, void* dk, void* dv, cudaStream_t stream) {
  if (p.batch == 0) return;
  with_storage(p.type, [&](auto tag) {
    using T = decltype(tag);
    backward_tiles<T>(p, static_cast<const T*>(o), lse, static_cast<const T*>(d_o), delta, static_cast<T*>(dq),
                      static_cast<T*>(dk), static_cast<T*>(dv), stream);
  });
}

/// Unfused forward, between the two GEMMs: s (B, H, Tq, Tk) holds q_i·k_j (unscaled) and receives the
/// dropped-out weights p_ij keep_ij / (1-p); lse (B, H, Tq).
void attention_softmax_cuda(const AttentionProblem& p, float* s, float* lse, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads * p.tq;
  if (rows == 0) return;
  launch<attention_softmax_kernel>(dim3(static_cast<unsigned>(rows)), dim3(kRowBlock), 0, stream, p, s, lse);
}

/// Unfused backward, between the GEMMs: s holds q_i·k_j and receives p_ij keep_ij / (1-p) (for dv);
/// dp holds do_i·v_j and receives scale * ds_ij (for dq and dk), with Δ_i = do_i·o_i from o and do
/// (B, Tq, H*Dv) f32.
void attention_softmax_backward_cuda(const AttentionProblem& p, float* s, float* dp, const float* lse, const float* o,
                                     const float* d_o, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(p.batch) * p.heads * p.tq;
  if (rows == 0) return;
  launch<attention_softmax_backward_kernel>(dim3(static_cast<unsigned>(rows)), dim3(kRowBlock), 0, stream, p, s, dp,
                                            lse, o, d_o);
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/attention.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_attention_ops puts them into the CUDA op table.

namespace cudl {

namespace chk = op_checks;

namespace {

ops::AttentionArgs check_for_cuda(const OpCall& call) {
  const ops::AttentionArgs a = ops::check_attention_call(call);
  const int64_t biggest = std::max({a.batch, a.tq, a.tk, a.heads * std::max(a.d, a.dv_dim)});
  if (biggest > INT_MAX || a.batch * a.heads > 65535 * int64_t{65535})
    CUDL_FAIL(chk::who(call), ": q ", a.q.shape, " and k ", a.k.shape, " exceed the CUDA kernels' 32-bit index range");
  return a;
}

kernels::AttentionProblem problem_of(const ops::AttentionArgs& a) {
  kernels::AttentionProblem p;
  p.q = a.q.data, p.k = a.k.data, p.v = a.v.data;
  p.type = kernels::storage_of(a.storage);
  p.key_mask = a.has_mask ? a.key_mask.as<float>() : nullptr;
  p.rng = a.has_dropout ? a.rng.as<int64_t>() : nullptr;
  p.batch = static_cast<int>(a.batch), p.tq = static_cast<int>(a.tq), p.tk = static_cast<int>(a.tk);
  p.heads = static_cast<int>(a.heads), p.d = static_cast<int>(a.d), p.dv = static_cast<int>(a.dv_dim);
  p.scale = a.scale, p.keep_scale = a.keep_scale, p.threshold = a.threshold, p.stream = a.stream;
  p.causal = a.causal, p.dropout = a.has_dropout;
  return p;
}

/// Fused unless the call asks for the unfused engine or a head is larger than the fused kernel takes
/// (then logged once per shape: the same device, another engine).
bool use_fused(const OpCall& call, const ops::AttentionArgs& a) {
  if (a.engine == AttentionEngine::Unfused) return false;
  const bool fits = a.d <= kAttentionMaxFusedHeadDim && a.dv_dim <= kAttentionMaxFusedHeadDim;
  if (fits) return true;
  if (a.engine == AttentionEngine::Fused)
    CUDL_FAIL(chk::who(call), ": the fused engine takes head sizes up to ", kAttentionMaxFusedHeadDim, ", got D ", a.d,
              " and Dv ", a.dv_dim, " (q ", a.q.shape, ", v ", a.v.shape, ")");
  static std::mutex mu;
  static std::set<std::string> logged;
  const std::string msg = "head sizes D " + std::to_string(a.d) + ", Dv " + std::to_string(a.dv_dim);
  std::lock_guard<std::mutex> lock(mu);
  if (logged.insert(msg).second)
    std::fprintf(stderr, "cudl: Attention (%s): %s exceed the fused kernel's %lld; running the unfused engine\n",
                 call.label, msg.c_str(), static_cast<long long>(kAttentionMaxFusedHeadDim));
  return false;
}

/// Bytes of `n` f32 values, rounded up to 256 (a workspace slot).
size_t f32_slot(int64_t n) { return (static_cast<size_t>(n) * sizeof(float) + 255) / 256 * 256; }

/// Workspace of the unfused path: [cuBLASLt workspace | `matrices` (B, H, Tq, Tk) f32 buffers].
struct UnfusedScratch {
  void* lt = nullptr;
  float* m0 = nullptr;
  float* m1 = nullptr;
};
size_t unfused_scratch_bytes(const ops::AttentionArgs& a, int matrices) {
  return cuda_gemm_workspace_bytes() + matrices * f32_slot(a.batch * a.heads * a.tq * a.tk);
}
UnfusedScratch unfused_scratch(CudaContext& ctx, const ops::AttentionArgs& a, int matrices) {
  const size_t lt = cuda_gemm_workspace_bytes();
  const size_t bytes = f32_slot(a.batch * a.heads * a.tq * a.tk);
  char* base = static_cast<char*>(ctx.workspace(unfused_scratch_bytes(a, matrices)));
  UnfusedScratch s{base, reinterpret_cast<float*>(base + lt), nullptr};
  if (matrices > 1) s.m1 = reinterpret_cast<float*>(base + lt + bytes);
  return s;
}

/// One head's GEMM, batched over the batch rows: operands are head-interleaved (B, T, H*width)
/// tensors or the (B, H, Tq, Tk) weight matrices, given as {pointer to head h of batch row 0, row
/// stride, batch-row stride}. (Batching over heads instead would interleave the outputs' batches,
/// which cuBLASLt does not allow.)
struct Operand {
  const float* data;
  int64_t ld, batch_stride;
};
void batch_gemm(const OpCall& call, CudaContext& ctx, void* lt, int64_t batch, int64_t m, int64_t n, int64_t k,
                bool ta, bool tb, Operand a, Operand b, Operand c) {
  StridedGemm g;
  g.m = m, g.n = n, g.k = k, g.batch = batch, g.ta = ta, g.tb = tb;
  g.a = a.data, g.lda = a.ld, g.stride_a = a.batch_stride;
  g.b = b.data, g.ldb = b.ld, g.stride_b = b.batch_stride;
  g.c = const_cast<float*>(c.data), g.ldc = c.ld, g.stride_c = c.batch_stride;
  cuda_strided_gemm(call, ctx, g, lt);
}

/// Head h of a (B, T, H*width) tensor as a GEMM operand.
Operand head(const TensorView& t, int64_t h, int64_t width) {
  const int64_t row = t.shape[2];
  return {t.as<float>() + h * width, row, t.shape[1] * row};
}

void zero(CudaContext& ctx, const TensorView& v) {
  if (v.defined() && v.numel() > 0)
    CUDL_CUDA_CHECK(cudaMemsetAsync(v.data, 0, static_cast<size_t>(v.numel()) * dtype_size(v.dtype), ctx.stream()));
}

void unfused_forward(const OpCall& call, CudaContext& ctx, const ops::AttentionArgs& a) {
  const kernels::AttentionProblem p = problem_of(a);
  if (a.tk == 0) {  // no keys: every row has lse -inf and o = 0
    zero(ctx, a.o);
    kernels::attention_softmax_cuda(p, nullptr, a.lse.as<float>(), ctx.stream());
    return;
  }
  const UnfusedScratch ws = unfused_scratch(ctx, a, 1);
  const int64_t B = a.batch, H = a.heads, st = a.tq * a.tk;
  auto w = [&](int64_t h) { return Operand{ws.m0 + h * st, a.tk, H * st}; };
  for (int64_t h = 0; h < H; ++h)  // s = q·kᵀ
    batch_gemm(call, ctx, ws.lt, B, a.tq, a.tk, a.d, false, true, head(a.q, h, a.d), head(a.k, h, a.d), w(h));
  kernels::attention_softmax_cuda(p, ws.m0, a.lse.as<float>(), ctx.stream());
  for (int64_t h = 0; h < H; ++h)  // o = w·v
    batch_gemm(call, ctx, ws.lt, B, a.tq, a.dv_dim, a.tk, false, false, w(h), head(a.v, h, a.dv_dim),
               head(a.o, h, a.dv_dim));
}

void unfused_backward(const OpCall& call, CudaContext& ctx, const ops::AttentionArgs& a) {
  const kernels::AttentionProblem p = problem_of(a);
  if (a.tk == 0 || a.tq == 0) {
    zero(ctx, a.dq), zero(ctx, a.dk), zero(ctx, a.dv);
    return;
  }
  const UnfusedScratch ws = unfused_scratch(ctx, a, 2);
  const int64_t B = a.batch, H = a.heads, D = a.d, Dv = a.dv_dim, st = a.tq * a.tk;
  auto w = [&](int64_t h) { return Operand{ws.m0 + h * st, a.tk, H * st}; };
  auto ds = [&](int64_t h) { return Operand{ws.m1 + h * st, a.tk, H * st}; };
  for (int64_t h = 0; h < H; ++h) {
    batch_gemm(call, ctx, ws.lt, B, a.tq, a.tk, D, false, true, head(a.q, h, D), head(a.k, h, D), w(h));  // q·kᵀ
    batch_gemm(call, ctx, ws.lt, B, a.tq, a.tk, Dv, false, true, head(a.d_o, h, Dv), head(a.v, h, Dv), ds(h));  // do·vᵀ
  }
  kernels::attention_softmax_backward_cuda(p, ws.m0, ws.m1, a.lse.as<float>(), a.o.as<float>(), a.d_o.as<float>(),
                                           ctx.stream());
  for (int64_t h = 0; h < H; ++h) {
    if (a.has_dv)  // dv = wᵀ·do
      batch_gemm(call, ctx, ws.lt, B, a.tk, Dv, a.tq, true, false, w(h), head(a.d_o, h, Dv), head(a.dv, h, Dv));
    if (a.has_dq)  // dq = ds·k
      batch_gemm(call, ctx, ws.lt, B, a.tq, D, a.tk, false, false, ds(h), head(a.k, h, D), head(a.dq, h, D));
    if (a.has_dk)  // dk = dsᵀ·q
      batch_gemm(call, ctx, ws.lt, B, a.tk, D, a.tq, true, false, ds(h), head(a.q, h, D), head(a.dk, h, D));
  }
}

/// The unfused engine computes in f32 (its GEMMs write the f32 weight matrices): a bf16 / f16 call
/// runs it on f32 copies of q, k, v (and o, do) widened in the workspace, past the engine's own
/// scratch, and rounds its f32 outputs (o, or dq, dk, dv) into the call's tensors once at the end.
void unfused_16bit(const OpCall& call, CudaContext& ctx, const ops::AttentionArgs& a,
                   void (*run)(const OpCall&, CudaContext&, const ops::AttentionArgs&)) {
  const int code = kernels::cast_code(a.storage);
  ops::AttentionArgs w = a;
  w.storage = DType::f32;
  TensorView* ins[] = {&w.q, &w.k, &w.v, &w.o, &w.d_o};
  TensorView* outs[] = {&w.o, &w.dq, &w.dk, &w.dv};
  size_t bytes = unfused_scratch_bytes(a, a.backward ? 2 : 1);  // the engine's own scratch comes first
  auto place = [&](TensorView* v) {
    const size_t at = bytes;
    bytes += f32_slot(v->numel());
    return at;
  };
  std::vector<std::pair<TensorView*, size_t>> widened, rounded;
  for (TensorView* v : ins)
    if (v->defined() && (a.backward || (v != &w.o && v != &w.d_o))) widened.emplace_back(v, place(v));
  for (TensorView* v : outs)
    if (v->defined() && (a.backward ? v != &w.o : v == &w.o)) rounded.emplace_back(v, place(v));
  char* base = static_cast<char*>(ctx.workspace(bytes));  // the engine's unfused_scratch is its start
  for (auto& [v, at] : widened) {
    kernels::cast_cuda(v->data, code, base + at, kernels::kCastF32, v->numel(), ctx.stream());
    v->data = base + at, v->dtype = DType::f32;
  }
  std::vector<TensorView> targets;
  for (auto& [v, at] : rounded) {
    targets.push_back(*v);
    v->data = base + at, v->dtype = DType::f32;
  }
  run(call, ctx, w);
  for (size_t i = 0; i < rounded.size(); ++i)
    kernels::cast_cuda(rounded[i].first->data, kernels::kCastF32, targets[i].data, code, targets[i].numel(),
                       ctx.stream());
}

void cuda_attention(const OpCall& call) {
  const ops::AttentionArgs a = check_for_cuda(call);
  CudaContext& ctx = cuda_context(call);
  if ((a.engine == AttentionEngine::Auto || a.engine == AttentionEngine::Cudnn) &&
      sdpa_forward(ctx, call, a, a.engine == AttentionEngine::Cudnn))
    return;
  if (!use_fused(call, a))
    return a.storage == DType::f32 ? unfused_forward(call, ctx, a) : unfused_16bit(call, ctx, a, unfused_forward);
  kernels::attention_forward_cuda(problem_of(a), a.o.data, a.lse.as<float>(), ctx.stream());
}

void cuda_attention_backward(const OpCall& call) {
  const ops::AttentionArgs a = check_for_cuda(call);
  CudaContext& ctx = cuda_context(call);
  if (!use_fused(call, a))
    return a.storage == DType::f32 ? unfused_backward(call, ctx, a) : unfused_16bit(call, ctx, a, unfused_backward);
  if (a.tq == 0) {
    zero(ctx, a.dk), zero(ctx, a.dv);
    return;
  }
  float* delta = static_cast<float*>(ctx.workspace(static_cast<size_t>(a.batch * a.heads * a.tq) * sizeof(float)));
  kernels::attention_backward_cuda(problem_of(a), a.o.data, a.lse.as<float>(), a.d_o.data, delta,
                                   a.has_dq ? a.dq.data : nullptr, a.has_dk ? a.dk.data : nullptr,
                                   a.has_dv ? a.dv.data : nullptr, ctx.stream());
}

}  // namespace

void register_cuda_attention_ops(OpTable& t) {
  t.add(OpKind::Attention, cuda_attention);
  t.add(OpKind::AttentionBackward, cuda_attention_backward);
}

}  // namespace cudl
