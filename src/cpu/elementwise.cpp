// cpu/elementwise.cpp — CPU reference implementations of the elementwise op family (the spec for these ops):
// unary activations and their gradients, broadcasting binary ops, tensor-scalar ops. Math in double.
#include "cpu/elementwise.hpp"

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "backend/backend.hpp"
#include "cpu/op_checks.hpp"

namespace cudl {

namespace chk = op_checks;

// ---------------------------------------------------------------------------------------------
// Checks (shared with src/cuda/elementwise.cpp)
// ---------------------------------------------------------------------------------------------

UnaryProblem check_unary_call(const OpCall& call) {
  UnaryProblem p;
  const int64_t k = call.attrs.i[0];
  if (k < 0 || k >= static_cast<int64_t>(UnaryOp::Count)) CUDL_FAIL(chk::who(call), ": invalid UnaryOp ", k);
  p.op = static_cast<UnaryOp>(k);
  p.alpha = static_cast<float>(call.attrs.f[0]);
  if (call.op == OpKind::Unary) {
    chk::counts(call, 1, 1, 1, 1);
    const TensorView& x = chk::need_in(call, 0, "x");
    const TensorView& y = chk::need_out(call, 0, "y");
    chk::dtype(call, x, "x", DType::f32);
    chk::dtype(call, y, "y", DType::f32);
    chk::shape(call, y, "y", x.shape, "same as x");
    p.n = x.numel();
    p.has_x = true;
    return p;
  }
  chk::counts(call, 3, 3, 1, 1);
  const TensorView& dy = chk::need_in(call, 2, "dy");
  const TensorView& dx = chk::need_out(call, 0, "dx");
  chk::dtype(call, dy, "dy", DType::f32);
  chk::dtype(call, dx, "dx", DType::f32);
  chk::shape(call, dx, "dx", dy.shape, "same as dy");
  if (unary_needs_input(p.op)) chk::need_in(call, 0, "x");
  if (unary_needs_output(p.op)) chk::need_in(call, 1, "y");
  p.has_x = call.has_in(0);
  p.has_y = call.has_in(1);
  if (p.has_x) {
    chk::dtype(call, call.inputs[0], "x", DType::f32);
    chk::shape(call, call.inputs[0], "x", dy.shape, "same as dy");
  }
  if (p.has_y) {
    chk::dtype(call, call.inputs[1], "y", DType::f32);
    chk::shape(call, call.inputs[1], "y", dy.shape, "same as dy");
  }
  p.n = dy.numel();
  return p;
}

BinaryProblem check_binary_call(const OpCall& call) {
  BinaryProblem p;
  const int64_t k = call.attrs.i[0];
  if (k < 0 || k >= static_cast<int64_t>(BinaryOp::Count)) CUDL_FAIL(chk::who(call), ": invalid BinaryOp ", k);
  p.op = static_cast<BinaryOp>(k);
  const bool backward = call.op == OpKind::BinaryBackward;
  if (backward)
    chk::counts(call, 3, 3, 2, 2);
  else
    chk::counts(call, 2, 2, 1, 1);
  const TensorView& a = chk::need_in(call, 0, "a");
  const TensorView& b = chk::need_in(call, 1, "b");
  chk::dtype(call, a, "a", DType::f32);
  chk::dtype(call, b, "b", DType::f32);
  p.a = a.shape;
  p.b = b.shape;
  p.c = broadcast_shapes(a.shape, b.shape, chk::who(call).c_str());
  const std::string why = "broadcast of a " + a.shape.str() + " and b " + b.shape.str();
  if (!backward) {
    const TensorView& c = chk::need_out(call, 0, "c");
    chk::dtype(call, c, "c", DType::f32);
    chk::shape(call, c, "c", p.c, why);
    return p;
  }
  const TensorView& dc = chk::need_in(call, 2, "dc");
  chk::dtype(call, dc, "dc", DType::f32);
  chk::shape(call, dc, "dc", p.c, why);
  p.has_da = call.has_out(0);
  p.has_db = call.has_out(1);
  if (p.has_da) {
    chk::dtype(call, call.outputs[0], "da", DType::f32);
    chk::shape(call, call.outputs[0], "da", p.a, "same as a");
  }
  if (p.has_db) {
    chk::dtype(call, call.outputs[1], "db", DType::f32);
    chk::shape(call, call.outputs[1], "db", p.b, "same as b");
  }
  return p;
}

BinaryScalarProblem check_binary_scalar_call(const OpCall& call) {
  BinaryScalarProblem p;
  const int64_t k = call.attrs.i[0];
  if (k < 0 || k >= static_cast<int64_t>(BinaryOp::Count)) CUDL_FAIL(chk::who(call), ": invalid BinaryOp ", k);
  if (call.attrs.i[1] != 0 && call.attrs.i[1] != 1)
    CUDL_FAIL(chk::who(call), ": i[1] (scalar first) must be 0 or 1, got ", call.attrs.i[1]);
  p.op = static_cast<BinaryOp>(k);
  p.scalar = static_cast<float>(call.attrs.f[0]);
  p.scalar_first = call.attrs.i[1] == 1;
  const bool backward = call.op == OpKind::BinaryScalarBackward;
  chk::counts(call, backward ? 2 : 1, backward ? 2 : 1, 1, 1);
  const TensorView& x = chk::need_in(call, 0, "x");
  chk::dtype(call, x, "x", DType::f32);
  if (backward) {
    const TensorView& dy = chk::need_in(call, 1, "dy");
    chk::dtype(call, dy, "dy", DType::f32);
    chk::shape(call, dy, "dy", x.shape, "same as x");
  }
  const TensorView& out = chk::need_out(call, 0, backward ? "dx" : "y");
  chk::dtype(call, out, backward ? "dx" : "y", DType::f32);
  chk::shape(call, out, backward ? "dx" : "y", x.shape, "same as x");
  p.n = x.numel();
  return p;
}

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

// ---------------------------------------------------------------------------------------------
// Reference math
// ---------------------------------------------------------------------------------------------
namespace {

constexpr double kSqrt2 = 1.4142135623730951;
constexpr double kSqrt2OverPi = 0.7978845608028654;  // sqrt(2/pi)
constexpr double kInvSqrt2Pi = 0.3989422804014327;   // 1/sqrt(2 pi)
constexpr double kGeluCoef = 0.044715;
constexpr double kSoftplusThreshold = 20;

double sigmoid(double x) {
  if (x >= 0) return 1 / (1 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1 + e);
}

// Inlined into the per-op loops below, where `op` is a constant: the switch folds away.
[[gnu::always_inline]] inline double unary_ref(UnaryOp op, double x, double alpha) {
  switch (op) {
    case UnaryOp::Relu:
      return !(x <= 0) ? x : 0.0;  // NaN passes through (x > 0 || isnan(x), without a branch)
    case UnaryOp::LeakyRelu:
      return x > 0 ? x : alpha * x;
    case UnaryOp::Elu:
      return x > 0 ? x : alpha * std::expm1(x);
    case UnaryOp::GeluErf:
      return 0.5 * x * (1 + std::erf(x / kSqrt2));
    case UnaryOp::GeluTanh:
      return 0.5 * x * (1 + std::tanh(kSqrt2OverPi * (x + kGeluCoef * x * x * x)));
    case UnaryOp::Silu:
      return x * sigmoid(x);
    case UnaryOp::Sigmoid:
      return sigmoid(x);
    case UnaryOp::Tanh:
      return std::tanh(x);
    case UnaryOp::Softplus:
      return x > kSoftplusThreshold ? x : std::log1p(std::exp(x));
    case UnaryOp::Exp:
      return std::exp(x);
    case UnaryOp::Log:
      return std::log(x);
    case UnaryOp::Sqrt:
      return std::sqrt(x);
    case UnaryOp::Abs:
      return std::fabs(x);
    case UnaryOp::Neg:
      return -x;
    case UnaryOp::Square:
      return x * x;
    case UnaryOp::Count:
      break;
  }
  return std::numeric_limits<double>::quiet_NaN();
}

double sign(double x) {
  if (std::isnan(x)) return x;
  return x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0);
}

// dx for one element; x and y are whatever the op needs (see unary_needs_input / _output).
[[gnu::always_inline]] inline double unary_grad_ref(UnaryOp op, double x, double y, double dy, double alpha) {
  switch (op) {
    case UnaryOp::Relu:
      return y <= 0 ? 0.0 : dy;
    case UnaryOp::LeakyRelu:
      return x > 0 ? dy : dy * alpha;
    case UnaryOp::Elu:
      return x > 0 ? dy : dy * alpha * std::exp(x);
    case UnaryOp::GeluErf: {
      const double cdf = 0.5 * (1 + std::erf(x / kSqrt2));
      const double pdf = kInvSqrt2Pi * std::exp(-0.5 * x * x);
      return dy * (cdf + x * pdf);
    }
    case UnaryOp::GeluTanh: {
      const double inner = kSqrt2OverPi * (x + kGeluCoef * x * x * x);
      const double t = std::tanh(inner);
      const double dinner = kSqrt2OverPi * (1 + 3 * kGeluCoef * x * x);
      return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner);
    }
    case UnaryOp::Silu: {
      const double s = sigmoid(x);
      return dy * s * (1 + x * (1 - s));
    }
    case UnaryOp::Sigmoid:
      return dy * y * (1 - y);
    case UnaryOp::Tanh:
      return dy * (1 - y * y);
    case UnaryOp::Softplus:
      return x > kSoftplusThreshold ? dy : dy * sigmoid(x);
    case UnaryOp::Exp:
      return dy * y;
    case UnaryOp::Log:
      return dy / x;
    case UnaryOp::Sqrt:
      return dy / (2 * y);
    case UnaryOp::Abs:
      return dy * sign(x);
    case UnaryOp::Neg:
      return -dy;
    case UnaryOp::Square:
      return 2 * x * dy;
    case UnaryOp::Count:
      break;
  }
  return std::numeric_limits<double>::quiet_NaN();
}

