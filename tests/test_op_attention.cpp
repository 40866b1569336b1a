// tests/test_op_attention.cpp — scaled dot-product attention: CPU reference by hand and against finite
// differences; the fused and the unfused CUDA engines against the CPU (causal and key masks, dropout,
// odd head sizes, T = 1024); cuDNN's fused attention (SDPA) for 16-bit calls; errors.
#include <cmath>
#include <string>
#include <vector>

#include "cuda/sdpa.hpp"
#include "ops/attention.hpp"
#include "testing.hpp"
#if defined(CUDL_EMULATED)
#include "emu/cudnn_emu.hpp"
#endif

using namespace cudl;
using namespace cudl::testing;

namespace {

struct Case {
  int64_t batch, tq, tk, heads, d, dv;
  bool causal = false, mask = false;
  double dropout = 0;
  std::string str() const {
    return "B" + std::to_string(batch) + " Tq" + std::to_string(tq) + " Tk" + std::to_string(tk) + " H" +
           std::to_string(heads) + " D" + std::to_string(d) + " Dv" + std::to_string(dv) + (causal ? " causal" : "") +
           (mask ? " mask" : "") + (dropout > 0 ? " dropout" : "");
  }
};

struct Inputs {
  Tensor q, k, v, mask, rng;
  Inputs to(Device d) const {
    return {q.to(d), k.to(d), v.to(d), mask.defined() ? mask.to(d) : Tensor{}, rng.defined() ? rng.to(d) : Tensor{}};
  }
  /// q, k and v in 16-bit storage `st` (each value rounded once); the mask and rng as they are.
  Inputs in_storage(DType st) const { return {to_storage(q, st), to_storage(k, st), to_storage(v, st), mask, rng}; }
};

Inputs make_inputs(const Case& c, uint64_t seed) {
  Inputs in;
  in.q = random_tensor(Shape{c.batch, c.tq, c.heads * c.d}, seed, -1.5f, 1.5f);
  in.k = random_tensor(Shape{c.batch, c.tk, c.heads * c.d}, seed + 1, -1.5f, 1.5f);
  in.v = random_tensor(Shape{c.batch, c.tk, c.heads * c.dv}, seed + 2);
  if (c.mask) {  // batch row 0 keeps keys j % 3 != 1; the last batch row (when > 1) masks every key
    std::vector<float> m(static_cast<size_t>(c.batch * c.tk));
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t j = 0; j < c.tk; ++j) m[b * c.tk + j] = (b == c.batch - 1 && b > 0) ? 0.f : (j % 3 != 1 ? 1.f : 0.f);
    in.mask = Tensor::from_vector(m, Shape{c.batch, c.tk});
  }
  if (c.dropout > 0) in.rng = Tensor::from_vector<int64_t>({static_cast<int64_t>(seed) * 7919 + 3, 11}, Shape{2});
  return in;
}

OpAttrs attrs_of(const Case& c, AttentionEngine engine) {
  return ops::AttentionAttrs{1.0 / std::sqrt(static_cast<double>(c.d)), c.dropout, c.heads, c.causal, engine, 5}
      .to_op_attrs();
}

struct Forward {
  Tensor o, lse;
};

/// o in q's dtype (f32, or bf16 / f16 under 16-bit storage); lse f32.
Forward forward(const Case& c, const Inputs& in, AttentionEngine engine = AttentionEngine::Auto) {
  const Device d = in.q.device();
  Forward f{Tensor::full(Shape{c.batch, c.tq, c.heads * c.dv}, 777.0, in.q.dtype(), d),
            Tensor::full(Shape{c.batch, c.heads, c.tq}, 777.0, DType::f32, d)};
  run_op(OpKind::Attention, {tv(in.q), tv(in.k), tv(in.v), tv(in.mask), tv(in.rng)}, {tv(f.o), tv(f.lse)},
         attrs_of(c, engine));
  return f;
}

struct Grads {
  Tensor dq, dk, dv;
};

