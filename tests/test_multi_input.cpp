// tests/test_multi_input.cpp — models with several inputs (fit gathers every input's rows of a batch
// on the device; the per-batch calls take one tensor per input), a key-padding mask fed as a model
// input, and recurrent layers returning their final states (return_state) with gradients through
// them, on the CPU and emulated CUDA backends.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "testing.hpp"

using namespace cudl;
using cudl::testing::all_close;
using cudl::testing::error_message;
using cudl::testing::random_tensor;

namespace {

std::vector<float> host(const Tensor& t) { return t.to(Device::cpu()).to_vector<float>(); }

/// Columns [begin, begin + width) of every row of x (N, F) as a new (N, width) tensor.
Tensor columns(const Tensor& x, int64_t begin, int64_t width) {
  const std::vector<float> v = host(x);
  const int64_t n = x.shape()[0], f = x.shape()[1];
  std::vector<float> out;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = begin; j < begin + width; ++j) out.push_back(v[i * f + j]);
  return Tensor::from_vector(out, Shape{n, width});
}

/// The same network on features (7) split into inputs (4) and (3), or taken whole.
Model split_model() {
  Var a = Input(Shape{4}, DType::f32, "a"), b = Input(Shape{3}, DType::f32, "b");
  Var x = (*layers::Concatenate())({a, b});
  Var y = (*layers::Dense(3))((*layers::Dense(8, "relu"))(x));
  return Model({a, b}, {y}, "split");
}

Model whole_model() {
  Var x = Input(Shape{7}, DType::f32, "x");
  Var y = (*layers::Dense(3))((*layers::Dense(8, "relu"))(x));
  return Model(x, y, "whole");
}

}  // namespace

TEST(MultiInput, TwoInputsTrainAsTheirConcatenation) {
  const Dataset whole = cudl::testing::separable_blobs(90, 7, 3, 2.f, 0.6f, 21);
  Dataset split;
  split.xs = {columns(whole.x, 0, 4), columns(whole.x, 4, 3)};
  split.y = whole.y;
  for (Device dev : cudl::testing::test_devices()) {
    SCOPED_TRACE(dev.str());
    Model two = split_model(), one = whole_model();
    const CompileOptions o = cudl::testing::classifier_options(dev, optim::Adam(0.02), 9);
    two.compile(o);
    one.compile(o);
    one.set_weights(two.get_weights());  // Concatenate has none: the Dense layers' in order
    // fit (shuffled batches, a partial last one) must give every input the same rows of each batch.
    const FitOptions fo = cudl::testing::quiet_fit(3, 16, 4);
    const History h2 = two.fit(split, fo), h1 = one.fit(whole, fo);
    EXPECT_TRUE(cudl::testing::losses_close(h2, h1, 1e-5));
    const std::vector<Tensor> w2 = two.get_weights(), w1 = one.get_weights();
    for (size_t i = 0; i < w1.size(); ++i) EXPECT_TRUE(all_close(w2[i], w1[i], 1e-5, 1e-5)) << "weight " << i;
    EXPECT_NEAR(two.evaluate(split, 32).metrics["loss"], one.evaluate(whole, 32).metrics["loss"], 1e-5);
    EXPECT_TRUE(all_close(two.predict(split.xs, 25), one.predict(whole.x, 25), 1e-5, 1e-5));
    // The per-batch calls with one tensor per input.
    const Dataset b = split.slice(0, 5), bw = whole.slice(0, 5);
    EXPECT_NEAR(two.train_on_batch(b.xs, b.y).at("loss"), one.train_on_batch(bw.x, bw.y).at("loss"), 1e-5);
    EXPECT_NEAR(two.test_on_batch(b.xs, b.y).at("loss"), one.test_on_batch(bw.x, bw.y).at("loss"), 1e-5);
    EXPECT_TRUE(all_close(two.predict_on_batch(b.xs), one.predict_on_batch(bw.x), 1e-5, 1e-5));
    // Validation data with several inputs.
    FitOptions fv = cudl::testing::quiet_fit(1, 16, 4);
    fv.validation_split = 0.2;
    const History hv = two.fit(split, fv);
    EXPECT_EQ(hv.metrics.at("val_loss").size(), 1u);
  }
}

