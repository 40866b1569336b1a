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
