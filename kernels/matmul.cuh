// kernels/matmul.cuh — launchers of the matmul family's small kernels (the GEMMs themselves are cuBLASLt):
// the Linear epilogue when no cuBLASLt epilogue fits, act' in front of the backward GEMMs, the bias gradient.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace cudl::kernels {

// Storage types: T is float, __nv_bfloat16 or __half (instantiated in matmul.cu). Every kernel
// widens what it loads to fp32, computes in fp32 as for f32, and rounds to nearest even on the store.

/// Activation codes, as cudl::Epilogue: 0 none, 1 ReLU (NaN -> 0), 2 GELU (tanh approximation).
/// v = z + bias (z fp32, bias indexed by column, may be null); pre = v, y = act(v) over (rows, cols)
/// row-major, each rounded to T once; pre may be null; pre_f32 (may be null, may alias z) gets v
/// unrounded. For T = float, z may alias pre or y.
template <typename T>
void linear_epilogue_cuda(const float* z, const T* bias, T* pre, T* y, float* pre_f32, int64_t rows, int64_t cols,
                          int act, cudaStream_t stream);

/// dpre = dy * act'(a) for n elements: ReLU reads a = y or pre (dpre = a > 0 ? dy : 0), GELU a = pre.
template <typename T>
void linear_act_backward_cuda(const T* dy, const T* a, T* dpre, int64_t n, int act, cudaStream_t stream);

/// Relu bit-masks (rows of `ld` bytes; bit j % 8 of byte j / 8 for column j; padding bits 0), for
/// when no cuBLASLt RELU_AUX / DRELU epilogue fits: the mask of y = relu(pre) (bit set where y > 0,
/// i.e. pre > 0; y may also be pre itself), and x[r, j] = 0 where the bit of (r, j) is clear.
template <typename T>
void relu_mask_from_output_cuda(const T* y, uint8_t* mask, int64_t rows, int64_t cols, int64_t ld, cudaStream_t stream);
template <typename T>
void relu_mask_apply_cuda(T* x, const uint8_t* mask, int64_t rows, int64_t cols, int64_t ld, cudaStream_t stream);

/// db (cols) = sum over rows of dpre (rows, cols), in fp32 in a fixed order (deterministic, no
/// atomics), rounded to Out once. In is Out or float, or Out is float (an f32 master's gradient).
template <typename In, typename Out>
void bias_grad_cuda(const In* dpre, Out* db, int64_t rows, int64_t cols, cudaStream_t stream);

}  // namespace cudl::kernels
