// graph/graph.hpp — the static graph IR: values (shape, dtype, role, storage) and nodes (op +
// attributes). Layers append forward nodes; autodiff appends backward nodes; the planner places
// every value; the executor runs the node list.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "backend/op.hpp"

namespace cudl::graph {

using ValueId = int32_t;
constexpr ValueId kNone = -1;

/// What a value is for: decides where it lives and whether the host may read it.
enum class Role {
  Input,         // fed by the host or the data loader each step (persistent buffer)
  Param,         // trainable or frozen parameter, bound to a Model-owned tensor
  Grad,          // gradient of a parameter (persistent, read by the optimizer and clipping)
  State,         // optimizer slots, running statistics, RNG state, counters, metric accumulators
  Intermediate,  // activations and backward temporaries: placed in the arena by lifetime
};

struct Value {
  std::string name;
  Shape shape;
  DType dtype = DType::f32;
  Role role = Role::Intermediate;
  ValueId view_of = kNone;  // a reshape view: same bytes as view_of (+ view_offset bytes)
  size_t view_offset = 0;
  int producer = -1;        // node that writes it (-1: external or view)
  bool weight_copy = false; // a 16-bit copy of a parameter, or the gradient of one (bf16/f16)

  size_t nbytes() const { return static_cast<size_t>(shape.numel()) * dtype_size(dtype); }
};

enum class Phase { Forward, Loss, Backward, Optimizer, Metrics };
const char* phase_name(Phase p);

struct Node {
  OpKind op = OpKind::Count;  // Count marks a view node (no kernel): outputs[0] views inputs[0]
  OpAttrs attrs;
  std::vector<ValueId> inputs;   // kNone for an absent optional input
  std::vector<ValueId> outputs;  // kNone for an absent optional output
  std::string layer;             // layer name, for errors, NVTX and the profile ("dense1")
  std::string label;             // "layer/op"
  Phase phase = Phase::Forward;
  bool in_place = false;  // outputs[0] may share inputs[0]'s buffer (set by the planner)

  bool is_view() const { return op == OpKind::Count; }
};

class Graph {
 public:
  ValueId add_value(const std::string& name, const Shape& shape, DType dtype, Role role);
  /// A view with another shape of the same bytes (reshape/flatten), recorded as a view node.
  ValueId add_view(ValueId base, const Shape& shape, const std::string& layer, Phase phase,
                   size_t byte_offset = 0, const std::string& name = "");
  /// Appends a node; outputs must already exist and have no producer.
  int add_node(OpKind op, const OpAttrs& attrs, std::vector<ValueId> inputs, std::vector<ValueId> outputs,
               const std::string& layer, Phase phase);
  /// add_node, but placed at index `pos` of the node list (later nodes move up by one); for nodes
  /// without outputs that must run between existing ones (data-parallel gradient buckets).
  int insert_node(int pos, OpKind op, const OpAttrs& attrs, std::vector<ValueId> inputs, const std::string& layer,
                  Phase phase);

  /// Removes node `pos` (later nodes move down by one); its outputs are left without a producer,
  /// for the caller to bind (a Cast whose result became persistent state).
  void remove_node(int pos);

  Value& value(ValueId id);
  const Value& value(ValueId id) const;
  /// The value that owns the bytes of `id` (follows views).
  ValueId storage_root(ValueId id) const;
  size_t storage_offset(ValueId id) const;  // bytes from the root

  std::vector<Value>& values() { return values_; }
  const std::vector<Value>& values() const { return values_; }
  std::vector<Node>& nodes() { return nodes_; }
  const std::vector<Node>& nodes() const { return nodes_; }
  int kernel_count() const;  // nodes that launch work (views excluded)

 private:
  std::vector<Value> values_;
  std::vector<Node> nodes_;
};

}  // namespace cudl::graph
