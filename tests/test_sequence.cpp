// tests/test_sequence.cpp — sequence layers through the Model API: Embedding and
// PositionalEmbedding on i32 token inputs (fit, evaluate, predict, the per-batch calls), their
// gradients against finite differences, and the CPU and emulated CUDA backends side by side.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "testing.hpp"

using namespace cudl;
using cudl::testing::all_close;
using cudl::testing::error_message;

namespace {

constexpr int64_t kVocab = 10, kTime = 6, kDim = 8;

// Token rows (n, kTime) in [0, kVocab); the label is (first token + last token) % 3.
Dataset token_rows(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> tok(0, kVocab - 1);
  std::vector<int32_t> x(static_cast<size_t>(n * kTime)), y(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t t = 0; t < kTime; ++t) x[i * kTime + t] = tok(rng);
    y[i] = (x[i * kTime] + x[i * kTime + kTime - 1]) % 3;
  }
  return Dataset{Tensor::from_vector(x, Shape{n, kTime}), Tensor::from_vector(y, Shape{n})};
}

// Embedding -> PositionalEmbedding (max_len kTime + 2: its table is sliced) -> Flatten -> Dense.
Sequential token_model(const std::string& tag) {
  return Sequential(Shape{kTime},
                    {layers::Embedding(kVocab, kDim), layers::PositionalEmbedding(kTime + 2, kDim), layers::Flatten(),
                     layers::Dense(3)},
                    tag, DType::i32);
}

CompileOptions options(Device d, Optimizer o = optim::Adam(0.02)) {
  return cudl::testing::classifier_options(d, o, 5);
}

FitOptions fit_options(int epochs) { return cudl::testing::quiet_fit(epochs, 16, 3); }

std::vector<float> host(const Tensor& t) { return t.to(Device::cpu()).to_vector<float>(); }

}  // namespace

TEST(Embedding, LooksUpTheRowsOfItsTable) {
  Sequential m(Shape{3}, {layers::Embedding(7, 5, "emb")}, "lookup", DType::i32);
  CompileOptions o = options(Device::cpu());
  o.loss = "mse";
  o.metrics = {};
  m.compile(o);
  const std::vector<float> table = host(m.layer("emb")->params().at(0).second);
  ASSERT_EQ(table.size(), 35u);
  for (float v : table) EXPECT_TRUE(v >= -0.05f && v <= 0.05f) << v;  // uniform(-0.05, 0.05)
  const std::vector<int32_t> idx{6, 0, 3, 3, 1, 6};
  Tensor y = m.predict_on_batch(Tensor::from_vector(idx, Shape{2, 3}));
  ASSERT_EQ(y.shape(), (Shape{2, 3, 5}));
  const std::vector<float> got = host(y);
  for (size_t p = 0; p < idx.size(); ++p)
    for (int k = 0; k < 5; ++k) EXPECT_EQ(got[p * 5 + k], table[idx[p] * 5 + k]) << p << "," << k;
}

TEST(Embedding, PositionalEmbeddingAddsTheFirstTimeRowsOfItsTable) {
  auto x = Input(Shape{3, 2}, DType::f32, "x");
  auto pe = layers::PositionalEmbedding(5, 2, "pe");
  Model m(x, (*pe)(x), "pos");
  CompileOptions o = options(Device::cpu());
  o.loss = "mse";
  o.metrics = {};
  m.compile(o);
  const std::vector<float> table = host(pe->params().at(0).second);
  const std::vector<float> xv{1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6};
  const std::vector<float> got = host(m.predict_on_batch(Tensor::from_vector(xv, Shape{2, 3, 2})));
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 6; ++i) EXPECT_EQ(got[b * 6 + i], xv[b * 6 + i] + table[i]) << b << "," << i;
}

namespace {

// One SGD step (lr 1) moves each weight by -dL/dw: compare that with central differences of the
// batch's loss for a few weights of the first parameter of each named layer.
void expect_sgd_step_matches_fd(Model& m, const Dataset& d, const std::vector<std::string>& layer_names) {
  for (const std::string& name : layer_names) {
    Tensor w = m.layer(name)->params().at(0).second;  // shares the layer's storage
    std::vector<size_t> probe{0, static_cast<size_t>(w.numel()) / 2, static_cast<size_t>(w.numel()) - 1};
    if (w.numel() > 5) probe.push_back(5);
    cudl::testing::expect_sgd_step_matches_fd(m, d.x, d.y, w, probe, 2e-3, name);
  }
}

}  // namespace

