// kernels/norm.cu — batch norm (block per channel for (N, C, spatial), 32-channel tiles for (N, C))
// and layer norm (warp per row up to kLnWarpMaxD, block per row beyond). Fixed-order sums, no atomics.
#include <math.h>

#include "kernels/common.cuh"
#include "kernels/norm.cuh"

namespace cudl::kernels {

namespace {

constexpr int kNormBlock = 256;  // threads per block, a multiple of 32
constexpr int kNormWarps = kNormBlock / kWarpSize;
constexpr int64_t kLnWarpMaxD = 1024;       // layer norm rows up to this length: one warp per row
constexpr int kColTile = 32, kColRows = 8;  // dgamma/dbeta: 32 columns x 8 row lanes per block

/// Element k of channel c's values, k in [0, n * spatial): x[(k / spatial * C + c) * spatial + k % spatial].
__device__ __forceinline__ int64_t channel_index(int64_t k, int64_t c, int64_t channels, int64_t spatial) {
  const int64_t n = k / spatial;
  return (n * channels + c) * spatial + (k - n * spatial);
}

// ---- batch norm ------------------------------------------------------------------------------

/// One block per channel: mean, then centred sum of squares (two passes for accuracy), then y.
__global__ void __launch_bounds__(kNormBlock)
    batch_norm_train_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                            const float* __restrict__ beta, float* __restrict__ running_mean,
                            float* __restrict__ running_var, float* __restrict__ y, float* __restrict__ saved_mean,
                            float* __restrict__ saved_invstd, int64_t n, int64_t channels, int64_t spatial, float eps,
                            float momentum) {
  const int64_t c = blockIdx.x;
  const int64_t m = n * spatial;
  float acc = 0.f;
  for (int64_t k = threadIdx.x; k < m; k += blockDim.x) acc += x[channel_index(k, c, channels, spatial)];
  const float mean = block_reduce_sum<WarpResults::kSerial>(acc) / static_cast<float>(m);
  acc = 0.f;
  for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
    const float d = x[channel_index(k, c, channels, spatial)] - mean;
    acc += d * d;
  }
  const float sq = block_reduce_sum<WarpResults::kSerial>(acc);
  const float invstd = 1.f / sqrtf(sq / static_cast<float>(m) + eps);
  const float g = gamma ? gamma[c] * invstd : invstd, b = beta ? beta[c] : 0.f;
  for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
    const int64_t i = channel_index(k, c, channels, spatial);
    y[i] = (x[i] - mean) * g + b;
  }
  if (threadIdx.x == 0) {
    if (saved_mean) saved_mean[c] = mean;
    if (saved_invstd) saved_invstd[c] = invstd;
    if (running_mean) {
      const float unbiased = m > 1 ? sq / static_cast<float>(m - 1) : 0.f;
      running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean;
      running_var[c] = (1.f - momentum) * running_var[c] + momentum * unbiased;
    }
  }
}

__global__ void batch_norm_inference_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                            const float* __restrict__ beta, const float* __restrict__ running_mean,
                                            const float* __restrict__ running_var, float* __restrict__ y, int64_t total,
                                            int64_t channels, int64_t spatial, float eps) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = (i / spatial) % channels;
    const float invstd = 1.f / sqrtf(running_var[c] + eps);
    const float g = gamma ? gamma[c] * invstd : invstd;
    y[i] = (x[i] - running_mean[c]) * g + (beta ? beta[c] : 0.f);
  }
}

