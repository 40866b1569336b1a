// tests/test_op_matmul.cpp — matmul op family: CPU reference vs naive loops and finite differences
// (Linear with every epilogue -> LinearBackward, Matmul gradients through transposed Matmuls), CUDA
// (cuBLASLt) vs CPU for every op, plan caching, NaN propagation, empty shapes and argument errors.
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

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
  Tensor c = Tensor::full(matmul_out(a.shape(), b.shape(), ta, tb), kNaN, DType::f32, a.device());
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
  o.y = Tensor::full(Shape(yd), kNaN, DType::f32, x.device());
  if (want_pre) o.pre = Tensor::full(Shape(yd), kNaN, DType::f32, x.device());
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
  if (want_dx) g.dx = Tensor::full(x.shape(), kNaN, DType::f32, d);
  if (want_dw) g.dw = Tensor::full(w.shape(), kNaN, DType::f32, d);
  if (want_db) g.db = Tensor::full(Shape{w.shape()[0]}, kNaN, DType::f32, d);
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
  o.y = Tensor::full(Shape{x.shape()[0], w.shape()[0]}, kNaN, DType::f32, x.device());
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
  g.dx = Tensor::full(x.shape(), kNaN, DType::f32, d);
  g.dw = Tensor::full(w.shape(), kNaN, DType::f32, d);
  if (want_db_below) g.db = Tensor::full(Shape{x.shape()[1]}, kNaN, DType::f32, d);
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

TEST(MatmulCuda, PlainGemmWithoutLtAlgoRunsThroughTheLegacyApi) {
  CUDL_REQUIRE_CUDA();
#if defined(CUDL_EMULATED)
  const Device g = Device::cuda();
  cudl_emu::set_lt_epilogue_refused(CUBLASLT_EPILOGUE_DEFAULT, true);
  struct Restore {
    ~Restore() { cudl_emu::set_lt_epilogue_refused(CUBLASLT_EPILOGUE_DEFAULT, false); }
  } restore;
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

}  // namespace
