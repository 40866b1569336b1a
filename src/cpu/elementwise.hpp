// cpu/elementwise.hpp — argument checks and broadcast layout of the elementwise op family, shared by
// the CPU reference and the CUDA backend so both accept and reject exactly the same calls.
#pragma once

#include <array>
#include <cstdint>

#include "backend/op.hpp"

namespace cudl {

/// A validated Unary / UnaryBackward call: which tensors are present and how many elements.
struct UnaryProblem {
  UnaryOp op = UnaryOp::Relu;
  float alpha = 0;  // leaky_relu slope, elu alpha
  int64_t n = 0;
  bool has_x = false, has_y = false;  // backward: the inputs given (the op's needs are checked)
};
/// Unary: x -> y. UnaryBackward: (x, y, dy) -> dx where x / y must be given when
/// unary_needs_input / unary_needs_output say so. All f32 of one shape.
UnaryProblem check_unary_call(const OpCall& call);

/// A validated Binary / BinaryBackward call.
struct BinaryProblem {
  BinaryOp op = BinaryOp::Add;
  Shape a, b, c;                        // c = broadcast_shapes(a, b)
  bool has_da = false, has_db = false;  // backward only
};
BinaryProblem check_binary_call(const OpCall& call);

/// A validated BinaryScalar / BinaryScalarBackward call.
struct BinaryScalarProblem {
  BinaryOp op = BinaryOp::Add;
  float scalar = 0;
  bool scalar_first = false;  // y = scalar op x
  int64_t n = 0;
};
BinaryScalarProblem check_binary_scalar_call(const OpCall& call);

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
