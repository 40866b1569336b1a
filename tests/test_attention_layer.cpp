// tests/test_attention_layer.cpp — the MultiHeadAttention layer in models: shapes and parameters,
// causality, a pre-LayerNorm Transformer block training to the same losses on the CPU and on CUDA
// (fused and unfused engines, attention dropout), and errors naming the layer.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "testing.hpp"

using namespace cudl;
using cudl::testing::all_close;
using cudl::testing::error_message;
using cudl::testing::random_tensor;

namespace {

constexpr int64_t kT = 6, kE = 8;

/// x + MHA(LN(x)), then x + MLP(LN(x)) with a 4x GELU MLP.
Var transformer_block(Var x, const MultiHeadAttentionOptions& mha) {
  Var h = (*layers::MultiHeadAttention(mha))((*layers::LayerNorm())(x));
  x = add(x, h);
  h = (*layers::Dense(4 * kE, "gelu_tanh"))((*layers::LayerNorm())(x));
  return add(x, (*layers::Dense(kE))(h));
}

Model block_model(const MultiHeadAttentionOptions& mha) {
  Var x = Input(Shape{kT, kE});
  return Model(x, transformer_block(x, mha), "block");
}

CompileOptions options(Device d, Precision p = Precision::f32) {
  CompileOptions o;
  o.precision = p;
  o.optimizer = optim::AdamW(3e-3, 0.01);
  o.loss = losses::MeanSquaredError();
  o.device = d;
  o.seed = 5;
  return o;
}

std::vector<double> train_losses(const MultiHeadAttentionOptions& mha, Device d, int steps = 4,
                                 Precision p = Precision::f32) {
  Model m = block_model(mha);
  m.compile(options(d, p));
  std::vector<double> losses;
  Tensor x = random_tensor(Shape{3, kT, kE}, 40), y = random_tensor(Shape{3, kT, kE}, 80);
  for (int s = 0; s < steps; ++s) losses.push_back(m.train_on_batch(x, y).at("loss"));  // fits one batch
  return losses;
}

}  // namespace

TEST(MultiHeadAttentionLayer, ShapesAndParameters) {
  Var q = Input(Shape{5, 12}), v = Input(Shape{7, 10});
  Var y = (*layers::MultiHeadAttention(MultiHeadAttentionOptions(3, 4).value_dim(6)))({q, v});
  EXPECT_EQ(y.shape(), (Shape{5, 12}));  // the output projection returns to the query's features
  EXPECT_NE(error_message([&] {  // a model feeds one input
    Model m(q, (*layers::Dense(2))(y));
    m.compile(options(Device::cpu()));
  }),
            "<no error>");
  Var x = Input(Shape{5, 12});
  auto mha = layers::MultiHeadAttention(MultiHeadAttentionOptions(3, 4).value_dim(6).output_dim(9));
  Model s(x, (*mha)(x));
  s.compile(options(Device::cpu()));
  std::vector<std::pair<std::string, Shape>> expected = {
      {"query_kernel", Shape{12, 12}}, {"query_bias", Shape{12}},   {"key_kernel", Shape{12, 12}},
      {"key_bias", Shape{12}},         {"value_kernel", Shape{18, 12}}, {"value_bias", Shape{18}},
      {"output_kernel", Shape{9, 18}}, {"output_bias", Shape{9}}};
  ASSERT_EQ(mha->params().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(mha->params()[i].first, expected[i].first);
    EXPECT_EQ(mha->params()[i].second.shape(), expected[i].second) << expected[i].first;
  }
}

TEST(MultiHeadAttentionLayer, CausalOutputsIgnoreLaterPositions) {
  Model m = block_model(MultiHeadAttentionOptions(2, 4).causal(true));
  m.compile(options(Device::cpu()));
  Tensor x = random_tensor(Shape{2, kT, kE}, 1);
  auto before = m.predict_on_batch(x).to_vector<float>();
  Tensor x2 = x.clone();
  float* p = x2.data_as<float>();
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t e = 0; e < kE; ++e) p[(b * kT + kT - 1) * kE + e] += 3.f;  // change the last position only
  auto after = m.predict_on_batch(x2).to_vector<float>();
  int changed_last = 0;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < kT; ++t)
      for (int64_t e = 0; e < kE; ++e) {
        const size_t i = static_cast<size_t>((b * kT + t) * kE + e);
        if (t < kT - 1) EXPECT_EQ(before[i], after[i]) << "b " << b << " t " << t << " e " << e;
        else changed_last += before[i] != after[i];
      }
  EXPECT_GT(changed_last, 0);
}

