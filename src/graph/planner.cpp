// graph/planner.cpp — lifetime analysis and greedy best-offset placement into one arena.
#include "graph/planner.hpp"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "cudl/error.hpp"

namespace cudl::graph {
namespace {

size_t align_up(size_t x) { return (x + Plan::kAlignment - 1) / Plan::kAlignment * Plan::kAlignment; }

// Which input of an elementwise node may share its output's buffer (-1: none).
int in_place_input(const Graph& g, const Node& n) {
  if (n.outputs.empty() || n.outputs[0] == kNone) return -1;
  const Value& out = g.value(n.outputs[0]);
  auto same = [&](size_t k) {
    return k < n.inputs.size() && n.inputs[k] != kNone && g.value(n.inputs[k]).shape == out.shape &&
           g.value(n.inputs[k]).dtype == out.dtype;
  };
  switch (n.op) {
    case OpKind::Unary:
    case OpKind::BinaryScalar:
    case OpKind::BinaryScalarBackward:
      return same(0) ? 0 : -1;
    case OpKind::UnaryBackward:
      return same(2) ? 2 : -1;
    case OpKind::DropoutBackward:
      return same(0) ? 0 : -1;
    case OpKind::Binary:
      return same(0) ? 0 : (same(1) ? 1 : -1);
    default:
      return -1;
  }
}

}  // namespace

Plan plan_memory(Graph& g, const PlanOptions& options) {
  const auto& values = g.values();
  auto& nodes = g.nodes();
  const int nv = static_cast<int>(values.size());
  Plan plan;
  plan.offset.assign(nv, -1);
  plan.first.assign(nv, -1);
  plan.last.assign(nv, -1);

  // Storage roots, with in-place merging: buffer[v] is the value whose bytes v uses.
  std::vector<ValueId> buffer(nv);
  std::iota(buffer.begin(), buffer.end(), 0);
  auto root = [&](ValueId v) {
    v = g.storage_root(v);
    while (buffer[v] != v) v = buffer[v];
    return v;
  };
  auto touch = [&](ValueId v, int i) {
    ValueId r = root(v);
    if (plan.first[r] < 0 || i < plan.first[r]) plan.first[r] = i;
    plan.last[r] = std::max(plan.last[r], i);
  };
  const int end = static_cast<int>(nodes.size());
  for (int i = 0; i < end; ++i) {
    Node& n = nodes[i];
    n.in_place = false;
    for (ValueId v : n.inputs)
      if (v != kNone) {
        const ValueId r = root(v);
        if (values[r].role == Role::Intermediate && plan.first[r] < 0)
          CUDL_FAIL("memory plan: ", n.label, " reads ", values[v].name, " ", values[v].shape,
                    " before any node writes it");
        touch(v, i);
      }
    // In place: the output takes the input's buffer when this node is the input's last reader.
    const int k = options.in_place && !n.is_view() ? in_place_input(g, n) : -1;
    if (k >= 0) {
      const ValueId in = n.inputs[k], out = n.outputs[0];
      const ValueId rin = root(in);
      bool read_later = options.keep_to_end.count(rin) > 0;
      for (int j = i + 1; j < end && !read_later; ++j)
        for (ValueId v : nodes[j].inputs)
          if (v != kNone && root(v) == rin) read_later = true;
      if (!read_later && values[rin].role == Role::Intermediate && values[out].role == Role::Intermediate &&
          values[out].view_of == kNone && g.storage_offset(in) == 0 && values[rin].nbytes() == values[out].nbytes() &&
          out != rin) {
        buffer[out] = rin;
        n.in_place = true;
        plan.in_place_nodes++;
      }
    }
    for (ValueId v : n.outputs)
      if (v != kNone) touch(v, i);
  }
  for (ValueId v : options.keep_to_end) {
    const ValueId r = root(v);
    if (plan.first[r] >= 0) plan.last[r] = end;
  }

  // Arena buffers: intermediate roots that are touched.
  struct Buf { ValueId id; size_t size; int first, last; };
  std::vector<Buf> bufs;
  for (ValueId v = 0; v < nv; ++v) {
    if (values[v].role != Role::Intermediate || values[v].view_of != kNone) continue;
    plan.intermediate_bytes += align_up(values[v].nbytes());
    if (buffer[v] != v || plan.first[v] < 0) continue;
    bufs.push_back({v, align_up(std::max<size_t>(values[v].nbytes(), 1)), plan.first[v], plan.last[v]});
  }
  // Greedy: largest first, at the lowest offset that does not collide with a placed buffer whose
  // lifetime overlaps.
  std::sort(bufs.begin(), bufs.end(), [](const Buf& a, const Buf& b) {
    return a.size != b.size ? a.size > b.size : a.first < b.first;
  });
  std::vector<Buf> placed;
  std::vector<size_t> placed_off;
  for (const Buf& b : bufs) {
    std::vector<std::pair<size_t, size_t>> busy;
    for (size_t k = 0; k < placed.size(); ++k)
      if (!(placed[k].last < b.first || b.last < placed[k].first))
        busy.emplace_back(placed_off[k], placed_off[k] + placed[k].size);
    std::sort(busy.begin(), busy.end());
    size_t off = 0;
    for (const auto& [s, e] : busy) {
      if (off + b.size <= s) break;
      off = std::max(off, e);
    }
    placed.push_back(b);
    placed_off.push_back(off);
    plan.offset[b.id] = static_cast<int64_t>(off);
    plan.arena_bytes = std::max(plan.arena_bytes, off + b.size);
  }
  // Merged (in-place) values and views take their root's offset.
  for (ValueId v = 0; v < nv; ++v) {
    const ValueId r = root(v);
    if (values[r].role != Role::Intermediate || plan.offset[r] < 0) continue;
    plan.offset[v] = plan.offset[r] + static_cast<int64_t>(g.storage_offset(v));
  }
  return plan;
}

std::string verify_plan(const Graph& g, const Plan& plan) {
  // Recompute lifetimes from scratch (per value, following views and aliases by address).
  const auto& values = g.values();
  const auto& nodes = g.nodes();
  struct Use { ValueId v; int64_t lo, hi; int first, last; };
  std::vector<Use> uses;
  for (ValueId v = 0; v < static_cast<ValueId>(values.size()); ++v) {
    if (plan.offset[v] < 0 || values[v].role != Role::Intermediate) continue;
    int first = -1, last = -1;
    for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
      bool t = false;
      for (ValueId x : nodes[i].inputs) t |= x == v;
      for (ValueId x : nodes[i].outputs) t |= x == v;
      if (t) {
        if (first < 0) first = i;
        last = i;
      }
    }
    if (first < 0) continue;
    uses.push_back({v, plan.offset[v], plan.offset[v] + static_cast<int64_t>(values[v].nbytes()), first, last});
  }
  for (size_t a = 0; a < uses.size(); ++a)
    for (size_t b = a + 1; b < uses.size(); ++b) {
      const Use &x = uses[a], &y = uses[b];
      const bool bytes = x.lo < y.hi && y.lo < x.hi;
      // Lifetimes overlap strictly: one is written while the other is still to be read. Touching
      // at one node is allowed only for in-place nodes (reads before writes, same index).
      const bool time = !(x.last < y.first || y.last < x.first);
      if (!bytes || !time) continue;
      bool legal = false;
      const int shared = x.last == y.first ? x.last : (y.last == x.first ? y.last : -1);
      if (shared >= 0 && nodes[shared].in_place) legal = true;
      if (g.storage_root(x.v) == g.storage_root(y.v) || values[x.v].view_of == y.v || values[y.v].view_of == x.v)
        legal = true;  // views of each other
      // Values chained through in-place nodes share bytes by design.
      if (!legal) {
        std::ostringstream os;
        os << values[x.v].name << " [" << x.lo << ", " << x.hi << ") live " << x.first << ".." << x.last << " and "
           << values[y.v].name << " [" << y.lo << ", " << y.hi << ") live " << y.first << ".." << y.last;
        return os.str();
      }
    }
  return "";
}

}  // namespace cudl::graph
