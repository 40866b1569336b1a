// tests/test_op_matmul.cpp — matmul op family: CPU reference vs naive loops and finite differences
// (Linear with every epilogue -> LinearBackward, Matmul gradients through transposed Matmuls), CUDA
// (cuBLASLt) vs CPU for every op, plan caching, NaN propagation, empty shapes and argument errors.
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/half.hpp"
#include "cuda/matmul.hpp"
#include "ops/matmul.hpp"
#include "testing.hpp"
#if defined(CUDL_EMULATED)
#include <cublasLt.h>

#include "emu/emu.hpp"
#endif

using namespace cudl;
using cudl::testing::error_message;
using namespace cudl::testing;

namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

Tensor on(const Tensor& t, Device d) { return t.defined() ? t.to(d) : Tensor(); }

Shape matmul_out(const Shape& a, const Shape& b, bool ta, bool tb) {
  std::vector<int64_t> d(a.dims().begin(), a.dims().end() - 2);
  d.push_back(ta ? a[-1] : a[-2]);
  d.push_back(tb ? b[-2] : b[-1]);
  return Shape(d);
}

Tensor run_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  Tensor c = Tensor::full(matmul_out(a.shape(), b.shape(), ta, tb), kNaN, a.dtype(), a.device());
  OpAttrs at;
  at.i[0] = ta;
  at.i[1] = tb;
  run_op(OpKind::Matmul, {tv(a), tv(b)}, {tv(c)}, at, nullptr, "mm");
  return c;
}

struct LinearOut {
  Tensor y, pre;
};

LinearOut run_linear(const Tensor& x, const Tensor& w, const Tensor& bias, Epilogue e, bool want_pre) {
  std::vector<int64_t> yd(x.shape().dims().begin(), x.shape().dims().end() - 1);
  yd.push_back(w.shape()[0]);
  LinearOut o;
  o.y = Tensor::full(Shape(yd), kNaN, x.dtype(), x.device());
  if (want_pre) o.pre = Tensor::full(Shape(yd), kNaN, x.dtype(), x.device());
  OpAttrs at;
  at.i[0] = static_cast<int64_t>(e);
  run_op(OpKind::Linear, {tv(x), tv(w), tv(bias)}, {tv(o.y), tv(o.pre)}, at, nullptr, "dense");
  return o;
}

struct Grads {
  Tensor dx, dw, db;
};

/// want: which of dx, dw, db to ask for. act: y (Relu) or pre (Gelu) in their slots.
Grads run_linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& y, const Tensor& pre,
                          Epilogue e, bool want_dx = true, bool want_dw = true, bool want_db = true) {
  Grads g;
  const Device d = dy.device();
  if (want_dx) g.dx = Tensor::full(x.shape(), kNaN, dy.dtype(), d);
  if (want_dw) g.dw = Tensor::full(w.shape(), kNaN, dy.dtype(), d);
  if (want_db) g.db = Tensor::full(Shape{w.shape()[0]}, kNaN, dy.dtype(), d);
  OpAttrs at;
  at.i[0] = static_cast<int64_t>(e);
  run_op(OpKind::LinearBackward, {tv(x), tv(w), tv(dy), tv(y), tv(pre)}, {tv(g.dx), tv(g.dw), tv(g.db)}, at, nullptr,
         "dense");
  return g;
}

const char* epi_name(Epilogue e) { return e == Epilogue::None ? "none" : e == Epilogue::Relu ? "relu" : "gelu"; }

/// y = relu(x·wᵀ + b) and its relu bit-mask (rows of relu_mask_row_bytes(out) bytes).
LinearOut run_linear_relu_mask(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor* mask) {
  LinearOut o;
  o.y = Tensor::full(Shape{x.shape()[0], w.shape()[0]}, kNaN, x.dtype(), x.device());
  *mask = Tensor::full(Shape{x.shape()[0], relu_mask_row_bytes(w.shape()[0])}, 0xA5, DType::u8, x.device());
  OpAttrs at;
  at.i[0] = static_cast<int64_t>(Epilogue::Relu);
  run_op(OpKind::Linear, {tv(x), tv(w), tv(bias)}, {tv(o.y), tv(*mask)}, at, nullptr, "dense");
  return o;
}

bool mask_bit(const Tensor& mask, int64_t r, int64_t j) {
  const uint8_t* m = static_cast<const uint8_t*>(mask.data());
  return (m[r * mask.shape()[1] + j / 8] >> (j % 8)) & 1u;
}

/// LinearBackward of the layer above with dx taken through the relu below (i[1]): dx and db below.
Grads run_backward_through_relu(const Tensor& x, const Tensor& w, const Tensor& dy, const Tensor& mask,
                                bool want_db_below) {
  Grads g;
  const Device d = dy.device();
  g.dx = Tensor::full(x.shape(), kNaN, dy.dtype(), d);
  g.dw = Tensor::full(w.shape(), kNaN, dy.dtype(), d);
  if (want_db_below) g.db = Tensor::full(Shape{x.shape()[1]}, kNaN, dy.dtype(), d);
  OpAttrs at;
  at.i[1] = 1;
  run_op(OpKind::LinearBackward, {tv(x), tv(w), tv(dy), {}, {}, tv(mask)}, {tv(g.dx), tv(g.dw), {}, tv(g.db)}, at,
         nullptr, "dense");
  return g;
}

// ---------------------------------------------------------------------------------------------
// CPU reference

TEST(MatmulCpu, MatchesNaiveLoops) {
  const int64_t B = 2, M = 3, K = 5, N = 4;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (bool bcast : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "ta " << ta << " tb " << tb << " broadcast " << bcast);
        Tensor a = random_tensor(ta ? Shape{B, K, M} : Shape{B, M, K}, 1);
        Shape bs = tb ? Shape{N, K} : Shape{K, N};
        if (!bcast) bs = tb ? Shape{B, N, K} : Shape{B, K, N};
        Tensor b = random_tensor(bs, 2);
        Tensor c = run_matmul(a, b, ta, tb);
        ASSERT_EQ(c.shape(), (Shape{B, M, N}));
        const auto av = as_doubles(a), bv = as_doubles(b);
        std::vector<float> want(B * M * N);
        for (int64_t bi = 0; bi < B; ++bi)
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              double s = 0;
              for (int64_t k = 0; k < K; ++k) {
                const double x = ta ? av[bi * K * M + k * M + i] : av[bi * M * K + i * K + k];
                const int64_t ob = bcast ? 0 : bi * K * N;
                const double y = tb ? bv[ob + j * K + k] : bv[ob + k * N + j];
                s += x * y;
              }
              want[bi * M * N + i * N + j] = static_cast<float>(s);
            }
        EXPECT_TRUE(all_close(c, Tensor::from_vector(want, c.shape()), 1e-5, 1e-5));
      }
}

/// Inputs whose pre-activations stay away from ReLU's kink, so central differences are valid.
struct LinearInputs {
  Tensor x, w, b;
};

LinearInputs linear_inputs(int64_t n, int64_t in, int64_t out, bool with_bias, uint64_t seed) {
  for (uint64_t s = seed;; s += 100) {
    LinearInputs li{random_tensor({n, in}, s), random_tensor({out, in}, s + 1),
                    with_bias ? random_tensor({out}, s + 2) : Tensor()};
    LinearOut o = run_linear(li.x, li.w, li.b, Epilogue::Gelu, true);
    bool ok = true;
    for (double v : as_doubles(o.pre)) ok = ok && std::fabs(v) > 0.02;
    if (ok) return li;
  }
}

TEST(MatmulCpu, LinearGradientsMatchFiniteDifferences) {
  const int64_t n = 5, in = 7, out = 6;
  for (Epilogue e : {Epilogue::None, Epilogue::Relu, Epilogue::Gelu})
    for (bool with_bias : {true, false}) {
      SCOPED_TRACE(::testing::Message() << epi_name(e) << (with_bias ? " with bias" : " without bias"));
      LinearInputs li = linear_inputs(n, in, out, with_bias, 10);
      const auto wts = as_doubles(random_tensor({n, out}, 99));
      LinearOut o = run_linear(li.x, li.w, li.b, e, e == Epilogue::Gelu);
      Tensor dy = Tensor::from_vector(std::vector<float>(wts.begin(), wts.end()), Shape{n, out});
      Grads g = run_linear_backward(li.x, li.w, dy, e == Epilogue::Relu ? o.y : Tensor(),
                                    e == Epilogue::Gelu ? o.pre : Tensor(), e, true, true, with_bias);
      auto loss_x = [&](const Tensor& x) { return weighted_sum(run_linear(x, li.w, li.b, e, false).y, wts); };
      auto loss_w = [&](const Tensor& w) { return weighted_sum(run_linear(li.x, w, li.b, e, false).y, wts); };
      auto loss_b = [&](const Tensor& b) { return weighted_sum(run_linear(li.x, li.w, b, e, false).y, wts); };
      EXPECT_TRUE(gradient_close(g.dx, numerical_gradient(loss_x, li.x.clone())));
      EXPECT_TRUE(gradient_close(g.dw, numerical_gradient(loss_w, li.w.clone())));
      if (with_bias) EXPECT_TRUE(gradient_close(g.db, numerical_gradient(loss_b, li.b.clone())));
    }
}

TEST(MatmulCpu, LinearReluBackwardAcceptsPreInsteadOfY) {
  LinearInputs li = linear_inputs(4, 3, 5, true, 20);
  LinearOut o = run_linear(li.x, li.w, li.b, Epilogue::Gelu, true);  // pre = x·wᵀ + b
  Tensor dy = random_tensor({4, 5}, 21);
  Tensor y = run_linear(li.x, li.w, li.b, Epilogue::Relu, false).y;
  Grads from_y = run_linear_backward(li.x, li.w, dy, y, Tensor(), Epilogue::Relu);
  Grads from_pre = run_linear_backward(li.x, li.w, dy, Tensor(), o.pre, Epilogue::Relu);
  EXPECT_TRUE(all_close(from_pre.dx, from_y.dx, 0, 0));
  EXPECT_TRUE(all_close(from_pre.dw, from_y.dw, 0, 0));
  EXPECT_TRUE(all_close(from_pre.db, from_y.db, 0, 0));
}

