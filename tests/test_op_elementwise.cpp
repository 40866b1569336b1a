// tests/test_op_elementwise.cpp — elementwise op family: CPU reference vs finite differences, CUDA vs
// CPU (odd sizes, every broadcast position; f32, bf16 and f16 storage), NaN/Inf propagation, 16-bit
// rounding, and argument errors.
#include <cmath>
#include <cstring>
#include <functional>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "testing.hpp"
#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif

using namespace cudl;
using namespace cudl::testing;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

struct UnaryCase {
  UnaryOp op;
  const char* name;
  float alpha;
  float lo, hi;  // input range for gradient checks and parity
  bool kink_at_zero;
};

const std::vector<UnaryCase>& unary_cases() {
  static const std::vector<UnaryCase> cases = {
      {UnaryOp::Relu, "relu", 0, -2, 2, true},
      {UnaryOp::LeakyRelu, "leaky_relu", 0.1f, -2, 2, true},
      {UnaryOp::Elu, "elu", 1.3f, -2, 2, true},
      {UnaryOp::GeluErf, "gelu_erf", 0, -3, 3, false},
      {UnaryOp::GeluTanh, "gelu_tanh", 0, -3, 3, false},
      {UnaryOp::Silu, "silu", 0, -4, 4, false},
      {UnaryOp::Sigmoid, "sigmoid", 0, -4, 4, false},
      {UnaryOp::Tanh, "tanh", 0, -3, 3, false},
      {UnaryOp::Softplus, "softplus", 0, -4, 4, false},
      {UnaryOp::Exp, "exp", 0, -2, 2, false},
      {UnaryOp::Log, "log", 0, 0.2f, 3, false},
      {UnaryOp::Sqrt, "sqrt", 0, 0.2f, 3, false},
      {UnaryOp::Abs, "abs", 0, -2, 2, true},
      {UnaryOp::Neg, "neg", 0, -2, 2, false},
      {UnaryOp::Square, "square", 0, -2, 2, false},
  };
  return cases;
}

// Random inputs for a case; ops with a kink at 0 keep |x| >= 0.05 so central differences are valid.
Tensor unary_input(const UnaryCase& c, const Shape& shape, uint64_t seed) {
  Tensor x = random_tensor(shape, seed, c.lo, c.hi);
  if (c.kink_at_zero) {
    float* p = x.data_as<float>();
    for (int64_t i = 0; i < x.numel(); ++i) p[i] = std::copysign(0.05f + std::fabs(p[i]), p[i]);
  }
  return x;
}

OpAttrs unary_attrs(UnaryOp op, float alpha) {
  OpAttrs a;
  a.i[0] = static_cast<int64_t>(op);
  a.f[0] = alpha;
  return a;
}

// Outputs take the inputs' dtype (f32, or the bf16 / f16 storage of the 16-bit cases).
Tensor run_unary(UnaryOp op, const Tensor& x, float alpha) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  run_op(OpKind::Unary, {tv(x)}, {tv(y)}, unary_attrs(op, alpha));
  return y;
}

// Passes only the tensors the op's derivative needs (unary_needs_input / _output), so a backend
// that reads more fails here.
Tensor run_unary_backward(UnaryOp op, const Tensor& x, const Tensor& y, const Tensor& dy, float alpha) {
  Tensor dx = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
  const TensorView xv = unary_needs_input(op) ? tv(x) : TensorView{};
  const TensorView yv = unary_needs_output(op) ? tv(y) : TensorView{};
  run_op(OpKind::UnaryBackward, {xv, yv, tv(dy)}, {tv(dx)}, unary_attrs(op, alpha));
  return dx;
}

Tensor run_binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor c = Tensor::empty(broadcast_shapes(a.shape(), b.shape()), a.dtype(), a.device());
  OpAttrs at;
  at.i[0] = static_cast<int64_t>(op);
  run_op(OpKind::Binary, {tv(a), tv(b)}, {tv(c)}, at);
  return c;
}

std::pair<Tensor, Tensor> run_binary_backward(BinaryOp op, const Tensor& a, const Tensor& b, const Tensor& dc,
                                              bool want_da = true, bool want_db = true) {
  Tensor da = want_da ? Tensor::full(a.shape(), 12345.0, a.dtype(), a.device()) : Tensor();
  Tensor db = want_db ? Tensor::full(b.shape(), 12345.0, b.dtype(), b.device()) : Tensor();
  OpAttrs at;
  at.i[0] = static_cast<int64_t>(op);
  run_op(OpKind::BinaryBackward, {tv(a), tv(b), tv(dc)}, {tv(da), tv(db)}, at);
  return {da, db};
}

OpAttrs scalar_attrs(BinaryOp op, float s, bool scalar_first) {
  OpAttrs at;
  at.i[0] = static_cast<int64_t>(op);
  at.i[1] = scalar_first ? 1 : 0;
  at.f[0] = s;
  return at;
}

Tensor run_scalar(BinaryOp op, const Tensor& x, float s, bool scalar_first) {
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  run_op(OpKind::BinaryScalar, {tv(x)}, {tv(y)}, scalar_attrs(op, s, scalar_first));
  return y;
}

Tensor run_scalar_backward(BinaryOp op, const Tensor& x, const Tensor& dy, float s, bool scalar_first) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  run_op(OpKind::BinaryScalarBackward, {tv(x), tv(dy)}, {tv(dx)}, scalar_attrs(op, s, scalar_first));
  return dx;
}

std::vector<double> random_weights(int64_t n, uint64_t seed) { return as_doubles(random_tensor(Shape{n}, seed)); }

Tensor cuda(const Tensor& t) { return t.to(Device::cuda()); }
Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

const char* binary_name(BinaryOp op) {
  static const char* const names[] = {"add", "sub", "mul", "div", "maximum", "minimum"};
  return names[static_cast<int>(op)];
}
const std::vector<BinaryOp> kBinaryOps = {BinaryOp::Add, BinaryOp::Sub,     BinaryOp::Mul,
                                          BinaryOp::Div, BinaryOp::Maximum, BinaryOp::Minimum};

