// ops/conv.cpp — argument checks of the conv op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/conv.hpp"

#include <algorithm>
#include <vector>

#include "cudl/error.hpp"
#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

// ---------------------------------------------------------------------------------------------
// geometry and argument checks
// ---------------------------------------------------------------------------------------------

namespace {

const char* name_of(const OpCall& c) { return op_name(c.op); }

int64_t out_size(int64_t in, int64_t pad, int64_t dil, int64_t k, int64_t stride) {
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1;  // last valid start position
  if (span < 0) return 0;
  return span / stride + 1;
}

/// Every tensor of a conv call has the call's storage type `st` (f32 unless the op is listed in
/// ops::storage_slots and its tensors are bf16 or f16).
void require_dtype(const OpCall& c, const TensorView& v, const char* what, DType st) {
  if (v.dtype != st)
    CUDL_FAIL(name_of(c), " (", c.label, "): ", what, " must be ", st, ", got ", v.dtype, " (shape ", v.shape, ")");
}

const TensorView& required_in(const OpCall& c, int k, const char* what, DType st) {
  if (!c.has_in(k)) CUDL_FAIL(name_of(c), " (", c.label, "): input ", k, " (", what, ") is missing");
  require_dtype(c, c.in(k), what, st);
  return c.in(k);
}

const TensorView& required_out(const OpCall& c, int k, const char* what, DType st) {
  if (!c.has_out(k)) CUDL_FAIL(name_of(c), " (", c.label, "): output ", k, " (", what, ") is missing");
  require_dtype(c, c.out(k), what, st);
  return c.out(k);
}

void require_shape(const OpCall& c, const TensorView& v, const Shape& expected, const char* what,
                   const Conv2dGeometry& g) {
  if (v.shape != expected)
    CUDL_FAIL(name_of(c), " (", c.label, "): ", what, " has shape ", v.shape, ", expected ", expected, " for x ",
              g.x_shape(), " and w ", g.w_shape());
}

}  // namespace

Conv2dGeometry conv2d_geometry(const OpCall& c, const Shape& x, const Shape& w) {
  const Conv2dAttrs a = Conv2dAttrs::from(c.attrs);
  const int64_t epilogue = static_cast<int64_t>(a.epilogue);
  if (x.rank() != 4 || w.rank() != 4)
    CUDL_FAIL(name_of(c), " (", c.label, "): x must be (N, C, H, W) and w (K, C/groups, R, S); got x ", x, " and w ",
              w);
  Conv2dGeometry g;
  g.N = x[0], g.C = x[1], g.H = x[2], g.W = x[3];
  g.K = w[0], g.R = w[2], g.S = w[3];
  g.stride_h = a.stride_h, g.stride_w = a.stride_w, g.pad_h = a.pad_h, g.pad_w = a.pad_w;
  g.dil_h = a.dil_h, g.dil_w = a.dil_w;
  g.groups = a.groups;
  g.relu = a.epilogue == Epilogue::Relu;
  if (a.epilogue != Epilogue::None && a.epilogue != Epilogue::Relu)
    CUDL_FAIL(name_of(c), " (", c.label, "): epilogue ", epilogue, " not supported (None or Relu) for x ", x, ", w ",
              w);
  if (g.stride_h < 1 || g.stride_w < 1 || g.dil_h < 1 || g.dil_w < 1 || g.pad_h < 0 || g.pad_w < 0)
    CUDL_FAIL(name_of(c), " (", c.label, "): invalid stride (", g.stride_h, ", ", g.stride_w, "), padding (", g.pad_h,
              ", ", g.pad_w, ") or dilation (", g.dil_h, ", ", g.dil_w, ") for x ", x, ", w ", w);
  if (g.groups < 1) CUDL_FAIL(name_of(c), " (", c.label, "): groups must be >= 1, got ", g.groups, " for x ", x);
  if (g.N < 1 || g.C < 1 || g.H < 1 || g.W < 1 || g.K < 1 || g.R < 1 || g.S < 1)
    CUDL_FAIL(name_of(c), " (", c.label, "): empty dimension in x ", x, " or w ", w);
  if (g.C % g.groups != 0)
    CUDL_FAIL(name_of(c), " (", c.label, "): input channels ", g.C, " of x ", x, " not divisible by groups ", g.groups);
  if (g.K % g.groups != 0)
    CUDL_FAIL(name_of(c), " (", c.label, "): output channels ", g.K, " of w ", w, " not divisible by groups ",
              g.groups);
  if (w[1] != g.C / g.groups)
    CUDL_FAIL(name_of(c), " (", c.label, "): weight shape mismatch: w ", w, " must have C/groups = ", g.C / g.groups,
              " in dimension 1 for x ", x, " and groups ", g.groups);
  g.P = out_size(g.H, g.pad_h, g.dil_h, g.R, g.stride_h);
  g.Q = out_size(g.W, g.pad_w, g.dil_w, g.S, g.stride_w);
  if (g.P <= 0 || g.Q <= 0)
    CUDL_FAIL(name_of(c), " (", c.label, "): output size <= 0: x ", x, " with w ", w, ", padding (", g.pad_h, ", ",
              g.pad_w, "), dilation (", g.dil_h, ", ", g.dil_w, ") gives no output position");
  return g;
}

