// ops/pool.cpp — argument checks of the pool op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/pool.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cudl/error.hpp"
#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

namespace {

void expect_counts(const OpCall& call, int min_in, int max_in, int min_out, int max_out, const char* signature) {
  if (call.n_inputs < min_in || call.n_inputs > max_in || call.n_outputs < min_out || call.n_outputs > max_out)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): expects ", signature, ", got ", call.n_inputs, " inputs and ",
              call.n_outputs, " outputs");
}

void expect_tensor(const OpCall& call, const TensorView& v, const char* what, DType dtype, const Shape& shape,
                   const Shape& x_shape) {
  if (!v.defined()) CUDL_FAIL(op_name(call.op), " (", call.label, "): ", what, " is required");
  if (v.dtype != dtype)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): ", what, " must be ", dtype, ", got ", v.dtype, " (shape ",
              v.shape, ")");
  if (v.shape != shape)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): ", what, " must have shape ", shape, " for input ", x_shape,
              ", got ", v.shape);
}

/// Reads (N, C, H, W) from a rank-4 tensor of dtype `st`, naming the op when it is not.
void take_nchw(const OpCall& call, const TensorView& v, const char* what, PoolGeometry& g, DType st = DType::f32) {
  if (!v.defined()) CUDL_FAIL(op_name(call.op), " (", call.label, "): ", what, " is required");
  if (v.dtype != st)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): ", what, " must be ", st, ", got ", v.dtype, " (shape ", v.shape,
              ")");
  if (v.shape.rank() != 4)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): ", what, " must be (N, C, H, W), got shape ", v.shape);
  g.n = v.shape[0];
  g.c = v.shape[1];
  g.h = v.shape[2];
  g.w = v.shape[3];
}

/// Window attributes (Pool2dAttrs) and the output size; errors name the op, the input shape and the geometry.
void take_window(const OpCall& call, const Shape& x_shape, PoolGeometry& g) {
  const Pool2dAttrs a = Pool2dAttrs::from(call.attrs);
  g.kh = a.kernel_h, g.kw = a.kernel_w, g.sh = a.stride_h, g.sw = a.stride_w, g.ph = a.pad_h, g.pw = a.pad_w;
  auto geometry = [&] {
    return detail::concat("kernel (", g.kh, ", ", g.kw, "), stride (", g.sh, ", ", g.sw, "), padding (", g.ph, ", ",
                          g.pw, ")");
  };
  if (g.kh < 1 || g.kw < 1 || g.sh < 1 || g.sw < 1 || g.ph < 0 || g.pw < 0)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): invalid ", geometry(), " for input ", x_shape);
  if (2 * g.ph > g.kh || 2 * g.pw > g.kw)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): padding must be at most half the kernel: ", geometry(),
              " for input ", x_shape);
  if (g.h + 2 * g.ph < g.kh || g.w + 2 * g.pw < g.kw)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): ", geometry(), " does not fit input ", x_shape,
              " (output would be empty)");
  g.p = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
  g.q = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
}

}  // namespace

PoolArgs check_pool_call(const OpCall& call) {
  PoolArgs g;
  switch (call.op) {
    case OpKind::MaxPool2d: {
      expect_counts(call, 1, 1, 1, 2, "(x) -> (y, [argmax])");
      const DType st = g.storage = check_storage(call);
      take_nchw(call, call.in(0), "x", g, st);
      take_window(call, call.in(0).shape, g);
      const Shape ys{g.n, g.c, g.p, g.q};
      expect_tensor(call, call.out(0), "y", st, ys, call.in(0).shape);
      g.has_argmax = call.has_out(1);
      if (g.has_argmax) expect_tensor(call, call.out(1), "argmax", DType::i32, ys, call.in(0).shape);
      break;
    }
    case OpKind::MaxPool2dBackward: {
      expect_counts(call, 3, 3, 1, 1, "(x, y, dy) -> (dx)");
      const DType st = g.storage = check_storage(call);
      take_nchw(call, call.in(0), "x", g, st);
      take_window(call, call.in(0).shape, g);
      const Shape ys{g.n, g.c, g.p, g.q};
      expect_tensor(call, call.in(1), "y", st, ys, call.in(0).shape);
      expect_tensor(call, call.in(2), "dy", st, ys, call.in(0).shape);
      expect_tensor(call, call.out(0), "dx", st, call.in(0).shape, call.in(0).shape);
      break;
    }
    case OpKind::AvgPool2d: {
      expect_counts(call, 1, 1, 1, 1, "(x) -> (y)");
      const DType st = g.storage = check_storage(call);
      take_nchw(call, call.in(0), "x", g, st);
      take_window(call, call.in(0).shape, g);
      expect_tensor(call, call.out(0), "y", st, Shape{g.n, g.c, g.p, g.q}, call.in(0).shape);
      break;
    }
    case OpKind::AvgPool2dBackward: {
      expect_counts(call, 1, 1, 1, 1, "(dy) -> (dx)");
      const DType st = g.storage = check_storage(call);
      take_nchw(call, call.out(0), "dx", g, st);
      take_window(call, call.out(0).shape, g);
      expect_tensor(call, call.in(0), "dy", st, Shape{g.n, g.c, g.p, g.q}, call.out(0).shape);
      break;
    }
    case OpKind::GlobalAvgPool: {
      expect_counts(call, 1, 1, 1, 1, "(x) -> (y)");
      const DType st = g.storage = check_storage(call);
      take_nchw(call, call.in(0), "x", g, st);
      expect_tensor(call, call.out(0), "y", st, Shape{g.n, g.c}, call.in(0).shape);
      break;
    }
    case OpKind::GlobalAvgPoolBackward: {
      expect_counts(call, 1, 1, 1, 1, "(dy) -> (dx)");
      const DType st = g.storage = check_storage(call);
      take_nchw(call, call.out(0), "dx", g, st);
      expect_tensor(call, call.in(0), "dy", st, Shape{g.n, g.c}, call.out(0).shape);
      break;
    }
    default:
      CUDL_FAIL(op_name(call.op), " (", call.label, "): not a pooling op");
  }
  if (call.op == OpKind::GlobalAvgPool || call.op == OpKind::GlobalAvgPoolBackward) {
    if (g.h * g.w < 1)
      CUDL_FAIL(op_name(call.op), " (", call.label, "): cannot average an empty image of shape ",
                call.op == OpKind::GlobalAvgPool ? call.in(0).shape : call.out(0).shape);
    g.kh = g.h, g.kw = g.w, g.p = g.q = 1;
  }
  switch (call.op) {
    case OpKind::MaxPool2d:
      g.x = call.in(0), g.y = call.out(0);
      if (g.has_argmax) g.argmax = call.out(1);
      break;
    case OpKind::MaxPool2dBackward:
      g.x = call.in(0), g.y = call.in(1), g.dy = call.in(2), g.dx = call.out(0);
      break;
    case OpKind::AvgPool2d:
    case OpKind::GlobalAvgPool:
      g.x = call.in(0), g.y = call.out(0);
      break;
    default:  // AvgPool2dBackward, GlobalAvgPoolBackward
      g.dy = call.in(0), g.dx = call.out(0);
  }
  return g;
}

}  // namespace ops
}  // namespace cudl
