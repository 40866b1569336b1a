// graph/graph.cpp — Graph construction and bookkeeping.
#include "graph/graph.hpp"

#include <algorithm>

#include "cudl/error.hpp"

namespace cudl::graph {

const char* phase_name(Phase p) {
  switch (p) {
    case Phase::Forward: return "forward";
    case Phase::Loss: return "loss";
    case Phase::Backward: return "backward";
    case Phase::Optimizer: return "optimizer";
    case Phase::Metrics: return "metrics";
  }
  return "?";
}

ValueId Graph::add_value(const std::string& name, const Shape& shape, DType dtype, Role role) {
  Value v;
  v.name = name;
  v.shape = shape;
  v.dtype = dtype;
  v.role = role;
  values_.push_back(std::move(v));
  return static_cast<ValueId>(values_.size() - 1);
}

ValueId Graph::add_view(ValueId base, const Shape& shape, const std::string& layer, Phase phase,
                        size_t byte_offset, const std::string& name) {
  const Value& b = value(base);
  const size_t need = byte_offset + static_cast<size_t>(shape.numel()) * dtype_size(b.dtype);
  if (need > b.nbytes())
    CUDL_FAIL(layer, ": cannot view ", b.name, " ", b.shape, " as ", shape, " at byte offset ", byte_offset);
  Value v;
  v.name = name.empty() ? b.name + ".view" : name;
  v.shape = shape;
  v.dtype = b.dtype;
  v.role = b.role;
  v.view_of = base;
  v.view_offset = byte_offset;
  values_.push_back(std::move(v));
  const ValueId id = static_cast<ValueId>(values_.size() - 1);
  Node n;
  n.op = OpKind::Count;
  n.inputs = {base};
  n.outputs = {id};
  n.layer = layer;
  n.label = layer + "/view";
  n.phase = phase;
  nodes_.push_back(std::move(n));
  values_[id].producer = static_cast<int>(nodes_.size() - 1);
  return id;
}

int Graph::add_node(OpKind op, const OpAttrs& attrs, std::vector<ValueId> inputs, std::vector<ValueId> outputs,
                    const std::string& layer, Phase phase) {
  Node n;
  n.op = op;
  n.attrs = attrs;
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  n.layer = layer;
  n.label = layer + "/" + op_name(op);
  n.phase = phase;
  for (ValueId v : n.inputs)
    if (v != kNone) value(v);  // range check
  const int id = static_cast<int>(nodes_.size());
  for (ValueId v : n.outputs) {
    if (v == kNone) continue;
    Value& val = value(v);
    if (val.role == Role::Intermediate && val.producer >= 0 && val.view_of == kNone)
      CUDL_FAIL(n.label, ": value ", val.name, " already produced by ", nodes_[val.producer].label);
    if (val.role == Role::Intermediate) val.producer = id;
  }
  nodes_.push_back(std::move(n));
  return id;
}

int Graph::insert_node(int pos, OpKind op, const OpAttrs& attrs, std::vector<ValueId> inputs, const std::string& layer,
                       Phase phase) {
  if (pos < 0 || pos > static_cast<int>(nodes_.size()))
    CUDL_FAIL("graph: cannot insert ", op_name(op), " at node ", pos, " of ", nodes_.size());
  const int id = add_node(op, attrs, std::move(inputs), {}, layer, phase);
  for (Value& v : values_)
    if (v.producer >= pos) ++v.producer;
  std::rotate(nodes_.begin() + pos, nodes_.begin() + id, nodes_.end());
  return pos;
}

void Graph::remove_node(int pos) {
  if (pos < 0 || pos >= static_cast<int>(nodes_.size()))
    CUDL_FAIL("graph: cannot remove node ", pos, " of ", nodes_.size());
  for (Value& v : values_) {
    if (v.producer == pos)
      v.producer = -1;
    else if (v.producer > pos)
      --v.producer;
  }
  nodes_.erase(nodes_.begin() + pos);
}

Value& Graph::value(ValueId id) {
  if (id < 0 || id >= static_cast<ValueId>(values_.size())) CUDL_FAIL("graph: invalid value id ", id);
  return values_[id];
}

const Value& Graph::value(ValueId id) const {
  if (id < 0 || id >= static_cast<ValueId>(values_.size())) CUDL_FAIL("graph: invalid value id ", id);
  return values_[id];
}

ValueId Graph::storage_root(ValueId id) const {
  while (value(id).view_of != kNone) id = value(id).view_of;
  return id;
}

size_t Graph::storage_offset(ValueId id) const {
  size_t off = 0;
  while (value(id).view_of != kNone) {
    off += value(id).view_offset;
    id = value(id).view_of;
  }
  return off;
}

int Graph::kernel_count() const {
  int n = 0;
  for (const Node& node : nodes_) n += node.is_view() ? 0 : 1;
  return n;
}

}  // namespace cudl::graph