TEST(Embedding, GradientsMatchFiniteDifferences) {
  Sequential m = token_model("fd");
  m.compile(options(Device::cpu(), optim::SGD(1.0)));
  expect_sgd_step_matches_fd(m, token_rows(8, 11), {"embedding1", "positional_embedding1"});
}

TEST(Embedding, TokenModelLearnsOnCpu) {
  Dataset d = token_rows(192, 1);
  Sequential m = token_model("learn");
  m.compile(options(Device::cpu()));
  History h = m.fit(d, fit_options(12));
  EXPECT_LT(h.metrics["loss"].back(), h.metrics["loss"].front());
  EvalResult r = m.evaluate(d, 64);
  EXPECT_GT(r.metrics["accuracy"], 0.6) << "chance is 1/3";
  Tensor p = m.predict(d.x, 50);
  EXPECT_EQ(p.shape(), (Shape{192, 3}));
}

TEST(Embedding, CpuAndCudaTrainTheSame) {
  CUDL_REQUIRE_CUDA();
  auto compiled = [](const std::string& tag, Device dev) {
    Sequential m = token_model(tag);
    m.compile(options(dev));
    return m;
  };
  Sequential c = compiled("par_c", Device::cpu()), g = compiled("par_g", Device::cuda(0));
  const Dataset d = token_rows(48, 2);
  EXPECT_TRUE(cudl::testing::losses_close(c.fit(d, fit_options(3)), g.fit(d, fit_options(3))));
  const std::vector<Tensor> wc = c.get_weights(), wg = g.get_weights();
  ASSERT_EQ(wc.size(), wg.size());
  for (size_t i = 0; i < wc.size(); ++i) EXPECT_TRUE(all_close(wg[i], wc[i], 1e-4, 1e-3)) << "weight " << i;
  // The per-batch calls on both backends.
  Dataset b = token_rows(5, 4);
  const Logs lc = c.train_on_batch(b.x, b.y), lg = g.train_on_batch(b.x, b.y);
  EXPECT_NEAR(lc.at("loss"), lg.at("loss"), 1e-4);
  EXPECT_TRUE(all_close(g.predict_on_batch(b.x), c.predict_on_batch(b.x), 1e-4, 1e-3));
  EXPECT_NEAR(c.evaluate(d).metrics["loss"], g.evaluate(d).metrics["loss"], 1e-4);
}

// bf16 / f16: the Embedding's Gather reads its f32 table and writes 16-bit rows, and its backward
// reads the 16-bit gradient and sums into the f32 table gradient, so neither needs a Cast. The one
// Cast over f32's count is the positional table's: its first kTime rows are a Slice of the table's
// 16-bit copy (written by the optimizer step), and the 16-bit gradient SliceBackward writes is cast
// back to the f32 master's. (Before Slice ran in 16 bits, the slice's f32 rows were cast for the
// add: two Casts.) The model trains on the emulated CUDA backend as on the CPU reference.
TEST(Embedding, TrainsIn16BitsWithoutCastsAroundTheGatherOnCudaAsOnCpu) {
  CUDL_REQUIRE_CUDA();
  const Dataset d = token_rows(48, 5);
  for (Precision p : {Precision::bf16, Precision::f16}) {
    SCOPED_TRACE(p == Precision::bf16 ? "bf16" : "f16");
    auto compiled = [&](const std::string& tag, Device dev, Precision prec) {
      Sequential m = token_model(tag);
      CompileOptions o = options(dev);
      o.precision = prec;
      m.compile(o);
      return m;
    };
    Sequential f = compiled("mp_f", Device::cuda(0), Precision::f32);
    Sequential c = compiled("mp_c", Device::cpu(), p), g = compiled("mp_g", Device::cuda(0), p);
    const int amp = p == Precision::f16 ? 1 : 0;  // AmpUnscale
    EXPECT_EQ(g.plan_report().kernels_per_step, f.plan_report().kernels_per_step + 1 + amp) << g.plan_report().str();
    const History hc = c.fit(d, fit_options(3)), hg = g.fit(d, fit_options(3));
    EXPECT_TRUE(cudl::testing::losses_close(hg, hc, 1e-3));
    EXPECT_LT(hg.metrics.at("loss").back(), hg.metrics.at("loss").front()) << "learns";
    const std::vector<Tensor> wc = c.get_weights(), wg = g.get_weights();
    ASSERT_EQ(wc.size(), wg.size());
    for (size_t i = 0; i < wc.size(); ++i) EXPECT_TRUE(all_close(wg[i], wc[i], 1e-3, 1e-2)) << "weight " << i;
  }
}

