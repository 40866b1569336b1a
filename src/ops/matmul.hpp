// cpu/matmul.hpp — argument checks of the matmul op family (Matmul, Linear, LinearBackward) shared by
// the CPU reference and the CUDA backend, and the epilogue math shared by the reference and the kernels.
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/hd.hpp"
#include "backend/op.hpp"

namespace cudl {

/// c (batch, m, n) = op(a) (batch, m, k) · op(b) (batch or broadcast, k, n), all row-major.
struct MatmulProblem {
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  bool broadcast_b = false;  // b is 2-D and shared by every batch
};
/// Matmul: in a (..., M, K) [or (..., K, M) with trans_a], b (..., K, N) / (K, N) [(.., N, K) with
/// trans_b]; out c (..., M, N); f32; batch dimensions of a and b equal unless b is 2-D.
MatmulProblem check_matmul_call(const OpCall& call);

/// y (rows, out) = act(x (rows, in) · wᵀ + b); leading dimensions of x are flattened into rows.
struct LinearProblem {
  int64_t rows = 0, in = 0, out = 0;
  Epilogue epilogue = Epilogue::None;
  bool has_bias = false, has_pre = false;
  bool has_mask = false;  // Relu: out 1 is the relu bit-mask (relu_mask_row_bytes(out) per row)
};
LinearProblem check_linear_call(const OpCall& call);

/// Bytes per row of a Linear's relu bit-mask over `features` outputs: bit j % 8 of byte j / 8 is set
/// where the pre-activation of feature j was > 0; rows are padded to 128 bits (cuBLASLt's
/// RELU_AUX / DRELU epilogues want the mask's leading dimension a multiple of 128). Padding bits are
/// unspecified (the CPU writes 0, cuBLASLt leaves them) and never read.
constexpr int64_t relu_mask_row_bytes(int64_t features) { return (features + 127) / 128 * 16; }

/// LinearBackward: dpre = dy ⊙ act'(·); dx = dpre·w, dw = dpreᵀ·x, db = Σ_rows dpre. With
/// `dx_relu` (i[1]) dx is taken through the relu of the layer below, whose mask is input 5:
/// dx = mask ⊙ (dpre·w), and out 3 (optional) is that layer's bias gradient Σ_rows dx.
struct LinearBackwardProblem {
  int64_t rows = 0, in = 0, out = 0;
  Epilogue epilogue = Epilogue::None;
  int act_input = -1;  // input slot read for act': 3 (y) or 4 (pre); -1 for Epilogue::None
  bool has_dx = false, has_dw = false, has_db = false;
  bool dx_relu = false, has_db_below = false;
};
/// in: x, w, dy, [y], [pre], [mask below]; x is needed for dw, w for dx; Relu reads y (or pre),
/// Gelu reads pre.
LinearBackwardProblem check_linear_backward_call(const OpCall& call);

namespace matmul_math {

/// The Linear epilogues, as cuBLASLt computes them: ReLU is max(v, 0) with NaN -> 0 (the GPU
/// epilogue's behaviour, unlike the elementwise relu op); GELU is the tanh approximation.
CUDL_HD float relu(float v) { return v > 0.f ? v : 0.f; }
CUDL_HD float relu_grad(float dy, float y_or_pre) { return y_or_pre > 0.f ? dy : 0.f; }

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCoef = 0.044715f;

CUDL_HD float gelu_tanh(float v) { return 0.5f * v * (1.f + tanhf(kSqrt2OverPi * (v + kGeluCoef * v * v * v))); }
CUDL_HD float gelu_tanh_grad(float dy, float v) {
  const float t = tanhf(kSqrt2OverPi * (v + kGeluCoef * v * v * v));
  return dy * (0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kGeluCoef * v * v));
}

}  // namespace matmul_math
}  // namespace cudl
