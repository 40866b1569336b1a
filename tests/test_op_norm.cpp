// tests/test_op_norm.cpp — batch norm and layer norm: CPU reference vs finite differences and
// hand-computed running statistics, CUDA vs CPU for forward, backward and running-stat updates.
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cpu/parallel.hpp"
#include "ops/norm.hpp"
#if CUDL_WITH_CUDA
#include "kernels/norm.cuh"
#endif
#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif
#include "testing.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

const Device kCpu = Device::cpu();

struct BnOut {
  Tensor y, mean, invstd, running_mean, running_var;
};

struct BnArgs {
  double eps = 1e-5, momentum = 0.1;
  bool affine = true, running = true, saved = true;
};

/// BatchNormTrain on `device`; returns host copies (running stats after the in-place update).
BnOut bn_train(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rm, const Tensor& rv,
               Device device, const BnArgs& a = {}) {
  const int64_t c = x.shape()[1];
  Tensor dx = x.to(device), dg = a.affine ? gamma.to(device) : Tensor(), db = a.affine ? beta.to(device) : Tensor();
  Tensor drm = a.running ? rm.to(device) : Tensor(), drv = a.running ? rv.to(device) : Tensor();
  Tensor y = Tensor::full(x.shape(), -7.0, x.dtype(), device);
  Tensor mean = a.saved ? Tensor::full(Shape{c}, -7.0, DType::f32, device) : Tensor();
  Tensor invstd = a.saved ? Tensor::full(Shape{c}, -7.0, DType::f32, device) : Tensor();
  OpAttrs attrs;
  attrs.f[0] = a.eps;
  attrs.f[1] = a.momentum;
  run_op(OpKind::BatchNormTrain, {tv(dx), tv(dg), tv(db), tv(drm), tv(drv)}, {tv(y), tv(mean), tv(invstd)}, attrs,
         nullptr, "test/bn");
  BnOut r;
  r.y = y.to(kCpu);
  if (a.saved) r.mean = mean.to(kCpu), r.invstd = invstd.to(kCpu);
  if (a.running) r.running_mean = drm.to(kCpu), r.running_var = drv.to(kCpu);
  return r;
}

struct GradOut {
  Tensor dx, dgamma, dbeta;
};

GradOut bn_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& invstd, const Tensor& dy,
                    Device device, bool with_gamma = true) {
  const int64_t c = x.shape()[1];
  Tensor g = with_gamma ? gamma.to(device) : Tensor();
  Tensor dx = Tensor::full(x.shape(), -7.0, dy.dtype(), device);
  Tensor dgamma = Tensor::full(Shape{c}, -7.0, DType::f32, device);
  Tensor dbeta = Tensor::full(Shape{c}, -7.0, DType::f32, device);
  OpAttrs attrs;
  attrs.f[0] = 1e-5;
  run_op(OpKind::BatchNormBackward,
         {tv(x.to(device)), tv(g), tv(mean.to(device)), tv(invstd.to(device)), tv(dy.to(device))},
         {tv(dx), tv(dgamma), tv(dbeta)}, attrs, nullptr, "test/bn");
  return {dx.to(kCpu), dgamma.to(kCpu), dbeta.to(kCpu)};
}

Tensor bn_inference(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rm, const Tensor& rv,
                    Device device, double eps = 1e-5) {
  Tensor y = Tensor::full(x.shape(), -7.0, x.dtype(), device);
  OpAttrs attrs;
  attrs.f[0] = eps;
  run_op(OpKind::BatchNormInference,
         {tv(x.to(device)), tv(gamma.to(device)), tv(beta.to(device)), tv(rm.to(device)), tv(rv.to(device))}, {tv(y)},
         attrs, nullptr, "test/bn");
  return y.to(kCpu);
}

/// BatchNormInferenceBackward on `device`: dx of BatchNormInference (gamma may be undefined).
Tensor bn_inference_backward(const Tensor& dy, const Tensor& gamma, const Tensor& rv, Device device,
                             double eps = 1e-5) {
  Tensor dx = Tensor::full(dy.shape(), -7.0, dy.dtype(), device);
  Tensor g = gamma.defined() ? gamma.to(device) : Tensor();
  run_op(OpKind::BatchNormInferenceBackward, {tv(dy.to(device)), tv(g), tv(rv.to(device))}, {tv(dx)},
         ops::BatchNormAttrs{eps, 0.1}.to_op_attrs(), nullptr, "test/bn");
  return dx.to(kCpu);
}

struct LnOut {
  Tensor y, mean, rstd;
};

LnOut ln_forward(const Tensor& x, const Tensor& gamma, const Tensor& beta, Device device, double eps = 1e-5) {
  const int64_t rows = x.numel() / x.shape()[-1];
  Tensor y = Tensor::full(x.shape(), -7.0, x.dtype(), device);
  Tensor mean = Tensor::full(Shape{rows}, -7.0, DType::f32, device);
  Tensor rstd = Tensor::full(Shape{rows}, -7.0, DType::f32, device);
  Tensor g = gamma.defined() ? gamma.to(device) : Tensor(), b = beta.defined() ? beta.to(device) : Tensor();
  OpAttrs attrs;
  attrs.f[0] = eps;
  run_op(OpKind::LayerNorm, {tv(x.to(device)), tv(g), tv(b)}, {tv(y), tv(mean), tv(rstd)}, attrs, nullptr, "test/ln");
  return {y.to(kCpu), mean.to(kCpu), rstd.to(kCpu)};
}

GradOut ln_backward(const Tensor& x, const Tensor& gamma, const Tensor& mean, const Tensor& rstd, const Tensor& dy,
                    Device device) {
  const int64_t d = x.shape()[-1];
  Tensor dx = Tensor::full(x.shape(), -7.0, dy.dtype(), device);
  Tensor dgamma = Tensor::full(Shape{d}, -7.0, DType::f32, device);
  Tensor dbeta = Tensor::full(Shape{d}, -7.0, DType::f32, device);
  Tensor g = gamma.defined() ? gamma.to(device) : Tensor();
  OpAttrs attrs;
  attrs.f[0] = 1e-5;
  run_op(OpKind::LayerNormBackward,
         {tv(x.to(device)), tv(g), tv(mean.to(device)), tv(rstd.to(device)), tv(dy.to(device))},
         {tv(dx), tv(dgamma), tv(dbeta)}, attrs, nullptr, "test/ln");
  return {dx.to(kCpu), dgamma.to(kCpu), dbeta.to(kCpu)};
}

std::vector<double> weights(int64_t n, uint64_t seed) { return as_doubles(random_tensor(Shape{n}, seed, -1, 1)); }

void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no cudl::Error thrown";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const auto& s : parts) EXPECT_NE(m.find(s), std::string::npos) << "'" << s << "' not in: " << m;
  }
}

}  // namespace

// ---------------------------------------------------------------- CPU reference -----------------

