// kernels/norm.cu — batch norm ((N, C, spatial): each channel split across blocks, fixed-order
// partial sums; (N, C): 32-channel tiles)
// and layer norm (warp per row up to kLnWarpMaxD, block per row beyond). Fixed-order sums, no atomics.
// Batch and layer norm's x, y, dy, dx are of the storage type (f32, bf16, f16): fp32 math and
// statistics, gamma/beta/running/saved/row statistics and dgamma/dbeta f32, one rounding per stored
// element.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <algorithm>
#include <math.h>

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/norm.cuh"
#include "ops/norm.hpp"

namespace cudl::kernels {

namespace {

constexpr int kNormBlock = 256;  // threads per block, a multiple of 32
constexpr int kNormWarps = kNormBlock / kWarpSize;
constexpr int64_t kLnWarpMaxD = 1024;       // layer norm rows up to this length: one warp per row
constexpr int kColTile = 32, kColRows = 8;  // dgamma/dbeta: 32 columns x 8 row lanes per block
// Batch norm over (N, C, spatial): blocks in all that the channel split aims for (a fixed number, so
// the reduction order is the same on every device), and the fewest values a block gets.
constexpr int64_t kBnTargetBlocks = 512, kBnMinPerBlock = 4096;

/// Element k of channel c's values, k in [0, n * spatial): x[(k / spatial * C + c) * spatial + k % spatial].
__device__ __forceinline__ int64_t channel_index(int64_t k, int64_t c, int64_t channels, int64_t spatial) {
  const int64_t n = k / spatial;
  return (n * channels + c) * spatial + (k - n * spatial);
}

// ---- batch norm ------------------------------------------------------------------------------
// (N, C, spatial): each channel's m = N * spatial values are cut into `splits` chunks of one block
// each (block b: channel b / splits, chunk b % splits; splits from batch_norm_splits, a function
// of the shape alone). With one chunk a single kernel does everything; with more, per-chunk partial
// sums go to a workspace and every block adds its channel's partials in chunk order. Either way
// the sums have a fixed order that does not depend on the device. Few channels no longer mean few
// blocks (one block per channel gave 16-64 blocks on a GPU with 132 multiprocessors).

/// The chunk [begin, end) of the m values that chunk s of `splits` covers.
__device__ __forceinline__ void bn_chunk(int64_t m, int64_t splits, int64_t s, int64_t* begin, int64_t* end) {
  const int64_t per = (m + splits - 1) / splits;
  *begin = s * per;
  *end = min(m, *begin + per);
}

/// Sum of part[c * splits + 0 .. splits - 1], in chunk order.
__device__ __forceinline__ float bn_total(const float* part, int64_t c, int64_t splits) {
  float t = 0.f;
  for (int64_t s = 0; s < splits; ++s) t += part[c * splits + s];
  return t;
}

/// The block's sum of channel c's x over [begin, end), returned to every thread.
template <typename T>
__device__ __forceinline__ float bn_chunk_sum(const T* x, int64_t c, int64_t channels, int64_t spatial, int64_t begin,
                                              int64_t end) {
  float acc = 0.f;
  for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x)
    acc += to_float(x[channel_index(k, c, channels, spatial)]);
  return block_reduce_sum<WarpResults::kSerial>(acc);
}

/// The block's sum of (x - mean)^2 over [begin, end), returned to every thread.
template <typename T>
__device__ __forceinline__ float bn_chunk_sq(const T* x, float mean, int64_t c, int64_t channels, int64_t spatial,
                                             int64_t begin, int64_t end) {
  float acc = 0.f;
  for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
    const float d = to_float(x[channel_index(k, c, channels, spatial)]) - mean;
    acc += d * d;
  }
  return block_reduce_sum<WarpResults::kSerial>(acc);
}

/// y over [begin, end) from the channel's sum and centred sum of squares; thread 0 of the channel's
/// first chunk (`first`) writes the saved and running statistics.
template <typename T>
__device__ __forceinline__ void bn_chunk_apply(const T* x, const float* gamma, const float* beta, float* running_mean,
                                               float* running_var, T* y, float* saved_mean, float* saved_invstd,
                                               float sum, float sq, int64_t m, int64_t c, int64_t channels,
                                               int64_t spatial, int64_t begin, int64_t end, bool first, float eps,
                                               float momentum) {
  const float mean = sum / static_cast<float>(m);
  const float invstd = 1.f / sqrtf(sq / static_cast<float>(m) + eps);
  const float g = gamma ? gamma[c] * invstd : invstd, b = beta ? beta[c] : 0.f;
  for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
    const int64_t i = channel_index(k, c, channels, spatial);
    y[i] = from_float<T>((to_float(x[i]) - mean) * g + b);
  }
  if (threadIdx.x == 0 && first) {
    if (saved_mean) saved_mean[c] = mean;
    if (saved_invstd) saved_invstd[c] = invstd;
    if (running_mean) {
      const float unbiased = m > 1 ? sq / static_cast<float>(m - 1) : 0.f;
      running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean;
      running_var[c] = (1.f - momentum) * running_var[c] + momentum * unbiased;
    }
  }
}

