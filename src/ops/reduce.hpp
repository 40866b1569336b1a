// ops/reduce.hpp — reduction geometry and argument checks of the reduce op family (Reduce,
// ReduceBackward, Argmax), shared by the CPU reference and the CUDA backend.
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

/// A reduction seen as x (outer, R, inner) -> y (outer, inner): element (o, r, i) of x is
/// x[(o * R + r) * inner + i]. "All axes" is outer = inner = 1, R = numel.
struct ReduceProblem {
  ReduceOp op = ReduceOp::Sum;
  int64_t outer = 1, R = 1, inner = 1;
  bool all_axes = false;
  bool keepdim = false;
  bool unbiased = false;     // Var: divide by R - 1
  bool has_indices = false;  // Reduce(Max): indices output given
  Shape x, y;                // y: the reduced shape (x with the axis removed, or set to 1 when keepdim)

  int64_t out_numel() const { return outer * inner; }
};

/// Reduce, ReduceBackward and Argmax: decodes i[0..3], checks dtypes and shapes (y, indices, dy,
/// dx) and throws naming the op, label and shapes. For all axes without keepdim y may be () or (1,).
ReduceProblem check_reduce_call(const OpCall& call);

}  // namespace cudl