Conv2dArgs check_conv2d_call(const OpCall& c) {
  Conv2dArgs g;
  op_checks::arity(c);
  // The storage type: that of the call's tensors (ops/precision.hpp).
  const DType st = check_storage(c);
  g.storage = st;
  switch (c.op) {
    case OpKind::Conv2d: {
      const TensorView& x = required_in(c, 0, "x", st);
      const TensorView& w = required_in(c, 1, "w", st);
      static_cast<Conv2dGeometry&>(g) = conv2d_geometry(c, x.shape, w.shape);
      g.x = x, g.w = w;
      if (c.has_in(2)) {
        g.has_bias = true;
        g.bias = c.in(2);
        require_dtype(c, c.in(2), "bias", st);
        require_shape(c, c.in(2), Shape{g.K}, "bias", g);
      }
      g.y = required_out(c, 0, "y", st);
      require_shape(c, g.y, g.y_shape(), "y", g);
      break;
    }
    case OpKind::Conv2dBackwardData: {
      const TensorView& dy = required_in(c, 0, "dy", st);
      const TensorView& w = required_in(c, 1, "w", st);
      const TensorView& dx = required_out(c, 0, "dx", st);
      static_cast<Conv2dGeometry&>(g) = conv2d_geometry(c, dx.shape, w.shape);
      g.dy = dy, g.w = w, g.dx = dx;
      g.relu = false;
      require_shape(c, dy, g.y_shape(), "dy", g);
      break;
    }
    case OpKind::Conv2dBackwardFilter: {
      const TensorView& x = required_in(c, 0, "x", st);
      const TensorView& dy = required_in(c, 1, "dy", st);
      const TensorView& dw = required_out(c, 0, "dw", st);
      static_cast<Conv2dGeometry&>(g) = conv2d_geometry(c, x.shape, dw.shape);
      g.x = x, g.dy = dy, g.dw = dw;
      g.relu = false;
      require_shape(c, dy, g.y_shape(), "dy", g);
      break;
    }
    case OpKind::Conv2dTranspose: {
      const TensorView& x = required_in(c, 0, "x", st);
      const TensorView& w = required_in(c, 1, "w", st);
      const TensorView& y = required_out(c, 0, "y", st);
      if (Conv2dAttrs::from(c.attrs).epilogue != Epilogue::None)
        CUDL_FAIL(name_of(c), " (", c.label, "): epilogue must be None, got ",
                  static_cast<int64_t>(Conv2dAttrs::from(c.attrs).epilogue), " for x ", x.shape, ", w ", w.shape);
      static_cast<Conv2dGeometry&>(g) = conv2d_geometry(c, y.shape, w.shape);
      g.dy = x, g.w = w, g.dx = y;
      if (x.shape != g.y_shape())
        CUDL_FAIL(name_of(c), " (", c.label, "): x has shape ", x.shape, " but y ", y.shape, " with w ", w.shape,
                  " needs x ", g.y_shape(), " (output padding must be in [0, stride))");
      if (c.has_in(2)) {
        g.has_bias = true;
        g.bias = c.in(2);
        require_dtype(c, c.in(2), "bias", st);
        if (g.bias.shape != Shape{g.C})
          CUDL_FAIL(name_of(c), " (", c.label, "): bias has shape ", g.bias.shape, ", expected (", g.C, ",) for y ",
                    y.shape);
      }
      break;
    }
    case OpKind::Conv2dBackwardBias: {
      const TensorView& dy = required_in(c, 0, "dy", st);
      const TensorView& db = required_out(c, 0, "db", st);
      g.dy = dy, g.db = db;
      if (dy.shape.rank() != 4)
        CUDL_FAIL(name_of(c), " (", c.label, "): dy must be (N, K, P, Q), got ", dy.shape, " (db ", db.shape, ")");
      g.N = dy.shape[0], g.K = dy.shape[1], g.P = dy.shape[2], g.Q = dy.shape[3];
      if (db.shape != Shape{g.K})
        CUDL_FAIL(name_of(c), " (", c.label, "): db has shape ", db.shape, ", expected (", g.K, ",) for dy ", dy.shape);
      break;
    }
    default:
      CUDL_FAIL("check_conv2d_call: ", name_of(c), " is not a conv op");
  }
  return g;
}

}  // namespace ops
}  // namespace cudl
