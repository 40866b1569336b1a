// tests/test_op_recurrent.cpp — the recurrent family (RecurrentSequence and its BPTT backward,
// simple / lstm / gru cells): CPU reference vs finite differences, CUDA vs CPU on odd sizes and a
// 1,024-step sequence, contract errors, and the layers (shapes, Keras initialisers, CPU vs CUDA,
// forward values against PyTorch 1.13's LSTM and GRU from tests/gen/recurrent_torch_reference.txt).
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/parallel.hpp"
#include "ops/recurrent.hpp"
#include "testing.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

const Device kCpu = Device::cpu();

struct Seq {
  Tensor h, gates, aux;
};

struct Problem {
  RecurrentCell cell;
  int64_t T, B, H;
  int64_t gh() const { return recurrent_gates(cell) * H; }
  bool gru() const { return cell == RecurrentCell::Gru; }
  bool simple() const { return cell == RecurrentCell::Simple; }
};

OpAttrs attrs_of(RecurrentCell cell) { return ops::RecurrentAttrs{cell}.to_op_attrs(); }

Seq forward(const Problem& p, const Tensor& xp, const Tensor& u, const Tensor& bias, Device d) {
  Seq s;
  s.h = Tensor::full(Shape{p.T, p.B, p.H}, -7.0, xp.dtype(), d);  // h in xp's storage type
  if (!p.simple()) {
    s.gates = Tensor::full(Shape{p.T, p.B, p.gh()}, -7.0, xp.dtype(), d);
    s.aux = Tensor::full(Shape{p.T, p.B, p.H}, -7.0, DType::f32, d);
  }
  Tensor b = bias.defined() ? bias.to(d) : Tensor();
  run_op(OpKind::RecurrentSequence, {tv(xp.to(d)), tv(u.to(d)), tv(b)}, {tv(s.h), tv(s.gates), tv(s.aux)},
         attrs_of(p.cell), nullptr, "test/rnn");
  return Seq{s.h.to(kCpu), s.gates.defined() ? s.gates.to(kCpu) : Tensor(), s.aux.defined() ? s.aux.to(kCpu) : Tensor()};
}

struct Grads {
  Tensor dxp, du, dbias;
};

Grads backward(const Problem& p, const Tensor& u, const Seq& s, const Tensor& dh, const Tensor& daux, Device d) {
  Grads g;
  g.dxp = Tensor::full(Shape{p.T, p.B, p.gh()}, -7.0, dh.dtype(), d);  // dxp in dh's storage type
  g.du = Tensor::full(u.shape(), -7.0, DType::f32, d);
  if (p.gru()) g.dbias = Tensor::full(Shape{p.gh()}, -7.0, DType::f32, d);
  auto on = [&](const Tensor& t) { return t.defined() ? t.to(d) : Tensor(); };
  run_op(OpKind::RecurrentSequenceBackward,
         {tv(u.to(d)), tv(s.h.to(d)), tv(on(s.gates)), tv(on(s.aux)), tv(dh.to(d)), tv(on(daux))},
         {tv(g.dxp), tv(g.du), tv(g.dbias)}, attrs_of(p.cell), nullptr, "test/rnn");
  return Grads{g.dxp.to(kCpu), g.du.to(kCpu), g.dbias.defined() ? g.dbias.to(kCpu) : Tensor()};
}

struct Inputs {
  Tensor xp, u, bias;
};

Inputs inputs(const Problem& p, uint64_t seed, float scale = 1.f) {
  Inputs in;
  in.xp = random_tensor(Shape{p.T, p.B, p.gh()}, seed, -scale, scale);
  in.u = random_tensor(Shape{p.gh(), p.H}, seed + 1, -scale, scale);
  if (p.gru()) in.bias = random_tensor(Shape{p.gh()}, seed + 2, -0.5f, 0.5f);
  return in;
}

Tensor as_tensor(const std::vector<double>& w, const Shape& s) {
  return Tensor::from_vector(std::vector<float>(w.begin(), w.end()), s);
}

