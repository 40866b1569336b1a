// tests/test_op_conv.cpp — the conv op family: CPU reference vs naive loops and finite differences;
// CPU results equal for every thread count; CUDA (cuDNN graph-API path, forced im2col engine,
// cuDNN-without-fusion and no-plan fallback) vs CPU for every op; plan caching; invalid geometry;
// Conv2dTranspose (direct loops, its gradient rule by finite differences, CUDA on both engines);
// bf16/f16 storage: CUDA (cuDNN, im2col, no fused plan) vs the CPU reference, the plan key's dtype.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "cpu/parallel.hpp"
#include "cuda/conv.hpp"
#include "ops/conv.hpp"
#include "testing.hpp"
#if defined(CUDL_EMULATED)
#include "emu/cudnn_emu.hpp"
#include "emu/emu.hpp"
#endif

using namespace cudl;
using namespace cudl::testing;

namespace {

// ---------------------------------------------------------------------------------------------
// helpers

struct Cfg {
  Shape x;  // (N, C, H, W)
  int64_t K, R, S;
  int64_t sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, groups = 1;
  bool bias = false, relu = false;

  int64_t N() const { return x[0]; }
  int64_t C() const { return x[1]; }
  int64_t P() const { return (x[2] + 2 * ph - dh * (R - 1) - 1) / sh + 1; }
  int64_t Q() const { return (x[3] + 2 * pw - dw * (S - 1) - 1) / sw + 1; }
  Shape w_shape() const { return Shape{K, C() / groups, R, S}; }
  Shape y_shape() const { return Shape{N(), K, P(), Q()}; }
  OpAttrs attrs() const {
    OpAttrs a;
    a.i = {sh, sw, ph, pw, dh, dw, groups, relu ? static_cast<int64_t>(Epilogue::Relu) : 0};
    return a;
  }
  std::string str() const {
    return "x " + x.str() + " K " + std::to_string(K) + " " + std::to_string(R) + "x" + std::to_string(S) + " stride " +
           std::to_string(sh) + "," + std::to_string(sw) + " pad " + std::to_string(ph) + "," + std::to_string(pw) +
           " dil " + std::to_string(dh) + "," + std::to_string(dw) + " groups " + std::to_string(groups) +
           (bias ? " bias" : "") + (relu ? " relu" : "");
  }
};

Tensor forward(const Cfg& c, const Tensor& x, const Tensor& w, const Tensor& b, const char* label = "test/conv") {
  Tensor y = Tensor::empty(c.y_shape(), x.dtype(), x.device());
  run_op(OpKind::Conv2d, {tv(x), tv(w), tv(b)}, {tv(y)}, c.attrs(), nullptr, label);
  return y;
}
Tensor backward_data(const Cfg& c, const Tensor& dy, const Tensor& w, const char* label = "test/conv") {
  Tensor dx = Tensor::empty(c.x, dy.dtype(), dy.device());
  run_op(OpKind::Conv2dBackwardData, {tv(dy), tv(w)}, {tv(dx)}, c.attrs(), nullptr, label);
  return dx;
}
Tensor backward_filter(const Cfg& c, const Tensor& x, const Tensor& dy, const char* label = "test/conv") {
  Tensor dw = Tensor::empty(c.w_shape(), x.dtype(), x.device());
  run_op(OpKind::Conv2dBackwardFilter, {tv(x), tv(dy)}, {tv(dw)}, c.attrs(), nullptr, label);
  return dw;
}
Tensor backward_bias(const Cfg& c, const Tensor& dy) {
  Tensor db = Tensor::empty(Shape{c.K}, dy.dtype(), dy.device());
  run_op(OpKind::Conv2dBackwardBias, {tv(dy)}, {tv(db)}, c.attrs(), nullptr, "test/conv");
  return db;
}

/// Direct (not im2col) forward in double, the test's own spec.
std::vector<double> naive_forward(const Cfg& c, const Tensor& x, const Tensor& w, const Tensor& b) {
  const auto xv = as_doubles(x), wv = as_doubles(w);
  const auto bv = b.defined() ? as_doubles(b) : std::vector<double>(c.K, 0.0);
  const int64_t N = c.N(), C = c.C(), H = c.x[2], W = c.x[3], P = c.P(), Q = c.Q(), Cg = C / c.groups,
                Kg = c.K / c.groups;
  std::vector<double> y(N * c.K * P * Q);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < c.K; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q) {
          double acc = bv[k];
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t r = 0; r < c.R; ++r)
              for (int64_t s = 0; s < c.S; ++s) {
                const int64_t ih = p * c.sh - c.ph + r * c.dh, iw = q * c.sw - c.pw + s * c.dw;
                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                acc += xv[((n * C + (k / Kg) * Cg + ci) * H + ih) * W + iw] * wv[((k * Cg + ci) * c.R + r) * c.S + s];
              }
          y[((n * c.K + k) * P + p) * Q + q] = c.relu ? std::max(acc, 0.0) : acc;
        }
  return y;
}

Tensor as_tensor(const std::vector<double>& v, const Shape& s) {
  return Tensor::from_vector(std::vector<float>(v.begin(), v.end()), s);
}

std::vector<double> random_weights(int64_t n, uint64_t seed) { return as_doubles(random_tensor(Shape{n}, seed)); }

/// Configurations that break naive kernels: 1x1, odd images, batch 1 and 3, groups, stride,
/// dilation, non-square filters and strides, depthwise, rows longer than a block.
std::vector<Cfg> odd_configs() {
  std::vector<Cfg> v;
  v.push_back({Shape{1, 3, 7, 5}, 5, 3, 3, 1, 1, 1, 1});           // 3x3 on 7x5, batch 1, C=3 K=5
  v.push_back({Shape{3, 3, 7, 5}, 5, 1, 1});                       // 1x1, batch 3
  v.push_back({Shape{3, 4, 9, 7}, 6, 3, 3, 2, 2, 1, 1, 1, 1, 2});  // stride 2, groups 2
  v.push_back({Shape{2, 2, 8, 8}, 3, 3, 3, 1, 1, 2, 2, 2, 2});     // dilation 2
  v.push_back({Shape{2, 6, 5, 5}, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6});  // depthwise
  v.push_back({Shape{1, 3, 6, 10}, 4, 2, 3, 2, 1, 0, 1});          // non-square filter and stride
  v.push_back({Shape{2, 3, 20, 17}, 5, 3, 3, 1, 1, 1, 1});         // 340 outputs per channel
  return v;
}

// ---------------------------------------------------------------------------------------------
// CPU reference

TEST(ConvCpu, ForwardMatchesDirectLoops) {
  for (Cfg c : odd_configs())
    for (int variant = 0; variant < 3; ++variant) {
      c.bias = variant >= 1;
      c.relu = variant == 2;
      SCOPED_TRACE(c.str());
      Tensor x = random_tensor(c.x, 1), w = random_tensor(c.w_shape(), 2);
      Tensor b = c.bias ? random_tensor(Shape{c.K}, 3) : Tensor();
      EXPECT_TRUE(all_close(forward(c, x, w, b), as_tensor(naive_forward(c, x, w, b), c.y_shape()), 1e-5, 1e-5));
    }
}

