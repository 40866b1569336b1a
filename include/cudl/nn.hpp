// cudl/nn.hpp — layers and symbolic variables for describing models (Sequential or functional).
// Shapes here are per sample: the batch dimension is added when the model is compiled.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cudl/tensor.hpp"

namespace cudl {

namespace detail {
struct LayerGraph;   // the recorded layer applications of a functional model
struct BuildContext; // what a layer sees while adding its nodes (internal)
}  // namespace detail

class Layer;

/// A symbolic tensor: an input or the output of a layer applied to other Vars.
class CUDL_API Var {
 public:
  Var() = default;
  const Shape& shape() const;  // per-sample shape
  DType dtype() const;
  bool defined() const { return graph_ != nullptr; }

 private:
  friend class Layer;
  friend class Model;
  friend CUDL_API Var Input(const Shape&, DType, const std::string&);
  friend CUDL_API Var add(const Var&, const Var&);
  std::shared_ptr<detail::LayerGraph> graph_;
  int id_ = -1;
};

/// A model input with per-sample shape `shape` (f32 features, or i32 labels/indices).
CUDL_API Var Input(const Shape& shape, DType dtype = DType::f32, const std::string& name = "input");
/// Elementwise sum of two Vars of the same shape (residual connections: add(x, f(x))).
CUDL_API Var add(const Var& a, const Var& b);

/// How a layer's parameters start: zeros, ones, normal(0, 0.05), uniform(-0.05, 0.05),
/// glorot_uniform, glorot_normal, he_uniform, he_normal. Drawn from Philox with the model's seed.
enum class Init { Zeros, Ones, Normal, Uniform, GlorotUniform, GlorotNormal, HeUniform, HeNormal };
CUDL_API Init init_from_name(const std::string& name);

/// Base of every layer. A layer is a function that adds nodes and parameters to a graph.
class CUDL_API Layer : public std::enable_shared_from_this<Layer> {
 public:
  Layer(std::string kind, std::string name);
  virtual ~Layer();

  /// Functional use: y = layer(x).
  Var operator()(const Var& x);
  Var operator()(const std::vector<Var>& xs);

  const std::string& name() const { return name_; }
  const std::string& kind() const { return kind_; }
  /// Per-sample output shape for these per-sample input shapes; throws naming the layer and shapes.
  virtual Shape output_shape(const std::vector<Shape>& inputs) const = 0;
  /// Adds this layer's nodes (internal).
  virtual std::vector<int> build(detail::BuildContext& ctx, const std::vector<int>& inputs) = 0;

  /// Parameters by name ("kernel", "bias", "gamma", ...), valid after Model::compile.
  std::vector<std::pair<std::string, Tensor>>& params() { return params_; }
  const std::vector<std::pair<std::string, Tensor>>& params() const { return params_; }
  /// Non-trainable state (running statistics), saved in checkpoints.
  std::vector<std::pair<std::string, Tensor>>& buffers() { return buffers_; }
  bool trainable() const { return trainable_; }
  /// Frozen layers keep their parameters fixed (no gradient, no update).
  void set_trainable(bool t) { trainable_ = t; }
  /// L1/L2 penalty on this layer's weights ("kernel"), added to their gradients.
  void set_regularizer(float l1, float l2) { l1_ = l1; l2_ = l2; }
  float l1() const { return l1_; }
  float l2() const { return l2_; }

 protected:
  std::string kind_, name_;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  bool trainable_ = true;
  float l1_ = 0, l2_ = 0;
};

using LayerPtr = std::shared_ptr<Layer>;

namespace layers {
/// Fully connected: y = act(x·Wᵀ + b); x (..., in) → (..., units). activation: "", relu, gelu,
/// or any activation name (applied as a separate op when not fusable).
CUDL_API LayerPtr Dense(int64_t units, const std::string& activation = "", bool use_bias = true,
                        const std::string& name = "", Init init = Init::GlorotUniform);
/// 2-D convolution over (C, H, W) samples; activation "" or "relu" (fused), others separate.
CUDL_API LayerPtr Conv2d(int64_t filters, int kernel, int stride = 1, int padding = 0, const std::string& activation = "",
                         bool use_bias = true, int dilation = 1, int groups = 1, const std::string& name = "",
                         Init init = Init::HeUniform);
CUDL_API LayerPtr MaxPool2d(int kernel, int stride = 0, int padding = 0, const std::string& name = "");
CUDL_API LayerPtr AvgPool2d(int kernel, int stride = 0, int padding = 0, const std::string& name = "");
CUDL_API LayerPtr GlobalAvgPool(const std::string& name = "");
CUDL_API LayerPtr BatchNorm(float momentum = 0.1f, float eps = 1e-5f, const std::string& name = "");
CUDL_API LayerPtr LayerNorm(float eps = 1e-5f, const std::string& name = "");
CUDL_API LayerPtr Dropout(float rate, const std::string& name = "");
CUDL_API LayerPtr Flatten(const std::string& name = "");
CUDL_API LayerPtr Reshape(const Shape& shape, const std::string& name = "");
/// relu, leaky_relu (alpha), elu (alpha), gelu, gelu_tanh, silu, sigmoid, tanh, softplus, softmax,
/// log_softmax.
CUDL_API LayerPtr Activation(const std::string& name, float alpha = 0.01f, const std::string& layer_name = "");
}  // namespace layers

}  // namespace cudl
