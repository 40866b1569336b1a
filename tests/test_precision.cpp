// tests/test_precision.cpp — mixed precision (CompileOptions::precision bf16 / f16): the CPU
// reference of 16-bit storage (widen, fp32 math, round to nearest even on every store), the one
// storage type per call, the graph the model builder makes (Cast nodes, f32 parameters and
// output), and bf16/f16 training on the CPU and the emulated CUDA backend.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>

#include "backend/backend.hpp"
#include "core/half.hpp"
#include "ops/data.hpp"
#include "ops/elementwise.hpp"
#include "ops/precision.hpp"
#include "ops/reduce.hpp"
#include "ops/upsample.hpp"
#include "testing.hpp"
#include "train/model_internals.hpp"

using namespace cudl;

namespace {

using cudl::testing::bits_16;
using cudl::testing::round_16;
using cudl::testing::widen_16;

// A 16-bit CPU tensor holding `v` rounded to nearest even.
Tensor tensor16(const std::vector<float>& v, DType t) {
  return cudl::testing::to_16bit(Tensor::from_vector(v, Shape{static_cast<int64_t>(v.size())}), t);
}

Dataset blobs(int64_t n, uint64_t seed) { return cudl::testing::separable_blobs(n, 8, 3, 2.f, 0.5f, seed); }

Sequential mlp(const std::string& tag) {
  return Sequential(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(16, "tanh"), layers::Dense(3)}, tag);
}

CompileOptions options(Device d, Precision p) {
  CompileOptions o = cudl::testing::classifier_options(d, optim::Adam(0.02), 3);
  o.precision = p;
  return o;
}

Model& model_of(Model& m) { return m; }
Model& model_of(std::unique_ptr<Model>& m) { return *m; }

/// `build(tag)` compiled in f32 and in `p` on `d`: the 16-bit plan runs f32's kernels plus `extra`
/// (+ AmpUnscale in f16). Returns the 16-bit model's History over `epochs` epochs of `train`.
template <class Build>
History fit_16bit_counting(const Build& build, const std::string& tag, Device d, Precision p, int extra,
                           const Dataset& train, int epochs) {
  auto f = build(tag + "_f");
  model_of(f).compile(options(d, Precision::f32));
  auto m = build(tag);
  Model& mm = model_of(m);
  mm.compile(options(d, p));
  const int amp = p == Precision::f16 ? 1 : 0;
  EXPECT_EQ(mm.plan_report().kernels_per_step, model_of(f).plan_report().kernels_per_step + extra + amp)
      << mm.plan_report().str() << "\n" << model_of(f).plan_report().str();
  return mm.fit(train, cudl::testing::quiet_fit(epochs, 16, 9));
}

/// In bf16 and in f16, `build`'s model on emulated CUDA and on the CPU reference (each with the
/// kernel count of fit_16bit_counting): the losses agree within 1e-3 and CUDA's loss falls.
template <class Build>
void expect_16bit_trains_on_cuda_as_on_cpu(const Build& build, const std::string& tag, int extra,
                                           const Dataset& train, int epochs) {
  for (Precision p : {Precision::bf16, Precision::f16}) {
    SCOPED_TRACE(p == Precision::bf16 ? "bf16" : "f16");
    const History c = fit_16bit_counting(build, tag + "_c", Device::cpu(), p, extra, train, epochs);
    const History g = fit_16bit_counting(build, tag + "_g", Device::cuda(), p, extra, train, epochs);
    EXPECT_TRUE(cudl::testing::losses_close(g, c, 1e-3));
    EXPECT_LT(g.metrics.at("loss").back(), g.metrics.at("loss").front()) << "learns";
  }
}

}  // namespace

TEST(Precision, NamesAndStorageTypes) {
  EXPECT_EQ(parse_precision("bf16"), Precision::bf16);
  EXPECT_EQ(parse_precision("bfloat16"), Precision::bf16);
  EXPECT_EQ(parse_precision("f16"), Precision::f16);
  EXPECT_EQ(parse_precision("fp16"), Precision::f16);
  EXPECT_STREQ(precision_name(Precision::bf16), "bf16");
  EXPECT_STREQ(precision_name(Precision::f16), "f16");
  EXPECT_EQ(precision_storage(Precision::bf16), DType::bf16);
  EXPECT_EQ(precision_storage(Precision::f16), DType::f16);
  EXPECT_EQ(precision_storage(Precision::tf32), DType::f32);
  EXPECT_NE(cudl::testing::error_message([] { parse_precision("f8"); }).find("'f8' is not one of f32, tf32, bf16, f16"),
            std::string::npos);
}

// The CPU reference of a listed op on 16-bit storage: widen, the f32 function, round to nearest even.
// 1 + 3·2^-9 is exactly between two bf16 values' neighbourhood: truncation and RNE differ on it.
TEST(Precision, CpuWidensComputesInFp32AndRoundsToNearestEven) {
  for (DType t : {DType::bf16, DType::f16}) {
    const float ulp = t == DType::bf16 ? 0x1p-7f : 0x1p-10f;  // spacing of the type just above 1
    std::vector<float> a{1.f, 1.f, -3.f, 1000.f, 0.1f}, b{0.75f * ulp, 0.25f * ulp, 0.3f, 0.37f, 0.2f};
    Tensor ta = tensor16(a, t), tb = tensor16(b, t), tc = Tensor::empty(Shape{5}, t);
    run_op(OpKind::Binary, {TensorView::of(ta), TensorView::of(tb)}, {TensorView::of(tc)},
           ops::BinaryAttrs{BinaryOp::Add}.to_op_attrs());
    const auto c = bits_16(tc);
    for (size_t i = 0; i < a.size(); ++i) {
      const float wa = widen_16(round_16(a[i], t), t), wb = widen_16(round_16(b[i], t), t);
      EXPECT_EQ(c[i], round_16(wa + wb, t)) << dtype_name(t) << " element " << i;
    }
    // 1 + 0.75 ulp rounds up to 1 + ulp (truncation would give 1); 1 + 0.25 ulp rounds down to 1.
    EXPECT_EQ(widen_16(c[0], t), 1.f + ulp) << dtype_name(t);
    EXPECT_EQ(widen_16(c[1], t), 1.f) << dtype_name(t);
  }
}

