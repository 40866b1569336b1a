// tests/test_model.cpp — the Keras-style API: fit/evaluate/predict, determinism, CPU vs CUDA,
// learning-rate changes under graph replay, and clear errors for bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "data/prefetch.hpp"
#include "graph/executor.hpp"
#include "ops/optim.hpp"
#include "testing.hpp"
#include "train/model_internals.hpp"
#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif

using namespace cudl;
using cudl::testing::all_close;

namespace {

// Three Gaussian blobs in 8-D: linearly separable, so a small MLP reaches high accuracy fast.
Dataset blobs(int64_t n, uint64_t seed) { return cudl::testing::separable_blobs(n, 8, 3, 2.f, 0.5f, seed); }

// Unnamed layers: the model names them (dense1, dense2), so every model built by this code is the
// same model, with the same initial weights for the same seed.
Sequential mlp(const std::string& tag) {
  return Sequential(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)}, tag);
}

CompileOptions options(Device d, uint64_t seed = 3) {
  return cudl::testing::classifier_options(d, optim::Adam(0.02), seed);
}

FitOptions fit_options(int epochs) { return cudl::testing::quiet_fit(epochs, 16, 9); }

std::vector<float> weights(Model& m) { return cudl::testing::flat_weights(m); }

}  // namespace

TEST(Model, FitLearnsAndEvaluateAgrees) {
  Dataset train = blobs(150, 1), test = blobs(60, 2);  // 150 = 9 batches of 16 + a tail of 6
  Sequential m = mlp("fit");
  m.compile(options(Device::cpu()));
  EXPECT_GT(m.plan_report().arena_bytes, 0u);
  EXPECT_GT(m.plan_report().kernels_per_step, 5);
  History h = m.fit(train, fit_options(6));
  ASSERT_EQ(h.epochs(), 6);
  EXPECT_LT(h.metrics["loss"].back(), h.metrics["loss"].front());
  EXPECT_GT(h.metrics["accuracy"].back(), 0.9);
  EvalResult r = m.evaluate(test, 32);
  EXPECT_GT(r.metrics["accuracy"], 0.9);
  Tensor p = m.predict(test.x, 25);
  ASSERT_EQ(p.shape(), (Shape{60, 3}));
  int right = 0;
  auto pv = p.to_vector<float>();
  auto yv = test.y.to_vector<int32_t>();
  for (int i = 0; i < 60; ++i) {
    int arg = static_cast<int>(std::max_element(pv.begin() + 3 * i, pv.begin() + 3 * i + 3) - (pv.begin() + 3 * i));
    right += arg == yv[i];
  }
  EXPECT_NEAR(right / 60.0, r.metrics["accuracy"], 1e-9) << "predict and evaluate agree";
  EXPECT_NE(m.summary().find("dense1 (dense)"), std::string::npos) << m.summary();
}

TEST(Model, ValidationSplitAndHistory) {
  Sequential m = mlp("val");
  m.compile(options(Device::cpu()));
  FitOptions f = fit_options(2);
  f.validation_split = 0.2;
  History h = m.fit(blobs(100, 4), f);
  ASSERT_EQ(h.metrics["val_loss"].size(), 2u);
  ASSERT_EQ(h.metrics["val_accuracy"].size(), 2u);
}

TEST(Model, SameSeedGivesBitwiseIdenticalRunsOnCpu) {
  Dataset d = blobs(64, 5);
  Sequential a = mlp("det_a"), b = mlp("det_b");  // built from scratch: nothing copied between them
  a.compile(options(Device::cpu()));
  b.compile(options(Device::cpu()));
  EXPECT_EQ(weights(a), weights(b)) << "same code and seed: bitwise equal before training";
  History ha = a.fit(d, fit_options(3)), hb = b.fit(d, fit_options(3));
  EXPECT_EQ(ha.metrics["loss"], hb.metrics["loss"]);
  EXPECT_EQ(weights(a), weights(b));
  Sequential c = mlp("det_c");
  c.compile(options(Device::cpu(), /*seed=*/4));
  Sequential a0 = mlp("det_a0");
  a0.compile(options(Device::cpu()));
  EXPECT_NE(weights(c), weights(a0)) << "another seed gives other weights";
}

