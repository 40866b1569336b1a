// ops/matmul.hpp — the matmul op family's contract (Matmul, Linear, LinearBackward): typed attributes,
// named arguments and checks, and the epilogue math shared by the CPU reference and the kernels.
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/hd.hpp"
#include "backend/op.hpp"

// --- matmul / linear (kernels/matmul.cu, src/cuda/matmul.cpp via cuBLASLt, src/cpu/matmul.cpp) ---
// Matmul          in: a (..., M, K), b (..., K, N) or (K, N)   out: c (..., M, N)
//                   i[0]=trans_a, i[1]=trans_b (then a is (..., K, M), b is (..., N, K))
// Linear          in: x (N, in), w (out, in), [bias (out)]   out: y (N, out), [pre (N, out) for Gelu
//                   | relu mask u8 (N, relu_mask_row_bytes(out)) for Relu]
//                   i[0]=Epilogue (None, Relu, Gelu): y = act(x·wᵀ + b); pre = x·wᵀ + b
//                   (pre only with Gelu). The activations are cuBLASLt's fused epilogues: Gelu is the
//                   tanh form 0.5v(1 + tanh(sqrt(2/pi)(v + 0.044715v^3))); Relu is max(v, 0) with
//                   NaN -> 0 (unlike the Unary relu; fit finds NaN weights this hides, see docs/models.md). x may have leading dims (..., in), flattened.
//                   The relu mask (relu_mask_row_bytes below) has bit j%8 of byte j/8 of row r set where pre > 0.
// LinearBackward  in: x, w, dy, [y for Relu], [pre for Gelu], [relu mask below]
//                   out: dx, dw, db, [db below] (any may be undefined)
//                   slots: in 3 = y, in 4 = pre (Relu accepts either); x needed only for dw, w for dx.
//                   i[1]=1: x is the output of a Linear with Relu whose mask is in 5: dx is taken
//                   through that relu (dx = mask ⊙ dpre·w, the lower layer's dpre) and out 3 gets its
//                   bias gradient Σ_rows dx: on CUDA one GEMM with the DRELU_BGRAD epilogue
//                   16-bit storage: dw and db (one type for both) may be f32, the gradients of the
//                   f32 parameters the layer's 16-bit weights were converted from, written by the GEMM
//                   in fp32 (no 16-bit gradient, no Cast back)

namespace cudl {

/// Bytes per row of a Linear's relu bit-mask over `features` outputs: bit j % 8 of byte j / 8 is set
/// where the pre-activation of feature j was > 0; rows are padded to 128 bits (cuBLASLt's
/// RELU_AUX / DRELU epilogues want the mask's leading dimension a multiple of 128). Padding bits are
/// unspecified (the CPU writes 0, cuBLASLt leaves them) and never read.
constexpr int64_t relu_mask_row_bytes(int64_t features) { return (features + 127) / 128 * 16; }

namespace ops {

/// Matmul: i[0] = trans_a, i[1] = trans_b.
struct MatmulAttrs {
  bool trans_a = false, trans_b = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = trans_a ? 1 : 0;
    a.i[1] = trans_b ? 1 : 0;
    return a;
  }
  static MatmulAttrs from(const OpAttrs& a) { return {a.i[0] != 0, a.i[1] != 0}; }
};

/// Linear: i[0] = epilogue.
struct LinearAttrs {
  Epilogue epilogue = Epilogue::None;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(epilogue);
    return a;
  }
  static LinearAttrs from(const OpAttrs& a) { return {static_cast<Epilogue>(a.i[0])}; }
};

/// LinearBackward: i[0] = epilogue of the forward Linear, i[1] = dx_relu (dx through the relu of the
/// Linear below, whose mask is input 5; its bias gradient goes to output 3).
struct LinearBackwardAttrs {
  Epilogue epilogue = Epilogue::None;
  bool dx_relu = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(epilogue);
    a.i[1] = dx_relu ? 1 : 0;
    return a;
  }
  static LinearBackwardAttrs from(const OpAttrs& a) { return {static_cast<Epilogue>(a.i[0]), a.i[1] != 0}; }
};

/// c (batch, m, n) = op(a) (batch, m, k) · op(b) (batch or broadcast, k, n), all row-major.
struct MatmulArgs {
  TensorView a, b, c;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  bool broadcast_b = false;  // b is 2-D and shared by every batch
  DType dtype = DType::f32;  // storage type of a, b and c (ops::check_storage): f32, bf16 or f16
};
/// Matmul: in a (..., M, K) [or (..., K, M) with trans_a], b (..., K, N) / (K, N) [(.., N, K) with
/// trans_b]; out c (..., M, N); one storage type (f32, bf16 or f16); batch dimensions of a and b
/// equal unless b is 2-D.
MatmulArgs check_matmul_call(const OpCall& call);

/// y (rows, out) = act(x (rows, in) · wᵀ + b); leading dimensions of x are flattened into rows.
struct LinearArgs {
  TensorView x, w, bias;  // bias may be undefined
  TensorView y, pre;      // pre: Gelu's pre-activation output (undefined otherwise)
  TensorView mask;        // Relu's bit-mask output (relu_mask_row_bytes(out) per row), may be undefined
  int64_t rows = 0, in = 0, out = 0;
  Epilogue epilogue = Epilogue::None;
  bool has_bias = false, has_pre = false;
  bool has_mask = false;  // Relu: out 1 is the relu bit-mask
  DType dtype = DType::f32;  // storage type of x, w, bias, y and pre (ops::check_storage)
};
LinearArgs check_linear_call(const OpCall& call);

/// LinearBackward: dpre = dy ⊙ act'(·); dx = dpre·w, dw = dpreᵀ·x, db = Σ_rows dpre. With
/// `dx_relu` dx is taken through the relu of the layer below, whose mask is input 5:
/// dx = mask ⊙ (dpre·w), and out 3 (optional) is that layer's bias gradient Σ_rows dx.
struct LinearBackwardArgs {
  TensorView x, w, dy;          // x needed for dw, w for dx
  TensorView act;               // what act' reads: y (in 3) or pre (in 4); undefined for Epilogue::None
  TensorView mask;              // in 5: the relu mask of the Linear below (dx_relu)
  TensorView dx, dw, db;        // any may be undefined
  TensorView db_below;          // out 3: the bias gradient of the Linear below (dx_relu), may be undefined
  int64_t rows = 0, in = 0, out = 0;
  Epilogue epilogue = Epilogue::None;
  int act_input = -1;  // input slot read for act': 3 (y) or 4 (pre); -1 for Epilogue::None
  bool has_dx = false, has_dw = false, has_db = false;
  bool dx_relu = false, has_db_below = false;
  DType dtype = DType::f32;  // storage type of every float slot (ops::check_storage); the mask is u8
};
/// in: x, w, dy, [y], [pre], [mask below]; x is needed for dw, w for dx; Relu reads y (or pre),
/// Gelu reads pre.
LinearBackwardArgs check_linear_backward_call(const OpCall& call);

}  // namespace ops

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