TEST(Precision, OneStorageTypePerCallAndUnlistedOpsStayF32) {
  Tensor a = tensor16({1, 2}, DType::bf16), b = Tensor::full(Shape{2}, 1.0), c = Tensor::empty(Shape{2}, DType::bf16);
  const std::string mixed = cudl::testing::error_message([&] {
    run_op(OpKind::Binary, {TensorView::of(a), TensorView::of(b)}, {TensorView::of(c)},
           ops::BinaryAttrs{BinaryOp::Add}.to_op_attrs(), nullptr, "layer/add");
  });
  EXPECT_NE(mixed.find("Binary (layer/add): input 1 (2,) has dtype f32 but input 0 has bf16"), std::string::npos)
      << mixed;
  Tensor h = tensor16({1, 2}, DType::f16);
  const std::string cross = cudl::testing::error_message([&] {
    run_op(OpKind::Binary, {TensorView::of(a), TensorView::of(h)}, {TensorView::of(c)},
           ops::BinaryAttrs{BinaryOp::Add}.to_op_attrs());
  });
  EXPECT_NE(cross.find("has dtype f16 but input 0 has bf16"), std::string::npos) << cross;
  // Reduce is not listed: 16-bit storage is rejected there, on the CPU as on CUDA.
  Tensor x = Tensor::empty(Shape{1, 1, 1, 2}, DType::bf16), y = Tensor::empty(Shape{}, DType::bf16);
  std::memset(x.data(), 0, 4);
  const std::string sm = cudl::testing::error_message([&] {
    run_op(OpKind::Reduce, {TensorView::of(x)}, {TensorView::of(y)}, ops::ReduceAttrs{}.to_op_attrs());
  });
  EXPECT_NE(sm.find("bf16"), std::string::npos) << sm;
  EXPECT_FALSE(ops::storage_slots(OpKind::Reduce).any());
  EXPECT_TRUE(ops::storage_slots(OpKind::Upsample2d).any());
  // A variadic op's inputs past slot 31 follow bit 31 (Concat: every input).
  EXPECT_TRUE(ops::storage_slots(OpKind::Concat).input(40));
  EXPECT_FALSE(ops::storage_slots(OpKind::Linear).input(40));
  EXPECT_TRUE(ops::storage_slots(OpKind::Linear).any());
}

// The graph of a bf16 model: parameters, gradients and optimizer state f32; activations 16-bit;
// one Cast per weight and per bias and one for the input; the loss reads the bf16 logits and writes
// their gradient in bf16, so neither needs one; predict still returns f32; the plan says so.
TEST(Precision, Bf16ModelKeepsFp32MastersAndConvertsAtTheBoundaries) {
  Sequential f = mlp("mp_f"), b = mlp("mp_b");
  f.compile(options(Device::cpu(), Precision::f32));
  b.compile(options(Device::cpu(), Precision::bf16));
  const PlanReport pf = f.plan_report(), pb = b.plan_report();
  EXPECT_NE(pb.str().find("precision bf16 (bf16 activations and GEMM inputs, fp32 math, weights and optimizer "
                          "state)"),
            std::string::npos)
      << pb.str();
  EXPECT_EQ(pb.param_bytes, pf.param_bytes);
  EXPECT_EQ(pb.grad_bytes, pf.grad_bytes);
  EXPECT_EQ(pb.state_bytes, pf.state_bytes);
  for (const auto& [name, t] : b.state_tensors())
    if (dtype_is_float(t.dtype())) EXPECT_EQ(t.dtype(), DType::f32) << name;
  std::printf("activations: f32 %zu bytes, bf16 %zu bytes (%.1f%%) + %zu bytes of weight copies\n",
              pf.activation_bytes, pb.activation_bytes, 100.0 * pb.activation_bytes / pf.activation_bytes,
              pb.weight_copy_bytes);
  // Forward: x: 1 Cast (the optimizer step writes the 16-bit copies of the 3 weights and 3 biases,
  // which the forward reads; the loss reads the bf16 logits). Backward: dense1's bias, whose gradient
  // dense2's GEMM sums through the relu (DRELU_BGRAD) in bf16: 1. The loss writes dlogits in bf16;
  // the other weight and bias gradients come out of the GEMMs in f32, straight into the masters'.
  EXPECT_EQ(pb.kernels_per_step, pf.kernels_per_step + 2) << pb.str() << "\n" << pf.str();
  EXPECT_EQ(pb.persistent_copy_bytes, (8 * 16 + 16 + 16 * 16 + 16 + 16 * 3 + 3) * 2u) << pb.str();
  EXPECT_EQ(pf.persistent_copy_bytes, 0u);
  EXPECT_NE(pb.str().find("16-bit weight copies written by the optimizer step"), std::string::npos) << pb.str();
  Tensor y = b.predict(blobs(4, 3).x);
  EXPECT_EQ(y.dtype(), DType::f32);
}

