// nn/build_context.hpp — what layers see while adding their nodes: the graph, the batch size,
// training or inference, and parameter/state registration bound to Model-owned tensors.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "cudl/nn.hpp"
#include "graph/graph.hpp"
#include "nn/layer_impl.hpp"

namespace cudl {
class DeviceCommunicator;  // backend/communicator.hpp
}

namespace cudl::detail {

struct ParamBinding {
  Layer* layer = nullptr;
  std::string layer_name;  // the layer's name in the model being built
  std::string name;        // "kernel", "bias", ...
  graph::ValueId value = graph::kNone;
  graph::ValueId grad = graph::kNone;  // kNone when frozen
  Tensor tensor;
  bool is_weight = false;  // subject to L1/L2 regularisation
};

struct BuildContext {
  graph::Graph* g = nullptr;
  int64_t batch = 0;
  bool training = false;
  Device device;
  uint64_t seed = 0;
  Layer* layer = nullptr;  // the layer being built
  std::string layer_name;  // its name in the model (node labels, value and parameter names)
  int layer_index = 0;     // its position in the model: with `seed`, it picks the initial weights
  /// Layers whose parameters get no gradient in this model (frozen when the model was compiled);
  /// null: each layer's current trainable().
  const std::set<const Layer*>* frozen = nullptr;
  std::vector<ParamBinding> params;
  std::map<graph::ValueId, Tensor> bound;  // storage for params, buffers and states
  /// Storage type of activations (CompileOptions::precision: f32, or bf16/f16) and the layers that
  /// override it (Layer::set_precision, by name); see node().
  DType storage = DType::f32;
  /// CompileOptions::propagate_nan: relu activations are not fused into GEMM/convolution epilogues.
  bool propagate_nan = false;
  const std::map<std::string, Precision>* layer_precision = nullptr;
  std::map<std::pair<graph::ValueId, DType>, graph::ValueId> casts;  // converted copies made so far
  /// Data-parallel training: this rank's communicator (synchronised batch norm all-reduces its
  /// statistics through it); null on one device.
  DeviceCommunicator* comm = nullptr;
  graph::ValueId rng = graph::kNone;       // i64[2] {seed, offset}, created on first dropout
  Tensor rng_tensor;
  int dropout_streams = 0;

  /// Whether the layer being built gets no parameter gradients in this model (frozen).
  bool layer_frozen() const;
  /// Full shape of a per-sample shape: (batch, ...).
  Shape batched(const Shape& sample) const;
  /// A new intermediate value named "<layer>.<what>".
  graph::ValueId value(const std::string& what, const Shape& shape, DType dtype = DType::f32);
  /// Adds a forward node labelled with the current layer. With 16-bit storage, an op listed in
  /// ops::storage_slots() gets its storage-slot float inputs in the layer's storage type and its
  /// intermediate outputs there made 16-bit; any other float input that is not f32 (or not in the
  /// storage type) is first converted by a Cast node (one per value and type, reused).
  void node(OpKind op, const OpAttrs& attrs, std::vector<graph::ValueId> in, std::vector<graph::ValueId> out);
  /// The parameter `name` of the current layer: created and initialised on first use (on the
  /// model's device, from Philox keyed by seed, layer_index and name), reused when the graph is
  /// rebuilt, the layer is applied again, or another model that shares the layer is built.
  graph::ValueId param(const std::string& name, const Shape& shape, Init init, int64_t fan_in, int64_t fan_out,
                       bool is_weight);
  /// A non-trainable buffer of the current layer (running statistics), filled with `value` on creation.
  graph::ValueId buffer(const std::string& name, const Shape& shape, double value);
  /// The storage type of the layer being built (its set_precision override, else `storage`).
  DType layer_storage() const;
  /// `v` converted to `dtype` by a Cast node in the current layer (v itself when it has that type).
  graph::ValueId cast(graph::ValueId v, DType dtype);
  /// The dropout RNG state value.
  graph::ValueId rng_state();
};

/// Initialises `t` (f32, on its device) by `init` with Philox seeded by `seed`.
void init_tensor(Tensor& t, Init init, int64_t fan_in, int64_t fan_out, uint64_t seed);
/// Keras's orthogonal matrix of `shape` (rows = the first dim) from normal draws seeded by `seed`,
/// factorised on the host (f32, on the CPU).
Tensor orthogonal_matrix(const Shape& shape, int64_t seed);
/// The Philox seed of parameter `name` of the layer at `layer_index` in a model seeded with `seed`.
uint64_t param_seed(uint64_t seed, int layer_index, const std::string& name);

}  // namespace cudl::detail