TEST(BatchNormCpu, BackwardMatchesFiniteDifferencesOfTrainForward) {
  for (Shape s : {Shape{5, 3}, Shape{2, 3, 3, 5}}) {
    SCOPED_TRACE(s.str());
    const int64_t c = s[1];
    Tensor x = random_tensor(s, 1, -2, 2), gamma = random_tensor(Shape{c}, 2, 0.5, 1.5);
    Tensor beta = random_tensor(Shape{c}, 3), rm = Tensor::zeros(Shape{c}), rv = Tensor::full(Shape{c}, 1.0);
    const auto w = weights(x.numel(), 4);
    BnArgs no_running;
    no_running.running = false;
    auto f_x = [&](const Tensor& xx) { return weighted_sum(bn_train(xx, gamma, beta, rm, rv, kCpu, no_running).y, w); };
    auto f_g = [&](const Tensor& gg) { return weighted_sum(bn_train(x, gg, beta, rm, rv, kCpu, no_running).y, w); };
    auto f_b = [&](const Tensor& bb) { return weighted_sum(bn_train(x, gamma, bb, rm, rv, kCpu, no_running).y, w); };
    const BnOut fwd = bn_train(x, gamma, beta, rm, rv, kCpu, no_running);
    Tensor dy = Tensor::from_vector(std::vector<float>(w.begin(), w.end()), s);
    const GradOut g = bn_backward(x, gamma, fwd.mean, fwd.invstd, dy, kCpu);
    EXPECT_TRUE(gradient_close(g.dx, numerical_gradient(f_x, x.clone()))) << "dx";
    EXPECT_TRUE(gradient_close(g.dgamma, numerical_gradient(f_g, gamma.clone()))) << "dgamma";
    EXPECT_TRUE(gradient_close(g.dbeta, numerical_gradient(f_b, beta.clone()))) << "dbeta";
  }
}

TEST(BatchNormCpu, StatisticsAndRunningUpdateMatchHandComputedValues) {
  // x (2, 2, 2): channel 0 holds {1, 2, 5, 6}, channel 1 holds {-1, -1, 3, 3}.
  Tensor x = Tensor::from_vector<float>({1, 2, -1, -1, 5, 6, 3, 3}, Shape{2, 2, 2});
  Tensor gamma = Tensor::from_vector<float>({2, 1}, Shape{2}), beta = Tensor::from_vector<float>({0.5f, -1}, Shape{2});
  Tensor rm = Tensor::from_vector<float>({1, -2}, Shape{2}), rv = Tensor::from_vector<float>({4, 0.5f}, Shape{2});
  BnArgs a;
  a.momentum = 0.25;
  a.eps = 1e-3;
  const BnOut r = bn_train(x, gamma, beta, rm, rv, kCpu, a);
  // channel 0: mean 3.5, biased var (6.25 + 2.25 + 2.25 + 6.25) / 4 = 4.25, unbiased 17 / 3.
  // channel 1: mean 1, biased var 4, unbiased 16 / 3.
  EXPECT_NEAR(r.mean.item(0), 3.5, 1e-6);
  EXPECT_NEAR(r.mean.item(1), 1.0, 1e-6);
  EXPECT_NEAR(r.invstd.item(0), 1 / std::sqrt(4.25 + 1e-3), 1e-6);
  EXPECT_NEAR(r.invstd.item(1), 1 / std::sqrt(4.0 + 1e-3), 1e-6);
  EXPECT_NEAR(r.running_mean.item(0), 0.75 * 1 + 0.25 * 3.5, 1e-6);
  EXPECT_NEAR(r.running_mean.item(1), 0.75 * -2 + 0.25 * 1, 1e-6);
  EXPECT_NEAR(r.running_var.item(0), 0.75 * 4 + 0.25 * 17.0 / 3, 1e-6);
  EXPECT_NEAR(r.running_var.item(1), 0.75 * 0.5 + 0.25 * 16.0 / 3, 1e-6);
  // y[n=1, c=0, s=1] = (6 - 3.5) / sqrt(4.25 + eps) * 2 + 0.5
  EXPECT_NEAR(r.y.item(5), 2.5 / std::sqrt(4.25 + 1e-3) * 2 + 0.5, 1e-5);
  // y[n=0, c=1, s=0] = (-1 - 1) / sqrt(4 + eps) * 1 - 1
  EXPECT_NEAR(r.y.item(2), -2 / std::sqrt(4.0 + 1e-3) - 1, 1e-5);
}

TEST(BatchNormCpu, ThreadCountDoesNotChangeResults) {
  // Channels are split over threads; each channel's arithmetic is the same for any thread count.
  for (const Shape& xs : {Shape{3, 5, 4, 3}, Shape{1, 1, 2, 2}, Shape{7, 16, 5, 5}}) {
    SCOPED_TRACE(::testing::Message() << xs);
    const int64_t c = xs[1];
    Tensor x = random_tensor(xs, 31, -2, 2), g = random_tensor(Shape{c}, 32), b = random_tensor(Shape{c}, 33);
    Tensor rm = random_tensor(Shape{c}, 34), rv = random_tensor(Shape{c}, 35, 0.5f, 2.f), dy = random_tensor(xs, 36);
    auto run_all = [&](int threads) {
      ScopedCpuThreads scope(threads);
      const BnOut f = bn_train(x, g, b, rm, rv, kCpu);
      const GradOut d = bn_backward(x, g, f.mean, f.invstd, dy, kCpu);
      return std::vector<Tensor>{f.y, f.mean, f.invstd, f.running_mean, f.running_var, d.dx, d.dgamma, d.dbeta};
    };
    const std::vector<Tensor> one = run_all(1);
    for (int threads : {2, 3, 8}) {
      const std::vector<Tensor> many = run_all(threads);
      for (size_t i = 0; i < one.size(); ++i)
        EXPECT_TRUE(bitwise_equal(many[i], one[i])) << "output " << i << " with " << threads << " threads";
    }
  }
}

TEST(BatchNormCpu, SingleValuePerChannelIsFinite) {
  // N * H * W = 1: variance 0, y = beta; running_var takes the unbiased variance as 0 (documented).
  Tensor x = random_tensor(Shape{1, 4, 1, 1}, 5);
  Tensor gamma = random_tensor(Shape{4}, 6), beta = random_tensor(Shape{4}, 7);
  Tensor rm = Tensor::full(Shape{4}, 0.5), rv = Tensor::full(Shape{4}, 2.0);
  const BnOut r = bn_train(x, gamma, beta, rm, rv, kCpu);
  EXPECT_TRUE(all_close(r.y, beta.reshape(Shape{1, 4, 1, 1}), 1e-6, 0));
  for (int c = 0; c < 4; ++c) {
    EXPECT_NEAR(r.running_mean.item(c), 0.9 * 0.5 + 0.1 * x.item(c), 1e-6);
    EXPECT_NEAR(r.running_var.item(c), 0.9 * 2.0, 1e-6);
    EXPECT_TRUE(std::isfinite(r.invstd.item(c)));
  }
}