Grads backward(const Case& c, const Inputs& in, const Forward& f, const Tensor& d_o,
               AttentionEngine engine = AttentionEngine::Auto) {
  const Device d = in.q.device();
  const DType st = in.q.dtype();  // dq, dk, dv in the storage type
  Grads g{Tensor::full(in.q.shape(), 777.0, st, d), Tensor::full(in.k.shape(), 777.0, st, d),
          Tensor::full(in.v.shape(), 777.0, st, d)};
  run_op(OpKind::AttentionBackward,
         {tv(in.q), tv(in.k), tv(in.v), tv(f.o), tv(f.lse), tv(d_o), tv(in.mask), tv(in.rng)},
         {tv(g.dq), tv(g.dk), tv(g.dv)}, attrs_of(c, engine));
  return g;
}

Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

/// Runs `engine` on CUDA and compares o, lse, dq, dk, dv with the CPU reference.
void expect_cuda_matches_cpu(const Case& c, AttentionEngine engine, double atol = 2e-5, double rtol = 1e-4) {
  SCOPED_TRACE(c.str() + (engine == AttentionEngine::Fused ? " fused" : engine == AttentionEngine::Unfused ? " unfused" : " auto"));
  const Inputs in = make_inputs(c, 100 + c.tq + c.d);
  const Tensor d_o = random_tensor(Shape{c.batch, c.tq, c.heads * c.dv}, 7 + c.tk);
  const Forward ref = forward(c, in);
  const Grads gref = backward(c, in, ref, d_o);
  const Inputs gin = in.to(Device::cuda());
  const Forward got = forward(c, gin, engine);
  EXPECT_TRUE(all_close(host(got.o), ref.o, atol, rtol)) << "o";
  EXPECT_TRUE(all_close(host(got.lse), ref.lse, atol, rtol)) << "lse";
  const Grads g = backward(c, gin, got, d_o.to(Device::cuda()), engine);
  EXPECT_TRUE(all_close(host(g.dq), gref.dq, atol, rtol)) << "dq";
  EXPECT_TRUE(all_close(host(g.dk), gref.dk, atol, rtol)) << "dk";
  EXPECT_TRUE(all_close(host(g.dv), gref.dv, atol, rtol)) << "dv";
}

const std::vector<Case>& parity_cases() {
  static const std::vector<Case> cases = {
      {1, 1, 1, 1, 1, 1},
      {2, 5, 7, 3, 4, 4},
      {2, 17, 17, 2, 12, 12, true},
      {2, 33, 20, 2, 20, 12, false, true},
      {3, 19, 19, 1, 8, 20, true, true},
      {2, 16, 16, 2, 16, 16, true, false, 0.25},
      {2, 21, 13, 2, 5, 7, false, true, 0.5},
  };
  return cases;
}

}  // namespace

TEST(Attention, CpuByHand) {
  // Equal keys: uniform weights, o = mean of the allowed values; causal row i averages v_0..v_i.
  const Case c{1, 3, 3, 1, 2, 1, true};
  Inputs in;
  in.q = random_tensor(Shape{1, 3, 2}, 1);
  in.k = Tensor::from_vector<float>({0.5f, -1.f, 0.5f, -1.f, 0.5f, -1.f}, Shape{1, 3, 2});
  in.v = Tensor::from_vector<float>({1.f, 2.f, 6.f}, Shape{1, 3, 1});
  const Forward f = forward(c, in);
  const auto o = f.o.to_vector<float>();
  EXPECT_NEAR(o[0], 1.0, 1e-6);
  EXPECT_NEAR(o[1], 1.5, 1e-6);
  EXPECT_NEAR(o[2], 3.0, 1e-6);
  // lse_i = s + log(i + 1) with s = q_i·k / sqrt(2).
  const auto q = in.q.to_vector<float>();
  const auto lse = f.lse.to_vector<float>();
  for (int i = 0; i < 3; ++i)
    EXPECT_NEAR(lse[i], (q[2 * i] * 0.5 - q[2 * i + 1]) / std::sqrt(2.0) + std::log(i + 1.0), 1e-5) << i;
}

