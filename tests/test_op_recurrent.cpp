// tests/test_op_recurrent.cpp — the recurrent family (RecurrentSequence and its BPTT backward,
// simple / lstm / gru cells): CPU reference vs finite differences, CUDA vs CPU on odd sizes and a
// 1,024-step sequence, contract errors, and the layers (shapes, Keras initialisers, CPU vs CUDA).
#include <cmath>
#include <functional>
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
  s.h = Tensor::full(Shape{p.T, p.B, p.H}, -7.0, DType::f32, d);
  if (!p.simple()) {
    s.gates = Tensor::full(Shape{p.T, p.B, p.gh()}, -7.0, DType::f32, d);
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
  g.dxp = Tensor::full(Shape{p.T, p.B, p.gh()}, -7.0, DType::f32, d);
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
