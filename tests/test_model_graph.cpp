// tests/test_model_graph.cpp — a model owns its layer graph: dropping it frees its memory, models
// build independently (also on two threads), layers shared between models share parameters,
// freezing applies per compiled model, per-batch training, and weights in and out.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "testing.hpp"
#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"
#endif

using namespace cudl;
using cudl::testing::error_message;

namespace {

Dataset blobs(int64_t n, uint64_t seed) { return cudl::testing::separable_blobs(n, 8, 3, 2.f, 0.5f, seed); }

Sequential mlp() { return Sequential(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)}, "mlp"); }

CompileOptions options(Device d, uint64_t seed = 3) {
  return cudl::testing::classifier_options(d, optim::Adam(0.02), seed);
}

FitOptions fit_options(int epochs, int64_t batch = 16) { return cudl::testing::quiet_fit(epochs, batch, 9); }

std::vector<float> flat(const std::vector<Tensor>& ts) {
  std::vector<float> out;
  for (const Tensor& t : ts) {
    auto v = t.to(Device::cpu()).to_vector<float>();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

std::vector<float> weights(const Model& m) { return flat(m.get_weights()); }

/// Rows [begin, begin + n) of a dataset's x and y.
std::pair<Tensor, Tensor> batch(const Dataset& d, int64_t begin, int64_t n) {
  Dataset s = d.slice(begin, begin + n);
  return {s.x, s.y};
}

}  // namespace

TEST(ModelGraph, DroppedModelFreesItsLayersAndParametersOnCpu) {
  std::weak_ptr<Layer> layer;
  {
    Sequential m = mlp();
    m.compile(options(Device::cpu()));
    m.fit(blobs(32, 1), fit_options(1));
    layer = m.layers()[0];
    EXPECT_FALSE(layer.expired());
  }
  EXPECT_TRUE(layer.expired()) << "nothing outside the model keeps its layers (and so their parameters)";
}

TEST(ModelGraph, DroppedModelFreesItsDeviceMemory) {
  CUDL_REQUIRE_CUDA();
  const Device dev = Device::cuda(0);
  Dataset d = blobs(48, 2);
  {  // a first model warms the pool and the libraries' workspaces
    Sequential m = mlp();
    m.compile(options(dev));
    m.fit(d, fit_options(1));
  }
  const size_t before = memory_stats(dev).allocated_bytes;
  std::weak_ptr<Layer> layer;
  {
    Sequential m = mlp();
    m.compile(options(dev));
    m.fit(d, fit_options(1));
    layer = m.layers()[1];
    EXPECT_GT(memory_stats(dev).allocated_bytes, before);
  }
  EXPECT_TRUE(layer.expired());
  EXPECT_EQ(memory_stats(dev).allocated_bytes, before) << "every tensor of the dropped model went back to the pool";
}

TEST(ModelGraph, ModelsBuiltOnTwoThreadsAtOnceAreTheSameModel) {
  Dataset d = blobs(64, 3);
  auto train = [&] {
    Sequential m = mlp();
    m.compile(options(Device::cpu()));
    m.fit(d, fit_options(2));
    return weights(m);
  };
  const std::vector<float> reference = train();
  std::vector<float> a, b;
  std::thread ta([&] { a = train(); }), tb([&] { b = train(); });
  ta.join();
  tb.join();
  EXPECT_EQ(a, reference);
  EXPECT_EQ(b, reference);
}

TEST(ModelGraph, LayerNamesAreUniquePerModel) {
  auto d = layers::Dense(DenseOptions(4).name("same")), e = layers::Dense(DenseOptions(4).name("same"));
  Var x = Input(Shape{4});
  const std::string msg = error_message([&] { Model m(x, (*e)((*d)(x))); });
  EXPECT_NE(msg.find("two different layers are named 'same'"), std::string::npos) << msg;
  // Auto names skip the names a model's named layers take.
  auto named = layers::Dense(DenseOptions(4).name("dense1"));
  Sequential s(Shape{4}, {layers::Dense(4), named, layers::Dense(2)});
  std::vector<std::string> names;
  for (const auto& l : s.layers()) names.push_back(l->name());
  EXPECT_EQ(names, (std::vector<std::string>{"dense2", "dense1", "dense3"}));
  EXPECT_EQ(s.layer("dense3"), s.layers()[2]);
  EXPECT_NE(error_message([&] { s.layer("nope"); }).find("dense2, dense1, dense3"), std::string::npos);
}

// The GAN pattern: a discriminator compiled on its own, and a combined model G -> D compiled
// with D frozen. Training the combined model moves G only; training D still moves D.
TEST(ModelGraph, SharedLayersShareParametersAndFreezingAppliesPerCompiledModel) {
  auto g1 = layers::Dense(8, "tanh"), g2 = layers::Dense(4);  // generator: 3 -> 4
  auto d1 = layers::Dense(6, "relu"), d2 = layers::Dense(1);  // discriminator: 4 -> 1
  Var dx = Input(Shape{4});
  Model disc(dx, (*d2)((*d1)(dx)), "disc");
  CompileOptions o = options(Device::cpu());
  o.loss = losses::BinaryCrossentropy(/*from_logits=*/true);
  o.metrics = {};
  disc.compile(o);
  disc.set_trainable(false);
  Var z = Input(Shape{3});
  Model gen(z, (*g2)((*g1)(z)), "gen");
  Model combined(z, (*d2)((*d1)((*g2)((*g1)(z)))), "combined");
  combined.compile(o);
  gen.compile(o);  // compiled after: the generator layers exist already, nothing changes
  EXPECT_EQ(d1->params()[0].second.data(), disc.layers()[0]->params()[0].second.data()) << "one tensor, shared";

  Tensor zb = cudl::testing::random_tensor(Shape{5, 3}, 4), ones = Tensor::full(Shape{5, 1}, 1.0);
  const auto disc_before = weights(disc), gen_before = weights(gen);
  combined.train_on_batch(zb, ones);
  EXPECT_EQ(weights(disc), disc_before) << "frozen in the combined model";
  EXPECT_NE(weights(gen), gen_before) << "the generator trains through the frozen discriminator";

  Tensor xb = cudl::testing::random_tensor(Shape{5, 4}, 5);
  disc.train_on_batch(xb, ones);
  EXPECT_NE(weights(disc), disc_before) << "disc was compiled while trainable: it still trains";
}

// Keras's trainable=False BatchNorm: in a training step it normalises with its running statistics
// and leaves them, gamma and beta unchanged, while the gradient still reaches the layers below it.
TEST(ModelGraph, FrozenBatchNormRunsInInferenceModeAndPassesGradientsBelow) {
  for (Device dev : {Device::cpu(), Device::cuda(0)}) {
    if (dev.is_cuda() && !cudl::testing::cuda_available()) {
      GTEST_SKIP() << "CPU part passed; the CUDA part needs a CUDA device (" << cuda_unavailable_reason() << ")";
    }
    SCOPED_TRACE(dev.str());
    auto pre = layers::Dense(DenseOptions(6).name("pre")), head = layers::Dense(DenseOptions(3).name("head"));
    auto bn = layers::BatchNorm(0.1f, 1e-5f, "bn");
    Var x = Input(Shape{8});
    Model m(x, (*head)((*bn)((*pre)(x))), "frozen_bn");
    bn->set_trainable(false);
    m.compile(options(dev));
    const Dataset d = blobs(16, 2);
    const auto [xb, yb] = batch(d, 0, 16);
    m.test_on_batch(xb, yb);  // builds the layers' state
    // Running statistics far from any batch's (mean 0.5, variance 4), so the two modes differ.
    for (auto& [name, t] : bn->buffers())
      t.copy_from(Tensor::full(Shape{6}, name == "running_mean" ? 0.5 : 4.0, DType::f32, dev));
    const std::vector<float> stats_before = flat({bn->buffers()[0].second, bn->buffers()[1].second});
    const std::vector<float> bn_before = flat({bn->params()[0].second, bn->params()[1].second});
    const auto pre_before = flat({pre->params()[0].second});
    const double inference_loss = m.test_on_batch(xb, yb).at("loss");
    const double step_loss = m.train_on_batch(xb, yb).at("loss");
    EXPECT_NEAR(step_loss, inference_loss, 1e-5 * std::fabs(inference_loss))
        << "the training forward uses the running statistics, as evaluation does";
    EXPECT_EQ(flat({bn->buffers()[0].second, bn->buffers()[1].second}), stats_before) << "running stats unchanged";
    EXPECT_EQ(flat({bn->params()[0].second, bn->params()[1].second}), bn_before) << "gamma and beta frozen";
    const auto pre_after = flat({pre->params()[0].second});
    EXPECT_NE(pre_after, pre_before) << "the gradient reaches the layer below the frozen BatchNorm";
    for (float v : pre_after) ASSERT_TRUE(std::isfinite(v));

    // The same model trainable: batch statistics (another loss) and moving running statistics.
    bn->set_trainable(true);
    m.compile(options(dev));
    const double evaluated = m.test_on_batch(xb, yb).at("loss");
    EXPECT_GT(std::fabs(m.train_on_batch(xb, yb).at("loss") - evaluated), 1e-3);
    EXPECT_NE(flat({bn->buffers()[0].second, bn->buffers()[1].second}), stats_before);
  }
}

TEST(ModelGraph, TrainOnBatchTakesTheSameStepAsFit) {
  for (Device dev : {Device::cpu(), Device::cuda(0)}) {
    if (dev.is_cuda() && !cudl::testing::cuda_available()) {
      GTEST_SKIP() << "CPU part passed; the CUDA part needs a CUDA device (" << cuda_unavailable_reason() << ")";
    }
    Dataset d = blobs(32, 6);
    Sequential a = mlp(), b = mlp();
    a.compile(options(dev));
    b.compile(options(dev));
    FitOptions f = fit_options(1, 16);
    f.shuffle = false;
    History h = a.fit(d, f);  // two steps: rows 0..15, then 16..31
    auto [x0, y0] = batch(d, 0, 16);
    auto [x1, y1] = batch(d, 16, 16);
    Logs l0 = b.train_on_batch(x0, y0);
    Logs l1 = b.train_on_batch(x1, y1);
    EXPECT_EQ(weights(a), weights(b)) << dev;
    EXPECT_NEAR((l0["loss"] + l1["loss"]) / 2, h.metrics["loss"][0], 1e-6) << dev;
    EXPECT_NEAR((l0["accuracy"] + l1["accuracy"]) / 2, h.metrics["accuracy"][0], 1e-9) << dev;
    EXPECT_EQ(b.step(), 2);
    Logs t = b.test_on_batch(x0, y0);
    EXPECT_NEAR(t["loss"], b.evaluate(d.slice(0, 16), 16).metrics["loss"], 1e-6) << dev;
    EXPECT_EQ(b.last_batch_logs(), l1) << "test_on_batch keeps the last training batch's logs";
    EXPECT_EQ(b.test_on_batch(x0, y0), t) << "a second call on its cached program reports its batch too";
    // The same batch gives the same bits; another batch size may round differently (OpenBLAS picks
    // its GEMM kernel by shape and CPU: on AVX-512 machines 16 and 5 rows differ in the last bit).
    Tensor p = b.predict_on_batch(x0), q = b.predict(x0, 16), r = b.predict(x0, 5);
    EXPECT_EQ(p.to_vector<float>(), q.to_vector<float>()) << dev;
    EXPECT_TRUE(cudl::testing::all_close(r, p, 1e-5, 1e-5)) << dev;
  }
}

TEST(ModelGraph, TrainOnBatchIsOneGraphLaunchPerStepOnCuda) {
  CUDL_REQUIRE_CUDA();
#if defined(CUDL_EMULATED)
  Sequential m = mlp();
  m.compile(options(Device::cuda(0)));
  Dataset d = blobs(16, 7);
  for (int i = 0; i < 2; ++i) m.train_on_batch(d.x, d.y, false);  // warm-up, then capture
  (void)m.last_batch_logs();                                          // the warm-up's work has run
  cudl_emu::reset_counters();
  for (int i = 0; i < 3; ++i) m.train_on_batch(d.x, d.y, /*read_logs=*/false);
  EXPECT_EQ(cudl_emu::counters().syncs, 0u) << "uploads from pageable memory are staged, not waited for";
  const Logs logs = m.last_batch_logs();  // waits; the queued copies have run (and are counted) now
  EXPECT_GT(logs.at("loss"), 0.0);
  const auto c = cudl_emu::counters();
  EXPECT_EQ(c.graph_launches, 3u);
  EXPECT_EQ(c.mallocs, 0u);
  EXPECT_EQ(c.memcpy_h2d, 6u) << "x and y of each batch";
  EXPECT_EQ(c.memcpy_d2h, 2u) << "only the logs asked for at the end (loss and accuracy)";
#else
  GTEST_SKIP() << "counts launches through the emulator's counters (an emulated build)";
#endif
}

TEST(ModelGraph, WeightsRoundTripAndMismatchesNameTheLayerAndShapes) {
  Sequential a = mlp(), b(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)}, "other");
  a.compile(options(Device::cpu(), 1));
  b.compile(options(Device::cpu(), 2));
  ASSERT_NE(weights(a), weights(b));
  b.set_weights(a.get_weights());
  EXPECT_EQ(weights(a), weights(b));
  Dataset d = blobs(20, 8);
  EXPECT_EQ(a.predict(d.x).to_vector<float>(), b.predict(d.x).to_vector<float>());

  std::vector<Tensor> w = a.get_weights();
  ASSERT_EQ(w.size(), 4u);  // kernel, bias per dense layer
  w[2] = Tensor::zeros(Shape{3, 15});
  const auto before = weights(b);
  const std::string msg = error_message([&] { b.set_weights(w); });
  EXPECT_NE(msg.find("dense2.kernel is (3, 16)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(3, 15)"), std::string::npos) << msg;
  EXPECT_EQ(weights(b), before) << "a bad set_weights changes nothing";
  EXPECT_NE(error_message([&] { b.set_weights({}); }).find("got 0 tensors, the model has 4"), std::string::npos);

  auto layer = b.layers()[0];
  std::vector<Tensor> lw = layer->get_weights();
  lw[1] = Tensor::full(Shape{16}, 0.5);
  layer->set_weights(lw);
  EXPECT_EQ(layer->params()[1].second.to_vector<float>(), std::vector<float>(16, 0.5f));
  EXPECT_NE(error_message([&] { layer->set_weights({lw[0]}); }).find("layer dense1 (dense)"), std::string::npos);
}