TEST(Attention, FullyMaskedRowGivesZeroNotNan) {
  const Case c{2, 4, 5, 2, 3, 3, false, true};
  const Inputs in = make_inputs(c, 3);
  const Forward f = forward(c, in);
  const auto o = f.o.to_vector<float>();
  const auto lse = f.lse.to_vector<float>();
  for (int64_t e = 4 * 6; e < 2 * 4 * 6; ++e) EXPECT_EQ(o[e], 0.f) << e;  // batch row 1 has no key
  for (int64_t e = 8; e < 16; ++e) EXPECT_EQ(lse[e], -INFINITY) << e;
  const Grads g = backward(c, in, f, random_tensor(f.o.shape(), 4));
  const auto dq = g.dq.to_vector<float>();
  for (int64_t e = 4 * 6; e < 2 * 4 * 6; ++e) EXPECT_EQ(dq[e], 0.f) << e;
}

TEST(Attention, CpuGradientMatchesFiniteDifferences) {
  const std::vector<Case> cases = {{1, 3, 4, 1, 2, 3},
                                   {2, 4, 4, 2, 3, 2, true},
                                   {1, 5, 6, 2, 2, 2, false, true},
                                   {1, 4, 4, 2, 3, 3, true, false, 0.3}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.str());
    Inputs in = make_inputs(c, 21);
    const auto w = as_doubles(random_tensor(Shape{c.batch, c.tq, c.heads * c.dv}, 22));
    const Tensor d_o = Tensor::from_vector(std::vector<float>(w.begin(), w.end()), Shape{c.batch, c.tq, c.heads * c.dv});
    const Grads g = backward(c, in, forward(c, in), d_o);
    Tensor* slots[3] = {&in.q, &in.k, &in.v};
    const Tensor* grads[3] = {&g.dq, &g.dk, &g.dv};
    for (int s = 0; s < 3; ++s) {
      SCOPED_TRACE(s == 0 ? "dq" : s == 1 ? "dk" : "dv");
      Tensor x = slots[s]->clone();
      auto f = [&](const Tensor& xx) {
        Inputs probe = in;
        *(s == 0 ? &probe.q : s == 1 ? &probe.k : &probe.v) = xx;
        return weighted_sum(forward(c, probe).o, w);
      };
      EXPECT_TRUE(gradient_close(*grads[s], numerical_gradient(f, x)));
    }
  }
}

TEST(Attention, DropoutDropsWeightsByThePhiloxRule) {
  // p = 1 drops every weight: o = 0; p = 0.5 on one key: o is 0 or 2 v_0 by the Dropout op's mask.
  Case c{1, 8, 1, 2, 2, 1, false, false, 1.0};
  Inputs in = make_inputs(c, 5);
  for (float x : forward(c, in).o.to_vector<float>()) EXPECT_EQ(x, 0.f);
  c.dropout = 0.5;
  const auto o = forward(c, in).o.to_vector<float>();
  const auto v = in.v.to_vector<float>();
  int kept = 0;
  for (int64_t i = 0; i < 8; ++i)
    for (int64_t h = 0; h < 2; ++h) {
      const float x = o[i * 2 + h];
      EXPECT_TRUE(x == 0.f || std::fabs(x - 2 * v[h]) < 1e-6) << i << " " << h << ": " << x;
      kept += x != 0.f;
    }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 16);
}

TEST(AttentionCuda, FusedMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  for (const Case& c : parity_cases()) expect_cuda_matches_cpu(c, AttentionEngine::Fused);
}

TEST(AttentionCuda, UnfusedMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  for (const Case& c : parity_cases()) expect_cuda_matches_cpu(c, AttentionEngine::Unfused);
}

TEST(AttentionCuda, LargeHeadFallsBackToUnfused) {
  CUDL_REQUIRE_CUDA();
  const Case c{1, 6, 5, 1, kAttentionMaxFusedHeadDim + 3, 4, true};
  expect_cuda_matches_cpu(c, AttentionEngine::Auto);
  const Inputs in = make_inputs(c, 1).to(Device::cuda());
  const std::string m = error_message([&] { forward(c, in, AttentionEngine::Fused); });
  EXPECT_NE(m.find("head sizes up to"), std::string::npos) << m;
}

