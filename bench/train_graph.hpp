// bench/train_graph.hpp — the sample's models (samples/mnist/models.hpp), synthetic MNIST-shaped
// data, and the executor of the training step Model::fit runs, for benchmarks that need the graph
// and the executor themselves: per-node bytes, dispatch cost, single steps.
#pragma once

#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cudl/cudl.hpp"
#include "graph/executor.hpp"
#include "train/model_internals.hpp"
#include "samples/mnist/models.hpp"
#include "samples/seq_mnist/models.hpp"

namespace cudl_bench {

/// The models of cudl-mnist ("mlp", "cnn") and cudl-seq-mnist ("seq_lstm", "seq_gru", "seq_rnn"),
/// from the samples' own headers (the ones their tests train).
inline cudl::Sequential build_mnist_model(const std::string& kind) {
  return kind.rfind("seq_", 0) == 0 ? seq_mnist::build(kind.substr(4)) : mnist::build(kind);
}

/// Synthetic MNIST-shaped data: u8 images (n, 1, 28, 28) and i32 labels (n,), on the host.
inline cudl::Dataset synthetic_mnist(int64_t n, uint32_t seed = 1) {
  std::mt19937 g(seed);
  std::vector<uint8_t> x(static_cast<size_t>(n) * 784);
  std::vector<int32_t> y(n);
  for (auto& v : x) v = static_cast<uint8_t>(g() & 0xff);
  for (auto& v : y) v = static_cast<int32_t>(g() % 10);
  cudl::Dataset d;
  d.x = cudl::Tensor::from_vector(x, cudl::Shape{n, 1, 28, 28});
  d.y = cudl::Tensor::from_vector(y, cudl::Shape{n});
  d.mean = 0.1307f;
  d.std = 0.3081f;
  return d;
}

/// A token classifier whose step runs Gather and GatherBackward: i32 rows of 16 tokens from a
/// vocabulary of 1,000 -> Embedding(1000, 64) -> PositionalEmbedding(16, 64) -> Flatten -> Dense(10).
inline cudl::Sequential build_token_model() {
  namespace L = cudl::layers;
  return cudl::Sequential(cudl::Shape{16},
                          {L::Embedding(1000, 64), L::PositionalEmbedding(16, 64), L::Flatten(), L::Dense(10)},
                          "embed", cudl::DType::i32);
}

/// Synthetic token rows for build_token_model: x i32 (n, 16) in [0, 1000), labels i32 (n,).
inline cudl::Dataset synthetic_tokens(int64_t n, uint32_t seed = 1) {
  std::mt19937 g(seed);
  std::vector<int32_t> x(static_cast<size_t>(n) * 16), y(n);
  for (auto& v : x) v = static_cast<int32_t>(g() % 1000);
  for (auto& v : y) v = static_cast<int32_t>(g() % 10);
  cudl::Dataset d;
  d.x = cudl::Tensor::from_vector(x, cudl::Shape{n, 16});
  d.y = cudl::Tensor::from_vector(y, cudl::Shape{n});
  return d;
}

/// Compiles `model` as cudl-mnist does (Adam 1e-3, sparse softmax cross-entropy, accuracy).
inline void compile_like_sample(cudl::Model& model, cudl::Device dev, int64_t batch) {
  cudl::CompileOptions opt;
  opt.optimizer = cudl::optim::Adam(1e-3);
  opt.loss = "sparse_categorical_crossentropy";
  opt.metrics = {"accuracy"};
  opt.device = dev;
  opt.seed = 1;
  model.compile(opt);
}

/// The executor of the exact training step Model::fit runs (see src/train/model_internals.hpp).
inline std::unique_ptr<cudl::graph::Executor> training_step(cudl::Model& model, const cudl::Dataset& data,
                                                            int64_t batch,
                                                            const cudl::graph::ExecutorOptions& options) {
  return cudl::detail::ModelInternals::training_step(model, data, batch, options);
}

}  // namespace cudl_bench
