// samples/seq_mnist/models.hpp — the model of cudl-seq-mnist, in a header so that
// tests/test_seq_mnist_sample.cpp trains exactly what the sample trains.
#pragma once

#include <string>

#include "cudl/cudl.hpp"

namespace seq_mnist {

/// Each (1, 28, 28) image read as 28 steps of 28 pixels (its rows): a recurrent layer ("lstm",
/// "gru" or "rnn") of `units`, its last state into Dense(10) logits.
inline cudl::Sequential build(const std::string& cell, int64_t units = 128) {
  using namespace cudl::layers;
  const cudl::RecurrentOptions o = cudl::RecurrentOptions(units).name(cell);
  cudl::LayerPtr rnn = cell == "gru" ? GRU(o) : cell == "rnn" ? SimpleRNN(o) : LSTM(o);
  return cudl::Sequential(cudl::Shape{1, 28, 28},
                          {Reshape(cudl::Shape{28, 28}, "rows"), rnn, Dense(cudl::DenseOptions(10).name("logits"))},
                          "seq_mnist_" + cell);
}

}  // namespace seq_mnist