// A small convnet in bf16: Conv2d (ReLU fused), BatchNorm and MaxPool2d are listed for 16-bit
// storage, so the only Casts are the MLP test's kind: the input, each conv/dense weight and bias,
// and their gradients (BatchNorm's gamma and beta stay f32 and need none). It learns.
TEST(Precision, Bf16ConvnetRunsConvBatchNormAndPoolingIn16Bits) {
  auto cnn = [](const std::string& tag) {
    // The blobs' 8 features as 8 channels of 1x1 images (the 1x1 conv is a dense layer, the pool a
    // 1x1 window: the model learns like an MLP, and every op of the block runs).
    return Sequential(
        Shape{8, 1, 1},
        {layers::Conv2d(16, 1, "relu"), layers::BatchNorm(), layers::MaxPool2d(1), layers::Flatten(), layers::Dense(3)},
        tag);
  };
  auto images = [](const Dataset& d) { return Dataset{d.x.reshape(Shape{d.x.shape()[0], 8, 1, 1}), d.y}; };
  Sequential f = cnn("cnn_f"), b = cnn("cnn_b");
  f.compile(options(Device::cpu(), Precision::f32));
  b.compile(options(Device::cpu(), Precision::bf16));
  const PlanReport pf = f.plan_report(), pb = b.plan_report();
  // Forward: x: 1 Cast (conv and dense weights and biases: persistent copies the optimizer step
  // writes; the loss reads the bf16 logits); backward: the conv's 2 parameter gradients: 2 (the dense
  // layer's GEMM writes its weight and bias gradients in f32; the loss, dlogits in bf16).
  EXPECT_EQ(pb.kernels_per_step, pf.kernels_per_step + 3) << pb.str() << "\n" << pf.str();
  for (const auto& [name, t] : b.state_tensors())
    if (dtype_is_float(t.dtype())) EXPECT_EQ(t.dtype(), DType::f32) << name;
  const Dataset train = images(blobs(150, 1)), test = images(blobs(90, 2));
  f.fit(train, cudl::testing::quiet_fit(8, 16, 9));
  b.fit(train, cudl::testing::quiet_fit(8, 16, 9));
  const double af = f.evaluate(test).metrics.at("accuracy"), ab = b.evaluate(test).metrics.at("accuracy");
  std::printf("convnet accuracy: f32 %.3f, bf16 %.3f\n", af, ab);
  EXPECT_GE(ab, 0.9) << "bf16 learns";
  EXPECT_NEAR(ab, af, 0.05);
}

// bf16 / f16 training on the CPU reference: learns like f32, but not bitwise (storage is rounded);
// a bf16 model whose every layer is overridden to f32 is the f32 model, bitwise.
TEST(Precision, Bf16AndF16TrainCloseToFp32OnCpu) {
  Dataset train = blobs(150, 1), test = blobs(90, 2);
  auto run = [&](const std::string& tag, Precision p, bool override_all) {
    Sequential m = mlp(tag);
    if (override_all)
      for (auto& l : m.layers()) l->set_precision(Precision::f32);
    m.compile(options(Device::cpu(), p));
    History h = m.fit(train, cudl::testing::quiet_fit(4, 16, 9));
    const double acc = m.evaluate(test).metrics.at("accuracy");
    return std::make_tuple(cudl::testing::flat_weights(m), h.metrics["loss"], acc);
  };
  const auto [wf, lf, af] = run("ct_f", Precision::f32, false);
  const auto [wb, lb, ab] = run("ct_b", Precision::bf16, false);
  const auto [wh, lh, ah] = run("ct_h", Precision::f16, false);
  const auto [wo, lo, ao] = run("ct_o", Precision::bf16, true);
  EXPECT_EQ(wo, wf) << "every layer in f32: the f32 run";
  EXPECT_NE(wb, wf) << "bf16 storage must round";
  EXPECT_NE(wh, wf) << "f16 storage must round";
  EXPECT_NE(wb, wh);
  EXPECT_GE(ab, 0.95) << "bf16 learns";
  EXPECT_GE(ah, 0.95) << "f16 learns";
  EXPECT_NEAR(ab, af, 0.04);
  EXPECT_NEAR(ah, af, 0.04);
  ASSERT_EQ(lb.size(), lf.size());
  EXPECT_LT(lb.back(), lb.front());
  EXPECT_LT(lh.back(), lh.front());
}

// Layer-level override inside a bf16 model: the overridden layer computes in f32 (its GEMM gets f32
// inputs through Casts), so the report lists it and the run differs from an all-bf16 one.
TEST(Precision, LayerOverrideInABf16Model) {
  Sequential m = mlp("lo_m"), a = mlp("lo_a");
  m.layers().back()->set_precision(Precision::f32);
  m.compile(options(Device::cpu(), Precision::bf16));
  a.compile(options(Device::cpu(), Precision::bf16));
  EXPECT_NE(m.plan_report().str().find("; dense3 in f32"), std::string::npos) << m.plan_report().str();
  Dataset d = blobs(48, 7);
  m.fit(d, cudl::testing::quiet_fit(1, 16, 9));
  a.fit(d, cudl::testing::quiet_fit(1, 16, 9));
  EXPECT_NE(cudl::testing::flat_weights(m), cudl::testing::flat_weights(a));
}