// Inputs for a binary op: divisors stay away from zero.
Tensor binary_operand(BinaryOp op, const Shape& shape, uint64_t seed, bool is_divisor) {
  if (op == BinaryOp::Div && is_divisor) {
    Tensor t = random_tensor(shape, seed, 0.5f, 1.5f);
    float* p = t.data_as<float>();
    for (int64_t i = 0; i < t.numel(); ++i)
      if (i % 2) p[i] = -p[i];
    return t;
  }
  return random_tensor(shape, seed, -2, 2);
}

// Every broadcast position: trailing, leading, middle, scalar-like, same shape, and both orders.
const std::vector<std::pair<Shape, Shape>>& broadcast_pairs() {
  static const std::vector<std::pair<Shape, Shape>> pairs = {
      {Shape{3, 1, 5}, Shape{4, 1}}, {Shape{4, 1}, Shape{3, 1, 5}},    {Shape{2, 3, 4}, Shape{1}},
      {Shape{1}, Shape{2, 3, 4}},    {Shape{2, 3, 4}, Shape{2, 3, 4}}, {Shape{2, 3, 4}, Shape{4}},
      {Shape{4}, Shape{2, 3, 4}},    {Shape{5, 1}, Shape{1, 6}},       {Shape{2, 1, 4}, Shape{2, 3, 1}},
      {Shape{}, Shape{3}},           {Shape{2, 3}, Shape{1, 2, 3}},
  };
  return pairs;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Unary
// ---------------------------------------------------------------------------------------------

TEST(Unary, CpuGradientMatchesFiniteDifferences) {
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    const Shape shape{37};
    Tensor x = unary_input(c, shape, 11);
    const auto w = random_weights(shape.numel(), 12);
    Tensor y = run_unary(c.op, x, c.alpha);
    Tensor dy = Tensor::from_vector(std::vector<float>(w.begin(), w.end()), shape);
    Tensor dx = run_unary_backward(c.op, x, y, dy, c.alpha);
    auto f = [&](const Tensor& xx) { return weighted_sum(run_unary(c.op, xx, c.alpha), w); };
    EXPECT_TRUE(gradient_close(dx, numerical_gradient(f, x)));
  }
}

TEST(Unary, CpuForwardMatchesDefinitions) {
  // Spot values from the mathematical definitions (independent of the reference's formulas).
  Tensor x = Tensor::from_vector<float>({-1.5f, 0.5f, 2.0f}, Shape{3});
  auto v = [&](UnaryOp op, float alpha = 0) { return run_unary(op, x, alpha).to_vector<float>(); };
  EXPECT_FLOAT_EQ(v(UnaryOp::Relu)[0], 0.f);
  EXPECT_FLOAT_EQ(v(UnaryOp::LeakyRelu, 0.2f)[0], -0.3f);
  EXPECT_FLOAT_EQ(v(UnaryOp::Elu, 2.f)[0], static_cast<float>(2 * (std::exp(-1.5) - 1)));
  EXPECT_NEAR(v(UnaryOp::GeluErf)[2], 1.9544997361, 1e-6);   // 2 * Phi(2)
  EXPECT_NEAR(v(UnaryOp::GeluTanh)[2], 1.9545976940, 1e-6);  // tanh approximation at 2
  EXPECT_NEAR(v(UnaryOp::Silu)[1], 0.5 / (1 + std::exp(-0.5)), 1e-7);
  EXPECT_NEAR(v(UnaryOp::Softplus)[0], std::log(1 + std::exp(-1.5)), 1e-7);
  EXPECT_FLOAT_EQ(v(UnaryOp::Square)[0], 2.25f);
  // softplus: identity above the threshold 20 (like PyTorch), no overflow for large inputs.
  Tensor big = Tensor::from_vector<float>({20.5f, 1000.f, -1000.f}, Shape{3});
  auto sp = run_unary(UnaryOp::Softplus, big, 0).to_vector<float>();
  EXPECT_EQ(sp[0], 20.5f);
  EXPECT_EQ(sp[1], 1000.f);
  EXPECT_EQ(sp[2], 0.f);
}

TEST(Unary, CudaMatchesCpuForwardAndBackward) {
  CUDL_REQUIRE_CUDA();
  for (const UnaryCase& c : unary_cases()) {
    for (int64_t n : {1, 3, 31, 33, 1000, 4099}) {
      SCOPED_TRACE(std::string(c.name) + " n=" + std::to_string(n));
      Tensor x = random_tensor(Shape{n}, 100 + n, c.lo, c.hi);
      Tensor y = run_unary(c.op, x, c.alpha);
      Tensor y_dev = run_unary(c.op, cuda(x), c.alpha);
      EXPECT_TRUE(all_close(host(y_dev), y, 1e-6, 1e-5));
      Tensor dy = random_tensor(Shape{n}, 200 + n);
      Tensor dx = run_unary_backward(c.op, x, y, dy, c.alpha);
      Tensor dx_dev = run_unary_backward(c.op, cuda(x), cuda(y), cuda(dy), c.alpha);
      EXPECT_TRUE(all_close(host(dx_dev), dx, 1e-6, 1e-5));
    }
  }
}