TEST(ConvCpu, GradientsMatchFiniteDifferences) {
  std::vector<Cfg> cfgs;
  cfgs.push_back({Shape{2, 3, 5, 4}, 4, 3, 3, 1, 1, 1, 1});           // padding
  cfgs.push_back({Shape{2, 4, 5, 6}, 4, 3, 3, 1, 1, 1, 0, 1, 1, 2});  // groups 2
  cfgs.push_back({Shape{1, 2, 7, 6}, 3, 3, 2, 2, 2, 1, 1});           // stride 2, non-square filter
  cfgs.push_back({Shape{1, 2, 7, 7}, 2, 3, 3, 1, 1, 2, 1, 2, 2});     // dilation 2
  for (Cfg c : cfgs) {
    c.bias = true;
    SCOPED_TRACE(c.str());
    Tensor x = random_tensor(c.x, 10), w = random_tensor(c.w_shape(), 11), b = random_tensor(Shape{c.K}, 12);
    const std::vector<double> wts = random_weights(c.y_shape().numel(), 13);
    Tensor dy = Tensor::from_vector(std::vector<float>(wts.begin(), wts.end()), c.y_shape());
    // loss = sum(wts * conv(x, w, b)), so dloss/dy = wts
    auto loss_x = [&](const Tensor& xx) { return weighted_sum(forward(c, xx, w, b), wts); };
    auto loss_w = [&](const Tensor& ww) { return weighted_sum(forward(c, x, ww, b), wts); };
    auto loss_b = [&](const Tensor& bb) { return weighted_sum(forward(c, x, w, bb), wts); };
    EXPECT_TRUE(gradient_close(backward_data(c, dy, w), numerical_gradient(loss_x, x.clone()))) << "dx";
    EXPECT_TRUE(gradient_close(backward_filter(c, x, dy), numerical_gradient(loss_w, w.clone()))) << "dw";
    EXPECT_TRUE(gradient_close(backward_bias(c, dy), numerical_gradient(loss_b, b.clone()))) << "db";
  }
}

TEST(ConvCpu, ReluEpilogueKeepsNaN) {
  Cfg c{Shape{1, 1, 3, 3}, 1, 1, 1};
  c.relu = true;
  Tensor x = Tensor::from_vector<float>({-1, 2, NAN, 4, -5, 6, 7, -8, 9}, c.x);
  Tensor w = Tensor::from_vector<float>({1}, c.w_shape());
  Tensor y = forward(c, x, w, Tensor());
  EXPECT_TRUE(all_close(y, Tensor::from_vector<float>({0, 2, NAN, 4, 0, 6, 7, 0, 9}, c.y_shape())));
}


TEST(ConvCpu, ThreadCountDoesNotChangeResults) {
  // Batches of 1, primes, and over 16 (the filter gradient's image blocks hold several images).
  std::vector<Cfg> cfgs;
  cfgs.push_back({Shape{1, 3, 7, 5}, 5, 3, 3, 1, 1, 1, 1});            // batch 1
  cfgs.push_back({Shape{7, 4, 9, 8}, 6, 3, 3, 1, 1, 1, 1});            // batch 7, padding
  cfgs.push_back({Shape{5, 4, 9, 7}, 6, 3, 3, 2, 2, 1, 1, 1, 1, 2});   // batch 5, stride 2, groups 2
  cfgs.push_back({Shape{37, 6, 6, 5}, 9, 3, 2, 1, 1, 1, 0, 1, 1, 3});  // batch 37, groups 3
  cfgs.push_back({Shape{3, 6, 5, 5}, 6, 3, 3, 1, 1, 1, 1, 1, 1, 6});   // depthwise, batch 3
  for (Cfg c : cfgs) {
    c.bias = c.relu = true;
    SCOPED_TRACE(c.str());
    Tensor x = random_tensor(c.x, 21), w = random_tensor(c.w_shape(), 22), b = random_tensor(Shape{c.K}, 23);
    Tensor dy = random_tensor(c.y_shape(), 24);
    auto run_all = [&](int threads) {
      ScopedCpuThreads scope(threads);
      return std::vector<Tensor>{forward(c, x, w, b), backward_data(c, dy, w), backward_filter(c, x, dy),
                                 backward_bias(c, dy)};
    };
    const char* names[] = {"y", "dx", "dw", "db"};
    const std::vector<Tensor> one = run_all(1);
    for (int threads : {2, 3, 4, 8, 3}) {  // 3 twice: run to run
      const std::vector<Tensor> many = run_all(threads);
      for (size_t i = 0; i < one.size(); ++i)
        EXPECT_TRUE(bitwise_equal(many[i], one[i])) << names[i] << " with " << threads << " threads vs 1";
    }
  }
}

/// Runs `fn`, expecting cudl::Error whose message names every string in `parts`.
template <typename Fn>
void expect_error(Fn fn, std::vector<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const auto& p : parts) EXPECT_NE(m.find(p), std::string::npos) << "missing '" << p << "' in: " << m;
  }
}

void invalid_geometry_errors(Device dev) {
  auto t = [&](Shape s) { return Tensor::zeros(s, DType::f32, dev); };
  Cfg c{Shape{2, 6, 5, 5}, 4, 3, 3};
  {  // channels not divisible by groups
    Cfg g = c;
    g.groups = 4;
    Tensor y = t(Shape{2, 4, 3, 3});
    expect_error(
        [&] {
          run_op(OpKind::Conv2d, {tv(t(g.x)), tv(t(Shape{4, 1, 3, 3}))}, {tv(y)}, g.attrs(), nullptr, "net/conv1");
        },
        {"Conv2d", "net/conv1", "(2, 6, 5, 5)", "not divisible by groups 4"});
  }
  {  // weight shape mismatch (C/groups)
    Tensor y = t(c.y_shape());
    expect_error(
        [&] {
          run_op(OpKind::Conv2d, {tv(t(c.x)), tv(t(Shape{4, 5, 3, 3}))}, {tv(y)}, c.attrs(), nullptr, "net/conv2");
        },
        {"Conv2d", "net/conv2", "weight shape mismatch", "(4, 5, 3, 3)", "(2, 6, 5, 5)"});
  }
  {  // output size <= 0: a 7x7 filter on a 5x5 image without padding
    Tensor y = t(Shape{2, 4, 1, 1});
    expect_error(
        [&] {
          run_op(OpKind::Conv2d, {tv(t(c.x)), tv(t(Shape{4, 6, 7, 7}))}, {tv(y)}, c.attrs(), nullptr, "net/conv3");
        },
        {"Conv2d", "net/conv3", "output size <= 0", "(4, 6, 7, 7)"});
  }
  {  // wrong y shape
    Tensor y = t(Shape{2, 4, 4, 3});
    expect_error(
        [&] {
          run_op(OpKind::Conv2d, {tv(t(c.x)), tv(t(c.w_shape()))}, {tv(y)}, c.attrs(), nullptr, "net/conv4");
        },
        {"Conv2d", "net/conv4", "(2, 4, 4, 3)", "(2, 4, 3, 3)"});
  }
  {  // bias of the wrong length
    Tensor y = t(c.y_shape());
    expect_error(
        [&] {
          run_op(OpKind::Conv2d, {tv(t(c.x)), tv(t(c.w_shape())), tv(t(Shape{5}))}, {tv(y)}, c.attrs(), nullptr,
                 "net/conv5");
        },
        {"Conv2d", "net/conv5", "bias", "(5,)"});
  }
  {  // invalid stride
    Cfg g = c;
    g.sh = 0;
    Tensor y = t(c.y_shape());
    expect_error(
        [&] {
          run_op(OpKind::Conv2d, {tv(t(c.x)), tv(t(c.w_shape()))}, {tv(y)}, g.attrs(), nullptr, "net/conv6");
        },
        {"Conv2d", "net/conv6", "stride"});
  }
  {  // backward data: dy does not match dx and w
    Tensor dx = t(c.x);
    expect_error(
        [&] {
          run_op(OpKind::Conv2dBackwardData, {tv(t(Shape{2, 4, 5, 5})), tv(t(c.w_shape()))}, {tv(dx)}, c.attrs(),
                 nullptr, "net/conv7");
        },
        {"Conv2dBackwardData", "net/conv7", "dy", "(2, 4, 5, 5)", "(2, 4, 3, 3)"});
  }
  {  // backward filter: 3-D x
    Tensor dw = t(c.w_shape());
    expect_error(
        [&] {
          run_op(OpKind::Conv2dBackwardFilter, {tv(t(Shape{6, 5, 5})), tv(t(c.y_shape()))}, {tv(dw)}, c.attrs(),
                 nullptr, "net/conv8");
        },
        {"Conv2dBackwardFilter", "net/conv8", "(6, 5, 5)"});
  }
  {  // backward bias: db length
    Tensor db = t(Shape{3});
    expect_error(
        [&] { run_op(OpKind::Conv2dBackwardBias, {tv(t(c.y_shape()))}, {tv(db)}, c.attrs(), nullptr, "net/conv9"); },
        {"Conv2dBackwardBias", "net/conv9", "(3,)", "(2, 4, 3, 3)"});
  }
  {  // wrong dtype
    Tensor y = t(c.y_shape());
    Tensor xi = Tensor::zeros(c.x, DType::i32, dev);
    expect_error(
        [&] {
          run_op(OpKind::Conv2d, {tv(xi), tv(t(c.w_shape()))}, {tv(y)}, c.attrs(), nullptr, "net/conv10");
        },
        {"Conv2d", "net/conv10", "f32", "(2, 6, 5, 5)"});
  }
}