namespace {

// u8 "images" (n, 1, 28, 28) whose class is which third of the image is bright; i32 labels.
Dataset u8_images(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> x(static_cast<size_t>(n * 784));
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    y[i] = static_cast<int32_t>(rng() % 3);
    for (int64_t p = 0; p < 784; ++p) {
      const bool lit = (p / 28) / 10 == y[i];
      x[i * 784 + p] = static_cast<uint8_t>(lit ? 150 + rng() % 100 : rng() % 60);
    }
  }
  Dataset d{Tensor::from_vector(x, Shape{n, 1, 28, 28}), Tensor::from_vector(y, Shape{n})};
  d.mean = 0.2f, d.std = 0.3f;
  return d;
}

}  // namespace

// The activation bytes of a training step (the report after fit describes the program that ran):
// u8 images are normalised straight into bf16, and the loss reads the bf16 logits and writes their
// gradient in bf16, so every activation and its gradient is half as large.
TEST(Precision, Bf16HalvesTheActivationBytesOfAnMlpStep) {
  const Dataset d = u8_images(256, 5);
  auto report = [&](Precision p) {
    Sequential m(Shape{1, 28, 28}, {layers::Flatten(), layers::Dense(128, "relu"), layers::Dense(10)}, "act");
    m.compile(options(Device::cpu(), p));
    m.fit(d, cudl::testing::quiet_fit(1, 128, 9));
    return m.plan_report();
  };
  const PlanReport f = report(Precision::f32), b = report(Precision::bf16);
  const double ratio = static_cast<double>(b.activation_bytes) / static_cast<double>(f.activation_bytes);
  std::printf("MLP 784-128-10, batch 128: activations f32 %zu bytes, bf16 %zu bytes (%.1f%%), weight copies %zu "
              "bytes in the arena, %zu persistent\n",
              f.activation_bytes, b.activation_bytes, 100 * ratio, b.weight_copy_bytes, b.persistent_copy_bytes);
  EXPECT_LE(ratio, 0.55) << b.str();
  EXPECT_EQ(f.weight_copy_bytes, 0u);
  // The 16-bit weights, 2 bytes each, persistent (the optimizer step writes them); in the arena one
  // 16-bit gradient: dense1's bias, summed by the logits layer's GEMM through the relu; the other
  // gradients are written in f32 by the GEMMs.
  EXPECT_EQ(b.persistent_copy_bytes, (784 * 128 + 128 + 128 * 10 + 10) * 2u);
  EXPECT_EQ(b.weight_copy_bytes, 128 * 2u);
}

// The matmul family runs natively in 16 bits on CUDA: an MLP of Dense layers with ReLU (Linear with
// its fused epilogues, LinearBackward through the relu below) trains in bf16 / f16 on the emulated
// CUDA backend as on the CPU reference. The two differ per op by summation order only (the GEMMs'
// fp32 sums, rounded once), so after 3 epochs the losses agree to 1e-3 and the f32 master weights to
// 1e-3 of their scale (measured: 4e-5 bf16, 1e-5 f16), while the f32 run is 10x further away.
TEST(Precision, ReluMlpTrainsInBf16AndF16OnCudaAsOnCpu) {
  CUDL_REQUIRE_CUDA();
  Dataset train = blobs(96, 11);
  auto run = [&](const std::string& tag, Device d, Precision p) {
    Sequential m(Shape{8}, {layers::Dense(32, "relu"), layers::Dense(16, "relu"), layers::Dense(3)}, tag);
    m.compile(options(d, p));
    History h = m.fit(train, cudl::testing::quiet_fit(3, 16, 9));
    return std::make_pair(cudl::testing::flat_weights(m), h);
  };
  const auto [w32, h32] = run("cm_f", Device::cpu(), Precision::f32);
  for (Precision p : {Precision::bf16, Precision::f16}) {
    SCOPED_TRACE(p == Precision::bf16 ? "bf16" : "f16");
    const auto [wc, hc] = run("cm_c", Device::cpu(), p);
    const auto [wg, hg] = run("cm_g", Device::cuda(), p);
    EXPECT_TRUE(cudl::testing::losses_close(hg, hc, 1e-3));
    ASSERT_EQ(wg.size(), wc.size());
    double scale = 0, diff = 0, diff32 = 0;
    for (size_t i = 0; i < wc.size(); ++i) {
      scale = std::max(scale, static_cast<double>(std::fabs(wc[i])));
      diff = std::max(diff, static_cast<double>(std::fabs(wg[i] - wc[i])));
      diff32 = std::max(diff32, static_cast<double>(std::fabs(w32[i] - wc[i])));
    }
    std::printf("%s: max |cuda - cpu| weight %.3g, max |f32 - cpu| %.3g, scale %.3g\n",
                p == Precision::bf16 ? "bf16" : "f16", diff, diff32, scale);
    EXPECT_LE(diff, 1e-3 * scale);
    EXPECT_GT(diff32, 10 * diff) << "the 16-bit runs must differ from f32 more than from each other";
  }
}

// --- the persistent 16-bit weight copies the optimizer step writes --------------------------------