/// One block per channel: sum(dy), sum(dy * xhat), then dx = g invstd (dy - sum_dy/M - xhat sum_dy_xhat/M).
__global__ void __launch_bounds__(kNormBlock)
    batch_norm_backward_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                               const float* __restrict__ saved_mean, const float* __restrict__ saved_invstd,
                               const float* __restrict__ dy, float* __restrict__ dx, float* __restrict__ dgamma,
                               float* __restrict__ dbeta, int64_t n, int64_t channels, int64_t spatial) {
  const int64_t c = blockIdx.x;
  const int64_t m = n * spatial;
  const float mean = saved_mean[c], invstd = saved_invstd[c];
  float acc_dy = 0.f, acc_dyx = 0.f;
  for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
    const int64_t i = channel_index(k, c, channels, spatial);
    const float d = dy[i];
    acc_dy += d;
    acc_dyx += d * (x[i] - mean) * invstd;
  }
  const float sum_dy = block_reduce_sum<WarpResults::kSerial>(acc_dy);
  const float sum_dyx = block_reduce_sum<WarpResults::kSerial>(acc_dyx);
  if (threadIdx.x == 0) {
    if (dgamma) dgamma[c] = sum_dyx;
    if (dbeta) dbeta[c] = sum_dy;
  }
  if (!dx) return;
  const float k_scale = (gamma ? gamma[c] : 1.f) * invstd;
  const float mean_dy = sum_dy / static_cast<float>(m), mean_dyx = sum_dyx / static_cast<float>(m);
  for (int64_t k = threadIdx.x; k < m; k += blockDim.x) {
    const int64_t i = channel_index(k, c, channels, spatial);
    const float xhat = (x[i] - mean) * invstd;
    dx[i] = k_scale * (dy[i] - mean_dy - xhat * mean_dyx);
  }
}

/// Sum of `v` over the 8 row lanes of each column of a (32, 8) block, returned to every thread of
/// the column; added in row-lane order 0..7 (fixed). Every thread of the block must call it.
__device__ __forceinline__ float column_allreduce_sum(float v, float (*part)[kColTile + 1], float* total) {
  part[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  if (threadIdx.y == 0) {
    float s = 0.f;
    for (int k = 0; k < kColRows; ++k) s += part[k][threadIdx.x];
    total[threadIdx.x] = s;
  }
  __syncthreads();
  return total[threadIdx.x];  // the next call writes `total` only after its first barrier
}

/// x (N, C) (spatial == 1): a (32, 8) block owns 32 channels, so each row segment is read
/// coalesced; same passes as batch_norm_train_kernel.
__global__ void __launch_bounds__(kColTile* kColRows)
    batch_norm_train_rows_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                 const float* __restrict__ beta, float* __restrict__ running_mean,
                                 float* __restrict__ running_var, float* __restrict__ y, float* __restrict__ saved_mean,
                                 float* __restrict__ saved_invstd, int64_t n, int64_t channels, float eps,
                                 float momentum) {
  __shared__ float part[kColRows][kColTile + 1];
  __shared__ float total[kColTile];
  const int64_t c = blockIdx.x * static_cast<int64_t>(kColTile) + threadIdx.x;
  const bool live = c < channels;
  float acc = 0.f;
  if (live)
    for (int64_t r = threadIdx.y; r < n; r += kColRows) acc += x[r * channels + c];
  const float mean = column_allreduce_sum(acc, part, total) / static_cast<float>(n);
  acc = 0.f;
  if (live)
    for (int64_t r = threadIdx.y; r < n; r += kColRows) {
      const float d = x[r * channels + c] - mean;
      acc += d * d;
    }
  const float sq = column_allreduce_sum(acc, part, total);
  if (!live) return;  // no barrier follows
  const float invstd = 1.f / sqrtf(sq / static_cast<float>(n) + eps);
  const float g = gamma ? gamma[c] * invstd : invstd, b = beta ? beta[c] : 0.f;
  for (int64_t r = threadIdx.y; r < n; r += kColRows) y[r * channels + c] = (x[r * channels + c] - mean) * g + b;
  if (threadIdx.y == 0) {
    if (saved_mean) saved_mean[c] = mean;
    if (saved_invstd) saved_invstd[c] = invstd;
    if (running_mean) {
      const float unbiased = n > 1 ? sq / static_cast<float>(n - 1) : 0.f;
      running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean;
      running_var[c] = (1.f - momentum) * running_var[c] + momentum * unbiased;
    }
  }
}