TEST(ModelGraph, ApiEdgesGiveClearErrors) {
  Sequential m = mlp();
  EXPECT_NE(error_message([&] { m.get_weights(); }).find("before compile"), std::string::npos);
  m.compile(options(Device::cpu()));
  Dataset d = blobs(10, 9);
  EXPECT_NE(error_message([&] { m.predict(d.x, 0); }).find("batch_size must be positive"), std::string::npos);
  EXPECT_NE(error_message([&] {
              m.train_on_batch(Tensor::zeros(Shape{4, 7}), d.y);
            }).find("(4, 7)"),
            std::string::npos);
  EXPECT_NE(error_message([&] { m.last_batch_logs(); }).find("before any train_on_batch"), std::string::npos);
  Dataset wrong{Tensor::zeros(Shape{10, 5}), d.y};
  EXPECT_NE(error_message([&] { m.evaluate(wrong); }).find("(10, 5)"), std::string::npos);
  EXPECT_NE(error_message([&] { ensemble_predict({&m, nullptr}, d); }).find("model 1 is null"), std::string::npos);
  Sequential moved = std::move(m);
  EXPECT_NE(error_message([&] { (void)m.summary(); }).find("moved from"), std::string::npos);
  EXPECT_NE(moved.summary().find("dense1"), std::string::npos);
  EXPECT_NE(error_message([&] {
              CompileOptions o;
              o.loss = "hinge";
            }).find("unknown loss 'hinge'"),
            std::string::npos);
  EXPECT_NE(error_message([&] {
              CompileOptions o;
              o.optimizer = "adamax";
            }).find("unknown optimizer"),
            std::string::npos);
}