const char* name(RecurrentCell c) { return recurrent_cell_name(c); }

/// Every part appears in the message of the cudl::Error that `fn` throws.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  const std::string m = error_message(fn);
  for (const auto& part : parts) EXPECT_NE(m.find(part), std::string::npos) << "'" << part << "' not in: " << m;
}

}  // namespace

// ---------------------------------------------------------------- CPU reference -----------------

TEST(RecurrentCpu, ForwardMatchesTheCellEquations) {
  // One lstm unit, one row, two steps, computed by hand from Keras's equations.
  const Problem p{RecurrentCell::Lstm, 2, 1, 1};
  Tensor xp = Tensor::from_vector(std::vector<float>{0.1f, 0.2f, 0.3f, 0.4f, -0.5f, 0.6f, -0.7f, 0.8f}, Shape{2, 1, 4});
  Tensor u = Tensor::from_vector(std::vector<float>{0.5f, -0.25f, 0.75f, 1.f}, Shape{4, 1});
  const Seq s = forward(p, xp, u, Tensor(), kCpu);
  auto sg = [](double v) { return 1 / (1 + std::exp(-v)); };
  double c = sg(0.1) * std::tanh(0.3);  // c_0 = i g (f c_{-1} = 0)
  double h = sg(0.4) * std::tanh(c);
  EXPECT_NEAR(s.h.item(0), h, 1e-6);
  const double i = sg(-0.5 + 0.5 * h), f = sg(0.6 - 0.25 * h), g = std::tanh(-0.7 + 0.75 * h), o = sg(0.8 + h);
  c = f * c + i * g;
  EXPECT_NEAR(s.aux.item(1), c, 1e-6);
  EXPECT_NEAR(s.h.item(1), o * std::tanh(c), 1e-6);
}

TEST(RecurrentCpu, BackwardMatchesFiniteDifferences) {
  for (RecurrentCell cell : {RecurrentCell::Simple, RecurrentCell::Lstm, RecurrentCell::Gru}) {
    for (bool with_daux : {false, true}) {
      if (with_daux && cell != RecurrentCell::Lstm) continue;
      SCOPED_TRACE(std::string(name(cell)) + (with_daux ? " with dc" : ""));
      const Problem p{cell, 4, 3, 5};
      const Inputs in = inputs(p, 11, 0.8f);
      const auto wh = as_doubles(random_tensor(Shape{p.T, p.B, p.H}, 21));
      const auto wc = as_doubles(random_tensor(Shape{p.T, p.B, p.H}, 22));
      auto loss = [&](const Tensor& xp, const Tensor& u, const Tensor& b) {
        const Seq s = forward(p, xp, u, b, kCpu);
        return weighted_sum(s.h, wh) + (with_daux ? weighted_sum(s.aux, wc) : 0.0);
      };
      const Seq s = forward(p, in.xp, in.u, in.bias, kCpu);
      const Grads g = backward(p, in.u, s, as_tensor(wh, s.h.shape()),
                               with_daux ? as_tensor(wc, s.h.shape()) : Tensor(), kCpu);
      EXPECT_TRUE(gradient_close(g.dxp, numerical_gradient([&](const Tensor& x) { return loss(x, in.u, in.bias); },
                                                           in.xp.clone())))
          << "dxp";
      EXPECT_TRUE(gradient_close(g.du, numerical_gradient([&](const Tensor& u) { return loss(in.xp, u, in.bias); },
                                                          in.u.clone())))
          << "du";
      if (p.gru())
        EXPECT_TRUE(gradient_close(
            g.dbias, numerical_gradient([&](const Tensor& b) { return loss(in.xp, in.u, b); }, in.bias.clone())))
            << "dbias_r";
    }
  }
}