TEST(MultiInput, ErrorsNameTheInput) {
  Model m = split_model();
  m.compile(cudl::testing::classifier_options(Device::cpu(), optim::Adam(0.02), 9));
  const Tensor a = random_tensor(Shape{5, 4}, 1), b = random_tensor(Shape{5, 3}, 2);
  const Tensor y = cudl::testing::random_labels(5, 3, 3);
  std::string e = error_message([&] { m.train_on_batch(a, y); });
  EXPECT_NE(e.find("got 1 input tensors but the model takes 2 ('a', 'b')"), std::string::npos) << e;
  e = error_message([&] { m.predict(std::vector<Tensor>{a, random_tensor(Shape{5, 4}, 2)}); });
  EXPECT_NE(e.find("input 1 ('b') is (5, 4) but the model takes (5, 3)"), std::string::npos) << e;
  e = error_message([&] { m.test_on_batch({a, random_tensor(Shape{4, 3}, 2)}, y); });
  EXPECT_NE(e.find("input 1 ('b') has 4 rows but input 0 ('a') has 5"), std::string::npos) << e;
  Dataset d;
  d.xs = {a, Tensor::zeros(Shape{5, 3}, DType::i32)};
  d.y = y;
  e = error_message([&] { m.fit(d, cudl::testing::quiet_fit(1, 4, 1)); });
  EXPECT_NE(e.find("input 1 ('b') is i32 but the model takes f32 or u8"), std::string::npos) << e;
  d.xs = {a, b};
  d.x = a;
  e = error_message([&] { m.evaluate(d); });
  EXPECT_NE(e.find("gives both x and xs"), std::string::npos) << e;
  d.x = Tensor();
  FitOptions fo = cudl::testing::quiet_fit(1, 4, 1);
  fo.data_placement = DataPlacement::Stream;
  e = error_message([&] { m.fit(d, fo); });
  EXPECT_NE(e.find("streams single-input data"), std::string::npos) << e;
  Var x = Input(Shape{3});
  e = error_message([&] { Model({x, x}, {(*layers::Dense(2))(x)}, "twice"); });
  EXPECT_NE(e.find("is given twice"), std::string::npos) << e;
  Var unused = Input(Shape{2}, DType::f32, "unused");
  e = error_message([&] { Model({x, unused}, {(*layers::Dense(2))(x)}, "unused"); });
  EXPECT_NE(e.find("does not depend on input 1 ('unused')"), std::string::npos) << e;
}

namespace {

constexpr int64_t kVocab = 9, kT = 6, kDim = 8;

/// Tokens (n, kT) with a padded tail (token 0 from a random length 2..kT on), their key mask (1 for
/// real tokens, 0 for padding) and per-position labels (token % 3).
struct Padded {
  Tensor tokens, mask, labels;
  std::vector<int> lengths;
};

Padded padded(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> tok(1, kVocab - 1), len(2, kT);
  std::vector<int32_t> x(static_cast<size_t>(n * kT), 0), y(x.size(), 0);
  std::vector<float> m(x.size(), 0.f);
  Padded p;
  for (int64_t i = 0; i < n; ++i) {
    const int l = len(rng);
    p.lengths.push_back(l);
    for (int t = 0; t < l; ++t) {
      x[i * kT + t] = tok(rng);
      m[i * kT + t] = 1.f;
    }
    for (int t = 0; t < kT; ++t) y[i * kT + t] = x[i * kT + t] % 3;
  }
  p.tokens = Tensor::from_vector(x, Shape{n, kT});
  p.mask = Tensor::from_vector(m, Shape{n, kT});
  p.labels = Tensor::from_vector(y, Shape{n, kT});
  return p;
}

/// Embedding -> self-attention over the unmasked keys (the mask is the model's second input) ->
/// per-position logits (kT, 3).
Model masked_model(const std::string& engine) {
  Var tokens = Input(Shape{kT}, DType::i32, "tokens"), mask = Input(Shape{kT}, DType::f32, "mask");
  Var e = (*layers::Embedding(kVocab, kDim))(tokens);
  Var h = (*layers::MultiHeadAttention(MultiHeadAttentionOptions(2, 4).key_mask(true).engine(engine)))({e, mask});
  return Model({tokens, mask}, {(*layers::Dense(3))(h)}, "masked");
}

/// Random tokens at the padded positions (mask 0) of every row.
Tensor repad(const Padded& p, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> tok(1, kVocab - 1);
  std::vector<int32_t> x = p.tokens.to_vector<int32_t>();
  for (size_t r = 0; r < p.lengths.size(); ++r)
    for (int t = p.lengths[r]; t < kT; ++t) x[r * kT + t] = tok(rng);
  return Tensor::from_vector(x, p.tokens.shape());
}

}  // namespace