namespace {

using cudl::detail::ModelInternals;

/// The parameters of `m` by "layer.param", read through const access (not a write: mutable params()
/// and state_tensors() count as writes and would make the next step refresh every copy, hiding a
/// missed refresh).
std::map<std::string, Tensor> masters_of(const Model& m) {
  std::map<std::string, Tensor> out;
  for (const LayerPtr& l : m.layers())
    for (const auto& [k, t] : std::as_const(*l).params()) out.emplace(l->name() + "." + k, t);
  return out;
}

/// masters_of(m) flattened in order, on the host.
std::vector<float> weights_of(const Model& m) {
  std::vector<float> w;
  for (const LayerPtr& l : m.layers())
    for (const auto& [k, t] : std::as_const(*l).params()) {
      const std::vector<float> v = t.to(Device::cpu()).to_vector<float>();
      w.insert(w.end(), v.begin(), v.end());
    }
  return w;
}

/// Every persistent 16-bit copy of `m` is round(its f32 master), bit for bit; `count` copies of type `t`.
void expect_copies_are_rounded_masters(Model& m, DType t, size_t count, const std::string& when) {
  SCOPED_TRACE(when);
  const std::map<std::string, Tensor> copies = ModelInternals::weight_copies(m);
  ASSERT_EQ(copies.size(), count);
  const std::map<std::string, Tensor> masters = masters_of(m);
  for (const auto& [name, copy] : copies) {
    ASSERT_TRUE(masters.count(name)) << name;
    EXPECT_EQ(copy.dtype(), t) << name;
    EXPECT_EQ(bits_16(copy), bits_16(cudl::testing::to_16bit(masters.at(name), t))) << name << " != round(master)";
  }
}

/// The relu MLP of the CUDA test, compiled for `d` and `p` (f16: loss scaling from `scale`), with the
/// fused copies (the default) or the program that casts every weight at each step's start.
/// `decay`: SGD with momentum and weight decay, global-norm clipping and an L1/L2 penalty on dense2
/// (what runs between the gradients and the step, and inside it), instead of plain Adam.
std::unique_ptr<Sequential> copy_mlp(const std::string& tag, Device d, Precision p, bool fused, double scale = 65536,
                                     bool decay = false) {
  auto m = std::make_unique<Sequential>(
      Shape{8}, std::vector<LayerPtr>{layers::Dense(32, "relu"), layers::Dense(16, "relu"), layers::Dense(3)}, tag);
  ModelInternals::set_fused_weight_copies(*m, fused);
  CompileOptions o = options(d, p);
  if (decay) {
    o.optimizer = optim::SGD(0.05, 0.9, false, 1e-3);
    o.optimizer.clip_norm = 0.5;
    m->layers()[1]->set_regularizer(1e-4f, 1e-3f);
  }
  o.loss_scale.initial_scale = scale;
  m->compile(o);
  return m;
}

std::vector<Device> precision_devices() {
  std::vector<Device> d = {Device::cpu()};
  if (cudl::testing::cuda_available()) d.push_back(Device::cuda());
  return d;
}

}  // namespace

// The optimizer step writes the 16-bit copy of every weight and bias (no Cast at the step's start):
// training with it gives bitwise the weights of the program that casts each step, in bf16 and in f16
// (whose loss scale starts at 2^30, so the first steps overflow and are skipped), with Adam and with
// SGD + weight decay + global-norm clipping + an L1/L2 penalty, on the CPU and on the emulated CUDA
// backend (captured steps); and every copy is round(master) at the end.
TEST(Precision, FusedWeightCopiesTrainBitwiseAsCastingEachStep) {
  const Dataset train = blobs(96, 11);
  for (Device d : precision_devices())
    for (Precision p : {Precision::bf16, Precision::f16}) {
      const DType t = precision_storage(p);
      SCOPED_TRACE(::testing::Message() << d << " " << precision_name(p));
      for (bool decay : {false, true}) {
        SCOPED_TRACE(decay ? "SGD, weight decay, clipping, penalty" : "Adam");
        auto fused = copy_mlp("wc_f", d, p, true, 1073741824.0, decay);
        auto cast = copy_mlp("wc_c", d, p, false, 1073741824.0, decay);
        EXPECT_EQ(fused->plan_report().kernels_per_step + 6, cast->plan_report().kernels_per_step)
            << "6 Casts (3 weights, 3 biases) fewer per step";
        fused->fit(train, cudl::testing::quiet_fit(3, 16, 9));
        cast->fit(train, cudl::testing::quiet_fit(3, 16, 9));
        if (p == Precision::f16) {
          EXPECT_GT(fused->skipped_steps(), 0) << "the huge initial scale must overflow";
          EXPECT_EQ(fused->skipped_steps(), cast->skipped_steps());
        }
        EXPECT_EQ(weights_of(*fused), weights_of(*cast));
        EXPECT_TRUE(ModelInternals::weight_copies(*cast).empty());
        expect_copies_are_rounded_masters(*fused, t, 6, "after fit");
      }
    }
}