TEST(RecurrentCpu, OneStepAndBatchSplitAgree) {
  // T = 1 (no recurrent GEMM, du = 0) and a batch large enough to be split into thread chunks.
  for (RecurrentCell cell : {RecurrentCell::Simple, RecurrentCell::Lstm, RecurrentCell::Gru}) {
    SCOPED_TRACE(name(cell));
    const Problem one{cell, 1, 3, 4};
    const Inputs in = inputs(one, 5);
    const Seq s = forward(one, in.xp, in.u, in.bias, kCpu);
    const Grads g = backward(one, in.u, s, random_tensor(s.h.shape(), 6), Tensor(), kCpu);
    EXPECT_TRUE(all_close(g.du, Tensor::zeros(in.u.shape()), 0, 0)) << "no step before the first: du = 0";
    const Problem big{cell, 3, 40, 64};
    const Inputs bi = inputs(big, 7, 0.3f);
    Seq split, whole;
    {
      ScopedCpuThreads threads(1);
      whole = forward(big, bi.xp, bi.u, bi.bias, kCpu);
    }
    {
      ScopedCpuThreads threads(3);
      split = forward(big, bi.xp, bi.u, bi.bias, kCpu);
    }
    EXPECT_TRUE(all_close(split.h, whole.h, 1e-6, 1e-5));
  }
}

TEST(RecurrentCpu, ContractErrorsNameTheProblem) {
  const Problem p{RecurrentCell::Lstm, 2, 3, 4};
  const Inputs in = inputs(p, 1);
  expect_error([&] { forward(p, in.xp, random_tensor(Shape{15, 4}, 1), Tensor(), kCpu); },
               {"RecurrentSequence", "test/rnn", "u must be (G*H, H)", "(15, 4)"});
  expect_error([&] { forward(p, random_tensor(Shape{2, 3, 12}, 1), in.u, Tensor(), kCpu); },
               {"xp must be (T, B, 16)", "(2, 3, 12)"});
  expect_error([&] { forward(p, in.xp, in.u, random_tensor(Shape{16}, 1), kCpu); }, {"bias_r", "gru", "lstm"});
  const Problem simple{RecurrentCell::Simple, 2, 3, 4};
  const Inputs si = inputs(simple, 1);
  Tensor h = Tensor::zeros(Shape{2, 3, 4}), extra = Tensor::zeros(Shape{2, 3, 4});
  expect_error(
      [&] {
        run_op(OpKind::RecurrentSequence, {tv(si.xp), tv(si.u)}, {tv(h), tv(extra), tv(extra)},
               attrs_of(RecurrentCell::Simple), nullptr, "test/rnn");
      },
      {"simple cell takes no gates"});
  // 16-bit storage: xp, h, gates, dh and dxp in one storage type; u and aux stay f32.
  const Tensor xp16 = to_storage(in.xp, DType::bf16);
  Tensor h16 = Tensor::zeros(Shape{2, 3, 4}, DType::bf16), h32 = Tensor::zeros(Shape{2, 3, 4});
  Tensor g32 = Tensor::zeros(Shape{2, 3, 16}), a32 = Tensor::zeros(Shape{2, 3, 4});
  expect_error([&] { run_op(OpKind::RecurrentSequence, {tv(xp16), tv(in.u)}, {tv(h32), tv(g32), tv(a32)},
                            attrs_of(p.cell), nullptr, "test/rnn"); },
               {"RecurrentSequence", "output 0 (2, 3, 4) has dtype f32 but input 0 has bf16"});
  expect_error([&] { run_op(OpKind::RecurrentSequence, {tv(xp16), tv(to_storage(in.u, DType::bf16))},
                            {tv(h16), tv(g32), tv(a32)}, attrs_of(p.cell), nullptr, "test/rnn"); },
               {"input 1 (16, 4) has dtype bf16, expected f32"});
  expect_error([&] { run_op(OpKind::RecurrentSequence, {tv(xp16), tv(in.u)},
                            {tv(h16), tv(to_storage(g32, DType::bf16)), tv(to_storage(a32, DType::bf16))},
                            attrs_of(p.cell), nullptr, "test/rnn"); },
               {"output 2 (2, 3, 4) has dtype bf16, expected f32"});
  expect_error([&] { run_op(OpKind::RecurrentSequence, {tv(xp16), tv(in.u)}, {tv(h16), tv(g32), tv(a32)},
                            attrs_of(p.cell), nullptr, "test/rnn"); },
               {"output 1 (2, 3, 16) has dtype f32 but input 0 has bf16"});
  OpAttrs bad;
  bad.i[0] = 7;
  expect_error([&] { run_op(OpKind::RecurrentSequence, {tv(si.xp), tv(si.u)}, {tv(h)}, bad, nullptr, "test/rnn"); },
               {"cell i[0]", "got 7"});
}

