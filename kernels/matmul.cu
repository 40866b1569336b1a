// kernels/matmul.cu — the matmul family's small kernels around the cuBLASLt GEMMs: the Linear epilogue
// (bias + ReLU/GELU) where no cuBLASLt epilogue fits, act' in front of the backward GEMMs, the bias gradient.
// Generic over the storage type (float, __nv_bfloat16, __half): fp32 math, one rounding per store.
#include "ops/matmul.hpp"
#include "kernels/common.cuh"
#include "kernels/matmul.cuh"

namespace cudl::kernels {

namespace mm = cudl::matmul_math;

template <int Act>
__device__ __forceinline__ float apply_act(float v) {
  if (Act == 1) return mm::relu(v);
  if (Act == 2) return mm::gelu_tanh(v);
  return v;
}

template <int Act>
__device__ __forceinline__ float apply_act_grad(float dy, float a) {
  if (Act == 1) return mm::relu_grad(dy, a);
  return mm::gelu_tanh_grad(dy, a);
}

// --- Linear epilogue ----------------------------------------------------------------------------

/// v = z + bias[col]: pre = v, y = act(v), pre_f32 = v. Vector path (f32 only): cols % 4 == 0 and
/// every pointer 16-byte aligned, so a float4 never crosses a row; scalar path otherwise.
template <typename T, int Act>
static __global__ void linear_epilogue_kernel(const float* z, const T* __restrict__ bias, T* pre, T* y, float* pre_f32,
                                              int64_t rows, int64_t cols, bool vec) {
  const int64_t n = rows * cols;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if constexpr (std::is_same<T, float>::value) {
    if (vec) {
      for (int64_t q = first; q < n / 4; q += stride) {
        const int64_t i = q * 4, c = i % cols;
        float4 v = reinterpret_cast<const float4*>(z)[q];
        if (bias) {
          const float4 b = *reinterpret_cast<const float4*>(bias + c);
          v.x += b.x, v.y += b.y, v.z += b.z, v.w += b.w;
        }
        if (pre) reinterpret_cast<float4*>(pre)[q] = v;
        reinterpret_cast<float4*>(y)[q] =
            make_float4(apply_act<Act>(v.x), apply_act<Act>(v.y), apply_act<Act>(v.z), apply_act<Act>(v.w));
      }
      return;
    }
  }
  for (int64_t i = first; i < n; i += stride) {
    const float v = z[i] + (bias ? to_float(bias[i % cols]) : 0.f);
    if (pre_f32) pre_f32[i] = v;
    if (pre) pre[i] = from_float<T>(v);
    y[i] = from_float<T>(apply_act<Act>(v));
  }
}

template <typename T>
void linear_epilogue_cuda(const float* z, const T* bias, T* pre, T* y, float* pre_f32, int64_t rows, int64_t cols,
                          int act, cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  const bool vec = std::is_same<T, float>::value && !pre_f32 && cols % 4 == 0 && aligned16(z) && aligned16(y) &&
                   aligned16(pre) && aligned16(bias);
  const int block = 256;
  const unsigned grid = grid_for(vec ? n / 4 : n, block);
  switch (act) {
    case 0:
      launch<linear_epilogue_kernel<T, 0>>(grid, block, 0, stream, z, bias, pre, y, pre_f32, rows, cols, vec);
      break;
    case 1:
      launch<linear_epilogue_kernel<T, 1>>(grid, block, 0, stream, z, bias, pre, y, pre_f32, rows, cols, vec);
      break;
    default:
      launch<linear_epilogue_kernel<T, 2>>(grid, block, 0, stream, z, bias, pre, y, pre_f32, rows, cols, vec);
      break;
  }
}

// --- act' -----------------------------------------------------------------------------------------

/// dpre = act'(a) * dy; f32: float4 over the aligned body, scalar over the tail.
template <typename T, int Act>
static __global__ void linear_act_backward_kernel(const T* __restrict__ dy, const T* __restrict__ a,
                                                  T* __restrict__ dpre, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t first = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  int64_t body = 0;
  if constexpr (std::is_same<T, float>::value) {
    if (aligned16(dy) && aligned16(a) && aligned16(dpre)) {
      body = n / 4 * 4;
      for (int64_t q = first; q < n / 4; q += stride) {
        const float4 g = reinterpret_cast<const float4*>(dy)[q];
        const float4 v = reinterpret_cast<const float4*>(a)[q];
        reinterpret_cast<float4*>(dpre)[q] = make_float4(apply_act_grad<Act>(g.x, v.x), apply_act_grad<Act>(g.y, v.y),
                                                         apply_act_grad<Act>(g.z, v.z), apply_act_grad<Act>(g.w, v.w));
      }
    }
  }
  for (int64_t i = body + first; i < n; i += stride)
    dpre[i] = from_float<T>(apply_act_grad<Act>(to_float(dy[i]), to_float(a[i])));
}

template <typename T>
void linear_act_backward_cuda(const T* dy, const T* a, T* dpre, int64_t n, int act, cudaStream_t stream) {
  if (n == 0) return;
  const int block = 256;
  const unsigned grid = grid_for(std::is_same<T, float>::value ? (n + 3) / 4 : n, block);
  if (act == 1)
    launch<linear_act_backward_kernel<T, 1>>(grid, block, 0, stream, dy, a, dpre, n);
  else
    launch<linear_act_backward_kernel<T, 2>>(grid, block, 0, stream, dy, a, dpre, n);
}

// --- relu bit-masks (fallbacks for the RELU_AUX / DRELU epilogues) ---------------------------------

/// One thread per mask byte: 8 columns of one row.
template <typename T>
static __global__ void relu_mask_from_output_kernel(const T* __restrict__ y, uint8_t* __restrict__ mask, int64_t rows,
                                                    int64_t cols, int64_t ld) {
  const int64_t n = rows * ld;
  for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < n; b += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = b / ld, j0 = (b % ld) * 8;
    unsigned bits = 0;
    for (int k = 0; k < 8; ++k)
      if (j0 + k < cols && to_float(y[r * cols + j0 + k]) > 0.f) bits |= 1u << k;
    mask[b] = static_cast<uint8_t>(bits);
  }
}

