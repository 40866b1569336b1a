// kernels/matmul.cuh — launchers of the matmul family's small kernels (the GEMMs themselves are cuBLASLt):
// the Linear epilogue when no cuBLASLt epilogue fits, act' in front of the backward GEMMs, the bias gradient.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cudl::kernels {

/// Activation codes, as cudl::Epilogue: 0 none, 1 ReLU (NaN -> 0), 2 GELU (tanh approximation).
/// pre = z + bias (bias indexed by column, may be null), y = act(pre) over (rows, cols) row-major;
/// pre may be null; z may alias pre or y.
void linear_epilogue_cuda(const float* z, const float* bias, float* pre, float* y, int64_t rows, int64_t cols, int act,
                          cudaStream_t stream);

/// dpre = dy * act'(a) for n elements: ReLU reads a = y or pre (dpre = a > 0 ? dy : 0), GELU a = pre.
void linear_act_backward_cuda(const float* dy, const float* a, float* dpre, int64_t n, int act, cudaStream_t stream);

/// Relu bit-masks (rows of `ld` bytes; bit j % 8 of byte j / 8 for column j; padding bits 0), for
/// when no cuBLASLt RELU_AUX / DRELU epilogue fits: the mask of y = relu(pre) (bit set where y > 0,
/// i.e. pre > 0), and x[r, j] = 0 where the bit of (r, j) is clear.
void relu_mask_from_output_cuda(const float* y, uint8_t* mask, int64_t rows, int64_t cols, int64_t ld,
                                cudaStream_t stream);
void relu_mask_apply_cuda(float* x, const uint8_t* mask, int64_t rows, int64_t cols, int64_t ld, cudaStream_t stream);

/// db (cols) = sum over rows of dpre (rows, cols), in a fixed order (deterministic, no atomics).
void bias_grad_cuda(const float* dpre, float* db, int64_t rows, int64_t cols, cudaStream_t stream);

}  // namespace cudl::kernels
