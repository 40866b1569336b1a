// kernels/norm.cuh — host launchers of the normalisation kernels: batch norm (each channel split
// across blocks) and layer norm (one warp per short row, one block per long row); all deterministic.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/storage.cuh"

namespace cudl::kernels {

/// Blocks each channel of an (n, c, spatial) batch norm is split across (1: one block per channel,
/// and always 1 for spatial == 1); depends only on the shape.
int64_t batch_norm_splits(int64_t n, int64_t c, int64_t spatial);
/// Workspace bytes batch_norm_train_cuda / batch_norm_backward_cuda need for this shape (0: none).
size_t batch_norm_workspace_bytes(int64_t n, int64_t c, int64_t spatial);

/// x (n, c, spatial): batch statistics per channel, y = xhat * gamma + beta, saved mean/invstd,
/// running stats updated in place (unbiased running variance; 0 when n * spatial == 1).
/// gamma, beta, running_*, saved_* are nullable. workspace: batch_norm_workspace_bytes (may be
/// null when that is 0). x and y are of storage `type`; every other tensor is f32, and so is the math.
void batch_norm_train_cuda(const void* x, const float* gamma, const float* beta, float* running_mean,
                           float* running_var, void* y, float* saved_mean, float* saved_invstd, Storage type, int64_t n,
                           int64_t c, int64_t spatial, float eps, float momentum, float* workspace,
                           cudaStream_t stream);

/// y = (x - running_mean) / sqrt(running_var + eps) * gamma + beta (gamma, beta nullable); x, y of
/// storage `type`.
void batch_norm_inference_cuda(const void* x, const float* gamma, const float* beta, const float* running_mean,
                               const float* running_var, void* y, Storage type, int64_t n, int64_t c, int64_t spatial,
                               float eps, cudaStream_t stream);

/// dx = dy * gamma / sqrt(running_var + eps): the data gradient of batch_norm_inference_cuda (gamma
/// nullable: 1); dy, dx of storage `type`.
void batch_norm_inference_backward_cuda(const void* dy, const float* gamma, const float* running_var, void* dx,
                                        Storage type, int64_t n, int64_t c, int64_t spatial, float eps,
                                        cudaStream_t stream);

/// dx, dgamma, dbeta (each nullable) of batch norm with batch statistics; gamma nullable (= 1);
/// x, dy, dx of storage `type`, the rest f32.
void batch_norm_backward_cuda(const void* x, const float* gamma, const float* saved_mean, const float* saved_invstd,
                              const void* dy, void* dx, float* dgamma, float* dbeta, Storage type, int64_t n, int64_t c,
                              int64_t spatial, float* workspace, cudaStream_t stream);

/// Synchronised batch norm (f32; ops/norm.hpp), one block per channel. stats (3, c): sum(x - k),
/// sum((x - k)^2) and the count n * spatial per channel, k = shift (nullable: 0).
void batch_norm_stats_cuda(const float* x, const float* shift, float* stats, int64_t n, int64_t c, int64_t spatial,
                           cudaStream_t stream);
/// y, saved and running statistics from the (all-reduced) stats and the same shift; gamma, beta,
/// running_*, saved_*, shift nullable; shift may alias running_mean.
void batch_norm_apply_cuda(const float* x, const float* gamma, const float* beta, float* running_mean,
                           float* running_var, const float* stats, const float* shift, float* y, float* saved_mean,
                           float* saved_invstd, int64_t n, int64_t c, int64_t spatial, float eps, float momentum,
                           cudaStream_t stream);
/// sums (2, c): sum dy and sum dy * xhat over this rank's rows; dgamma / dbeta (nullable) the same.
void batch_norm_backward_reduce_cuda(const float* x, const float* saved_mean, const float* saved_invstd,
                                     const float* dy, float* sums, float* dgamma, float* dbeta, int64_t n, int64_t c,
                                     int64_t spatial, cudaStream_t stream);
/// dx from the all-reduced sums and the count stats[2] (every rank's); gamma nullable.
void batch_norm_backward_apply_cuda(const float* x, const float* gamma, const float* saved_mean,
                                    const float* saved_invstd, const float* dy, const float* sums, const float* stats,
                                    float* dx, int64_t n, int64_t c, int64_t spatial, cudaStream_t stream);

/// x (rows, d): y = (x - mean) * rstd * gamma + beta; mean/rstd (rows) nullable, gamma/beta nullable.
/// x and y of storage `type`; gamma, beta and the row statistics f32, and so is the math.
void layer_norm_cuda(const void* x, const float* gamma, const float* beta, void* y, float* mean, float* rstd,
                     Storage type, int64_t rows, int64_t d, float eps, cudaStream_t stream);

/// dx, dgamma, dbeta (each nullable) of layer norm; gamma nullable (= 1). x, dy, dx of storage
/// `type`; gamma, mean, rstd, dgamma, dbeta f32.
void layer_norm_backward_cuda(const void* x, const float* gamma, const float* mean, const float* rstd, const void* dy,
                              void* dx, float* dgamma, float* dbeta, Storage type, int64_t rows, int64_t d,
                              cudaStream_t stream);

}  // namespace cudl::kernels