// One input given as xs = {x} streams as it trains from x (the prefetcher stages xs[0]).
TEST(MultiInput, OneInputGivenAsXsStreamsAsX) {
  const Dataset d = cudl::testing::separable_blobs(48, 8, 3, 2.f, 0.5f, 3);
  Dataset as_xs;
  as_xs.xs = {d.x};
  as_xs.y = d.y;
  auto losses = [](const Dataset& data) {
    Sequential m(Shape{8}, {layers::Dense(3)}, "xs_stream");
    m.compile(cudl::testing::classifier_options(Device::cpu(), optim::Adam(0.02), 3));
    FitOptions f = cudl::testing::quiet_fit(2, 16, 1);
    f.data_placement = DataPlacement::Stream;
    return m.fit(data, f).metrics.at("loss");
  };
  EXPECT_EQ(losses(as_xs), losses(d));
}

TEST(MultiInput, KeyMaskFedThroughFitIgnoresPaddedTokens) {
  const Padded p = padded(40, 5);
  Dataset d;
  d.xs = {p.tokens, p.mask};
  d.y = p.labels;
  std::vector<History> runs;
  std::vector<Tensor> preds;
  for (Device dev : cudl::testing::test_devices()) {
    for (const char* engine : {"fused", "unfused"}) {
      SCOPED_TRACE(dev.str() + " " + engine);
      Model m = masked_model(engine);
      m.compile(cudl::testing::classifier_options(dev, optim::Adam(0.02), 3));
      runs.push_back(m.fit(d, cudl::testing::quiet_fit(4, 8, 2)));
      EXPECT_LT(runs.back().metrics["loss"].back(), runs.back().metrics["loss"].front());
      // Changing the padded tokens changes nothing at the real positions.
      const Tensor out = m.predict(d.xs, 16);
      preds.push_back(out);
      const std::vector<float> a = host(out), b = host(m.predict(std::vector<Tensor>{repad(p, 77), p.mask}, 16));
      int compared = 0;
      for (size_t r = 0; r < p.lengths.size(); ++r)
        for (int t = 0; t < p.lengths[r]; ++t)
          for (int c = 0; c < 3; ++c, ++compared) {
            const size_t i = (r * kT + t) * 3 + c;
            ASSERT_EQ(a[i], b[i]) << "row " << r << " position " << t << " (length " << p.lengths[r] << ")";
          }
      EXPECT_GT(compared, 100);
      // Without the mask the padded tokens do change the real positions: the check above can fail.
      const std::vector<float> c =
          host(m.predict(std::vector<Tensor>{repad(p, 77), Tensor::full(p.mask.shape(), 1.0)}, 16));
      const std::vector<float> d1 =
          host(m.predict(std::vector<Tensor>{p.tokens, Tensor::full(p.mask.shape(), 1.0)}, 16));
      float moved = 0.f;
      for (size_t r = 0; r < p.lengths.size(); ++r)
        for (int t = 0; t < p.lengths[r]; ++t)
          for (int k = 0; k < 3; ++k) {
            const size_t i = (r * kT + t) * 3 + k;
            moved = std::max(moved, std::fabs(c[i] - d1[i]));
          }
      EXPECT_GT(moved, 1e-4f);
    }
  }
  for (size_t i = 1; i < runs.size(); ++i) {
    EXPECT_TRUE(cudl::testing::losses_close(runs[i], runs[0], 1e-4)) << "run " << i;
    EXPECT_TRUE(all_close(preds[i], preds[0], 1e-4, 1e-3)) << "run " << i;
  }
}