/// Backward for x (N, C), tiled like batch_norm_train_rows_kernel.
__global__ void __launch_bounds__(kColTile* kColRows)
    batch_norm_backward_rows_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                    const float* __restrict__ saved_mean, const float* __restrict__ saved_invstd,
                                    const float* __restrict__ dy, float* __restrict__ dx, float* __restrict__ dgamma,
                                    float* __restrict__ dbeta, int64_t n, int64_t channels) {
  __shared__ float part[kColRows][kColTile + 1];
  __shared__ float total[kColTile];
  const int64_t c = blockIdx.x * static_cast<int64_t>(kColTile) + threadIdx.x;
  const bool live = c < channels;
  const float mean = live ? saved_mean[c] : 0.f, invstd = live ? saved_invstd[c] : 0.f;
  float acc_dy = 0.f, acc_dyx = 0.f;
  if (live)
    for (int64_t r = threadIdx.y; r < n; r += kColRows) {
      const float d = dy[r * channels + c];
      acc_dy += d;
      acc_dyx += d * (x[r * channels + c] - mean) * invstd;
    }
  const float sum_dy = column_allreduce_sum(acc_dy, part, total);
  const float sum_dyx = column_allreduce_sum(acc_dyx, part, total);
  if (!live) return;  // no barrier follows
  if (threadIdx.y == 0) {
    if (dgamma) dgamma[c] = sum_dyx;
    if (dbeta) dbeta[c] = sum_dy;
  }
  if (!dx) return;
  const float k_scale = (gamma ? gamma[c] : 1.f) * invstd;
  const float mean_dy = sum_dy / static_cast<float>(n), mean_dyx = sum_dyx / static_cast<float>(n);
  for (int64_t r = threadIdx.y; r < n; r += kColRows) {
    const int64_t i = r * channels + c;
    dx[i] = k_scale * (dy[i] - mean_dy - (x[i] - mean) * invstd * mean_dyx);
  }
}

// ---- layer norm ------------------------------------------------------------------------------

/// Row statistics and output for one row, reduced by `Reduce` (a warp or the whole block).
template <typename Reduce>
__device__ __forceinline__ void layer_norm_row(const float* __restrict__ xr, const float* __restrict__ gamma,
                                               const float* __restrict__ beta, float* __restrict__ yr, int64_t d,
                                               float eps, int first, int step, Reduce reduce, float& mean_out,
                                               float& rstd_out) {
  float acc = 0.f;
  for (int64_t j = first; j < d; j += step) acc += xr[j];
  const float mean = reduce(acc) / static_cast<float>(d);
  acc = 0.f;
  for (int64_t j = first; j < d; j += step) {
    const float t = xr[j] - mean;
    acc += t * t;
  }
  const float rstd = 1.f / sqrtf(reduce(acc) / static_cast<float>(d) + eps);
  for (int64_t j = first; j < d; j += step) {
    const float v = (xr[j] - mean) * rstd;
    yr[j] = (gamma ? v * gamma[j] : v) + (beta ? beta[j] : 0.f);
  }
  mean_out = mean;
  rstd_out = rstd;
}

struct WarpSum {
  __device__ float operator()(float v) const { return warp_reduce_sum(v); }
};
struct BlockSum {
  __device__ float operator()(float v) const { return block_reduce_sum<WarpResults::kSerial>(v); }
};

/// One warp per row (rows of at most kLnWarpMaxD).
__global__ void __launch_bounds__(kNormBlock)
    layer_norm_warp_kernel(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                           float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int64_t rows,
                           int64_t d, float eps) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kNormWarps) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kNormWarps) {
    float mu, rs;
    layer_norm_row(x + r * d, gamma, beta, y + r * d, d, eps, lane, kWarpSize, WarpSum{}, mu, rs);
    if (lane == 0 && mean) mean[r] = mu, rstd[r] = rs;
  }
}