/// The block's sums of dy and dy * xhat over [begin, end), returned to every thread.
template <typename T>
__device__ __forceinline__ void bn_chunk_backward_sums(const T* x, const T* dy, float mean, float invstd, int64_t c,
                                                       int64_t channels, int64_t spatial, int64_t begin, int64_t end,
                                                       float* sum_dy, float* sum_dyx) {
  float acc_dy = 0.f, acc_dyx = 0.f;
  for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
    const int64_t i = channel_index(k, c, channels, spatial);
    const float d = to_float(dy[i]);
    acc_dy += d;
    acc_dyx += d * (to_float(x[i]) - mean) * invstd;
  }
  *sum_dy = block_reduce_sum<WarpResults::kSerial>(acc_dy);
  *sum_dyx = block_reduce_sum<WarpResults::kSerial>(acc_dyx);
}

/// dx over [begin, end) = g invstd (dy - sum_dy/M - xhat sum_dyx/M); thread 0 of the channel's
/// first chunk writes dgamma and dbeta.
template <typename T>
__device__ __forceinline__ void bn_chunk_backward_apply(const T* x, const float* gamma, const T* dy, T* dx,
                                                        float* dgamma, float* dbeta, float mean, float invstd,
                                                        float sum_dy, float sum_dyx, int64_t m, int64_t c,
                                                        int64_t channels, int64_t spatial, int64_t begin, int64_t end,
                                                        bool first) {
  if (threadIdx.x == 0 && first) {
    if (dgamma) dgamma[c] = sum_dyx;
    if (dbeta) dbeta[c] = sum_dy;
  }
  if (!dx) return;
  const float k_scale = (gamma ? gamma[c] : 1.f) * invstd;
  const float mean_dy = sum_dy / static_cast<float>(m), mean_dyx = sum_dyx / static_cast<float>(m);
  for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
    const int64_t i = channel_index(k, c, channels, spatial);
    const float xhat = (to_float(x[i]) - mean) * invstd;
    dx[i] = from_float<T>(k_scale * (to_float(dy[i]) - mean_dy - xhat * mean_dyx));
  }
}

/// One chunk per channel: mean, then centred sum of squares (two passes for accuracy), then y.
template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    batch_norm_train_kernel(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                            float* __restrict__ running_mean, float* __restrict__ running_var, T* __restrict__ y,
                            float* __restrict__ saved_mean, float* __restrict__ saved_invstd, int64_t n,
                            int64_t channels, int64_t spatial, float eps, float momentum) {
  const int64_t c = blockIdx.x, m = n * spatial;
  const float sum = bn_chunk_sum(x, c, channels, spatial, 0, m);
  const float sq = bn_chunk_sq(x, sum / static_cast<float>(m), c, channels, spatial, 0, m);
  bn_chunk_apply(x, gamma, beta, running_mean, running_var, y, saved_mean, saved_invstd, sum, sq, m, c, channels,
                 spatial, 0, m, true, eps, momentum);
}

/// Split pass 1: part_sum[b] = the chunk's sum of x.
template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    bn_split_sum_kernel(const T* __restrict__ x, float* __restrict__ part_sum, int64_t n, int64_t channels,
                        int64_t spatial, int64_t splits) {
  const int64_t c = blockIdx.x / splits;
  int64_t begin, end;
  bn_chunk(n * spatial, splits, blockIdx.x % splits, &begin, &end);
  const float sum = bn_chunk_sum(x, c, channels, spatial, begin, end);
  if (threadIdx.x == 0) part_sum[blockIdx.x] = sum;
}

/// Split pass 2: part_sq[b] = the chunk's sum of (x - mean)^2, the mean from every chunk's part_sum.
template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    bn_split_sq_kernel(const T* __restrict__ x, const float* __restrict__ part_sum, float* __restrict__ part_sq,
                       int64_t n, int64_t channels, int64_t spatial, int64_t splits) {
  const int64_t c = blockIdx.x / splits, m = n * spatial;
  int64_t begin, end;
  bn_chunk(m, splits, blockIdx.x % splits, &begin, &end);
  const float sq = bn_chunk_sq(x, bn_total(part_sum, c, splits) / static_cast<float>(m), c, channels, spatial, begin, end);
  if (threadIdx.x == 0) part_sq[blockIdx.x] = sq;
}

/// Split pass 3: y for the chunk (and the statistics, from the channel's first chunk).
template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    bn_split_apply_kernel(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                          const float* __restrict__ part_sum, const float* __restrict__ part_sq,
                          float* __restrict__ running_mean, float* __restrict__ running_var, T* __restrict__ y,
                          float* __restrict__ saved_mean, float* __restrict__ saved_invstd, int64_t n, int64_t channels,
                          int64_t spatial, int64_t splits, float eps, float momentum) {
  const int64_t c = blockIdx.x / splits, m = n * spatial;
  int64_t begin, end;
  bn_chunk(m, splits, blockIdx.x % splits, &begin, &end);
  bn_chunk_apply(x, gamma, beta, running_mean, running_var, y, saved_mean, saved_invstd, bn_total(part_sum, c, splits),
                 bn_total(part_sq, c, splits), m, c, channels, spatial, begin, end, blockIdx.x % splits == 0, eps,
                 momentum);
}

// ---- synchronised batch norm (f32): one block per channel, fixed-order block sums ----------------

