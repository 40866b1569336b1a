// cpu/elementwise.cpp — CPU reference implementations of the elementwise op family (the spec for these ops):
// unary activations and their gradients, broadcasting binary ops, tensor-scalar ops. Math in double.
#include "ops/elementwise.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "backend/backend.hpp"
#include "ops/common.hpp"

namespace cudl {

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
  const ops::UnaryArgs p = ops::check_unary_call(call);
  const float* x = p.x.as<float>();
  float* y = p.y.as<float>();
  with_unary_op(p.op, [&](auto op) {
    for (int64_t i = 0; i < p.n; ++i) y[i] = static_cast<float>(unary_ref(op, x[i], p.alpha));
  });
}

void cpu_unary_backward(const OpCall& call) {
  const ops::UnaryArgs p = ops::check_unary_call(call);
  const float* x = p.x.as<float>();
  const float* y = p.y.as<float>();
  const float* dy = p.dy.as<float>();
  float* dx = p.dx.as<float>();
  with_unary_op(p.op, [&](auto op) {
    const bool need_x = unary_needs_input(op), need_y = unary_needs_output(op);
    for (int64_t i = 0; i < p.n; ++i) {
      const double xv = need_x ? x[i] : 0.0, yv = need_y ? y[i] : 0.0;
      dx[i] = static_cast<float>(unary_grad_ref(op, xv, yv, dy[i], p.alpha));
    }
  });
}

// The two broadcasts the fast loops below take: an operand of c's own shape, or one whose dims
// (leading 1s dropped) are c's trailing dims, read again for every outer index of c (a bias row, a
// positional embedding). Anything else walks the general odometer.
enum class Bcast { Same, Trailing, Other };

Bcast classify(const Shape& x, const Shape& c) {
  std::vector<int64_t> d = x.dims();
  size_t lead = 0;
  while (lead < d.size() && d[lead] == 1) ++lead;
  d.erase(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(lead));
  const std::vector<int64_t>& cd = c.dims();
  if (d.size() > cd.size() || !std::equal(d.begin(), d.end(), cd.end() - static_cast<std::ptrdiff_t>(d.size())))
    return Bcast::Other;
  return x.numel() == c.numel() ? Bcast::Same : Bcast::Trailing;
}

// binary_ref in float. For + - * / the float operation rounds the exact result once, as the double
// one rounded to float does (double has more than 2*24+2 bits), and max/min select an operand:
// the same bits as binary_ref, in loops GCC vectorises.
template <BinaryOp Op>
[[gnu::always_inline]] inline float binary_f(float a, float b) {
  if constexpr (Op == BinaryOp::Add) return a + b;
  if constexpr (Op == BinaryOp::Sub) return a - b;
  if constexpr (Op == BinaryOp::Mul) return a * b;
  if constexpr (Op == BinaryOp::Div) return a / b;
  constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
  if constexpr (Op == BinaryOp::Maximum) return (a != a || b != b) ? kNan : (a > b ? a : b);
  if constexpr (Op == BinaryOp::Minimum) return (a != a || b != b) ? kNan : (a < b ? a : b);
  return std::numeric_limits<float>::quiet_NaN();
}

template <typename Fn>
void with_binary_op(BinaryOp op, Fn fn) {
  using B = BinaryOp;
  switch (op) {
    case B::Add: return fn(std::integral_constant<B, B::Add>{});
    case B::Sub: return fn(std::integral_constant<B, B::Sub>{});
    case B::Mul: return fn(std::integral_constant<B, B::Mul>{});
    case B::Div: return fn(std::integral_constant<B, B::Div>{});
    case B::Maximum: return fn(std::integral_constant<B, B::Maximum>{});
    case B::Minimum: return fn(std::integral_constant<B, B::Minimum>{});
    case B::Count: break;
  }
  CUDL_FAIL("invalid BinaryOp ", static_cast<int>(op));
}

void cpu_binary(const OpCall& call) {
  const ops::BinaryArgs p = ops::check_binary_call(call);
  const float* a = p.a.as<float>();
  const float* b = p.b.as<float>();
  float* c = p.c.as<float>();
  const Bcast ka = classify(p.a_shape, p.c_shape), kb = classify(p.b_shape, p.c_shape);
  const int64_t n = p.c_shape.numel();
  if (ka != Bcast::Other && kb != Bcast::Other && (ka == Bcast::Same || kb == Bcast::Same)) {
    with_binary_op(p.op, [&](auto op) {
      if (ka == Bcast::Same && kb == Bcast::Same) {
        for (int64_t i = 0; i < n; ++i) c[i] = binary_f<decltype(op)::value>(a[i], b[i]);
        return;
      }
      const int64_t inner = ka == Bcast::Same ? p.b_shape.numel() : p.a_shape.numel();
      for (int64_t o = 0; o < (inner ? n / inner : 0); ++o) {
        float* co = c + o * inner;
        if (ka == Bcast::Same) {
          const float* ao = a + o * inner;
          for (int64_t j = 0; j < inner; ++j) co[j] = binary_f<decltype(op)::value>(ao[j], b[j]);
        } else {
          const float* bo = b + o * inner;
          for (int64_t j = 0; j < inner; ++j) co[j] = binary_f<decltype(op)::value>(a[j], bo[j]);
        }
      }
    });
    return;
  }
  for_each_broadcast(p.a_shape, p.b_shape, p.c_shape, [&](int64_t ic, int64_t ia, int64_t ib) {
    c[ic] = static_cast<float>(binary_ref(p.op, a[ia], b[ib]));
  });
}

