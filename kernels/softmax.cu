// kernels/softmax.cu — softmax / log-softmax along the last axis: one warp per row for rows up to 1024,
// one block per row beyond; two passes (max, then sum of exp(x - max)); 16-byte loads when aligned.
// Generic over the storage type (f32, bf16, f16), fp32 math.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <climits>
#include <cmath>
#include <cstdint>

#include "cuda/context.hpp"
#include "kernels/softmax.cuh"
#include "ops/common.hpp"
#include "ops/softmax.hpp"

namespace cudl::kernels {

namespace {

constexpr int kWarpRowsMax = 1024;  // rows up to this length: one warp per row
constexpr int kWarpBlock = 128;     // 4 rows per block in the warp kernels
constexpr int kMaxRowBlock = 1024;

// Rows are of the storage type T (float, __nv_bfloat16, __half); every value is widened to float on
// load, the math is fp32 whatever T, and each result is rounded to T once on store (common.cuh).
// kVec: 16-byte groups (4 floats, 8 bf16 / f16 values) when cols is a multiple of the group and the
// rows are 16-byte aligned; j, start and stride then count groups.

// f(value) for row elements start, start + stride, ...
template <typename T, bool kVec, typename F>
__device__ __forceinline__ void visit(const T* __restrict__ row, int cols, int start, int stride, F&& f) {
  if (kVec) {
    constexpr int kV = kVec16<T>;
    for (int j = start; j < cols / kV; j += stride) {
      float v[kV];
      load16(row, j, v);
      for (int k = 0; k < kV; ++k) f(v[k]);
    }
  } else {
    for (int j = start; j < cols; j += stride) f(to_float(row[j]));
  }
}
template <typename T, bool kVec, typename F>
__device__ __forceinline__ void visit2(const T* __restrict__ a, const T* __restrict__ b, int cols, int start,
                                       int stride, F&& f) {
  if (kVec) {
    constexpr int kV = kVec16<T>;
    for (int j = start; j < cols / kV; j += stride) {
      float u[kV], v[kV];
      load16(a, j, u);
      load16(b, j, v);
      for (int k = 0; k < kV; ++k) f(u[k], v[k]);
    }
  } else {
    for (int j = start; j < cols; j += stride) f(to_float(a[j]), to_float(b[j]));
  }
}
// out[j] = f(a[j], b[j]) rounded to T (b may alias a).
template <typename T, bool kVec, typename F>
__device__ __forceinline__ void map_row(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out, int cols,
                                        int start, int stride, F&& f) {
  if (kVec) {
    constexpr int kV = kVec16<T>;
    for (int j = start; j < cols / kV; j += stride) {
      float u[kV], v[kV], o[kV];
      load16(a, j, u);
      load16(b, j, v);
      for (int k = 0; k < kV; ++k) o[k] = f(u[k], v[k]);
      store16(out, j, o);
    }
  } else {
    for (int j = start; j < cols; j += stride) out[j] = from_float<T>(f(to_float(a[j]), to_float(b[j])));
  }
}

// y = exp(x - m) / s or (x - m) - log(s); the math of both kernels.
template <bool kLog>
__device__ __forceinline__ float softmax_value(float v, float m, float s, float log_s) {
  return kLog ? (v - m) - log_s : expf(v - m) / s;
}

template <typename T, bool kLog, bool kVec>
static __global__ void __launch_bounds__(kWarpBlock)
    softmax_warp_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int cols) {
  const int lane = threadIdx.x % kWarpSize, warps = blockDim.x / kWarpSize;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / kWarpSize; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps) {
    const T* xr = x + row * cols;
    float m = -INFINITY;
    visit<T, kVec>(xr, cols, lane, kWarpSize, [&](float v) { m = MaxNanOp{}(m, v); });
    m = warp_reduce<MaxNanOp>(m);
    float s = 0.f;
    visit<T, kVec>(xr, cols, lane, kWarpSize, [&](float v) { s += expf(v - m); });
    s = warp_reduce_sum(s);
    const float log_s = logf(s);
    map_row<T, kVec>(xr, xr, y + row * cols, cols, lane, kWarpSize,
                     [&](float v, float) { return softmax_value<kLog>(v, m, s, log_s); });
  }
}

template <typename T, bool kLog, bool kVec>
static __global__ void __launch_bounds__(kMaxRowBlock)
    softmax_block_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int cols) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * cols;
    float m = -INFINITY;
    visit<T, kVec>(xr, cols, threadIdx.x, blockDim.x, [&](float v) { m = MaxNanOp{}(m, v); });
    m = block_reduce<MaxNanOp>(m);
    float s = 0.f;
    visit<T, kVec>(xr, cols, threadIdx.x, blockDim.x, [&](float v) { s += expf(v - m); });
    s = block_reduce_sum(s);
    const float log_s = logf(s);
    map_row<T, kVec>(xr, xr, y + row * cols, cols, threadIdx.x, blockDim.x,
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

template <typename T, bool kLog, bool kVec>
static __global__ void __launch_bounds__(kWarpBlock)
    softmax_backward_warp_kernel(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx, int64_t rows,
                                 int cols) {
  const int lane = threadIdx.x % kWarpSize, warps = blockDim.x / kWarpSize;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / kWarpSize; row < rows;
       row += static_cast<int64_t>(gridDim.x) * warps) {
    const T* yr = y + row * cols;
    const T* dyr = dy + row * cols;
    float s = 0.f;
    visit2<T, kVec>(yr, dyr, cols, lane, kWarpSize, [&](float a, float b) { s += backward_term<kLog>(a, b); });
    s = warp_reduce_sum(s);
    map_row<T, kVec>(yr, dyr, dx + row * cols, cols, lane, kWarpSize,
                     [&](float a, float b) { return backward_value<kLog>(a, b, s); });
  }
}