TEST(MultiHeadAttentionLayer, TransformerBlockTrainsTheSameOnCpuAndCuda) {
  CUDL_REQUIRE_CUDA();
  for (const char* engine : {"fused", "unfused"})
    for (float dropout : {0.f, 0.2f}) {
      SCOPED_TRACE(std::string(engine) + " dropout " + std::to_string(dropout));
      const auto mha = MultiHeadAttentionOptions(2, 4).causal(true).dropout(dropout).engine(engine);
      const auto cpu = train_losses(mha, Device::cpu());
      const auto gpu = train_losses(mha, Device::cuda());
      ASSERT_EQ(cpu.size(), gpu.size());
      for (size_t s = 0; s < cpu.size(); ++s) EXPECT_NEAR(gpu[s], cpu[s], 1e-4 * std::fabs(cpu[s]) + 1e-5) << s;
      EXPECT_LT(cpu.back(), cpu.front());
    }
}

// bf16 / f16: the attention reads and writes 16-bit q, k, v, o and their gradients itself, so a
// block has no Cast around it: a 16-bit block runs f32's kernel count plus the Cast of its f32
// input (plus AmpUnscale in f16); and it trains on the emulated CUDA backend, on both engines, as
// on the CPU reference.
TEST(MultiHeadAttentionLayer, TransformerBlockTrainsIn16BitsOnCudaAsOnCpu) {
  CUDL_REQUIRE_CUDA();
  for (Precision p : {Precision::bf16, Precision::f16})
    for (const char* engine : {"fused", "unfused"}) {
      SCOPED_TRACE(std::string(p == Precision::bf16 ? "bf16 " : "f16 ") + engine);
      const auto mha = MultiHeadAttentionOptions(2, 4).causal(true).engine(engine);
      Model f = block_model(mha), h = block_model(mha);
      f.compile(options(Device::cuda()));
      h.compile(options(Device::cuda(), p));
      EXPECT_EQ(h.plan_report().kernels_per_step, f.plan_report().kernels_per_step + 1 + (p == Precision::f16 ? 1 : 0))
          << h.plan_report().str();
      const auto cpu = train_losses(mha, Device::cpu(), 4, p), gpu = train_losses(mha, Device::cuda(), 4, p);
      ASSERT_EQ(cpu.size(), gpu.size());
      for (size_t s = 0; s < cpu.size(); ++s) EXPECT_NEAR(gpu[s], cpu[s], 1e-2 * std::fabs(cpu[s]) + 1e-4) << s;
      EXPECT_LT(gpu.back(), gpu.front());
    }
}

// Without a causal mask and with heads of 8, a 16-bit block's attention forward runs as cuDNN's
// fused attention (engine auto picks it, cudnn requires it; the backward stays on the fused kernel):
// it trains on the emulated CUDA backend as on the CPU reference, whose weights stay fp32 where
// cuDNN's are rounded to the storage type before their product with v.
TEST(MultiHeadAttentionLayer, TransformerBlockTrainsIn16BitsOnCudnnSdpaAsOnCpu) {
  CUDL_REQUIRE_CUDA();
  for (Precision p : {Precision::bf16, Precision::f16})
    for (const char* engine : {"auto", "cudnn"}) {
      SCOPED_TRACE(std::string(p == Precision::bf16 ? "bf16 " : "f16 ") + engine);
      const auto mha = MultiHeadAttentionOptions(2, 8).engine(engine);
      const uint64_t before = cudl::testing::cudnn_executions();
      const auto cpu = train_losses(mha, Device::cpu(), 4, p), gpu = train_losses(mha, Device::cuda(), 4, p);
#if defined(CUDL_EMULATED)
      // Counted at the API: the first steps call cuDNN, the captured step replays its graph.
      EXPECT_GT(cudl::testing::cudnn_executions() - before, 0u) << "the forward ran as cuDNN's SDPA";
#endif
      ASSERT_EQ(cpu.size(), gpu.size());
      for (size_t s = 0; s < cpu.size(); ++s) EXPECT_NEAR(gpu[s], cpu[s], 1e-2 * std::fabs(cpu[s]) + 1e-4) << s;
      EXPECT_LT(gpu.back(), gpu.front());
    }
}

TEST(MultiHeadAttentionLayer, ErrorsNameTheLayerAndShapes) {
  Var q = Input(Shape{5, 12}), v = Input(Shape{7, 10}), k = Input(Shape{6, 10});
  std::string m = error_message([&] { (*layers::MultiHeadAttention(2, 4))({q, v, k}); });
  EXPECT_NE(m.find("multi_head_attention"), std::string::npos) << m;
  EXPECT_NE(m.find("(6, 10)"), std::string::npos) << m;
  EXPECT_NE(m.find("(7, 10)"), std::string::npos) << m;
  m = error_message([&] { layers::MultiHeadAttention(MultiHeadAttentionOptions(2, 4).engine("flash")); });
  EXPECT_NE(m.find("'flash'"), std::string::npos) << m;
  m = error_message([&] { (*layers::MultiHeadAttention(2, 4))(Input(Shape{12})); });
  EXPECT_NE(m.find("(T, features)"), std::string::npos) << m;
}
