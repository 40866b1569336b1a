// kernels/conv.cu — the im2col convolution engine's kernels (im2col, deterministic gather col2im)
// and the conv epilogue (bias + ReLU) and bias-gradient (per-channel reduction) kernels, each generic
// over the storage type (f32, bf16, f16) with fp32 math and one rounding per store.
#include "kernels/common.cuh"
#include "kernels/conv.cuh"

namespace cudl::kernels {

// ---------------------------------------------------------------------------------------------
// device helpers (the math)
// ---------------------------------------------------------------------------------------------

/// The input element im2col reads for column entry (n, c, r, s, p, q), or 0 in the padding.
template <typename T>
__device__ __forceinline__ T im2col_value(const T* __restrict__ x, const ConvKernelGeometry& g, int64_t n, int64_t c,
                                          int64_t r, int64_t s, int64_t p, int64_t q) {
  const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h;
  const int64_t iw = q * g.stride_w - g.pad_w + s * g.dil_w;
  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return from_float<T>(0.f);
  return x[((n * g.C + c) * g.H + ih) * g.W + iw];
}

/// Sum of every column entry that im2col copied from input element (n, c, h, w), in (r, s) order.
__device__ __forceinline__ float col2im_gather(const float* __restrict__ col, const ConvKernelGeometry& g, int64_t n,
                                               int64_t c, int64_t h, int64_t w) {
  const int64_t PQ = g.P * g.Q;
  const float* col_c = col + (n * g.C + c) * g.R * g.S * PQ;
  float sum = 0.f;
  for (int64_t r = 0; r < g.R; ++r) {
    const int64_t hh = h + g.pad_h - r * g.dil_h;  // = p * stride_h for a contributing output row p
    if (hh < 0) break;                             // decreases with r
    if (hh % g.stride_h != 0) continue;
    const int64_t p = hh / g.stride_h;
    if (p >= g.P) continue;
    for (int64_t s = 0; s < g.S; ++s) {
      const int64_t ww = w + g.pad_w - s * g.dil_w;
      if (ww < 0) break;
      if (ww % g.stride_w != 0) continue;
      const int64_t q = ww / g.stride_w;
      if (q >= g.Q) continue;
      sum += col_c[(r * g.S + s) * PQ + p * g.Q + q];
    }
  }
  return sum;
}

/// act(v + b): ReLU (NaN stays NaN) or identity.
__device__ __forceinline__ float bias_act(float v, float b, int relu) {
  const float t = v + b;
  return relu ? (t < 0.f ? 0.f : t) : t;
}

// ---------------------------------------------------------------------------------------------
// kernels
// ---------------------------------------------------------------------------------------------

template <typename T>
static __global__ void conv2d_im2col_kernel(const T* __restrict__ x, T* __restrict__ col, ConvKernelGeometry g,
                                            int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = i;
    const int64_t q = t % g.Q;
    t /= g.Q;
    const int64_t p = t % g.P;
    t /= g.P;
    const int64_t s = t % g.S;
    t /= g.S;
    const int64_t r = t % g.R;
    t /= g.R;
    const int64_t c = t % g.C;
    const int64_t n = t / g.C;
    col[i] = im2col_value(x, g, n, c, r, s, p, q);
  }
}

template <typename T>
static __global__ void conv2d_col2im_kernel(const float* __restrict__ col, T* __restrict__ dx,
                                            const T* __restrict__ bias, ConvKernelGeometry g, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = i;
    const int64_t w = t % g.W;
    t /= g.W;
    const int64_t h = t % g.H;
    t /= g.H;
    const int64_t c = t % g.C;
    const int64_t n = t / g.C;
    const float v = col2im_gather(col, g, n, c, h, w);
    dx[i] = from_float<T>(bias ? v + to_float(bias[c]) : v);
  }
}

/// y = act(in + bias) with `in` f32 or the storage type T of y and bias; in may be y (in place).
template <typename In, typename T>
static __global__ void conv2d_bias_act_kernel(const In* in, T* y, const T* __restrict__ bias, int64_t K, int64_t HW,
                                              int relu, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const float b = bias ? to_float(bias[(i / HW) % K]) : 0.f;
    y[i] = from_float<T>(bias_act(to_float(in[i]), b, relu));
  }
}

