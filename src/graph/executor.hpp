// graph/executor.hpp — runs a planned graph on one device: every node on one stream, no host
// synchronisation inside a step; on CUDA the whole step is captured into a CUDA graph once and
// replayed. Every node is wrapped in an NVTX range "layer/op".
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "graph/graph.hpp"
#include "graph/planner.hpp"

namespace cudl::graph {

struct ExecutorOptions {
  bool cuda_graphs = true;  // capture and replay on CUDA (CUDL_CUDA_GRAPHS=0 turns it off)
  bool profile = false;     // per-node timing (CUDA events on GPU, steady clock on CPU)
  bool dry_run = false;     // benchmarks: everything but the op call itself (dispatch cost; no capture)
  /// Debugging: after each node, copy its f32 outputs to the host and stop with an error naming the
  /// first node that wrote NaN or Inf (eager: no capture; one host synchronisation per output).
  bool check_finite = false;
  MathMode math = MathMode::F32;  // f32 GEMMs and convolutions on CUDA: fp32 or TF32 tensor cores
  std::map<std::string, MathMode> layer_math;  // per-layer overrides of `math` (by node layer name)
  PlanOptions plan;
  /// Called by every run() before the step is queued (outside any capture), on the host: a training
  /// program's owner brings state the step reads up to date there (the 16-bit weight copies).
  std::function<void()> before_run;
};

struct OpProfile {
  std::string op;      // op name
  int64_t calls = 0;
  double total_ms = 0;
};

class Executor {
 public:
  /// `bound` gives storage for non-intermediate values (params, grads, states, inputs); any other
  /// non-intermediate value gets a fresh zero-filled tensor. Plans the arena and allocates it.
  Executor(Graph graph, Device device, const std::map<ValueId, Tensor>& bound, const ExecutorOptions& options = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /// Runs the whole node list once. On CUDA with graphs on: the first run is eager (warm-up:
  /// libraries build plans and workspaces), the second captures and launches, later runs replay.
  void run();
  /// Blocks until the device finished the queued runs.
  void synchronize();

  /// The tensor holding value v (arena values are views into the arena, valid after run()).
  Tensor tensor(ValueId v) const;
  const Graph& graph() const { return graph_; }
  const Plan& plan() const { return plan_; }
  Device device() const { return device_; }
  int kernels_per_run() const { return graph_.kernel_count(); }
  bool replaying() const { return captured_; }
  /// Bytes held by non-arena values this executor allocated or was given, by role.
  size_t bytes_of(Role role) const;
  std::vector<OpProfile> profile() const;

 private:
  void run_nodes();
  void check_finite(const Node& n) const;
  void build_calls();

  Graph graph_;
  Device device_;
  ExecutorOptions options_;
  Plan plan_;
  Tensor arena_;
  Tensor grad_slab_;  // the gradients of an AllReduce node, adjacent (u8; empty without one)
  std::vector<Tensor> storage_;  // per value: its tensor (persistent) or arena view
  struct Call {
    std::vector<TensorView> in, out;
    int node;
    MathMode math = MathMode::F32;
  };
  std::vector<Call> calls_;
  ExecContext* ctx_ = nullptr;
  int runs_ = 0;
  bool captured_ = false;
  bool capture_failed_ = false;  // capture or instantiation failed once: every step runs eagerly
  std::unique_ptr<CapturedGraph> step_graph_;  // the captured step (contexts that support capture)
  std::unique_ptr<OpTimer> timer_;             // per-node timing with profile on
  std::map<std::string, OpProfile> profile_;
};

}  // namespace cudl::graph