TEST(AttentionCuda, LongSequenceFusedForwardAndBackward) {
  CUDL_REQUIRE_CUDA();
  for (bool causal : {true, false}) expect_cuda_matches_cpu({1, 1024, 1024, 1, 16, 16, causal}, AttentionEngine::Fused, 2e-5, 5e-4);
}

// bf16 / f16 storage: q, k, v, o, do, dq, dk, dv in 16 bits, fp32 math, lse f32. The fused kernels
// load and store 16 bits themselves; the unfused engine widens into f32 copies and rounds its outputs
// once. Both against the CPU reference (which widens, runs the f32 op and rounds): each element within
// 1 ulp of the 16-bit type (or 1e-5 of the tensor's largest value where fp32 sums cancel), at least
// 90% bitwise; lse, f32 in every mode, to the f32 tolerance.
TEST(AttentionCuda, SixteenBitStorageMatchesCpuOnBothEngines) {
  CUDL_REQUIRE_CUDA();
  for (DType st : {DType::bf16, DType::f16})
    for (AttentionEngine engine : {AttentionEngine::Fused, AttentionEngine::Unfused})
      for (const Case& c : parity_cases()) {
        SCOPED_TRACE(std::string(dtype_name(st)) + " " + c.str() +
                     (engine == AttentionEngine::Fused ? " fused" : " unfused"));
        const Inputs in = make_inputs(c, 300 + c.tq + c.d).in_storage(st);
        const Tensor d_o = to_storage(random_tensor(Shape{c.batch, c.tq, c.heads * c.dv}, 9 + c.tk), st);
        const Forward ref = forward(c, in);
        const Grads gref = backward(c, in, ref, d_o);
        const Inputs gin = in.to(Device::cuda());
        const Forward got = forward(c, gin, engine);
        auto close = [](const Tensor& g, const Tensor& e) {
          return close_16bit(g, e, 1, 0.9, 1e-5 * max_abs(e));
        };
        EXPECT_EQ(got.o.dtype(), st);
        EXPECT_TRUE(close(host(got.o), ref.o)) << "o";
        EXPECT_TRUE(all_close(host(got.lse), ref.lse, 2e-5, 1e-4)) << "lse";
        const Grads g = backward(c, gin, got, d_o.to(Device::cuda()), engine);
        EXPECT_TRUE(close(host(g.dq), gref.dq)) << "dq";
        EXPECT_TRUE(close(host(g.dk), gref.dk)) << "dk";
        EXPECT_TRUE(close(host(g.dv), gref.dv)) << "dv";
      }
}

// --- cuDNN's SDPA forward (cuda/sdpa.hpp) -------------------------------------------------------

/// Calls cuDNN's SDPA takes: 16-bit, no masks or dropout, D = Dv a multiple of 8 up to 128.
const std::vector<Case>& sdpa_cases() {
  static const std::vector<Case> cases = {
      {1, 1, 1, 1, 8, 8}, {2, 5, 7, 3, 8, 8}, {2, 33, 20, 2, 16, 16}, {1, 64, 64, 4, 32, 32}, {1, 9, 130, 1, 128, 128},
  };
  return cases;
}