TEST(BatchNormCpu, InferenceUsesRunningStatistics) {
  Tensor x = random_tensor(Shape{3, 2, 2, 3}, 8);
  Tensor gamma = random_tensor(Shape{2}, 9), beta = random_tensor(Shape{2}, 10);
  Tensor rm = random_tensor(Shape{2}, 11), rv = random_tensor(Shape{2}, 12, 0.5, 2);
  const Tensor y = bn_inference(x, gamma, beta, rm, rv, kCpu, 1e-4);
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t c = (i / 6) % 2;
    const double e = (x.item(i) - rm.item(c)) / std::sqrt(rv.item(c) + 1e-4) * gamma.item(c) + beta.item(c);
    EXPECT_NEAR(y.item(i), e, 1e-5) << i;
  }
}

TEST(BatchNormCpu, InferenceBackwardMatchesFiniteDifferences) {
  // The gradient of a frozen BatchNorm: dx only, through the running statistics.
  for (Shape s : {Shape{3, 2, 2, 3}, Shape{5, 7}, Shape{1, 3, 1, 1}, Shape{2, 1, 3, 5}}) {
    SCOPED_TRACE(s.str());
    const int64_t c = s[1];
    Tensor x = random_tensor(s, 80 + s.numel(), -2, 2), gamma = random_tensor(Shape{c}, 81, -1.5, 1.5);
    Tensor beta = random_tensor(Shape{c}, 82), rm = random_tensor(Shape{c}, 83);
    Tensor rv = random_tensor(Shape{c}, 84, 0.05, 2);
    const auto w = weights(x.numel(), 85);
    const Tensor dy = Tensor::from_vector(std::vector<float>(w.begin(), w.end()), s);
    EXPECT_TRUE(gradient_close(
        bn_inference_backward(dy, gamma, rv, kCpu, 1e-3),
        numerical_gradient(
            [&](const Tensor& xx) { return weighted_sum(bn_inference(xx, gamma, beta, rm, rv, kCpu, 1e-3), w); },
            x.clone())))
        << "dx";
    // Without gamma: dx = dy / sqrt(running_var + eps).
    const Tensor plain = bn_inference_backward(dy, Tensor(), rv, kCpu, 1e-3);
    const int64_t spatial = x.numel() / (s[0] * c);
    for (int64_t i = 0; i < x.numel(); ++i)
      EXPECT_NEAR(plain.item(i), dy.item(i) / std::sqrt(rv.item((i / spatial) % c) + 1e-3), 1e-6) << i;
  }
}

TEST(LayerNormCpu, BackwardMatchesFiniteDifferences) {
  for (int64_t d : {1, 7, 33}) {
    SCOPED_TRACE("d=" + std::to_string(d));
    const Shape s{2, 3, d};
    Tensor x = random_tensor(s, 20 + d, -2, 2), gamma = random_tensor(Shape{d}, 21, 0.5, 1.5);
    Tensor beta = random_tensor(Shape{d}, 22);
    const auto w = weights(x.numel(), 23);
    const LnOut fwd = ln_forward(x, gamma, beta, kCpu);
    Tensor dy = Tensor::from_vector(std::vector<float>(w.begin(), w.end()), s);
    const GradOut g = ln_backward(x, gamma, fwd.mean, fwd.rstd, dy, kCpu);
    EXPECT_TRUE(gradient_close(
        g.dx, numerical_gradient([&](const Tensor& xx) { return weighted_sum(ln_forward(xx, gamma, beta, kCpu).y, w); },
                                 x.clone())))
        << "dx";
    EXPECT_TRUE(gradient_close(
        g.dgamma, numerical_gradient([&](const Tensor& gg) { return weighted_sum(ln_forward(x, gg, beta, kCpu).y, w); },
                                     gamma.clone())))
        << "dgamma";
    EXPECT_TRUE(gradient_close(
        g.dbeta, numerical_gradient([&](const Tensor& bb) { return weighted_sum(ln_forward(x, gamma, bb, kCpu).y, w); },
                                    beta.clone())))
        << "dbeta";
    // Without gamma/beta: the plain normalisation and its gradient.
    const LnOut plain = ln_forward(x, Tensor(), Tensor(), kCpu);
    const GradOut gp = ln_backward(x, Tensor(), plain.mean, plain.rstd, dy, kCpu);
    EXPECT_TRUE(gradient_close(
        gp.dx,
        numerical_gradient(
            [&](const Tensor& xx) { return weighted_sum(ln_forward(xx, Tensor(), Tensor(), kCpu).y, w); }, x.clone())))
        << "dx without gamma";
  }
}

TEST(LayerNormCpu, RowStatisticsMatchDefinition) {
  Tensor x = Tensor::from_vector<float>({1, 2, 3, 6, -1, -1, -1, -1}, Shape{2, 4});
  const LnOut r = ln_forward(x, Tensor(), Tensor(), kCpu, 0.5);
  EXPECT_NEAR(r.mean.item(0), 3.0, 1e-6);
  EXPECT_NEAR(r.rstd.item(0), 1 / std::sqrt(3.5 + 0.5), 1e-6);  // biased var (4 + 1 + 0 + 9) / 4
  EXPECT_NEAR(r.y.item(3), 3 / std::sqrt(4.0), 1e-6);
  EXPECT_NEAR(r.mean.item(1), -1.0, 1e-6);
  EXPECT_NEAR(r.y.item(5), 0.0, 1e-6);  // constant row: finite zeros
}

TEST(NormCpu, BadArgumentsNameOpAndShapes) {
  Tensor x = random_tensor(Shape{4, 3, 2, 2}, 30);
  Tensor c3 = Tensor::full(Shape{3}, 1.0), c4 = Tensor::full(Shape{4}, 1.0);
  expect_error([&] { bn_train(x, c4, c3, c3, c3, kCpu); },
               {"BatchNormTrain", "test/bn", "gamma", "(3,)", "(4,)", "(4, 3, 2, 2)"});
  expect_error([&] { bn_inference(x, c3, c3, c3, c4, kCpu); }, {"BatchNormInference", "running_var", "(4,)"});
  expect_error(
      [&] {
        Tensor v = random_tensor(Shape{5}, 1), y = Tensor::empty(Shape{5});
        run_op(OpKind::BatchNormTrain, {tv(v), tv(c3), tv(c3), tv(c3), tv(c3)}, {tv(y), {}, {}});
      },
      {"BatchNormTrain", "(5,)"});
  BnArgs bad_momentum;
  bad_momentum.momentum = 1.5;
  expect_error([&] { bn_train(x, c3, c3, c3, c3, kCpu, bad_momentum); }, {"BatchNormTrain", "momentum"});
  expect_error([&] { ln_forward(x, c3, Tensor(), kCpu); }, {"LayerNorm", "test/ln", "gamma", "(3,)", "(2,)"});
  Tensor xi = Tensor::zeros(Shape{4, 2}, DType::i32);
  expect_error([&] { ln_forward(xi, Tensor(), Tensor(), kCpu); }, {"LayerNorm", "i32", "(4, 2)"});
  expect_error(
      [&] {
        bn_backward(x, c3, c3, c3, random_tensor(Shape{4, 3, 2, 1}, 2), kCpu);
      },
      {"BatchNormBackward", "dy", "(4, 3, 2, 1)", "(4, 3, 2, 2)"});
  expect_error([&] { bn_inference_backward(x, c3, c4, kCpu); },
               {"BatchNormInferenceBackward", "test/bn", "running_var", "(3,)", "(4,)", "(4, 3, 2, 2)"});
  expect_error([&] { bn_inference_backward(x, c4, c3, kCpu); }, {"BatchNormInferenceBackward", "gamma", "(4,)"});
  expect_error([&] { bn_inference_backward(random_tensor(Shape{5}, 3), c3, c3, kCpu); },
               {"BatchNormInferenceBackward", "dy", "(N, C, ...)", "(5,)"});
}