TEST(Model, InitialWeightsDependOnSeedPositionAndNameOnly) {
  // Models built earlier in the process, or layers with other names, change nothing.
  Sequential warmup = mlp("warm");
  warmup.compile(options(Device::cpu()));
  auto named = Sequential(
      Shape{8},
      {layers::Dense(DenseOptions(16).activation("relu").name("first")), layers::Dense(DenseOptions(3).name("second"))},
      "named");
  named.compile(options(Device::cpu()));
  Sequential plain = mlp("plain");
  plain.compile(options(Device::cpu()));
  EXPECT_EQ(weights(named), weights(plain));
  EXPECT_EQ(weights(warmup), weights(plain));
  EXPECT_EQ(plain.layers()[0]->name(), "dense1");
  EXPECT_EQ(plain.layers()[1]->name(), "dense2");
}

TEST(Model, SameSeedGivesTheSameInitialWeightsOnCpuAndCuda) {
  CUDL_REQUIRE_CUDA();
  Sequential c = mlp("init_c"), g = mlp("init_g");
  c.compile(options(Device::cpu()));
  g.compile(options(Device::cuda(0)));
  EXPECT_EQ(weights(c), weights(g)) << "Philox uniform initialisers are bitwise equal on both backends";
}

TEST(Model, LearningRateChangeTakesEffect) {
  Sequential m = mlp("lr");
  m.compile(options(Device::cpu()));
  Dataset d = blobs(32, 6);
  m.fit(d, fit_options(1));
  m.set_learning_rate(0.0);
  auto before = weights(m);
  m.fit(d, fit_options(2));
  EXPECT_EQ(weights(m), before) << "lr 0: Adam must not move the weights";
}

TEST(Model, CpuAndCudaGiveTheSameLosses) {
  CUDL_REQUIRE_CUDA();
  Dataset d = blobs(48, 7);
  Sequential c = mlp("par_c"), g = mlp("par_g");
  c.compile(options(Device::cpu()));
  g.compile(options(Device::cuda(0)));
  ASSERT_EQ(weights(c), weights(g));  // same code and seed: same start, nothing copied
  EXPECT_TRUE(cudl::testing::losses_close(c.fit(d, fit_options(3)), g.fit(d, fit_options(3))));
  EXPECT_TRUE(all_close(Tensor::from_vector(weights(g), Shape{(int64_t)weights(g).size()}),
                        Tensor::from_vector(weights(c), Shape{(int64_t)weights(c).size()}), 1e-4, 1e-3));
}

TEST(Model, PrecisionIsACompileOptionReportedInThePlan) {
  EXPECT_EQ(parse_precision("tf32"), Precision::tf32);
  EXPECT_EQ(parse_precision("fp32"), Precision::f32);
  EXPECT_NE(cudl::testing::error_message([] { parse_precision("bf17"); }).find("precision 'bf17' is not one of"),
            std::string::npos);
  {
    cudl::testing::EnvGuard env("CUDL_ALLOW_TF32", "1");
    EXPECT_EQ(CompileOptions{}.precision, Precision::tf32);
  }
  EXPECT_EQ(CompileOptions{}.precision, Precision::f32) << "off by default";
  // On the CPU backend tf32 changes nothing, and the report says so.
  Dataset d = blobs(48, 7);
  Sequential a = mlp("prec_a"), b = mlp("prec_b");
  CompileOptions o = options(Device::cpu());
  a.compile(o);
  o.precision = Precision::tf32;
  b.compile(o);
  EXPECT_NE(a.plan_report().str().find("precision f32"), std::string::npos) << a.plan_report().str();
  EXPECT_NE(b.plan_report().str().find("precision tf32 (no effect on the cpu backend"), std::string::npos)
      << b.plan_report().str();
  EXPECT_EQ(a.fit(d, fit_options(1)).metrics["loss"], b.fit(d, fit_options(1)).metrics["loss"]);
}

TEST(Model, Tf32TrainsCloseToFp32OnCudaButNotBitwise) {
  CUDL_REQUIRE_CUDA();
  Dataset d = blobs(48, 7);
  Sequential f = mlp("tf_f"), t = mlp("tf_t");
  CompileOptions o = options(Device::cuda(0));
  f.compile(o);
  o.precision = Precision::tf32;
  t.compile(o);
  EXPECT_NE(t.plan_report().str().find("precision tf32 (TF32 tensor cores for GEMMs and convolutions)"),
            std::string::npos)
      << t.plan_report().str();
  const History hf = f.fit(d, fit_options(3)), ht = t.fit(d, fit_options(3));
  EXPECT_TRUE(cudl::testing::losses_close(hf, ht, 2e-2));
  EXPECT_NE(weights(f), weights(t)) << "TF32 GEMMs must round their inputs";
}