TEST(ConvCpu, InvalidGeometryRaisesNamedErrors) { invalid_geometry_errors(Device::cpu()); }

// ---------------------------------------------------------------------------------------------
// CUDA vs CPU

TEST(ConvCuda, InvalidGeometryRaisesNamedErrors) {
  CUDL_REQUIRE_CUDA();
  invalid_geometry_errors(Device::cuda(0));
}

/// Every op of one configuration on CUDA vs the CPU reference; NaN in x exercises propagation.
void check_parity(Cfg c, bool with_nan) {
  const Device gpu = Device::cuda(0);
  Tensor x = random_tensor(c.x, 21), w = random_tensor(c.w_shape(), 22), b = random_tensor(Shape{c.K}, 23);
  if (with_nan) {
    std::vector<float> xv = x.to_vector<float>();
    xv[xv.size() / 3] = NAN;
    x = Tensor::from_vector(xv, c.x);
  }
  Tensor dy = random_tensor(c.y_shape(), 24);
  Tensor xg = x.to(gpu), wg = w.to(gpu), bg = b.to(gpu), dyg = dy.to(gpu);
  for (int variant = 0; variant < 4; ++variant) {  // plain, bias, bias + ReLU, ReLU
    c.bias = variant == 1 || variant == 2;
    c.relu = variant >= 2;
    SCOPED_TRACE(c.str());
    Tensor bb = c.bias ? b : Tensor(), bbg = c.bias ? bg : Tensor();
    EXPECT_TRUE(all_close(forward(c, xg, wg, bbg).to(Device::cpu()), forward(c, x, w, bb), 1e-4, 1e-4)) << "forward";
  }
  c.bias = c.relu = false;
  SCOPED_TRACE(c.str());
  EXPECT_TRUE(all_close(backward_data(c, dyg, wg).to(Device::cpu()), backward_data(c, dy, w), 1e-4, 1e-4)) << "dx";
  EXPECT_TRUE(all_close(backward_filter(c, xg, dyg).to(Device::cpu()), backward_filter(c, x, dy), 1e-4, 1e-4)) << "dw";
  EXPECT_TRUE(all_close(backward_bias(c, dyg).to(Device::cpu()), backward_bias(c, dy), 1e-4, 1e-4)) << "db";
}

TEST(ConvCuda, CudnnPathMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  const uint64_t before = cudnn_executions();
  for (const Cfg& c : odd_configs()) check_parity(c, false);
#if defined(CUDL_EMULATED)
  // 4 forward variants + backward data + backward filter per configuration ran through cuDNN.
  EXPECT_EQ(cudnn_executions() - before, odd_configs().size() * 6);
#endif
}

TEST(ConvCuda, Im2colEngineMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  EnvGuard env("CUDL_CONV_ENGINE", "im2col");
  const uint64_t before = cudnn_executions();
  for (const Cfg& c : odd_configs()) check_parity(c, false);
  EXPECT_EQ(cudnn_executions(), before) << "CUDL_CONV_ENGINE=im2col must not call cuDNN";
}

TEST(ConvCuda, NaNPropagatesOnBothEngines) {
  CUDL_REQUIRE_CUDA();
  Cfg c{Shape{2, 3, 6, 5}, 4, 3, 3, 1, 1, 1, 1};
  check_parity(c, true);
  EnvGuard env("CUDL_CONV_ENGINE", "im2col");
  check_parity(c, true);
}

TEST(ConvCuda, UnknownEngineNameIsAnError) {
  CUDL_REQUIRE_CUDA();
  EnvGuard env("CUDL_CONV_ENGINE", "winograd");
  Cfg c{Shape{1, 1, 3, 3}, 1, 1, 1};
  Tensor x = random_tensor(c.x, 1, -1, 1, Device::cuda(0)), w = random_tensor(c.w_shape(), 2, -1, 1, Device::cuda(0));
  expect_error([&] { forward(c, x, w, Tensor()); }, {"CUDL_CONV_ENGINE=winograd"});
}

TEST(ConvCuda, PlansAreBuiltOncePerShape) {
  CUDL_REQUIRE_CUDA();
  conv_clear_plan_cache();
  const Device gpu = Device::cuda(0);
  Cfg c{Shape{2, 3, 9, 6}, 4, 3, 3, 1, 1, 1, 1};
  Tensor x = random_tensor(c.x, 1, -1, 1, gpu), w = random_tensor(c.w_shape(), 2, -1, 1, gpu);
  Tensor dy = random_tensor(c.y_shape(), 3, -1, 1, gpu);
  EXPECT_EQ(conv_plans_built(), 0);
  forward(c, x, w, Tensor());
  EXPECT_EQ(conv_plans_built(), 1);
  forward(c, x, w, Tensor());
  forward(c, x, w, Tensor());
  EXPECT_EQ(conv_plans_built(), 1) << "same shape: the cached plan runs";
  backward_data(c, dy, w);
  backward_data(c, dy, w);
  EXPECT_EQ(conv_plans_built(), 2) << "another op: one more plan";
  Cfg c2 = c;
  c2.x = Shape{3, 3, 9, 6};
  Tensor x2 = random_tensor(c2.x, 4, -1, 1, gpu);
  forward(c2, x2, w, Tensor());
  EXPECT_EQ(conv_plans_built(), 3) << "another batch size: one more plan";
  c2.relu = true;
  forward(c2, x2, w, Tensor());
  forward(c2, x2, w, Tensor());
  EXPECT_EQ(conv_plans_built(), 4) << "the fused ReLU graph is its own plan";
}