template <typename T>
static __global__ void relu_mask_apply_kernel(T* __restrict__ x, const uint8_t* __restrict__ mask, int64_t rows,
                                              int64_t cols, int64_t ld) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / cols, j = i % cols;
    if (!((mask[r * ld + j / 8] >> (j % 8)) & 1u)) x[i] = from_float<T>(0.f);
  }
}

template <typename T>
void relu_mask_from_output_cuda(const T* y, uint8_t* mask, int64_t rows, int64_t cols, int64_t ld,
                                cudaStream_t stream) {
  if (rows == 0 || ld == 0) return;
  const int block = 256;
  launch<relu_mask_from_output_kernel<T>>(grid_for(rows * ld, block), block, 0, stream, y, mask, rows, cols, ld);
}

template <typename T>
void relu_mask_apply_cuda(T* x, const uint8_t* mask, int64_t rows, int64_t cols, int64_t ld, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return;
  const int block = 256;
  launch<relu_mask_apply_kernel<T>>(grid_for(rows * cols, block), block, 0, stream, x, mask, rows, cols, ld);
}

// --- bias gradient ------------------------------------------------------------------------------

constexpr int kBgradCols = 32;  // columns per block (threadIdx.x): coalesced row reads
constexpr int kBgradRows = 8;   // row slices per block (threadIdx.y)

/// db[c] = Σ_r dpre[r, c]: thread (x, y) sums rows y, y+8, ... of column c, then row 0 of the block
/// adds the 8 partial sums in order. Fixed order everywhere: the result is the same run to run.
template <typename In, typename Out>
static __global__ void bias_grad_kernel(const In* __restrict__ dpre, Out* __restrict__ db, int64_t rows, int64_t cols) {
  __shared__ float partial[kBgradRows][kBgradCols + 1];
  const int64_t c = blockIdx.x * (int64_t)kBgradCols + threadIdx.x;
  float s = 0.f;
  if (c < cols)
    for (int64_t r = threadIdx.y; r < rows; r += kBgradRows) s += to_float(dpre[r * cols + c]);
  partial[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.f;
    for (int k = 0; k < kBgradRows; ++k) t += partial[k][threadIdx.x];
    db[c] = from_float<Out>(t);
  }
}

template <typename In, typename Out>
void bias_grad_cuda(const In* dpre, Out* db, int64_t rows, int64_t cols, cudaStream_t stream) {
  static_assert(std::is_same<In, Out>::value || std::is_same<In, float>::value || std::is_same<Out, float>::value,
                "dpre is Out or float, or db is float (an f32 master's gradient)");
  if (cols == 0) return;
  const unsigned grid = static_cast<unsigned>((cols + kBgradCols - 1) / kBgradCols);
  launch<bias_grad_kernel<In, Out>>(grid, dim3(kBgradCols, kBgradRows), 0, stream, dpre, db, rows, cols);
}

// --- instantiations -------------------------------------------------------------------------------

#define CUDL_MATMUL_KERNELS(T)                                                                                        \
  template void linear_epilogue_cuda<T>(const float*, const T*, T*, T*, float*, int64_t, int64_t, int, cudaStream_t); \
  template void linear_act_backward_cuda<T>(const T*, const T*, T*, int64_t, int, cudaStream_t);                      \
  template void relu_mask_from_output_cuda<T>(const T*, uint8_t*, int64_t, int64_t, int64_t, cudaStream_t);           \
  template void relu_mask_apply_cuda<T>(T*, const uint8_t*, int64_t, int64_t, int64_t, cudaStream_t);                 \
  template void bias_grad_cuda<T, T>(const T*, T*, int64_t, int64_t, cudaStream_t);
CUDL_MATMUL_KERNELS(float)
CUDL_MATMUL_KERNELS(__nv_bfloat16)
CUDL_MATMUL_KERNELS(__half)
#undef CUDL_MATMUL_KERNELS
template void bias_grad_cuda<float, __nv_bfloat16>(const float*, __nv_bfloat16*, int64_t, int64_t, cudaStream_t);
template void bias_grad_cuda<float, __half>(const float*, __half*, int64_t, int64_t, cudaStream_t);
template void bias_grad_cuda<__nv_bfloat16, float>(const __nv_bfloat16*, float*, int64_t, int64_t, cudaStream_t);
template void bias_grad_cuda<__half, float>(const __half*, float*, int64_t, int64_t, cudaStream_t);

}  // namespace cudl::kernels