/// Vectorised form: HW % 4 == 0 and y 16-byte aligned, so the 4 lanes of a float4 share a channel.
static __global__ void conv2d_bias_act_vec4_kernel(float4* __restrict__ y, const float* __restrict__ bias, int64_t K,
                                                   int64_t HW, int relu, int64_t total4) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total4; i += (int64_t)gridDim.x * blockDim.x) {
    const float b = bias ? bias[(i * 4 / HW) % K] : 0.f;
    float4 v = y[i];
    v.x = bias_act(v.x, b, relu);
    v.y = bias_act(v.y, b, relu);
    v.z = bias_act(v.z, b, relu);
    v.w = bias_act(v.w, b, relu);
    y[i] = v;
  }
}

/// One block per channel k (grid-stride over channels): each thread sums a fixed strided subset of
/// (n, hw), then block_reduce_sum combines the block's partial sums.
template <typename T>
static __global__ void conv2d_bias_grad_kernel(const T* __restrict__ dy, T* __restrict__ db, int64_t N, int64_t K,
                                               int64_t HW) {
  const int64_t count = N * HW;
  for (int64_t k = blockIdx.x; k < K; k += gridDim.x) {
    float sum = 0.f;
    for (int64_t j = threadIdx.x; j < count; j += blockDim.x) {
      const int64_t n = j / HW, hw = j % HW;
      sum += to_float(dy[(n * K + k) * HW + hw]);
    }
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) db[k] = from_float<T>(sum);
  }
}

// ---------------------------------------------------------------------------------------------
// launchers
// ---------------------------------------------------------------------------------------------

void conv2d_im2col_cuda(const void* x, void* col, Storage type, const ConvKernelGeometry& g, int64_t n_images,
                        cudaStream_t stream) {
  const int64_t total = n_images * g.C * g.R * g.S * g.P * g.Q;
  if (total == 0) return;
  const int block = 256;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<conv2d_im2col_kernel<T>>(grid_for(total, block), block, 0, stream, static_cast<const T*>(x),
                                    static_cast<T*>(col), g, total);
  });
}

void conv2d_col2im_cuda(const float* col, void* dx, Storage type, const ConvKernelGeometry& g, int64_t n_images,
                        const void* bias, cudaStream_t stream) {
  const int64_t total = n_images * g.C * g.H * g.W;
  if (total == 0) return;
  const int block = 256;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<conv2d_col2im_kernel<T>>(grid_for(total, block), block, 0, stream, col, static_cast<T*>(dx),
                                    static_cast<const T*>(bias), g, total);
  });
}

void conv2d_bias_act_cuda(const void* in, bool in_f32, void* y, Storage type, const void* bias, int64_t N, int64_t K,
                          int64_t HW, int relu, cudaStream_t stream) {
  const int64_t total = N * K * HW;
  if (total == 0 || (!bias && !relu && in == y)) return;
  const int block = 256;
  if (type == Storage::kF32 && in == y && HW % 4 == 0 && aligned16(y)) {
    const int64_t total4 = total / 4;
    launch<conv2d_bias_act_vec4_kernel>(grid_for(total4, block), block, 0, stream, static_cast<float4*>(y),
                                        static_cast<const float*>(bias), K, HW, relu, total4);
    return;
  }
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    if (in_f32)
      launch<conv2d_bias_act_kernel<float, T>>(grid_for(total, block), block, 0, stream, static_cast<const float*>(in),
                                               static_cast<T*>(y), static_cast<const T*>(bias), K, HW, relu, total);
    else
      launch<conv2d_bias_act_kernel<T, T>>(grid_for(total, block), block, 0, stream, static_cast<const T*>(in),
                                           static_cast<T*>(y), static_cast<const T*>(bias), K, HW, relu, total);
  });
}

void conv2d_bias_grad_cuda(const void* dy, void* db, Storage type, int64_t N, int64_t K, int64_t HW,
                           cudaStream_t stream) {
  if (K == 0) return;
  const int block = 256;
  const unsigned grid = static_cast<unsigned>(K < 65535 ? K : 65535);
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<conv2d_bias_grad_kernel<T>>(grid, block, 0, stream, static_cast<const T*>(dy), static_cast<T*>(db), N, K,
                                       HW);
  });
}

}  // namespace cudl::kernels
