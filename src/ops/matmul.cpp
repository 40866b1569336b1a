// ops/matmul.cpp — argument checks of the matmul op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/matmul.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "cudl/error.hpp"
#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

namespace chk = op_checks;

namespace {

Shape prefix(const Shape& s, int drop) {  // s without its last `drop` dimensions
  std::vector<int64_t> d(s.dims().begin(), s.dims().end() - drop);
  return Shape(d);
}

Shape with_last(const Shape& s, int drop, std::initializer_list<int64_t> tail) {
  std::vector<int64_t> d(s.dims().begin(), s.dims().end() - drop);
  d.insert(d.end(), tail);
  return Shape(d);
}

int epilogue_attr(const OpCall& call, Epilogue epilogue) {
  const int64_t e = static_cast<int64_t>(epilogue);
  if (e < 0 || e > static_cast<int64_t>(Epilogue::Gelu))
    CUDL_FAIL(chk::who(call), ": epilogue attribute i[0] = ", e, " is not None (0), Relu (1) or Gelu (2)");
  return static_cast<int>(e);
}

const char* epilogue_name(Epilogue e) {
  switch (e) {
    case Epilogue::None:
      return "None";
    case Epilogue::Relu:
      return "Relu";
    case Epilogue::Gelu:
      return "Gelu";
  }
  return "?";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Checks

MatmulArgs check_matmul_call(const OpCall& call) {
  chk::arity(call);
  const TensorView& a = chk::need_in(call, 0, "a");
  const TensorView& b = chk::need_in(call, 1, "b");
  const TensorView& c = chk::need_out(call, 0, "c");
  const DType st = check_storage(call);
  chk::dtype(call, a, "a", st);
  chk::dtype(call, b, "b", st);
  chk::dtype(call, c, "c", st);
  if (a.shape.rank() < 2 || b.shape.rank() < 2)
    CUDL_FAIL(chk::who(call), ": a ", a.shape, " and b ", b.shape, ": both need at least two dimensions");
  MatmulArgs p;
  p.dtype = st;
  const MatmulAttrs attrs = MatmulAttrs::from(call.attrs);
  p.a = a, p.b = b, p.c = c;
  p.trans_a = attrs.trans_a;
  p.trans_b = attrs.trans_b;
  p.m = p.trans_a ? a.shape[-1] : a.shape[-2];
  p.k = p.trans_a ? a.shape[-2] : a.shape[-1];
  const int64_t kb = p.trans_b ? b.shape[-1] : b.shape[-2];
  p.n = p.trans_b ? b.shape[-2] : b.shape[-1];
  if (kb != p.k)
    CUDL_FAIL(chk::who(call), ": a ", a.shape, (p.trans_a ? " (transposed)" : ""), " and b ", b.shape,
              (p.trans_b ? " (transposed)" : ""), ": inner dimensions differ (", p.k, " vs ", kb, ")");
  const Shape batch = prefix(a.shape, 2);
  p.broadcast_b = b.shape.rank() == 2;
  if (!p.broadcast_b && prefix(b.shape, 2) != batch)
    CUDL_FAIL(chk::who(call), ": a ", a.shape, " and b ", b.shape,
              ": batch dimensions differ (b must have a's batch dimensions or be 2-D)");
  p.batch = batch.numel();
  chk::shape(call, c, "c", with_last(a.shape, 2, {p.m, p.n}), "a's batch dimensions, then M and N");
  return p;
}

LinearArgs check_linear_call(const OpCall& call) {
  chk::arity(call);
  const TensorView& x = chk::need_in(call, 0, "x");
  const TensorView& w = chk::need_in(call, 1, "w");
  const TensorView& y = chk::need_out(call, 0, "y");
  LinearArgs p;
  p.epilogue = static_cast<Epilogue>(epilogue_attr(call, LinearAttrs::from(call.attrs).epilogue));
  p.x = x, p.w = w, p.y = y;
  const DType st = p.dtype = check_storage(call);
  chk::dtype(call, x, "x", st);
  chk::dtype(call, w, "w", st);
  chk::dtype(call, y, "y", st);
  if (x.shape.rank() < 2 || w.shape.rank() != 2)
    CUDL_FAIL(chk::who(call), ": x ", x.shape, " and w ", w.shape, ": x must be (N, in) and w (out, in)");
  if (x.shape[-1] != w.shape[1])
    CUDL_FAIL(chk::who(call), ": x ", x.shape, " and w ", w.shape, ": inner dimensions differ (", x.shape[-1], " vs ",
              w.shape[1], ")");
  p.in = w.shape[1];
  p.out = w.shape[0];
  p.rows = prefix(x.shape, 1).numel();
  p.has_bias = call.has_in(2);
  if (p.has_bias) {
    const TensorView& b = call.inputs[2];
    p.bias = b;
    chk::dtype(call, b, "bias", st);
    if (b.shape != Shape{p.out})
      CUDL_FAIL(chk::who(call), ": bias ", b.shape, " and w ", w.shape, ": bias must be (out) = (", p.out, ")");
  }
  const Shape y_shape = with_last(x.shape, 1, {p.out});
  chk::shape(call, y, "y", y_shape, "x's leading dimensions, then w's out");
  if (call.has_out(1)) {
    if (p.epilogue == Epilogue::Relu) {
      p.has_mask = true;
      p.mask = call.outputs[1];
      chk::dtype(call, call.outputs[1], "relu mask", DType::u8);
      chk::shape(call, call.outputs[1], "relu mask", Shape{p.rows, relu_mask_row_bytes(p.out)},
                 "(rows, relu_mask_row_bytes(out))");
    } else if (p.epilogue == Epilogue::Gelu) {
      p.has_pre = true;
      p.pre = call.outputs[1];
      chk::dtype(call, call.outputs[1], "pre", st);
      chk::shape(call, call.outputs[1], "pre", y_shape, "same as y");
    } else {
      CUDL_FAIL(chk::who(call), ": output 1 ", call.outputs[1].shape,
                " is only produced with the Gelu (pre) or Relu (mask) epilogue, got ", epilogue_name(p.epilogue));
    }
  }
  return p;
}

LinearBackwardArgs check_linear_backward_call(const OpCall& call) {
  chk::arity(call);
  const TensorView& dy = chk::need_in(call, 2, "dy");
  const DType st = check_storage(call);
  chk::dtype(call, dy, "dy", st);
  if (dy.shape.rank() < 2) CUDL_FAIL(chk::who(call), ": dy ", dy.shape, " must be (N, out)");
  LinearBackwardArgs p;
  p.dtype = st;
  const LinearBackwardAttrs attrs = LinearBackwardAttrs::from(call.attrs);
  p.epilogue = static_cast<Epilogue>(epilogue_attr(call, attrs.epilogue));
  p.dy = dy;
  p.out = dy.shape[-1];
  p.rows = prefix(dy.shape, 1).numel();
  p.has_dx = call.has_out(0);
  p.has_dw = call.has_out(1);
  p.has_db = call.has_out(2);
  const bool has_x = call.has_in(0), has_w = call.has_in(1);
  if (p.has_dw && !has_x) CUDL_FAIL(chk::who(call), ": dw needs input 0 (x), which was not given");
  if (p.has_dx && !has_w) CUDL_FAIL(chk::who(call), ": dx needs input 1 (w), which was not given");
  p.in = -1;
  if (has_w) {
    const TensorView& w = call.inputs[1];
    p.w = w;
    chk::dtype(call, w, "w", st);
    if (w.shape.rank() != 2 || w.shape[0] != p.out)
      CUDL_FAIL(chk::who(call), ": w ", w.shape, " and dy ", dy.shape, ": w must be (out, in) with out = ", p.out);
    p.in = w.shape[1];
  }
  if (has_x) {
    const TensorView& x = call.inputs[0];
    p.x = x;
    chk::dtype(call, x, "x", st);
    if (x.shape.rank() != dy.shape.rank() || prefix(x.shape, 1) != prefix(dy.shape, 1))
      CUDL_FAIL(chk::who(call), ": x ", x.shape, " and dy ", dy.shape, ": leading dimensions differ");
    if (p.in >= 0 && x.shape[-1] != p.in)
      CUDL_FAIL(chk::who(call), ": x ", x.shape, " and w ", call.inputs[1].shape, ": inner dimensions differ (",
                x.shape[-1], " vs ", p.in, ")");
    p.in = x.shape[-1];
  }
  if (p.in < 0) p.in = 0;  // neither x nor w: only db can be asked for
  if (p.epilogue == Epilogue::Relu) {
    if (call.has_in(3))
      p.act_input = 3;
    else if (call.has_in(4))
      p.act_input = 4;
    else
      CUDL_FAIL(chk::who(call), ": the Relu epilogue needs input 3 (y) or 4 (pre), neither was given");
  } else if (p.epilogue == Epilogue::Gelu) {
    if (!call.has_in(4)) CUDL_FAIL(chk::who(call), ": the Gelu epilogue needs input 4 (pre), which was not given");
    p.act_input = 4;
  }
  if (p.act_input >= 0) {
    const TensorView& a = call.inputs[p.act_input];
    p.act = a;
    const char* name = p.act_input == 3 ? "y" : "pre";
    chk::dtype(call, a, name, st);
    chk::shape(call, a, name, dy.shape, "same as dy");
  }
  if (p.has_dx) p.dx = call.outputs[0];
  if (p.has_dw) p.dw = call.outputs[1];
  if (p.has_db) p.db = call.outputs[2];
  if (p.has_dx) {
    chk::dtype(call, call.outputs[0], "dx", st);
    chk::shape(call, call.outputs[0], "dx", with_last(dy.shape, 1, {p.in}), "x's shape");
  }
  // dw and db: the storage type, or (16-bit storage) f32 masters' gradients written by the GEMM
  // directly; one type for both (cuBLASLt's BGRADB writes db in D's type).
  auto grad_dtype = [&](const TensorView& g, const char* name) {
    if (!(is_16bit_float(st) && g.dtype == DType::f32)) chk::dtype(call, g, name, st);
  };
  if (p.has_dw) {
    grad_dtype(call.outputs[1], "dw");
    chk::shape(call, call.outputs[1], "dw", Shape{p.out, p.in}, "w's shape (out, in)");
  }
  if (p.has_db) {
    grad_dtype(call.outputs[2], "db");
    chk::shape(call, call.outputs[2], "db", Shape{p.out}, "(out)");
  }
  if (p.has_dw && p.has_db && call.outputs[1].dtype != call.outputs[2].dtype)
    CUDL_FAIL(chk::who(call), ": dw ", call.outputs[1].shape, " has dtype ", call.outputs[1].dtype, " but db ",
              call.outputs[2].shape, " has ", call.outputs[2].dtype, " (one type for both)");
  p.dx_relu = attrs.dx_relu;
  p.has_db_below = call.has_out(3);
  if (p.has_db_below) p.db_below = call.outputs[3];
  if (call.has_in(5)) p.mask = call.inputs[5];
  if (p.dx_relu) {
    if (!p.has_dx) CUDL_FAIL(chk::who(call), ": i[1] (dx through the relu below) needs output 0 (dx)");
    if (!call.has_in(5)) CUDL_FAIL(chk::who(call), ": i[1] (dx through the relu below) needs input 5 (its relu mask)");
    chk::dtype(call, call.inputs[5], "relu mask", DType::u8);
    chk::shape(call, call.inputs[5], "relu mask", Shape{p.rows, relu_mask_row_bytes(p.in)},
               "(rows, relu_mask_row_bytes(in))");
    if (p.has_db_below) {
      chk::dtype(call, call.outputs[3], "db below", st);
      chk::shape(call, call.outputs[3], "db below", Shape{p.in}, "(in)");
    }
  } else if (call.has_in(5) || p.has_db_below) {
    CUDL_FAIL(chk::who(call), ": input 5 (relu mask) and output 3 (db below) need i[1] (dx through the relu below)");
  }
  return p;
}

}  // namespace ops
}  // namespace cudl