// A skipped f16 step (overflow: the loss scale is far too large) leaves the masters and so the copies:
// still round(master), equal to the copies before the step.
TEST(Precision, SkippedF16StepLeavesCopiesEqualToTheUnchangedMasters) {
  const Dataset d = blobs(16, 3);
  for (Device dev : precision_devices()) {
    SCOPED_TRACE(::testing::Message() << dev);
    auto m = copy_mlp("wc_s", dev, Precision::f16, true, 65536);
    m->train_on_batch(d.x, d.y, false);  // a clean step: the copies are written
    expect_copies_are_rounded_masters(*m, DType::f16, 6, "after a clean step");
    const std::vector<float> before = cudl::testing::flat_weights(*m);
    std::map<std::string, std::vector<uint16_t>> copies_before;
    for (const auto& [k, c] : ModelInternals::weight_copies(*m)) copies_before[k] = bits_16(c);
    // x * 1e4: the logits and the scaled gradients overflow f16 on the way back.
    Tensor big = d.x.clone();
    float* v = big.data_as<float>();
    for (int64_t i = 0; i < big.numel(); ++i) v[i] *= 3e4f;
    m->train_on_batch(big, d.y, false);
    EXPECT_EQ(m->skipped_steps(), 1) << "the step must overflow";
    EXPECT_EQ(cudl::testing::flat_weights(*m), before) << "a skipped step changes no master";
    for (const auto& [k, c] : ModelInternals::weight_copies(*m)) EXPECT_EQ(bits_16(c), copies_before.at(k)) << k;
    expect_copies_are_rounded_masters(*m, DType::f16, 6, "after a skipped step");
  }
}

// The copies follow every write of the weights from the host: Model::set_weights, Layer::set_weights,
// a checkpoint's load, and another model's training (in f32, so it keeps no copies) of a shared layer. Each fused model is run next
// to a Cast model given the same writes; if a step read a stale copy, its forward would use the old
// weights and the two would differ (with the refresh, or the shared model's version step, removed
// from sync_weight_copies, they do). The test reads weights through const access only.
TEST(Precision, WeightCopiesFollowHostWritesAndSharedLayers) {
  const Dataset train = blobs(64, 5), other = blobs(64, 6);
  const std::string ckpt = ::testing::TempDir() + "cudl_weight_copies.safetensors";
  for (Device d : precision_devices())
    for (Precision p : {Precision::bf16, Precision::f16}) {
      const DType t = precision_storage(p);
      SCOPED_TRACE(::testing::Message() << d << " " << precision_name(p));
      auto fused = copy_mlp("wh_f", d, p, true), cast = copy_mlp("wh_c", d, p, false);
      auto both = [&](const std::function<void(Model&)>& f) {
        f(*fused);
        f(*cast);
      };
      auto expect_same = [&](const std::string& when) {
        EXPECT_EQ(weights_of(*fused), weights_of(*cast)) << when;
        expect_copies_are_rounded_masters(*fused, t, 6, when);
      };
      both([&](Model& m) { m.fit(train, cudl::testing::quiet_fit(1, 16, 9)); });
      expect_same("after fit");
      // A checkpoint of the trained weights, then other weights set from the host: one step each.
      save_checkpoint(*cast, ckpt);
      const std::vector<Tensor> w0 = cast->get_weights();
      std::vector<Tensor> w1;
      for (size_t k = 0; k < w0.size(); ++k) w1.push_back(cudl::testing::random_tensor(w0[k].shape(), 77 + k));
      both([&](Model& m) { m.set_weights(w1); });
      both([&](Model& m) { m.train_on_batch(other.x, other.y, false); });
      expect_same("after Model::set_weights and a step");
      both([&](Model& m) { m.layers()[1]->set_weights({w0[2], w0[3]}); });
      both([&](Model& m) { m.train_on_batch(other.x, other.y, false); });
      expect_same("after Layer::set_weights and a step");
      both([&](Model& m) { load_checkpoint(m, ckpt); });
      both([&](Model& m) { m.fit(train, cudl::testing::quiet_fit(1, 16, 3)); });
      expect_same("after load_checkpoint and fit");
      // Another model, in f32, trains the first Dense layer of each (shared): the next step must see it.
      auto share = [&](Model& m, const std::string& tag) {
        Var x = Input(Shape{8});
        Var y = (*layers::Dense(3))((*m.layers()[0])(x));
        auto s = std::make_unique<Model>(x, y, tag);
        s->compile(options(d, Precision::f32));
        s->fit(other, cudl::testing::quiet_fit(1, 16, 4));
        return s;
      };
      auto sf = share(*fused, "wh_sf");
      auto sc = share(*cast, "wh_sc");
      both([&](Model& m) { m.train_on_batch(other.x, other.y, false); });
      expect_same("after a model sharing dense1 was compiled and trained");
      // Now only training (no compile, no host write) changes the shared layer between the steps.
      sf->train_on_batch(train.x, train.y, false);
      sc->train_on_batch(train.x, train.y, false);
      EXPECT_EQ(weights_of(*sf), weights_of(*sc));
      both([&](Model& m) { m.train_on_batch(other.x, other.y, false); });
      expect_same("after a model sharing dense1 trained it again");
    }
  std::remove(ckpt.c_str());
}