TEST(Unary, NanAndInfPropagate) {
  const std::vector<float> special = {kNaN, kInf, -kInf, 0.f, -0.f, 1.f, -1.f, 25.f, -25.f, 1e-30f, 100.f, -100.f};
  const Shape shape{static_cast<int64_t>(special.size())};
  Tensor x = Tensor::from_vector(special, shape);
  Tensor dy = random_tensor(shape, 5, 0.5f, 1.5f);
  // IEEE / PyTorch semantics, checked on the reference.
  auto at = [&](UnaryOp op, int i) { return run_unary(op, x, 0.1f).to_vector<float>()[i]; };
  for (const UnaryCase& c : unary_cases()) EXPECT_TRUE(std::isnan(at(c.op, 0))) << c.name << "(NaN)";
  EXPECT_EQ(at(UnaryOp::Relu, 1), kInf);
  EXPECT_EQ(at(UnaryOp::Relu, 2), 0.f);
  EXPECT_EQ(at(UnaryOp::Sigmoid, 2), 0.f);
  EXPECT_EQ(at(UnaryOp::Sigmoid, 1), 1.f);
  EXPECT_EQ(at(UnaryOp::Tanh, 2), -1.f);
  EXPECT_EQ(at(UnaryOp::Softplus, 1), kInf);
  EXPECT_EQ(at(UnaryOp::Softplus, 2), 0.f);
  EXPECT_EQ(at(UnaryOp::Exp, 2), 0.f);
  EXPECT_EQ(at(UnaryOp::Exp, 10), kInf);
  EXPECT_EQ(at(UnaryOp::Log, 3), -kInf);
  EXPECT_TRUE(std::isnan(at(UnaryOp::Log, 6)));
  EXPECT_TRUE(std::isnan(at(UnaryOp::Sqrt, 6)));
  EXPECT_EQ(at(UnaryOp::Abs, 2), kInf);
  EXPECT_EQ(at(UnaryOp::Elu, 2), -0.1f);
  // relu's gradient passes dy where the output is NaN (PyTorch's threshold_backward).
  Tensor y_relu = run_unary(UnaryOp::Relu, x, 0);
  EXPECT_EQ(run_unary_backward(UnaryOp::Relu, x, y_relu, dy, 0).to_vector<float>()[0], dy.to_vector<float>()[0]);
  if (!cuda_available())
    GTEST_SKIP() << "CPU part checked; the CUDA part needs a CUDA device (" << cuda_unavailable_reason() << ")";
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    Tensor y = run_unary(c.op, x, c.alpha);
    EXPECT_TRUE(all_close(host(run_unary(c.op, cuda(x), c.alpha)), y, 1e-6, 1e-5));
    Tensor dx = run_unary_backward(c.op, x, y, dy, c.alpha);
    EXPECT_TRUE(all_close(host(run_unary_backward(c.op, cuda(x), cuda(y), cuda(dy), c.alpha)), dx, 1e-6, 1e-5));
  }
}

TEST(Unary, EmptyTensorIsANoOp) {
  Tensor x = Tensor::empty(Shape{0, 3});
  EXPECT_EQ(run_unary(UnaryOp::Exp, x, 0).numel(), 0);
  if (!cuda_available())
    GTEST_SKIP() << "CPU part checked; the CUDA part needs a CUDA device (" << cuda_unavailable_reason() << ")";
  EXPECT_EQ(run_unary(UnaryOp::Exp, cuda(x), 0).numel(), 0);
  Tensor dy = cuda(Tensor::empty(Shape{0, 3}));
  EXPECT_EQ(run_unary_backward(UnaryOp::Exp, Tensor(), run_unary(UnaryOp::Exp, dy, 0), dy, 0).numel(), 0);
}

// ---------------------------------------------------------------------------------------------
// Binary with broadcasting
// ---------------------------------------------------------------------------------------------

TEST(Binary, CpuForwardBroadcastsLikeNumpy) {
  // (2, 1) + (3,) -> (2, 3): c[i][j] = a[i] + b[j], written out by hand.
  Tensor a = Tensor::from_vector<float>({1, 2}, Shape{2, 1});
  Tensor b = Tensor::from_vector<float>({10, 20, 30}, Shape{3});
  EXPECT_EQ(run_binary(BinaryOp::Add, a, b).to_vector<float>(), (std::vector<float>{11, 21, 31, 12, 22, 32}));
  EXPECT_EQ(run_binary(BinaryOp::Sub, b, a).to_vector<float>(), (std::vector<float>{9, 19, 29, 8, 18, 28}));
  EXPECT_EQ(run_binary(BinaryOp::Sub, b, a).shape(), (Shape{2, 3}));
}

TEST(Binary, CpuGradientMatchesFiniteDifferences) {
  for (BinaryOp op : kBinaryOps) {
    for (const auto& [sa, sb] : broadcast_pairs()) {
      SCOPED_TRACE(std::string(binary_name(op)) + " " + sa.str() + " with " + sb.str());
      Tensor a = binary_operand(op, sa, 1, false);
      Tensor b = binary_operand(op, sb, 2, true);
      const Shape sc = broadcast_shapes(sa, sb);
      const auto w = random_weights(sc.numel(), 3);
      Tensor dc = Tensor::from_vector(std::vector<float>(w.begin(), w.end()), sc);
      auto [da, db] = run_binary_backward(op, a, b, dc);
      auto fa = [&](const Tensor& aa) { return weighted_sum(run_binary(op, aa, b), w); };
      auto fb = [&](const Tensor& bb) { return weighted_sum(run_binary(op, a, bb), w); };
      EXPECT_TRUE(gradient_close(da, numerical_gradient(fa, a)));
      EXPECT_TRUE(gradient_close(db, numerical_gradient(fb, b)));
    }
  }
}

