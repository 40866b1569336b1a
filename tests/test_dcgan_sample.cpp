// tests/test_dcgan_sample.cpp — a few iterations of cudl-dcgan's models (samples/dcgan/models.hpp,
// small sizes, synthetic images): the CPU and the (emulated) CUDA backend take the same steps, the
// noise layer draws fresh noise each run, freezing keeps G fixed in D's step (weights and
// batch-norm running statistics) and D in G's, and on CUDA each step of the iteration is one graph
// launch with no host copy or synchronisation.
#include <gtest/gtest.h>

#include <vector>

#include "../samples/dcgan/models.hpp"
#include "testing.hpp"
#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif

using namespace cudl;

namespace {

constexpr int64_t kBatch = 6;
const dcgan::Sizes kSizes{8, 4};  // latent 8, G width 4, D width 8

/// Every trainable parameter of the layers, in order, on the host; with `buffers`, the batch norms'
/// running statistics instead (a frozen BatchNorm runs in inference mode, as in Keras, so a step
/// leaves them unchanged).
std::vector<float> weights(const std::vector<LayerPtr>& layers, bool buffers = false) {
  std::vector<float> out;
  for (const auto& l : layers)
    for (const auto& [name, t] : buffers ? l->buffers() : l->params()) {
      const std::vector<float> v = t.to(Device::cpu()).to_vector<float>();
      out.insert(out.end(), v.begin(), v.end());
    }
  return out;
}

std::vector<float> running_stats(const std::vector<LayerPtr>& layers) { return weights(layers, true); }

/// D's targets: (0.9, 0) per row (real, generated).
Tensor d_targets(Device dev) {
  std::vector<float> v(2 * kBatch, 0.f);
  for (int64_t r = 0; r < kBatch; ++r) v[2 * r] = 0.9f;
  return Tensor::from_vector(v, Shape{kBatch, 2}).to(dev);
}

struct Losses {
  std::vector<double> d, g;
};

/// `iterations` GAN iterations (D on real + generated, then G) on synthetic "images" in [-1, 1].
Losses train(dcgan::Gan& gan, Device dev, int iterations) {
  Losses l;
  const Tensor dy = d_targets(dev), zeros = Tensor::zeros(Shape{kBatch, 1}, DType::f32, dev);
  const Tensor ones = Tensor::full(Shape{kBatch, 1}, 1.0, DType::f32, dev);
  for (int i = 0; i < iterations; ++i) {
    const Tensor x = cudl::testing::random_tensor(Shape{kBatch, 1, 28, 28}, 100 + i, -1.f, 1.f, dev);
    l.d.push_back(gan.disc->train_on_batch(x, dy).at("loss"));
    l.g.push_back(gan.combined->train_on_batch(zeros, ones).at("loss"));
  }
  return l;
}

}  // namespace

TEST(DcganSample, FreezingAndFreshNoiseOnCpu) {
  dcgan::Gan gan(kSizes, 2e-4, Device::cpu(), 1);
  const Tensor zeros = Tensor::zeros(Shape{kBatch, 1});
  const auto g0 = weights(gan.g), d0 = weights(gan.d);
  const auto g_stats0 = running_stats(gan.g);
  ASSERT_FALSE(g_stats0.empty());
  EXPECT_TRUE(running_stats(gan.d).empty()) << "D has no batch norm (a frozen one would run on running statistics)";
  const Tensor x = cudl::testing::random_tensor(Shape{kBatch, 1, 28, 28}, 5, -1.f, 1.f);
  const double first = gan.combined->test_on_batch(zeros, zeros).at("loss");
  const double second = gan.combined->test_on_batch(zeros, zeros).at("loss");
  EXPECT_NE(first, second) << "the noise layer draws afresh at every run";
  gan.disc->train_on_batch(x, d_targets(Device::cpu()));
  const auto g1 = weights(gan.g), d1 = weights(gan.d);
  EXPECT_EQ(g1, g0) << "G is frozen in D's step";
  EXPECT_EQ(running_stats(gan.g), g_stats0) << "G's frozen batch norms keep their running statistics";
  EXPECT_NE(d1, d0);
  gan.combined->train_on_batch(zeros, Tensor::full(Shape{kBatch, 1}, 1.0));
  EXPECT_EQ(weights(gan.d), d1) << "D is frozen in G's step";
  EXPECT_NE(weights(gan.g), g1) << "G trains through D's frozen layers";
  EXPECT_NE(running_stats(gan.g), g_stats0) << "G's batch norms train in G's step";
  const Tensor images = gan.gen->predict(Tensor::zeros(Shape{3, kSizes.latent}), 3);
  EXPECT_EQ(images.shape(), (Shape{3, 1, 28, 28}));
  for (float v : images.to_vector<float>()) ASSERT_TRUE(v >= -1.f && v <= 1.f) << v;
}