TEST(ModelGraph, LossesAndOptimizersByNameOrObject) {
  CompileOptions o;
  o.loss = "mean_squared_error";
  EXPECT_EQ(o.loss.kind, Loss::MeanSquaredError);
  EXPECT_STREQ(o.loss.name(), "mse");
  o.loss = losses::Huber(0.5);
  EXPECT_EQ(o.loss.huber_delta, 0.5);
  o.optimizer = "sgd";
  EXPECT_EQ(o.optimizer.kind, Optimizer::SGD);
  EXPECT_EQ(o.optimizer.lr, optim::SGD().lr);
  Dataset d = blobs(64, 10);
  Sequential m = mlp();
  o = options(Device::cpu());
  o.optimizer = "adam";
  o.loss = "sparse_categorical_crossentropy";
  m.compile(o);
  History h = m.fit(d, fit_options(3));
  EXPECT_LT(h.metrics["loss"].back(), h.metrics["loss"].front());
}

TEST(ModelGraph, CompilePlansWithoutAllocatingAProgram) {
  CUDL_REQUIRE_CUDA();
#if defined(CUDL_EMULATED)
  Sequential m = mlp();
  const MemoryStats s0 = memory_stats(Device::cuda(0));
  cudl_emu::reset_counters();
  m.compile(options(Device::cuda(0)));
  const auto c = cudl_emu::counters();
  const MemoryStats s1 = memory_stats(Device::cuda(0));
  // What compile keeps, each in a 512-byte pool block: 4 parameters, 8 Adam slots, hyper, rng,
  // cursor, and the loss and correct accumulators. No arena, gradients or data placeholders.
  EXPECT_EQ(s1.allocated_bytes - s0.allocated_bytes, 17u * 512u);
  EXPECT_EQ(c.graph_launches, 0u);
  const PlanReport& r = m.plan_report();
  EXPECT_EQ(r.batch_size, 32);
  EXPECT_GT(r.arena_bytes, 0u);
  EXPECT_EQ(r.param_bytes, (16 * 8 + 16 + 3 * 16 + 3) * 4u);
  EXPECT_EQ(m.plan(64).batch_size, 64);
  EXPECT_GT(m.plan(64).arena_bytes, r.arena_bytes);
#else
  GTEST_SKIP() << "reads the emulator's counters (an emulated build)";
#endif
}