/// o and lse from cuDNN's SDPA forward (engine `engine`), and the fused backward from them, against
/// the CPU reference. The SDPA rounds the softmax weights to the storage type (unit roundoff u: 2^-9
/// bf16, 2^-12 f16) before their product with v, so o may differ by u * max|v| beyond the final
/// rounding: o within 1 ulp or 2u * max|v|, at least 40% bitwise (54-60% measured; the fused kernel,
/// whose weights stay fp32, keeps 90%); lse (fp32 statistics) to the f32 tolerance; dq, dk, dv,
/// which see cuDNN's o through do.o, within 1 ulp or 4u * the gradient's largest value, at least 50%
/// bitwise (83-94% measured).
void expect_sdpa_matches_cpu(const Case& c, DType st, AttentionEngine engine) {
  SCOPED_TRACE(std::string(dtype_name(st)) + " " + c.str());
  const double u = st == DType::bf16 ? 0x1p-9 : 0x1p-12;
  const Inputs in = make_inputs(c, 500 + c.tq + c.d).in_storage(st);
  const Tensor d_o = to_storage(random_tensor(Shape{c.batch, c.tq, c.heads * c.dv}, 13 + c.tk), st);
  const Forward ref = forward(c, in);
  const Grads gref = backward(c, in, ref, d_o);
  const Inputs gin = in.to(Device::cuda());
  const uint64_t before = cudnn_executions();
  const Forward got = forward(c, gin, engine);
#if defined(CUDL_EMULATED)
  EXPECT_EQ(cudnn_executions() - before, 1u) << "the forward is one cuDNN execution";
#endif
  EXPECT_TRUE(close_16bit(host(got.o), ref.o, 1, 0.4, 2 * u * max_abs(in.v))) << "o";
  EXPECT_TRUE(all_close(host(got.lse), ref.lse, 2e-5, 1e-4)) << "lse";
  const Grads g = backward(c, gin, got, d_o.to(Device::cuda()), engine);
  EXPECT_TRUE(close_16bit(host(g.dq), gref.dq, 1, 0.5, 4 * u * max_abs(gref.dq))) << "dq";
  EXPECT_TRUE(close_16bit(host(g.dk), gref.dk, 1, 0.5, 4 * u * max_abs(gref.dk))) << "dk";
  EXPECT_TRUE(close_16bit(host(g.dv), gref.dv, 1, 0.5, 4 * u * max_abs(gref.dv))) << "dv";
}

TEST(AttentionCuda, CudnnSdpaForwardMatchesCpu) {
  CUDL_REQUIRE_CUDA();
  for (DType st : {DType::bf16, DType::f16})
    for (const Case& c : sdpa_cases()) {
      expect_sdpa_matches_cpu(c, st, AttentionEngine::Auto);
      expect_sdpa_matches_cpu(c, st, AttentionEngine::Cudnn);
    }
}

TEST(AttentionCuda, CudnnSdpaPlansAreBuiltOncePerShape) {
  CUDL_REQUIRE_CUDA();
  sdpa_clear_plan_cache();
  const Case c{2, 5, 7, 2, 8, 8}, other{2, 6, 7, 2, 8, 8};
  const Inputs in = make_inputs(c, 1).in_storage(DType::bf16).to(Device::cuda());
  const Inputs in2 = make_inputs(other, 2).in_storage(DType::bf16).to(Device::cuda());
  forward(c, in);
  EXPECT_EQ(sdpa_plans_built(), 1);
  forward(c, in);
  EXPECT_EQ(sdpa_plans_built(), 1) << "same shape: the cached plan runs";
  forward(other, in2);
  EXPECT_EQ(sdpa_plans_built(), 2) << "another query length: one more plan";
}

