// kernels/reduce.cu — reductions over one axis of (outer, R, inner): warp-per-row and block-per-row kernels
// (inner == 1), a column kernel (inner > 1), a two-pass grid reduction for one long row, and the gradients.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <climits>
#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

#include "backend/op.hpp"
#include "cuda/context.hpp"
#include "ops/common.hpp"
#include "ops/reduce.hpp"

namespace cudl::kernels {

namespace {

constexpr int kSum = 0, kMax = 1, kVar = 2;  // kernel flavours (Mean is kSum with divisor R)
constexpr int kWarpRowsMax = 1024;           // rows up to this length: one warp per row
constexpr int kRowBlock = 256;               // block-per-row and grid kernels
constexpr int kWarpBlock = 128;              // warp-per-row kernel: 4 rows per block
constexpr int kColX = 32, kColY = 8;         // column kernel: 32 columns x 8 slices of R
constexpr int kGridParts = 128;              // blocks of the first pass of the grid reduction

// ---------------------------------------------------------------------------------------------
// Max with its index. A strict total order on (value, index): NaN above every number, larger
// values first, then the smaller index; index -1 marks "no element yet". Because it is a total
// order the result does not depend on the combination order (it equals the sequential scan).
// ---------------------------------------------------------------------------------------------
struct ArgMax {
  float v;
  int i;
};

__device__ __forceinline__ bool beats(const ArgMax& a, const ArgMax& b) {
  if (a.i < 0) return false;
  if (b.i < 0) return true;
  const bool an = a.v != a.v, bn = b.v != b.v;
  if (bn) return an && a.i < b.i;
  if (an) return true;
  return a.v > b.v || (a.v == b.v && a.i < b.i);
}
__device__ __forceinline__ ArgMax better(const ArgMax& a, const ArgMax& b) { return beats(b, a) ? b : a; }

/// better() as a reduction operator; identity: no candidate.
struct ArgMaxOp {
  __device__ __forceinline__ ArgMax operator()(const ArgMax& a, const ArgMax& b) const { return better(a, b); }
  template <typename T>
  __device__ static constexpr ArgMax identity() {
    return ArgMax{0.f, -1};
  }
};

__device__ __forceinline__ void store_max(const ArgMax& a, int64_t out, float* y, int64_t* idx64, int32_t* idx32) {
  if (y) y[out] = a.v;
  if (idx64) idx64[out] = a.i;
  if (idx32) idx32[out] = a.i;
}

// ---------------------------------------------------------------------------------------------
// inner == 1, short rows: one warp per row, lanes stride the row, shuffle reduction.
// divisor: R for Mean, R - unbiased for Var, 1 for Sum.
// ---------------------------------------------------------------------------------------------
template <int kOp>
static __global__ void __launch_bounds__(kWarpBlock)
    reduce_rows_warp_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t* __restrict__ idx64,
                            int32_t* __restrict__ idx32, int64_t rows, int R, float divisor) {
  const int lane = threadIdx.x % kWarpSize;
  const int warps = blockDim.x / kWarpSize;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / kWarpSize; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps) {
    const float* xr = x + row * R;
    if (kOp == kMax) {
      ArgMax a{0.f, -1};
      for (int r = lane; r < R; r += kWarpSize) a = better(a, ArgMax{xr[r], r});
      a = warp_reduce<ArgMaxOp>(a);
      if (lane == 0) store_max(a, row, y, idx64, idx32);
    } else {
      float s = 0.f;
      for (int r = lane; r < R; r += kWarpSize) s += xr[r];
      s = warp_reduce_sum(s);
      if (kOp == kVar) {
        const float mean = s / static_cast<float>(R);
        float ss = 0.f;
        for (int r = lane; r < R; r += kWarpSize) ss += (xr[r] - mean) * (xr[r] - mean);
        s = warp_reduce_sum(ss);
      }
      if (lane == 0) y[row] = s / divisor;
    }
  }
}

// inner == 1, long rows: one block per row.
template <int kOp>
static __global__ void __launch_bounds__(kRowBlock)
    reduce_rows_block_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t* __restrict__ idx64,
                             int32_t* __restrict__ idx32, int64_t rows, int R, float divisor) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * R;
    if (kOp == kMax) {
      ArgMax a{0.f, -1};
      for (int r = threadIdx.x; r < R; r += blockDim.x) a = better(a, ArgMax{xr[r], r});
      a = block_reduce<ArgMaxOp>(a);
      if (threadIdx.x == 0) store_max(a, row, y, idx64, idx32);
    } else {
      float s = 0.f;
      for (int r = threadIdx.x; r < R; r += blockDim.x) s += xr[r];
      s = block_reduce_sum(s);
      if (kOp == kVar) {
        const float mean = s / static_cast<float>(R);
        float ss = 0.f;
        for (int r = threadIdx.x; r < R; r += blockDim.x) ss += (xr[r] - mean) * (xr[r] - mean);
        s = block_reduce_sum(ss);
      }
      if (threadIdx.x == 0) y[row] = s / divisor;
    }
  }
}

