// samples/charlm/charlm.hpp — cudl-charlm's data and model, in a header so that
// tests/test_charlm_sample.cpp trains exactly what the sample trains and bench/torch_charlm.py can
// mirror it: the word list cleaned and split, the token stream, the training windows, the model.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "cudl/cudl.hpp"

namespace charlm {

constexpr int32_t kBoundary = 0;  // frames every word; 'a'..'z' are tokens 1..26
constexpr int64_t kVocab = 27;
constexpr uint64_t kSplitSeed = 2026;

/// splitmix64 (Steele, Lea, Flood 2014): the one generator of the split and the training windows,
/// simple enough to repeat bit for bit in bench/torch_charlm.py.
struct SplitMix64 {
  uint64_t state;
  explicit SplitMix64(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

/// The words of a word list (one per line), lower-cased, kept when they are ASCII letters only,
/// without duplicates, in byte order. Throws naming the file when it cannot be read or has none.
inline std::vector<std::string> load_words(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw cudl::Error("cannot read the word list " + path);
  std::vector<std::string> words;
  std::string line;
  while (std::getline(f, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    bool ok = !line.empty();
    for (char& c : line) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      ok = ok && c >= 'a' && c <= 'z';
    }
    if (ok) words.push_back(line);
  }
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  if (words.empty()) throw cudl::Error("the word list " + path + " has no word of letters a-z only");
  return words;
}

struct Split {
  std::vector<std::string> train, test;
};

/// Fisher-Yates shuffle by splitmix64(seed) (j = next() % (i + 1), i from the end), then the first
/// tenth (rounded down) is the test set and the rest the training set.
inline Split split_words(std::vector<std::string> words, uint64_t seed = kSplitSeed) {
  SplitMix64 rng(seed);
  for (size_t i = words.size() - 1; i > 0; --i) std::swap(words[i], words[rng.next() % (i + 1)]);
  const size_t n_test = words.size() / 10;
  return {std::vector<std::string>(words.begin() + static_cast<std::ptrdiff_t>(n_test), words.end()),
          std::vector<std::string>(words.begin(), words.begin() + static_cast<std::ptrdiff_t>(n_test))};
}

/// The words as one token stream, each framed by the boundary: ".word.word.word.".
inline std::vector<int32_t> token_stream(const std::vector<std::string>& words) {
  std::vector<int32_t> s{kBoundary};
  for (const std::string& w : words) {
    for (char c : w) s.push_back(c - 'a' + 1);
    s.push_back(kBoundary);
  }
  return s;
}

/// One training batch: `batch` windows of the stream starting at next() % (size - context), inputs
/// the `context` tokens, targets the same window shifted by one (the loss covers every position).
inline std::pair<cudl::Tensor, cudl::Tensor> training_batch(const std::vector<int32_t>& stream, int64_t context,
                                                            int64_t batch, SplitMix64& rng) {
  std::vector<int32_t> x(static_cast<size_t>(batch * context)), y(x.size());
  const uint64_t span = stream.size() - static_cast<uint64_t>(context);
  for (int64_t b = 0; b < batch; ++b) {
    const size_t start = static_cast<size_t>(rng.next() % span);
    for (int64_t t = 0; t < context; ++t) {
      x[b * context + t] = stream[start + t];
      y[b * context + t] = stream[start + t + 1];
    }
  }
  return {cudl::Tensor::from_vector(x, cudl::Shape{batch, context}),
          cudl::Tensor::from_vector(y, cudl::Shape{batch, context})};
}

/// The evaluation set: the stream cut into consecutive windows (window k covers tokens 16k..16k+16),
/// so every token after the first is predicted exactly once; a last partial window is dropped.
inline cudl::Dataset windows(const std::vector<int32_t>& stream, int64_t context) {
  const int64_t n = (static_cast<int64_t>(stream.size()) - 1) / context;
  std::vector<int32_t> x(static_cast<size_t>(n * context)), y(x.size());
  for (int64_t k = 0; k < n; ++k)
    for (int64_t t = 0; t < context; ++t) {
      x[k * context + t] = stream[k * context + t];
      y[k * context + t] = stream[k * context + t + 1];
    }
  return {cudl::Tensor::from_vector(x, cudl::Shape{n, context}), cudl::Tensor::from_vector(y, cudl::Shape{n, context})};
}

struct Config {
  int64_t context = 16, dim = 64, heads = 4, blocks = 2;
  bool causal = true;  // false: an encoder's attention over the whole window (bench_step_counters)
};

/// Pre-LayerNorm Transformer block: x + MHA(LN(x)) (causal), then x + W2·gelu(W1·LN(x)) with 4x width.
inline cudl::Var transformer_block(cudl::Var x, int64_t dim, int64_t heads, bool causal = true) {
  using namespace cudl;
  Var h = (*layers::LayerNorm())(x);
  h = (*layers::MultiHeadAttention(MultiHeadAttentionOptions(heads, dim / heads).causal(causal)))(h);
  x = add(x, h);
  h = (*layers::Dense(4 * dim, "gelu_tanh"))((*layers::LayerNorm())(x));
  return add(x, (*layers::Dense(dim))(h));
}

/// Tokens (context) i32 -> embedding + learned positions -> blocks -> LayerNorm -> logits (context, 27).
inline cudl::Model build(const Config& c) {
  using namespace cudl;
  Var tokens = Input(Shape{c.context}, DType::i32, "tokens");
  Var h = (*layers::Embedding(kVocab, c.dim))(tokens);
  h = (*layers::PositionalEmbedding(c.context, c.dim))(h);
  for (int64_t b = 0; b < c.blocks; ++b) h = transformer_block(h, c.dim, c.heads, c.causal);
  Var logits = (*layers::Dense(kVocab))((*layers::LayerNorm())(h));
  return Model(tokens, logits, "charlm");
}

/// The learning rate of step `step` (0-based) of `steps`: cosine from lr to 0 (schedules::cosine per step).
inline double learning_rate(double lr, int64_t steps, int64_t step) {
  return cudl::schedules::cosine(lr, static_cast<int>(steps))(static_cast<int>(step));
}

}  // namespace charlm