/// Matmul's gradient rule, expressed with Matmuls: for C = op(a)·op(b) and upstream dC,
/// da = ta ? op(b)·dCᵀ : dC·op(b)ᵀ and db = tb ? dCᵀ·op(a) : op(a)ᵀ·dC.
TEST(MatmulCpu, GradientsThroughTransposedMatmulsMatchFiniteDifferences) {
  const int64_t B = 2, M = 3, K = 4, N = 5;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      SCOPED_TRACE(::testing::Message() << "ta " << ta << " tb " << tb);
      Tensor a = random_tensor(ta ? Shape{B, K, M} : Shape{B, M, K}, 30);
      Tensor b = random_tensor(tb ? Shape{B, N, K} : Shape{B, K, N}, 31);
      const auto wts = as_doubles(random_tensor({B, M, N}, 32));
      Tensor dc = Tensor::from_vector(std::vector<float>(wts.begin(), wts.end()), Shape{B, M, N});
      Tensor da = ta ? run_matmul(b, dc, tb, true) : run_matmul(dc, b, false, !tb);
      Tensor db = tb ? run_matmul(dc, a, true, ta) : run_matmul(a, dc, !ta, false);
      ASSERT_EQ(da.shape(), a.shape());
      ASSERT_EQ(db.shape(), b.shape());
      auto loss_a = [&](const Tensor& x) { return weighted_sum(run_matmul(x, b, ta, tb), wts); };
      auto loss_b = [&](const Tensor& x) { return weighted_sum(run_matmul(a, x, ta, tb), wts); };
      EXPECT_TRUE(gradient_close(da, numerical_gradient(loss_a, a.clone())));
      EXPECT_TRUE(gradient_close(db, numerical_gradient(loss_b, b.clone())));
    }
}

TEST(MatmulCpu, LinearFlattensLeadingDimensions) {
  Tensor x = random_tensor({2, 3, 4}, 40), w = random_tensor({5, 4}, 41), b = random_tensor({5}, 42);
  Tensor y = run_linear(x, w, b, Epilogue::None, false).y;
  ASSERT_EQ(y.shape(), (Shape{2, 3, 5}));
  Tensor y2 = run_linear(x.reshape({6, 4}), w, b, Epilogue::None, false).y;
  EXPECT_TRUE(all_close(y.reshape({6, 5}), y2, 0, 0));
}

// ---------------------------------------------------------------------------------------------
// Argument errors (every device)

TEST(MatmulCpu, ReluMaskMarksPositivePreActivations) {
  // 130 outputs: two 128-bit row blocks, the second mostly padding (written 0 on the CPU).
  Tensor x = random_tensor({5, 7}, 950, -2, 2), w = random_tensor({130, 7}, 951), b = random_tensor({130}, 952);
  Tensor mask;
  const LinearOut o = run_linear_relu_mask(x, w, b, &mask);
  const LinearOut pre = run_linear(x, w, b, Epilogue::None, false);
  ASSERT_EQ(mask.shape(), (Shape{5, 32}));
  for (int64_t r = 0; r < 5; ++r) {
    for (int64_t j = 0; j < 130; ++j) EXPECT_EQ(mask_bit(mask, r, j), pre.y.item(r * 130 + j) > 0) << r << "," << j;
    for (int64_t j = 130; j < 256; ++j) EXPECT_FALSE(mask_bit(mask, r, j)) << "padding " << r << "," << j;
  }
  EXPECT_TRUE(all_close(o.y, run_linear(x, w, b, Epilogue::Relu, false).y, 0, 0)) << "y as without the mask";
}

TEST(MatmulCpu, BackwardThroughTheReluBelowEqualsTheUnfusedPair) {
  // Layer above: (rows, in) -> out. dx through the relu below == relu'(y_below) ⊙ (dy·w), and
  // db below == its bias gradient, exactly as the separate LinearBackward of the layer below.
  const int64_t rows = 6, in = 9, out = 4;
  Tensor x0 = random_tensor({rows, 3}, 960, -2, 2), w0 = random_tensor({in, 3}, 961), b0 = random_tensor({in}, 962);
  Tensor mask;
  const Tensor h = run_linear_relu_mask(x0, w0, b0, &mask).y;  // the layer below's output
  Tensor w = random_tensor({out, in}, 963), dy = random_tensor({rows, out}, 964);
  const Grads fused = run_backward_through_relu(h, w, dy, mask, true);
  const Grads plain = run_linear_backward(h, w, dy, Tensor(), Tensor(), Epilogue::None, true, true, false);
  const Grads below = run_linear_backward(x0, w0, plain.dx, h, Tensor(), Epilogue::Relu, false, false, true);
  Tensor want_dx = plain.dx.clone();
  for (int64_t i = 0; i < rows * in; ++i)
    if (!(h.item(i) > 0)) want_dx.data_as<float>()[i] = 0.f;
  EXPECT_TRUE(all_close(fused.dx, want_dx, 0, 0));
  EXPECT_TRUE(all_close(fused.dw, plain.dw, 0, 0));
  EXPECT_TRUE(all_close(fused.db, below.db, 0, 0));
}

std::vector<Device> devices() {
  std::vector<Device> d{Device::cpu()};
  if (cuda_available()) d.push_back(Device::cuda());
  return d;
}

TEST(MatmulErrors, NameOpLabelAndShapes) {
  for (Device d : devices()) {
    SCOPED_TRACE(d.str());
    Tensor x = Tensor::zeros({32, 784}, DType::f32, d), w = Tensor::zeros({128, 780}, DType::f32, d);
    Tensor y = Tensor::zeros({32, 128}, DType::f32, d);
    std::string msg = error_message([&] { run_op(OpKind::Linear, {tv(x), tv(w)}, {tv(y)}, {}, nullptr, "dense1"); });
    EXPECT_NE(msg.find("Linear (dense1): x (32, 784) and w (128, 780): inner dimensions differ"), std::string::npos)
        << msg;

    Tensor a = Tensor::zeros({2, 3, 4}, DType::f32, d), b = Tensor::zeros({3, 4, 5}, DType::f32, d);
    Tensor c = Tensor::zeros({2, 3, 5}, DType::f32, d);
    msg = error_message([&] { run_op(OpKind::Matmul, {tv(a), tv(b)}, {tv(c)}, {}, nullptr, "mm"); });
    EXPECT_NE(msg.find("Matmul (mm): a (2, 3, 4) and b (3, 4, 5): batch dimensions differ"), std::string::npos) << msg;

    Tensor b2 = Tensor::zeros({5, 5}, DType::f32, d);
    msg = error_message([&] { run_op(OpKind::Matmul, {tv(a), tv(b2)}, {tv(c)}, {}, nullptr, "mm"); });
    EXPECT_NE(msg.find("Matmul (mm): a (2, 3, 4) and b (5, 5): inner dimensions differ (4 vs 5)"), std::string::npos)
        << msg;

    Tensor b3 = Tensor::zeros({4, 5}, DType::f32, d), c_bad = Tensor::zeros({2, 3, 6}, DType::f32, d);
    msg = error_message([&] { run_op(OpKind::Matmul, {tv(a), tv(b3)}, {tv(c_bad)}, {}, nullptr, "mm"); });
    EXPECT_NE(msg.find("c has shape (2, 3, 6), expected (2, 3, 5)"), std::string::npos) << msg;

    Tensor ai = Tensor::zeros({3, 4}, DType::i32, d);
    msg = error_message([&] { run_op(OpKind::Matmul, {tv(ai), tv(b3)}, {tv(c)}, {}, nullptr, "mm"); });
    EXPECT_NE(msg.find("a (3, 4) has dtype i32, expected f32"), std::string::npos) << msg;

    Tensor xs = Tensor::zeros({4, 3}, DType::f32, d), ws = Tensor::zeros({5, 3}, DType::f32, d);
    Tensor ys = Tensor::zeros({4, 5}, DType::f32, d), bad_bias = Tensor::zeros({4}, DType::f32, d);
    msg = error_message([&] { run_op(OpKind::Linear, {tv(xs), tv(ws), tv(bad_bias)}, {tv(ys)}, {}, nullptr, "dense2"); });
    EXPECT_NE(msg.find("Linear (dense2): bias (4,) and w (5, 3)"), std::string::npos) << msg;

    OpAttrs relu;
    relu.i[0] = static_cast<int64_t>(Epilogue::Relu);
    msg = error_message([&] { run_op(OpKind::Linear, {tv(xs), tv(ws)}, {tv(ys), tv(ys)}, relu, nullptr, "dense2"); });
    EXPECT_NE(msg.find("Linear (dense2): relu mask (4, 5) has dtype f32, expected u8"), std::string::npos) << msg;
    Tensor short_mask = Tensor::zeros({4, 8}, DType::u8, d);
    msg = error_message(
        [&] { run_op(OpKind::Linear, {tv(xs), tv(ws)}, {tv(ys), tv(short_mask)}, relu, nullptr, "dense2"); });
    EXPECT_NE(msg.find("relu mask has shape (4, 8), expected (4, 16)"), std::string::npos) << msg;
    msg = error_message([&] { run_op(OpKind::Linear, {tv(xs), tv(ws)}, {tv(ys), tv(ys)}, {}, nullptr, "dense2"); });
    EXPECT_NE(msg.find("only produced with the Gelu (pre) or Relu (mask) epilogue"), std::string::npos) << msg;
    OpAttrs through;
    through.i[1] = 1;
    Tensor dys = Tensor::zeros({4, 5}, DType::f32, d), dx4 = Tensor::zeros({4, 3}, DType::f32, d);
    msg = error_message([&] {
      run_op(OpKind::LinearBackward, {tv(xs), tv(ws), tv(dys)}, {tv(dx4)}, through, nullptr, "dense2");
    });
    EXPECT_NE(msg.find("needs input 5 (its relu mask)"), std::string::npos) << msg;
    Tensor mask_in = Tensor::zeros({4, 16}, DType::u8, d), bad_db = Tensor::zeros({5}, DType::f32, d);
    msg = error_message([&] {
      run_op(OpKind::LinearBackward, {tv(xs), tv(ws), tv(dys), {}, {}, tv(mask_in)}, {tv(dx4), {}, {}, tv(bad_db)},
             through, nullptr, "dense2");
    });
    EXPECT_NE(msg.find("db below has shape (5,), expected (3,)"), std::string::npos) << msg;
    msg = error_message([&] {
      run_op(OpKind::LinearBackward, {tv(xs), tv(ws), tv(dys), {}, {}, tv(mask_in)}, {tv(dx4)}, {}, nullptr, "dense2");
    });
    EXPECT_NE(msg.find("need i[1]"), std::string::npos) << msg;

    OpAttrs bad_epi;
    bad_epi.i[0] = 7;
    msg = error_message([&] { run_op(OpKind::Linear, {tv(xs), tv(ws)}, {tv(ys)}, bad_epi, nullptr, "dense2"); });
    EXPECT_NE(msg.find("epilogue attribute i[0] = 7"), std::string::npos) << msg;

    OpAttrs gelu;
    gelu.i[0] = static_cast<int64_t>(Epilogue::Gelu);
    Tensor dxs = Tensor::zeros({4, 3}, DType::f32, d);
    msg = error_message([&] {
      run_op(OpKind::LinearBackward, {tv(xs), tv(ws), tv(ys)}, {tv(dxs)}, gelu, nullptr, "dense2");
    });
    EXPECT_NE(msg.find("LinearBackward (dense2): the Gelu epilogue needs input 4 (pre)"), std::string::npos) << msg;

    Tensor dw_bad = Tensor::zeros({3, 5}, DType::f32, d);
    msg = error_message([&] {
      run_op(OpKind::LinearBackward, {tv(xs), tv(ws), tv(ys)}, {TensorView{}, tv(dw_bad)}, {}, nullptr, "dense2");
    });
    EXPECT_NE(msg.find("dw has shape (3, 5), expected (5, 3)"), std::string::npos) << msg;
  }
}

