// kernels/softmax.cu — softmax / log-softmax along the last axis: one warp per row for rows up to 1024,
// one block per row beyond; two passes (max, then sum of exp(x - max)); float4 rows when aligned.
#include "kernels/common.cuh"
// (common.cuh first)
#include <cmath>
#include <cstdint>

#include "kernels/softmax.cuh"

namespace cudl::kernels {

namespace {

constexpr int kWarpRowsMax = 1024;  // rows up to this length: one warp per row
constexpr int kWarpBlock = 128;     // 4 rows per block in the warp kernels
constexpr int kMaxRowBlock = 1024;

// f(value) for row elements start, start + stride, ... (float4 groups when kVec: cols % 4 == 0
// and the row is 16-byte aligned).
template <bool kVec, typename F>
__device__ __forceinline__ void visit(const float* __restrict__ row, int cols, int start, int stride, F&& f) {
  if (kVec) {
    const float4* r4 = reinterpret_cast<const float4*>(row);
    for (int j = start; j < cols / 4; j += stride) {
      const float4 v = r4[j];
      f(v.x), f(v.y), f(v.z), f(v.w);
    }
  } else {
    for (int j = start; j < cols; j += stride) f(row[j]);
  }
}
template <bool kVec, typename F>
__device__ __forceinline__ void visit2(const float* __restrict__ a, const float* __restrict__ b, int cols, int start,
                                       int stride, F&& f) {
  if (kVec) {
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    for (int j = start; j < cols / 4; j += stride) {
      const float4 u = a4[j], v = b4[j];
      f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w);
    }
  } else {
    for (int j = start; j < cols; j += stride) f(a[j], b[j]);
  }
}
// out[j] = f(a[j], b[j]) (b may alias a).
template <bool kVec, typename F>
__device__ __forceinline__ void map_row(const float* __restrict__ a, const float* __restrict__ b,
                                        float* __restrict__ out, int cols, int start, int stride, F&& f) {
  if (kVec) {
    const float4* a4 = reinterpret_cast<const float4*>(a);
    const float4* b4 = reinterpret_cast<const float4*>(b);
    float4* o4 = reinterpret_cast<float4*>(out);
    for (int j = start; j < cols / 4; j += stride) {
      const float4 u = a4[j], v = b4[j];
      o4[j] = make_float4(f(u.x, v.x), f(u.y, v.y), f(u.z, v.z), f(u.w, v.w));
    }
  } else {
    for (int j = start; j < cols; j += stride) out[j] = f(a[j], b[j]);
  }
}

// y = exp(x - m) / s or (x - m) - log(s); the math of both kernels.
template <bool kLog>
__device__ __forceinline__ float softmax_value(float v, float m, float s, float log_s) {
  return kLog ? (v - m) - log_s : expf(v - m) / s;
}

template <bool kLog, bool kVec>
static __global__ void __launch_bounds__(kWarpBlock)
    softmax_warp_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t rows, int cols) {
  const int lane = threadIdx.x % kWarpSize, warps = blockDim.x / kWarpSize;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / kWarpSize; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps) {
    const float* xr = x + row * cols;
    float m = -INFINITY;
    visit<kVec>(xr, cols, lane, kWarpSize, [&](float v) { m = MaxNanOp{}(m, v); });
    m = warp_reduce<MaxNanOp>(m);
    float s = 0.f;
    visit<kVec>(xr, cols, lane, kWarpSize, [&](float v) { s += expf(v - m); });
    s = warp_reduce_sum(s);
    const float log_s = logf(s);
    map_row<kVec>(xr, xr, y + row * cols, cols, lane, kWarpSize,
                  [&](float v, float) { return softmax_value<kLog>(v, m, s, log_s); });
  }
}

template <bool kLog, bool kVec>
static __global__ void __launch_bounds__(kMaxRowBlock)
    softmax_block_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t rows, int cols) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* xr = x + row * cols;
    float m = -INFINITY;
    visit<kVec>(xr, cols, threadIdx.x, blockDim.x, [&](float v) { m = MaxNanOp{}(m, v); });
    m = block_reduce<MaxNanOp>(m);
    float s = 0.f;
    visit<kVec>(xr, cols, threadIdx.x, blockDim.x, [&](float v) { s += expf(v - m); });
    s = block_reduce_sum(s);
    const float log_s = logf(s);
    map_row<kVec>(xr, xr, y + row * cols, cols, threadIdx.x, blockDim.x,
                  [&](float v, float) { return softmax_value<kLog>(v, m, s, log_s); });
  }
}