// ---------------------------------------------------------------- CUDA vs CPU -------------------

namespace {

void expect_cuda_matches_cpu(const Problem& p, uint64_t seed, float scale, double atol, double rtol) {
  const Inputs in = inputs(p, seed, scale);
  const Seq c = forward(p, in.xp, in.u, in.bias, kCpu);
  const Seq g = forward(p, in.xp, in.u, in.bias, Device::cuda());
  EXPECT_TRUE(all_close(g.h, c.h, atol, rtol)) << "h";
  if (!p.simple()) {
    EXPECT_TRUE(all_close(g.gates, c.gates, atol, rtol)) << "gates";
    EXPECT_TRUE(all_close(g.aux, c.aux, atol, rtol)) << "aux";
  }
  const Tensor dh = random_tensor(c.h.shape(), seed + 10);
  const Tensor daux = p.cell == RecurrentCell::Lstm ? random_tensor(c.h.shape(), seed + 11) : Tensor();
  const Grads gc = backward(p, in.u, c, dh, daux, kCpu);
  const Grads gg = backward(p, in.u, c, dh, daux, Device::cuda());
  EXPECT_TRUE(all_close(gg.dxp, gc.dxp, atol, rtol)) << "dxp";
  EXPECT_TRUE(all_close(gg.du, gc.du, atol * 10, rtol)) << "du";
  if (p.gru()) EXPECT_TRUE(all_close(gg.dbias, gc.dbias, atol * 10, rtol)) << "dbias_r";
}

}  // namespace

TEST(RecurrentCuda, ForwardAndBackwardMatchCpuOnOddSizes) {
  CUDL_REQUIRE_CUDA();
  for (RecurrentCell cell : {RecurrentCell::Simple, RecurrentCell::Lstm, RecurrentCell::Gru})
    for (Problem p : {Problem{cell, 1, 1, 1}, Problem{cell, 5, 3, 7}, Problem{cell, 3, 2, 33}, Problem{cell, 2, 9, 70}}) {
      SCOPED_TRACE(std::string(name(cell)) + " T " + std::to_string(p.T) + " B " + std::to_string(p.B) + " H " +
                   std::to_string(p.H));
      expect_cuda_matches_cpu(p, 31, 0.5f, 1e-5, 1e-4);
    }
}

TEST(RecurrentCuda, LongSequenceMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  for (RecurrentCell cell : {RecurrentCell::Lstm, RecurrentCell::Gru}) {
    SCOPED_TRACE(name(cell));
    expect_cuda_matches_cpu(Problem{cell, 1024, 2, 3}, 41, 0.5f, 1e-4, 1e-3);
  }
}