TEST(ModelGraph, NonFiniteInputStopsFitBeforeTraining) {
  Dataset d = blobs(32, 11);
  std::vector<float> x = d.x.to_vector<float>();
  x[5 * 8 + 3] = std::nanf("");  // one NaN feature in row 5
  d.x = Tensor::from_vector(x, d.x.shape());
  auto tanh_mlp = [] { return Sequential(Shape{8}, {layers::Dense(16, "tanh"), layers::Dense(3)}); };
  Sequential m = tanh_mlp();
  m.compile(options(Device::cpu()));
  const std::string msg = error_message([&] { m.fit(d, fit_options(2)); });
  EXPECT_NE(msg.find("fit: x (32, 8) holds nan at sample 5, element 3"), std::string::npos) << msg;
  EXPECT_EQ(m.epoch(), 0);
  Dataset v = blobs(16, 3);
  std::vector<float> vx = v.x.to_vector<float>();
  vx[2 * 8] = std::numeric_limits<float>::infinity();
  v.x = Tensor::from_vector(vx, v.x.shape());
  FitOptions fv = fit_options(1);
  fv.validation_data = &v;
  const std::string vmsg = error_message([&] { m.fit(blobs(32, 11), fv); });
  EXPECT_NE(vmsg.find("validation data: x (16, 8) holds inf at sample 2, element 0"), std::string::npos) << vmsg;
  Sequential n = tanh_mlp();
  n.compile(options(Device::cpu()));
  FitOptions f = fit_options(2);
  f.terminate_on_nan = false;
  History h = n.fit(d, f);
  ASSERT_EQ(h.epochs(), 2);
  EXPECT_TRUE(std::isnan(h.metrics["loss"][1]));
}