TEST(MultiInput, PaddingMaskFromTheTokensMatchesTheFedMask) {
  const Padded p = padded(24, 6);
  for (Device dev : cudl::testing::test_devices()) {
    SCOPED_TRACE(dev.str());
    Var tokens = Input(Shape{kT}, DType::i32, "tokens");
    Var e = (*layers::Embedding(kVocab, kDim))(tokens);
    Var mask = (*layers::PaddingMask())(tokens);  // 1 for real tokens, 0 for token 0
    Var h = (*layers::MultiHeadAttention(MultiHeadAttentionOptions(2, 4).key_mask(true)))({e, mask});
    Model one(tokens, (*layers::Dense(3))(h), "mask_zero");
    Model two = masked_model("auto");
    const CompileOptions o = cudl::testing::classifier_options(dev, optim::Adam(0.02), 3);
    one.compile(o);
    two.compile(o);
    two.set_weights(one.get_weights());  // PaddingMask has none
    EXPECT_TRUE(all_close(one.predict(p.tokens, 8), two.predict(std::vector<Tensor>{p.tokens, p.mask}, 8), 0, 0));
    Dataset d1{p.tokens, p.labels}, d2;
    d2.xs = {p.tokens, p.mask};
    d2.y = p.labels;
    EXPECT_TRUE(cudl::testing::losses_close(one.fit(d1, cudl::testing::quiet_fit(2, 8, 2)),
                                            two.fit(d2, cudl::testing::quiet_fit(2, 8, 2)), 1e-6));
  }
  Var f = Input(Shape{3});
  Model bad(f, (*layers::PaddingMask())(f), "bad");
  CompileOptions o;
  o.loss = "mse";
  EXPECT_NE(error_message([&] { bad.compile(o); }).find("token ids must be i32, got f32"), std::string::npos);
}

// --- return_state ------------------------------------------------------------------------------

namespace {

constexpr int64_t kSteps = 5, kFeat = 3, kUnits = 4;

enum class Cell { Simple, Lstm, Gru };

const char* cell_name(Cell c) { return c == Cell::Lstm ? "lstm" : c == Cell::Gru ? "gru" : "simple_rnn"; }

LayerPtr recurrent(Cell cell, const RecurrentOptions& o) {
  return cell == Cell::Lstm ? layers::LSTM(o) : cell == Cell::Gru ? layers::GRU(o) : layers::SimpleRNN(o);
}

/// An LSTM/GRU/SimpleRNN returning its states; the head reads `use` of [output, h, (c)].
Model state_model(Cell cell, bool sequences, const std::vector<int>& use) {
  Var x = Input(Shape{kSteps, kFeat}, DType::f32, "x");
  RecurrentOptions o = RecurrentOptions(kUnits).return_sequences(sequences).return_state(true).name("rnn");
  std::vector<Var> outs = recurrent(cell, o)->apply(x);
  std::vector<Var> picked;
  for (int k : use)
    picked.push_back(k == 0 && sequences ? (*layers::Flatten())(outs[0]) : outs[static_cast<size_t>(k)]);
  Var joined = picked.size() > 1 ? (*layers::Concatenate())(picked) : picked[0];
  return Model(x, (*layers::Dense(2))(joined), "states");
}

/// One SGD step (lr 1) on the batch moves each probed weight of every parameter of `layer` by the
/// loss's finite-difference derivative, and some gradient reaches each parameter.
void expect_sgd_step_matches_fd(Model& m, const Tensor& x, const Tensor& y, const std::string& layer) {
  for (const auto& [pname, w] : m.layer(layer)->params()) {
    const size_t n = static_cast<size_t>(w.numel());
    const double largest =
        cudl::testing::expect_sgd_step_matches_fd(m, x, y, w, {0, n / 3, n / 2, n - 1}, 1e-3, layer + "." + pname);
    EXPECT_GT(largest, 1e-4) << layer << "." << pname << ": no gradient reached it";
  }
}

CompileOptions regression(Device dev, Optimizer opt = optim::SGD(1.0)) {
  CompileOptions o;
  o.optimizer = opt;
  o.loss = losses::MeanSquaredError();
  o.device = dev;
  o.seed = 11;
  return o;
}

}  // namespace