TEST(Model, LayerPrecisionOverridesTheModelsOnCuda) {
  CUDL_REQUIRE_CUDA();
  Dataset d = blobs(48, 7);
  auto trained = [&](const std::string& tag, Precision model, std::vector<std::optional<Precision>> per_layer) {
    Sequential m = mlp(tag);
    for (size_t i = 0; i < per_layer.size(); ++i) m.layers()[i]->set_precision(per_layer[i]);
    CompileOptions o = options(Device::cuda(0));
    o.precision = model;
    m.compile(o);
    m.fit(d, fit_options(2));
    return std::make_pair(weights(m), m.plan_report().str());
  };
  const auto f32 = trained("lp_f", Precision::f32, {});
  const auto tf32 = trained("lp_t", Precision::tf32, {});
  const auto all_f32 = trained("lp_o", Precision::tf32, {Precision::f32, Precision::f32});
  const auto mixed = trained("lp_m", Precision::tf32, {std::nullopt, Precision::f32});
  EXPECT_EQ(all_f32.first, f32.first) << "every layer overridden to f32: the f32 run, bitwise";
  EXPECT_NE(tf32.first, f32.first);
  EXPECT_NE(mixed.first, f32.first) << "dense1 still on TF32";
  EXPECT_NE(mixed.first, tf32.first) << "dense2 in f32";
  EXPECT_NE(mixed.second.find("precision tf32 (TF32 tensor cores for GEMMs and convolutions); dense2 in f32"),
            std::string::npos)
      << mixed.second;
}

TEST(Model, CudaLearningRateChangeTakesEffectUnderGraphReplay) {
  CUDL_REQUIRE_CUDA();
  Sequential m = mlp("lrg");
  m.compile(options(Device::cuda(0)));
  Dataset d = blobs(64, 8);
  FitOptions f = fit_options(1);
  f.batch_size = 16;  // 4 steps: the graph is captured at step 2 and replayed after
  m.fit(d, f);
  m.set_learning_rate(0.0);
  auto before = weights(m);
  m.fit(d, f);
  EXPECT_EQ(weights(m), before);
}

TEST(Model, SameSeedGivesBitwiseIdenticalRunsOnCuda) {
  CUDL_REQUIRE_CUDA();
  Dataset d = blobs(48, 9);
  auto run = [&](const std::string& tag) {
    Sequential m = mlp(tag);
    m.compile(options(Device::cuda(0)));
    return m;
  };
  Sequential a = run("cdet_a"), b = run("cdet_b");
  EXPECT_EQ(weights(a), weights(b));
  History ha = a.fit(d, fit_options(2)), hb = b.fit(d, fit_options(2));
  EXPECT_EQ(ha.metrics["loss"], hb.metrics["loss"]);
  EXPECT_EQ(weights(a), weights(b));
}

TEST(Model, BadInputGivesClearErrors) {
  Sequential m = mlp("bad");
  EXPECT_THROW(m.fit(blobs(10, 1), fit_options(1)), Error);  // not compiled
  m.compile(options(Device::cpu()));
  Dataset wrong{Tensor::zeros(Shape{10, 7}), Tensor::zeros(Shape{10}, DType::i32)};
  try {
    m.fit(wrong, fit_options(1));
    FAIL();
  } catch (const Error& e) {
    std::string s = e.what();
    EXPECT_NE(s.find("(10, 7)"), std::string::npos) << s;
    EXPECT_NE(s.find("(10, 8)"), std::string::npos) << s;
  }
  Dataset float_labels{Tensor::zeros(Shape{10, 8}), Tensor::zeros(Shape{10})};
  EXPECT_THROW(m.fit(float_labels, fit_options(1)), Error);
  CompileOptions o = options(Device::cpu());
  EXPECT_THROW(o.loss = "hinge", Error);
}

TEST(Model, EveryOptimizerLearns) {
  Dataset d = blobs(96, 10);
  for (Optimizer o : {optim::SGD(0.1, 0.9, true, 1e-4), optim::Adam(0.02), optim::AdamW(0.02, 0.01),
                      optim::RMSprop(0.01), optim::Adagrad(0.1)}) {
    Sequential m = mlp("opt" + std::to_string(static_cast<int>(o.kind)));
    CompileOptions c = options(Device::cpu());
    c.optimizer = o;
    m.compile(c);
    History h = m.fit(d, fit_options(4));
    EXPECT_LT(h.metrics["loss"].back(), 0.7 * h.metrics["loss"].front()) << "optimizer kind " << o.kind;
    EXPECT_GT(h.metrics["accuracy"].back(), 0.85) << "optimizer kind " << o.kind;
  }
}