/// stats[0][c] = sum(x - k), stats[1][c] = sum((x - k)^2), stats[2][c] = n * spatial (k = shift[c] or 0).
__global__ void __launch_bounds__(kNormBlock)
    bn_sync_stats_kernel(const float* __restrict__ x, const float* __restrict__ shift, float* __restrict__ stats,
                         int64_t n, int64_t channels, int64_t spatial) {
  const int64_t c = blockIdx.x, m = n * spatial;
  const float k = shift ? shift[c] : 0.f;
  float acc = 0.f, acc_sq = 0.f;
  for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
    const float d = x[channel_index(j, c, channels, spatial)] - k;
    acc += d;
    acc_sq += d * d;
  }
  const float sum = block_reduce_sum<WarpResults::kSerial>(acc);
  const float sq = block_reduce_sum<WarpResults::kSerial>(acc_sq);
  if (threadIdx.x == 0) {
    stats[c] = sum;
    stats[channels + c] = sq;
    stats[2 * channels + c] = static_cast<float>(m);
  }
}

/// y from the all-reduced stats; thread 0 writes the saved and running statistics after every
/// thread has read the shift (which may be running_mean itself).
__global__ void __launch_bounds__(kNormBlock)
    bn_sync_apply_kernel(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                         float* running_mean, float* __restrict__ running_var, const float* __restrict__ stats,
                         const float* shift, float* __restrict__ y, float* __restrict__ saved_mean,
                         float* __restrict__ saved_invstd, int64_t n, int64_t channels, int64_t spatial, float eps,
                         float momentum) {
  const int64_t c = blockIdx.x, m_local = n * spatial;
  const float m = stats[2 * channels + c], d = stats[c] / m;
  const float mean = (shift ? shift[c] : 0.f) + d;
  const float var = fmaxf(stats[channels + c] / m - d * d, 0.f);
  const float invstd = 1.f / sqrtf(var + eps);
  const float g = gamma ? gamma[c] * invstd : invstd, b = beta ? beta[c] : 0.f;
  for (int64_t j = threadIdx.x; j < m_local; j += blockDim.x) {
    const int64_t i = channel_index(j, c, channels, spatial);
    y[i] = (x[i] - mean) * g + b;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    if (saved_mean) saved_mean[c] = mean;
    if (saved_invstd) saved_invstd[c] = invstd;
    if (running_mean) {
      const float unbiased = m > 1.f ? var * m / (m - 1.f) : 0.f;
      running_mean[c] = (1.f - momentum) * running_mean[c] + momentum * mean;
      running_var[c] = (1.f - momentum) * running_var[c] + momentum * unbiased;
    }
  }
}

/// sums[0][c] = sum dy, sums[1][c] = sum dy xhat over this rank's rows; dgamma / dbeta the same.
__global__ void __launch_bounds__(kNormBlock)
    bn_sync_backward_reduce_kernel(const float* __restrict__ x, const float* __restrict__ saved_mean,
                                   const float* __restrict__ saved_invstd, const float* __restrict__ dy,
                                   float* __restrict__ sums, float* __restrict__ dgamma, float* __restrict__ dbeta,
                                   int64_t n, int64_t channels, int64_t spatial) {
  const int64_t c = blockIdx.x;
  float sum_dy, sum_dyx;
  bn_chunk_backward_sums(x, dy, saved_mean[c], saved_invstd[c], c, channels, spatial, 0, n * spatial, &sum_dy,
                         &sum_dyx);
  if (threadIdx.x == 0) {
    sums[c] = sum_dy;
    sums[channels + c] = sum_dyx;
    if (dgamma) dgamma[c] = sum_dyx;
    if (dbeta) dbeta[c] = sum_dy;
  }
}

/// dx = gamma invstd (dy - sums[0]/M - xhat sums[1]/M) with the all-reduced sums, M = stats[2].
__global__ void __launch_bounds__(kNormBlock)
    bn_sync_backward_apply_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                  const float* __restrict__ saved_mean, const float* __restrict__ saved_invstd,
                                  const float* __restrict__ dy, const float* __restrict__ sums,
                                  const float* __restrict__ stats, float* __restrict__ dx, int64_t n, int64_t channels,
                                  int64_t spatial) {
  const int64_t c = blockIdx.x;
  const int64_t m = static_cast<int64_t>(stats[2 * channels + c]);  // a count, exact in f32 below 2^24
  bn_chunk_backward_apply<float>(x, gamma, dy, dx, nullptr, nullptr, saved_mean[c], saved_invstd[c], sums[c],
                                 sums[channels + c], m, c, channels, spatial, 0, n * spatial, false);
}

template <typename T>
__global__ void batch_norm_inference_kernel(const T* __restrict__ x, const float* __restrict__ gamma,
                                            const float* __restrict__ beta, const float* __restrict__ running_mean,
                                            const float* __restrict__ running_var, T* __restrict__ y, int64_t total,
                                            int64_t channels, int64_t spatial, float eps) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = (i / spatial) % channels;
    const float invstd = 1.f / sqrtf(running_var[c] + eps);
    const float g = gamma ? gamma[c] * invstd : invstd;
    y[i] = from_float<T>((to_float(x[i]) - running_mean[c]) * g + (beta ? beta[c] : 0.f));
  }
}

