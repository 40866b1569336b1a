// graph/planner.hpp — memory plan: lifetimes of intermediate values and their offsets in one arena
// (reuse by lifetime, in place where an elementwise op consumes the last use of its input).
#pragma once

#include <cstddef>
#include <set>
#include <vector>

#include "graph/graph.hpp"

namespace cudl::graph {

struct Plan {
  static constexpr size_t kAlignment = 256;
  std::vector<int64_t> offset;  // per value: arena byte offset of its bytes, or -1 when not in the arena
  std::vector<int> first, last; // per storage root: first and last node index touching it (-1 if none)
  size_t arena_bytes = 0;       // peak: the arena's size
  size_t intermediate_bytes = 0;  // sum of every intermediate's size (what no reuse would need)
  int in_place_nodes = 0;
};

struct PlanOptions {
  bool in_place = true;
  std::set<ValueId> keep_to_end;  // intermediates the host reads after the step
};

/// Plans the arena for graph `g` (marks in-place nodes in g). Throws naming the value when an
/// intermediate is read before any node writes it.
Plan plan_memory(Graph& g, const PlanOptions& options = {});

/// Independent check used by tests: no two arena values whose lifetimes overlap share bytes.
/// Returns an empty string when the plan is sound, else a description of the first conflict.
std::string verify_plan(const Graph& g, const Plan& plan);

}  // namespace cudl::graph
