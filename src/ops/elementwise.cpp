// ops/elementwise.cpp — argument checks of the elementwise op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/elementwise.hpp"

#include <string>
#include <vector>

#include "cudl/error.hpp"
#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

namespace chk = op_checks;

UnaryArgs check_unary_call(const OpCall& call) {
  UnaryArgs p;
  const UnaryAttrs attrs = UnaryAttrs::from(call.attrs);
  const int64_t k = static_cast<int64_t>(attrs.op);
  if (k < 0 || k >= static_cast<int64_t>(UnaryOp::Count)) CUDL_FAIL(chk::who(call), ": invalid UnaryOp ", k);
  p.op = attrs.op;
  p.alpha = static_cast<float>(attrs.alpha);
  chk::arity(call);
  const DType st = ops::check_storage(call);
  p.storage = st;
  if (call.op == OpKind::Unary) {
    const TensorView& x = chk::need_in(call, 0, "x");
    const TensorView& y = chk::need_out(call, 0, "y");
    chk::dtype(call, x, "x", st);
    chk::dtype(call, y, "y", st);
    chk::shape(call, y, "y", x.shape, "same as x");
    p.x = x;
    p.y = y;
    p.n = x.numel();
    p.has_x = true;
    return p;
  }
  const TensorView& dy = chk::need_in(call, 2, "dy");
  const TensorView& dx = chk::need_out(call, 0, "dx");
  p.dy = dy;
  p.dx = dx;
  chk::dtype(call, dy, "dy", st);
  chk::dtype(call, dx, "dx", st);
  chk::shape(call, dx, "dx", dy.shape, "same as dy");
  if (unary_needs_input(p.op)) chk::need_in(call, 0, "x");
  if (unary_needs_output(p.op)) chk::need_in(call, 1, "y");
  p.has_x = call.has_in(0);
  p.has_y = call.has_in(1);
  if (p.has_x) {
    p.x = call.inputs[0];
    chk::dtype(call, p.x, "x", st);
    chk::shape(call, p.x, "x", dy.shape, "same as dy");
  }
  if (p.has_y) {
    p.y = call.inputs[1];
    chk::dtype(call, p.y, "y", st);
    chk::shape(call, p.y, "y", dy.shape, "same as dy");
  }
  p.n = dy.numel();
  return p;
}

BinaryArgs check_binary_call(const OpCall& call) {
  BinaryArgs p;
  const int64_t k = static_cast<int64_t>(BinaryAttrs::from(call.attrs).op);
  if (k < 0 || k >= static_cast<int64_t>(BinaryOp::Count)) CUDL_FAIL(chk::who(call), ": invalid BinaryOp ", k);
  p.op = static_cast<BinaryOp>(k);
  const bool backward = call.op == OpKind::BinaryBackward;
  chk::arity(call);
  const DType st = ops::check_storage(call);
  p.storage = st;
  const TensorView& a = chk::need_in(call, 0, "a");
  const TensorView& b = chk::need_in(call, 1, "b");
  chk::dtype(call, a, "a", st);
  chk::dtype(call, b, "b", st);
  p.a = a;
  p.b = b;
  p.a_shape = a.shape;
  p.b_shape = b.shape;
  p.c_shape = broadcast_shapes(a.shape, b.shape, chk::who(call).c_str());
  const std::string why = "broadcast of a " + a.shape.str() + " and b " + b.shape.str();
  if (!backward) {
    const TensorView& c = chk::need_out(call, 0, "c");
    chk::dtype(call, c, "c", st);
    chk::shape(call, c, "c", p.c_shape, why);
    p.c = c;
    return p;
  }
  const TensorView& dc = chk::need_in(call, 2, "dc");
  chk::dtype(call, dc, "dc", st);
  chk::shape(call, dc, "dc", p.c_shape, why);
  p.dc = dc;
  p.has_da = call.has_out(0);
  p.has_db = call.has_out(1);
  if (p.has_da) {
    p.da = call.outputs[0];
    chk::dtype(call, p.da, "da", st);
    chk::shape(call, p.da, "da", p.a_shape, "same as a");
  }
  if (p.has_db) {
    p.db = call.outputs[1];
    chk::dtype(call, p.db, "db", st);
    chk::shape(call, p.db, "db", p.b_shape, "same as b");
  }
  return p;
}

BinaryScalarArgs check_binary_scalar_call(const OpCall& call) {
  BinaryScalarArgs p;
  const BinaryScalarAttrs attrs = BinaryScalarAttrs::from(call.attrs);
  const int64_t k = static_cast<int64_t>(attrs.op);
  if (k < 0 || k >= static_cast<int64_t>(BinaryOp::Count)) CUDL_FAIL(chk::who(call), ": invalid BinaryOp ", k);
  if (call.attrs.i[1] != 0 && call.attrs.i[1] != 1)  // scalar_first's slot, checked before it is read as a bool
    CUDL_FAIL(chk::who(call), ": i[1] (scalar first) must be 0 or 1, got ", call.attrs.i[1]);
  p.op = attrs.op;
  p.scalar = static_cast<float>(attrs.scalar);
  p.scalar_first = attrs.scalar_first;
  const bool backward = call.op == OpKind::BinaryScalarBackward;
  chk::arity(call);
  const DType st = ops::check_storage(call);
  p.storage = st;
  const TensorView& x = chk::need_in(call, 0, "x");
  chk::dtype(call, x, "x", st);
  p.x = x;
  if (backward) {
    const TensorView& dy = chk::need_in(call, 1, "dy");
    chk::dtype(call, dy, "dy", st);
    chk::shape(call, dy, "dy", x.shape, "same as x");
    p.dy = dy;
  }
  const TensorView& out = chk::need_out(call, 0, backward ? "dx" : "y");
  chk::dtype(call, out, backward ? "dx" : "y", st);
  chk::shape(call, out, backward ? "dx" : "y", x.shape, "same as x");
  (backward ? p.dx : p.y) = out;
  p.n = x.numel();
  return p;
}

}  // namespace ops

BroadcastLayout broadcast_layout(const Shape& a, const Shape& b, const Shape& c) {
  const int r = c.rank();
  const std::vector<int64_t> as = a.strides(), bs = b.strides();
  BroadcastLayout l;
  // Walk c's dimensions from the innermost outwards, building the merged loop nest reversed.
  std::array<int64_t, Shape::kMaxDims> dims{}, sa{}, sb{};
  int n = 0;
  for (int i = r - 1; i >= 0; --i) {
    const int64_t size = c.dims()[i];
    if (size == 1) continue;
    const int ia = a.rank() - r + i, ib = b.rank() - r + i;
    const int64_t stride_a = (ia >= 0 && a.dims()[ia] != 1) ? as[ia] : 0;
    const int64_t stride_b = (ib >= 0 && b.dims()[ib] != 1) ? bs[ib] : 0;
    if (n > 0 && stride_a == sa[n - 1] * dims[n - 1] && stride_b == sb[n - 1] * dims[n - 1]) {
      dims[n - 1] *= size;  // contiguous continuation for both operands: merge
      continue;
    }
    dims[n] = size;
    sa[n] = stride_a;
    sb[n] = stride_b;
    ++n;
  }
  l.rank = n;
  for (int k = 0; k < n; ++k) {
    l.dims[k] = dims[n - 1 - k];
    l.a_stride[k] = sa[n - 1 - k];
    l.b_stride[k] = sb[n - 1 - k];
  }
  return l;
}

}  // namespace cudl