TEST(ConvCuda, BackwardIsDeterministic) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda(0);
  Cfg c{Shape{3, 4, 9, 7}, 6, 3, 3, 2, 1, 1, 1, 1, 1, 2};
  Tensor x = random_tensor(c.x, 1, -1, 1, gpu), w = random_tensor(c.w_shape(), 2, -1, 1, gpu);
  Tensor dy = random_tensor(c.y_shape(), 3, -1, 1, gpu);
  for (const char* engine : {"cudnn", "im2col"}) {
    EnvGuard env("CUDL_CONV_ENGINE", engine);
    EXPECT_EQ(backward_filter(c, x, dy).to_vector<float>(), backward_filter(c, x, dy).to_vector<float>()) << engine;
    EXPECT_EQ(backward_data(c, dy, w).to_vector<float>(), backward_data(c, dy, w).to_vector<float>()) << engine;
    EXPECT_EQ(backward_bias(c, dy).to_vector<float>(), backward_bias(c, dy).to_vector<float>()) << engine;
  }
}

// ---------------------------------------------------------------------------------------------
// Conv2dTranspose: the data gradient of the Conv2d whose geometry Cfg describes (Cfg::x is the
// transposed convolution's output, Cfg::y_shape() its input), plus a bias per output channel.

/// The Cfg of a transposed convolution of `in` (N, C_in, H, W) to `filters` channels.
Cfg transpose_cfg(const Shape& in, int64_t filters, int64_t R, int64_t S, int64_t sh, int64_t sw, int64_t ph,
                  int64_t pw, int64_t dh, int64_t dw, int64_t groups, int64_t oph, int64_t opw) {
  const int64_t H = ops::conv_transpose_out(in[2], R, sh, ph, dh, oph);
  const int64_t W = ops::conv_transpose_out(in[3], S, sw, pw, dw, opw);
  Cfg c{Shape{in[0], filters, H, W}, in[1], R, S, sh, sw, ph, pw, dh, dw, groups};
  EXPECT_EQ(c.y_shape(), in) << c.str();
  return c;
}

std::vector<Cfg> transpose_configs() {
  std::vector<Cfg> v;
  v.push_back(transpose_cfg(Shape{2, 3, 4, 4}, 2, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0));  // DCGAN's 4x4 s2 p1: 4 -> 8
  v.push_back(transpose_cfg(Shape{1, 4, 3, 5}, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1));  // output padding 1
  v.push_back(transpose_cfg(Shape{3, 4, 5, 4}, 6, 3, 3, 1, 1, 0, 0, 1, 1, 2, 0, 0));  // groups 2, batch 3
  v.push_back(transpose_cfg(Shape{2, 2, 4, 5}, 3, 3, 3, 1, 1, 1, 1, 2, 2, 1, 0, 0));  // dilation 2
  v.push_back(transpose_cfg(Shape{1, 3, 5, 3}, 4, 2, 3, 3, 2, 0, 1, 1, 1, 1, 2, 1));  // non-square, stride 3, op 2
  v.push_back(transpose_cfg(Shape{3, 5, 7, 6}, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0));  // 1x1
  return v;
}

Tensor transpose_forward(const Cfg& c, const Tensor& x, const Tensor& w, const Tensor& b,
                         const char* label = "test/conv_t") {
  Tensor y = Tensor::empty(c.x, x.dtype(), x.device());  // y in x's storage type
  run_op(OpKind::Conv2dTranspose, {tv(x), tv(w), tv(b)}, {tv(y)}, c.attrs(), nullptr, label);
  return y;
}

/// Direct transposed convolution in double: every input pixel scatters w times itself.
std::vector<double> naive_transpose(const Cfg& c, const Tensor& x, const Tensor& w, const Tensor& b) {
  const auto xv = as_doubles(x), wv = as_doubles(w);
  const int64_t N = c.N(), Co = c.C(), H = c.x[2], W = c.x[3], Ci = c.K, P = c.P(), Q = c.Q();
  const int64_t Cig = Ci / c.groups, Cog = Co / c.groups;
  std::vector<double> y(N * Co * H * W, 0.0);
  if (b.defined()) {
    const auto bv = as_doubles(b);
    for (int64_t i = 0; i < N * Co * H * W; ++i) y[i] = bv[(i / (H * W)) % Co];
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t ci = 0; ci < Ci; ++ci)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t q = 0; q < Q; ++q)
          for (int64_t col = 0; col < Cog; ++col)
            for (int64_t r = 0; r < c.R; ++r)
              for (int64_t s = 0; s < c.S; ++s) {
                const int64_t oh = p * c.sh - c.ph + r * c.dh, ow = q * c.sw - c.pw + s * c.dw;
                if (oh < 0 || oh >= H || ow < 0 || ow >= W) continue;
                const int64_t co = (ci / Cig) * Cog + col;
                y[((n * Co + co) * H + oh) * W + ow] +=
                    xv[((n * Ci + ci) * P + p) * Q + q] * wv[((ci * Cog + col) * c.R + r) * c.S + s];
              }
  return y;
}

TEST(ConvTransposeCpu, ForwardMatchesDirectLoops) {
  for (Cfg c : transpose_configs())
    for (bool bias : {false, true}) {
      SCOPED_TRACE(c.str() + (bias ? " bias" : ""));
      Tensor x = random_tensor(c.y_shape(), 1), w = random_tensor(c.w_shape(), 2);
      Tensor b = bias ? random_tensor(Shape{c.C()}, 3) : Tensor();
      EXPECT_TRUE(all_close(transpose_forward(c, x, w, b), as_tensor(naive_transpose(c, x, w, b), c.x), 1e-5, 1e-5));
    }
}

// The gradient rule (graph/autodiff.cpp): dx = Conv2d(dy, w), dw = Conv2dBackwardFilter(dy, x),
// db = Conv2dBackwardBias(dy), all with the transposed convolution's own attributes.
TEST(ConvTransposeCpu, GradientRuleMatchesFiniteDifferences) {
  for (const Cfg& c : transpose_configs()) {
    SCOPED_TRACE(c.str());
    Tensor x = random_tensor(c.y_shape(), 10), w = random_tensor(c.w_shape(), 11), b = random_tensor(Shape{c.C()}, 12);
    const std::vector<double> wts = random_weights(c.x.numel(), 13);
    Tensor dy = Tensor::from_vector(std::vector<float>(wts.begin(), wts.end()), c.x);
    auto loss_x = [&](const Tensor& xx) { return weighted_sum(transpose_forward(c, xx, w, b), wts); };
    auto loss_w = [&](const Tensor& ww) { return weighted_sum(transpose_forward(c, x, ww, b), wts); };
    auto loss_b = [&](const Tensor& bb) { return weighted_sum(transpose_forward(c, x, w, bb), wts); };
    EXPECT_TRUE(gradient_close(forward(c, dy, w, Tensor()), numerical_gradient(loss_x, x.clone()))) << "dx";
    Tensor dw = Tensor::empty(c.w_shape(), DType::f32, Device::cpu());
    run_op(OpKind::Conv2dBackwardFilter, {tv(dy), tv(x)}, {tv(dw)}, c.attrs(), nullptr, "test/conv_t");
    EXPECT_TRUE(gradient_close(dw, numerical_gradient(loss_w, w.clone()))) << "dw";
    Tensor db = Tensor::empty(Shape{c.C()}, DType::f32, Device::cpu());
    run_op(OpKind::Conv2dBackwardBias, {tv(dy)}, {tv(db)}, c.attrs(), nullptr, "test/conv_t");
    EXPECT_TRUE(gradient_close(db, numerical_gradient(loss_b, b.clone()))) << "db";
  }
}