/// dx = dy * gamma / sqrt(running_var + eps), the factor computed as the inference kernel computes it.
template <typename T>
__global__ void batch_norm_inference_backward_kernel(const T* __restrict__ dy, const float* __restrict__ gamma,
                                                     const float* __restrict__ running_var, T* __restrict__ dx,
                                                     int64_t total, int64_t channels, int64_t spatial, float eps) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = (i / spatial) % channels;
    const float invstd = 1.f / sqrtf(running_var[c] + eps);
    dx[i] = from_float<T>(to_float(dy[i]) * (gamma ? gamma[c] * invstd : invstd));
  }
}

/// One chunk per channel: sum(dy), sum(dy * xhat), then dx, dgamma, dbeta.
template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    batch_norm_backward_kernel(const T* __restrict__ x, const float* __restrict__ gamma,
                               const float* __restrict__ saved_mean, const float* __restrict__ saved_invstd,
                               const T* __restrict__ dy, T* __restrict__ dx, float* __restrict__ dgamma,
                               float* __restrict__ dbeta, int64_t n, int64_t channels, int64_t spatial) {
  const int64_t c = blockIdx.x, m = n * spatial;
  const float mean = saved_mean[c], invstd = saved_invstd[c];
  float sum_dy, sum_dyx;
  bn_chunk_backward_sums(x, dy, mean, invstd, c, channels, spatial, 0, m, &sum_dy, &sum_dyx);
  bn_chunk_backward_apply(x, gamma, dy, dx, dgamma, dbeta, mean, invstd, sum_dy, sum_dyx, m, c, channels, spatial, 0, m,
                          true);
}

/// Split backward pass 1: the chunk's sums of dy and dy * xhat.
template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    bn_split_backward_sum_kernel(const T* __restrict__ x, const float* __restrict__ saved_mean,
                                 const float* __restrict__ saved_invstd, const T* __restrict__ dy,
                                 float* __restrict__ part_dy, float* __restrict__ part_dyx, int64_t n, int64_t channels,
                                 int64_t spatial, int64_t splits) {
  const int64_t c = blockIdx.x / splits;
  int64_t begin, end;
  bn_chunk(n * spatial, splits, blockIdx.x % splits, &begin, &end);
  float sum_dy, sum_dyx;
  bn_chunk_backward_sums(x, dy, saved_mean[c], saved_invstd[c], c, channels, spatial, begin, end, &sum_dy, &sum_dyx);
  if (threadIdx.x == 0) {
    part_dy[blockIdx.x] = sum_dy;
    part_dyx[blockIdx.x] = sum_dyx;
  }
}