// inner > 1: a (kColX, kColY) block covers kColX adjacent columns of one outer index (coalesced
// along inner); the kColY thread rows stride over R and are combined in a fixed order.
template <int kOp>
static __global__ void __launch_bounds__(kColX* kColY)
    reduce_cols_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t* __restrict__ idx64,
                       int32_t* __restrict__ idx32, int64_t outer, int R, int64_t inner, float divisor) {
  __shared__ float shv[kColY][kColX];
  __shared__ int shi[kColY][kColX];
  __shared__ float sh_mean[kColX];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kColX + tx;
  const bool active = i < inner;
  for (int64_t o = blockIdx.y; o < outer; o += gridDim.y) {
    const float* xc = x + o * R * inner + i;  // x[o, r, i] = xc[r * inner]
    if (kOp == kMax) {
      ArgMax a{0.f, -1};
      if (active)
        for (int r = ty; r < R; r += kColY) a = better(a, ArgMax{xc[r * inner], r});
      shv[ty][tx] = a.v;
      shi[ty][tx] = a.i;
      __syncthreads();
      if (ty == 0 && active) {
        for (int k = 1; k < kColY; ++k) a = better(a, ArgMax{shv[k][tx], shi[k][tx]});
        store_max(a, o * inner + i, y, idx64, idx32);
      }
      __syncthreads();
    } else {
      float s = 0.f;
      if (active)
        for (int r = ty; r < R; r += kColY) s += xc[r * inner];
      shv[ty][tx] = s;
      __syncthreads();
      if (ty == 0) {
        for (int k = 1; k < kColY; ++k) s += shv[k][tx];
        sh_mean[tx] = s / static_cast<float>(R);
      }
      __syncthreads();
      if (kOp == kVar) {
        const float mean = sh_mean[tx];
        float ss = 0.f;
        if (active)
          for (int r = ty; r < R; r += kColY) ss += (xc[r * inner] - mean) * (xc[r * inner] - mean);
        shv[ty][tx] = ss;
        __syncthreads();
        if (ty == 0) {
          s = ss;
          for (int k = 1; k < kColY; ++k) s += shv[k][tx];
        }
        __syncthreads();
      }
      if (ty == 0 && active) y[o * inner + i] = s / divisor;
    }
  }
}

// One long row (outer == inner == 1, e.g. "all axes"), pass 1: each of gridDim.x blocks reduces a
// fixed grid-stride subset to one partial. With `mean` given, sums (x - *mean)^2 instead of x.
template <int kOp>
static __global__ void __launch_bounds__(kRowBlock)
    reduce_all_partial_kernel(const float* __restrict__ x, int64_t n, const float* __restrict__ mean,
                              float* __restrict__ part_v, int* __restrict__ part_i) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t start = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (kOp == kMax) {
    ArgMax a{0.f, -1};
    for (int64_t k = start; k < n; k += stride) a = better(a, ArgMax{x[k], static_cast<int>(k)});
    a = block_reduce<ArgMaxOp>(a);
    if (threadIdx.x == 0) part_v[blockIdx.x] = a.v, part_i[blockIdx.x] = a.i;
  } else {
    const float m = mean ? *mean : 0.f;
    float s = 0.f;
    for (int64_t k = start; k < n; k += stride) s += mean ? (x[k] - m) * (x[k] - m) : x[k];
    s = block_reduce_sum(s);
    if (threadIdx.x == 0) part_v[blockIdx.x] = s;
  }
}

// Pass 2: one block combines the partials in a fixed order; writes *out = sum / divisor (Sum,
// Mean, Var), or the max and its index.
template <int kOp>
static __global__ void __launch_bounds__(kRowBlock)
    reduce_all_final_kernel(const float* __restrict__ part_v, const int* __restrict__ part_i, int parts, float divisor,
                            float* __restrict__ out, int64_t* __restrict__ idx64, int32_t* __restrict__ idx32) {
  if (kOp == kMax) {
    ArgMax a{0.f, -1};
    for (int k = threadIdx.x; k < parts; k += blockDim.x) a = better(a, ArgMax{part_v[k], part_i[k]});
    a = block_reduce<ArgMaxOp>(a);
    if (threadIdx.x == 0) store_max(a, 0, out, idx64, idx32);
  } else {
    float s = 0.f;
    for (int k = threadIdx.x; k < parts; k += blockDim.x) s += part_v[k];
    s = block_reduce_sum(s);
    if (threadIdx.x == 0) *out = s / divisor;
  }
}