TEST(Model, RegularizationAndClippingChangeTheUpdate) {
  Dataset d = blobs(32, 11);
  auto run = [&](float l2, double clip) {
    auto d1 = layers::Dense(DenseOptions(16).activation("relu").name("rc_d1")),
         d2 = layers::Dense(DenseOptions(3).name("rc_d2"));
    d1->set_regularizer(0.f, l2);
    Sequential m(Shape{8}, {d1, d2}, "rc");
    CompileOptions c = options(Device::cpu());
    c.optimizer = optim::SGD(0.1);
    c.optimizer.clip_norm = clip;
    m.compile(c);  // same names and seed: same initial weights in every run
    m.fit(d, fit_options(1));
    return weights(m);
  };
  const auto plain = run(0.f, 0), l2 = run(0.5f, 0), clipped = run(0.f, 1e-3);
  EXPECT_NE(plain, l2);
  EXPECT_NE(plain, clipped);
  // With a tiny clip norm each step moves the weights by at most lr * 1e-3 in norm.
  const auto init = [&] {
    auto d1 = layers::Dense(DenseOptions(16).activation("relu").name("rc_d1")),
         d2 = layers::Dense(DenseOptions(3).name("rc_d2"));
    Sequential m(Shape{8}, {d1, d2}, "rc");
    m.compile(options(Device::cpu()));
    return weights(m);
  }();
  double moved = 0;
  for (size_t i = 0; i < init.size(); ++i) moved += (clipped[i] - init[i]) * (clipped[i] - init[i]);
  EXPECT_LE(std::sqrt(moved), 2 * 0.1 * 1e-3 * 1.0001 + 1e-6) << "two steps of at most lr * clip_norm";
}

TEST(Model, EnsembleAveragesPredictions) {
  Dataset d = blobs(30, 12);
  Sequential a = mlp("ens_a"), b = mlp("ens_b");
  a.compile(options(Device::cpu()));
  b.compile(options(Device::cpu()));
  Tensor pa = a.predict(d.x), pb = b.predict(d.x), pe = ensemble_predict({&a, &b}, d);
  auto va = pa.to_vector<float>(), vb = pb.to_vector<float>(), ve = pe.to_vector<float>();
  for (size_t i = 0; i < ve.size(); ++i) EXPECT_NEAR(ve[i], 0.5f * (va[i] + vb[i]), 1e-6);
}

void expect_profile_table(Device d) {
  Sequential m = mlp("prof");
  m.compile(options(d));
  m.set_profiling(true);
  m.fit(blobs(32, 13), fit_options(1));
  const std::string t = m.profile_table();
  EXPECT_NE(t.find("LinearBackward"), std::string::npos) << d << "\n" << t;
  EXPECT_NE(t.find("AdamStep"), std::string::npos) << d << "\n" << t;
}

TEST(Model, ProfileTableListsTheStepsOpsOnCpu) { expect_profile_table(Device::cpu()); }

TEST(Model, ProfileTableListsTheStepsOpsOnCuda) {
  CUDL_REQUIRE_CUDA();
  expect_profile_table(Device::cuda(0));
}

namespace {
// Trains the same model twice from the same weights, with the training rows on the device and
// streamed through the prefetcher; returns {losses, val losses, weights} of both runs.
struct PlacementRuns {
  History resident, streamed;
  std::vector<float> w_resident, w_streamed;
  double eval_resident = 0, eval_streamed = 0;
};
PlacementRuns train_both_ways(Device d, const std::string& tag) {
  Dataset train = blobs(150, 14), val = blobs(37, 15);  // 9 batches of 16 + a tail of 6; odd eval tail
  PlacementRuns r;
  Sequential a = mlp(tag + "_a"), b = mlp(tag + "_b");
  a.compile(options(d));
  b.compile(options(d));
  FitOptions f = fit_options(3);
  f.validation_data = &val;
  f.data_placement = DataPlacement::Device;
  r.resident = a.fit(train, f);
  f.data_placement = DataPlacement::Stream;
  r.streamed = b.fit(train, f);
  r.w_resident = weights(a);
  r.w_streamed = weights(b);
  r.eval_resident = a.evaluate(val, 8, DataPlacement::Device).metrics["loss"];
  r.eval_streamed = b.evaluate(val, 8, DataPlacement::Stream).metrics["loss"];
  return r;
}
}  // namespace