/// Split backward pass 2: dx for the chunk (dgamma and dbeta from the channel's first chunk).
template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    bn_split_backward_apply_kernel(const T* __restrict__ x, const float* __restrict__ gamma,
                                   const float* __restrict__ saved_mean, const float* __restrict__ saved_invstd,
                                   const T* __restrict__ dy, const float* __restrict__ part_dy,
                                   const float* __restrict__ part_dyx, T* __restrict__ dx, float* __restrict__ dgamma,
                                   float* __restrict__ dbeta, int64_t n, int64_t channels, int64_t spatial,
                                   int64_t splits) {
  const int64_t c = blockIdx.x / splits, m = n * spatial;
  int64_t begin, end;
  bn_chunk(m, splits, blockIdx.x % splits, &begin, &end);
  bn_chunk_backward_apply(x, gamma, dy, dx, dgamma, dbeta, saved_mean[c], saved_invstd[c], bn_total(part_dy, c, splits),
                          bn_total(part_dyx, c, splits), m, c, channels, spatial, begin, end, blockIdx.x % splits == 0);
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
template <typename T>
__global__ void __launch_bounds__(kColTile* kColRows)
    batch_norm_train_rows_kernel(const T* __restrict__ x, const float* __restrict__ gamma,
                                 const float* __restrict__ beta, float* __restrict__ running_mean,
                                 float* __restrict__ running_var, T* __restrict__ y, float* __restrict__ saved_mean,
                                 float* __restrict__ saved_invstd, int64_t n, int64_t channels, float eps,
                                 float momentum) {
  __shared__ float part[kColRows][kColTile + 1];
  __shared__ float total[kColTile];
  const int64_t c = blockIdx.x * static_cast<int64_t>(kColTile) + threadIdx.x;
  const bool live = c < channels;
  float acc = 0.f;
  if (live)
    for (int64_t r = threadIdx.y; r < n; r += kColRows) acc += to_float(x[r * channels + c]);
  const float mean = column_allreduce_sum(acc, part, total) / static_cast<float>(n);
  acc = 0.f;
  if (live)
    for (int64_t r = threadIdx.y; r < n; r += kColRows) {
      const float d = to_float(x[r * channels + c]) - mean;
      acc += d * d;
    }
  const float sq = column_allreduce_sum(acc, part, total);
  if (!live) return;  // no barrier follows
  const float invstd = 1.f / sqrtf(sq / static_cast<float>(n) + eps);
  const float g = gamma ? gamma[c] * invstd : invstd, b = beta ? beta[c] : 0.f;
  for (int64_t r = threadIdx.y; r < n; r += kColRows)
    y[r * channels + c] = from_float<T>((to_float(x[r * channels + c]) - mean) * g + b);
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
template <typename T>
__global__ void __launch_bounds__(kColTile* kColRows)
    batch_norm_backward_rows_kernel(const T* __restrict__ x, const float* __restrict__ gamma,
                                    const float* __restrict__ saved_mean, const float* __restrict__ saved_invstd,
                                    const T* __restrict__ dy, T* __restrict__ dx, float* __restrict__ dgamma,
                                    float* __restrict__ dbeta, int64_t n, int64_t channels) {
  __shared__ float part[kColRows][kColTile + 1];
  __shared__ float total[kColTile];
  const int64_t c = blockIdx.x * static_cast<int64_t>(kColTile) + threadIdx.x;
  const bool live = c < channels;
  const float mean = live ? saved_mean[c] : 0.f, invstd = live ? saved_invstd[c] : 0.f;
  float acc_dy = 0.f, acc_dyx = 0.f;
  if (live)
    for (int64_t r = threadIdx.y; r < n; r += kColRows) {
      const float d = to_float(dy[r * channels + c]);
      acc_dy += d;
      acc_dyx += d * (to_float(x[r * channels + c]) - mean) * invstd;
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
    dx[i] = from_float<T>(k_scale * (to_float(dy[i]) - mean_dy - (to_float(x[i]) - mean) * invstd * mean_dyx));
  }
}

// ---- layer norm ------------------------------------------------------------------------------

/// Row statistics and output for one row, reduced by `Reduce` (a warp or the whole block).
template <typename T, typename Reduce>
__device__ __forceinline__ void layer_norm_row(const T* __restrict__ xr, const float* __restrict__ gamma,
                                               const float* __restrict__ beta, T* __restrict__ yr, int64_t d, float eps,
                                               int first, int step, Reduce reduce, float& mean_out, float& rstd_out) {
  float acc = 0.f;
  for (int64_t j = first; j < d; j += step) acc += to_float(xr[j]);
  const float mean = reduce(acc) / static_cast<float>(d);
  acc = 0.f;
  for (int64_t j = first; j < d; j += step) {
    const float t = to_float(xr[j]) - mean;
    acc += t * t;
  }
  const float rstd = 1.f / sqrtf(reduce(acc) / static_cast<float>(d) + eps);
  for (int64_t j = first; j < d; j += step) {
    const float v = (to_float(xr[j]) - mean) * rstd;
    yr[j] = from_float<T>((gamma ? v * gamma[j] : v) + (beta ? beta[j] : 0.f));
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
template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    layer_norm_warp_kernel(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                           T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int64_t rows,
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
template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    layer_norm_block_kernel(const T* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                            T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int64_t rows,
                            int64_t d, float eps) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float mu, rs;
    layer_norm_row(x + r * d, gamma, beta, y + r * d, d, eps, threadIdx.x, blockDim.x, BlockSum{}, mu, rs);
    if (threadIdx.x == 0 && mean) mean[r] = mu, rstd[r] = rs;
  }
}

/// dx of one row: g = dy gamma; dx = rstd (g - mean(g) - xhat mean(g xhat)).
template <typename T, typename Reduce>
__device__ __forceinline__ void layer_norm_backward_row(const T* __restrict__ xr, const float* __restrict__ gamma,
                                                        const T* __restrict__ dyr, T* __restrict__ dxr, float mean,
                                                        float rstd, int64_t d, int first, int step, Reduce reduce) {
  float acc_g = 0.f, acc_gx = 0.f;
  for (int64_t j = first; j < d; j += step) {
    const float g = gamma ? to_float(dyr[j]) * gamma[j] : to_float(dyr[j]);
    acc_g += g;
    acc_gx += g * (to_float(xr[j]) - mean) * rstd;
  }
  const float inv_d = 1.f / static_cast<float>(d);
  const float mean_g = reduce(acc_g) * inv_d;
  const float mean_gx = reduce(acc_gx) * inv_d;
  for (int64_t j = first; j < d; j += step) {
    const float g = gamma ? to_float(dyr[j]) * gamma[j] : to_float(dyr[j]);
    const float xhat = (to_float(xr[j]) - mean) * rstd;
    dxr[j] = from_float<T>(rstd * (g - mean_g - xhat * mean_gx));
  }
}

template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    layer_norm_backward_warp_kernel(const T* __restrict__ x, const float* __restrict__ gamma,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    const T* __restrict__ dy, T* __restrict__ dx, int64_t rows, int64_t d) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kNormWarps) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kNormWarps)
    layer_norm_backward_row(x + r * d, gamma, dy + r * d, dx + r * d, mean[r], rstd[r], d, lane, kWarpSize, WarpSum{});
}

template <typename T>
__global__ void __launch_bounds__(kNormBlock)
    layer_norm_backward_block_kernel(const T* __restrict__ x, const float* __restrict__ gamma,
                                     const float* __restrict__ mean, const float* __restrict__ rstd,
                                     const T* __restrict__ dy, T* __restrict__ dx, int64_t rows, int64_t d) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    layer_norm_backward_row(x + r * d, gamma, dy + r * d, dx + r * d, mean[r], rstd[r], d, threadIdx.x, blockDim.x,
                            BlockSum{});
}

