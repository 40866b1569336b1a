// ops/elementwise.hpp — the elementwise op family's contract (Unary, Binary, BinaryScalar and their
// backward): slots, typed attributes, named arguments and the checks both backends run first.
#pragma once

#include <array>
#include <cstdint>

#include "backend/op.hpp"

// --- elementwise (kernels/elementwise.cu, src/cpu/elementwise.cpp) ---
// Unary           in: x              out: y             i[0]=UnaryOp, f[0]=alpha (leaky_relu, elu)
// UnaryBackward   in: x, y, dy       out: dx            same attrs; x or y may be undefined when the
//                                                         op's derivative does not need it (see unary_needs)
// Binary          in: a, b           out: c = a op b, numpy broadcasting; i[0]=BinaryOp
// BinaryBackward  in: a, b, dc       out: da, db (either may be undefined), summed over broadcast dims
// BinaryScalar    in: x              out: y = x op f[0] (i[1]==0) or f[0] op x (i[1]==1); i[0]=BinaryOp
// BinaryScalarBackward  in: x, dy    out: dx; attrs as BinaryScalar
// The unary and binary functions' semantics are documented with UnaryOp / BinaryOp in backend/op.hpp.
// Storage: every float tensor of a call is f32, or every one bf16, or every one f16 (ops/precision.hpp);
// math is fp32 whatever the storage, each store rounds to nearest even.

namespace cudl {
namespace ops {

/// Unary / UnaryBackward: i[0] = op, f[0] = alpha (leaky_relu slope, elu alpha).
struct UnaryAttrs {
  UnaryOp op = UnaryOp::Relu;
  double alpha = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(op);
    a.f[0] = alpha;
    return a;
  }
  static UnaryAttrs from(const OpAttrs& a) { return {static_cast<UnaryOp>(a.i[0]), a.f[0]}; }
};

/// Binary / BinaryBackward: i[0] = op.
struct BinaryAttrs {
  BinaryOp op = BinaryOp::Add;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(op);
    return a;
  }
  static BinaryAttrs from(const OpAttrs& a) { return {static_cast<BinaryOp>(a.i[0])}; }
};

/// BinaryScalar / BinaryScalarBackward: i[0] = op, f[0] = scalar, i[1] = scalar_first (y = scalar op x).
struct BinaryScalarAttrs {
  BinaryOp op = BinaryOp::Add;
  double scalar = 0;
  bool scalar_first = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(op);
    a.f[0] = scalar;
    a.i[1] = scalar_first ? 1 : 0;
    return a;
  }
  static BinaryScalarAttrs from(const OpAttrs& a) { return {static_cast<BinaryOp>(a.i[0]), a.f[0], a.i[1] == 1}; }
};

/// A validated Unary / UnaryBackward call. Unary: x -> y. UnaryBackward: (x, y, dy) -> dx where x / y
/// are given when unary_needs_input / unary_needs_output say so (undefined otherwise may be).
struct UnaryArgs {
  TensorView x, y;  // Unary: y is the output; UnaryBackward: y is the forward output (an input)
  TensorView dy, dx;  // backward only
  UnaryOp op = UnaryOp::Relu;
  float alpha = 0;
  int64_t n = 0;
  bool has_x = false, has_y = false;  // backward: the inputs given (the op's needs are checked)
  DType storage = DType::f32;         // of every tensor: f32, bf16 or f16
};
/// One shape, one storage type.
UnaryArgs check_unary_call(const OpCall& call);

/// A validated Binary / BinaryBackward call.
struct BinaryArgs {
  TensorView a, b, c;      // forward: c is the output
  TensorView dc, da, db;   // backward: da / db may be undefined
  BinaryOp op = BinaryOp::Add;
  Shape a_shape, b_shape, c_shape;      // c_shape = broadcast_shapes(a, b)
  bool has_da = false, has_db = false;  // backward only
  DType storage = DType::f32;           // of every tensor: f32, bf16 or f16
};
BinaryArgs check_binary_call(const OpCall& call);

/// A validated BinaryScalar / BinaryScalarBackward call.
struct BinaryScalarArgs {
  TensorView x, y;   // forward
  TensorView dy, dx;  // backward (x is read too)
  BinaryOp op = BinaryOp::Add;
  float scalar = 0;
  bool scalar_first = false;  // y = scalar op x
  int64_t n = 0;
  DType storage = DType::f32;  // of every tensor: f32, bf16 or f16
};
BinaryScalarArgs check_binary_scalar_call(const OpCall& call);

}  // namespace ops

/// c = a op b as a loop nest over c's dimensions with size-1 dimensions dropped and neighbours
/// merged where both operands stay contiguous across them. Element k of the nest (row-major over
/// dims) is c[k]; its operands are a[sum coord[d] * a_stride[d]] and b[...] (stride 0 where that
/// operand is broadcast). rank 0 means a single element.
struct BroadcastLayout {
  int rank = 0;
  std::array<int64_t, Shape::kMaxDims> dims{}, a_stride{}, b_stride{};
};
BroadcastLayout broadcast_layout(const Shape& a, const Shape& b, const Shape& c);

}  // namespace cudl