TEST(Model, StreamedTrainingRowsGiveTheSameRunAsDeviceResidentOnesOnCpu) {
  PlacementRuns r = train_both_ways(Device::cpu(), "stream_c");
  EXPECT_EQ(r.resident.metrics["loss"], r.streamed.metrics["loss"]);
  EXPECT_EQ(r.resident.metrics["val_loss"], r.streamed.metrics["val_loss"]);
  EXPECT_EQ(r.w_resident, r.w_streamed);
  EXPECT_EQ(r.eval_resident, r.eval_streamed);
  EXPECT_LT(r.streamed.metrics["loss"].back(), r.streamed.metrics["loss"].front());
}

TEST(Model, StreamedTrainingRowsGiveTheSameRunAsDeviceResidentOnesOnCuda) {
  CUDL_REQUIRE_CUDA();
  // Under the emulator's lazy streams a copy that the compute stream does not wait for, or a
  // slot overwritten before the step that reads it has run, shows up as different losses.
#if defined(CUDL_EMULATED)
  cudl_emu::reset_counters();
#endif
  PlacementRuns r = train_both_ways(Device::cuda(0), "stream_g");
#if defined(CUDL_EMULATED)
  EXPECT_GT(cudl_emu::counters().memcpy_h2d, 0u);
#endif
  EXPECT_EQ(r.resident.metrics["loss"], r.streamed.metrics["loss"]);
  EXPECT_EQ(r.resident.metrics["val_loss"], r.streamed.metrics["val_loss"]);
  EXPECT_EQ(r.w_resident, r.w_streamed);
  EXPECT_EQ(r.eval_resident, r.eval_streamed);
  // And the streamed CUDA run matches the CPU reference (same names and seed: same initial weights).
  PlacementRuns c = train_both_ways(Device::cpu(), "stream_g");
  ASSERT_EQ(c.streamed.metrics["loss"].size(), r.streamed.metrics["loss"].size());
  for (size_t e = 0; e < c.streamed.metrics["loss"].size(); ++e)
    EXPECT_NEAR(r.streamed.metrics["loss"][e], c.streamed.metrics["loss"][e],
                1e-4 * std::max(1.0, c.streamed.metrics["loss"][e]))
        << "epoch " << e;
  EXPECT_NEAR(r.eval_streamed, c.eval_streamed, 1e-4 * std::max(1.0, c.eval_streamed));
}

// u8 rows (normalised by the data stage with the dataset's mean and std), a batch that does not
// divide the set, several epochs: CUDA, resident and streamed, follows the CPU reference.
TEST(Model, U8ImagesTrainTheSameOnCpuAndCuda) {
  CUDL_REQUIRE_CUDA();
  Dataset f = blobs(70, 21), d;
  std::vector<uint8_t> px(static_cast<size_t>(f.x.numel()));
  const auto xv = f.x.to_vector<float>();
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(std::clamp((xv[i] + 3.f) * 40.f, 0.f, 255.f));
  d.x = Tensor::from_vector(px, f.x.shape());
  d.y = f.y;
  d.mean = 0.45f;
  d.std = 0.3f;
  std::vector<double> loss[3];
  double eval[3] = {};
  const std::pair<Device, DataPlacement> runs[3] = {{Device::cpu(), DataPlacement::Device},
                                                    {Device::cuda(0), DataPlacement::Device},
                                                    {Device::cuda(0), DataPlacement::Stream}};
  for (int k = 0; k < 3; ++k) {
    Sequential m = mlp("u8");  // same names and seed: same initial weights
    m.compile(options(runs[k].first));
    FitOptions fo = fit_options(3);
    fo.data_placement = runs[k].second;
    loss[k] = m.fit(d, fo).metrics["loss"];
    eval[k] = m.evaluate(d, 16, runs[k].second).metrics["loss"];
  }
  for (int k = 1; k < 3; ++k) {
    ASSERT_EQ(loss[k].size(), loss[0].size());
    for (size_t e = 0; e < loss[0].size(); ++e)
      EXPECT_NEAR(loss[k][e], loss[0][e], 1e-4 * std::max(1.0, loss[0][e])) << "run " << k << " epoch " << e;
    EXPECT_NEAR(eval[k], eval[0], 1e-4 * std::max(1.0, eval[0])) << "run " << k;
  }
  EXPECT_EQ(loss[1], loss[2]);  // resident and streamed CUDA runs gather the same rows
  EXPECT_LT(loss[0].back(), loss[0].front());
}