// Gradients, one thread per element of x.
template <int kOp>
static __global__ void __launch_bounds__(kRowBlock)
    reduce_backward_kernel(const float* __restrict__ x, const float* __restrict__ mean, const float* __restrict__ dy,
                           const int64_t* __restrict__ idx, float* __restrict__ dx, int64_t n, int64_t R, int64_t inner,
                           float divisor) {
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner, t = e / inner;
    const int64_t r = t % R, o = t / R;
    const int64_t out = o * inner + i;
    float g;
    if (kOp == kMax)
      g = idx[out] == r ? dy[out] : 0.f;
    else if (kOp == kVar)
      g = dy[out] * 2.f * (x[e] - mean[out]) / divisor;
    else
      g = dy[out] / divisor;
    dx[e] = g;
  }
}

template <int kOp>
void launch_reduce(float divisor, const float* x, float* y, int64_t* idx64, int32_t* idx32, int64_t outer, int64_t R,
                   int64_t inner, void* workspace, cudaStream_t stream) {
  const int r32 = static_cast<int>(R);
  if (inner == 1 && outer == 1 && R > kWarpRowsMax) {
    // Two-pass grid reduction with a fixed grid: deterministic run to run.
    const int parts = static_cast<int>(grid_for(R, kRowBlock * 4, kGridParts));
    float* part_v = static_cast<float*>(workspace);
    int* part_i = reinterpret_cast<int*>(part_v + kGridParts);
    float* mean = reinterpret_cast<float*>(part_i + kGridParts);
    if (kOp == kVar) {  // pass A: the mean
      launch<reduce_all_partial_kernel<kSum>>(parts, kRowBlock, 0, stream, x, R, nullptr, part_v, part_i);
      launch<reduce_all_final_kernel<kSum>>(1, kRowBlock, 0, stream, part_v, part_i, parts, static_cast<float>(R), mean,
                                            nullptr, nullptr);
    }
    launch<reduce_all_partial_kernel<kOp>>(parts, kRowBlock, 0, stream, x, R, kOp == kVar ? mean : nullptr, part_v,
                                           part_i);
    launch<reduce_all_final_kernel<kOp>>(1, kRowBlock, 0, stream, part_v, part_i, parts, divisor, y, idx64, idx32);
  } else if (inner == 1 && R <= kWarpRowsMax) {
    const int rows_per_block = kWarpBlock / kWarpSize;
    launch<reduce_rows_warp_kernel<kOp>>(grid_for(outer, rows_per_block), kWarpBlock, 0, stream, x, y, idx64, idx32,
                                         outer, r32, divisor);
  } else if (inner == 1) {
    launch<reduce_rows_block_kernel<kOp>>(grid_for(outer, 1), kRowBlock, 0, stream, x, y, idx64, idx32, outer, r32,
                                          divisor);
  } else {
    const int64_t col_blocks = (inner + kColX - 1) / kColX;
    const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(outer < 65535 ? outer : 65535));
    launch<reduce_cols_kernel<kOp>>(grid, dim3(kColX, kColY), 0, stream, x, y, idx64, idx32, outer, r32, inner,
                                    divisor);
  }
}

}  // namespace

/// Device scratch bytes reduce_cuda needs for this geometry (the all-axes two-pass grid reduction).
size_t reduce_workspace_bytes(int64_t outer, int64_t R, int64_t inner) {
  if (!(inner == 1 && outer == 1 && R > kWarpRowsMax)) return 0;
  return kGridParts * (sizeof(float) + sizeof(int)) + 16;
}

/// y[o, i] = op over r of x[(o * R + r) * inner + i]; op is a ReduceOp value. y, idx64 (Max index)
/// and idx32 (Argmax) may each be null. Var divides by R - unbiased. Deterministic (fixed order, no
/// atomics). `workspace`: reduce_workspace_bytes(...) bytes of device memory, or null when that is 0.
void reduce_cuda(int op, bool unbiased, const float* x, float* y, int64_t* idx64, int32_t* idx32, int64_t outer,
                 int64_t R, int64_t inner, void* workspace, cudaStream_t stream) {
  if (outer * inner <= 0) return;
  switch (static_cast<ReduceOp>(op)) {
    case ReduceOp::Sum:
      return launch_reduce<kSum>(1.f, x, y, nullptr, nullptr, outer, R, inner, workspace, stream);
    case ReduceOp::Mean:
      return launch_reduce<kSum>(static_cast<float>(R), x, y, nullptr, nullptr, outer, R, inner, workspace, stream);
    case ReduceOp::Var:
      return launch_reduce<kVar>(static_cast<float>(R - (unbiased ? 1 : 0)), x, y, nullptr, nullptr, outer, R, inner,
                                 workspace, stream);
    case ReduceOp::Max:
      return launch_reduce<kMax>(1.f, x, y, idx64, idx32, outer, R, inner, workspace, stream);
    case ReduceOp::Count:
      break;
  }
}

