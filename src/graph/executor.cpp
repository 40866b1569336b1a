// graph/executor.cpp — storage binding, the node loop, whole-step capture/replay and per-op timing
// through the ExecContext (a CUDA graph and CUDA events on CUDA), per-op profile.
#include "graph/executor.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "core/nvtx.hpp"
#include "cudl/error.hpp"

namespace cudl::graph {

Executor::Executor(Graph graph, Device device, const std::map<ValueId, Tensor>& bound, const ExecutorOptions& options)
    : graph_(std::move(graph)), device_(device), options_(options) {
  if (const char* env = std::getenv("CUDL_CUDA_GRAPHS"); env && std::strcmp(env, "0") == 0)
    options_.cuda_graphs = false;
  plan_ = plan_memory(graph_, options_.plan);
  const auto& values = graph_.values();
  storage_.resize(values.size());
  arena_ = Tensor::empty(Shape{static_cast<int64_t>(std::max<size_t>(plan_.arena_bytes, 1))}, DType::u8, device_);
  // The gradients AllReduce nodes read, when the graph owns them, share one slab in the nodes'
  // order and each node's input order (each at a 16-byte boundary): the gradients of one node are
  // adjacent, one bucket for the communicator.
  std::map<ValueId, size_t> slab_offset;
  size_t slab_bytes = 0;
  for (const Node& n : graph_.nodes()) {
    if (n.op != OpKind::AllReduce) continue;
    for (ValueId v : n.inputs) {
      const Value& val = values[v];
      if (val.view_of != kNone || val.role != Role::Grad || bound.count(v) || slab_offset.count(v)) continue;
      slab_offset[v] = slab_bytes;
      slab_bytes = (slab_bytes + val.nbytes() + 15) / 16 * 16;
    }
  }
  if (slab_bytes > 0) grad_slab_ = Tensor::zeros(Shape{static_cast<int64_t>(slab_bytes)}, DType::u8, device_);
  // Roots first, then views (which need their root's tensor).
  for (ValueId v = 0; v < static_cast<ValueId>(values.size()); ++v) {
    const Value& val = values[v];
    if (val.view_of != kNone) continue;
    if (val.role == Role::Intermediate) {
      if (plan_.offset[v] >= 0) storage_[v] = arena_.view_bytes(plan_.offset[v], val.shape, val.dtype);
      continue;
    }
    auto it = bound.find(v);
    if (it != bound.end()) {
      const Tensor& t = it->second;
      if (t.shape().numel() != val.shape.numel() || t.dtype() != val.dtype || t.device() != device_)
        CUDL_FAIL("executor: tensor bound to ", val.name, " is ", t.shape(), " ", t.dtype(), " on ", t.device(),
                  "; the graph needs ", val.shape, " ", val.dtype, " on ", device_);
      storage_[v] = t.reshape(val.shape);
    } else if (auto at = slab_offset.find(v); at != slab_offset.end()) {
      storage_[v] = grad_slab_.view_bytes(at->second, val.shape, val.dtype);
    } else {
      storage_[v] = Tensor::zeros(val.shape, val.dtype, device_);
    }
  }
  for (ValueId v = 0; v < static_cast<ValueId>(values.size()); ++v) {
    const Value& val = values[v];
    if (val.view_of == kNone) continue;
    if (val.role == Role::Intermediate) {
      if (plan_.offset[v] >= 0) storage_[v] = arena_.view_bytes(plan_.offset[v], val.shape, val.dtype);
      continue;
    }
    const ValueId r = graph_.storage_root(v);
    storage_[v] = storage_[r].view_bytes(graph_.storage_offset(v), val.shape, val.dtype);
  }
  ctx_ = &default_context(device_);
  build_calls();
}

Executor::~Executor() = default;

void Executor::build_calls() {
  const auto& nodes = graph_.nodes();
  const OpTable& table = op_table(device_.type());
  for (int i = 0; i < static_cast<int>(nodes.size()); ++i) {
    const Node& n = nodes[i];
    if (n.is_view()) continue;
    if (!table.supports(n.op))
      CUDL_FAIL("layer ", n.layer, ": backend ", table.name(), " does not support op ", op_name(n.op));
    Call c;
    c.node = i;
    const auto lm = options_.layer_math.find(n.layer);
    c.math = lm == options_.layer_math.end() ? options_.math : lm->second;
    auto view_of = [&](ValueId v) {
      if (v == kNone) return TensorView{};
      const Tensor& t = storage_[v];
      if (!t.defined()) CUDL_FAIL("executor: value ", graph_.value(v).name, " used by ", n.label, " has no storage");
      return TensorView::of(t);
    };
    for (ValueId v : n.inputs) c.in.push_back(view_of(v));
    for (ValueId v : n.outputs) c.out.push_back(view_of(v));
    calls_.push_back(std::move(c));
  }
}

void Executor::run_nodes() {
  const auto& nodes = graph_.nodes();
  const OpTable& table = op_table(device_.type());
  for (const Call& c : calls_) {
    const Node& n = nodes[c.node];
    CUDL_NVTX_RANGE(n.label);
    OpCall call;
    call.op = n.op;
    call.inputs = c.in.data();
    call.n_inputs = static_cast<int>(c.in.size());
    call.outputs = c.out.data();
    call.n_outputs = static_cast<int>(c.out.size());
    call.attrs = n.attrs;
    call.ctx = ctx_;
    call.label = n.label.c_str();
    call.math = c.math;
    if (!options_.profile) {
      if (!options_.dry_run) table.run(call);
      if (options_.check_finite) check_finite(n);
      continue;
    }
    if (!timer_) timer_ = ctx_->make_timer();  // CUDA events on this executor's stream; CPU: steady clock
    timer_->start();
    table.run(call);
    const double ms = timer_->stop_ms();
    OpProfile& p = profile_[op_name(n.op)];
    p.op = op_name(n.op);
    p.calls++;
    p.total_ms += ms;
  }
}

void Executor::run() {
  CUDL_NVTX_RANGE("cudl/step");
  ContextScope scope(*ctx_);  // the step's work belongs to the executor's device
  if (options_.before_run) options_.before_run();
  if (ctx_->supports_capture() && options_.cuda_graphs && !options_.profile && !options_.dry_run &&
      !options_.check_finite && !capture_failed_ && runs_ >= 1) {
    if (!step_graph_) {
      ctx_->begin_capture();
      try {
        run_nodes();
      } catch (...) {
        ctx_->abort_capture();
        throw;
      }
      try {
        step_graph_ = ctx_->end_capture();
      } catch (const Error& e) {
        // The captured nodes were recorded, not run: run this step eagerly, and every later one.
        std::fprintf(stderr, "cudl: executor: the step could not become a CUDA graph (%s); running it eagerly\n",
                     e.what());
        capture_failed_ = true;
        run_nodes();
        ++runs_;
        return;
      }
      captured_ = true;
    }
    step_graph_->launch();
    ++runs_;
    return;
  }
  run_nodes();
  ++runs_;
}

namespace {
/// Index of the first NaN or Inf of an f32 tensor (copied to the host), or -1.
int64_t first_non_finite(const Tensor& t, float* value) {
  if (!t.defined() || t.dtype() != DType::f32 || t.numel() == 0) return -1;
  const std::vector<float> v = t.to(Device::cpu()).to_vector<float>();
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) {
      *value = v[i];
      return static_cast<int64_t>(i);
    }
  return -1;
}
}  // namespace