/// What cuDNN 9.19's SDPA operation cannot take runs on the fused kernel under Auto (no cuDNN call),
/// and is an error naming the reason under engine cudnn.
TEST(AttentionCuda, CudnnSdpaTakesOnlyWhatItSupports) {
  CUDL_REQUIRE_CUDA();
  struct Refused {
    Case c;
    DType st;
    const char* why;
  };
  const std::vector<Refused> refused = {
      {{2, 5, 7, 2, 8, 8}, DType::f32, "f32 storage"},
      {{2, 7, 7, 2, 8, 8, true}, DType::bf16, "a causal mask"},
      {{2, 5, 7, 2, 8, 8, false, true}, DType::f16, "a key mask"},
      {{2, 5, 7, 2, 8, 8, false, false, 0.25}, DType::bf16, "dropout"},
      {{2, 5, 7, 2, 12, 12}, DType::bf16, "head size 12"},
      {{2, 5, 7, 2, 8, 16}, DType::bf16, "D 8 != Dv 16"},
  };
  for (const Refused& r : refused) {
    SCOPED_TRACE(std::string(dtype_name(r.st)) + " " + r.c.str());
    const Inputs in = make_inputs(r.c, 3).in_storage(r.st);
    const Forward ref = forward(r.c, in);
    const Inputs gin = in.to(Device::cuda());
    const uint64_t before = cudnn_executions();
    const Forward got = forward(r.c, gin, AttentionEngine::Auto);
    EXPECT_EQ(cudnn_executions(), before) << "not a cuDNN call";
    if (r.st == DType::f32)
      EXPECT_TRUE(all_close(host(got.o), ref.o, 2e-5, 1e-4));
    else
      EXPECT_TRUE(close_16bit(host(got.o), ref.o, 1, 0.9, 1e-5 * max_abs(ref.o))) << "the fused kernel's o";
    const std::string m = error_message([&] { forward(r.c, gin, AttentionEngine::Cudnn); });
    EXPECT_NE(m.find("engine cudnn cannot take"), std::string::npos) << m;
    EXPECT_NE(m.find(r.why), std::string::npos) << m;
  }
}

#if defined(CUDL_EMULATED)
/// With no cuDNN engine for the graph, Auto runs the fused kernel (logged) and engine cudnn fails
/// naming cuDNN's answer.
TEST(AttentionCuda, WithoutACudnnPlanAutoRunsTheFusedKernel) {
  CUDL_REQUIRE_CUDA();
  sdpa_clear_plan_cache();
  cudl_emu::cudnn_set_no_engines(true);
  const Case c{2, 5, 7, 2, 16, 16};
  const Inputs in = make_inputs(c, 4).in_storage(DType::f16);
  const Forward ref = forward(c, in);
  const Inputs gin = in.to(Device::cuda());
  const uint64_t before = cudnn_executions();
  const Forward got = forward(c, gin, AttentionEngine::Auto);
  EXPECT_EQ(cudnn_executions(), before);
  EXPECT_TRUE(close_16bit(host(got.o), ref.o, 1, 0.9, 1e-5 * max_abs(ref.o)));
  const std::string m = error_message([&] { forward(c, gin, AttentionEngine::Cudnn); });
  cudl_emu::cudnn_set_no_engines(false);
  sdpa_clear_plan_cache();
  EXPECT_NE(m.find("cuDNN has no SDPA plan for q (2, 5, 32)"), std::string::npos) << m;
}
#endif

TEST(Attention, ErrorsNameOpAndShapes) {
  const Case c{2, 3, 4, 2, 4, 4};
  Inputs in = make_inputs(c, 1);
  Tensor o = Tensor::zeros(Shape{2, 3, 8}), lse = Tensor::zeros(Shape{2, 2, 3});
  Tensor bad_k = Tensor::zeros(Shape{2, 4, 6});
  std::string m = error_message([&] {
    run_op(OpKind::Attention, {tv(in.q), tv(bad_k), tv(in.v)}, {tv(o), tv(lse)}, attrs_of(c, AttentionEngine::Auto),
           nullptr, "mha/attention");
  });
  EXPECT_NE(m.find("Attention (mha/attention)"), std::string::npos) << m;
  EXPECT_NE(m.find("(2, 4, 6)"), std::string::npos) << m;
  Tensor bad_lse = Tensor::zeros(Shape{2, 3, 2});
  m = error_message([&] {
    run_op(OpKind::Attention, {tv(in.q), tv(in.k), tv(in.v)}, {tv(o), tv(bad_lse)}, attrs_of(c, AttentionEngine::Auto));
  });
  EXPECT_NE(m.find("lse has shape (2, 3, 2), expected (2, 2, 3)"), std::string::npos) << m;
  Case drop = c;
  drop.dropout = 0.1;
  m = error_message([&] {
    run_op(OpKind::Attention, {tv(in.q), tv(in.k), tv(in.v)}, {tv(o), tv(lse)}, attrs_of(drop, AttentionEngine::Auto));
  });
  EXPECT_NE(m.find("needs the rng state"), std::string::npos) << m;
}