TEST(ModelGraph, NonFiniteLossStopsFitNamingTheEpoch) {
  Dataset d = blobs(32, 11);
  Sequential m(Shape{8}, {layers::Dense(16, "tanh"), layers::Dense(3)});
  m.compile(options(Device::cpu()));
  m.layers()[1]->params()[1].second.fill(std::nan(""));  // dense2's bias: every logit is NaN
  const std::string msg = error_message([&] { m.fit(d, fit_options(2)); });
  EXPECT_NE(msg.find("epoch 1: the training loss is nan"), std::string::npos) << msg;
}

TEST(ModelGraph, NaNWeightsHiddenByAFusedReluStopFitNamingTheLayer) {
  // The fused Dense+ReLU epilogue maps NaN to 0 (as cuBLASLt's does), so NaN weights in dense1
  // leave the loss finite; the end-of-epoch weight check still finds them.
  Dataset d = blobs(32, 13);
  for (Device dev : {Device::cpu(), Device::cuda(0)}) {
    if (dev.is_cuda() && !cudl::testing::cuda_available()) {
      GTEST_SKIP() << "CPU part passed; the CUDA part needs a CUDA device (" << cuda_unavailable_reason() << ")";
    }
    Sequential m(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)});
    m.compile(options(dev));
    m.layers()[0]->params()[0].second.fill(std::nan(""));
    const std::string msg = error_message([&] { m.fit(d, fit_options(1)); });
    EXPECT_NE(msg.find("epoch 1: layer dense1's kernel (16, 8) holds nan at element 0"), std::string::npos)
        << dev.str() << ": " << msg;
    Sequential n(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)});
    n.compile(options(dev));
    n.layers()[0]->params()[0].second.fill(std::nan(""));
    FitOptions f = fit_options(1);
    f.terminate_on_nan = false;
    History h = n.fit(d, f);
    EXPECT_TRUE(std::isfinite(h.metrics["loss"][0])) << "the loss hides the NaN weights";
  }
}