/// dx (outer, R, inner) from dy (outer, inner): Sum dy; Mean dy / R; Var dy * 2 (x - mean) / (R - unbiased)
/// with mean (outer, inner); Max dy at idx (outer, inner), 0 elsewhere. x / mean / idx only where used.
void reduce_backward_cuda(int op, bool unbiased, const float* x, const float* mean, const float* dy, const int64_t* idx,
                          float* dx, int64_t outer, int64_t R, int64_t inner, cudaStream_t stream) {
  const int64_t n = outer * R * inner;
  if (n <= 0) return;
  const unsigned grid = grid_for(n, kRowBlock);
  switch (static_cast<ReduceOp>(op)) {
    case ReduceOp::Sum:
    case ReduceOp::Mean: {
      const float divisor = static_cast<ReduceOp>(op) == ReduceOp::Mean ? static_cast<float>(R) : 1.f;
      launch<reduce_backward_kernel<kSum>>(grid, kRowBlock, 0, stream, x, mean, dy, idx, dx, n, R, inner, divisor);
      break;
    }
    case ReduceOp::Var: {
      launch<reduce_backward_kernel<kVar>>(grid, kRowBlock, 0, stream, x, mean, dy, idx, dx, n, R, inner,
                                           static_cast<float>(R - (unbiased ? 1 : 0)));
      break;
    }
    case ReduceOp::Max: {
      launch<reduce_backward_kernel<kMax>>(grid, kRowBlock, 0, stream, x, mean, dy, idx, dx, n, R, inner, 1.f);
      break;
    }
    case ReduceOp::Count:
      return;
  }
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/reduce.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_reduce_ops puts them into the CUDA op table.

namespace cudl {

namespace {

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

ops::ReduceArgs check_for_cuda(const OpCall& call) {
  const ops::ReduceArgs p = ops::check_reduce_call(call);
  if (p.R > INT_MAX)
    CUDL_FAIL(op_checks::who(call), ": reducing ", p.R, " elements along one axis of ", p.x_shape,
              " is not supported on CUDA (at most 2^31 - 1)");
  return p;
}

void cuda_reduce(const OpCall& call) {
  const ops::ReduceArgs p = check_for_cuda(call);
  CudaContext& ctx = cuda_context(call);
  const size_t ws = kernels::reduce_workspace_bytes(p.outer, p.R, p.inner);
  kernels::reduce_cuda(static_cast<int>(p.op), p.unbiased, p.x.as<float>(), p.y.as<float>(),
                       p.indices.as<int64_t>(), nullptr, p.outer, p.R, p.inner,
                       ws ? ctx.workspace(ws) : nullptr, ctx.stream());
}

void cuda_reduce_backward(const OpCall& call) {
  const ops::ReduceArgs p = check_for_cuda(call);
  CudaContext& ctx = cuda_context(call);
  const float* x = p.x.as<float>();
  const int64_t* idx = p.indices.as<int64_t>();
  float* mean = nullptr;
  if (p.op == ReduceOp::Var) {
    // The per-output means first (into the workspace), then the elementwise gradient.
    const size_t mean_bytes = align256(static_cast<size_t>(p.out_numel()) * sizeof(float));
    const size_t ws = kernels::reduce_workspace_bytes(p.outer, p.R, p.inner);
    char* base = static_cast<char*>(ctx.workspace(mean_bytes + ws));
    mean = reinterpret_cast<float*>(base);
    kernels::reduce_cuda(static_cast<int>(ReduceOp::Mean), false, x, mean, nullptr, nullptr, p.outer, p.R, p.inner,
                         ws ? base + mean_bytes : nullptr, ctx.stream());
  }
  kernels::reduce_backward_cuda(static_cast<int>(p.op), p.unbiased, x, mean, p.dy.as<float>(), idx,
                                p.dx.as<float>(), p.outer, p.R, p.inner, ctx.stream());
}

void cuda_argmax(const OpCall& call) {
  const ops::ReduceArgs p = check_for_cuda(call);
  CudaContext& ctx = cuda_context(call);
  const size_t ws = kernels::reduce_workspace_bytes(p.outer, p.R, p.inner);
  kernels::reduce_cuda(static_cast<int>(ReduceOp::Max), false, p.x.as<float>(), nullptr, nullptr,
                       p.indices.as<int32_t>(), p.outer, p.R, p.inner, ws ? ctx.workspace(ws) : nullptr,
                       ctx.stream());
}

}  // namespace

void register_cuda_reduce_ops(OpTable& t) {
  t.add(OpKind::Reduce, cuda_reduce);
  t.add(OpKind::ReduceBackward, cuda_reduce_backward);
  t.add(OpKind::Argmax, cuda_argmax);
}

}  // namespace cudl