// ---------------------------------------------------------------------------------------------
// CUDA (cuBLASLt) vs CPU

constexpr double kAtol = 1e-4, kRtol = 1e-4;

TEST(MatmulCuda, MatchesCpuForAllTransposesAndOddSizes) {
  CUDL_REQUIRE_CUDA();
  const std::vector<std::array<int64_t, 3>> sizes = {{1, 1, 1},    {1, 3, 1},     {3, 1, 17},  {17, 33, 3},
                                                     {33, 17, 33}, {64, 33, 130}, {5, 64, 130}};
  uint64_t seed = 100;
  for (auto [M, K, N] : sizes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        SCOPED_TRACE(::testing::Message() << "M " << M << " K " << K << " N " << N << " ta " << ta << " tb " << tb);
        Tensor a = random_tensor(ta ? Shape{K, M} : Shape{M, K}, seed++);
        Tensor b = random_tensor(tb ? Shape{N, K} : Shape{K, N}, seed++);
        Tensor want = run_matmul(a, b, ta, tb);
        Tensor got = run_matmul(on(a, Device::cuda()), on(b, Device::cuda()), ta, tb);
        EXPECT_TRUE(all_close(got.to(Device::cpu()), want, kAtol, kRtol));
      }
}

TEST(MatmulCuda, BatchedAndBroadcastB) {
  CUDL_REQUIRE_CUDA();
  const int64_t M = 7, K = 9, N = 5;
  uint64_t seed = 200;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      for (bool bcast : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "ta " << ta << " tb " << tb << " broadcast " << bcast);
        Tensor a = random_tensor(ta ? Shape{2, 3, K, M} : Shape{2, 3, M, K}, seed++);
        Shape bs = tb ? Shape{N, K} : Shape{K, N};
        if (!bcast) bs = tb ? Shape{2, 3, N, K} : Shape{2, 3, K, N};
        Tensor b = random_tensor(bs, seed++);
        Tensor want = run_matmul(a, b, ta, tb);
        Tensor got = run_matmul(on(a, Device::cuda()), on(b, Device::cuda()), ta, tb);
        EXPECT_TRUE(all_close(got.to(Device::cpu()), want, kAtol, kRtol));
      }
}

TEST(MatmulCuda, EmptyInnerDimensionGivesZeros) {
  CUDL_REQUIRE_CUDA();
  for (Device d : devices()) {
    Tensor a = Tensor::zeros({3, 0}, DType::f32, d), b = Tensor::zeros({0, 4}, DType::f32, d);
    Tensor c = run_matmul(a, b, false, false);
    EXPECT_TRUE(all_close(c.to(Device::cpu()), Tensor::zeros({3, 4}), 0, 0)) << d.str();
  }
}

TEST(MatmulCuda, NanPropagates) {
  CUDL_REQUIRE_CUDA();
  Tensor a = random_tensor({3, 4}, 300), b = random_tensor({4, 5}, 301);
  a.data_as<float>()[5] = kNaN;  // row 1
  b.data_as<float>()[2] = std::numeric_limits<float>::infinity();
  Tensor want = run_matmul(a, b, false, false);
  Tensor got = run_matmul(on(a, Device::cuda()), on(b, Device::cuda()), false, false);
  EXPECT_TRUE(std::isnan(want.item(5)));
  EXPECT_TRUE(all_close(got.to(Device::cpu()), want, kAtol, kRtol));
}

struct LinearCase {
  int64_t n, in, out;
};

const std::vector<LinearCase>& linear_cases() {
  // out: 1, 8 (GELU aux fused), 10 (aux ld not a multiple of 8: unfused), 16, 33; rows 1 .. 64
  static const std::vector<LinearCase> cases = {{1, 1, 1},   {3, 5, 8},    {17, 33, 10},
                                                {33, 3, 16}, {64, 17, 33}, {2, 130, 8}};
  return cases;
}

TEST(MatmulCuda, LinearForwardMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  uint64_t seed = 400;
  for (const LinearCase& lc : linear_cases())
    for (Epilogue e : {Epilogue::None, Epilogue::Relu, Epilogue::Gelu})
      for (bool with_bias : {true, false})
        for (bool want_pre : {false, true}) {
          if (want_pre && e != Epilogue::Gelu) continue;
          SCOPED_TRACE(::testing::Message() << "n " << lc.n << " in " << lc.in << " out " << lc.out << " "
                                            << epi_name(e) << (with_bias ? " bias" : "") << (want_pre ? " pre" : ""));
          Tensor x = random_tensor({lc.n, lc.in}, seed++, -2, 2), w = random_tensor({lc.out, lc.in}, seed++);
          Tensor b = with_bias ? random_tensor({lc.out}, seed++) : Tensor();
          LinearOut want = run_linear(x, w, b, e, want_pre);
          LinearOut got = run_linear(on(x, Device::cuda()), on(w, Device::cuda()), on(b, Device::cuda()), e, want_pre);
          EXPECT_TRUE(all_close(got.y.to(Device::cpu()), want.y, kAtol, kRtol));
          if (want_pre) EXPECT_TRUE(all_close(got.pre.to(Device::cpu()), want.pre, kAtol, kRtol));
        }
}

TEST(MatmulCuda, LinearBackwardMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  uint64_t seed = 500;
  const Device g = Device::cuda();
  for (const LinearCase& lc : linear_cases())
    for (Epilogue e : {Epilogue::None, Epilogue::Relu, Epilogue::Gelu}) {
      SCOPED_TRACE(::testing::Message() << "n " << lc.n << " in " << lc.in << " out " << lc.out << " " << epi_name(e));
      Tensor x = random_tensor({lc.n, lc.in}, seed++, -2, 2), w = random_tensor({lc.out, lc.in}, seed++);
      Tensor b = random_tensor({lc.out}, seed++), dy = random_tensor({lc.n, lc.out}, seed++);
      LinearOut fw = run_linear(x, w, b, e, e == Epilogue::Gelu);
      const Tensor act_y = e == Epilogue::Relu ? fw.y : Tensor();
      const Tensor act_pre = e == Epilogue::Gelu ? fw.pre : Tensor();
      // Every output, then the subsets that take other paths (db without dw: the bias kernel).
      const bool wants[4][3] = {{true, true, true}, {false, false, true}, {true, false, false}, {false, true, false}};
      for (const auto& want : wants) {
        SCOPED_TRACE(::testing::Message() << "dx " << want[0] << " dw " << want[1] << " db " << want[2]);
        Grads ref = run_linear_backward(x, w, dy, act_y, act_pre, e, want[0], want[1], want[2]);
        Grads got = run_linear_backward(on(x, g), on(w, g), on(dy, g), on(act_y, g), on(act_pre, g), e, want[0],
                                        want[1], want[2]);
        if (want[0]) EXPECT_TRUE(all_close(got.dx.to(Device::cpu()), ref.dx, kAtol, kRtol));
        if (want[1]) EXPECT_TRUE(all_close(got.dw.to(Device::cpu()), ref.dw, kAtol, kRtol));
        if (want[2]) EXPECT_TRUE(all_close(got.db.to(Device::cpu()), ref.db, kAtol, kRtol));
      }
    }
}

TEST(MatmulCuda, LinearNanFollowsTheEpilogue) {
  CUDL_REQUIRE_CUDA();
  Tensor x = random_tensor({3, 4}, 600), w = random_tensor({8, 4}, 601), b = random_tensor({8}, 602);
  x.data_as<float>()[4] = kNaN;  // row 1 of y is NaN before the activation
  for (Epilogue e : {Epilogue::None, Epilogue::Relu, Epilogue::Gelu}) {
    SCOPED_TRACE(epi_name(e));
    LinearOut want = run_linear(x, w, b, e, false);
    // ReLU epilogue: max(NaN, 0) = 0 as cuBLASLt computes it; None and GELU keep the NaN.
    EXPECT_EQ(std::isnan(want.y.item(8)), e != Epilogue::Relu);
    LinearOut got = run_linear(on(x, Device::cuda()), on(w, Device::cuda()), on(b, Device::cuda()), e, false);
    EXPECT_TRUE(all_close(got.y.to(Device::cpu()), want.y, kAtol, kRtol));
  }
}

TEST(MatmulCuda, EmptyBatchGivesZeroWeightGradients) {
  CUDL_REQUIRE_CUDA();
  for (Device d : devices()) {
    SCOPED_TRACE(d.str());
    Tensor x = Tensor::zeros({0, 3}, DType::f32, d), w = random_tensor({4, 3}, 700, -1, 1, d);
    Tensor dy = Tensor::zeros({0, 4}, DType::f32, d);
    LinearOut o = run_linear(x, w, Tensor(), Epilogue::None, false);
    EXPECT_EQ(o.y.shape(), (Shape{0, 4}));
    Grads gr = run_linear_backward(x, w, dy, Tensor(), Tensor(), Epilogue::None);
    EXPECT_TRUE(all_close(gr.dw.to(Device::cpu()), Tensor::zeros({4, 3}), 0, 0));
    EXPECT_TRUE(all_close(gr.db.to(Device::cpu()), Tensor::zeros({4}), 0, 0));
  }
}