// 16-bit storage (bf16, f16): xp and dh in the storage type, h, the gates and dxp written in it; the
// recurrence runs in f32 (the state carried from step to step is h unrounded, and h comes from the
// unrounded gates, as in the CPU reference's f32 op on the widened xp), so h, the gates and dxp match
// the CPU within an ulp, and aux, du and dbias_r as in f32.
TEST(RecurrentCuda, SixteenBitStorageMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  for (DType st : k16BitTypes)
    for (RecurrentCell cell : {RecurrentCell::Simple, RecurrentCell::Lstm, RecurrentCell::Gru})
      for (Problem p : {Problem{cell, 7, 3, 5}, Problem{cell, 40, 4, 33}}) {
        SCOPED_TRACE(std::string(name(cell)) + " " + dtype_name(st) + " T " + std::to_string(p.T) + " H " +
                     std::to_string(p.H));
        Inputs in = inputs(p, 61, 0.8f);
        // u's spectral radius about 0.8: a contracting recurrence, where f32 rounding differences
        // (the CPU's and the device's GEMM orders) do not grow with the steps.
        const float us = 0.8f / std::sqrt(static_cast<float>(p.H) / 3.f);
        in.u = random_tensor(in.u.shape(), 64, -us, us);
        const Tensor xp = to_storage(in.xp, st);
        const Seq c = forward(p, xp, in.u, in.bias, kCpu), g = forward(p, xp, in.u, in.bias, Device::cuda());
        ASSERT_EQ(c.h.dtype(), st);
        EXPECT_TRUE(close_16bit(g.h, c.h, 1, 0.9, 1e-6)) << "h";
        // The CPU reference is the f32 op on the widened xp, rounded once.
        EXPECT_TRUE(equal_16bit(to_storage(forward(p, widened(xp), in.u, in.bias, kCpu).h, st), c.h));
        if (!p.simple()) {
          ASSERT_EQ(c.gates.dtype(), st);
          EXPECT_TRUE(close_16bit(g.gates, c.gates, 1, 0.9, 1e-6)) << "gates";
          EXPECT_TRUE(all_close(g.aux, c.aux, 1e-5, 1e-4)) << "aux";
        }
        const Tensor dh = to_storage(random_tensor(c.h.shape(), 62), st);
        const Tensor daux = p.cell == RecurrentCell::Lstm ? random_tensor(c.h.shape(), 63) : Tensor();
        const Grads gc = backward(p, in.u, c, dh, daux, kCpu), gg = backward(p, in.u, c, dh, daux, Device::cuda());
        ASSERT_EQ(gc.dxp.dtype(), st);
        EXPECT_TRUE(close_16bit(gg.dxp, gc.dxp, 1, 0.9, 1e-6)) << "dxp";
        EXPECT_TRUE(all_close(gg.du, gc.du, 1e-4, 1e-4)) << "du";
        if (p.gru()) EXPECT_TRUE(all_close(gg.dbias, gc.dbias, 1e-4, 1e-4)) << "dbias_r";
      }
}

TEST(RecurrentCuda, RunsInsideACapturedGraph) {
  CUDL_REQUIRE_CUDA();
  const Problem p{RecurrentCell::Gru, 6, 3, 5};
  const Inputs in = inputs(p, 51, 0.5f);
  const Seq ref = forward(p, in.xp, in.u, in.bias, kCpu);
  const Device d = Device::cuda();
  Tensor xp = in.xp.to(d), u = in.u.to(d), b = in.bias.to(d);
  Tensor h = Tensor::zeros(ref.h.shape(), DType::f32, d), gates = Tensor::zeros(ref.gates.shape(), DType::f32, d);
  Tensor aux = Tensor::zeros(ref.aux.shape(), DType::f32, d);
  ExecContext& ctx = default_context(d);
  auto graph = capture(ctx, [&] {
    run_op(OpKind::RecurrentSequence, {tv(xp), tv(u), tv(b)}, {tv(h), tv(gates), tv(aux)}, attrs_of(p.cell), &ctx,
           "test/rnn");
  });
  graph->launch();
  ctx.synchronize();
  EXPECT_TRUE(all_close(h.to(kCpu), ref.h, 1e-5, 1e-4));
}

// ---------------------------------------------------------------- layers ------------------------

namespace {

LayerPtr make_layer(RecurrentCell cell, int64_t units, bool sequences) {
  if (cell == RecurrentCell::Lstm) return layers::LSTM(units, sequences);
  if (cell == RecurrentCell::Gru) return layers::GRU(units, sequences);
  return layers::SimpleRNN(units, sequences);
}

// (time 6, features 3) sequences; the label is which third of the time axis holds the largest
// feature-0 value: the network has to carry state across steps.
Dataset sequences(int64_t n, uint64_t seed) {
  Tensor x = random_tensor(Shape{n, 6, 3}, seed);
  std::vector<int32_t> y(static_cast<size_t>(n));
  const float* xv = x.data_as<float>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t best = 0;
    for (int64_t t = 1; t < 6; ++t)
      if (xv[(i * 6 + t) * 3] > xv[(i * 6 + best) * 3]) best = t;
    y[i] = static_cast<int32_t>(best / 2);
  }
  return Dataset{x, Tensor::from_vector(y, Shape{n})};
}