void transpose_invalid_calls(Device d) {
  Cfg c = transpose_cfg(Shape{2, 3, 4, 4}, 2, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0);
  Tensor x = random_tensor(c.y_shape(), 1, -1, 1, d), w = random_tensor(c.w_shape(), 2, -1, 1, d);
  Tensor y = Tensor::empty(c.x, DType::f32, d);
  auto msg = [&](const Tensor& xx, const Tensor& ww, const Tensor& bb, const Tensor& yy, const OpAttrs& a) {
    return error_message(
        [&] { run_op(OpKind::Conv2dTranspose, {tv(xx), tv(ww), tv(bb)}, {tv(yy)}, a, nullptr, "gen/up1"); });
  };
  // y (2, 2, 10, 10) would need output padding 2 >= stride 2
  Tensor too_big = Tensor::empty(Shape{2, 2, 10, 10}, DType::f32, d);
  std::string m = msg(x, w, Tensor(), too_big, c.attrs());
  EXPECT_NE(m.find("Conv2dTranspose (gen/up1): x has shape (2, 3, 4, 4) but y (2, 2, 10, 10)"), std::string::npos) << m;
  EXPECT_NE(m.find("output padding must be in [0, stride)"), std::string::npos) << m;
  m = msg(x, w, Tensor::empty(Shape{3}, DType::f32, d), y, c.attrs());
  EXPECT_NE(m.find("bias has shape (3,), expected (2,)"), std::string::npos) << m;
  Cfg relu = c;
  relu.relu = true;
  m = msg(x, w, Tensor(), y, relu.attrs());
  EXPECT_NE(m.find("epilogue must be None"), std::string::npos) << m;
  m = msg(x, random_tensor(Shape{3, 3, 4, 4}, 3, -1, 1, d), Tensor(), y, c.attrs());
  EXPECT_NE(m.find("weight shape mismatch"), std::string::npos) << m;
}

TEST(ConvTransposeCpu, InvalidCallsRaiseNamedErrors) { transpose_invalid_calls(Device::cpu()); }

TEST(ConvTransposeCuda, InvalidCallsRaiseNamedErrors) {
  CUDL_REQUIRE_CUDA();
  transpose_invalid_calls(Device::cuda(0));
}

/// Forward (with and without bias) on CUDA vs the CPU reference, NaN propagation included.
void check_transpose_parity(const Cfg& c, bool with_nan) {
  const Device gpu = Device::cuda(0);
  Tensor x = random_tensor(c.y_shape(), 31), w = random_tensor(c.w_shape(), 32), b = random_tensor(Shape{c.C()}, 33);
  if (with_nan) {
    std::vector<float> xv = x.to_vector<float>();
    xv[xv.size() / 3] = NAN;
    x = Tensor::from_vector(xv, c.y_shape());
  }
  for (bool bias : {false, true}) {
    SCOPED_TRACE(c.str() + (bias ? " bias" : ""));
    Tensor bb = bias ? b : Tensor(), bbg = bias ? b.to(gpu) : Tensor();
    EXPECT_TRUE(all_close(transpose_forward(c, x.to(gpu), w.to(gpu), bbg).to(Device::cpu()),
                          transpose_forward(c, x, w, bb), 1e-4, 1e-4));
  }
}

TEST(ConvTransposeCuda, MatchesCpuOnBothEngines) {
  CUDL_REQUIRE_CUDA();
  for (const Cfg& c : transpose_configs()) check_transpose_parity(c, false);
  check_transpose_parity(transpose_configs()[0], true);
  EnvGuard env("CUDL_CONV_ENGINE", "im2col");
  const uint64_t before = cudnn_executions();
  for (const Cfg& c : transpose_configs()) check_transpose_parity(c, false);
  check_transpose_parity(transpose_configs()[1], true);
  EXPECT_EQ(cudnn_executions(), before) << "CUDL_CONV_ENGINE=im2col must not call cuDNN";
}

#if defined(CUDL_EMULATED)
TEST(ConvTransposeCuda, RunsAsOneCudnnBackwardDataPlan) {
  CUDL_REQUIRE_CUDA();
  conv_clear_plan_cache();
  const Device gpu = Device::cuda(0);
  const Cfg c = transpose_configs()[0];
  Tensor x = random_tensor(c.y_shape(), 1, -1, 1, gpu), w = random_tensor(c.w_shape(), 2, -1, 1, gpu);
  Tensor dy = random_tensor(c.y_shape(), 3, -1, 1, gpu);
  const uint64_t execs = cudnn_executions();
  transpose_forward(c, x, w, Tensor());
  EXPECT_EQ(cudnn_executions(), execs + 1);
  backward_data(c, dy, w);  // the same problem as Conv2dBackwardData: the same cached plan
  EXPECT_EQ(conv_plans_built(), 1);
}
#endif  // CUDL_EMULATED

#if defined(CUDL_EMULATED)

/// Restores the emulated cuDNN's hooks.
struct EmuCudnnGuard {
  ~EmuCudnnGuard() {
    cudl_emu::cudnn_set_no_engines(false);
    cudl_emu::cudnn_set_fusion_supported(true);
  }
};

/// For one test: an empty plan cache and an emulated cuDNN without fused graphs (hooks restored after).
struct WithoutFusion {
  EmuCudnnGuard guard;
  WithoutFusion() {
    conv_clear_plan_cache();
    cudl_emu::cudnn_set_fusion_supported(false);
  }
};

TEST(ConvCuda, FusedBiasReluRunsInOneCudnnGraph) {
  CUDL_REQUIRE_CUDA();
  conv_clear_plan_cache();
  const Device gpu = Device::cuda(0);
  Cfg c{Shape{2, 3, 7, 5}, 5, 3, 3, 1, 1, 1, 1};
  c.bias = c.relu = true;
  Tensor x = random_tensor(c.x, 1), w = random_tensor(c.w_shape(), 2), b = random_tensor(Shape{c.K}, 3);
  const uint64_t launches = cudl_emu::counters().kernel_launches;
  Tensor y = forward(c, x.to(gpu), w.to(gpu), b.to(gpu)).to(Device::cpu());
  EXPECT_TRUE(cudl_emu::cudnn_counters().last_fused);
  EXPECT_EQ(cudl_emu::counters().kernel_launches, launches) << "no separate bias/ReLU kernel";
  EXPECT_TRUE(all_close(y, forward(c, x, w, b), 1e-4, 1e-4));
}

TEST(ConvCuda, WithoutFusionCudnnConvThenEpilogueKernel) {
  CUDL_REQUIRE_CUDA();
  WithoutFusion no_fusion;
  const Device gpu = Device::cuda(0);
  Cfg c{Shape{2, 3, 7, 6}, 5, 3, 3, 1, 1, 1, 1};
  c.bias = c.relu = true;
  Tensor x = random_tensor(c.x, 1), w = random_tensor(c.w_shape(), 2), b = random_tensor(Shape{c.K}, 3);
  ::testing::internal::CaptureStderr();
  const uint64_t execs = cudnn_executions();
  Tensor y = forward(c, x.to(gpu), w.to(gpu), b.to(gpu), "net/fuse").to(Device::cpu());
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(cudnn_executions(), execs + 1) << "the convolution still ran in cuDNN";
  EXPECT_FALSE(cudl_emu::cudnn_counters().last_fused);
  EXPECT_NE(log.find("net/fuse"), std::string::npos) << log;
  EXPECT_NE(log.find("no fused bias/ReLU plan"), std::string::npos) << log;
  EXPECT_TRUE(all_close(y, forward(c, x, w, b), 1e-4, 1e-4));
}