/// Compares the CUDA relu mask with the CPU's on the bits that count (pre-activations clear of 0,
/// where the two GEMMs' rounding cannot flip the sign).
void expect_masks_match(const Tensor& got, const Tensor& want, const Tensor& pre, int64_t rows, int64_t cols) {
  int mismatches = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j)
      if (std::fabs(pre.item(r * cols + j)) > 1e-4 && mask_bit(got, r, j) != mask_bit(want, r, j)) ++mismatches;
  EXPECT_EQ(mismatches, 0);
}

TEST(MatmulCuda, ReluMaskAndBackwardThroughItMatchCpu) {
  // RELU_AUX(_BIAS) forward and DRELU(_BGRAD) backward, then the same with cuBLASLt refusing those
  // epilogues (the plain GEMM + mask kernels fallback). Widths: 128 (no padding), 130, 300, 1.
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  uint64_t seed = 970;
  for (bool refused : {false, true}) {
#if defined(CUDL_EMULATED)
    for (uint32_t e : {CUBLASLT_EPILOGUE_RELU_AUX, CUBLASLT_EPILOGUE_RELU_AUX_BIAS, CUBLASLT_EPILOGUE_DRELU,
                       CUBLASLT_EPILOGUE_DRELU_BGRAD})
      cudl_emu::set_lt_epilogue_refused(e, refused);
#else
    if (refused) break;
#endif
    for (int64_t width : {int64_t{128}, int64_t{130}, int64_t{300}, int64_t{1}})
      for (bool with_bias : {true, false}) {
        SCOPED_TRACE(::testing::Message() << "width " << width << (with_bias ? " bias" : "") << (refused ? " unfused" : ""));
        const int64_t rows = 19 + (refused ? 2 : 0) + (with_bias ? 1 : 0), k = 11, out = 7;  // fresh plans
        Tensor x0 = random_tensor({rows, k}, seed++, -2, 2), w0 = random_tensor({width, k}, seed++);
        Tensor b0 = with_bias ? random_tensor({width}, seed++) : Tensor();
        Tensor mask_c, mask_g;
        const LinearOut yc = run_linear_relu_mask(x0, w0, b0, &mask_c);
        const LinearOut yg = run_linear_relu_mask(on(x0, g), on(w0, g), on(b0, g), &mask_g);
        EXPECT_TRUE(all_close(yg.y.to(Device::cpu()), yc.y, kAtol, kRtol));
        expect_masks_match(mask_g.to(Device::cpu()), mask_c, run_linear(x0, w0, b0, Epilogue::None, false).y, rows,
                           width);
        // Backward of a layer above (width -> out) through this relu, from the same (CPU) mask.
        Tensor w = random_tensor({out, width}, seed++), dy = random_tensor({rows, out}, seed++);
        for (bool want_db : {true, false}) {
          const Grads ref = run_backward_through_relu(yc.y, w, dy, mask_c, want_db);
          const Grads got = run_backward_through_relu(on(yc.y, g), on(w, g), on(dy, g), on(mask_c, g), want_db);
          EXPECT_TRUE(all_close(got.dx.to(Device::cpu()), ref.dx, kAtol, kRtol)) << "dx";
          EXPECT_TRUE(all_close(got.dw.to(Device::cpu()), ref.dw, kAtol, kRtol)) << "dw";
          if (want_db) EXPECT_TRUE(all_close(got.db.to(Device::cpu()), ref.db, kAtol, kRtol)) << "db below";
        }
      }
  }
#if defined(CUDL_EMULATED)
  for (uint32_t e : {CUBLASLT_EPILOGUE_RELU_AUX, CUBLASLT_EPILOGUE_RELU_AUX_BIAS, CUBLASLT_EPILOGUE_DRELU,
                     CUBLASLT_EPILOGUE_DRELU_BGRAD})
    cudl_emu::set_lt_epilogue_refused(e, false);
#endif
}

#if defined(CUDL_EMULATED)
TEST(MatmulCuda, AnotherLibraryMaskBitOrderIsNeverMixedWithCudls) {
  // A cuBLASLt whose relu mask puts bits MSB first, with only one of the two mask epilogues
  // available: a mask written by RELU_AUX and read by cudl's kernel (or written by the kernel and
  // read by DRELU) would zero the wrong gradients. The per-device layout check keeps both on
  // cudl's kernels instead, and the results match the CPU.
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  const std::vector<uint32_t> forward{CUBLASLT_EPILOGUE_RELU_AUX, CUBLASLT_EPILOGUE_RELU_AUX_BIAS};
  const std::vector<uint32_t> backward{CUBLASLT_EPILOGUE_DRELU, CUBLASLT_EPILOGUE_DRELU_BGRAD};
  cudl_emu::set_lt_relu_mask_msb_first(true);
  uint64_t seed = 1200;
  for (const auto* refused : {&backward, &forward}) {
    SCOPED_TRACE(refused == &backward ? "DRELU refused" : "RELU_AUX refused");
    for (uint32_t e : *refused) cudl_emu::set_lt_epilogue_refused(e, true);
    cuda_matmul_forget_mask_layout();
    const int64_t rows = 13, k = 9, width = 130, out = 5;
    Tensor x0 = random_tensor({rows, k}, seed++, -2, 2), w0 = random_tensor({width, k}, seed++),
           b0 = random_tensor({width}, seed++);
    Tensor mask_c, mask_g;
    const LinearOut yc = run_linear_relu_mask(x0, w0, b0, &mask_c);
    const LinearOut yg = run_linear_relu_mask(on(x0, g), on(w0, g), on(b0, g), &mask_g);
    expect_masks_match(mask_g.to(Device::cpu()), mask_c, run_linear(x0, w0, b0, Epilogue::None, false).y, rows, width);
    Tensor w = random_tensor({out, width}, seed++), dy = random_tensor({rows, out}, seed++);
    const Grads ref = run_backward_through_relu(yc.y, w, dy, mask_c, true);
    const Grads got = run_backward_through_relu(yg.y, on(w, g), on(dy, g), mask_g, true);  // the CUDA mask
    EXPECT_TRUE(all_close(got.dx.to(Device::cpu()), ref.dx, kAtol, kRtol)) << "dx";
    EXPECT_TRUE(all_close(got.db.to(Device::cpu()), ref.db, kAtol, kRtol)) << "db below";
    for (uint32_t e : *refused) cudl_emu::set_lt_epilogue_refused(e, false);
  }
  cudl_emu::set_lt_relu_mask_msb_first(false);
  cuda_matmul_forget_mask_layout();
}
#endif

TEST(MatmulCuda, ReluMaskPathsWithEmptyShapesMatchCpu) {
  // in = 0 (no GEMM: y = relu(bias), mask from it), and rows = 0 (dw = 0, db below = 0).
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  Tensor x0 = Tensor::zeros({5, 0}), w0 = Tensor::zeros({130, 0}), b0 = random_tensor({130}, 990);
  Tensor mask_c, mask_g;
  const LinearOut yc = run_linear_relu_mask(x0, w0, b0, &mask_c);
  const LinearOut yg = run_linear_relu_mask(on(x0, g), on(w0, g), on(b0, g), &mask_g);
  EXPECT_TRUE(all_close(yg.y.to(Device::cpu()), yc.y, 0, 0));
  expect_masks_match(mask_g.to(Device::cpu()), mask_c, run_linear(x0, w0, b0, Epilogue::None, false).y, 5, 130);
  Tensor h = Tensor::zeros({0, 130}), w = random_tensor({7, 130}, 991), dy = Tensor::zeros({0, 7});
  Tensor mask = Tensor::zeros({0, relu_mask_row_bytes(130)}, DType::u8);
  const Grads ref = run_backward_through_relu(h, w, dy, mask, true);
  const Grads got = run_backward_through_relu(on(h, g), on(w, g), on(dy, g), on(mask, g), true);
  EXPECT_TRUE(all_close(got.dw.to(Device::cpu()), ref.dw, 0, 0)) << "dw";
  EXPECT_TRUE(all_close(got.db.to(Device::cpu()), ref.db, 0, 0)) << "db below";
  EXPECT_TRUE(all_close(ref.db, Tensor::zeros({130}), 0, 0));
}

// TF32 results against the CPU reference on TF32-rounded operands: exact to fp32 rounding under the
// emulator (it converts as cvt.rna.tf32.f32); a real GPU's conversion is not documented, so on a
// device the bound is the TF32 error itself.
#if defined(CUDL_EMULATED)
constexpr double kTf32Tol = 1e-5;
#else
constexpr double kTf32Tol = 3e-3;
#endif

// TF32: off unless asked (run_op reads CUDL_ALLOW_TF32 on each call; models use
// CompileOptions::precision). Inputs are 1 + j·2^-14 and -(1 + j·2^-13): exact in f32, not in TF32,
// so TF32 products differ from fp32 ones by ~1e-3 relative, far outside the 1e-5 tolerance.
Tensor off_grid(const Shape& s, int sign, int step) {
  std::vector<float> v(static_cast<size_t>(s.numel()));
  for (size_t j = 0; j < v.size(); ++j) v[j] = sign * (1.f + static_cast<float>((j * 7) % 61 + 1) * std::ldexp(1.f, -step));
  return Tensor::from_vector(v, s);
}

TEST(MatmulCuda, Tf32OnlyWhenAskedAndRoundsEveryInput) {
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      SCOPED_TRACE(::testing::Message() << "ta " << ta << " tb " << tb);
      Tensor a = off_grid(ta ? Shape{12, 5} : Shape{5, 12}, 1, 14), b = off_grid(tb ? Shape{3, 12} : Shape{12, 3}, -1, 13);
      const Tensor f32 = run_matmul(a, b, ta, tb), tf32 = run_matmul(tf32_rounded(a), tf32_rounded(b), ta, tb);
      ASSERT_GT(max_abs_diff(f32, tf32), 1e-3);
      EXPECT_TRUE(all_close(run_matmul(on(a, g), on(b, g), ta, tb).to(Device::cpu()), f32, 1e-5, 1e-5)) << "default";
      {
        EnvGuard env("CUDL_ALLOW_TF32", "0");
        EXPECT_TRUE(all_close(run_matmul(on(a, g), on(b, g), ta, tb).to(Device::cpu()), f32, 1e-5, 1e-5)) << "=0";
      }
      EnvGuard env("CUDL_ALLOW_TF32", "1");
      EXPECT_TRUE(all_close(run_matmul(on(a, g), on(b, g), ta, tb).to(Device::cpu()), tf32, kTf32Tol, kTf32Tol)) << "=1";
    }
  EnvGuard env("CUDL_ALLOW_TF32", "yes");
  Tensor a = random_tensor({2, 2}, 1, -1, 1, g);
  EXPECT_NE(error_message([&] { run_matmul(a, a, false, false); }).find("CUDL_ALLOW_TF32=yes is not 0 or 1"),
            std::string::npos);
}