// ---------------------------------------------------------------- CUDA vs CPU -------------------

TEST(BatchNormCuda, TrainMatchesCpuIncludingRunningStats) {
  CUDL_REQUIRE_CUDA();
  for (Shape s : {Shape{37, 10}, Shape{3, 33}, Shape{1, 1000}, Shape{1, 1}, Shape{3, 5, 7, 5}, Shape{2, 1, 9, 11},
                  Shape{8, 2, 16, 17}, Shape{1, 3, 1, 1}, Shape{64, 4, 32, 32}}) {
    SCOPED_TRACE(s.str());
    const int64_t c = s[1];
    Tensor x = random_tensor(s, 40 + s.numel(), -3, 5), gamma = random_tensor(Shape{c}, 41, 0.5, 1.5);
    Tensor beta = random_tensor(Shape{c}, 42), rm = random_tensor(Shape{c}, 43);
    Tensor rv = random_tensor(Shape{c}, 44, 0.5, 2);
    const BnOut g = bn_train(x, gamma, beta, rm, rv, Device::cuda());
    const BnOut e = bn_train(x, gamma, beta, rm, rv, kCpu);
    EXPECT_TRUE(all_close(g.y, e.y, 1e-5, 1e-4)) << "y";
    EXPECT_TRUE(all_close(g.mean, e.mean, 1e-5, 1e-5)) << "saved_mean";
    EXPECT_TRUE(all_close(g.invstd, e.invstd, 1e-5, 1e-4)) << "saved_invstd";
    EXPECT_TRUE(all_close(g.running_mean, e.running_mean, 1e-6, 1e-5)) << "running_mean";
    EXPECT_TRUE(all_close(g.running_var, e.running_var, 1e-6, 1e-5)) << "running_var";
    // Without affine parameters, running stats or saved stats.
    BnArgs bare;
    bare.affine = bare.running = bare.saved = false;
    EXPECT_TRUE(all_close(bn_train(x, gamma, beta, rm, rv, Device::cuda(), bare).y,
                          bn_train(x, gamma, beta, rm, rv, kCpu, bare).y, 1e-5, 1e-4))
        << "bare";
  }
}

TEST(BatchNormCuda, BackwardAndInferenceMatchCpu) {
  CUDL_REQUIRE_CUDA();
  for (Shape s : {Shape{37, 10}, Shape{1, 1000}, Shape{1, 1}, Shape{3, 5, 7, 5}, Shape{8, 2, 16, 17},
                  Shape{1, 3, 1, 1}, Shape{64, 4, 32, 32}}) {
    SCOPED_TRACE(s.str());
    const int64_t c = s[1];
    Tensor x = random_tensor(s, 50 + s.numel(), -3, 5), gamma = random_tensor(Shape{c}, 51, 0.5, 1.5);
    Tensor beta = random_tensor(Shape{c}, 52), rm = random_tensor(Shape{c}, 53);
    Tensor rv = random_tensor(Shape{c}, 54, 0.5, 2), dy = random_tensor(s, 55);
    const BnOut fwd = bn_train(x, gamma, beta, rm, rv, kCpu);
    for (bool with_gamma : {true, false}) {
      const GradOut g = bn_backward(x, gamma, fwd.mean, fwd.invstd, dy, Device::cuda(), with_gamma);
      const GradOut e = bn_backward(x, gamma, fwd.mean, fwd.invstd, dy, kCpu, with_gamma);
      EXPECT_TRUE(all_close(g.dx, e.dx, 1e-4, 1e-4)) << "dx";
      EXPECT_TRUE(all_close(g.dgamma, e.dgamma, 1e-4, 1e-4)) << "dgamma";
      EXPECT_TRUE(all_close(g.dbeta, e.dbeta, 1e-4, 1e-4)) << "dbeta";
      // The frozen layer's gradient (BatchNormInferenceBackward), more elements than one
      // grid-stride pass of the launch for the largest shape.
      const Tensor gm = with_gamma ? gamma : Tensor();
      EXPECT_TRUE(all_close(bn_inference_backward(dy, gm, rv, Device::cuda(), 1e-4),
                            bn_inference_backward(dy, gm, rv, kCpu, 1e-4), 1e-6, 1e-5))
          << "inference backward, with_gamma=" << with_gamma;
    }
    EXPECT_TRUE(all_close(bn_inference(x, gamma, beta, rm, rv, Device::cuda()),
                          bn_inference(x, gamma, beta, rm, rv, kCpu), 1e-5, 1e-5))
        << "inference";
  }
}

TEST(BatchNormCuda, InferenceBackwardNanStaysInItsElementOrChannel) {
  CUDL_REQUIRE_CUDA();
  // NaN in dy stays in its element; a NaN running_var poisons its channel only.
  Tensor dy = random_tensor(Shape{2, 3, 2, 2}, 94);
  dy.data_as<float>()[5] = std::numeric_limits<float>::quiet_NaN();  // sample 0, channel 1
  Tensor rv = Tensor::full(Shape{3}, 1.0);
  rv.data_as<float>()[2] = std::numeric_limits<float>::quiet_NaN();
  const Tensor g = bn_inference_backward(dy, Tensor(), rv, Device::cuda());
  EXPECT_TRUE(all_close(g, bn_inference_backward(dy, Tensor(), rv, kCpu), 1e-6, 1e-5));
  EXPECT_TRUE(std::isnan(g.item(5)));
  EXPECT_FALSE(std::isnan(g.item(4)));
  EXPECT_TRUE(std::isnan(g.item(8)) && std::isnan(g.item(20)));  // channel 2 of both samples
  EXPECT_FALSE(std::isnan(g.item(12)));
}

