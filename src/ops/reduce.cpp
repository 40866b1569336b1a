// ops/reduce.cpp — argument checks of the reduce op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/reduce.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include "cudl/error.hpp"
#include "ops/common.hpp"

namespace cudl {
namespace ops {

namespace chk = op_checks;

ReduceArgs check_reduce_call(const OpCall& call) {
  ReduceArgs p;
  const ReduceAttrs attrs = ReduceAttrs::from(call.attrs);
  const bool argmax = call.op == OpKind::Argmax;
  const bool backward = call.op == OpKind::ReduceBackward;
  if (argmax) {
    p.op = ReduceOp::Max;
  } else {
    const int64_t k = static_cast<int64_t>(attrs.op);
    if (k < 0 || k >= static_cast<int64_t>(ReduceOp::Count)) CUDL_FAIL(chk::who(call), ": invalid ReduceOp ", k);
    p.op = static_cast<ReduceOp>(k);
  }
  const ArgmaxAttrs argmax_attrs = ArgmaxAttrs::from(call.attrs);
  p.keepdim = argmax ? argmax_attrs.keepdim : attrs.keepdim;
  p.unbiased = !argmax && attrs.unbiased;
  chk::arity(call);

  // The shape of x: x itself, or dx for the backward (x may be omitted there unless Var needs it).
  const TensorView& xv = backward ? chk::need_out(call, 0, "dx") : chk::need_in(call, 0, "x");
  const char* x_name = backward ? "dx" : "x";
  chk::dtype(call, xv, x_name, DType::f32);
  p.x_shape = xv.shape;

  const int64_t axis_attr = argmax ? argmax_attrs.axis : attrs.axis;
  const int rank = p.x_shape.rank();
  std::vector<int64_t> ydims;
  if (axis_attr == kReduceAllAxes) {
    p.all_axes = true;
    p.outer = 1;
    p.inner = 1;
    p.R = p.x_shape.numel();
    if (p.keepdim) ydims.assign(rank, 1);
  } else {
    if (axis_attr < -rank || axis_attr >= rank)
      CUDL_FAIL(chk::who(call), ": axis ", axis_attr, " out of range for ", x_name, " ", p.x_shape);
    const int axis = static_cast<int>(axis_attr < 0 ? axis_attr + rank : axis_attr);
    p.outer = 1;
    p.inner = 1;
    for (int d = 0; d < axis; ++d) p.outer *= p.x_shape.dims()[d];
    for (int d = axis + 1; d < rank; ++d) p.inner *= p.x_shape.dims()[d];
    p.R = p.x_shape.dims()[axis];
    for (int d = 0; d < rank; ++d) {
      if (d != axis)
        ydims.push_back(p.x_shape.dims()[d]);
      else if (p.keepdim)
        ydims.push_back(1);
    }
  }
  p.y_shape = Shape(ydims);
  if (p.op == ReduceOp::Max && p.R == 0 && p.out_numel() > 0)
    CUDL_FAIL(chk::who(call), ": max/argmax over an empty dimension of ", x_name, " ", p.x_shape);

  // y-shaped tensors: the all-axes scalar may also be given as (1,).
  auto check_y_shape = [&](const TensorView& v, const char* name) {
    const bool scalar_ok = p.all_axes && !p.keepdim && v.shape == Shape{1};
    if (!scalar_ok) chk::shape(call, v, name, p.y_shape, std::string("reduction of ") + x_name + " " + p.x_shape.str());
  };

  if (argmax) {
    const TensorView& idx = chk::need_out(call, 0, "indices");
    chk::dtype(call, idx, "indices", DType::i32);
    check_y_shape(idx, "indices");
    p.has_indices = true;
    p.x = xv, p.indices = idx;
    return p;
  }
  if (!backward) {
    const TensorView& y = chk::need_out(call, 0, "y");
    chk::dtype(call, y, "y", DType::f32);
    check_y_shape(y, "y");
    p.has_indices = call.has_out(1);
    if (p.has_indices) {
      if (p.op != ReduceOp::Max) CUDL_FAIL(chk::who(call), ": indices output is only produced by ReduceOp::Max");
      chk::dtype(call, call.outputs[1], "indices", DType::i64);
      check_y_shape(call.outputs[1], "indices");
      p.indices = call.outputs[1];
    }
    p.x = xv, p.y = y;
    return p;
  }
  const TensorView& dy = chk::need_in(call, 2, "dy");
  chk::dtype(call, dy, "dy", DType::f32);
  check_y_shape(dy, "dy");
  p.dy = dy, p.dx = xv;
  if (p.op == ReduceOp::Var) {
    const TensorView& x = chk::need_in(call, 0, "x");
    chk::dtype(call, x, "x", DType::f32);
    chk::shape(call, x, "x", p.x_shape, "same as dx");
    p.x = x;
  }
  if (p.op == ReduceOp::Max) {
    const TensorView& idx = chk::need_in(call, 3, "indices");
    chk::dtype(call, idx, "indices", DType::i64);
    check_y_shape(idx, "indices");
    p.has_indices = true;
    p.indices = idx;
  }
  return p;
}

}  // namespace ops
}  // namespace cudl