TEST(MatmulCuda, Tf32LinearForwardAndBackwardWithFusedEpilogues) {
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  Tensor x = off_grid({6, 16}, 1, 14), w = off_grid({8, 16}, 1, 13), bias = random_tensor({8}, 31);
  Tensor dy = off_grid({6, 8}, 1, 12);
  for (Epilogue e : {Epilogue::None, Epilogue::Gelu}) {
    SCOPED_TRACE(static_cast<int>(e));
    // The reference: the CPU ops on TF32-rounded GEMM operands (dy is rounded too: the backward
    // GEMMs read dpre = dy ⊙ act', which is dy itself for no activation).
    const bool pre = e == Epilogue::Gelu;
    const LinearOut want = run_linear(tf32_rounded(x), tf32_rounded(w), bias, e, pre);
    EnvGuard env("CUDL_ALLOW_TF32", "1");
    const LinearOut got = run_linear(on(x, g), on(w, g), on(bias, g), e, pre);
    EXPECT_TRUE(all_close(got.y.to(Device::cpu()), want.y, kTf32Tol, kTf32Tol));
    EXPECT_GT(max_abs_diff(got.y, run_linear(x, w, bias, e, pre).y), 1e-3) << "not fp32";
    if (e == Epilogue::None) {
      const Grads gg = run_linear_backward(on(x, g), on(w, g), on(dy, g), got.y, got.pre, e);
      const Grads wg = run_linear_backward(tf32_rounded(x), tf32_rounded(w), tf32_rounded(dy), want.y, want.pre, e);
      EXPECT_TRUE(all_close(gg.dx.to(Device::cpu()), wg.dx, kTf32Tol, kTf32Tol)) << "dx";
      EXPECT_TRUE(all_close(gg.dw.to(Device::cpu()), wg.dw, kTf32Tol, kTf32Tol)) << "dw";
    }
  }
}

/// While alive, the emulated cuBLASLt finds no algo for these epilogues (a no-op on a real library,
/// which cannot be told to refuse: tests that need the refusal skip there).
struct RefusedEpilogues {
  std::vector<uint32_t> list;
  explicit RefusedEpilogues(std::vector<uint32_t> epilogues) : list(std::move(epilogues)) { set(true); }
  ~RefusedEpilogues() { set(false); }
  void set(bool refuse) const {
#if defined(CUDL_EMULATED)
    for (uint32_t e : list) cudl_emu::set_lt_epilogue_refused(e, refuse);
#else
    (void)refuse;
#endif
  }
};

TEST(MatmulCuda, PlainGemmWithoutLtAlgoRunsThroughTheLegacyApi) {
  CUDL_REQUIRE_CUDA();
#if defined(CUDL_EMULATED)
  const Device g = Device::cuda();
  RefusedEpilogues refuse({CUBLASLT_EPILOGUE_DEFAULT});
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      SCOPED_TRACE(::testing::Message() << "ta " << ta << " tb " << tb);
      // Shapes no other test uses: cached plans keep their algo.
      Tensor a = off_grid(ta ? Shape{2, 13, 11} : Shape{2, 11, 13}, 1, 14);
      Tensor b = off_grid(tb ? Shape{2, 7, 13} : Shape{2, 13, 7}, -1, 13);
      const MatmulPlanStats before = cuda_matmul_plan_stats();
      ::testing::internal::CaptureStderr();
      Tensor got = run_matmul(on(a, g), on(b, g), ta, tb);
      const std::string log = ::testing::internal::GetCapturedStderr();
      EXPECT_EQ(cuda_matmul_plan_stats().legacy, before.legacy + 1);
      if (ta == 0 && tb == 0)  // logged once per shape
        EXPECT_NE(log.find("running it through cublasGemmStridedBatchedEx"), std::string::npos) << log;
      EXPECT_TRUE(all_close(got.to(Device::cpu()), run_matmul(a, b, ta, tb), 1e-5, 1e-5));
      EnvGuard env("CUDL_ALLOW_TF32", "1");
      Tensor got32 = run_matmul(on(a, g), on(b, g), ta, tb);
      EXPECT_TRUE(
          all_close(got32.to(Device::cpu()), run_matmul(tf32_rounded(a), tf32_rounded(b), ta, tb), kTf32Tol, kTf32Tol));
    }
#else
  GTEST_SKIP() << "refusing cuBLASLt algos needs the emulated library";
#endif
}

TEST(MatmulCuda, PlansAreBuiltOncePerShape) {
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  Tensor x = random_tensor({6, 5}, 800, -1, 1, g), w = random_tensor({16, 5}, 801, -1, 1, g);
  Tensor b = random_tensor({16}, 802, -1, 1, g);
  run_linear(x, w, b, Epilogue::Relu, false);  // builds the plan
  const MatmulPlanStats before = cuda_matmul_plan_stats();
  for (int i = 0; i < 3; ++i) run_linear(x, w, b, Epilogue::Relu, false);
  const MatmulPlanStats after = cuda_matmul_plan_stats();
  EXPECT_EQ(after.built, before.built);
  EXPECT_EQ(after.reused, before.reused + 3);
}

// ---------------------------------------------------------------------------------------------
// 16-bit storage (bf16, f16): CUDA (cuBLASLt with 16-bit A/B/C/D, fp32 compute) vs the CPU reference
// (the f32 op on widened values, outputs rounded once to nearest even).
//
// Tolerance: both sides accumulate the same products in fp32 and round each output once, so before
// rounding they differ only by summation order (under k·2^-23·S, S = Σ|products| of the element,
// |bias| included); one rounding each then adds at most one unit of the 16-bit type at the result
// (eps·|result| <= eps·S). So |cuda - cpu| <= 1.25·(eps + k·2^-23)·S, with eps = 2^-7 (bf16) or
// 2^-10 (f16) and the 1.25 covering GELU's slope (< 1.13). The one extra rounding on the CUDA side:
// GELU's dpre is stored in the 16-bit type as the operand of the backward GEMMs, which adds eps/2
// of the dpre products: 1.75·eps·S for LinearBackward with GELU. A GEMM accumulating in 16 bits is
// off by ~k·eps/2·S and fails (Matmul16, AccumulatesInFp32 shows the margin).

double eps16(DType t) { return t == DType::bf16 ? std::ldexp(1.0, -7) : std::ldexp(1.0, -10); }
const char* name16(DType t) { return t == DType::bf16 ? "bf16" : "f16"; }
float round16(DType t, float v) {
  return t == DType::bf16 ? bf16_bits_to_float(float_to_bf16_bits(v)) : half_bits_to_float(float_to_half_bits(v));
}

/// `t` (f32, any device) cast to dtype (round to nearest even) on the CPU.
Tensor cast_to(const Tensor& t, DType dt) {
  if (!t.defined()) return Tensor();
  Tensor h = t.to(Device::cpu());
  if (dt == h.dtype()) return h;
  Tensor out = Tensor::empty(h.shape(), dt);
  run_op(OpKind::Cast, {tv(h)}, {tv(out)}, {}, nullptr, "cast");
  return out;
}

/// |t| widened to f32 on the CPU (for the Σ|products| bounds).
Tensor abs_f32(const Tensor& t) {
  if (!t.defined()) return Tensor();
  const auto v = as_doubles(t);
  std::vector<float> a(v.size());
  for (size_t i = 0; i < v.size(); ++i) a[i] = static_cast<float>(std::fabs(v[i]));
  return Tensor::from_vector(a, t.shape());
}

/// |got - want| <= c·(eps + k·2^-23)·S elementwise (NaN matches NaN); lists the first mismatches.
::testing::AssertionResult close16(const Tensor& got, const Tensor& want, const Tensor& S, DType dt, double c,
                                   int64_t k) {
  if (got.dtype() != dt || want.dtype() != dt)
    return ::testing::AssertionFailure() << "dtypes " << got.dtype() << " and " << want.dtype() << ", expected " << dt;
  if (got.shape() != want.shape() || S.numel() != want.numel())
    return ::testing::AssertionFailure() << "shapes " << got.shape() << " vs " << want.shape();
  const auto g = as_doubles(got), w = as_doubles(want), s = as_doubles(S);
  const double unit = c * (eps16(dt) + static_cast<double>(k) * std::ldexp(1.0, -23));
  std::ostringstream os;
  int bad = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const bool ok = std::isnan(w[i]) ? std::isnan(g[i]) : std::fabs(g[i] - w[i]) <= unit * s[i];
    if (!ok && bad++ < 6) os << "\n  [" << i << "] got " << g[i] << ", want " << w[i] << ", bound " << unit * s[i];
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << g.size() << " elements outside " << c << "·(eps + k·2^-23)·S"
                                       << os.str();
}

constexpr double kC16 = 1.25;      // single-rounding outputs
constexpr double kC16Gelu = 1.75;  // LinearBackward with GELU: dpre rounded too

/// Every fused epilogue the matmul ops use; refused (RefusedEpilogues), the unfused paths run (plain
/// GEMM with fp32 D + the matmul kernels).
#if defined(CUDL_EMULATED)
std::vector<uint32_t> fused_epilogues(bool refused) {
  if (!refused) return {};
  return {CUBLASLT_EPILOGUE_BIAS,      CUBLASLT_EPILOGUE_RELU,          CUBLASLT_EPILOGUE_RELU_BIAS,
          CUBLASLT_EPILOGUE_RELU_AUX,  CUBLASLT_EPILOGUE_RELU_AUX_BIAS, CUBLASLT_EPILOGUE_GELU,
          CUBLASLT_EPILOGUE_GELU_BIAS, CUBLASLT_EPILOGUE_GELU_AUX,      CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
          CUBLASLT_EPILOGUE_BGRADB,    CUBLASLT_EPILOGUE_DRELU,         CUBLASLT_EPILOGUE_DRELU_BGRAD};
}
const std::vector<bool> kFusedAndRefused = {false, true};
#else
std::vector<uint32_t> fused_epilogues(bool) { return {}; }
const std::vector<bool> kFusedAndRefused = {false};  // a real cuBLASLt cannot be told to refuse
#endif