#if CUDL_WITH_CUDA
TEST(BatchNormCuda, FewChannelsAreSplitAcrossBlocksAndMatchCpu) {
  // 4 channels of 64 x 1024 values: one block per channel would be 4 blocks; the split gives 16
  // blocks per channel (3 kernels forward, 2 backward), with fixed-order partial sums.
  CUDL_REQUIRE_CUDA();
  const Shape s{64, 4, 32, 32};
  const int64_t c = 4;
  ASSERT_EQ(kernels::batch_norm_splits(64, 4, 1024), 16);
  ASSERT_EQ(kernels::batch_norm_splits(37, 10, 1), 1) << "(N, C) keeps its channel tiles";
  Tensor x = random_tensor(s, 4096, -3, 5), gamma = random_tensor(Shape{c}, 4097, 0.5, 1.5);
  Tensor beta = random_tensor(Shape{c}, 4098), rm = random_tensor(Shape{c}, 4099);
  Tensor rv = random_tensor(Shape{c}, 4100, 0.5, 2);
  const BnOut e = bn_train(x, gamma, beta, rm, rv, kCpu);
  const BnOut g = bn_train(x, gamma, beta, rm, rv, Device::cuda());
#if defined(CUDL_EMULATED)
  {  // The forward alone: 3 kernels of 4 x 16 blocks of 256 threads (one block per channel: 4 blocks).
    Tensor dx = x.to(Device::cuda()), y = Tensor::empty(s, DType::f32, Device::cuda());
    Tensor mean = Tensor::empty(Shape{c}, DType::f32, Device::cuda()), inv = Tensor::empty(Shape{c}, DType::f32, Device::cuda());
    (void)mean.to_vector<float>();  // what the set-up queued has run
    cudl_emu::reset_counters();
    OpAttrs attrs;
    attrs.f[0] = 1e-5;
    attrs.f[1] = 0.1;
    run_op(OpKind::BatchNormTrain, {tv(dx), {}, {}, {}, {}}, {tv(y), tv(mean), tv(inv)}, attrs, nullptr, "test/bn");
    (void)mean.to_vector<float>();
    const auto k = cudl_emu::counters();
    EXPECT_EQ(k.kernel_launches, 3u);
    EXPECT_EQ(k.threads, 3u * 64u * 256u);
  }
#endif
  // Values against the CPU: the (64, 4, 32, 32) case of the two tests above.
  EXPECT_TRUE(all_close(g.y, e.y, 1e-5, 1e-4)) << "y";
  // Same bits run to run (the split depends only on the shape).
  EXPECT_TRUE(bitwise_equal(bn_train(x, gamma, beta, rm, rv, Device::cuda()).y, g.y));
}
#endif

// --- 16-bit storage: x, y, dy, dx in bf16/f16, every per-channel tensor f32 ----------------------

/// Per element of x (N, C, spatial...), the sum of |terms| that batch norm's y and dx are made of,
/// the tolerance unit of storage_sum_close: y = (x - mean) invstd gamma + beta, with the mean an
/// average of the channel's M values; dx = gamma invstd (dy - mean(dy) - xhat mean(dy xhat)).
struct BnTermSums {
  Tensor y, dx;
};
BnTermSums bn_term_sums(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& mean,
                        const Tensor& invstd, const Tensor& dy) {
  const int64_t n = x.shape()[0], c = x.shape()[1], sp = x.numel() / (n * c), m = n * sp;
  const auto xv = as_doubles(x), dyv = as_doubles(dy), gv = as_doubles(gamma), bv = as_doubles(beta),
             mv = as_doubles(mean), iv = as_doubles(invstd);
  std::vector<double> abs_x(c, 0), abs_dy(c, 0), abs_dyx(c, 0);
  auto idx = [&](int64_t i, int64_t ch, int64_t k) { return (i * c + ch) * sp + k; };
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t k = 0; k < sp; ++k) {
        const int64_t j = idx(i, ch, k);
        abs_x[ch] += std::fabs(xv[j]) / m;
        abs_dy[ch] += std::fabs(dyv[j]) / m;
        abs_dyx[ch] += std::fabs(dyv[j] * (xv[j] - mv[ch]) * iv[ch]) / m;
      }
  std::vector<float> sy(xv.size()), sdx(xv.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t k = 0; k < sp; ++k) {
        const int64_t j = idx(i, ch, k);
        const double scale = std::fabs(gv[ch]) * iv[ch], xhat = std::fabs((xv[j] - mv[ch]) * iv[ch]);
        sy[j] = static_cast<float>((std::fabs(xv[j]) + abs_x[ch]) * scale + std::fabs(bv[ch]));
        sdx[j] = static_cast<float>(scale * (std::fabs(dyv[j]) + abs_dy[ch] + xhat * abs_dyx[ch]));
      }
  return {Tensor::from_vector(sy, x.shape()), Tensor::from_vector(sdx, x.shape())};
}

// y and dx within one 16-bit epsilon of their sums of |terms| and at least 95% bitwise equal to the
// CPU reference (storage_sum_close); the f32 statistics and parameter gradients as in f32.
TEST(BatchNormCuda, SixteenBitStorageMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  for (DType st : {DType::bf16, DType::f16})
    for (Shape s : {Shape{37, 10}, Shape{3, 5, 7, 5}, Shape{8, 2, 16, 17}, Shape{16, 4, 32, 32}}) {
      SCOPED_TRACE(std::string(dtype_name(st)) + " " + s.str());
      const int64_t c = s[1];
      Tensor x = to_storage(random_tensor(s, 60 + s.numel(), -3, 5), st), gamma = random_tensor(Shape{c}, 61, 0.5, 1.5);
      Tensor beta = random_tensor(Shape{c}, 62), rm = random_tensor(Shape{c}, 63);
      Tensor rv = random_tensor(Shape{c}, 64, 0.5, 2), dy = to_storage(random_tensor(s, 65), st);
      const BnOut g = bn_train(x, gamma, beta, rm, rv, Device::cuda());
      const BnOut e = bn_train(x, gamma, beta, rm, rv, kCpu);
      ASSERT_EQ(g.y.dtype(), st);
      ASSERT_EQ(g.mean.dtype(), DType::f32);
      const BnTermSums sums = bn_term_sums(x, gamma, beta, e.mean, e.invstd, dy);
      EXPECT_TRUE(storage_sum_close(g.y, e.y, sums.y)) << "y";
      EXPECT_TRUE(all_close(g.mean, e.mean, 1e-5, 1e-5)) << "saved_mean";
      EXPECT_TRUE(all_close(g.invstd, e.invstd, 1e-5, 1e-4)) << "saved_invstd";
      EXPECT_TRUE(all_close(g.running_mean, e.running_mean, 1e-6, 1e-5)) << "running_mean";
      EXPECT_TRUE(all_close(g.running_var, e.running_var, 1e-6, 1e-5)) << "running_var";

      const GradOut gb = bn_backward(x, gamma, e.mean, e.invstd, dy, Device::cuda());
      const GradOut eb = bn_backward(x, gamma, e.mean, e.invstd, dy, kCpu);
      ASSERT_EQ(gb.dx.dtype(), st);
      EXPECT_TRUE(storage_sum_close(gb.dx, eb.dx, sums.dx)) << "dx";
      EXPECT_TRUE(all_close(gb.dgamma, eb.dgamma, 1e-4, 1e-4)) << "dgamma";
      EXPECT_TRUE(all_close(gb.dbeta, eb.dbeta, 1e-4, 1e-4)) << "dbeta";

      // Inference and its data gradient: the same sums with the running mean and 1/sqrt(running_var + eps).
      const std::vector<float> rvv = rv.to_vector<float>();
      std::vector<float> inv(rvv.size());
      for (size_t k = 0; k < rvv.size(); ++k) inv[k] = 1.f / std::sqrt(rvv[k] + 1e-5f);
      const BnTermSums rs = bn_term_sums(x, gamma, beta, rm, Tensor::from_vector(inv, Shape{c}), dy);
      EXPECT_TRUE(storage_sum_close(bn_inference(x, gamma, beta, rm, rv, Device::cuda()),
                                    bn_inference(x, gamma, beta, rm, rv, kCpu), rs.y))
          << "inference";
      EXPECT_TRUE(storage_sum_close(bn_inference_backward(dy, gamma, rv, Device::cuda()),
                                    bn_inference_backward(dy, gamma, rv, kCpu), rs.dx))
          << "inference backward";
    }
}