// Softmax / log-softmax, layer norm, average pooling and the losses run natively in 16 bits on CUDA
// too: no Casts around them (bf16 adds only the Casts of the input and of the conv's two parameter
// gradients), and a model with all of them trains in bf16 / f16 on the
// emulated CUDA backend as on the CPU reference (losses within 1e-3, weights within 1e-3 of their
// scale after 2 epochs; measured 1e-4 for f16 with the softmax layer, whose last-ulp differences Adam
// then amplifies to 4e-3 in a third epoch), with the loss reading the 16-bit logits directly.
TEST(Precision, NormPoolSoftmaxAndLossesTrainIn16BitsOnCudaAsOnCpu) {
  CUDL_REQUIRE_CUDA();
  auto images = [](const Dataset& d) {  // each of the 8 features as a constant 2x2 channel
    const int64_t n = d.x.shape()[0];
    const std::vector<float> v = d.x.to_vector<float>();
    std::vector<float> img(static_cast<size_t>(n * 8 * 4));
    for (int64_t i = 0; i < n * 8; ++i)
      for (int k = 0; k < 4; ++k) img[i * 4 + k] = v[i];
    return Dataset{Tensor::from_vector(img, Shape{n, 8, 2, 2}), d.y};
  };
  const Dataset train = images(blobs(96, 11)), test = images(blobs(60, 12));
  struct Run {
    std::vector<float> w;
    History h;
    double acc;
  };
  auto build = [](const std::string& tag, bool nll) {
    return nll ? Sequential(Shape{8, 2, 2},
                            {layers::Conv2d(16, 1, "relu"), layers::GlobalAvgPool(), layers::LayerNorm(),
                             layers::Dense(3, "log_softmax")},
                            tag)
               : Sequential(Shape{8, 2, 2},
                            {layers::Conv2d(16, 1, "relu"), layers::AvgPool2d(2, 1), layers::Flatten(),
                             layers::LayerNorm(), layers::Dense(16, "softmax"), layers::Dense(3)},
                            tag);
  };
  auto run = [&](const std::string& tag, Device d, Precision p, bool nll) {
    Sequential m = build(tag, nll);
    CompileOptions o = options(d, p);
    if (nll) o.loss = "nll", o.metrics = {};
    m.compile(o);
    const PlanReport r32 = [&] {
      Sequential f = build(tag + "_f", nll);
      CompileOptions of = o;
      of.precision = Precision::f32;
      f.compile(of);
      return f.plan_report();
    }();
    // Casts: x in the forward (the weights' 16-bit copies are written by the optimizer step), the
    // conv's dw and db in the backward; f16 also unscales the gradients (AmpUnscale).
    const int amp = p == Precision::f16 ? 1 : 0;
    EXPECT_EQ(m.plan_report().kernels_per_step, r32.kernels_per_step + 3 + amp) << m.plan_report().str();
    History h = m.fit(train, cudl::testing::quiet_fit(2, 16, 9));
    const double acc = nll ? 0.0 : m.evaluate(test).metrics.at("accuracy");
    return Run{cudl::testing::flat_weights(m), h, acc};
  };
  for (bool nll : {false, true})
    for (Precision p : {Precision::bf16, Precision::f16}) {
      SCOPED_TRACE(std::string(p == Precision::bf16 ? "bf16" : "f16") + (nll ? " log_softmax + nll" : " softmax + ce"));
      const Run c = run("np_c", Device::cpu(), p, nll), g = run("np_g", Device::cuda(), p, nll);
      EXPECT_TRUE(cudl::testing::losses_close(g.h, c.h, 1e-3));
      EXPECT_LT(g.h.metrics.at("loss").back(), g.h.metrics.at("loss").front()) << "learns";
      ASSERT_EQ(g.w.size(), c.w.size());
      double scale = 0, diff = 0;
      for (size_t i = 0; i < c.w.size(); ++i) {
        scale = std::max(scale, static_cast<double>(std::fabs(c.w[i])));
        diff = std::max(diff, static_cast<double>(std::fabs(g.w[i] - c.w[i])));
      }
      std::printf("%s %s: max |cuda - cpu| weight %.3g, scale %.3g, accuracy cuda %.3f cpu %.3f\n",
                  p == Precision::bf16 ? "bf16" : "f16", nll ? "nll" : "ce", diff, scale, g.acc, c.acc);
      EXPECT_LE(diff, 1e-3 * scale);
      if (!nll) EXPECT_NEAR(g.acc, c.acc, 0.05);
    }
}

// Upsampling, slicing and joining in 16 bits: UpSampling2d (Upsample2d), Slice and Concatenate
// (Slice, Concat; their gradients SliceBackward and Slice) read and write the storage type, so a
// bf16 / f16 model has no Casts around them: the kernels per step are f32's plus the input's Cast and
// the two convs' dw and db Casts (+ AmpUnscale in f16). It trains on the emulated CUDA backend as on
// the CPU reference.
TEST(Precision, UpsampleSliceAndConcatTrainIn16BitsOnCudaAsOnCpu) {
  CUDL_REQUIRE_CUDA();
  auto images = [](const Dataset& d) {  // the 8 features as a 2x4 image in each of 2 channels
    const int64_t n = d.x.shape()[0];
    const std::vector<float> v = d.x.to_vector<float>();
    std::vector<float> img(static_cast<size_t>(n * 16));
    for (int64_t i = 0; i < n; ++i)
      for (int k = 0; k < 16; ++k) img[i * 16 + k] = v[i * 8 + k % 8] * (k < 8 ? 1.f : -0.5f);
    return Dataset{Tensor::from_vector(img, Shape{n, 2, 2, 4}), d.y};
  };
  const Dataset train = images(blobs(96, 21));
  auto build = [](const std::string& tag) {
    Var x = Input(Shape{2, 2, 4});
    Var h = (*layers::Conv2d(4, 1, "relu"))(x);
    h = (*layers::UpSampling2d(2, "bilinear"))(h);                        // (4, 4, 8)
    Var a = (*layers::Slice(1, 0, 2))(h), b = (*layers::Slice(1, 1, 3))(h);  // channels 0-1, 1-3
    h = (*layers::Concatenate(1))({a, b});                                // (5, 4, 8)
    h = (*layers::Conv2d(3, 1, "relu"))(h);
    return std::make_unique<Model>(x, (*layers::Dense(3))((*layers::Flatten())(h)), tag);
  };
  expect_16bit_trains_on_cuda_as_on_cpu(build, "usc", 5, train, 2);
}