double binary_ref(BinaryOp op, double a, double b) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  switch (op) {
    case BinaryOp::Add:
      return a + b;
    case BinaryOp::Sub:
      return a - b;
    case BinaryOp::Mul:
      return a * b;
    case BinaryOp::Div:
      return a / b;
    case BinaryOp::Maximum:
      return (std::isnan(a) || std::isnan(b)) ? nan : (a > b ? a : b);
    case BinaryOp::Minimum:
      return (std::isnan(a) || std::isnan(b)) ? nan : (a < b ? a : b);
    case BinaryOp::Count:
      break;
  }
  return nan;
}

// d(a op b)/da * dc and d(a op b)/db * dc (PyTorch's conventions for maximum/minimum, see op.hpp).
double binary_grad_a(BinaryOp op, double a, double b, double dc) {
  switch (op) {
    case BinaryOp::Add:
    case BinaryOp::Sub:
      return dc;
    case BinaryOp::Mul:
      return dc * b;
    case BinaryOp::Div:
      return dc / b;
    case BinaryOp::Maximum:
      return a == b ? dc / 2 : (a < b ? 0.0 : dc);
    case BinaryOp::Minimum:
      return a == b ? dc / 2 : (a > b ? 0.0 : dc);
    case BinaryOp::Count:
      break;
  }
  return 0;
}

