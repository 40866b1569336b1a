// backend/op.hpp — the op table's vocabulary: op kinds, attribute slots, tensor views and the call
// record. Each op's contract (checks, named arguments, typed attributes) lives in src/ops/.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "cudl/device.hpp"
#include "cudl/dtype.hpp"
#include "cudl/shape.hpp"
#include "cudl/tensor.hpp"

namespace cudl {

// Every op a backend can implement, generated from src/ops/op_list.inc (names, arities). Each op's
// contract -- its tensor slots, attributes and semantics -- is documented next to its check in
// src/ops/<family>.hpp. Conventions: inputs then outputs, all contiguous row-major; outputs are
// preallocated by the caller with the documented shape; an optional output or input is passed as an
// undefined view (data == nullptr). f32 unless stated. Attributes travel in OpAttrs' slots; each op's
// typed attributes (ops::Conv2dAttrs, ops::AdamAttrs, ...) convert to and from them in one place.
// Backward ops never use floating-point atomics.
enum class OpKind : int {
#define X(name, min_in, max_in, min_out, max_out) name,
#include "ops/op_list.inc"
#undef X
  Count
};

constexpr int kOpCount = static_cast<int>(OpKind::Count);
CUDL_API const char* op_name(OpKind op);

enum class UnaryOp : int {
  Relu, LeakyRelu, Elu, GeluErf, GeluTanh, Silu, Sigmoid, Tanh, Softplus,
  Exp, Log, Sqrt, Abs, Neg, Square, Count
};
// Unary semantics (like PyTorch): relu(NaN) = NaN; softplus(x) = x for x > 20, else log1p(exp(x));
// gelu_tanh uses 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))). UnaryBackward reads y (the output)
// for Relu (dx = y > 0 ? dy : 0, NaN passes dy), Sigmoid, Tanh, Exp, Sqrt (dy / (2y)); nothing for
// Neg; x (the input) for every other op. abs'(x) = sign(x) with sign(0) = 0, sign(NaN) = NaN.
/// True when UnaryBackward of `op` reads its input x (in 0).
constexpr bool unary_needs_input(UnaryOp op) {
  return !(op == UnaryOp::Relu || op == UnaryOp::Sigmoid || op == UnaryOp::Tanh || op == UnaryOp::Exp ||
           op == UnaryOp::Sqrt || op == UnaryOp::Neg);
}
/// True when UnaryBackward of `op` reads the forward output y (in 1).
constexpr bool unary_needs_output(UnaryOp op) {
  return op == UnaryOp::Relu || op == UnaryOp::Sigmoid || op == UnaryOp::Tanh || op == UnaryOp::Exp ||
         op == UnaryOp::Sqrt;
}
// Maximum / Minimum propagate NaN (like torch.maximum). Their gradients follow PyTorch: on ties
// (a == b) each side gets dc / 2; otherwise the selected side gets dc; when either is NaN both get dc.
// BinaryBackward reads a and b (their shapes always; values for Mul, Div, Maximum, Minimum).
enum class BinaryOp : int { Add, Sub, Mul, Div, Maximum, Minimum, Count };
enum class ReduceOp : int { Sum, Mean, Max, Var, Count };
enum class Epilogue : int { None, Relu, Gelu };
enum class Reduction : int { Mean, Sum };
constexpr int64_t kReduceAllAxes = -1000;  // i[1] value for "reduce over every axis"

/// Scalar attributes of a call; each op documents which slots it reads.
struct OpAttrs {
  std::array<double, 4> f{};
  std::array<int64_t, 8> i{};
};

/// A non-owning view of a contiguous tensor, as ops see it.
struct TensorView {
  void* data = nullptr;
  Shape shape;
  DType dtype = DType::f32;
  Device device;

  bool defined() const { return data != nullptr; }
  int64_t numel() const { return shape.numel(); }
  template <typename T> T* as() const { return static_cast<T*>(data); }
  static TensorView of(const Tensor& t) {
    return t.defined() ? TensorView{t.data(), t.shape(), t.dtype(), t.device()} : TensorView{};
  }
};

/// How f32 GEMMs and convolutions may compute on the CUDA backend. F32: fp32 products (CUDA cores).
/// TF32: tensor cores read each f32 input rounded to TF32 (10 mantissa bits; products and sums stay
/// fp32), as cuBLAS's CUBLAS_COMPUTE_32F_FAST_TF32 and cuDNN's TENSOR_CORE engines do. Read by the
/// cuBLAS(Lt) and cuDNN calls of Matmul, Linear(Backward), the conv family, RecurrentSequence(Backward)
/// and the unfused attention; cudl's own kernels and the CPU reference always compute in fp32.
enum class MathMode : uint8_t { F32, TF32 };
const char* math_mode_name(MathMode m);
/// The process default: TF32 when the environment has CUDL_ALLOW_TF32=1, F32 when it is unset, empty
/// or 0; any other value is an error naming it.
MathMode default_math_mode();

class ExecContext;  // backend/backend.hpp

/// One call of an op: what the backend function receives.
struct OpCall {
  OpKind op = OpKind::Count;
  const TensorView* inputs = nullptr;
  int n_inputs = 0;
  const TensorView* outputs = nullptr;
  int n_outputs = 0;
  OpAttrs attrs;
  ExecContext* ctx = nullptr;
  const char* label = "";  // "layer/op" for errors and profiling
  MathMode math = MathMode::F32;

  const TensorView& in(int k) const;   // throws naming the op when k is out of range
  const TensorView& out(int k) const;
  bool has_in(int k) const { return k < n_inputs && inputs[k].defined(); }
  bool has_out(int k) const { return k < n_outputs && outputs[k].defined(); }
};

}  // namespace cudl