template <typename T, bool kLog, bool kVec>
static __global__ void __launch_bounds__(kMaxRowBlock)
    softmax_backward_block_kernel(const T* __restrict__ y, const T* __restrict__ dy, T* __restrict__ dx, int64_t rows,
                                  int cols) {
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* yr = y + row * cols;
    const T* dyr = dy + row * cols;
    float s = 0.f;
    visit2<T, kVec>(yr, dyr, cols, threadIdx.x, blockDim.x, [&](float a, float b) { s += backward_term<kLog>(a, b); });
    s = block_reduce_sum(s);
    map_row<T, kVec>(yr, dyr, dx + row * cols, cols, threadIdx.x, blockDim.x,
                     [&](float a, float b) { return backward_value<kLog>(a, b, s); });
  }
}

int row_block(int64_t cols) { return cols <= 4096 ? 256 : (cols <= 16384 ? 512 : kMaxRowBlock); }

template <typename T, bool kLog, bool kVec>
void launch_forward(const T* x, T* y, int64_t rows, int cols, cudaStream_t stream) {
  if (cols <= kWarpRowsMax) {
    launch<softmax_warp_kernel<T, kLog, kVec>>(grid_for(rows, kWarpBlock / kWarpSize), kWarpBlock, 0, stream, x, y,
                                               rows, cols);
  } else {
    launch<softmax_block_kernel<T, kLog, kVec>>(grid_for(rows, 1), row_block(cols), 0, stream, x, y, rows, cols);
  }
}

template <typename T, bool kLog, bool kVec>
void launch_backward(const T* y, const T* dy, T* dx, int64_t rows, int cols, cudaStream_t stream) {
  if (cols <= kWarpRowsMax) {
    launch<softmax_backward_warp_kernel<T, kLog, kVec>>(grid_for(rows, kWarpBlock / kWarpSize), kWarpBlock, 0, stream,
                                                        y, dy, dx, rows, cols);
  } else {
    launch<softmax_backward_block_kernel<T, kLog, kVec>>(grid_for(rows, 1), row_block(cols), 0, stream, y, dy, dx, rows,
                                                         cols);
  }
}

/// Calls f(std::bool_constant<log>{}, std::bool_constant<vec>{}): the runtime flags as template arguments.
template <typename F>
void with_flags(bool log, bool vec, F&& f) {
  if (log)
    vec ? f(std::true_type{}, std::true_type{}) : f(std::true_type{}, std::false_type{});
  else
    vec ? f(std::false_type{}, std::true_type{}) : f(std::false_type{}, std::false_type{});
}

}  // namespace

void softmax_cuda(bool log, const void* x, void* y, Storage type, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const int c = static_cast<int>(cols);
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = cols % kVec16<T> == 0 && aligned16(x) && aligned16(y);
    with_flags(log, vec, [&](auto k_log, auto k_vec) {
      launch_forward<T, decltype(k_log)::value, decltype(k_vec)::value>(static_cast<const T*>(x), static_cast<T*>(y),
                                                                        rows, c, stream);
    });
  });
}

void softmax_backward_cuda(bool log, const void* y, const void* dy, void* dx, Storage type, int64_t rows, int64_t cols,
                           cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const int c = static_cast<int>(cols);
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    const bool vec = cols % kVec16<T> == 0 && aligned16(y) && aligned16(dy) && aligned16(dx);
    with_flags(log, vec, [&](auto k_log, auto k_vec) {
      launch_backward<T, decltype(k_log)::value, decltype(k_vec)::value>(
          static_cast<const T*>(y), static_cast<const T*>(dy), static_cast<T*>(dx), rows, c, stream);
    });
  });
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/softmax.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_softmax_ops puts them into the CUDA op table.

namespace cudl {

namespace {

ops::SoftmaxArgs check_for_cuda(const OpCall& call) {
  const ops::SoftmaxArgs p = ops::check_softmax_call(call);
  if (p.cols > INT_MAX)
    CUDL_FAIL(op_checks::who(call), ": rows of ", p.cols, " elements are not supported on CUDA (at most 2^31 - 1)");
  return p;
}

void run_forward(const OpCall& call, bool log) {
  const ops::SoftmaxArgs p = check_for_cuda(call);
  kernels::softmax_cuda(log, p.x.data, p.y.data, kernels::storage_of(p.storage), p.rows, p.cols,
                        cuda_context(call).stream());
}

void run_backward(const OpCall& call, bool log) {
  const ops::SoftmaxArgs p = check_for_cuda(call);
  kernels::softmax_backward_cuda(log, p.y.data, p.dy.data, p.dx.data, kernels::storage_of(p.storage), p.rows, p.cols,
                                 cuda_context(call).stream());
}

void cuda_softmax(const OpCall& call) { run_forward(call, false); }
void cuda_log_softmax(const OpCall& call) { run_forward(call, true); }
void cuda_softmax_backward(const OpCall& call) { run_backward(call, false); }
void cuda_log_softmax_backward(const OpCall& call) { run_backward(call, true); }

}  // namespace

void register_cuda_softmax_ops(OpTable& t) {
  t.add(OpKind::Softmax, cuda_softmax);
  t.add(OpKind::SoftmaxBackward, cuda_softmax_backward);
  t.add(OpKind::LogSoftmax, cuda_log_softmax);
  t.add(OpKind::LogSoftmaxBackward, cuda_log_softmax_backward);
}

}  // namespace cudl
