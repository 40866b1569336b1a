// graph/autodiff.hpp — reverse-mode differentiation of a graph's forward nodes from per-op rules.
#pragma once

#include <map>
#include <set>

#include "graph/graph.hpp"

namespace cudl::graph {

struct BackwardSpec {
  int forward_end = 0;                    // nodes [0, forward_end) are differentiated
  std::map<ValueId, ValueId> seeds;       // value -> its gradient (e.g. logits -> dlogits from the loss)
  std::map<ValueId, ValueId> param_grads; // trainable param -> persistent Grad value to write
};

/// Appends Phase::Backward nodes computing every param_grads entry. Gradients that reach a value
/// from several consumers are summed (Binary Add). Parameters not in param_grads (frozen) get no
/// gradient; branches that do not lead to a trainable parameter are not differentiated. A
/// parameter no gradient reaches gets its Grad value zero-filled (Fill node).
void build_backward(Graph& g, const BackwardSpec& spec);

/// True when autodiff has a rule for `op`.
bool has_grad_rule(OpKind op);

}  // namespace cudl::graph