namespace {

// Token rows (n, kTime) whose tails are padding (token 0, random lengths 2..kTime); the label of a
// real token is (token + 1) % kVocab shifted to [1, kVocab), of a padding position 0 (ignored).
Dataset padded_rows(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> tok(1, kVocab - 1), len(2, kTime);
  std::vector<int32_t> x(static_cast<size_t>(n * kTime), 0), y(x.size(), 0);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t l = len(rng);
    for (int32_t t = 0; t < l; ++t) {
      x[i * kTime + t] = tok(rng);
      y[i * kTime + t] = x[i * kTime + t] % (kVocab - 1) + 1;
    }
  }
  return Dataset{Tensor::from_vector(x, Shape{n, kTime}), Tensor::from_vector(y, Shape{n, kTime})};
}

// Per-position logits (kTime, kVocab) with padding (class 0) ignored by the loss.
Sequential tagger(const std::string& tag, Device dev) {
  Sequential m(Shape{kTime}, {layers::Embedding(kVocab, kDim), layers::PositionalEmbedding(kTime, kDim),
                              layers::Dense(16, "relu"), layers::Dense(kVocab)},
               tag, DType::i32);
  m.compile(cudl::testing::classifier_options(dev, optim::Adam(0.03), 7, losses::SparseCategoricalCrossentropy(0, 0)));
  return m;
}

}  // namespace

TEST(SequenceLoss, TaggerLearnsAndIgnoresPadding) {
  Dataset d = padded_rows(128, 5);
  Sequential m = tagger("tag", Device::cpu());
  History h = m.fit(d, fit_options(15));
  EXPECT_LT(h.metrics["loss"].back(), 0.5 * h.metrics["loss"].front());
  EXPECT_GT(h.metrics["accuracy"].back(), 0.9) << "accuracy over the real tokens only";
  // Padded positions labelled with a real class (1) instead of the ignored 0 count, and the model
  // never learnt them: the loss rises.
  const double before = m.evaluate(d).metrics["loss"];
  Tensor y2 = d.y.clone();
  int32_t* l = y2.data_as<int32_t>();
  for (int64_t i = 0; i < y2.numel(); ++i)
    if (l[i] == 0) l[i] = 1;
  EXPECT_GT(m.evaluate(Dataset{d.x, y2}).metrics["loss"], before + 0.1);
  // Labels of the wrong shape name both.
  EXPECT_NE(error_message([&] { m.train_on_batch(d.x, Tensor::zeros(Shape{128}, DType::i32)); }).find("(128, 6)"),
            std::string::npos);
}

TEST(SequenceLoss, CpuAndCudaTrainTheSame) {
  CUDL_REQUIRE_CUDA();
  Sequential c = tagger("seq_c", Device::cpu()), g = tagger("seq_g", Device::cuda(0));
  const Dataset d = padded_rows(40, 6);
  EXPECT_TRUE(cudl::testing::losses_close(c.fit(d, fit_options(3)), g.fit(d, fit_options(3))));
  const Dataset b = padded_rows(6, 8);
  const Logs lc = c.train_on_batch(b.x, b.y), lg = g.train_on_batch(b.x, b.y);
  EXPECT_NEAR(lc.at("loss"), lg.at("loss"), 1e-4);
  EXPECT_EQ(lc.at("accuracy"), lg.at("accuracy"));
  const EvalResult ec = c.evaluate(d), eg = g.evaluate(d);
  EXPECT_NEAR(ec.metrics.at("loss"), eg.metrics.at("loss"), 1e-4);
  EXPECT_EQ(ec.metrics.at("accuracy"), eg.metrics.at("accuracy"));
}

TEST(Embedding, BadInputsGiveClearErrors) {
  // f32 input into an Embedding.
  Sequential f(Shape{4}, {layers::Embedding(5, 3)}, "f32in");
  EXPECT_NE(error_message([&] { f.compile(options(Device::cpu())); }).find("indices must be i32"), std::string::npos);
  // f32 rows into a model that takes i32 tokens, and the reverse.
  Sequential m = token_model("bad");
  m.compile(options(Device::cpu()));
  Dataset d = token_rows(4, 1);
  Tensor xf = Tensor::zeros(Shape{4, kTime}, DType::f32);
  EXPECT_NE(error_message([&] { m.train_on_batch(xf, d.y); }).find("takes i32 indices"), std::string::npos);
  EXPECT_NE(error_message([&] { m.fit(Dataset{xf, d.y}, fit_options(1)); }).find("i32"), std::string::npos);
  // A token past the vocabulary: the CPU names it.
  std::vector<int32_t> v(4 * kTime, 1);
  v[7] = kVocab;
  EXPECT_NE(error_message([&] { m.predict(Tensor::from_vector(v, Shape{4, kTime})); }).find(std::to_string(kVocab)),
            std::string::npos);
  // A sequence longer than the positional table.
  auto x = Input(Shape{9, 2}, DType::f32, "x");
  EXPECT_NE(error_message([&] { (*layers::PositionalEmbedding(8, 2))(x); }).find("max_len 8"), std::string::npos);
}