Sequential recurrent_model(RecurrentCell cell, bool sequences) {
  std::vector<LayerPtr> ls{make_layer(cell, 7, sequences)};
  if (sequences) ls.push_back(layers::Flatten());
  ls.push_back(layers::Dense(3));
  return Sequential(Shape{6, 3}, ls, std::string("rnn_") + name(cell));
}

CompileOptions compile_on(Device d) {
  CompileOptions o;
  o.optimizer = optim::Adam(0.01);
  o.loss = "sparse_categorical_crossentropy";
  o.metrics = {"accuracy"};
  o.device = d;
  o.seed = 5;
  return o;
}

std::vector<float> all_weights(Model& m) {
  std::vector<float> w;
  for (auto& l : m.layers())
    for (auto& [k, t] : l->params()) {
      auto v = t.to(kCpu).to_vector<float>();
      w.insert(w.end(), v.begin(), v.end());
    }
  return w;
}

}  // namespace

TEST(RecurrentLayers, OutputShapesAndErrors) {
  Var x = Input(Shape{6, 3});
  EXPECT_EQ((*layers::LSTM(5))(x).shape(), Shape({5}));
  EXPECT_EQ((*layers::GRU(5, true))(x).shape(), Shape({6, 5}));
  EXPECT_EQ((*layers::SimpleRNN(RecurrentOptions(2).return_sequences(true)))(x).shape(), Shape({6, 2}));
  expect_error([&] { (*layers::LSTM(4))(Input(Shape{6})); }, {"lstm", "(time, features)", "(6,)"});
  expect_error([] { layers::GRU(0); }, {"gru", "units must be positive"});
}

TEST(RecurrentLayers, KerasInitialisers) {
  for (RecurrentCell cell : {RecurrentCell::Simple, RecurrentCell::Lstm, RecurrentCell::Gru}) {
    SCOPED_TRACE(name(cell));
    Sequential m = recurrent_model(cell, false);
    m.compile(compile_on(kCpu));
    const auto& ps = m.layers()[0]->params();
    const int64_t H = 7, GH = recurrent_gates(cell) * H;
    ASSERT_EQ(ps.size(), cell == RecurrentCell::Gru ? 4u : 3u);
    EXPECT_EQ(ps[0].first, "kernel");
    EXPECT_EQ(ps[0].second.shape(), Shape({GH, 3}));
    EXPECT_EQ(ps[1].first, "recurrent_kernel");
    // Orthogonal (GH, H), GH >= H: orthonormal columns.
    const Tensor u = ps[1].second.to(kCpu);
    for (int64_t a = 0; a < H; ++a)
      for (int64_t b = 0; b < H; ++b) {
        double dot = 0;
        for (int64_t r = 0; r < GH; ++r) dot += u.item(r * H + a) * u.item(r * H + b);
        EXPECT_NEAR(dot, a == b ? 1.0 : 0.0, 1e-5) << a << "," << b;
      }
    const Tensor bias = ps[2].second.to(kCpu);
    for (int64_t j = 0; j < GH; ++j)
      EXPECT_EQ(bias.item(j), cell == RecurrentCell::Lstm && j >= H && j < 2 * H ? 1.0 : 0.0) << j;
  }
}

TEST(RecurrentLayers, SameInitialWeightsOnCpuAndCuda) {
  CUDL_REQUIRE_CUDA();
  for (RecurrentCell cell : {RecurrentCell::Lstm, RecurrentCell::Gru}) {
    Sequential c = recurrent_model(cell, false), g = recurrent_model(cell, false);
    c.compile(compile_on(kCpu));
    g.compile(compile_on(Device::cuda(0)));
    EXPECT_EQ(all_weights(c), all_weights(g)) << name(cell);
  }
}