TEST(Model, PrefetcherRejectsBadRows) {
  Tensor x = Tensor::zeros(Shape{5, 3}), y = Tensor::zeros(Shape{4}, DType::i32);
  EXPECT_NE(cudl::testing::error_message([&] { data::BatchPrefetcher p(x, y, 2, Device::cpu()); }).find("(4,)"),
            std::string::npos);
  data::BatchPrefetcher p(x, Tensor::zeros(Shape{5}, DType::i32), 2, Device::cpu());
  const int32_t rows[3] = {0, 7, 1};
  EXPECT_NE(cudl::testing::error_message([&] { p.stage(0, rows, 2); }).find("row 7 out of range for 5 rows"),
            std::string::npos);
  EXPECT_NE(cudl::testing::error_message([&] { p.stage(0, rows, 3); }).find("3 rows for a batch of 2"),
            std::string::npos);
}

// --- dynamic loss scaling (f16) ----------------------------------------------------------------------

namespace {

// An f16 model whose first loss scale (2^24) makes the 16-bit loss gradient overflow: dpred is up to
// 1/16 per element, times 2^24 is far above f16's 65504.
CompileOptions f16_options(Device d) {
  CompileOptions o = options(d);
  o.precision = Precision::f16;
  o.loss_scale.initial_scale = std::ldexp(1.0, 24);
  return o;
}

struct ScaledRun {
  int64_t skipped = 0;
  double scale = 0;
  std::vector<double> losses;  // per epoch
};

// Steps one batch at a time until the scale stops overflowing, checking each step: a skipped step
// leaves every weight as it was and halves the scale; then trains 4 epochs with fit.
ScaledRun train_scaled(Device dev, const std::string& tag) {
  Sequential m = mlp(tag);
  m.compile(f16_options(dev));
  EXPECT_EQ(m.loss_scale(), std::ldexp(1.0, 24));
  EXPECT_EQ(m.skipped_steps(), 0);
  Dataset d = blobs(96, 11);
  auto [x, y] = std::make_pair(d.slice(0, 16).x, d.slice(0, 16).y);
  int64_t skipped = 0;
  for (int step = 0; step < 40; ++step) {
    const std::vector<float> before = weights(m);
    m.train_on_batch(x, y, false);
    const int64_t now = m.skipped_steps();
    EXPECT_EQ(m.loss_scale(), std::ldexp(1.0, 24 - static_cast<int>(now))) << dev << " step " << step;
    if (now == skipped) {
      EXPECT_NE(weights(m), before) << dev << " step " << step << " was not skipped and must train";
      break;
    }
    EXPECT_EQ(now, skipped + 1) << dev << " step " << step;
    EXPECT_EQ(weights(m), before) << dev << " skipped step " << step << " changed a weight";
    skipped = now;
  }
  ScaledRun r;
  const History h = m.fit(d, fit_options(4));
  r.losses = h.metrics.at("loss");
  r.skipped = m.skipped_steps();
  r.scale = m.loss_scale();
  return r;
}

}  // namespace

TEST(LossScale, F16SkipsOverflowingStepsHalvingTheScaleThenTrainsOnCpu) {
  const ScaledRun r = train_scaled(Device::cpu(), "ls_cpu");
  EXPECT_GT(r.skipped, 0) << "2^24 must overflow f16 at first";
  EXPECT_LT(r.skipped, 16);
  EXPECT_EQ(r.scale, std::ldexp(1.0, 24 - static_cast<int>(r.skipped))) << "halved once per skip, never grown";
  ASSERT_EQ(r.losses.size(), 4u);
  EXPECT_LT(r.losses.back(), 0.5 * r.losses.front()) << "trains once the scale fits";
  for (double l : r.losses) EXPECT_TRUE(std::isfinite(l));
}

TEST(LossScale, OptionsAreCheckedAndOnlyF16ScalesTheLoss) {
  Sequential m = mlp("ls_opts");
  CompileOptions o = options(Device::cpu());
  m.compile(o);
  EXPECT_EQ(m.loss_scale(), 1.0) << "f32 does not scale its loss";
  EXPECT_EQ(m.skipped_steps(), 0);
  for (const auto& [names, bad] : std::vector<std::pair<std::string, LossScaleOptions>>{
           {"initial_scale 0", {0, 2, 0.5, 10}},
           {"initial_scale 1e+39", {1e39, 2, 0.5, 10}},
           {"growth_factor 0.5", {1, 0.5, 0.5, 10}},
           {"backoff_factor 2", {1, 2, 2, 10}},
           {"growth_interval 0", {1, 2, 0.5, 0}}}) {
    o.loss_scale = bad;
    const std::string msg = cudl::testing::error_message([&] { m.compile(o); });
    EXPECT_NE(msg.find("loss_scale." + names), std::string::npos) << msg;
  }
  // One f16 layer in an f32 model: its gradients are 16-bit too, so the model scales its loss.
  Sequential one = mlp("ls_layer");
  one.layers()[0]->set_precision(Precision::f16);
  one.compile(options(Device::cpu()));
  EXPECT_EQ(one.loss_scale(), 65536.0) << "torch's initial scale 2^16";
}