TEST(ModelGraph, PropagateNaNKeepsReluAsItsOwnOpSoNaNReachesTheLoss) {
  // CompileOptions::propagate_nan: a Dense's relu is not fused into the GEMM epilogue, so NaN
  // weights give NaN outputs and a NaN loss, on both backends (the default maps them to 0). A
  // Conv2d's relu epilogue is a cudl kernel that passes NaN on in both modes.
  Dataset d = blobs(32, 13);
  std::vector<float> img(static_cast<size_t>(4 * 1 * 6 * 6));
  for (size_t i = 0; i < img.size(); ++i) img[i] = static_cast<float>(i % 7) * 0.1f - 0.3f;
  const Tensor x = Tensor::from_vector(img, Shape{4, 1, 6, 6});
  for (Device dev : {Device::cpu(), Device::cuda(0)}) {
    if (dev.is_cuda() && !cudl::testing::cuda_available()) {
      GTEST_SKIP() << "CPU part passed; the CUDA part needs a CUDA device (" << cuda_unavailable_reason() << ")";
    }
    for (bool propagate : {false, true}) {
      CompileOptions o = options(dev);
      o.propagate_nan = propagate;
      Sequential dense(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)});
      dense.compile(o);
      dense.layers()[0]->params()[0].second.fill(std::nan(""));
      const std::vector<float> p = dense.predict(d.x).to_vector<float>();
      EXPECT_EQ(std::isnan(p[0]), propagate) << dev.str() << " dense, propagate_nan " << propagate;
      Sequential conv(Shape{1, 6, 6},
                      {layers::Conv2d(2, 3, "relu"), layers::Flatten(),
                       layers::Dense(3)});
      conv.compile(o);
      conv.layers()[0]->params()[0].second.fill(std::nan(""));
      const std::vector<float> q = conv.predict(x).to_vector<float>();
      EXPECT_TRUE(std::isnan(q[0])) << dev.str() << " conv, propagate_nan " << propagate;
    }
    CompileOptions o = options(dev);
    o.propagate_nan = true;
    Sequential m(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)});
    m.compile(o);
    m.layers()[0]->params()[0].second.fill(std::nan(""));
    const std::string msg = error_message([&] { m.fit(d, fit_options(1)); });
    EXPECT_NE(msg.find("epoch 1: the training loss is nan"), std::string::npos) << dev.str() << ": " << msg;
    // Finite weights train the same with and without the fusion (the relu is the same function).
    Sequential a(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)});
    Sequential b(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)});
    a.compile(options(dev));
    b.compile(o);
    a.fit(d, fit_options(2));
    b.fit(d, fit_options(2));
    const std::vector<float> wa = a.layers()[0]->params()[0].second.to_vector<float>();
    const std::vector<float> wb = b.layers()[0]->params()[0].second.to_vector<float>();
    ASSERT_EQ(wa.size(), wb.size());
    for (size_t i = 0; i < wa.size(); ++i) EXPECT_NEAR(wa[i], wb[i], 1e-5f * (1 + std::fabs(wa[i]))) << dev.str() << " " << i;
  }
}