TEST(RecurrentLayers, TrainingLearnsAndCpuAndCudaAgree) {
  const Dataset d = sequences(96, 3);
  FitOptions f;
  f.epochs = 3;
  f.batch_size = 32;
  f.verbose = 0;
  f.seed = 4;
  for (RecurrentCell cell : {RecurrentCell::Simple, RecurrentCell::Lstm, RecurrentCell::Gru})
    for (bool seq : {false, true}) {
      SCOPED_TRACE(std::string(name(cell)) + (seq ? " return_sequences" : ""));
      Sequential c = recurrent_model(cell, seq);
      c.compile(compile_on(kCpu));
      const History hc = c.fit(d, f);
      EXPECT_LT(hc.metrics.at("loss").back(), hc.metrics.at("loss").front()) << "the loss goes down";
      if (!cuda_available()) continue;
      Sequential g = recurrent_model(cell, seq);
      g.compile(compile_on(Device::cuda(0)));
      const History hg = g.fit(d, f);
      for (size_t e = 0; e < hc.metrics.at("loss").size(); ++e)
        EXPECT_NEAR(hg.metrics.at("loss")[e], hc.metrics.at("loss")[e], 1e-4) << "epoch " << e;
      const auto wc = all_weights(c), wg = all_weights(g);
      EXPECT_TRUE(all_close(Tensor::from_vector(wg, Shape{(int64_t)wg.size()}),
                            Tensor::from_vector(wc, Shape{(int64_t)wc.size()}), 1e-4, 1e-3));
    }
}

// ---------------------------------------------------------------- PyTorch reference -------------

namespace {

/// The tensors of tests/gen/recurrent_torch_reference.txt (written by the script beside it).
std::map<std::string, Tensor> torch_reference() {
  std::ifstream in(std::string(CUDL_SOURCE_DIR) + "/tests/gen/recurrent_torch_reference.txt");
  std::map<std::string, Tensor> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string name, tok;
    std::vector<int64_t> dims;
    ls >> name;
    while (ls >> tok && tok != ":") dims.push_back(std::stoll(tok));
    std::vector<float> v;
    for (float f; ls >> f;) v.push_back(f);
    out[name] = Tensor::from_vector(v, Shape(dims));
  }
  return out;
}

}  // namespace

TEST(RecurrentLayers, ForwardMatchesPyTorch) {
  const auto ref = torch_reference();
  ASSERT_TRUE(ref.count("x") && ref.count("lstm.out") && ref.count("gru.out"))
      << "tests/gen/recurrent_torch_reference.txt missing or incomplete";
  const Tensor& x = ref.at("x");  // (B, T, F)
  std::vector<Device> devices{kCpu};
  if (cuda_available()) devices.push_back(Device::cuda(0));
  for (const char* cell : {"lstm", "gru"})
    for (Device d : devices) {
      SCOPED_TRACE(std::string(cell) + " on " + d.str());
      const std::string c = cell;
      const Tensor& out = ref.at(c + ".out");
      LayerPtr layer = c == "lstm" ? layers::LSTM(out.shape()[2], true) : layers::GRU(out.shape()[2], true);
      Var in = Input(Shape{x.shape()[1], x.shape()[2]});
      Model m(in, (*layer)(in), "torch_" + c);
      CompileOptions o = compile_on(d);
      o.loss = "mse";
      o.metrics = {};
      m.compile(o);
      std::vector<Tensor> w{ref.at(c + ".kernel"), ref.at(c + ".recurrent_kernel"), ref.at(c + ".bias")};
      if (c == "gru") w.push_back(ref.at("gru.recurrent_bias"));
      layer->set_weights(w);
      EXPECT_TRUE(all_close(m.predict(x, x.shape()[0]).to(kCpu), out, 2e-6, 1e-5));
    }
}