/// dgamma[j] = sum_r dy xhat, dbeta[j] = sum_r dy: block (32, 8) owns 32 columns; row lane ty sums
/// rows ty, ty + 8, ...; the 8 partials are added in order 0..7. Coalesced along the row.
template <typename T>
__global__ void __launch_bounds__(kColTile* kColRows)
    layer_norm_param_grad_kernel(const T* __restrict__ x, const float* __restrict__ mean,
                                 const float* __restrict__ rstd, const T* __restrict__ dy, float* __restrict__ dgamma,
                                 float* __restrict__ dbeta, int64_t rows, int64_t d) {
  __shared__ float part_g[kColRows][kColTile + 1];
  __shared__ float part_b[kColRows][kColTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = blockIdx.x * static_cast<int64_t>(kColTile) + tx;
  float acc_g = 0.f, acc_b = 0.f;
  if (j < d) {
    for (int64_t r = ty; r < rows; r += kColRows) {
      const float g = to_float(dy[r * d + j]);
      acc_g += g * (to_float(x[r * d + j]) - mean[r]) * rstd[r];
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

int64_t batch_norm_splits(int64_t n, int64_t c, int64_t spatial) {
  if (spatial == 1 || c <= 0) return 1;
  const int64_t want = (kBnTargetBlocks + c - 1) / c, most = n * spatial / kBnMinPerBlock;
  return std::max<int64_t>(1, std::min(want, most));
}

size_t batch_norm_workspace_bytes(int64_t n, int64_t c, int64_t spatial) {
  const int64_t splits = batch_norm_splits(n, c, spatial);
  return splits > 1 ? static_cast<size_t>(2 * c * splits) * sizeof(float) : 0;
}

void batch_norm_train_cuda(const void* x, const float* gamma, const float* beta, float* running_mean,
                           float* running_var, void* y, float* saved_mean, float* saved_invstd, Storage type, int64_t n,
                           int64_t c, int64_t spatial, float eps, float momentum, float* workspace,
                           cudaStream_t stream) {
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    T* yt = static_cast<T*>(y);
    if (spatial == 1) {  // (N, C): channel tiles, coalesced along rows
      const unsigned blocks = static_cast<unsigned>((c + kColTile - 1) / kColTile);
      launch<batch_norm_train_rows_kernel<T>>(blocks, dim3(kColTile, kColRows), 0, stream, xt, gamma, beta,
                                              running_mean, running_var, yt, saved_mean, saved_invstd, n, c, eps,
                                              momentum);
      return;
    }
    const int64_t splits = batch_norm_splits(n, c, spatial);
    if (splits > 1) {
      const unsigned blocks = static_cast<unsigned>(c * splits);
      float *part_sum = workspace, *part_sq = workspace + c * splits;
      launch<bn_split_sum_kernel<T>>(blocks, kNormBlock, 0, stream, xt, part_sum, n, c, spatial, splits);
      launch<bn_split_sq_kernel<T>>(blocks, kNormBlock, 0, stream, xt, part_sum, part_sq, n, c, spatial, splits);
      launch<bn_split_apply_kernel<T>>(blocks, kNormBlock, 0, stream, xt, gamma, beta, part_sum, part_sq, running_mean,
                                       running_var, yt, saved_mean, saved_invstd, n, c, spatial, splits, eps, momentum);
      return;
    }
    launch<batch_norm_train_kernel<T>>(static_cast<unsigned>(c), kNormBlock, 0, stream, xt, gamma, beta, running_mean,
                                       running_var, yt, saved_mean, saved_invstd, n, c, spatial, eps, momentum);
  });
}

void batch_norm_inference_cuda(const void* x, const float* gamma, const float* beta, const float* running_mean,
                               const float* running_var, void* y, Storage type, int64_t n, int64_t c, int64_t spatial,
                               float eps, cudaStream_t stream) {
  const int64_t total = n * c * spatial;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<batch_norm_inference_kernel<T>>(grid_for(total, kNormBlock), kNormBlock, 0, stream, static_cast<const T*>(x),
                                           gamma, beta, running_mean, running_var, static_cast<T*>(y), total, c,
                                           spatial, eps);
  });
}

void batch_norm_inference_backward_cuda(const void* dy, const float* gamma, const float* running_var, void* dx,
                                        Storage type, int64_t n, int64_t c, int64_t spatial, float eps,
                                        cudaStream_t stream) {
  const int64_t total = n * c * spatial;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<batch_norm_inference_backward_kernel<T>>(grid_for(total, kNormBlock), kNormBlock, 0, stream,
                                                    static_cast<const T*>(dy), gamma, running_var, static_cast<T*>(dx),
                                                    total, c, spatial, eps);
  });
}

