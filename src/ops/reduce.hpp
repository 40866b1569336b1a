// ops/reduce.hpp — the reduce op family's contract (Reduce, ReduceBackward, Argmax): typed attributes,
// reduction geometry, named arguments and the checks both backends run first.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- reductions (kernels/reduce.cu, src/cpu/reduce.cpp) ---
// Reduce          in: x              out: y, [indices i64 for Max]; i[0]=ReduceOp, i[1]=axis
//                   (negative counts from the back; kReduceAllAxes = every axis), i[2]=keepdim,
//                   i[3]=unbiased (Var)
// ReduceBackward  in: x, y, dy, [indices]  out: dx; same attrs. x is read only for Var, y never
//                   (either may be undefined otherwise), indices are required for Max
// Argmax          in: x              out: indices (i32); i[1]=axis, i[2]=keepdim. Max and Argmax:
//                   first occurrence wins, NaN counts as the maximum (like torch)

namespace cudl {
namespace ops {

/// Reduce / ReduceBackward: i[0] = op, i[1] = axis (kReduceAllAxes: every axis), i[2] = keepdim,
/// i[3] = unbiased (Var).
struct ReduceAttrs {
  ReduceOp op = ReduceOp::Sum;
  int64_t axis = kReduceAllAxes;
  bool keepdim = false, unbiased = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(op);
    a.i[1] = axis;
    a.i[2] = keepdim ? 1 : 0;
    a.i[3] = unbiased ? 1 : 0;
    return a;
  }
  static ReduceAttrs from(const OpAttrs& a) {
    return {static_cast<ReduceOp>(a.i[0]), a.i[1], a.i[2] != 0, a.i[3] != 0};
  }
};

/// Argmax: i[1] = axis, i[2] = keepdim (the slots Reduce uses for them).
struct ArgmaxAttrs {
  int64_t axis = kReduceAllAxes;
  bool keepdim = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[1] = axis;
    a.i[2] = keepdim ? 1 : 0;
    return a;
  }
  static ArgmaxAttrs from(const OpAttrs& a) { return {a.i[1], a.i[2] != 0}; }
};

/// A reduction seen as x (outer, R, inner) -> y (outer, inner): element (o, r, i) of x is
/// x[(o * R + r) * inner + i]. "All axes" is outer = inner = 1, R = numel.
struct ReduceArgs {
  TensorView x, y, indices;  // Reduce: x -> y, [indices]; Argmax: x -> indices
  TensorView dy, dx;         // ReduceBackward: x (Var), dy, [indices] (Max) -> dx
  ReduceOp op = ReduceOp::Sum;
  int64_t outer = 1, R = 1, inner = 1;
  bool all_axes = false;
  bool keepdim = false;
  bool unbiased = false;     // Var: divide by R - 1
  bool has_indices = false;  // Reduce(Max): indices output given
  Shape x_shape, y_shape;    // y_shape: the reduced shape (x with the axis removed, or set to 1 when keepdim)

  int64_t out_numel() const { return outer * inner; }
};

/// Reduce, ReduceBackward and Argmax: decodes the attributes, checks dtypes and shapes (y, indices, dy,
/// dx) and throws naming the op, label and shapes. For all axes without keepdim y may be () or (1,).
ReduceArgs check_reduce_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