TEST(ConvCuda, FallsBackToIm2colWhenCudnnHasNoPlanAndLogsOnce) {
  CUDL_REQUIRE_CUDA();
  EmuCudnnGuard guard;
  conv_clear_plan_cache();
  cudl_emu::cudnn_set_no_engines(true);
  const Device gpu = Device::cuda(0);
  Cfg c{Shape{3, 2, 7, 5}, 4, 3, 3, 2, 1, 1, 1, 1, 1, 2};
  c.bias = true;
  Tensor x = random_tensor(c.x, 1), w = random_tensor(c.w_shape(), 2), b = random_tensor(Shape{c.K}, 3);
  Tensor dy = random_tensor(c.y_shape(), 4);
  Tensor xg = x.to(gpu), wg = w.to(gpu), bg = b.to(gpu), dyg = dy.to(gpu);
  const uint64_t execs = cudnn_executions();

  ::testing::internal::CaptureStderr();
  Tensor y = forward(c, xg, wg, bg, "net/conv1").to(Device::cpu());
  Tensor dx = backward_data(c, dyg, wg, "net/conv1").to(Device::cpu());
  Tensor dw = backward_filter(c, xg, dyg, "net/conv1").to(Device::cpu());
  const std::string first = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(first.find("cudl: conv2d net/conv1 x (3, 2, 7, 5): cuDNN has no plan (heuristics returned no engine "
                       "config); using the im2col engine"),
            std::string::npos)
      << first;
  EXPECT_NE(first.find("conv2d backward-data net/conv1"), std::string::npos) << first;
  EXPECT_NE(first.find("conv2d backward-filter net/conv1"), std::string::npos) << first;
  EXPECT_EQ(cudnn_executions(), execs) << "nothing ran in cuDNN";
  EXPECT_TRUE(all_close(y, forward(c, x, w, b), 1e-4, 1e-4));
  EXPECT_TRUE(all_close(dx, backward_data(c, dy, w), 1e-4, 1e-4));
  EXPECT_TRUE(all_close(dw, backward_filter(c, x, dy), 1e-4, 1e-4));

  ::testing::internal::CaptureStderr();
  forward(c, xg, wg, bg, "net/conv1");
  backward_data(c, dyg, wg, "net/conv1");
  const std::string second = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(second.find("cuDNN has no plan"), std::string::npos) << "logged once per shape, got: " << second;
}

TEST(ConvCuda, Tf32ChoosesTheTensorCoreEngineOnlyWhenAllowed) {
  CUDL_REQUIRE_CUDA();
#if defined(CUDL_EMULATED)
  conv_clear_plan_cache();
  const Cfg c{Shape{2, 3, 7, 6}, 4, 3, 3, 1, 1, 1, 1};
  Tensor x = random_tensor(c.x, 41, -1, 1, Device::cuda(0)), dy = random_tensor(c.y_shape(), 43, -1, 1, Device::cuda(0));
  // The emulated heuristics rank the tensor-core engine (global index 2 for backward-filter, after a
  // nondeterministic and a note-free one) first: its notes keep it out by default.
  backward_filter(c, x, dy);
  EXPECT_EQ(cudl_emu::cudnn_counters().last_engine, 1);
  EnvGuard env("CUDL_ALLOW_TF32", "1");
  backward_filter(c, x, dy);
  EXPECT_EQ(cudl_emu::cudnn_counters().last_engine, 2);
#else
  GTEST_SKIP() << "which engine ran is known only to the emulated cuDNN";
#endif
}

TEST(ConvCuda, BackwardSkipsNondeterministicEngines) {
  CUDL_REQUIRE_CUDA();
  conv_clear_plan_cache();
  const Device gpu = Device::cuda(0);
  Cfg c{Shape{2, 3, 6, 6}, 4, 3, 3, 1, 1, 1, 1};
  Tensor x = random_tensor(c.x, 1, -1, 1, gpu), dy = random_tensor(c.y_shape(), 2, -1, 1, gpu);
  backward_filter(c, x, dy);
  // The emulated heuristics list a NONDETERMINISTIC engine (global index 0) first.
  EXPECT_EQ(cudl_emu::cudnn_counters().last_engine, 1);
}

#endif  // CUDL_EMULATED

/// TF32 results against the CPU reference on TF32-rounded operands: the emulator rounds as
/// cvt.rna.tf32.f32 does (tests/emu), so they agree to fp32 rounding; a real GPU's kernels may convert
/// differently (not documented), so on a device the bound is the TF32 error itself.
#if defined(CUDL_EMULATED)
constexpr double kTf32Tol = 1e-5;
#else
constexpr double kTf32Tol = 3e-3;
#endif

/// Forward, backward-data and backward-filter of one configuration on CUDA with TF32 allowed
/// (CUDL_ALLOW_TF32=1) against the CPU reference on TF32-rounded operands, and off by default.
void check_tf32(const Cfg& c) {
  const Device gpu = Device::cuda(0);
  Tensor x = random_tensor(c.x, 41), w = random_tensor(c.w_shape(), 42), dy = random_tensor(c.y_shape(), 43);
  Tensor xg = x.to(gpu), wg = w.to(gpu), dyg = dy.to(gpu);
  const Tensor rx = tf32_rounded(x), rw = tf32_rounded(w), rdy = tf32_rounded(dy);
  const Tensor fwd32 = forward(c, rx, rw, Tensor()), dx32 = backward_data(c, rdy, rw), dw32 = backward_filter(c, rx, rdy);
  const Tensor fwd = forward(c, x, w, Tensor()), dx = backward_data(c, dy, w), dw = backward_filter(c, x, dy);
  ASSERT_GT(max_abs_diff(fwd, fwd32), 1e-4) << "the data must tell TF32 from fp32";
  EXPECT_TRUE(all_close(forward(c, xg, wg, Tensor()).to(Device::cpu()), fwd, 1e-5, 1e-5)) << "default: fp32";
  EXPECT_TRUE(all_close(backward_filter(c, xg, dyg).to(Device::cpu()), dw, 1e-5, 1e-5)) << "default: fp32";
  EnvGuard env("CUDL_ALLOW_TF32", "1");
  EXPECT_TRUE(all_close(forward(c, xg, wg, Tensor()).to(Device::cpu()), fwd32, kTf32Tol, kTf32Tol)) << "forward";
  EXPECT_TRUE(all_close(backward_data(c, dyg, wg).to(Device::cpu()), dx32, kTf32Tol, kTf32Tol)) << "dx";
  EXPECT_TRUE(all_close(backward_filter(c, xg, dyg).to(Device::cpu()), dw32, kTf32Tol, kTf32Tol)) << "dw";
  EXPECT_GT(max_abs_diff(backward_data(c, dyg, wg), dx), 1e-4) << "dx in fp32";
}