// ---------------------------------------------------------------- Concatenate, Slice, split ------

namespace {

// x (3, 4) -> split along time into (1, 4) and (2, 4), rejoined in the other order; and split
// along features into (3, 1) and (3, 3), each through a Dense, rejoined along features.
Model join_model(const std::string& tag) {
  Var x = Input(Shape{3, 4}, DType::f32, "x");
  std::vector<Var> t = split(x, {1, 2}, 1);
  Var swapped = (*layers::Concatenate(1))({t[1], t[0]});
  std::vector<Var> f = split(swapped, {1, 3});
  Var a = (*layers::Dense(2))(f[0]), b = (*layers::Dense(5))(f[1]);
  Var y = (*layers::Concatenate())({a, b, f[0]});
  return Model(x, (*layers::Dense(3))((*layers::Flatten())(y)), tag);
}

}  // namespace

TEST(Concatenate, SplitAndConcatenateMoveTheRightRows) {
  Var x = Input(Shape{3, 4}, DType::f32, "x");
  std::vector<Var> t = split(x, {1, 2}, -2);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].shape(), (Shape{1, 4}));
  EXPECT_EQ(t[1].shape(), (Shape{2, 4}));
  Model m(x, (*layers::Concatenate(1))({t[1], t[0]}), "rot");
  CompileOptions o = options(Device::cpu());
  o.loss = "mse";
  o.metrics = {};
  m.compile(o);
  std::vector<float> xv(24);
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = static_cast<float>(i);
  const std::vector<float> got = host(m.predict_on_batch(Tensor::from_vector(xv, Shape{2, 3, 4})));
  for (int b = 0; b < 2; ++b)
    for (int r = 0; r < 3; ++r)
      for (int k = 0; k < 4; ++k) EXPECT_EQ(got[b * 12 + r * 4 + k], xv[b * 12 + ((r + 1) % 3) * 4 + k]);
}

TEST(Concatenate, GradientsMatchFiniteDifferences) {
  Model m = join_model("join_fd");
  m.compile(options(Device::cpu(), optim::SGD(1.0)));
  const Dataset d = cudl::testing::separable_blobs(6, 12, 3, 1.f, 0.5f, 4);
  expect_sgd_step_matches_fd(m, Dataset{d.x.reshape(Shape{6, 3, 4}), d.y}, {"dense1", "dense2", "dense3"});
}

TEST(Concatenate, CpuAndCudaTrainTheSame) {
  CUDL_REQUIRE_CUDA();
  Model c = join_model("join_c"), g = join_model("join_g");
  c.compile(options(Device::cpu()));
  g.compile(options(Device::cuda(0)));
  const Dataset b = cudl::testing::separable_blobs(40, 12, 3, 1.f, 0.5f, 5);
  const Dataset d{b.x.reshape(Shape{40, 3, 4}), b.y};
  EXPECT_TRUE(cudl::testing::losses_close(c.fit(d, fit_options(3)), g.fit(d, fit_options(3))));
  EXPECT_TRUE(all_close(g.predict(d.x), c.predict(d.x), 1e-4, 1e-3));
}

TEST(Concatenate, BadAxesAndShapesGiveClearErrors) {
  Var x = Input(Shape{3, 4}), z = Input(Shape{2, 5});
  EXPECT_NE(error_message([&] { (*layers::Concatenate())({x, z}); }).find("(2, 5)"), std::string::npos);
  EXPECT_NE(error_message([&] { (*layers::Concatenate(0))({x, x}); }).find("batch axis"), std::string::npos);
  EXPECT_NE(error_message([&] { (*layers::Slice(2, 3, 2))(x); }).find("[3, 5)"), std::string::npos);
  EXPECT_NE(error_message([&] { split(x, {1, 1}, 1); }).find("add up to 2"), std::string::npos);
}
