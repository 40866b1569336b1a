// samples/mnist/models.hpp — the models of cudl-mnist (mlp, cnn), in a header so that
// tests/test_mnist_sample.cpp trains exactly what the sample trains.
#pragma once

#include <string>

#include "cudl/cudl.hpp"

namespace mnist {

/// "mlp": 784-128-10 (ReLU). "cnn": two conv3x3+BN+ReLU+maxpool blocks (16 and 32 channels),
/// dropout 0.25, dense 128 (ReLU), dense 10. Input (1, 28, 28); logits (10).
inline cudl::Sequential build(const std::string& kind) {
  using namespace cudl::layers;
  using cudl::Conv2dOptions;
  using cudl::DenseOptions;
  if (kind == "mlp")
    return cudl::Sequential(cudl::Shape{1, 28, 28},
                            {Flatten("flatten"), Dense(DenseOptions(128).activation("relu").name("dense1")),
                             Dense(DenseOptions(10).name("logits"))},
                            "mlp");
  return cudl::Sequential(
      cudl::Shape{1, 28, 28},
      {Conv2d(Conv2dOptions(16, 3).padding(1).use_bias(false).name("conv1")), BatchNorm(0.1f, 1e-5f, "bn1"),
       Activation("relu", 0.f, "relu1"), MaxPool2d(2, 2, 0, "pool1"),
       Conv2d(Conv2dOptions(32, 3).padding(1).use_bias(false).name("conv2")), BatchNorm(0.1f, 1e-5f, "bn2"),
       Activation("relu", 0.f, "relu2"), MaxPool2d(2, 2, 0, "pool2"), Dropout(0.25f, "dropout"), Flatten("flatten"),
       Dense(DenseOptions(128).activation("relu").name("dense1")), Dense(DenseOptions(10).name("logits"))},
      "cnn");
}

}  // namespace mnist