TEST(ConvCuda, Tf32OnRequestOnBothEngines) {
  CUDL_REQUIRE_CUDA();
  conv_clear_plan_cache();
  const Cfg c{Shape{2, 3, 7, 6}, 4, 3, 3, 1, 1, 1, 1};
  {
    SCOPED_TRACE("cudnn");
    check_tf32(c);
  }
  SCOPED_TRACE("im2col");
  EnvGuard engine("CUDL_CONV_ENGINE", "im2col");
  const uint64_t before = cudnn_executions();
  check_tf32(c);
  EXPECT_EQ(cudnn_executions(), before);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// 16-bit storage (bf16, f16): fp32 sums, one rounding per output, on both engines. Tolerance: one
// 16-bit epsilon times the sum of |terms| of each output (the op run on |inputs|), and at least 95%
// of the elements bitwise equal to the CPU reference (storage_sum_close).

namespace {

/// Every conv op of one configuration in `st` on CUDA vs the CPU reference in `st`.
void check_parity_16(Cfg c, DType st) {
  const Device gpu = Device::cuda(0);
  SCOPED_TRACE(dtype_name(st));
  // Uniform inputs rounded to the storage type: every product and sum needs rounding.
  Tensor x = to_storage(random_tensor(c.x, 31), st), w = to_storage(random_tensor(c.w_shape(), 32), st);
  Tensor b = to_storage(random_tensor(Shape{c.K}, 33), st), dy = to_storage(random_tensor(c.y_shape(), 34), st);
  Tensor xg = x.to(gpu), wg = w.to(gpu), bg = b.to(gpu), dyg = dy.to(gpu);
  const Tensor ax = abs_of(x), aw = abs_of(w), ab = abs_of(b), ady = abs_of(dy);
  for (int variant = 0; variant < 4; ++variant) {  // plain, bias, bias + ReLU, ReLU
    c.bias = variant == 1 || variant == 2;
    c.relu = variant >= 2;
    SCOPED_TRACE(c.str());
    Tensor bb = c.bias ? b : Tensor(), bbg = c.bias ? bg : Tensor(), abb = c.bias ? ab : Tensor();
    Tensor y = forward(c, xg, wg, bbg).to(Device::cpu());
    ASSERT_EQ(y.dtype(), st);
    EXPECT_TRUE(storage_sum_close(y, forward(c, x, w, bb), forward(c, ax, aw, abb))) << "forward";
  }
  c.bias = c.relu = false;
  SCOPED_TRACE(c.str());
  EXPECT_TRUE(storage_sum_close(backward_data(c, dyg, wg).to(Device::cpu()), backward_data(c, dy, w),
                                backward_data(c, ady, aw)))
      << "dx";
  EXPECT_TRUE(storage_sum_close(backward_filter(c, xg, dyg).to(Device::cpu()), backward_filter(c, x, dy),
                                backward_filter(c, ax, ady)))
      << "dw";
  EXPECT_TRUE(storage_sum_close(backward_bias(c, dyg).to(Device::cpu()), backward_bias(c, dy), backward_bias(c, ady)))
      << "db";
}

}  // namespace

TEST(Conv16Cuda, CudnnPathMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  for (DType st : {DType::bf16, DType::f16}) {
    const uint64_t before = cudnn_executions();
    for (const Cfg& c : odd_configs()) check_parity_16(c, st);
#if defined(CUDL_EMULATED)
    // 4 forward variants (bias fused into the graph) + backward data + backward filter per configuration.
    EXPECT_EQ(cudnn_executions() - before, odd_configs().size() * 6) << dtype_name(st);
#endif
  }
}

TEST(Conv16Cuda, Im2colEngineMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  EnvGuard env("CUDL_CONV_ENGINE", "im2col");
  for (DType st : {DType::bf16, DType::f16}) {
    const uint64_t before = cudnn_executions();
    for (const Cfg& c : odd_configs()) check_parity_16(c, st);
    EXPECT_EQ(cudnn_executions(), before) << "CUDL_CONV_ENGINE=im2col must not call cuDNN";
  }
}

TEST(Conv16Cuda, NaNPropagates) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda(0);
  Cfg c{Shape{2, 3, 6, 5}, 4, 3, 3, 1, 1, 1, 1};
  c.bias = c.relu = true;
  std::vector<float> xv = random_tensor(c.x, 1).to_vector<float>();
  xv[7] = NAN;
  Tensor x = to_storage(Tensor::from_vector(xv, c.x), DType::bf16);
  Tensor w = to_storage(random_tensor(c.w_shape(), 2), DType::bf16),
         b = to_storage(random_tensor(Shape{c.K}, 3), DType::bf16);
  for (const char* engine : {"cudnn", "im2col"}) {
    EnvGuard env("CUDL_CONV_ENGINE", engine);
    EXPECT_TRUE(storage_sum_close(forward(c, x.to(gpu), w.to(gpu), b.to(gpu)).to(Device::cpu()), forward(c, x, w, b),
                                  forward(c, abs_of(x), abs_of(w), abs_of(b))))
        << engine;
  }
}

#if defined(CUDL_EMULATED)
TEST(Conv16Cuda, WithoutFusedPlanABiasRunsOnTheIm2colEngine) {
  CUDL_REQUIRE_CUDA();
  WithoutFusion no_fusion;
  const Device gpu = Device::cuda(0);
  Cfg c{Shape{2, 3, 7, 6}, 5, 3, 3, 1, 1, 1, 1};
  const DType st = DType::bf16;
  Tensor x = to_storage(random_tensor(c.x, 1), st), w = to_storage(random_tensor(c.w_shape(), 2), st);
  Tensor b = to_storage(random_tensor(Shape{c.K}, 3), st);
  for (bool relu : {false, true}) {
    c.bias = true, c.relu = relu;
    SCOPED_TRACE(c.str());
    ::testing::internal::CaptureStderr();
    const uint64_t execs = cudnn_executions();
    Tensor y = forward(c, x.to(gpu), w.to(gpu), b.to(gpu), "net/conv16").to(Device::cpu());
    const std::string log = ::testing::internal::GetCapturedStderr();
    // cuDNN's conv rounded to bf16 and then a bias kernel would round twice.
    EXPECT_EQ(cudnn_executions(), execs) << "no unfused cuDNN conv for a 16-bit conv with bias";
    EXPECT_NE(log.find("net/conv16"), std::string::npos) << log;
    EXPECT_NE(log.find("using the im2col engine"), std::string::npos) << log;
    EXPECT_TRUE(storage_sum_close(y, forward(c, x, w, b), forward(c, abs_of(x), abs_of(w), abs_of(b))));
  }
  // ReLU alone commutes with the rounding: cuDNN's conv, then the ReLU kernel on bf16.
  c.bias = false, c.relu = true;
  const uint64_t execs = cudnn_executions();
  ::testing::internal::CaptureStderr();
  Tensor y = forward(c, x.to(gpu), w.to(gpu), Tensor()).to(Device::cpu());
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(cudnn_executions(), execs + 1);
  EXPECT_TRUE(storage_sum_close(y, forward(c, x, w, Tensor()), forward(c, abs_of(x), abs_of(w), Tensor())));
}

TEST(Conv16Cuda, TensorCoreEngineRunsFor16BitStorage) {
  CUDL_REQUIRE_CUDA();
  conv_clear_plan_cache();
  const Device gpu = Device::cuda(0);
  Cfg c{Shape{2, 3, 7, 5}, 4, 3, 3, 1, 1, 1, 1};
  Tensor x = random_tensor(c.x, 1), w = random_tensor(c.w_shape(), 2);
  forward(c, x.to(gpu), w.to(gpu), Tensor());
  const int64_t f32_engine = cudl_emu::cudnn_counters().last_engine;
  forward(c, to_storage(x, DType::bf16).to(gpu), to_storage(w, DType::bf16).to(gpu), Tensor());
  const int64_t bf16_engine = cudl_emu::cudnn_counters().last_engine;
  // The emulated forward offers engine 0 (plain) and 1 (tensor cores: TF32 for f32, exact for 16-bit).
  EXPECT_EQ(f32_engine, 0) << "f32 without TF32 skips the tensor-core engine";
  EXPECT_EQ(bf16_engine, 1) << "16-bit operands take the tensor-core engine (no down-conversion)";
}
#endif