void cpu_binary_backward(const OpCall& call) {
  const ops::BinaryArgs p = ops::check_binary_call(call);
  const float* a = p.a.as<float>();
  const float* b = p.b.as<float>();
  const float* dc = p.dc.as<float>();
  float* da_out = p.has_da ? p.da.as<float>() : nullptr;
  float* db_out = p.has_db ? p.db.as<float>() : nullptr;
  const Bcast ka = classify(p.a_shape, p.c_shape), kb = classify(p.b_shape, p.c_shape);
  const int64_t n = p.c_shape.numel();
  if (ka == Bcast::Same && kb == Bcast::Same) {
    // One term per element: 0.0 + g, as the double sums of the general path round it (-0 -> +0).
    if (p.op == BinaryOp::Add || p.op == BinaryOp::Sub) {  // ±dc exactly: the same in float
      const float sb = p.op == BinaryOp::Add ? 1.f : -1.f;
      if (da_out)
        for (int64_t i = 0; i < n; ++i) da_out[i] = dc[i] + 0.f;
      if (db_out)
        for (int64_t i = 0; i < n; ++i) db_out[i] = sb * dc[i] + 0.f;
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      if (da_out) da_out[i] = static_cast<float>(0.0 + binary_grad_a(p.op, a[i], b[i], dc[i]));
      if (db_out) db_out[i] = static_cast<float>(0.0 + binary_grad_b(p.op, a[i], b[i], dc[i]));
    }
    return;
  }
  if ((ka == Bcast::Same && kb == Bcast::Trailing) || (ka == Bcast::Trailing && kb == Bcast::Same)) {
    // The broadcast operand's gradient sums over the outer index in order, as the general path does.
    const bool b_bcast = kb == Bcast::Trailing;
    const int64_t inner = b_bcast ? p.b_shape.numel() : p.a_shape.numel();
    std::vector<double> sum(static_cast<size_t>(inner), 0.0);
    for (int64_t o = 0; o < (inner ? n / inner : 0); ++o)
      for (int64_t j = 0; j < inner; ++j) {
        const int64_t i = o * inner + j, ia = b_bcast ? i : j, ib = b_bcast ? j : i;
        const double ga = p.has_da ? binary_grad_a(p.op, a[ia], b[ib], dc[i]) : 0.0;
        const double gb = p.has_db ? binary_grad_b(p.op, a[ia], b[ib], dc[i]) : 0.0;
        if (b_bcast) {
          if (da_out) da_out[i] = static_cast<float>(0.0 + ga);
          sum[j] += gb;
        } else {
          if (db_out) db_out[i] = static_cast<float>(0.0 + gb);
          sum[j] += ga;
        }
      }
    float* s_out = b_bcast ? db_out : da_out;
    if (s_out)
      for (int64_t j = 0; j < inner; ++j) s_out[j] = static_cast<float>(sum[j]);
    return;
  }
  std::vector<double> da(p.has_da ? p.a_shape.numel() : 0, 0.0), db(p.has_db ? p.b_shape.numel() : 0, 0.0);
  for_each_broadcast(p.a_shape, p.b_shape, p.c_shape, [&](int64_t ic, int64_t ia, int64_t ib) {
    if (p.has_da) da[ia] += binary_grad_a(p.op, a[ia], b[ib], dc[ic]);
    if (p.has_db) db[ib] += binary_grad_b(p.op, a[ia], b[ib], dc[ic]);
  });
  if (p.has_da)
    for (size_t i = 0; i < da.size(); ++i) da_out[i] = static_cast<float>(da[i]);
  if (p.has_db)
    for (size_t i = 0; i < db.size(); ++i) db_out[i] = static_cast<float>(db[i]);
}

void cpu_binary_scalar(const OpCall& call) {
  const ops::BinaryScalarArgs p = ops::check_binary_scalar_call(call);
  const float* x = p.x.as<float>();
  float* y = p.y.as<float>();
  for (int64_t i = 0; i < p.n; ++i)
    y[i] = static_cast<float>(p.scalar_first ? binary_ref(p.op, p.scalar, x[i]) : binary_ref(p.op, x[i], p.scalar));
}

void cpu_binary_scalar_backward(const OpCall& call) {
  const ops::BinaryScalarArgs p = ops::check_binary_scalar_call(call);
  const float* x = p.x.as<float>();
  const float* dy = p.dy.as<float>();
  float* dx = p.dx.as<float>();
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
