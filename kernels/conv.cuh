// kernels/conv.cuh — launchers of the im2col convolution engine (the fallback when cuDNN has no
// plan) and of the conv epilogue / bias-gradient kernels used by both conv engines.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/storage.cuh"

namespace cudl::kernels {

/// Geometry of one NCHW convolution as the kernels see it (plain data, passed by value).
/// x (N, C, H, W), w (K, C/groups, R, S), y (N, K, P, Q).
struct ConvKernelGeometry {
  int64_t C, H, W;
  int64_t R, S;
  int64_t P, Q;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

/// col (n_images, C*R*S, P*Q) from x (n_images, C, H, W), both of storage `type`:
/// col[n][(c*R + r)*S + s][p*Q + q] = x[n][c][p*stride_h - pad_h + r*dil_h][q*stride_w - pad_w + s*dil_w],
/// zero outside the image (an exact copy in every storage type).
void conv2d_im2col_cuda(const void* x, void* col, Storage type, const ConvKernelGeometry& g, int64_t n_images,
                        cudaStream_t stream);

/// dx (n_images, C, H, W) of storage `type` = the adjoint of im2col applied to the f32 col, plus
/// bias[c] (of `type`; null: none) (overwrites dx). Each dx element gathers its own contributions in
/// a fixed order in fp32, adds the bias and is rounded once: deterministic, no atomics.
void conv2d_col2im_cuda(const float* col, void* dx, Storage type, const ConvKernelGeometry& g, int64_t n_images,
                        const void* bias, cudaStream_t stream);

/// y (N, K, HW) = act(in + bias[k]) with y and bias of storage `type`, `in` f32 (in_f32) or of
/// `type`; in may be y (in place). bias may be null; act is ReLU when relu != 0 (ReLU keeps NaN),
/// identity otherwise. fp32 math, one rounding at the store.
void conv2d_bias_act_cuda(const void* in, bool in_f32, void* y, Storage type, const void* bias, int64_t N, int64_t K,
                          int64_t HW, int relu, cudaStream_t stream);

/// db[k] = sum over n and hw of dy[n][k][hw] for dy (N, K, HW), both of storage `type`: one block
/// per channel, an fp32 sum in a fixed reduction order (deterministic, no atomics), rounded once.
void conv2d_bias_grad_cuda(const void* dy, void* db, Storage type, int64_t N, int64_t K, int64_t HW,
                           cudaStream_t stream);

}  // namespace cudl::kernels
