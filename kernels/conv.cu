// kernels/conv.cu — the im2col convolution engine's kernels (im2col, deterministic gather col2im)
// and the conv epilogue (bias + ReLU) and bias-gradient (per-channel reduction) kernels.
#include "kernels/common.cuh"
#include "kernels/conv.cuh"

namespace cudl::kernels {

// ---------------------------------------------------------------------------------------------
// device helpers (the math)
// ---------------------------------------------------------------------------------------------

/// The input element im2col reads for column entry (n, c, r, s, p, q), or 0 in the padding.
__device__ __forceinline__ float im2col_value(const float* __restrict__ x, const ConvKernelGeometry& g, int64_t n,
                                              int64_t c, int64_t r, int64_t s, int64_t p, int64_t q) {
  const int64_t ih = p * g.stride_h - g.pad_h + r * g.dil_h;
  const int64_t iw = q * g.stride_w - g.pad_w + s * g.dil_w;
  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) return 0.f;
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

static __global__ void conv2d_im2col_kernel(const float* __restrict__ x, float* __restrict__ col, ConvKernelGeometry g,
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

static __global__ void conv2d_col2im_kernel(const float* __restrict__ col, float* __restrict__ dx, ConvKernelGeometry g,
                                            int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = i;
    const int64_t w = t % g.W;
    t /= g.W;
    const int64_t h = t % g.H;
    t /= g.H;
    const int64_t c = t % g.C;
    const int64_t n = t / g.C;
    dx[i] = col2im_gather(col, g, n, c, h, w);
  }
}

static __global__ void conv2d_bias_act_kernel(float* __restrict__ y, const float* __restrict__ bias, int64_t K,
                                              int64_t HW, int relu, int64_t total) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const float b = bias ? bias[(i / HW) % K] : 0.f;
    y[i] = bias_act(y[i], b, relu);
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
static __global__ void conv2d_bias_grad_kernel(const float* __restrict__ dy, float* __restrict__ db, int64_t N,
                                               int64_t K, int64_t HW) {
  const int64_t count = N * HW;
  for (int64_t k = blockIdx.x; k < K; k += gridDim.x) {
    float sum = 0.f;
    for (int64_t j = threadIdx.x; j < count; j += blockDim.x) {
      const int64_t n = j / HW, hw = j % HW;
      sum += dy[(n * K + k) * HW + hw];
    }
    sum = block_reduce_sum(sum);
    if (threadIdx.x == 0) db[k] = sum;
  }
}

// ---------------------------------------------------------------------------------------------
// launchers
// ---------------------------------------------------------------------------------------------

void conv2d_im2col_cuda(const float* x, float* col, const ConvKernelGeometry& g, int64_t n_images,
                        cudaStream_t stream) {
  const int64_t total = n_images * g.C * g.R * g.S * g.P * g.Q;
  if (total == 0) return;
  const int block = 256;
  launch<conv2d_im2col_kernel>(grid_for(total, block), block, 0, stream, x, col, g, total);
}

void conv2d_col2im_cuda(const float* col, float* dx, const ConvKernelGeometry& g, int64_t n_images,
                        cudaStream_t stream) {
  const int64_t total = n_images * g.C * g.H * g.W;
  if (total == 0) return;
  const int block = 256;
  launch<conv2d_col2im_kernel>(grid_for(total, block), block, 0, stream, col, dx, g, total);
}

void conv2d_bias_act_cuda(float* y, const float* bias, int64_t N, int64_t K, int64_t HW, int relu,
                          cudaStream_t stream) {
  const int64_t total = N * K * HW;
  if (total == 0 || (!bias && !relu)) return;
  const int block = 256;
  if (HW % 4 == 0 && aligned16(y)) {
    const int64_t total4 = total / 4;
    launch<conv2d_bias_act_vec4_kernel>(grid_for(total4, block), block, 0, stream, reinterpret_cast<float4*>(y), bias,
                                        K, HW, relu, total4);
  } else {
    launch<conv2d_bias_act_kernel>(grid_for(total, block), block, 0, stream, y, bias, K, HW, relu, total);
  }
}

void conv2d_bias_grad_cuda(const float* dy, float* db, int64_t N, int64_t K, int64_t HW, cudaStream_t stream) {
  if (K == 0) return;
  const int block = 256;
  const unsigned grid = static_cast<unsigned>(K < 65535 ? K : 65535);
  launch<conv2d_bias_grad_kernel>(grid, block, 0, stream, dy, db, N, K, HW);
}

}  // namespace cudl::kernels