TEST(BatchNormCuda, SixteenBitPerChannelTensorsStayF32) {
  CUDL_REQUIRE_CUDA();
  const Shape s{2, 3, 4, 4};
  Tensor x = to_storage(random_tensor(s, 1), DType::bf16);
  Tensor g16 = to_storage(random_tensor(Shape{3}, 2), DType::bf16), g32 = random_tensor(Shape{3}, 2);
  Tensor b = random_tensor(Shape{3}, 3), rm = random_tensor(Shape{3}, 4), rv = random_tensor(Shape{3}, 5, 0.5, 2);
  for (Device d : {kCpu, Device::cuda()}) {
    expect_error([&] { bn_train(x, g16, b, rm, rv, d); }, {"BatchNormTrain", "input 1", "bf16", "f32"});
    expect_error([&] { bn_inference(x, g32, b, to_storage(rm, DType::bf16), rv, d); },
                 {"BatchNormInference", "input 3", "bf16"});
    Tensor y = Tensor::empty(s, DType::f16, d);  // y in another storage type than x
    expect_error(
        [&] {
          run_op(OpKind::BatchNormInference, {tv(x.to(d)), tv(g32.to(d)), tv(b.to(d)), tv(rm.to(d)), tv(rv.to(d))},
                 {tv(y)}, ops::BatchNormAttrs{}.to_op_attrs(), nullptr, "test/bn");
        },
        {"BatchNormInference", "f16", "bf16", "one storage type per call"});
  }
}

TEST(BatchNormCuda, NanPropagatesWithinItsChannel) {
  CUDL_REQUIRE_CUDA();
  Tensor x = random_tensor(Shape{4, 3, 2, 2}, 56);
  x.data_as<float>()[5] = std::numeric_limits<float>::quiet_NaN();  // channel 1
  Tensor ones = Tensor::full(Shape{3}, 1.0), zeros = Tensor::zeros(Shape{3});
  const BnOut g = bn_train(x, ones, zeros, zeros, ones, Device::cuda());
  const BnOut e = bn_train(x, ones, zeros, zeros, ones, kCpu);
  EXPECT_TRUE(all_close(g.y, e.y, 1e-5, 1e-4));
  EXPECT_TRUE(std::isnan(g.y.item(4)));
  EXPECT_FALSE(std::isnan(g.y.item(0)));
}

// ---- synchronised batch norm: ranks in one process, their sums added by hand -------------------

/// Rows [begin, end) of x (N, ...), a copy.
Tensor rows_of(const Tensor& x, int64_t begin, int64_t end) {
  std::vector<int64_t> dims = x.shape().dims();
  const size_t row = x.nbytes() / static_cast<size_t>(dims[0]);
  dims[0] = end - begin;
  return x.view_bytes(static_cast<size_t>(begin) * row, Shape(dims), x.dtype()).clone();
}

/// Host sum of same-shaped f32 tensors (the AllReduce the ranks would do).
Tensor host_sum(const std::vector<Tensor>& ts) {
  std::vector<float> acc = ts[0].to(kCpu).to_vector<float>();
  for (size_t r = 1; r < ts.size(); ++r) {
    const std::vector<float> v = ts[r].to(kCpu).to_vector<float>();
    for (size_t i = 0; i < acc.size(); ++i) acc[i] += v[i];
  }
  return Tensor::from_vector(acc, ts[0].shape());
}

struct SyncOut {
  Tensor y, dx, dgamma, dbeta;  // y and dx of all ranks' rows in order; dgamma/dbeta summed
  std::vector<Tensor> running_mean, running_var, mean, invstd;  // per rank
};

/// Synchronised batch norm of x split into `ranks` equal row blocks on `device`: per rank
/// BatchNormStats (shifted by the running mean), the stats summed, BatchNormApply; then per rank
/// BatchNormBackwardReduce, the sums summed, BatchNormBackwardApply.
SyncOut sync_bn(const Tensor& x, const Tensor& gamma, const Tensor& beta, const Tensor& rm, const Tensor& rv,
                const Tensor& dy, int ranks, Device device) {
  const int64_t n = x.shape()[0], c = x.shape()[1], b = n / ranks;
  std::vector<Tensor> xs, dys, stats;
  for (int r = 0; r < ranks; ++r) {
    xs.push_back(rows_of(x, r * b, (r + 1) * b).to(device));
    dys.push_back(rows_of(dy, r * b, (r + 1) * b).to(device));
    stats.push_back(Tensor::full(Shape{3, c}, -7.0, DType::f32, device));
    run_op(OpKind::BatchNormStats, {tv(xs[r]), tv(rm.to(device))}, {tv(stats[r])}, {}, nullptr, "test/sync_bn");
  }
  const Tensor total = host_sum(stats).to(device);
  OpAttrs attrs;
  attrs.f[0] = 1e-5;
  attrs.f[1] = 0.1;
  SyncOut o;
  std::vector<Tensor> ys, dxs, sums, dgs, dbs;
  for (int r = 0; r < ranks; ++r) {
    Tensor drm = rm.to(device), drv = rv.to(device), g = gamma.to(device);
    Tensor y = Tensor::full(xs[r].shape(), -7.0, DType::f32, device);
    Tensor mean = Tensor::full(Shape{c}, -7.0, DType::f32, device), invstd = mean.clone();
    run_op(OpKind::BatchNormApply, {tv(xs[r]), tv(g), tv(beta.to(device)), tv(drm), tv(drv), tv(total), tv(drm)},
           {tv(y), tv(mean), tv(invstd)}, attrs, nullptr, "test/sync_bn");
    ys.push_back(y.to(kCpu));
    o.running_mean.push_back(drm.to(kCpu)), o.running_var.push_back(drv.to(kCpu));
    o.mean.push_back(mean), o.invstd.push_back(invstd);
    sums.push_back(Tensor::full(Shape{2, c}, -7.0, DType::f32, device));
    dgs.push_back(Tensor::full(Shape{c}, -7.0, DType::f32, device));
    dbs.push_back(Tensor::full(Shape{c}, -7.0, DType::f32, device));
    run_op(OpKind::BatchNormBackwardReduce, {tv(xs[r]), tv(mean), tv(invstd), tv(dys[r])},
           {tv(sums[r]), tv(dgs[r]), tv(dbs[r])}, {}, nullptr, "test/sync_bn");
  }
  const Tensor sum_total = host_sum(sums).to(device);
  for (int r = 0; r < ranks; ++r) {
    Tensor dx = Tensor::full(xs[r].shape(), -7.0, DType::f32, device);
    run_op(OpKind::BatchNormBackwardApply,
           {tv(xs[r]), tv(gamma.to(device)), tv(o.mean[r]), tv(o.invstd[r]), tv(dys[r]), tv(sum_total), tv(total)},
           {tv(dx)}, {}, nullptr, "test/sync_bn");
    dxs.push_back(dx.to(kCpu));
  }
  auto join = [&](const std::vector<Tensor>& parts) {
    std::vector<float> all;
    for (const Tensor& t : parts) {
      const std::vector<float> v = t.to_vector<float>();
      all.insert(all.end(), v.begin(), v.end());
    }
    return Tensor::from_vector(all, x.shape());
  };
  o.y = join(ys), o.dx = join(dxs), o.dgamma = host_sum(dgs), o.dbeta = host_sum(dbs);
  return o;
}