/// One block per row (long rows).
__global__ void __launch_bounds__(kNormBlock)
    layer_norm_block_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                            const float* __restrict__ beta, float* __restrict__ y, float* __restrict__ mean,
                            float* __restrict__ rstd, int64_t rows, int64_t d, float eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float mu, rs;
    layer_norm_row(x + r * d, gamma, beta, y + r * d, d, eps, threadIdx.x, blockDim.x, BlockSum{}, mu, rs);
    if (threadIdx.x == 0 && mean) mean[r] = mu, rstd[r] = rs;
  }
}

/// dx of one row: g = dy gamma; dx = rstd (g - mean(g) - xhat mean(g xhat)).
template <typename Reduce>
__device__ __forceinline__ void layer_norm_backward_row(const float* __restrict__ xr, const float* __restrict__ gamma,
                                                        const float* __restrict__ dyr, float* __restrict__ dxr,
                                                        float mean, float rstd, int64_t d, int first, int step,
                                                        Reduce reduce) {
  float acc_g = 0.f, acc_gx = 0.f;
  for (int64_t j = first; j < d; j += step) {
    const float g = gamma ? dyr[j] * gamma[j] : dyr[j];
    acc_g += g;
    acc_gx += g * (xr[j] - mean) * rstd;
  }
  const float inv_d = 1.f / static_cast<float>(d);
  const float mean_g = reduce(acc_g) * inv_d;
  const float mean_gx = reduce(acc_gx) * inv_d;
  for (int64_t j = first; j < d; j += step) {
    const float g = gamma ? dyr[j] * gamma[j] : dyr[j];
    const float xhat = (xr[j] - mean) * rstd;
    dxr[j] = rstd * (g - mean_g - xhat * mean_gx);
  }
}

__global__ void __launch_bounds__(kNormBlock)
    layer_norm_backward_warp_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    const float* __restrict__ dy, float* __restrict__ dx, int64_t rows, int64_t d) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kNormWarps) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kNormWarps)
    layer_norm_backward_row(x + r * d, gamma, dy + r * d, dx + r * d, mean[r], rstd[r], d, lane, kWarpSize, WarpSum{});
}

__global__ void __launch_bounds__(kNormBlock)
    layer_norm_backward_block_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                     const float* __restrict__ mean, const float* __restrict__ rstd,
                                     const float* __restrict__ dy, float* __restrict__ dx, int64_t rows, int64_t d) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    layer_norm_backward_row(x + r * d, gamma, dy + r * d, dx + r * d, mean[r], rstd[r], d, threadIdx.x, blockDim.x,
                            BlockSum{});
}

/// dgamma[j] = sum_r dy xhat, dbeta[j] = sum_r dy: block (32, 8) owns 32 columns; row lane ty sums
/// rows ty, ty + 8, ...; the 8 partials are added in order 0..7. Coalesced along the row.
__global__ void __launch_bounds__(kColTile* kColRows)
    layer_norm_param_grad_kernel(const float* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ rstd, const float* __restrict__ dy,
                                 float* __restrict__ dgamma, float* __restrict__ dbeta, int64_t rows, int64_t d) {
  __shared__ float part_g[kColRows][kColTile + 1];
  __shared__ float part_b[kColRows][kColTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = blockIdx.x * static_cast<int64_t>(kColTile) + tx;
  float acc_g = 0.f, acc_b = 0.f;
  if (j < d) {
    for (int64_t r = ty; r < rows; r += kColRows) {
      const float g = dy[r * d + j];
      acc_g += g * (x[r * d + j] - mean[r]) * rstd[r];
      acc_b += g;
    }
  }
  part_g[ty][tx] = acc_g;
  part_b[ty][tx] = acc_b;
  __syncthreads();
  if (ty == 0 && j < d) {
    float sg = 0.f, sb = 0.f;
    for (int k = 0; k < kColRows; ++k) sg += part_g[k][tx], sb += part_b[k][tx];
    if (dgamma) dgamma[j] = sg;
    if (dbeta) dbeta[j] = sb;
  }
}

unsigned warp_row_blocks(int64_t rows) { return grid_for((rows + kNormWarps - 1) / kNormWarps, 1); }
unsigned block_row_blocks(int64_t rows) { return grid_for(rows, 1); }

}  // namespace