const DType k16[] = {DType::bf16, DType::f16};

TEST(Matmul16, MatchesCpuForTransposesOddSizesAndBatches) {
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  uint64_t seed = 2000;
  for (DType dt : k16)
    for (auto [M, K, N] : std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {17, 33, 3}, {5, 64, 130}, {33, 7, 16}})
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          SCOPED_TRACE(::testing::Message()
                       << name16(dt) << " M " << M << " K " << K << " N " << N << " ta " << ta << " tb " << tb);
          Tensor a = cast_to(random_tensor(ta ? Shape{K, M} : Shape{M, K}, seed++), dt);
          Tensor b = cast_to(random_tensor(tb ? Shape{N, K} : Shape{K, N}, seed++), dt);
          const Tensor want = run_matmul(a, b, ta, tb);
          ASSERT_EQ(want.dtype(), dt);
          const Tensor got = run_matmul(on(a, g), on(b, g), ta, tb);
          EXPECT_TRUE(close16(got, want, run_matmul(abs_f32(a), abs_f32(b), ta, tb), dt, kC16, K));
        }
  for (DType dt : k16)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (bool bcast : {false, true}) {
          SCOPED_TRACE(::testing::Message()
                       << name16(dt) << " batched ta " << ta << " tb " << tb << " broadcast " << bcast);
          const int64_t M = 7, K = 9, N = 5;
          Tensor a = cast_to(random_tensor(ta ? Shape{2, 3, K, M} : Shape{2, 3, M, K}, seed++), dt);
          Shape bs = tb ? Shape{N, K} : Shape{K, N};
          if (!bcast) bs = tb ? Shape{2, 3, N, K} : Shape{2, 3, K, N};
          Tensor b = cast_to(random_tensor(bs, seed++), dt);
          const Tensor got = run_matmul(on(a, g), on(b, g), ta, tb);
          EXPECT_TRUE(close16(got, run_matmul(a, b, ta, tb), run_matmul(abs_f32(a), abs_f32(b), ta, tb), dt, kC16, K));
        }
}

TEST(Matmul16, AccumulatesInFp32) {
  // 2048 positive products: an fp32 accumulator is exact to ~2^-13 relative, a 16-bit one loses up
  // to half a unit of the running sum per addition (bf16 stalls once the sum reaches 2^8 units of
  // the addend). The exact result (double) must be within the tolerance, and the test checks that
  // the same products summed in the 16-bit type are not: this test fails if a GEMM accumulated in
  // 16 bits.
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  const int64_t M = 4, K = 2048, N = 3;
  for (DType dt : k16) {
    SCOPED_TRACE(name16(dt));
    Tensor a = cast_to(random_tensor({M, K}, 2100, 0.5f, 1.f), dt),
           b = cast_to(random_tensor({K, N}, 2101, 0.5f, 1.f), dt);
    const Tensor got = run_matmul(on(a, g), on(b, g), false, false);
    const Tensor S = run_matmul(abs_f32(a), abs_f32(b), false, false);
    const auto av = as_doubles(a), bv = as_doubles(b), gv = as_doubles(got), sv = as_doubles(S);
    const double bound = kC16 * (eps16(dt) + K * std::ldexp(1.0, -23));
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double exact = 0;
        float acc16 = 0.f;  // the same products summed in the 16-bit type
        for (int64_t k = 0; k < K; ++k) {
          exact += av[i * K + k] * bv[k * N + j];
          acc16 = round16(dt, acc16 + static_cast<float>(av[i * K + k] * bv[k * N + j]));
        }
        const double s = sv[i * N + j];
        EXPECT_LE(std::fabs(gv[i * N + j] - exact), bound * s) << "(" << i << ", " << j << ")";
        EXPECT_GT(std::fabs(acc16 - exact), bound * s) << "16-bit accumulation would pass: the test could not fail";
      }
    EXPECT_TRUE(close16(got, run_matmul(a, b, false, false), S, dt, kC16, K)) << "vs the CPU reference";
  }
}

TEST(Linear16, ForwardMatchesCpuForEveryEpilogue) {
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  uint64_t seed = 2200;
  for (bool refused : kFusedAndRefused) {
    RefusedEpilogues refuse(fused_epilogues(refused));
    for (DType dt : k16)
      for (const LinearCase& lc : linear_cases())
        for (Epilogue e : {Epilogue::None, Epilogue::Relu, Epilogue::Gelu})
          for (bool with_bias : {true, false})
            for (bool want_aux : {false, true}) {  // Gelu: pre; Relu: the bit-mask
              if (want_aux && e == Epilogue::None) continue;
              const int64_t n = lc.n + (refused ? 2 : 0);  // fresh plans: cached ones keep their algo
              SCOPED_TRACE(::testing::Message()
                           << name16(dt) << " n " << n << " in " << lc.in << " out " << lc.out << " " << epi_name(e)
                           << (with_bias ? " bias" : "") << (want_aux ? " aux" : "") << (refused ? " unfused" : ""));
              Tensor x = cast_to(random_tensor({n, lc.in}, seed++, -2, 2), dt);
              Tensor w = cast_to(random_tensor({lc.out, lc.in}, seed++), dt);
              Tensor b = with_bias ? cast_to(random_tensor({lc.out}, seed++), dt) : Tensor();
              const Tensor S = run_linear(abs_f32(x), abs_f32(w), abs_f32(b), Epilogue::None, false).y;
              if (e == Epilogue::Relu && want_aux) {
                Tensor mask_c, mask_g;
                const LinearOut want = run_linear_relu_mask(x, w, b, &mask_c);
                const LinearOut got = run_linear_relu_mask(on(x, g), on(w, g), on(b, g), &mask_g);
                EXPECT_TRUE(close16(got.y, want.y, S, dt, kC16, lc.in));
                expect_masks_match(mask_g.to(Device::cpu()), mask_c, run_linear(x, w, b, Epilogue::None, false).y, n,
                                   lc.out);
                continue;
              }
              const bool pre = want_aux && e == Epilogue::Gelu;
              const LinearOut want = run_linear(x, w, b, e, pre);
              const LinearOut got = run_linear(on(x, g), on(w, g), on(b, g), e, pre);
              EXPECT_TRUE(close16(got.y, want.y, S, dt, kC16, lc.in)) << "y";
              if (pre) EXPECT_TRUE(close16(got.pre, want.pre, S, dt, kC16, lc.in)) << "pre";
            }
  }
}

TEST(Linear16, BackwardMatchesCpuForEveryEpilogueAndOutputSubset) {
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  uint64_t seed = 2400;
  for (bool refused : kFusedAndRefused) {
    RefusedEpilogues refuse(fused_epilogues(refused));
    for (DType dt : k16)
      for (const LinearCase& lc : linear_cases())
        for (Epilogue e : {Epilogue::None, Epilogue::Relu, Epilogue::Gelu}) {
          const int64_t n = lc.n + (refused ? 2 : 0);  // fresh plans: cached ones keep their algo
          SCOPED_TRACE(::testing::Message() << name16(dt) << " n " << n << " in " << lc.in << " out " << lc.out << " "
                                            << epi_name(e) << (refused ? " unfused" : ""));
          Tensor x = cast_to(random_tensor({n, lc.in}, seed++, -2, 2), dt);
          Tensor w = cast_to(random_tensor({lc.out, lc.in}, seed++), dt);
          Tensor b = cast_to(random_tensor({lc.out}, seed++), dt), dy = cast_to(random_tensor({n, lc.out}, seed++), dt);
          const LinearOut fw = run_linear(x, w, b, e, e == Epilogue::Gelu);
          const Tensor act_y = e == Epilogue::Relu ? fw.y : Tensor();
          const Tensor act_pre = e == Epilogue::Gelu ? fw.pre : Tensor();
          // S from |dy|: dx ~ |dy|·|w|, dw ~ |dy|ᵀ·|x|, db ~ Σ_rows |dy|.
          Tensor ady = abs_f32(dy);
          const Tensor s_dx = run_matmul(ady, abs_f32(w), false, false),
                       s_dw = run_matmul(ady, abs_f32(x), true, false);
          const Tensor s_db = run_matmul(Tensor::full({1, n}, 1.0), ady, false, false).reshape({lc.out});
          // S from |dy| bounds Σ|dpre products| for ReLU (|dpre| <= |dy|); GELU's |dpre| is up to 1.13·|dy|.
          const double c = e == Epilogue::Gelu ? kC16Gelu * 1.13 : kC16;
          const bool wants[4][3] = {
              {true, true, true}, {false, false, true}, {true, false, false}, {false, true, false}};
          for (const auto& want : wants) {
            SCOPED_TRACE(::testing::Message() << "dx " << want[0] << " dw " << want[1] << " db " << want[2]);
            const Grads ref = run_linear_backward(x, w, dy, act_y, act_pre, e, want[0], want[1], want[2]);
            const Grads got = run_linear_backward(on(x, g), on(w, g), on(dy, g), on(act_y, g), on(act_pre, g), e,
                                                  want[0], want[1], want[2]);
            if (want[0]) EXPECT_TRUE(close16(got.dx, ref.dx, s_dx, dt, c, lc.out)) << "dx";
            if (want[1]) EXPECT_TRUE(close16(got.dw, ref.dw, s_dw, dt, c, n)) << "dw";
            if (want[2]) EXPECT_TRUE(close16(got.db, ref.db, s_db, dt, c, n)) << "db";
          }
        }
  }
}