// N ranks that add up their statistics (and their backward sums) normalise exactly as plain
// batch norm over the whole batch: y, dx, the running statistics on every rank, and dgamma/dbeta
// summed over the ranks. On the CPU reference and on CUDA.
void expect_sync_equals_plain(Device device) {
  for (Shape s : {Shape{12, 5}, Shape{6, 3, 5, 4}, Shape{4, 2, 7, 3}, Shape{12, 1}}) {
    const int64_t c = s[1];
    // An offset far from zero: the sums about the running mean do not cancel.
    Tensor x = random_tensor(s, 60 + s.numel(), 20, 24), dy = random_tensor(s, 61 + s.numel());
    Tensor gamma = random_tensor(Shape{c}, 62, 0.5, 1.5), beta = random_tensor(Shape{c}, 63);
    Tensor rm = random_tensor(Shape{c}, 64, 21, 23), rv = random_tensor(Shape{c}, 65, 0.5, 2);
    const BnOut plain = bn_train(x, gamma, beta, rm, rv, kCpu);
    const GradOut grad = bn_backward(x, gamma, plain.mean, plain.invstd, dy, kCpu);
    for (int ranks : {1, 2, 3}) {
      if (s[0] % ranks != 0) continue;
      SCOPED_TRACE(s.str() + " on " + device.str() + ", " + std::to_string(ranks) + " rank(s)");
      const SyncOut o = sync_bn(x, gamma, beta, rm, rv, dy, ranks, device);
      EXPECT_TRUE(all_close(o.y, plain.y, 1e-5, 1e-4)) << "y";
      EXPECT_TRUE(all_close(o.dx, grad.dx, 1e-5, 1e-4)) << "dx";
      EXPECT_TRUE(all_close(o.dgamma, grad.dgamma, 1e-4, 1e-4)) << "dgamma";
      EXPECT_TRUE(all_close(o.dbeta, grad.dbeta, 1e-4, 1e-4)) << "dbeta";
      for (int r = 0; r < ranks; ++r) {
        EXPECT_TRUE(all_close(o.running_mean[r], plain.running_mean, 1e-5, 1e-5)) << "running_mean, rank " << r;
        EXPECT_TRUE(all_close(o.running_var[r], plain.running_var, 1e-5, 1e-5)) << "running_var, rank " << r;
      }
    }
  }
}

TEST(SyncBatchNormCpu, RanksAddingTheirSumsNormaliseAsOneBatch) { expect_sync_equals_plain(kCpu); }

TEST(SyncBatchNormCuda, RanksAddingTheirSumsNormaliseAsOneBatch) {
  CUDL_REQUIRE_CUDA();
  expect_sync_equals_plain(Device::cuda());
}

TEST(SyncBatchNormCpu, BadArgumentsNameOpAndShapes) {
  Tensor x = random_tensor(Shape{4, 3, 2}, 70), stats = Tensor::zeros(Shape{3, 3});
  Tensor bad_shift = Tensor::zeros(Shape{4}), bad_stats = Tensor::zeros(Shape{2, 3});
  expect_error(
      [&] {
        run_op(OpKind::BatchNormStats, {tv(x), tv(bad_shift)}, {tv(stats)}, {}, nullptr, "t/s");
      },
      {"BatchNormStats", "t/s", "shift", "(3,)", "(4,)"});
  expect_error(
      [&] {
        run_op(OpKind::BatchNormStats, {tv(x), TensorView{}}, {tv(bad_stats)}, {}, nullptr, "t/s");
      },
      {"BatchNormStats", "stats", "(3, 3)", "(2, 3)"});
  Tensor x16 = Tensor::zeros(Shape{4, 3, 2}, DType::bf16);
  expect_error(
      [&] {
        run_op(OpKind::BatchNormStats, {tv(x16), TensorView{}}, {tv(stats)}, {}, nullptr, "t/s");
      },
      {"BatchNormStats", "bf16"});
}

namespace {
/// CUDA vs CPU for a layer-norm tensor: f32 within (atol, rtol); bf16 / f16 within 1 ulp and at least
/// 95% bitwise equal (close_16bit), or within 1e-5 of the tensor's largest magnitude where y or dx
/// cancels to a value much smaller than the row's largest (both backends' fp32 results carry an
/// error of that size there, not of the value's own ulp).
::testing::AssertionResult ln_close(const Tensor& g, const Tensor& e, double atol, double rtol) {
  if (e.dtype() == DType::f32) return all_close(g, e, atol, rtol);
  return close_16bit(g, e, 1, 0.95, 1e-5 * max_abs(e));
}
}  // namespace

// x, y, dy, dx in f32, bf16 and f16 (fp32 math, results rounded once); gamma, beta, the row
// statistics, dgamma and dbeta f32 in every storage type.
TEST(LayerNormCuda, ForwardAndBackwardMatchCpu) {
  CUDL_REQUIRE_CUDA();
  // Short rows (warp per row) and rows longer than a warp and than a block (block per row).
  for (DType st : {DType::f32, DType::bf16, DType::f16})
    for (int64_t d : {1, 7, 33, 100, 1000, 2000})
      for (int64_t rows : {1, 3, 37}) {
        if (d * rows > 40000) continue;
        SCOPED_TRACE(std::string(dtype_name(st)) + " d=" + std::to_string(d) + " rows=" + std::to_string(rows));
        Tensor x = to_storage(random_tensor(Shape{rows, d}, 60 + d + rows, -2, 3), st);
        Tensor gamma = random_tensor(Shape{d}, 61, 0.5, 1.5), beta = random_tensor(Shape{d}, 62);
        Tensor dy = to_storage(random_tensor(Shape{rows, d}, 63), st);
        const LnOut g = ln_forward(x, gamma, beta, Device::cuda());
        const LnOut e = ln_forward(x, gamma, beta, kCpu);
        ASSERT_EQ(g.y.dtype(), st);
        ASSERT_EQ(g.mean.dtype(), DType::f32);
        EXPECT_TRUE(ln_close(g.y, e.y, 1e-5, 1e-4)) << "y";
        EXPECT_TRUE(all_close(g.mean, e.mean, 1e-5, 1e-5)) << "mean";
        EXPECT_TRUE(all_close(g.rstd, e.rstd, 1e-5, 1e-4)) << "rstd";
        for (bool affine : {true, false}) {
          const Tensor gm = affine ? gamma : Tensor();
          const GradOut gg = ln_backward(x, gm, e.mean, e.rstd, dy, Device::cuda());
          const GradOut ee = ln_backward(x, gm, e.mean, e.rstd, dy, kCpu);
          ASSERT_EQ(gg.dx.dtype(), st);
          ASSERT_EQ(gg.dgamma.dtype(), DType::f32);
          EXPECT_TRUE(ln_close(gg.dx, ee.dx, 1e-4, 1e-4)) << "dx affine=" << affine;
          EXPECT_TRUE(all_close(gg.dgamma, ee.dgamma, 1e-4, 1e-4)) << "dgamma";
          EXPECT_TRUE(all_close(gg.dbeta, ee.dbeta, 1e-4, 1e-4)) << "dbeta";
        }
        const LnOut gp = ln_forward(x, Tensor(), Tensor(), Device::cuda());
        EXPECT_TRUE(ln_close(gp.y, ln_forward(x, Tensor(), Tensor(), kCpu).y, 1e-5, 1e-4)) << "no affine";
      }
}