TEST(ModelGraph, NaNWeightsTheLossDoesNotSeeStopFitNamingTheLayer) {
  // An embedding row of a token the data never holds: the loss stays finite, the end-of-epoch
  // parameter check names the layer.
  const int64_t n = 32, T = 4, vocab = 10;
  std::vector<int32_t> tokens(static_cast<size_t>(n * T)), labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n * T; ++i) tokens[i] = static_cast<int32_t>(i % 5);  // tokens 0..4 only
  for (int64_t i = 0; i < n; ++i) labels[i] = static_cast<int32_t>(i % 3);
  Dataset d{Tensor::from_vector(tokens, Shape{n, T}), Tensor::from_vector(labels, Shape{n})};
  Var x = Input(Shape{T}, DType::i32);
  Var h = (*layers::Embedding(vocab, 4, "embed"))(x);
  h = (*layers::Flatten())(h);
  Model m(x, (*layers::Dense(3))(h));
  m.compile(options(Device::cpu()));
  m.layers()[0]->params()[0].second.data_as<float>()[9 * 4 + 2] = std::nanf("");  // token 9: never seen
  const std::string msg = error_message([&] { m.fit(d, fit_options(1)); });
  EXPECT_NE(msg.find("epoch 1: layer embed's"), std::string::npos) << msg;
  EXPECT_NE(msg.find("holds nan at element 38"), std::string::npos) << msg;
}

TEST(ModelGraph, DebugModeNamesTheFirstNodeThatWritesNaN) {
  Dataset d = blobs(32, 12);
  Sequential m(Shape{8}, {layers::Dense(16, "tanh"), layers::Dense(3)});
  m.compile(options(Device::cpu()));
  m.layers()[1]->params()[1].second.fill(std::nan(""));  // dense2's bias
  FitOptions f = fit_options(1);
  f.debug_nonfinite = true;
  const std::string msg = error_message([&] { m.fit(d, f); });
  EXPECT_NE(msg.find("node dense2/Linear wrote nan"), std::string::npos) << msg;
  EXPECT_NE(msg.find("its input(s) dense2.bias already held NaN/Inf"), std::string::npos) << msg;
  // Finite weights so large that the first GEMM overflows: that node produced the Inf itself.
  Sequential n(Shape{8}, {layers::Dense(16, "tanh"), layers::Dense(3)});
  n.compile(options(Device::cpu()));
  n.layers()[0]->params()[0].second.fill(1e38);
  const std::string inf = error_message([&] { n.fit(d, f); });
  EXPECT_NE(inf.find("node dense1/Linear wrote"), std::string::npos) << inf;
  EXPECT_NE(inf.find("from finite inputs (the first node to produce one)"), std::string::npos) << inf;
}

TEST(ModelGraph, LearningRatesMustBeFiniteAsFloats) {
  Sequential m = mlp();
  CompileOptions o = options(Device::cpu());
  o.optimizer = optim::Adam(1e39);  // finite as a double, infinite as the f32 on the device
  EXPECT_NE(error_message([&] { m.compile(o); }).find("invalid learning rate 1e+39"), std::string::npos);
  m.compile(options(Device::cpu()));
  EXPECT_NE(error_message([&] { m.set_learning_rate(1e39); }).find("finite as a float"), std::string::npos);
  EXPECT_NE(error_message([&] { m.set_learning_rate(-1); }).find("invalid learning rate -1"), std::string::npos);
}
