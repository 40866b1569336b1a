// nn/layer_impl.hpp — what models see of layers beyond the public API: the applications graph
// (VarNode), the graph-building interface every built-in layer implements, and naming.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cudl/nn.hpp"

namespace cudl::detail {

struct BuildContext;

/// One application of a layer to input Vars (its first output), an Input (layer and source null),
/// or a further output of an application (source set, layer null: output `output` of source, whose
/// only input it lists). Holding the node holds everything it was computed from; nothing else
/// records it.
struct VarNode {
  LayerPtr layer;                                      // null for an Input or a further output
  std::vector<std::shared_ptr<const VarNode>> inputs;  // the layer's input Vars ({source} for a further output)
  Shape shape;                                         // per sample
  DType dtype = DType::f32;
  std::string name;                       // an Input's name
  std::shared_ptr<const VarNode> source;  // a further output: the application it belongs to
  int output = 0;                         // which output of the application (0: the node itself)
};

/// A layer that can add its nodes to a graph: every built-in layer. `build` receives the value ids
/// of its inputs (batched) and returns those of its outputs.
class BuiltinLayer : public Layer {
 public:
  using Layer::Layer;
  virtual std::vector<int> build(BuildContext& ctx, const std::vector<int>& inputs) = 0;
};

/// Throws "<who>: set_weights: <what> is <shape> <dtype>, got ..." unless w has t's shape and dtype.
void check_weight(const std::string& who, const std::string& what, const Tensor& t, const Tensor& w);

struct LayerAccess {
  /// The layer's parameters then its buffers: the order of get_weights / set_weights.
  static std::vector<std::pair<std::string, Tensor>> weights(const Layer& layer);
  /// The layer as a BuiltinLayer; throws naming it when it is not one.
  static BuiltinLayer& builtin(Layer& layer);
  /// Gives an unnamed layer `name`; returns false (and changes nothing) when it already has one.
  static bool assign_name(Layer& layer, const std::string& name);
  static bool auto_named(const Layer& layer) { return layer.auto_named_; }
  static bool has_name(const Layer& layer) { return !layer.name_.empty(); }
  /// Advanced by every write of the layer's parameters: mutable params(), set_weights, and each
  /// training step of a model that keeps 16-bit copies of them (Model::Impl::sync_weight_copies).
  static uint64_t weights_version(const Layer& layer) { return layer.weights_version_; }
  static uint64_t weights_written(Layer& layer) { return ++layer.weights_version_; }
};

/// Throws naming the layer and the shapes unless it got n inputs (src/nn/layers.cpp).
void expect_inputs(const Layer& l, const std::vector<Shape>& in, size_t n);
/// Throws "<who>: unknown activation" unless act is "", linear or an activation name.
void check_activation(const std::string& who, const std::string& act);
/// Applies a named activation to x as its own node; returns x for "" and linear.
int apply_activation(BuildContext& c, int x, const std::string& act, float alpha);

}  // namespace cudl::detail