// The f16 step's graph: the loss gradient is seeded from amp.scale (a view, no copy), AmpUnscale is
// the first optimizer node and reads every parameter gradient, clipping follows it, and the step
// skips on hyper[2]. An f32 model has none of it.
TEST(LossScale, UnscaleOpensTheOptimizerPhaseAndTheStepSkipsOnItsFlag) {
  for (Precision p : {Precision::f16, Precision::f32}) {
    SCOPED_TRACE(precision_name(p));
    Sequential m = mlp(std::string("ls_graph_") + precision_name(p));
    CompileOptions o = options(Device::cpu());
    o.precision = p;
    o.optimizer.clip_norm = 1.0;
    m.compile(o);
    auto exec = detail::ModelInternals::training_step(m, blobs(32, 3), 16, graph::ExecutorOptions{});
    const graph::Graph& g = exec->graph();
    int unscale = -1, clip = -1, step = -1, first_optimizer = -1;
    for (int i = 0; i < static_cast<int>(g.nodes().size()); ++i) {
      const graph::Node& n = g.nodes()[i];
      if (n.phase == graph::Phase::Optimizer && !n.is_view() && first_optimizer < 0) first_optimizer = i;
      if (n.op == OpKind::AmpUnscale) unscale = i;
      if (n.op == OpKind::ClipGradNorm) clip = i;
      if (n.op == OpKind::AdamStep) step = i;
      if (n.op == OpKind::CrossEntropyLoss && n.phase == graph::Phase::Loss) {
        const graph::ValueId seed = n.inputs.at(2);
        if (p == Precision::f32) {
          EXPECT_EQ(seed, graph::kNone);
        } else {
          ASSERT_NE(seed, graph::kNone);
          const graph::Value& v = g.value(seed);
          EXPECT_EQ(v.view_offset, 0u);
          ASSERT_NE(v.view_of, graph::kNone);
          EXPECT_EQ(g.value(v.view_of).name, "amp.scale");
        }
      }
    }
    ASSERT_GE(step, 0);
    ASSERT_GE(clip, 0);
    if (p == Precision::f32) {
      EXPECT_EQ(unscale, -1);
      EXPECT_EQ(g.nodes()[step].attrs.i[ops::kSkipOnFlagSlot], 0);
      continue;
    }
    EXPECT_EQ(unscale, first_optimizer) << "the gradients are unscaled before anything reads them";
    EXPECT_LT(unscale, clip);
    EXPECT_EQ(g.nodes()[step].attrs.i[ops::kSkipOnFlagSlot], 1);
    const graph::Node& u = g.nodes()[unscale];
    EXPECT_EQ(u.inputs.size(), 2u + 4u) << "state, hyper, then the 4 parameter gradients";
    EXPECT_EQ(u.inputs[1], g.nodes()[step].inputs[0]) << "the flag it writes is the hyper the step reads";
    EXPECT_EQ(ops::AmpUnscaleAttrs::from(u.attrs).interval, 2000);
  }
}