TEST(ReturnState, StatesAreTheFinalStepsAndKerasShapes) {
  const Tensor x = random_tensor(Shape{3, kSteps, kFeat}, 6);
  for (Cell cell : {Cell::Simple, Cell::Lstm, Cell::Gru}) {
    SCOPED_TRACE(cell_name(cell));
    Var in = Input(Shape{kSteps, kFeat});
    LayerPtr rnn = recurrent(cell, RecurrentOptions(kUnits).return_sequences(true).return_state(true));
    const std::vector<Var> outs = rnn->apply(in);
    ASSERT_EQ(outs.size(), cell == Cell::Lstm ? 3u : 2u);
    EXPECT_EQ(outs[0].shape(), (Shape{kSteps, kUnits}));
    for (size_t k = 1; k < outs.size(); ++k) EXPECT_EQ(outs[k].shape(), (Shape{kUnits}));
    EXPECT_NE(error_message([&] { (*rnn)(in); }).find("apply it with layer->apply(x)"), std::string::npos);
    // h_T is the last step of the sequence output.
    Model seq(in, outs[0], "seq"), h(in, outs[1], "h");
    seq.compile(regression(Device::cpu()));
    h.compile(regression(Device::cpu()));
    const std::vector<float> s = host(seq.predict(x)), hv = host(h.predict(x));
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t u = 0; u < kUnits; ++u)
        EXPECT_EQ(hv[b * kUnits + u], s[(b * kSteps + kSteps - 1) * kUnits + u]) << "row " << b << " unit " << u;
    if (cell == Cell::Lstm) {  // |c| is not bounded by 1 as h = o tanh(c) is, and differs from h
      Model c(in, outs[2], "c");
      c.compile(regression(Device::cpu()));
      EXPECT_GT(cudl::testing::max_abs_diff(c.predict(x), h.predict(x)), 1e-3);
    }
  }
}

TEST(ReturnState, GradientsThroughTheStatesMatchFiniteDifferences) {
  const Tensor x = random_tensor(Shape{4, kSteps, kFeat}, 8), y = random_tensor(Shape{4, 2}, 9);
  struct Case {
    Cell cell;
    bool sequences;
    std::vector<int> use;
  };
  // The LSTM's cell state alone (h gets no gradient from the head), h and c together, and the GRU
  // and SimpleRNN states next to their sequence outputs.
  for (const Case& c : {Case{Cell::Lstm, false, {2}}, Case{Cell::Lstm, false, {1, 2}}, Case{Cell::Lstm, true, {0, 2}},
                        Case{Cell::Gru, true, {0, 1}}, Case{Cell::Simple, true, {1}}}) {
    std::string use;
    for (int k : c.use) use += " " + std::to_string(k);
    SCOPED_TRACE(std::string(cell_name(c.cell)) + (c.sequences ? " sequences" : "") + " use" + use);
    Model m = state_model(c.cell, c.sequences, c.use);
    m.compile(regression(Device::cpu()));
    expect_sgd_step_matches_fd(m, x, y, "rnn");
  }
}

TEST(ReturnState, EncoderStatesTrainTheSameOnCpuAndCuda) {
  CUDL_REQUIRE_CUDA();
  const Tensor x = random_tensor(Shape{6, kSteps, kFeat}, 12), y = random_tensor(Shape{6, 2}, 13);
  for (Cell cell : {Cell::Lstm, Cell::Gru}) {
    SCOPED_TRACE(cell_name(cell));
    std::vector<std::vector<double>> losses;
    std::vector<std::vector<Tensor>> weights;
    for (Device dev : {Device::cpu(), Device::cuda(0)}) {
      Model m = state_model(cell, true, cell == Cell::Lstm ? std::vector<int>{1, 2} : std::vector<int>{0, 1});
      m.compile(regression(dev, optim::Adam(0.01)));
      losses.emplace_back();
      for (int s = 0; s < 4; ++s) losses.back().push_back(m.train_on_batch(x, y).at("loss"));
      weights.push_back(m.get_weights());
    }
    for (size_t s = 0; s < losses[0].size(); ++s) EXPECT_NEAR(losses[1][s], losses[0][s], 1e-5) << "step " << s;
    for (size_t i = 0; i < weights[0].size(); ++i)
      EXPECT_TRUE(all_close(weights[1][i], weights[0][i], 1e-4, 1e-3)) << "weight " << i;
    EXPECT_LT(losses[0].back(), losses[0].front());
  }
}