void batch_norm_train_cuda(const float* x, const float* gamma, const float* beta, float* running_mean,
                           float* running_var, float* y, float* saved_mean, float* saved_invstd, int64_t n, int64_t c,
                           int64_t spatial, float eps, float momentum, cudaStream_t stream) {
  if (spatial == 1) {  // (N, C): channel tiles, coalesced along rows
    const unsigned blocks = static_cast<unsigned>((c + kColTile - 1) / kColTile);
    launch<batch_norm_train_rows_kernel>(blocks, dim3(kColTile, kColRows), 0, stream, x, gamma, beta, running_mean,
                                         running_var, y, saved_mean, saved_invstd, n, c, eps, momentum);
    return;
  }
  launch<batch_norm_train_kernel>(static_cast<unsigned>(c), kNormBlock, 0, stream, x, gamma, beta, running_mean,
                                  running_var, y, saved_mean, saved_invstd, n, c, spatial, eps, momentum);
}

void batch_norm_inference_cuda(const float* x, const float* gamma, const float* beta, const float* running_mean,
                               const float* running_var, float* y, int64_t n, int64_t c, int64_t spatial, float eps,
                               cudaStream_t stream) {
  const int64_t total = n * c * spatial;
  launch<batch_norm_inference_kernel>(grid_for(total, kNormBlock), kNormBlock, 0, stream, x, gamma, beta, running_mean,
                                      running_var, y, total, c, spatial, eps);
}

void batch_norm_backward_cuda(const float* x, const float* gamma, const float* saved_mean, const float* saved_invstd,
                              const float* dy, float* dx, float* dgamma, float* dbeta, int64_t n, int64_t c,
                              int64_t spatial, cudaStream_t stream) {
  if (spatial == 1) {  // (N, C): channel tiles, coalesced along rows
    const unsigned blocks = static_cast<unsigned>((c + kColTile - 1) / kColTile);
    launch<batch_norm_backward_rows_kernel>(blocks, dim3(kColTile, kColRows), 0, stream, x, gamma, saved_mean,
                                            saved_invstd, dy, dx, dgamma, dbeta, n, c);
    return;
  }
  launch<batch_norm_backward_kernel>(static_cast<unsigned>(c), kNormBlock, 0, stream, x, gamma, saved_mean,
                                     saved_invstd, dy, dx, dgamma, dbeta, n, c, spatial);
}

void layer_norm_cuda(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* rstd,
                     int64_t rows, int64_t d, float eps, cudaStream_t stream) {
  if (rows == 0) return;
  if (d <= kLnWarpMaxD) {
    launch<layer_norm_warp_kernel>(warp_row_blocks(rows), kNormBlock, 0, stream, x, gamma, beta, y, mean, rstd, rows, d,
                                   eps);
  } else {
    launch<layer_norm_block_kernel>(block_row_blocks(rows), kNormBlock, 0, stream, x, gamma, beta, y, mean, rstd, rows,
                                    d, eps);
  }
}

void layer_norm_backward_cuda(const float* x, const float* gamma, const float* mean, const float* rstd, const float* dy,
                              float* dx, float* dgamma, float* dbeta, int64_t rows, int64_t d, cudaStream_t stream) {
  if (dx && rows > 0) {
    if (d <= kLnWarpMaxD) {
      launch<layer_norm_backward_warp_kernel>(warp_row_blocks(rows), kNormBlock, 0, stream, x, gamma, mean, rstd, dy,
                                              dx, rows, d);
    } else {
      launch<layer_norm_backward_block_kernel>(block_row_blocks(rows), kNormBlock, 0, stream, x, gamma, mean, rstd, dy,
                                               dx, rows, d);
    }
  }
  if (dgamma || dbeta) {
    const unsigned blocks = static_cast<unsigned>((d + kColTile - 1) / kColTile);
    launch<layer_norm_param_grad_kernel>(blocks, dim3(kColTile, kColRows), 0, stream, x, mean, rstd, dy, dgamma, dbeta,
                                         rows, d);
  }
}

}  // namespace cudl::kernels