// The scaler's machinery inside a captured CUDA step, independent of the 16-bit kernels: an f16
// model whose layers are all kept in f32 still scales its loss, and an initial scale near f32's
// maximum overflows the f32 gradients of the first steps.
TEST(LossScale, ScalerRunsInsideTheCapturedStepOnCudaAsOnCpu) {
  CUDL_REQUIRE_CUDA();
  auto make = [](Device dev) {
    auto m = std::make_unique<Sequential>(mlp("ls_f32"));
    for (const LayerPtr& l : m->layers()) l->set_precision(Precision::f32);
    CompileOptions o = options(dev);
    o.precision = Precision::f16;
    o.loss_scale.initial_scale = std::ldexp(1.0, 127);
    m->compile(o);
    return m;
  };
  auto cpu = make(Device::cpu()), cuda = make(Device::cuda(0));
  Dataset d = blobs(16, 7);
  std::vector<float> x = d.x.to_vector<float>();
  for (float& v : x) v *= 64;  // large activations: h^T dpred overflows f32 for the first scales
  d.x = Tensor::from_vector(x, d.x.shape());
  int64_t skipped = 0;
  for (int step = 0; step < 12; ++step) {
    const std::vector<float> before = weights(*cuda);
    cpu->train_on_batch(d.x, d.y, false);
#if defined(CUDL_EMULATED)
    cudl_emu::reset_counters();  // reading the weights above waited for the previous step
#endif
    cuda->train_on_batch(d.x, d.y, /*read_logs=*/false);
#if defined(CUDL_EMULATED)
    if (step >= 1) {  // captured at its second run, replayed after
      EXPECT_EQ(cudl_emu::counters().syncs, 0u) << "step " << step << ": no host synchronisation";
      EXPECT_EQ(cudl_emu::counters().graph_launches, 1u) << "step " << step << ": one graph launch";
    }
#endif
    const int64_t now = cuda->skipped_steps();
    EXPECT_EQ(now, cpu->skipped_steps()) << "step " << step;
    EXPECT_EQ(cuda->loss_scale(), cpu->loss_scale()) << "step " << step;
    EXPECT_EQ(cuda->loss_scale(), std::ldexp(1.0, 127 - static_cast<int>(now))) << "step " << step;
    if (now > skipped) EXPECT_EQ(weights(*cuda), before) << "skipped step " << step << " changed a weight";
    else EXPECT_NE(weights(*cuda), before) << "step " << step << " was clean and must train";
    skipped = now;
  }
  EXPECT_GT(skipped, 1) << "a scale of 2^127 must overflow f32 gradients at first";
  EXPECT_LT(skipped, 12) << "and then train";
  EXPECT_TRUE(all_close(Tensor::from_vector(weights(*cuda), Shape{int64_t(weights(*cuda).size())}),
                        Tensor::from_vector(weights(*cpu), Shape{int64_t(weights(*cpu).size())}), 1e-5, 1e-4));
}

TEST(LossScale, F16OnEmulatedCudaMatchesCpuWithNoSyncAndOneGraphLaunchPerStep) {
  CUDL_REQUIRE_CUDA();
#if defined(CUDL_EMULATED)
  {  // An f16 step needs the 16-bit CUDA kernels of every op the model lists in ops/precision.hpp.
    Sequential probe = mlp("ls_probe");
    probe.compile(f16_options(Device::cuda(0)));
    Dataset d = blobs(16, 7);
    try {
      probe.train_on_batch(d.x, d.y, false);
    } catch (const Error& e) {
      const std::string msg = e.what();
      if (msg.find("f16") != std::string::npos && msg.find("expected f32") != std::string::npos)
        GTEST_SKIP() << "an op of this model has no 16-bit CUDA path on this branch yet: " << msg;
      throw;
    }
  }
  const ScaledRun cpu = train_scaled(Device::cpu(), "ls_c"), cuda = train_scaled(Device::cuda(0), "ls_g");
  EXPECT_EQ(cuda.skipped, cpu.skipped) << "the same steps overflow";
  EXPECT_EQ(cuda.scale, cpu.scale);
  EXPECT_TRUE(cudl::testing::losses_close(History{{{"loss", cuda.losses}}}, History{{{"loss", cpu.losses}}}, 2e-2));
  // The scale lives on the device: a captured step reads and updates it without the host.
  Sequential m = mlp("ls_count"), twin = mlp("ls_count");
  m.compile(f16_options(Device::cuda(0)));
  twin.compile(f16_options(Device::cpu()));
  Dataset d = blobs(16, 7);
  for (int i = 0; i < 2; ++i) m.train_on_batch(d.x, d.y, false);  // warm-up, then capture
  (void)m.last_batch_logs();
  cudl_emu::reset_counters();
  for (int i = 0; i < 3; ++i) m.train_on_batch(d.x, d.y, /*read_logs=*/false);
  EXPECT_EQ(cudl_emu::counters().syncs, 0u) << "no host synchronisation per step";
  (void)m.last_batch_logs();
  EXPECT_EQ(cudl_emu::counters().graph_launches, 3u) << "one graph launch per step";
  for (int i = 0; i < 5; ++i) twin.train_on_batch(d.x, d.y, false);
  EXPECT_GT(m.skipped_steps(), 0);
  EXPECT_EQ(m.skipped_steps(), twin.skipped_steps()) << "the replayed graph skipped as the CPU did";
  EXPECT_EQ(m.loss_scale(), twin.loss_scale());
#else
  GTEST_SKIP() << "counts synchronisations through the emulator's counters (an emulated build)";
#endif
}