TEST(DcganSample, CudaTakesTheSameStepsAsCpu) {
  CUDL_REQUIRE_CUDA();
  dcgan::Gan cpu(kSizes, 2e-4, Device::cpu(), 1), gpu(kSizes, 2e-4, Device::cuda(0), 1);
  ASSERT_EQ(weights(cpu.g), weights(gpu.g)) << "the same initial weights";
  ASSERT_EQ(weights(cpu.d), weights(gpu.d));
  const Losses a = train(cpu, Device::cpu(), 3), b = train(gpu, Device::cuda(0), 3);
  for (size_t i = 0; i < a.g.size(); ++i) {
    EXPECT_NEAR(a.d[i], b.d[i], 1e-4) << "iteration " << i;
    EXPECT_NEAR(a.g[i], b.g[i], 1e-4) << "iteration " << i;
  }
  const auto wa = weights(cpu.g), wb = weights(gpu.g);
  ASSERT_EQ(wa.size(), wb.size());
  double worst = 0;
  for (size_t i = 0; i < wa.size(); ++i) worst = std::max(worst, double(std::fabs(wa[i] - wb[i])));
  EXPECT_LT(worst, 1e-4) << "generator weights after 3 iterations";
}

TEST(DcganSample, EachStepIsOneGraphLaunchWithoutHostCopies) {
  CUDL_REQUIRE_CUDA();
#if defined(CUDL_EMULATED)
  const Device gpu = Device::cuda(0);
  dcgan::Gan gan(kSizes, 2e-4, gpu, 1);
  train(gan, gpu, 2);  // warm-up, then capture
  const Tensor x = cudl::testing::random_tensor(Shape{kBatch, 1, 28, 28}, 7, -1.f, 1.f, gpu);
  const Tensor dy = d_targets(gpu), zeros = Tensor::zeros(Shape{kBatch, 1}, DType::f32, gpu);
  const Tensor ones = Tensor::full(Shape{kBatch, 1}, 1.0, DType::f32, gpu);
  cudl_emu::reset_counters();
  gan.disc->train_on_batch(x, dy, false);
  gan.combined->train_on_batch(zeros, ones, false);
  const auto c = cudl_emu::counters();
  EXPECT_EQ(c.graph_launches, 2u);
  EXPECT_EQ(c.memcpy_h2d, 0u) << "noise drawn on the device; batches and targets already there";
  EXPECT_EQ(c.memcpy_d2h, 0u) << "no losses asked for";
  EXPECT_EQ(c.syncs, 0u) << "copies within the device do not wait; nothing is read back";
  EXPECT_EQ(c.mallocs, 0u);
  // Reading the losses waits for the queued steps (the emulator's streams run lazily): the models
  // are not dropped with work still queued on them.
  EXPECT_GT(gan.disc->last_batch_logs().at("loss"), 0.0);
  EXPECT_GT(gan.combined->last_batch_logs().at("loss"), 0.0);
#else
  GTEST_SKIP() << "counts launches and copies through the emulator's counters (an emulated build)";
#endif
}

// 16-bit training (bf16, f16 with loss scaling): the emulated CUDA backend takes the CPU reference's
// steps, and Conv2dTranspose reads and writes the storage type, so no Cast stands before or after
// G's two transposed convolutions, nor after the noise (RandomNormal draws in 16 bits). The Casts
// over f32 that remain, per step: the frozen model's weights (no optimizer step writes their 16-bit
// copies) and the 16-bit weight gradients of the conv family and of the twice-applied d_logit; D's
// step also casts the real batch; f16 adds AmpUnscale.
TEST(DcganSample, SixteenBitStepsOnCudaAsOnCpu) {
  CUDL_REQUIRE_CUDA();
  for (Precision p : {Precision::bf16, Precision::f16}) {
    SCOPED_TRACE(precision_name(p));
    dcgan::Gan f32(kSizes, 2e-4, Device::cpu(), 1, Precision::f32);
    dcgan::Gan cpu(kSizes, 2e-4, Device::cpu(), 1, p), gpu(kSizes, 2e-4, Device::cuda(0), 1, p);
    const int amp = p == Precision::f16 ? 1 : 0;
    // D's step: image 1 + G's frozen g_dense, g_conv, g_up1 kernels and g_up2 kernel, bias 5 + d_conv1,
    // d_conv2 and d_logit gradients 6.
    EXPECT_EQ(cpu.disc->plan_report().kernels_per_step, f32.disc->plan_report().kernels_per_step + 12 + amp)
        << cpu.disc->plan_report().str() << "\n" << f32.disc->plan_report().str();
    // G's step: D's frozen weights 6 + g_conv's and g_up1's dw, g_up2's dw and db 4.
    EXPECT_EQ(cpu.combined->plan_report().kernels_per_step, f32.combined->plan_report().kernels_per_step + 10 + amp)
        << cpu.combined->plan_report().str() << "\n" << f32.combined->plan_report().str();
    const Losses a = train(cpu, Device::cpu(), 3), b = train(gpu, Device::cuda(0), 3);
    for (size_t i = 0; i < a.g.size(); ++i) {
      EXPECT_NEAR(a.d[i], b.d[i], 2e-3) << "iteration " << i;
      EXPECT_NEAR(a.g[i], b.g[i], 2e-3) << "iteration " << i;
    }
  }
}