TEST(Conv16Cuda, PlanKeyDistinguishesStorageTypes) {
  CUDL_REQUIRE_CUDA();
  // One shape and op pair in three storage types: three plans per op, each reused.
  const Cfg c{Shape{2, 3, 9, 6}, 4, 3, 3, 1, 1, 1, 1};
  const Tensor x = random_tensor(c.x, 1), w = random_tensor(c.w_shape(), 2), dy = random_tensor(c.y_shape(), 3);
  conv_clear_plan_cache();
  int64_t expected = 0;
  for (DType st : {DType::f32, DType::bf16, DType::f16}) {
    const Device gpu = Device::cuda(0);
    Tensor xs = to_storage(x, st).to(gpu), ws = to_storage(w, st).to(gpu), dys = to_storage(dy, st).to(gpu);
    for (int rep = 0; rep < 2; ++rep) {
      Tensor y = forward(c, xs, ws, Tensor());
      Tensor dw = backward_filter(c, xs, dys);
      EXPECT_EQ(y.dtype(), st);
      EXPECT_EQ(dw.dtype(), st);
    }
    expected += 2;
    EXPECT_EQ(conv_plans_built(), expected) << dtype_name(st) << ": one plan per op and storage type, reused";
  }
}

TEST(Conv16Cuda, MixedStorageTypesAreRejected) {
  CUDL_REQUIRE_CUDA();
  for (Device d : {Device::cpu(), Device::cuda(0)}) {
    Cfg c{Shape{1, 2, 4, 4}, 3, 3, 3};
    Tensor x = to_storage(random_tensor(c.x, 1), DType::bf16).to(d);
    Tensor w16 = to_storage(random_tensor(c.w_shape(), 2), DType::f16).to(d);
    Tensor w32 = random_tensor(c.w_shape(), 2).to(d);
    expect_error([&] { forward(c, x, w16, Tensor()); }, {"Conv2d", "f16", "bf16", "one storage type per call"});
    expect_error([&] { forward(c, x, w32, Tensor()); }, {"Conv2d", "f32", "bf16"});
    // Conv2dTranspose: x, w, bias and y in one storage type.
    Tensor y = Tensor::empty(c.x, DType::bf16, d), xt = to_storage(random_tensor(c.y_shape(), 3), DType::bf16).to(d);
    const Tensor wt32 = random_tensor(Shape{c.K, c.C(), c.R, c.S}, 4);
    Tensor wt = to_storage(wt32, DType::f16).to(d), wb = to_storage(wt32, DType::bf16).to(d);
    Tensor bt = random_tensor(Shape{c.C()}, 5).to(d);
    expect_error([&] { run_op(OpKind::Conv2dTranspose, {tv(xt), tv(wt)}, {tv(y)}, c.attrs(), nullptr, "t"); },
                 {"Conv2dTranspose", "f16", "bf16", "one storage type per call"});
    expect_error([&] { run_op(OpKind::Conv2dTranspose, {tv(xt), tv(wb), tv(bt)}, {tv(y)},
                              c.attrs(), nullptr, "t"); },
                 {"Conv2dTranspose", "input 2 (2,) has dtype f32 but input 0 has bf16"});
  }
}

// Conv2dTranspose in 16 bits: without a bias one cuDNN backward-data plan in the storage type (or the
// im2col engine); with a bias the im2col engine, which adds it to the fp32 sums before the one
// rounding. Both match the CPU reference (the f32 op on the widened values, rounded once).
TEST(Conv16Cuda, TransposeMatchesCpuOnBothEngines) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda(0);
  auto check = [&](bool im2col) {
    for (DType st : {DType::bf16, DType::f16})
      for (const Cfg& c : transpose_configs())
        for (bool bias : {false, true}) {
          SCOPED_TRACE(c.str() + " " + dtype_name(st) + (bias ? " bias" : "") + (im2col ? " im2col" : " cudnn"));
          Tensor x = to_storage(random_tensor(c.y_shape(), 41), st), w = to_storage(random_tensor(c.w_shape(), 42), st);
          Tensor b = bias ? to_storage(random_tensor(Shape{c.C()}, 43), st) : Tensor();
          const Tensor y = transpose_forward(c, x.to(gpu), w.to(gpu), bias ? b.to(gpu) : Tensor()).to(Device::cpu());
          ASSERT_EQ(y.dtype(), st);
          EXPECT_TRUE(storage_sum_close(y, transpose_forward(c, x, w, b),
                                        transpose_forward(c, abs_of(x), abs_of(w), bias ? abs_of(b) : Tensor())));
        }
  };
  check(false);
  EnvGuard env("CUDL_CONV_ENGINE", "im2col");
  check(true);
}

#if defined(CUDL_EMULATED)
// Which engine a 16-bit Conv2dTranspose takes: cuDNN's backward-data plan without a bias, the im2col
// engine with one (cuDNN would round y before the bias kernel rounds it again).
TEST(Conv16Cuda, TransposeWithBiasRunsOnTheIm2colEngine) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda(0);
  const Cfg c = transpose_configs()[0];
  for (DType st : {DType::bf16, DType::f16})
    for (bool bias : {false, true}) {
      SCOPED_TRACE(std::string(dtype_name(st)) + (bias ? " bias" : ""));
      Tensor x = to_storage(random_tensor(c.y_shape(), 41), st).to(gpu), w = to_storage(random_tensor(c.w_shape(), 42), st).to(gpu);
      Tensor b = bias ? to_storage(random_tensor(Shape{c.C()}, 43), st).to(gpu) : Tensor();
      const uint64_t before = cudnn_executions();
      transpose_forward(c, x, w, b);
      EXPECT_EQ(cudnn_executions() - before, bias ? 0u : 1u);
    }
}
#endif  // CUDL_EMULATED

/// The comparison itself: a result truncated to 16 bits instead of rounded to nearest even, as a
/// kernel that skipped the rounding would store, fails it.
TEST(Conv16Cuda, ComparisonCatchesTruncation) {
  Cfg c{Shape{2, 3, 7, 5}, 4, 3, 3, 1, 1, 1, 1};
  for (DType st : {DType::bf16, DType::f16}) {
    Tensor x = to_storage(random_tensor(c.x, 1), st), w = to_storage(random_tensor(c.w_shape(), 2), st);
    const Tensor wide = forward(c, widened(x), widened(w), Tensor());  // the fp32 sums
    std::vector<float> v = wide.to_vector<float>();
    for (float& f : v) {  // drop the bits below the 16-bit mantissa (toward zero)
      const int drop = st == DType::bf16 ? 16 : 13;
      uint32_t u;
      std::memcpy(&u, &f, 4);
      u &= ~((1u << drop) - 1u);
      std::memcpy(&f, &u, 4);
    }
    const Tensor truncated = to_storage(Tensor::from_vector(v, wide.shape()), st);
    const Tensor reference = forward(c, x, w, Tensor());
    EXPECT_TRUE(storage_sum_close(reference, reference, forward(c, abs_of(x), abs_of(w), Tensor())));
    EXPECT_FALSE(storage_sum_close(truncated, reference, forward(c, abs_of(x), abs_of(w), Tensor())))
        << dtype_name(st) << ": truncation must not pass";
  }
}