// 16-bit storage with f32 dw and db (the gradients of the f32 masters the layer's 16-bit weights were
// converted from): the GEMM writes fp32, never rounded to 16 bits, on both backends.
TEST(Linear16, BackwardWritesF32MasterGradientsStraightFromTheGemm) {
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  uint64_t seed = 2500;
  for (bool refused : kFusedAndRefused) {
    RefusedEpilogues refuse(fused_epilogues(refused));
    for (DType dt : k16)
      for (Epilogue e : {Epilogue::None, Epilogue::Relu, Epilogue::Gelu}) {
        const int64_t n = 37 + (refused ? 2 : 0), in = 13, out = 9;  // fresh plans when refused
        SCOPED_TRACE(::testing::Message() << name16(dt) << " " << epi_name(e) << (refused ? " unfused" : ""));
        Tensor x = cast_to(random_tensor({n, in}, seed++, -2, 2), dt), w = cast_to(random_tensor({out, in}, seed++), dt);
        Tensor b = cast_to(random_tensor({out}, seed++), dt), dy = cast_to(random_tensor({n, out}, seed++), dt);
        const LinearOut fw = run_linear(x, w, b, e, e == Epilogue::Gelu);
        const Tensor act_y = e == Epilogue::Relu ? fw.y : Tensor(), act_pre = e == Epilogue::Gelu ? fw.pre : Tensor();
        auto grads = [&](Device d) {
          Grads r;
          r.dw = Tensor::full(w.shape(), kNaN, DType::f32, d);
          r.db = Tensor::full(Shape{out}, kNaN, DType::f32, d);
          OpAttrs at;
          at.i[0] = static_cast<int64_t>(e);
          run_op(OpKind::LinearBackward, {tv(on(x, d)), tv(on(w, d)), tv(on(dy, d)), tv(on(act_y, d)), tv(on(act_pre, d))},
                 {TensorView{}, tv(r.dw), tv(r.db)}, at, nullptr, "dense");
          return r;
        };
        const Grads ref = grads(Device::cpu()), got = grads(g);
        ASSERT_EQ(got.dw.dtype(), DType::f32);
        // fp32 sums of the same (exact) products in another order; GELU's dpre is rounded to 16 bits
        // on CUDA (a GEMM operand) but not on the CPU.
        const double unit = 1.25 * ((e == Epilogue::Gelu ? eps16(dt) : 0.0) + n * std::ldexp(1.0, -23));
        const Tensor s_dw = run_matmul(abs_f32(dy), abs_f32(x), true, false);
        const Tensor s_db = run_matmul(Tensor::full({1, n}, 1.0), abs_f32(dy), false, false).reshape({out});
        const auto gw = as_doubles(got.dw), rw = as_doubles(ref.dw), sw = as_doubles(s_dw);
        const auto gb = as_doubles(got.db), rb = as_doubles(ref.db), sb = as_doubles(s_db);
        int not_16bit = 0;
        for (size_t i = 0; i < gw.size(); ++i) {
          EXPECT_LE(std::fabs(gw[i] - rw[i]), unit * (e == Epilogue::Gelu ? 1.13 : 1.0) * sw[i]) << "dw[" << i << "]";
          const float f = static_cast<float>(gw[i]);
          not_16bit += cudl::testing::widen_16(cudl::testing::round_16(f, dt), dt) != f;
        }
        for (size_t i = 0; i < gb.size(); ++i)
          EXPECT_LE(std::fabs(gb[i] - rb[i]), unit * (e == Epilogue::Gelu ? 1.13 : 1.0) * sb[i]) << "db[" << i << "]";
        EXPECT_GT(not_16bit, static_cast<int>(gw.size()) / 2) << "dw must not pass through 16 bits";
      }
  }
  // One type for dw and db.
  Tensor x = cast_to(random_tensor({4, 3}, 1), DType::bf16), w = cast_to(random_tensor({2, 3}, 2), DType::bf16);
  Tensor dy = cast_to(random_tensor({4, 2}, 3), DType::bf16);
  Tensor dw = Tensor::empty(Shape{2, 3}), db = Tensor::empty(Shape{2}, DType::bf16);
  for (Device d : {Device::cpu(), g}) {
    Tensor dwd = on(dw, d), dbd = on(db, d);
    const std::string msg = cudl::testing::error_message([&] {
      run_op(OpKind::LinearBackward, {tv(on(x, d)), tv(on(w, d)), tv(on(dy, d))}, {TensorView{}, tv(dwd), tv(dbd)}, {},
             nullptr, "dense");
    });
    EXPECT_NE(msg.find("dw (2, 3) has dtype f32 but db (2,) has bf16 (one type for both)"), std::string::npos) << msg;
  }
}

TEST(Linear16, BackwardThroughTheReluBelowMatchesCpu) {
  // Linear + Relu with the bit-mask (RELU_AUX), then the layer above's LinearBackward with dx taken
  // through it (i[1] = 1, mask in input 5, db below in output 3): DRELU(_BGRAD), or the unfused fp32
  // dx masked, summed and rounded once.
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  uint64_t seed = 2600;
  for (bool refused : kFusedAndRefused) {
    RefusedEpilogues refuse(fused_epilogues(refused));
    for (DType dt : k16)
      for (int64_t width : {int64_t{128}, int64_t{130}, int64_t{1}})
        for (bool want_db : {true, false}) {
          SCOPED_TRACE(::testing::Message() << name16(dt) << " width " << width << (want_db ? " db below" : "")
                                            << (refused ? " unfused" : ""));
          const int64_t rows = 19 + (refused ? 2 : 0), k = 11, out = 7;  // fresh plans when refused
          Tensor x0 = cast_to(random_tensor({rows, k}, seed++, -2, 2), dt),
                 w0 = cast_to(random_tensor({width, k}, seed++), dt);
          Tensor b0 = cast_to(random_tensor({width}, seed++), dt);
          Tensor mask_c, mask_g;
          const LinearOut yc = run_linear_relu_mask(x0, w0, b0, &mask_c);
          const LinearOut yg = run_linear_relu_mask(on(x0, g), on(w0, g), on(b0, g), &mask_g);
          EXPECT_TRUE(close16(yg.y, yc.y, run_linear(abs_f32(x0), abs_f32(w0), abs_f32(b0), Epilogue::None, false).y,
                              dt, kC16, k));
          expect_masks_match(mask_g.to(Device::cpu()), mask_c, run_linear(x0, w0, b0, Epilogue::None, false).y, rows,
                             width);
          Tensor w = cast_to(random_tensor({out, width}, seed++), dt),
                 dy = cast_to(random_tensor({rows, out}, seed++), dt);
          const Grads ref = run_backward_through_relu(yc.y, w, dy, mask_c, want_db);
          const Grads got = run_backward_through_relu(on(yc.y, g), on(w, g), on(dy, g), on(mask_c, g), want_db);
          const Tensor s_dx = run_matmul(abs_f32(dy), abs_f32(w), false, false);
          EXPECT_TRUE(close16(got.dx, ref.dx, s_dx, dt, kC16, out)) << "dx";
          EXPECT_TRUE(close16(got.dw, ref.dw, run_matmul(abs_f32(dy), abs_f32(yc.y), true, false), dt, kC16, rows))
              << "dw";
          if (want_db) {  // Σ_rows of the unrounded dx: bounded by Σ_rows s_dx
            const Tensor s_db = run_matmul(Tensor::full({1, rows}, 1.0), s_dx, false, false).reshape({width});
            EXPECT_TRUE(close16(got.db, ref.db, s_db, dt, kC16, out * rows)) << "db below";
          }
        }
  }
}

/// Every element of two 16-bit tensors has the same value (NaN matches NaN); names the first mismatches.
::testing::AssertionResult same16(const Tensor& got, const Tensor& want) {
  if (got.dtype() != want.dtype() || got.shape() != want.shape())
    return ::testing::AssertionFailure() << got.dtype() << " " << got.shape() << " vs " << want.dtype() << " "
                                         << want.shape();
  const auto g = as_doubles(got), w = as_doubles(want);
  std::ostringstream os;
  int bad = 0;
  for (size_t i = 0; i < g.size(); ++i)
    if (!(g[i] == w[i] || (std::isnan(g[i]) && std::isnan(w[i]))) && bad++ < 6)
      os << "\n  [" << i << "] got " << g[i] << ", want " << w[i];
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << g.size() << " elements differ" << os.str();
}

TEST(Linear16, OneProductPerOutputRoundsExactlyAsTheCpu) {
  // With one product per output (k = 1) the fp32 values before the store are the same on both sides
  // (a product of two 16-bit values is exact in fp32, one fp32 bias add), so the 16-bit results must
  // be bitwise the CPU's: this fails if a path rounds to nearest other than once, from fp32, to even
  // (truncation, an intermediate rounded to 16 bits, the bias added in 16-bit math).
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  uint64_t seed = 2800;
  for (bool refused : kFusedAndRefused) {
    RefusedEpilogues refuse(fused_epilogues(refused));
    for (DType dt : k16) {
      SCOPED_TRACE(::testing::Message() << name16(dt) << (refused ? " unfused" : ""));
      const int64_t rows = 37 + (refused ? 2 : 0), out = 24;  // fresh plans when refused
      Tensor a = cast_to(random_tensor({rows, 1}, seed++, -3, 3), dt),
             b = cast_to(random_tensor({1, out}, seed++, -3, 3), dt);
      EXPECT_TRUE(same16(run_matmul(on(a, g), on(b, g), false, false), run_matmul(a, b, false, false))) << "Matmul";
      Tensor w = cast_to(random_tensor({out, 1}, seed++, -3, 3), dt), bias = cast_to(random_tensor({out}, seed++), dt);
      for (Epilogue e : {Epilogue::None, Epilogue::Relu, Epilogue::Gelu}) {
        SCOPED_TRACE(epi_name(e));
        const bool pre = e == Epilogue::Gelu;  // GELU itself may differ by an fp32 ulp: compare pre
        const LinearOut want = run_linear(a, w, bias, e, pre),
                        got = run_linear(on(a, g), on(w, g), on(bias, g), e, pre);
        EXPECT_TRUE(same16(pre ? got.pre : got.y, pre ? want.pre : want.y));
      }
      Tensor mask_c, mask_g;
      EXPECT_TRUE(same16(run_linear_relu_mask(on(a, g), on(w, g), on(bias, g), &mask_g).y,
                         run_linear_relu_mask(a, w, bias, &mask_c).y))
          << "relu with mask";
      // Backward with one product per output: dx (out = 1), dw and db (rows = 1).
      Tensor x1 = cast_to(random_tensor({1, out}, seed++, -3, 3), dt),
             w1 = cast_to(random_tensor({1, out}, seed++, -3, 3), dt);
      Tensor dy1 = cast_to(random_tensor({1, 1}, seed++, -3, 3), dt),
             y1 = run_linear(x1, w1, Tensor(), Epilogue::Relu, false).y;
      for (Epilogue e : {Epilogue::None, Epilogue::Relu}) {
        SCOPED_TRACE(::testing::Message() << "backward " << epi_name(e));
        const Tensor act = e == Epilogue::Relu ? y1 : Tensor();
        const Grads want = run_linear_backward(x1, w1, dy1, act, Tensor(), e);
        const Grads got = run_linear_backward(on(x1, g), on(w1, g), on(dy1, g), on(act, g), Tensor(), e);
        EXPECT_TRUE(same16(got.dx, want.dx)) << "dx";
        EXPECT_TRUE(same16(got.dw, want.dw)) << "dw";
        EXPECT_TRUE(same16(got.db, want.db)) << "db";
      }
    }
  }
}