// The comparison above fails what a kernel that truncated y, or computed the row statistics with
// 16-bit sums, would store.
TEST(LayerNormCuda, SixteenBitComparisonCatchesTruncationAnd16BitStatistics) {
  const int64_t rows = 8, d = 1000;
  for (DType st : k16BitTypes) {
    SCOPED_TRACE(dtype_name(st));
    Tensor x = to_storage(random_tensor(Shape{rows, d}, 81, -2, 3), st);
    const LnOut e = ln_forward(x, Tensor(), Tensor(), kCpu);
    EXPECT_TRUE(ln_close(e.y, e.y, 0, 0));
    // Truncation: the f32 values on the widened x, |y| kept in f16's normal range (tiny ones rounded).
    EXPECT_FALSE(
        ln_close(truncated_16bit(ln_forward(widened(x), Tensor(), Tensor(), kCpu).y, st), e.y, 0, 0))
        << "truncation must not pass";
    auto r16 = [&](float v) { return rounded_16(v, st); };
    const std::vector<uint16_t> xb = bits_16(x);
    std::vector<float> y16(static_cast<size_t>(rows * d));
    for (int64_t r = 0; r < rows; ++r) {
      float s = 0.f, q = 0.f;
      for (int64_t j = 0; j < d; ++j) s = r16(s + widen_16(xb[r * d + j], st));
      const float mean = r16(s / static_cast<float>(d));
      for (int64_t j = 0; j < d; ++j) {
        const float t = r16(widen_16(xb[r * d + j], st) - mean);
        q = r16(q + r16(t * t));
      }
      const float rstd = r16(1.f / std::sqrt(q / static_cast<float>(d) + 1e-5f));
      for (int64_t j = 0; j < d; ++j) y16[r * d + j] = (widen_16(xb[r * d + j], st) - mean) * rstd;
    }
    EXPECT_FALSE(ln_close(to_storage(Tensor::from_vector(y16, Shape{rows, d}), st), e.y, 0, 0))
        << "16-bit statistics must not pass";
  }
}

TEST(LayerNormCuda, SixteenBitParametersAndStatisticsStayF32) {
  const Shape s{4, 6};
  Tensor x = to_storage(random_tensor(s, 1), DType::bf16);
  for (Device d : test_devices()) {
    SCOPED_TRACE(d.str());
    expect_error([&] { ln_forward(x, to_storage(random_tensor(Shape{6}, 2), DType::bf16), Tensor(), d); },
                 {"LayerNorm", "input 1", "bf16", "f32"});
    Tensor y = Tensor::empty(s, DType::f16, d);
    Tensor mean = Tensor::empty(Shape{4}, DType::f32, d), rstd = Tensor::empty(Shape{4}, DType::f32, d);
    expect_error(
        [&] {
          run_op(OpKind::LayerNorm, {tv(x.to(d)), {}, {}}, {tv(y), tv(mean), tv(rstd)},
                 ops::LayerNormAttrs{}.to_op_attrs(), nullptr, "test/ln");
        },
        {"LayerNorm (test/ln)", "f16", "bf16", "one storage type per call"});
  }
}

TEST(LayerNormCuda, HigherRankAndNan) {
  CUDL_REQUIRE_CUDA();
  Tensor x = random_tensor(Shape{2, 3, 5, 40}, 70);
  x.data_as<float>()[45] = std::numeric_limits<float>::quiet_NaN();  // row 1
  const LnOut g = ln_forward(x, Tensor(), Tensor(), Device::cuda());
  const LnOut e = ln_forward(x, Tensor(), Tensor(), kCpu);
  EXPECT_TRUE(all_close(g.y, e.y, 1e-5, 1e-4));
  EXPECT_TRUE(std::isnan(g.y.item(41)));
  EXPECT_FALSE(std::isnan(g.y.item(0)));
}

TEST(NormCuda, BadArgumentsNameOpAndShapes) {
  CUDL_REQUIRE_CUDA();
  Tensor x = random_tensor(Shape{4, 3, 2, 2}, 30);
  Tensor c3 = Tensor::full(Shape{3}, 1.0), c4 = Tensor::full(Shape{4}, 1.0);
  expect_error([&] { bn_train(x, c4, c3, c3, c3, Device::cuda()); }, {"BatchNormTrain", "gamma", "(3,)", "(4,)"});
  expect_error([&] { ln_forward(x, c3, Tensor(), Device::cuda()); }, {"LayerNorm", "gamma", "(3,)", "(2,)"});
}

TEST(NormCuda, DeterministicRunToRun) {
  CUDL_REQUIRE_CUDA();
  Tensor x = random_tensor(Shape{8, 2, 16, 17}, 80), dy = random_tensor(Shape{8, 2, 16, 17}, 81);
  Tensor g = Tensor::full(Shape{2}, 1.5);
  const BnOut fwd = bn_train(x, g, g, g, g, kCpu);
  const GradOut a = bn_backward(x, g, fwd.mean, fwd.invstd, dy, Device::cuda());
  const GradOut b = bn_backward(x, g, fwd.mean, fwd.invstd, dy, Device::cuda());
  EXPECT_TRUE(all_close(a.dx, b.dx, 0, 0));
  EXPECT_TRUE(all_close(a.dgamma, b.dgamma, 0, 0));
  Tensor lx = random_tensor(Shape{37, 2000}, 82), ldy = random_tensor(Shape{37, 2000}, 83);
  const LnOut lf = ln_forward(lx, Tensor(), Tensor(), kCpu);
  const GradOut la = ln_backward(lx, Tensor::full(Shape{2000}, 0.5), lf.mean, lf.rstd, ldy, Device::cuda());
  const GradOut lb = ln_backward(lx, Tensor::full(Shape{2000}, 0.5), lf.mean, lf.rstd, ldy, Device::cuda());
  EXPECT_TRUE(all_close(la.dgamma, lb.dgamma, 0, 0));
  EXPECT_TRUE(all_close(la.dx, lb.dx, 0, 0));
}