TEST(Binary, MaximumMinimumTiesSplitTheGradient) {
  Tensor a = Tensor::from_vector<float>({1, 2, 3}, Shape{3});
  Tensor b = Tensor::from_vector<float>({1, 5, 0}, Shape{3});
  Tensor dc = Tensor::from_vector<float>({4, 4, 4}, Shape{3});
  std::vector<Device> devices = {Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (Device d : devices) {
    SCOPED_TRACE(d.str());
    auto [da, db] = run_binary_backward(BinaryOp::Maximum, a.to(d), b.to(d), dc.to(d));
    EXPECT_EQ(host(da).to_vector<float>(), (std::vector<float>{2, 0, 4}));
    EXPECT_EQ(host(db).to_vector<float>(), (std::vector<float>{2, 4, 0}));
    auto [ma, mb] = run_binary_backward(BinaryOp::Minimum, a.to(d), b.to(d), dc.to(d));
    EXPECT_EQ(host(ma).to_vector<float>(), (std::vector<float>{2, 4, 0}));
    EXPECT_EQ(host(mb).to_vector<float>(), (std::vector<float>{2, 0, 4}));
  }
}

TEST(Binary, CudaMatchesCpuInEveryBroadcastPosition) {
  CUDL_REQUIRE_CUDA();
  std::vector<std::pair<Shape, Shape>> pairs = broadcast_pairs();
  // Larger ones: the vectorised same-shape path with a tail, long broadcast preimages.
  pairs.push_back({Shape{4099}, Shape{4099}});
  pairs.push_back({Shape{1000}, Shape{1}});
  pairs.push_back({Shape{33, 65}, Shape{65}});
  pairs.push_back({Shape{33, 65}, Shape{33, 1}});
  pairs.push_back({Shape{1, 65}, Shape{33, 1}});
  for (BinaryOp op : kBinaryOps) {
    for (const auto& [sa, sb] : pairs) {
      SCOPED_TRACE(std::string(binary_name(op)) + " " + sa.str() + " with " + sb.str());
      Tensor a = binary_operand(op, sa, 21, false);
      Tensor b = binary_operand(op, sb, 22, true);
      Tensor c = run_binary(op, a, b);
      EXPECT_TRUE(all_close(host(run_binary(op, cuda(a), cuda(b))), c, 0, 0));
      Tensor dc = random_tensor(c.shape(), 23);
      auto [da, db] = run_binary_backward(op, a, b, dc);
      auto [da_dev, db_dev] = run_binary_backward(op, cuda(a), cuda(b), cuda(dc));
      EXPECT_TRUE(all_close(host(da_dev), da, 1e-5, 1e-5));
      EXPECT_TRUE(all_close(host(db_dev), db, 1e-5, 1e-5));
      // Either gradient may be skipped.
      auto [only_a, none_b] = run_binary_backward(op, cuda(a), cuda(b), cuda(dc), true, false);
      EXPECT_FALSE(none_b.defined());
      EXPECT_TRUE(all_close(host(only_a), da, 1e-5, 1e-5));
      auto [none_a, only_b] = run_binary_backward(op, cuda(a), cuda(b), cuda(dc), false, true);
      EXPECT_TRUE(all_close(host(only_b), db, 1e-5, 1e-5));
    }
  }
}

TEST(Binary, CudaBackwardIsDeterministic) {
  CUDL_REQUIRE_CUDA();
  Tensor a = cuda(random_tensor(Shape{64, 129}, 1));
  Tensor b = cuda(random_tensor(Shape{129}, 2));
  Tensor dc = cuda(random_tensor(Shape{64, 129}, 3));
  auto [da1, db1] = run_binary_backward(BinaryOp::Mul, a, b, dc);
  auto [da2, db2] = run_binary_backward(BinaryOp::Mul, a, b, dc);
  EXPECT_EQ(host(db1).to_vector<float>(), host(db2).to_vector<float>());
  EXPECT_EQ(host(da1).to_vector<float>(), host(da2).to_vector<float>());
}

TEST(Binary, NanPropagatesThroughMaximumAndMinimum) {
  Tensor a = Tensor::from_vector<float>({kNaN, 1, kNaN, kInf, -kInf, 2}, Shape{6});
  Tensor b = Tensor::from_vector<float>({1, kNaN, kNaN, 1, 1, kInf}, Shape{6});
  std::vector<Device> devices = {Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (Device d : devices) {
    SCOPED_TRACE(d.str());
    auto mx = host(run_binary(BinaryOp::Maximum, a.to(d), b.to(d))).to_vector<float>();
    auto mn = host(run_binary(BinaryOp::Minimum, a.to(d), b.to(d))).to_vector<float>();
    for (int i = 0; i < 3; ++i) {
      EXPECT_TRUE(std::isnan(mx[i])) << i;
      EXPECT_TRUE(std::isnan(mn[i])) << i;
    }
    EXPECT_EQ(mx[3], kInf);
    EXPECT_EQ(mn[4], -kInf);
    EXPECT_EQ(mx[5], kInf);
    auto dv = host(run_binary(BinaryOp::Div, a.to(d), Tensor::zeros(Shape{6}).to(d))).to_vector<float>();
    EXPECT_TRUE(std::isnan(dv[0]));
    EXPECT_EQ(dv[1], kInf);
    EXPECT_EQ(dv[4], -kInf);
  }
}

TEST(Binary, EmptyBroadcastIsANoOp) {
  std::vector<Device> devices = {Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (Device d : devices) {
    Tensor a = Tensor::empty(Shape{0, 3}, DType::f32, d);
    Tensor b = Tensor::zeros(Shape{3}, DType::f32, d);
    EXPECT_EQ(run_binary(BinaryOp::Add, a, b).shape(), (Shape{0, 3}));
    Tensor dc = Tensor::empty(Shape{0, 3}, DType::f32, d);
    auto [da, db] = run_binary_backward(BinaryOp::Mul, a, b, dc);
    EXPECT_EQ(host(db).to_vector<float>(), (std::vector<float>{0, 0, 0}));  // empty sum is 0
  }
}

// ---------------------------------------------------------------------------------------------
// Binary with a scalar
// ---------------------------------------------------------------------------------------------

TEST(BinaryScalar, CpuMatchesBinaryAndFiniteDifferences) {
  for (BinaryOp op : kBinaryOps) {
    for (bool first : {false, true}) {
      SCOPED_TRACE(std::string(binary_name(op)) + (first ? " scalar first" : " scalar second"));
      const float s = op == BinaryOp::Div && !first ? 0.7f : 0.3f;
      Tensor x = binary_operand(op, Shape{5, 7}, 31, first);
      Tensor st = Tensor::full(Shape{1}, s);
      Tensor y = run_scalar(op, x, s, first);
      EXPECT_TRUE(all_close(y, first ? run_binary(op, st, x) : run_binary(op, x, st), 0, 0));
      const auto w = random_weights(x.numel(), 32);
      Tensor dy = Tensor::from_vector(std::vector<float>(w.begin(), w.end()), x.shape());
      auto f = [&](const Tensor& xx) { return weighted_sum(run_scalar(op, xx, s, first), w); };
      EXPECT_TRUE(gradient_close(run_scalar_backward(op, x, dy, s, first), numerical_gradient(f, x)));
    }
  }
}

TEST(BinaryScalar, CudaMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  for (BinaryOp op : kBinaryOps) {
    for (bool first : {false, true}) {
      for (int64_t n : {1, 3, 33, 4099}) {
        SCOPED_TRACE(std::string(binary_name(op)) + (first ? " scalar first" : " scalar second") +
                     " n=" + std::to_string(n));
        const float s = 0.3f;
        Tensor x = binary_operand(op, Shape{n}, 41 + n, first);
        if (n >= 3) x.data_as<float>()[2] = s;  // a tie for maximum/minimum
        Tensor y = run_scalar(op, x, s, first);
        EXPECT_TRUE(all_close(host(run_scalar(op, cuda(x), s, first)), y, 0, 0));
        Tensor dy = random_tensor(Shape{n}, 43);
        Tensor dx = run_scalar_backward(op, x, dy, s, first);
        EXPECT_TRUE(all_close(host(run_scalar_backward(op, cuda(x), cuda(dy), s, first)), dx, 1e-6, 1e-6));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 16-bit storage (bf16, f16): fp32 math, one round to nearest even per stored value
// ---------------------------------------------------------------------------------------------
// The CPU reference of a bf16 / f16 call widens its tensors, runs the f32 function (double math
// rounded to f32) and rounds the outputs to nearest even (src/cpu/precision.cpp); the CUDA kernels
// compute in fp32 and round once. Where the f32 CUDA path equals the CPU bitwise (binary and
// tensor-scalar forward; relu, leaky_relu, abs, neg, square and their gradients; the tensor-scalar
// gradients except div's with the scalar first) the 16-bit results are compared bitwise. Elsewhere
// the two fp32 results differ by a few f32 ulps (transcendental functions, float vs double formulas
// and sums), which now and then puts them on the two sides of a 16-bit rounding midpoint: those
// compare to within 1 ulp of the 16-bit type. NaN matches NaN (payloads differ between conversions).

namespace {

bool unary_exact(UnaryOp op) {
  return op == UnaryOp::Relu || op == UnaryOp::LeakyRelu || op == UnaryOp::Abs || op == UnaryOp::Neg ||
         op == UnaryOp::Square;
}

Tensor random_16bit(const Shape& shape, DType dt, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  return to_16bit(random_tensor(shape, seed, lo, hi), dt);
}

std::string trace(DType dt, const std::string& what) {
  std::ostringstream os;
  os << dt << " " << what;
  return os.str();
}

}  // namespace

TEST(Unary16Bit, CudaMatchesCpuForwardAndBackward) {
  CUDL_REQUIRE_CUDA();
  for (DType dt : k16BitTypes) {
    for (const UnaryCase& c : unary_cases()) {
      const int ulps = unary_exact(c.op) ? 0 : 1;
      // 1, 3, 33: scalar kernel; 1000: 8-wide vectors only; 4099: vectors and a tail of 3.
      for (int64_t n : {1, 3, 33, 1000, 4099}) {
        SCOPED_TRACE(trace(dt, std::string(c.name) + " n=" + std::to_string(n)));
        Tensor x = random_16bit(Shape{n}, dt, 100 + n, c.lo, c.hi);
        Tensor y = run_unary(c.op, x, c.alpha);
        ASSERT_EQ(y.dtype(), dt);
        EXPECT_TRUE(equal_16bit(host(run_unary(c.op, cuda(x), c.alpha)), y, ulps));
        Tensor dy = random_16bit(Shape{n}, dt, 200 + n);
        Tensor dx = run_unary_backward(c.op, x, y, dy, c.alpha);
        EXPECT_TRUE(equal_16bit(host(run_unary_backward(c.op, cuda(x), cuda(y), cuda(dy), c.alpha)), dx, ulps));
      }
    }
  }
}

TEST(Unary16Bit, UnalignedViewsTakeTheScalarPath) {
  CUDL_REQUIRE_CUDA();
  for (DType dt : k16BitTypes) {
    SCOPED_TRACE(trace(dt, "gelu_tanh at element offset 1"));
    const int64_t n = 1001;
    Tensor whole = cuda(random_16bit(Shape{n + 1}, dt, 7, -3, 3));
    Tensor x = whole.view_bytes(2, Shape{n}, dt);  // 2 bytes past a 16-byte boundary
    Tensor out = cuda(Tensor::zeros(Shape{n + 1}, dt));
    Tensor y = out.view_bytes(2, Shape{n}, dt);
    run_op(OpKind::Unary, {tv(x)}, {tv(y)}, unary_attrs(UnaryOp::GeluTanh, 0));
    EXPECT_TRUE(equal_16bit(host(y), run_unary(UnaryOp::GeluTanh, host(x), 0), 1));
    EXPECT_EQ(bits_16(out)[0], 0u);  // nothing written before the view
  }
}

TEST(Unary16Bit, NanAndInfMatchCpu) {
  CUDL_REQUIRE_CUDA();
  // 70000 overflows f16 (and stays finite in bf16), 1e-30 underflows it.
  const std::vector<float> special = {kNaN, kInf,  -kInf,  0.f,   -0.f,   1.f,    -1.f,
                                      25.f, -25.f, 1e-30f, 100.f, -100.f, 70000.f};
  const Shape shape{static_cast<int64_t>(special.size())};
  for (DType dt : k16BitTypes) {
    Tensor x = to_16bit(Tensor::from_vector(special, shape), dt);
    Tensor dy = random_16bit(shape, dt, 5, 0.5f, 1.5f);
    for (const UnaryCase& c : unary_cases()) {
      SCOPED_TRACE(trace(dt, c.name));
      const int ulps = unary_exact(c.op) ? 0 : 1;
      Tensor y = run_unary(c.op, x, c.alpha);
      EXPECT_TRUE(equal_16bit(host(run_unary(c.op, cuda(x), c.alpha)), y, ulps));
      Tensor dx = run_unary_backward(c.op, x, y, dy, c.alpha);
      EXPECT_TRUE(equal_16bit(host(run_unary_backward(c.op, cuda(x), cuda(y), cuda(dy), c.alpha)), dx, ulps));
    }
  }
}

TEST(Binary16Bit, CudaMatchesCpuInEveryBroadcastPosition) {
  CUDL_REQUIRE_CUDA();
  std::vector<std::pair<Shape, Shape>> pairs = broadcast_pairs();
  pairs.push_back({Shape{4099}, Shape{4099}});  // 8-wide vectors and a tail
  pairs.push_back({Shape{1000}, Shape{1}});
  pairs.push_back({Shape{2048}, Shape{1}});  // one block per gradient element
  pairs.push_back({Shape{33, 65}, Shape{65}});
  pairs.push_back({Shape{33, 65}, Shape{33, 1}});
  pairs.push_back({Shape{1, 65}, Shape{33, 1}});
  for (DType dt : k16BitTypes) {
    for (BinaryOp op : kBinaryOps) {
      for (const auto& [sa, sb] : pairs) {
        SCOPED_TRACE(trace(dt, std::string(binary_name(op)) + " " + sa.str() + " with " + sb.str()));
        Tensor a = to_16bit(binary_operand(op, sa, 21, false), dt);
        Tensor b = to_16bit(binary_operand(op, sb, 22, true), dt);
        Tensor c = run_binary(op, a, b);
        ASSERT_EQ(c.dtype(), dt);
        EXPECT_TRUE(equal_16bit(host(run_binary(op, cuda(a), cuda(b))), c));
        Tensor dc = random_16bit(c.shape(), dt, 23);
        auto [da, db] = run_binary_backward(op, a, b, dc);
        auto [da_dev, db_dev] = run_binary_backward(op, cuda(a), cuda(b), cuda(dc));
        EXPECT_TRUE(equal_16bit(host(da_dev), da, 1));
        EXPECT_TRUE(equal_16bit(host(db_dev), db, 1));
        // Either gradient alone is the same kernel's result.
        auto [only_a, none_b] = run_binary_backward(op, cuda(a), cuda(b), cuda(dc), true, false);
        EXPECT_FALSE(none_b.defined());
        EXPECT_TRUE(equal_16bit(host(only_a), host(da_dev)));
        auto [none_a, only_b] = run_binary_backward(op, cuda(a), cuda(b), cuda(dc), false, true);
        EXPECT_TRUE(equal_16bit(host(only_b), host(db_dev)));
      }
    }
  }
}

TEST(BinaryScalar16Bit, CudaMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  const float s = 0.375f;  // exact in bf16 and f16, so x[2] = s is a tie for maximum / minimum
  for (DType dt : k16BitTypes) {
    for (BinaryOp op : kBinaryOps) {
      for (bool first : {false, true}) {
        const int ulps = op == BinaryOp::Div && first ? 1 : 0;  // -dy * s / (x * x): float vs double
        for (int64_t n : {1, 3, 33, 4099}) {
          SCOPED_TRACE(trace(dt, std::string(binary_name(op)) + (first ? " scalar first" : " scalar second") +
                                     " n=" + std::to_string(n)));
          Tensor xf = binary_operand(op, Shape{n}, 41 + n, first);
          if (n >= 3) xf.data_as<float>()[2] = s;
          Tensor x = to_16bit(xf, dt);
          Tensor y = run_scalar(op, x, s, first);
          EXPECT_TRUE(equal_16bit(host(run_scalar(op, cuda(x), s, first)), y));
          Tensor dy = random_16bit(Shape{n}, dt, 43);
          Tensor dx = run_scalar_backward(op, x, dy, s, first);
          EXPECT_TRUE(equal_16bit(host(run_scalar_backward(op, cuda(x), cuda(dy), s, first)), dx, ulps));
        }
      }
    }
  }
}

namespace {

int count_differing(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  int d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += a[i] != b[i];
  return d;
}

Tensor from_bits_16(const std::vector<uint16_t>& bits, const Shape& shape, DType dt) {
  Tensor t = Tensor::empty(shape, dt);
  std::memcpy(t.data(), bits.data(), bits.size() * sizeof(uint16_t));
  return t;
}

}  // namespace

// Each check's inputs are chosen so that the defect it names changes many results, and the CUDA
// results must equal the fp32-then-round-once values bitwise: a kernel that truncated, rounded ties
// away from zero, rounded intermediate values to 16 bits or summed in 16 bits fails here.
TEST(Storage16Bit, CudaRoundsOnceToNearestEven) {
  CUDL_REQUIRE_CUDA();
  for (DType dt : k16BitTypes) {
    SCOPED_TRACE(trace(dt, ""));
    // Rounding, not truncation: y = x * (1/3), x with |x| in [0.25, 2] (normal results in f16 too).
    const int64_t n = 4099;
    Tensor xf = random_tensor(Shape{n}, 61, 0.25f, 2.f);
    for (int64_t i = 1; i < n; i += 2) xf.data_as<float>()[i] *= -1;
    Tensor x = to_16bit(xf, dt);
    const float third = 1.f / 3.f;
    std::vector<uint16_t> rne(n), trunc(n);
    const std::vector<uint16_t> xb = bits_16(x);
    for (int64_t i = 0; i < n; ++i) {
      const float r = widen_16(xb[i], dt) * third;  // the kernel's fp32 product
      rne[i] = round_16(r, dt);
      trunc[i] = truncate_16(r, dt);
    }
    EXPECT_GT(count_differing(trunc, rne), n / 4) << "inputs too weak to show truncation";
    EXPECT_EQ(bits_16(run_scalar(BinaryOp::Mul, cuda(x), third, false)), rne) << "mul by 1/3";
    EXPECT_EQ(bits_16(run_scalar(BinaryOp::Mul, x, third, false)), rne) << "the CPU reference";

    // Ties to even: x = 1 + k ulp plus half an ulp is exactly halfway; the even neighbour wins
    // (k even: x, k odd: x + 1 ulp), which neither truncation nor ties-away-from-zero give.
    const int mant_bits = dt == DType::bf16 ? 7 : 10;
    const float half_ulp = std::ldexp(1.f, -mant_bits - 1);
    const int64_t m = 300;
    std::vector<float> tf(m);
    for (int64_t k = 0; k < m; ++k) tf[k] = 1.f + std::ldexp(static_cast<float>(k % 100), -mant_bits);
    Tensor t = to_16bit(Tensor::from_vector(tf, Shape{m}), dt);
    const std::vector<uint16_t> tb = bits_16(t);
    std::vector<uint16_t> even(m);
    for (int64_t k = 0; k < m; ++k) even[k] = static_cast<uint16_t>(tb[k] + (tb[k] & 1u));
    EXPECT_EQ(bits_16(run_scalar(BinaryOp::Add, cuda(t), half_ulp, false)), even) << "ties";
    EXPECT_EQ(bits_16(run_scalar(BinaryOp::Add, t, half_ulp, false)), even) << "ties, the CPU reference";

    // fp32 intermediates: sigmoid's gradient dy * y * (1 - y) rounded once, not after each step.
    Tensor y = random_16bit(Shape{n}, dt, 62, 0.05f, 0.95f);
    Tensor dy = random_16bit(Shape{n}, dt, 63, -2.f, 2.f);
    const std::vector<uint16_t> yb = bits_16(y), dyb = bits_16(dy);
    std::vector<uint16_t> once(n), stepwise(n);
    for (int64_t i = 0; i < n; ++i) {
      const float yv = widen_16(yb[i], dt), g = widen_16(dyb[i], dt);
      once[i] = round_16(g * yv * (1.f - yv), dt);
      const float a = widen_16(round_16(g * yv, dt), dt), b = widen_16(round_16(1.f - yv, dt), dt);
      stepwise[i] = round_16(a * b, dt);
    }
    EXPECT_GT(count_differing(stepwise, once), n / 20) << "inputs too weak to show 16-bit intermediates";
    EXPECT_EQ(bits_16(run_unary_backward(UnaryOp::Sigmoid, Tensor(), cuda(y), cuda(dy), 0)), once)
        << "sigmoid gradient";

    // fp32 sums over broadcast dimensions: db of a (R, C) + b (C) sums R values of dc per column.
    // R = 40: one thread per column; R = 2048: one block per column (a tree reduction).
    for (int64_t rows : {int64_t(40), int64_t(2048)}) {
      const int64_t cols = rows == 40 ? 300 : 3;
      SCOPED_TRACE("sum of " + std::to_string(rows) + " rows");
      Tensor dc = random_16bit(Shape{rows, cols}, dt, 64, 0.f, 1.f);
      const std::vector<uint16_t> dcb = bits_16(dc);
      std::vector<uint16_t> exact(cols), summed16(cols);
      for (int64_t j = 0; j < cols; ++j) {
        double s = 0;
        uint16_t acc = round_16(0.f, dt);
        for (int64_t r = 0; r < rows; ++r) {
          const float v = widen_16(dcb[r * cols + j], dt);
          s += v;
          acc = round_16(widen_16(acc, dt) + v, dt);
        }
        exact[j] = round_16(static_cast<float>(s), dt);
        summed16[j] = acc;
      }
      Tensor exact_t = from_bits_16(exact, Shape{cols}, dt);
      EXPECT_FALSE(equal_16bit(from_bits_16(summed16, Shape{cols}, dt), exact_t, 1))
          << "inputs too weak to show a 16-bit sum";
      Tensor a = cuda(random_16bit(Shape{rows, cols}, dt, 65));
      Tensor b = cuda(random_16bit(Shape{cols}, dt, 66));
      auto [da, db] = run_binary_backward(BinaryOp::Add, a, b, cuda(dc), false, true);
      EXPECT_TRUE(equal_16bit(host(db), exact_t, 1));  // fp32 vs double sums: within 1 ulp
    }
  }
}

#if defined(CUDL_EMULATED)
// A bf16 or f16 call makes as many kernel launches as the f32 call of the same shapes (counted around
// the op alone: its tensors are made first).
TEST(Storage16Bit, SameLaunchesAsF32) {
  CUDL_REQUIRE_CUDA();
  ExecContext& ctx = default_context(Device::cuda());
  struct Call {
    const char* name;
    OpKind op;
    std::vector<Tensor> in, out;
    OpAttrs attrs;
  };
  const Shape n{4099}, rows{33, 65}, row{65};
  auto make_calls = [&](DType dt) {
    auto t = [&](const Shape& s, uint64_t seed) {
      return cuda(dt == DType::f32 ? random_tensor(s, seed) : random_16bit(s, dt, seed));
    };
    const OpAttrs gelu = unary_attrs(UnaryOp::GeluTanh, 0);
    OpAttrs mul;
    mul.i[0] = static_cast<int64_t>(BinaryOp::Mul);
    const OpAttrs div_first = scalar_attrs(BinaryOp::Div, 3.f, true);
    return std::vector<Call>{
        {"Unary gelu_tanh", OpKind::Unary, {t(n, 1)}, {t(n, 2)}, gelu},
        {"UnaryBackward gelu_tanh", OpKind::UnaryBackward, {t(n, 1), Tensor(), t(n, 2)}, {t(n, 3)}, gelu},
        {"Binary same shapes", OpKind::Binary, {t(n, 1), t(n, 2)}, {t(n, 3)}, mul},
        {"Binary broadcast", OpKind::Binary, {t(rows, 1), t(row, 2)}, {t(rows, 3)}, mul},
        {"BinaryBackward same shapes (da, db)",
         OpKind::BinaryBackward,
         {t(n, 1), t(n, 2), t(n, 3)},
         {t(n, 4), t(n, 5)},
         mul},
        {"BinaryBackward broadcast (da, db)",
         OpKind::BinaryBackward,
         {t(rows, 1), t(row, 2), t(rows, 3)},
         {t(rows, 4), t(row, 5)},
         mul},
        {"BinaryScalar", OpKind::BinaryScalar, {t(n, 1)}, {t(n, 2)}, div_first},
        {"BinaryScalarBackward", OpKind::BinaryScalarBackward, {t(n, 1), t(n, 2)}, {t(n, 3)}, div_first},
    };
  };
  auto launches_of = [&](const Call& c) {
    std::vector<TensorView> iv, ov;
    for (const Tensor& x : c.in) iv.push_back(tv(x));
    for (const Tensor& x : c.out) ov.push_back(tv(x));
    OpCall call;
    call.op = c.op;
    call.inputs = iv.data();
    call.n_inputs = static_cast<int>(iv.size());
    call.outputs = ov.data();
    call.n_outputs = static_cast<int>(ov.size());
    call.attrs = c.attrs;
    call.ctx = &ctx;
    call.label = c.name;
    ctx.synchronize();
    const uint64_t before = cudl_emu::counters().kernel_launches;
    op_table(DeviceType::CUDA).run(call);
    ctx.synchronize();
    return cudl_emu::counters().kernel_launches - before;
  };
  const std::vector<Call> f32 = make_calls(DType::f32), bf16 = make_calls(DType::bf16), f16 = make_calls(DType::f16);
  for (size_t k = 0; k < f32.size(); ++k) {
    const uint64_t l32 = launches_of(f32[k]), lb = launches_of(bf16[k]), lh = launches_of(f16[k]);
    EXPECT_GE(l32, 1u) << f32[k].name;
    EXPECT_EQ(lb, l32) << f32[k].name << ": bf16 vs f32";
    EXPECT_EQ(lh, l32) << f32[k].name << ": f16 vs f32";
    std::cout << "[ launches ] " << f32[k].name << ": f32 " << l32 << ", bf16 " << lb << ", f16 " << lh << "\n";
  }
}
#endif

// ---------------------------------------------------------------------------------------------
// Argument errors
// ---------------------------------------------------------------------------------------------

namespace {
// Runs fn, expecting cudl::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no cudl::Error thrown";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "'" << p << "' not in: " << m;
  }
}
}  // namespace

TEST(ElementwiseErrors, NameTheOpAndShapes) {
  std::vector<Device> devices = {Device::cpu()};
  if (cuda_available()) devices.push_back(Device::cuda());
  for (Device d : devices) {
    SCOPED_TRACE(d.str());
    Tensor a = Tensor::zeros(Shape{2, 3}, DType::f32, d);
    Tensor b = Tensor::zeros(Shape{4, 3}, DType::f32, d);
    Tensor c = Tensor::zeros(Shape{2, 3}, DType::f32, d);
    OpAttrs add;
    add.i[0] = static_cast<int64_t>(BinaryOp::Add);
    expect_error(
        [&] {
          run_op(OpKind::Binary, {tv(a), tv(b)}, {tv(c)}, add, nullptr, "net/add");
        },
        {"Binary", "net/add", "(2, 3)", "(4, 3)"});
    Tensor c_bad = Tensor::zeros(Shape{3, 2}, DType::f32, d);
    expect_error([&] { run_op(OpKind::Binary, {tv(a), tv(c)}, {tv(c_bad)}, add); }, {"Binary", "(3, 2)", "(2, 3)"});
    Tensor xi = Tensor::zeros(Shape{5}, DType::i32, d);
    Tensor y = Tensor::zeros(Shape{5}, DType::f32, d);
    expect_error([&] { run_op(OpKind::Unary, {tv(xi)}, {tv(y)}, unary_attrs(UnaryOp::Relu, 0)); },
                 {"Unary", "i32", "(5,)"});
    Tensor y4 = Tensor::zeros(Shape{4}, DType::f32, d);
    expect_error([&] { run_op(OpKind::Unary, {tv(y)}, {tv(y4)}, unary_attrs(UnaryOp::Exp, 0)); },
                 {"Unary", "(4,)", "(5,)"});
    // Sigmoid's gradient needs y.
    expect_error(
        [&] {
          run_op(OpKind::UnaryBackward, {tv(y), TensorView{}, tv(y)}, {tv(y)}, unary_attrs(UnaryOp::Sigmoid, 0));
        },
        {"UnaryBackward", "y"});
    Tensor db_bad = Tensor::zeros(Shape{3, 4}, DType::f32, d);
    expect_error(
        [&] {
          run_op(OpKind::BinaryBackward, {tv(a), tv(c), tv(c)}, {tv(a), tv(db_bad)}, add);
        },
        {"BinaryBackward", "db", "(3, 4)", "(2, 3)"});
    Tensor xs = Tensor::zeros(Shape{5}, DType::f32, d);
    expect_error([&] { run_op(OpKind::BinaryScalar, {tv(xs)}, {tv(y4)}, scalar_attrs(BinaryOp::Mul, 2, false)); },
                 {"BinaryScalar", "(4,)", "(5,)"});
    expect_error([&] { run_op(OpKind::Unary, {tv(y)}, {tv(y)}, unary_attrs(UnaryOp::Count, 0)); },
                 {"Unary", "UnaryOp"});
  }
}

// One storage type per call (ops/precision.hpp): a bf16 input with an f32 output, or bf16 with f16,
// is refused on both backends with both dtypes named.
TEST(ElementwiseErrors, MixedStorageTypesNameBoth) {
  for (Device d : test_devices()) {
    SCOPED_TRACE(d.str());
    Tensor xb = Tensor::zeros(Shape{5}, DType::bf16, d), xh = Tensor::zeros(Shape{5}, DType::f16, d);
    Tensor yf = Tensor::zeros(Shape{5}, DType::f32, d), yb = Tensor::zeros(Shape{5}, DType::bf16, d);
    expect_error([&] { run_op(OpKind::Unary, {tv(xb)}, {tv(yf)}, unary_attrs(UnaryOp::Relu, 0), nullptr, "net/act"); },
                 {"Unary", "net/act", "bf16", "f32"});
    expect_error(
        [&] {
          run_op(OpKind::UnaryBackward, {tv(xb), TensorView{}, tv(yf)}, {tv(yb)},
                 unary_attrs(UnaryOp::LeakyRelu, 0.1f));
        },
        {"UnaryBackward", "bf16", "f32"});
    OpAttrs add;
    add.i[0] = static_cast<int64_t>(BinaryOp::Add);
    expect_error([&] { run_op(OpKind::Binary, {tv(xb), tv(xh)}, {tv(yb)}, add); }, {"Binary", "bf16", "f16"});
    expect_error(
        [&] {
          run_op(OpKind::BinaryBackward, {tv(xb), tv(xb), tv(xb)}, {tv(yf), TensorView{}}, add);
        },
        {"BinaryBackward", "bf16", "f32"});
    expect_error([&] { run_op(OpKind::BinaryScalar, {tv(xh)}, {tv(yb)}, scalar_attrs(BinaryOp::Mul, 2, false)); },
                 {"BinaryScalar", "f16", "bf16"});
    expect_error(
        [&] {
          run_op(OpKind::BinaryScalarBackward, {tv(yf), tv(xb)}, {tv(yb)}, scalar_attrs(BinaryOp::Mul, 2, false));
        },
        {"BinaryScalarBackward", "f32", "bf16"});
  }
}

TEST(ElementwiseErrors, WrongDeviceNamesTheOp) {
  CUDL_REQUIRE_CUDA();
  Tensor x = Tensor::zeros(Shape{5});
  Tensor y = Tensor::zeros(Shape{5}, DType::f32, Device::cuda());
  expect_error([&] { run_op(OpKind::Unary, {tv(x)}, {tv(y)}, unary_attrs(UnaryOp::Relu, 0)); }, {"Unary", "(5,)"});
}