TEST(Matmul16, PlainGemmWithoutLtAlgoRunsThroughTheLegacyApiIn16Bits) {
  // cublasGemmStridedBatchedEx with 16-bit A/B/C (CUBLAS_COMPUTE_32F): Matmul, and the unfused
  // Linear's plain GEMM with 16-bit A/B and fp32 C.
  CUDL_REQUIRE_CUDA();
#if defined(CUDL_EMULATED)
  const Device g = Device::cuda();
  std::vector<uint32_t> all = fused_epilogues(true);
  all.push_back(CUBLASLT_EPILOGUE_DEFAULT);
  RefusedEpilogues refuse(all);
  uint64_t seed = 2900;
  for (DType dt : k16) {
    SCOPED_TRACE(name16(dt));
    Tensor a = cast_to(random_tensor({2, 11, 13}, seed++), dt), b = cast_to(random_tensor({2, 13, 7}, seed++), dt);
    const MatmulPlanStats before = cuda_matmul_plan_stats();
    const Tensor got = run_matmul(on(a, g), on(b, g), false, false);
    EXPECT_EQ(cuda_matmul_plan_stats().legacy, before.legacy + 1);
    EXPECT_TRUE(
        close16(got, run_matmul(a, b, false, false), run_matmul(abs_f32(a), abs_f32(b), false, false), dt, kC16, 13));
    Tensor x = cast_to(random_tensor({9, 13}, seed++), dt), w = cast_to(random_tensor({6, 13}, seed++), dt);
    Tensor bias = cast_to(random_tensor({6}, seed++), dt);
    const LinearOut want = run_linear(x, w, bias, Epilogue::Gelu, true);
    const LinearOut lg = run_linear(on(x, g), on(w, g), on(bias, g), Epilogue::Gelu, true);
    const Tensor S = run_linear(abs_f32(x), abs_f32(w), abs_f32(bias), Epilogue::None, false).y;
    EXPECT_TRUE(close16(lg.y, want.y, S, dt, kC16, 13)) << "y";
    EXPECT_TRUE(close16(lg.pre, want.pre, S, dt, kC16, 13)) << "pre";
  }
#else
  GTEST_SKIP() << "refusing cuBLASLt algos needs the emulated library";
#endif
}

TEST(Linear16, EmptyShapesMatchCpu) {
  // in = 0: y = act(bias) and the mask from it, with no GEMM; rows = 0: dw, db and db below are 0.
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  for (DType dt : k16) {
    SCOPED_TRACE(name16(dt));
    Tensor x0 = Tensor::zeros({5, 0}, dt), w0 = Tensor::zeros({130, 0}, dt),
           b0 = cast_to(random_tensor({130}, 2950), dt);
    Tensor mask_c, mask_g;
    const LinearOut yc = run_linear_relu_mask(x0, w0, b0, &mask_c);
    const LinearOut yg = run_linear_relu_mask(on(x0, g), on(w0, g), on(b0, g), &mask_g);
    EXPECT_TRUE(same16(yg.y, yc.y));
    expect_masks_match(mask_g.to(Device::cpu()), mask_c, run_linear(x0, w0, b0, Epilogue::None, false).y, 5, 130);
    for (Epilogue e : {Epilogue::None, Epilogue::Gelu}) {
      const LinearOut want = run_linear(x0, w0, b0, e, e == Epilogue::Gelu);
      const LinearOut got = run_linear(on(x0, g), on(w0, g), on(b0, g), e, e == Epilogue::Gelu);
      EXPECT_TRUE(same16(got.y, want.y)) << epi_name(e);
    }
    Tensor h = Tensor::zeros({0, 130}, dt), w = cast_to(random_tensor({7, 130}, 2951), dt),
           dy = Tensor::zeros({0, 7}, dt);
    Tensor mask = Tensor::zeros({0, relu_mask_row_bytes(130)}, DType::u8);
    const Grads ref = run_backward_through_relu(h, w, dy, mask, true);
    const Grads got = run_backward_through_relu(on(h, g), on(w, g), on(dy, g), on(mask, g), true);
    EXPECT_TRUE(same16(got.dw, ref.dw)) << "dw";
    EXPECT_TRUE(same16(got.db, ref.db)) << "db below";
    EXPECT_TRUE(same16(ref.db, cast_to(Tensor::zeros({130}), dt)));
  }
}

TEST(Matmul16, Tf32MathModeDoesNotApplyTo16BitInputs) {
  // CUBLAS_COMPUTE_32F_FAST_TF32 takes f32 A/B only (the emulated library refuses it for 16-bit
  // types, as cuBLAS's type table does): with TF32 asked for, 16-bit GEMMs still run in COMPUTE_32F.
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  EnvGuard env("CUDL_ALLOW_TF32", "1");
  for (DType dt : k16) {
    SCOPED_TRACE(name16(dt));
    Tensor a = cast_to(random_tensor({6, 12}, 3000), dt), b = cast_to(random_tensor({12, 5}, 3001), dt);
    EXPECT_TRUE(close16(run_matmul(on(a, g), on(b, g), false, false), run_matmul(a, b, false, false),
                        run_matmul(abs_f32(a), abs_f32(b), false, false), dt, kC16, 12));
    Tensor bias = cast_to(random_tensor({5}, 3002), dt), w = cast_to(random_tensor({5, 12}, 3003), dt);
    const LinearOut got = run_linear(on(a, g), on(w, g), on(bias, g), Epilogue::Relu, false);
    EXPECT_TRUE(close16(got.y, run_linear(a, w, bias, Epilogue::Relu, false).y,
                        run_linear(abs_f32(a), abs_f32(w), abs_f32(bias), Epilogue::None, false).y, dt, kC16, 12));
  }
}

#if defined(CUDL_EMULATED)
TEST(Linear16, MaskLayoutIsCheckedPerStorageTypeAndAForeignOneFallsBack) {
  // The MSB-first cuBLASLt of MatmulCuda.AnotherLibraryMaskBitOrderIsNeverMixedWithCudls, in 16
  // bits: the layout check runs with the storage type's GEMMs, finds the foreign bit order, and the
  // mask paths run on cudl's kernels (the backward on fp32 scratch, rounded once) and match the CPU.
  CUDL_REQUIRE_CUDA();
  const Device g = Device::cuda();
  cudl_emu::set_lt_relu_mask_msb_first(true);
  cuda_matmul_forget_mask_layout();
  uint64_t seed = 3100;
  for (DType dt : k16) {
    SCOPED_TRACE(name16(dt));
    const int64_t rows = 13, k = 9, width = 130, out = 5;
    Tensor x0 = cast_to(random_tensor({rows, k}, seed++, -2, 2), dt),
           w0 = cast_to(random_tensor({width, k}, seed++), dt);
    Tensor b0 = cast_to(random_tensor({width}, seed++), dt);
    Tensor mask_c, mask_g;
    ::testing::internal::CaptureStderr();
    const LinearOut yc = run_linear_relu_mask(x0, w0, b0, &mask_c);
    const LinearOut yg = run_linear_relu_mask(on(x0, g), on(w0, g), on(b0, g), &mask_g);
    const std::string log = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(log.find(std::string("(") + name16(dt) + "): RELU_AUX not used"), std::string::npos) << log;
    expect_masks_match(mask_g.to(Device::cpu()), mask_c, run_linear(x0, w0, b0, Epilogue::None, false).y, rows, width);
    Tensor w = cast_to(random_tensor({out, width}, seed++), dt), dy = cast_to(random_tensor({rows, out}, seed++), dt);
    const Grads ref = run_backward_through_relu(yc.y, w, dy, mask_c, true);
    const Grads got = run_backward_through_relu(yg.y, on(w, g), on(dy, g), mask_g, true);  // the CUDA mask
    const Tensor s_dx = run_matmul(abs_f32(dy), abs_f32(w), false, false);
    EXPECT_TRUE(close16(got.dx, ref.dx, s_dx, dt, kC16, out)) << "dx";
    EXPECT_TRUE(close16(got.db, ref.db, run_matmul(Tensor::full({1, rows}, 1.0), s_dx, false, false).reshape({width}),
                        dt, kC16, out * rows))
        << "db below";
  }
  cudl_emu::set_lt_relu_mask_msb_first(false);
  cuda_matmul_forget_mask_layout();
}
#endif

TEST(Matmul16, MixedStorageTypesAreRejectedOnEveryDevice) {
  for (Device d : devices()) {
    SCOPED_TRACE(d.str());
    Tensor a = Tensor::zeros({3, 4}, DType::bf16, d), b = Tensor::zeros({4, 5}, DType::f16, d);
    Tensor c = Tensor::zeros({3, 5}, DType::bf16, d);
    std::string msg = error_message([&] { run_op(OpKind::Matmul, {tv(a), tv(b)}, {tv(c)}, {}, nullptr, "mm"); });
    EXPECT_NE(msg.find("Matmul (mm): input 1 (4, 5) has dtype f16 but input 0 has bf16"), std::string::npos) << msg;
    Tensor x = Tensor::zeros({2, 4}, DType::f16, d), w = Tensor::zeros({5, 4}, DType::f16, d);
    Tensor bias = Tensor::zeros({5}, DType::f32, d), y = Tensor::zeros({2, 5}, DType::f16, d);
    msg = error_message([&] { run_op(OpKind::Linear, {tv(x), tv(w), tv(bias)}, {tv(y)}, {}, nullptr, "dense"); });
    EXPECT_NE(msg.find("Linear (dense): input 2 (5,) has dtype f32 but input 0 has f16"), std::string::npos) << msg;
  }
}

}  // namespace