double binary_grad_b(BinaryOp op, double a, double b, double dc) {
  switch (op) {
    case BinaryOp::Add:
      return dc;
    case BinaryOp::Sub:
      return -dc;
    case BinaryOp::Mul:
      return dc * a;
    case BinaryOp::Div:
      return -dc * a / (b * b);
    case BinaryOp::Maximum:
      return a == b ? dc / 2 : (a > b ? 0.0 : dc);
    case BinaryOp::Minimum:
      return a == b ? dc / 2 : (a < b ? 0.0 : dc);
    case BinaryOp::Count:
      break;
  }
  return 0;
}

// Flat index into `operand` (right-aligned against `out`, size-1 dims broadcast) of the element of
// `out` at coordinates `coord`.
int64_t broadcast_index(const Shape& operand, const Shape& out, const std::vector<int64_t>& coord) {
  int64_t idx = 0;
  const int off = out.rank() - operand.rank();
  for (int d = 0; d < operand.rank(); ++d) {
    const int64_t size = operand.dims()[d];
    idx = idx * size + (size == 1 ? 0 : coord[off + d]);
  }
  return idx;
}

// Calls fn(c_index, a_index, b_index) for every element of c in row-major order.
template <typename Fn>
void for_each_broadcast(const Shape& a, const Shape& b, const Shape& c, Fn fn) {
  std::vector<int64_t> coord(c.rank(), 0);
  const int64_t n = c.numel();
  for (int64_t i = 0; i < n; ++i) {
    fn(i, broadcast_index(a, c, coord), broadcast_index(b, c, coord));
    for (int d = c.rank() - 1; d >= 0; --d) {  // increment the coordinate odometer
      if (++coord[d] < c.dims()[d]) break;
      coord[d] = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Op entries
// ---------------------------------------------------------------------------------------------

// Calls fn(std::integral_constant<UnaryOp, op>) for the runtime `op`, so that each op gets a loop
// of its own with the math of unary_ref / unary_grad_ref inlined.
template <typename Fn>
void with_unary_op(UnaryOp op, Fn fn) {
  using U = UnaryOp;
  switch (op) {
#define CUDL_UNARY_CASE(name) \
  case U::name:               \
    return fn(std::integral_constant<U, U::name>{});
    CUDL_UNARY_CASE(Relu) CUDL_UNARY_CASE(LeakyRelu) CUDL_UNARY_CASE(Elu) CUDL_UNARY_CASE(GeluErf)
    CUDL_UNARY_CASE(GeluTanh) CUDL_UNARY_CASE(Silu) CUDL_UNARY_CASE(Sigmoid) CUDL_UNARY_CASE(Tanh)
    CUDL_UNARY_CASE(Softplus) CUDL_UNARY_CASE(Exp) CUDL_UNARY_CASE(Log) CUDL_UNARY_CASE(Sqrt) CUDL_UNARY_CASE(Abs)
    CUDL_UNARY_CASE(Neg) CUDL_UNARY_CASE(Square)
#undef CUDL_UNARY_CASE
    case U::Count:
      break;
  }
  CUDL_FAIL("invalid UnaryOp ", static_cast<int>(op));
}

void cpu_unary(const OpCall& call) {
  const UnaryProblem p = check_unary_call(call);
  const float* x = call.inputs[0].as<float>();
  float* y = call.outputs[0].as<float>();
  with_unary_op(p.op, [&](auto op) {
    for (int64_t i = 0; i < p.n; ++i) y[i] = static_cast<float>(unary_ref(op, x[i], p.alpha));
  });
}

void cpu_unary_backward(const OpCall& call) {
  const UnaryProblem p = check_unary_call(call);
  const float* x = p.has_x ? call.inputs[0].as<float>() : nullptr;
  const float* y = p.has_y ? call.inputs[1].as<float>() : nullptr;
  const float* dy = call.inputs[2].as<float>();
  float* dx = call.outputs[0].as<float>();
  with_unary_op(p.op, [&](auto op) {
    const bool need_x = unary_needs_input(op), need_y = unary_needs_output(op);
    for (int64_t i = 0; i < p.n; ++i) {
      const double xv = need_x ? x[i] : 0.0, yv = need_y ? y[i] : 0.0;
      dx[i] = static_cast<float>(unary_grad_ref(op, xv, yv, dy[i], p.alpha));
    }
  });
}

void cpu_binary(const OpCall& call) {
  const BinaryProblem p = check_binary_call(call);
  const float* a = call.inputs[0].as<float>();
  const float* b = call.inputs[1].as<float>();
  float* c = call.outputs[0].as<float>();
  for_each_broadcast(p.a, p.b, p.c, [&](int64_t ic, int64_t ia, int64_t ib) {
    c[ic] = static_cast<float>(binary_ref(p.op, a[ia], b[ib]));
  });
}

void cpu_binary_backward(const OpCall& call) {
  const BinaryProblem p = check_binary_call(call);
  const float* a = call.inputs[0].as<float>();
  const float* b = call.inputs[1].as<float>();
  const float* dc = call.inputs[2].as<float>();
  std::vector<double> da(p.has_da ? p.a.numel() : 0, 0.0), db(p.has_db ? p.b.numel() : 0, 0.0);
  for_each_broadcast(p.a, p.b, p.c, [&](int64_t ic, int64_t ia, int64_t ib) {
    if (p.has_da) da[ia] += binary_grad_a(p.op, a[ia], b[ib], dc[ic]);
    if (p.has_db) db[ib] += binary_grad_b(p.op, a[ia], b[ib], dc[ic]);
  });
  if (p.has_da)
    for (size_t i = 0; i < da.size(); ++i) call.outputs[0].as<float>()[i] = static_cast<float>(da[i]);
  if (p.has_db)
    for (size_t i = 0; i < db.size(); ++i) call.outputs[1].as<float>()[i] = static_cast<float>(db[i]);
}

void cpu_binary_scalar(const OpCall& call) {
  const BinaryScalarProblem p = check_binary_scalar_call(call);
  const float* x = call.inputs[0].as<float>();
  float* y = call.outputs[0].as<float>();
  for (int64_t i = 0; i < p.n; ++i)
    y[i] = static_cast<float>(p.scalar_first ? binary_ref(p.op, p.scalar, x[i]) : binary_ref(p.op, x[i], p.scalar));
}

void cpu_binary_scalar_backward(const OpCall& call) {
  const BinaryScalarProblem p = check_binary_scalar_call(call);
  const float* x = call.inputs[0].as<float>();
  const float* dy = call.inputs[1].as<float>();
  float* dx = call.outputs[0].as<float>();
  for (int64_t i = 0; i < p.n; ++i)
    dx[i] = static_cast<float>(p.scalar_first ? binary_grad_b(p.op, p.scalar, x[i], dy[i])
                                              : binary_grad_a(p.op, x[i], p.scalar, dy[i]));
}

}  // namespace

void register_cpu_elementwise_ops(OpTable& t) {
  t.add(OpKind::Unary, cpu_unary);
  t.add(OpKind::UnaryBackward, cpu_unary_backward);
  t.add(OpKind::Binary, cpu_binary);
  t.add(OpKind::BinaryBackward, cpu_binary_backward);
  t.add(OpKind::BinaryScalar, cpu_binary_scalar);
  t.add(OpKind::BinaryScalarBackward, cpu_binary_scalar_backward);
}

}  // namespace cudl