void batch_norm_backward_cuda(const void* x, const float* gamma, const float* saved_mean, const float* saved_invstd,
                              const void* dy, void* dx, float* dgamma, float* dbeta, Storage type, int64_t n, int64_t c,
                              int64_t spatial, float* workspace, cudaStream_t stream) {
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    const T *xt = static_cast<const T*>(x), *dyt = static_cast<const T*>(dy);
    T* dxt = static_cast<T*>(dx);
    if (spatial == 1) {  // (N, C): channel tiles, coalesced along rows
      const unsigned blocks = static_cast<unsigned>((c + kColTile - 1) / kColTile);
      launch<batch_norm_backward_rows_kernel<T>>(blocks, dim3(kColTile, kColRows), 0, stream, xt, gamma, saved_mean,
                                                 saved_invstd, dyt, dxt, dgamma, dbeta, n, c);
      return;
    }
    const int64_t splits = batch_norm_splits(n, c, spatial);
    if (splits > 1) {
      const unsigned blocks = static_cast<unsigned>(c * splits);
      float *part_dy = workspace, *part_dyx = workspace + c * splits;
      launch<bn_split_backward_sum_kernel<T>>(blocks, kNormBlock, 0, stream, xt, saved_mean, saved_invstd, dyt, part_dy,
                                              part_dyx, n, c, spatial, splits);
      launch<bn_split_backward_apply_kernel<T>>(blocks, kNormBlock, 0, stream, xt, gamma, saved_mean, saved_invstd, dyt,
                                                part_dy, part_dyx, dxt, dgamma, dbeta, n, c, spatial, splits);
      return;
    }
    launch<batch_norm_backward_kernel<T>>(static_cast<unsigned>(c), kNormBlock, 0, stream, xt, gamma, saved_mean,
                                          saved_invstd, dyt, dxt, dgamma, dbeta, n, c, spatial);
  });
}

void batch_norm_stats_cuda(const float* x, const float* shift, float* stats, int64_t n, int64_t c, int64_t spatial,
                           cudaStream_t stream) {
  launch<bn_sync_stats_kernel>(static_cast<unsigned>(c), kNormBlock, 0, stream, x, shift, stats, n, c, spatial);
}

void batch_norm_apply_cuda(const float* x, const float* gamma, const float* beta, float* running_mean,
                           float* running_var, const float* stats, const float* shift, float* y, float* saved_mean,
                           float* saved_invstd, int64_t n, int64_t c, int64_t spatial, float eps, float momentum,
                           cudaStream_t stream) {
  launch<bn_sync_apply_kernel>(static_cast<unsigned>(c), kNormBlock, 0, stream, x, gamma, beta, running_mean,
                               running_var, stats, shift, y, saved_mean, saved_invstd, n, c, spatial, eps, momentum);
}

void batch_norm_backward_reduce_cuda(const float* x, const float* saved_mean, const float* saved_invstd,
                                     const float* dy, float* sums, float* dgamma, float* dbeta, int64_t n, int64_t c,
                                     int64_t spatial, cudaStream_t stream) {
  launch<bn_sync_backward_reduce_kernel>(static_cast<unsigned>(c), kNormBlock, 0, stream, x, saved_mean, saved_invstd,
                                         dy, sums, dgamma, dbeta, n, c, spatial);
}

void batch_norm_backward_apply_cuda(const float* x, const float* gamma, const float* saved_mean,
                                    const float* saved_invstd, const float* dy, const float* sums, const float* stats,
                                    float* dx, int64_t n, int64_t c, int64_t spatial, cudaStream_t stream) {
  launch<bn_sync_backward_apply_kernel>(static_cast<unsigned>(c), kNormBlock, 0, stream, x, gamma, saved_mean,
                                        saved_invstd, dy, sums, stats, dx, n, c, spatial);
}

void layer_norm_cuda(const void* x, const float* gamma, const float* beta, void* y, float* mean, float* rstd,
                     Storage type, int64_t rows, int64_t d, float eps, cudaStream_t stream) {
  if (rows == 0) return;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    T* yt = static_cast<T*>(y);
    if (d <= kLnWarpMaxD) {
      launch<layer_norm_warp_kernel<T>>(warp_row_blocks(rows), kNormBlock, 0, stream, xt, gamma, beta, yt, mean, rstd,
                                        rows, d, eps);
    } else {
      launch<layer_norm_block_kernel<T>>(block_row_blocks(rows), kNormBlock, 0, stream, xt, gamma, beta, yt, mean, rstd,
                                         rows, d, eps);
    }
  });
}

void layer_norm_backward_cuda(const void* x, const float* gamma, const float* mean, const float* rstd, const void* dy,
                              void* dx, float* dgamma, float* dbeta, Storage type, int64_t rows, int64_t d,
                              cudaStream_t stream) {
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    const T *xt = static_cast<const T*>(x), *dyt = static_cast<const T*>(dy);
    T* dxt = static_cast<T*>(dx);
    if (dx && rows > 0) {
      if (d <= kLnWarpMaxD) {
        launch<layer_norm_backward_warp_kernel<T>>(warp_row_blocks(rows), kNormBlock, 0, stream, xt, gamma, mean, rstd,
                                                   dyt, dxt, rows, d);
      } else {
        launch<layer_norm_backward_block_kernel<T>>(block_row_blocks(rows), kNormBlock, 0, stream, xt, gamma, mean,
                                                    rstd, dyt, dxt, rows, d);
      }
    }
    if (dgamma || dbeta) {
      const unsigned blocks = static_cast<unsigned>((d + kColTile - 1) / kColTile);
      launch<layer_norm_param_grad_kernel<T>>(blocks, dim3(kColTile, kColRows), 0, stream, xt, mean, rstd, dyt, dgamma,
                                              dbeta, rows, d);
    }
  });
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/norm.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_norm_ops puts them into the CUDA op table.

