// samples/dcgan/models.hpp — the DCGAN of cudl-dcgan: generator and discriminator layers, and the
// three models that share them (D on a real and a generated batch with G frozen, the combined
// G -> D with D frozen, and the generator alone). In a header so tests/test_dcgan_sample.cpp
// trains exactly what the sample trains.
#pragma once

#include <memory>
#include <vector>

#include "cudl/cudl.hpp"

namespace dcgan {

struct Sizes {
  int64_t latent = 100;  // noise dimension
  int64_t width = 32;    // G: dense and stride-1 conv-transpose 2*width, then conv-transpose width
  int64_t d_width = 0;   // D: convs d_width and 2*d_width; 0: 2*width
  int64_t d() const { return d_width > 0 ? d_width : 2 * width; }
};

/// G: Dense(7*7*2w) -> BN -> ReLU -> Reshape(2w, 7, 7) -> ConvT(2w, 5, 1, pad 2) -> BN -> ReLU ->
/// ConvT(w, 5, 2, pad 2, output pad 1) -> BN -> ReLU -> ConvT(1, 5, 2, pad 2, output pad 1) -> tanh:
/// (latent) -> (1, 28, 28) in [-1, 1]. The Keras DCGAN tutorial's shape (5x5 kernels and a stride-1
/// layer at 7x7 before the two upsampling ones), narrower.
inline std::vector<cudl::LayerPtr> generator_layers(const Sizes& s) {
  using namespace cudl::layers;
  using cudl::Conv2dTransposeOptions;
  const int64_t c = 2 * s.width;
  return {Dense(cudl::DenseOptions(7 * 7 * c).use_bias(false).name("g_dense")),
          BatchNorm(0.1f, 1e-5f, "g_bn1"),
          Activation("relu", 0.f, "g_relu1"),
          Reshape(cudl::Shape{c, 7, 7}, "g_reshape"),
          Conv2dTranspose(Conv2dTransposeOptions(c, 5).padding(2).use_bias(false).name("g_conv")),
          BatchNorm(0.1f, 1e-5f, "g_bn2"),
          Activation("relu", 0.f, "g_relu2"),
          Conv2dTranspose(Conv2dTransposeOptions(s.width, 5).stride(2).padding(2).output_padding(1).use_bias(false).name("g_up1")),
          BatchNorm(0.1f, 1e-5f, "g_bn3"),
          Activation("relu", 0.f, "g_relu3"),
          Conv2dTranspose(Conv2dTransposeOptions(1, 5).stride(2).padding(2).output_padding(1).activation("tanh").name("g_up2"))};
}

/// D: Conv(d, 4, 2, pad 1) -> LeakyReLU(0.2) -> Conv(2d, 4, 2, pad 1) -> LeakyReLU(0.2) ->
/// Flatten -> Dense(1): (1, 28, 28) -> one logit (real vs generated). No batch norm: D is frozen
/// in the G step, and a frozen BatchNorm runs in inference mode (Keras), on running statistics
/// that mix real and generated batches; G then learns to fool that D while the D that trains
/// (batch statistics) rejects every generated image (docs/models.md).
inline std::vector<cudl::LayerPtr> discriminator_layers(const Sizes& s) {
  using namespace cudl::layers;
  const int64_t d = s.d();
  return {Conv2d(cudl::Conv2dOptions(d, 4).stride(2).padding(1).name("d_conv1")),
          Activation("leaky_relu", 0.2f, "d_lrelu1"),
          Conv2d(cudl::Conv2dOptions(2 * d, 4).stride(2).padding(1).name("d_conv2")),
          Activation("leaky_relu", 0.2f, "d_lrelu2"),
          Flatten("d_flatten"),
          Dense(cudl::DenseOptions(1).name("d_logit"))};
}

inline cudl::Var stack(const std::vector<cudl::LayerPtr>& layers, cudl::Var x) {
  for (const auto& l : layers) x = (*l)(x);
  return x;
}

inline void set_trainable(const std::vector<cudl::LayerPtr>& layers, bool t) {
  for (const auto& l : layers) l->set_trainable(t);
}

/// The three models over one set of G and D layers. The noise layer draws z on the device at every
/// step; it reads only its input's batch size.
struct Gan {
  std::vector<cudl::LayerPtr> g, d;
  /// x -> (D(x), D(G(z))) per row, G frozen: one D step on a real and a generated batch (each half
  /// with its own batch-norm statistics, their losses averaged: one optimizer step on the sum).
  /// Targets (B, 2): (real label, 0).
  std::unique_ptr<cudl::Model> disc;
  /// placeholder -> D(G(z)), D frozen: the G step (targets 1).
  std::unique_ptr<cudl::Model> combined;
  /// z -> G(z): draws images from given noise.
  std::unique_ptr<cudl::Model> gen;

  /// Builds and compiles the models: Adam(lr, beta1 0.5), binary cross-entropy on D's logits, in
  /// `precision` (bf16/f16: 16-bit activations, fp32 masters; f16 with dynamic loss scaling).
  Gan(const Sizes& s, double lr, cudl::Device device, uint64_t seed,
      cudl::Precision precision = cudl::default_precision())
      : g(generator_layers(s)), d(discriminator_layers(s)) {
    using cudl::Input;
    using cudl::Shape;
    cudl::CompileOptions o;
    o.optimizer = cudl::optim::Adam(lr, 0.5);
    o.loss = cudl::losses::BinaryCrossentropy(/*from_logits=*/true);
    o.device = device;
    o.seed = seed;
    o.precision = precision;
    auto noise = cudl::layers::RandomNormal(Shape{s.latent}, 0.f, 1.f, "z");
    cudl::Var x = Input(Shape{1, 28, 28}, cudl::DType::f32, "image");
    auto join = cudl::layers::Concatenate(-1, "d_real_generated");  // (B, 1) + (B, 1) -> (B, 2)
    disc = std::make_unique<cudl::Model>(x, (*join)({stack(d, x), stack(d, stack(g, (*noise)(x)))}), "discriminator");
    set_trainable(g, false);
    disc->compile(o);
    set_trainable(g, true);
    cudl::Var p = Input(Shape{1}, cudl::DType::f32, "placeholder");
    combined = std::make_unique<cudl::Model>(p, stack(d, stack(g, (*noise)(p))), "gan");
    set_trainable(d, false);
    o.seed = seed + 1;  // its own noise stream
    combined->compile(o);
    set_trainable(d, true);
    cudl::Var z = Input(Shape{s.latent}, cudl::DType::f32, "z");
    gen = std::make_unique<cudl::Model>(z, stack(g, z), "generator");
    o.seed = seed;
    gen->compile(o);
  }
};

}  // namespace dcgan