void Executor::check_finite(const Node& n) const {
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    if (n.outputs[k] == kNone) continue;
    float bad = 0;
    const int64_t at = first_non_finite(storage_[n.outputs[k]], &bad);
    if (at < 0) continue;
    std::string inputs;
    for (ValueId v : n.inputs) {
      float x = 0;
      if (v != kNone && first_non_finite(storage_[v], &x) >= 0)
        inputs += (inputs.empty() ? "" : ", ") + graph_.value(v).name;
    }
    const Value& out = graph_.value(n.outputs[k]);
    CUDL_FAIL("non-finite value: node ", n.label, " wrote ", bad, " at element ", at, " of ", out.name, " ", out.shape,
              inputs.empty() ? std::string(" from finite inputs (the first node to produce one)")
                             : " (its input(s) " + inputs + " already held NaN/Inf)");
  }
}

void Executor::synchronize() { ctx_->synchronize(); }

Tensor Executor::tensor(ValueId v) const {
  if (v < 0 || v >= static_cast<ValueId>(storage_.size())) CUDL_FAIL("executor: invalid value id ", v);
  return storage_[v];
}

size_t Executor::bytes_of(Role role) const {
  size_t n = 0;
  const auto& values = graph_.values();
  for (ValueId v = 0; v < static_cast<ValueId>(values.size()); ++v)
    if (values[v].role == role && values[v].view_of == kNone) n += values[v].nbytes();
  return n;
}

std::vector<OpProfile> Executor::profile() const {
  std::vector<OpProfile> out;
  for (const auto& [k, p] : profile_) out.push_back(p);
  return out;
}

}  // namespace cudl::graph