namespace cudl {

namespace {

/// The partial sums of a batch norm split across blocks, in the context's workspace.
float* bn_workspace(CudaContext& ctx, const ops::BatchNormArgs& p) {
  const size_t bytes = kernels::batch_norm_workspace_bytes(p.n, p.c, p.spatial);
  return bytes ? static_cast<float*>(ctx.workspace(bytes)) : nullptr;
}

void batch_norm_train(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_train_cuda(
      p.x.data, p.gamma.as<float>(), p.beta.as<float>(), p.running_mean.as<float>(), p.running_var.as<float>(),
      p.y.data, p.saved_mean.as<float>(), p.saved_invstd.as<float>(), kernels::storage_of(p.storage), p.n, p.c,
      p.spatial, static_cast<float>(p.eps), static_cast<float>(p.momentum), bn_workspace(ctx, p), ctx.stream());
}

void batch_norm_inference(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_inference_cuda(p.x.data, p.gamma.as<float>(), p.beta.as<float>(), p.running_mean.as<float>(),
                                     p.running_var.as<float>(), p.y.data, kernels::storage_of(p.storage), p.n, p.c,
                                     p.spatial, static_cast<float>(p.eps), ctx.stream());
}

void batch_norm_backward(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_backward_cuda(p.x.data, p.gamma.as<float>(), p.saved_mean.as<float>(), p.saved_invstd.as<float>(),
                                    p.dy.data, p.dx.data, p.dgamma.as<float>(), p.dbeta.as<float>(),
                                    kernels::storage_of(p.storage), p.n, p.c, p.spatial, bn_workspace(ctx, p),
                                    ctx.stream());
}

void batch_norm_inference_backward(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_inference_backward_cuda(p.dy.data, p.gamma.as<float>(), p.running_var.as<float>(), p.dx.data,
                                              kernels::storage_of(p.storage), p.n, p.c, p.spatial,
                                              static_cast<float>(p.eps), ctx.stream());
}

void batch_norm_stats(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  kernels::batch_norm_stats_cuda(p.x.as<float>(), p.shift.as<float>(), p.stats.as<float>(), p.n, p.c, p.spatial,
                                 cuda_context(call).stream());
}

void batch_norm_apply(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  kernels::batch_norm_apply_cuda(
      p.x.as<float>(), p.gamma.as<float>(), p.beta.as<float>(), p.running_mean.as<float>(), p.running_var.as<float>(),
      p.stats.as<float>(), p.shift.as<float>(), p.y.as<float>(), p.saved_mean.as<float>(), p.saved_invstd.as<float>(),
      p.n, p.c, p.spatial, static_cast<float>(p.eps), static_cast<float>(p.momentum), cuda_context(call).stream());
}

void batch_norm_backward_reduce(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  kernels::batch_norm_backward_reduce_cuda(p.x.as<float>(), p.saved_mean.as<float>(), p.saved_invstd.as<float>(),
                                           p.dy.as<float>(), p.sums.as<float>(), p.dgamma.as<float>(),
                                           p.dbeta.as<float>(), p.n, p.c, p.spatial, cuda_context(call).stream());
}

void batch_norm_backward_apply(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  kernels::batch_norm_backward_apply_cuda(
      p.x.as<float>(), p.gamma.as<float>(), p.saved_mean.as<float>(), p.saved_invstd.as<float>(), p.dy.as<float>(),
      p.sums.as<float>(), p.stats.as<float>(), p.dx.as<float>(), p.n, p.c, p.spatial, cuda_context(call).stream());
}

void layer_norm(const OpCall& call) {
  const ops::LayerNormArgs p = ops::check_layer_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::layer_norm_cuda(p.x.data, p.gamma.as<float>(), p.beta.as<float>(), p.y.data, p.mean.as<float>(),
                           p.rstd.as<float>(), kernels::storage_of(p.storage), p.rows, p.d, static_cast<float>(p.eps),
                           ctx.stream());
}

void layer_norm_backward(const OpCall& call) {
  const ops::LayerNormArgs p = ops::check_layer_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::layer_norm_backward_cuda(p.x.data, p.gamma.as<float>(), p.mean.as<float>(), p.rstd.as<float>(), p.dy.data,
                                    p.dx.data, p.dgamma.as<float>(), p.dbeta.as<float>(),
                                    kernels::storage_of(p.storage), p.rows, p.d, ctx.stream());
}

}  // namespace

void register_cuda_norm_ops(OpTable& t) {
  t.add(OpKind::BatchNormTrain, batch_norm_train);
  t.add(OpKind::BatchNormInference, batch_norm_inference);
  t.add(OpKind::BatchNormBackward, batch_norm_backward);
  t.add(OpKind::BatchNormInferenceBackward, batch_norm_inference_backward);
  t.add(OpKind::BatchNormStats, batch_norm_stats);
  t.add(OpKind::BatchNormApply, batch_norm_apply);
  t.add(OpKind::BatchNormBackwardReduce, batch_norm_backward_reduce);
  t.add(OpKind::BatchNormBackwardApply, batch_norm_backward_apply);
  t.add(OpKind::LayerNorm, layer_norm);
  t.add(OpKind::LayerNormBackward, layer_norm_backward);
}

}  // namespace cudl