// Recurrent layers in 16 bits: RecurrentSequence reads xp and writes h in the storage type, and its
// backward reads dh and writes dxp in it (the recurrence itself stays f32), so a bf16 / f16 model with
// an LSTM, a GRU and a SimpleRNN has no Casts around them: the kernels per step are f32's plus the
// input's Cast (+ AmpUnscale in f16). It trains on the emulated CUDA backend as on the CPU reference.
TEST(Precision, RecurrentLayersTrainIn16BitsOnCudaAsOnCpu) {
  CUDL_REQUIRE_CUDA();
  const Dataset flat = blobs(96, 23);  // the 8 features as 4 steps of 2
  const Dataset train{flat.x.reshape(Shape{96, 4, 2}), flat.y};
  auto build = [](const std::string& tag) {
    return Sequential(Shape{4, 2}, {layers::LSTM(7, true), layers::GRU(5, true), layers::SimpleRNN(4), layers::Dense(3)},
                      tag);
  };
  expect_16bit_trains_on_cuda_as_on_cpu(build, "rnn16", 1, train, 3);
}

// Slice, SliceBackward, Concat and Permute copy 16-bit elements: CUDA equals the CPU bitwise, and
// both equal the f32 op on the widened values. A call mixing storage types is rejected.
TEST(Precision, DataMovementOpsCopy16BitElementsOnCudaAsOnCpu) {
  CUDL_REQUIRE_CUDA();
  for (DType st : cudl::testing::k16BitTypes)
    for (Device d : {Device::cpu(), Device::cuda(0)}) {
      SCOPED_TRACE(std::string(dtype_name(st)) + " on " + d.str());
      const Tensor x32 = cudl::testing::random_tensor(Shape{3, 5, 4}, 7);
      const Tensor x = cudl::testing::to_storage(x32, st).to(d);
      Tensor ys = Tensor::empty(Shape{3, 2, 4}, st, d);
      run_op(OpKind::Slice, {TensorView::of(x)}, {TensorView::of(ys)}, ops::SliceAttrs{1, 2}.to_op_attrs());
      Tensor dx = Tensor::empty(Shape{3, 5, 4}, st, d);
      run_op(OpKind::SliceBackward, {TensorView::of(ys)}, {TensorView::of(dx)}, ops::SliceAttrs{1, 2}.to_op_attrs());
      Tensor yc = Tensor::empty(Shape{3, 7, 4}, st, d);
      run_op(OpKind::Concat, {TensorView::of(x), TensorView::of(ys)}, {TensorView::of(yc)},
             ops::ConcatAttrs{1}.to_op_attrs());
      Tensor yp = Tensor::empty(Shape{4, 3, 5}, st, d);
      ops::PermuteAttrs pa;
      pa.perm[0] = 2, pa.perm[1] = 0, pa.perm[2] = 1;
      run_op(OpKind::Permute, {TensorView::of(x)}, {TensorView::of(yp)}, pa.to_op_attrs());
      // Expected: the f32 ops on x32 rounded once (a copy of rounded values is the rounded copy).
      auto f32 = [&](OpKind op, std::vector<Tensor> in, Shape out, const OpAttrs& a) {
        Tensor y = Tensor::empty(out, DType::f32);
        if (in.size() == 1)
          run_op(op, {TensorView::of(in[0])}, {TensorView::of(y)}, a);
        else
          run_op(op, {TensorView::of(in[0]), TensorView::of(in[1])}, {TensorView::of(y)}, a);
        return cudl::testing::to_storage(y, st);
      };
      const Tensor xr = cudl::testing::widened(cudl::testing::to_storage(x32, st));
      const Tensor es = f32(OpKind::Slice, {xr}, Shape{3, 2, 4}, ops::SliceAttrs{1, 2}.to_op_attrs());
      EXPECT_TRUE(cudl::testing::equal_16bit(ys.to(Device::cpu()), es)) << "Slice";
      EXPECT_TRUE(cudl::testing::equal_16bit(
          dx.to(Device::cpu()),
          f32(OpKind::SliceBackward, {cudl::testing::widened(es)}, Shape{3, 5, 4}, ops::SliceAttrs{1, 2}.to_op_attrs())))
          << "SliceBackward";
      EXPECT_TRUE(cudl::testing::equal_16bit(
          yc.to(Device::cpu()),
          f32(OpKind::Concat, {xr, cudl::testing::widened(es)}, Shape{3, 7, 4}, ops::ConcatAttrs{1}.to_op_attrs())))
          << "Concat";
      EXPECT_TRUE(cudl::testing::equal_16bit(yp.to(Device::cpu()), f32(OpKind::Permute, {xr}, Shape{4, 3, 5}, pa.to_op_attrs())))
          << "Permute";
      const DType other = st == DType::bf16 ? DType::f16 : DType::bf16;
      Tensor bad = Tensor::empty(Shape{3, 7, 4}, other, d);
      const std::string msg = cudl::testing::error_message([&] {
        run_op(OpKind::Concat, {TensorView::of(x), TensorView::of(ys)}, {TensorView::of(bad)},
               ops::ConcatAttrs{1}.to_op_attrs());
      });
      EXPECT_NE(msg.find("Concat"), std::string::npos) << msg;
      EXPECT_NE(msg.find(dtype_name(other)), std::string::npos) << msg;
    }
}