// Backward: the row sum is sum(dy * y) (softmax) or sum(dy) (log-softmax).
template <bool kLog>
__device__ __forceinline__ float backward_term(float y, float dy) {
  return kLog ? dy : dy * y;
}
template <bool kLog>
__device__ __forceinline__ float backward_value(float y, float dy, float s) {
  return kLog ? dy - expf(y) * s : y * (dy - s);
}

template <bool kLog, bool kVec>
static __global__ void __launch_bounds__(kWarpBlock)
    softmax_backward_warp_kernel(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                                 int64_t rows, int cols) {
  const int lane = threadIdx.x % kWarpSize, warps = blockDim.x / kWarpSize;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / kWarpSize; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps) {
    const float* yr = y + row * cols;
    const float* dyr = dy + row * cols;
    float s = 0.f;
    visit2<kVec>(yr, dyr, cols, lane, kWarpSize, [&](float a, float b) { s += backward_term<kLog>(a, b); });
    s = warp_reduce_sum(s);
    map_row<kVec>(yr, dyr, dx + row * cols, cols, lane, kWarpSize,
                  [&](float a, float b) { return backward_value<kLog>(a, b, s); });
  }
}

template <bool kLog, bool kVec>
static __global__ void __launch_bounds__(kMaxRowBlock)
    softmax_backward_block_kernel(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                                  int64_t rows, int cols) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* yr = y + row * cols;
    const float* dyr = dy + row * cols;
    float s = 0.f;
    visit2<kVec>(yr, dyr, cols, threadIdx.x, blockDim.x, [&](float a, float b) { s += backward_term<kLog>(a, b); });
    s = block_reduce_sum(s);
    map_row<kVec>(yr, dyr, dx + row * cols, cols, threadIdx.x, blockDim.x,
                  [&](float a, float b) { return backward_value<kLog>(a, b, s); });
  }
}

int row_block(int64_t cols) { return cols <= 4096 ? 256 : (cols <= 16384 ? 512 : kMaxRowBlock); }

template <bool kLog, bool kVec>
void launch_forward(const float* x, float* y, int64_t rows, int cols, cudaStream_t stream) {
  if (cols <= kWarpRowsMax) {
    launch<softmax_warp_kernel<kLog, kVec>>(grid_for(rows, kWarpBlock / kWarpSize), kWarpBlock, 0, stream, x, y, rows,
                                            cols);
  } else {
    launch<softmax_block_kernel<kLog, kVec>>(grid_for(rows, 1), row_block(cols), 0, stream, x, y, rows, cols);
  }
}

template <bool kLog, bool kVec>
void launch_backward(const float* y, const float* dy, float* dx, int64_t rows, int cols, cudaStream_t stream) {
  if (cols <= kWarpRowsMax) {
    launch<softmax_backward_warp_kernel<kLog, kVec>>(grid_for(rows, kWarpBlock / kWarpSize), kWarpBlock, 0, stream, y,
                                                     dy, dx, rows, cols);
  } else {
    launch<softmax_backward_block_kernel<kLog, kVec>>(grid_for(rows, 1), row_block(cols), 0, stream, y, dy, dx, rows,
                                                      cols);
  }
}

}  // namespace

void softmax_cuda(bool log, const float* x, float* y, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const int c = static_cast<int>(cols);
  const bool vec = cols % 4 == 0 && aligned16(x) && aligned16(y);
  if (log)
    vec ? launch_forward<true, true>(x, y, rows, c, stream) : launch_forward<true, false>(x, y, rows, c, stream);
  else
    vec ? launch_forward<false, true>(x, y, rows, c, stream) : launch_forward<false, false>(x, y, rows, c, stream);
}

void softmax_backward_cuda(bool log, const float* y, const float* dy, float* dx, int64_t rows, int64_t cols,
                           cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const int c = static_cast<int>(cols);
  const bool vec = cols % 4 == 0 && aligned16(y) && aligned16(dy) && aligned16(dx);
  if (log)
    vec ? launch_backward<true, true>(y, dy, dx, rows, c, stream)
        : launch_backward<true, false>(y, dy, dx, rows, c, stream);
  else
    vec ? launch_backward<false, true>(y, dy, dx, rows, c, stream)
        : launch_backward<false, false>(y, dy, dx, rows, c, stream);
}

}  // namespace cudl::kernels
