// train/reports.cpp — what a model tells a person: the plan report, the summary table and the
// per-op profile.
#include <algorithm>
#include <iomanip>
#include <set>
#include <sstream>

#include "cudl/memory.hpp"
#include "train/model_impl.hpp"

namespace cudl {

std::string PlanReport::str() const {
  std::ostringstream os;
  os << "plan (batch " << batch_size << "): arena peak " << format_bytes(arena_bytes) << " (" << arena_bytes
     << " bytes; " << format_bytes(intermediate_bytes) << " without reuse), parameters " << format_bytes(param_bytes)
     << ", gradients " << format_bytes(grad_bytes) << ", optimizer and other state " << format_bytes(state_bytes)
     << ", kernels per training step " << kernels_per_step << ", activations " << format_bytes(activation_bytes);
  if (weight_copy_bytes) os << " (+ " << format_bytes(weight_copy_bytes) << " of 16-bit weight copies)";
  if (persistent_copy_bytes)
    os << ", 16-bit weight copies written by the optimizer step " << format_bytes(persistent_copy_bytes);
  os << ", precision " << precision_name(precision);
  if (precision == Precision::tf32)
    os << (device.is_cpu() ? " (no effect on the cpu backend: it computes in fp32)"
                           : " (TF32 tensor cores for GEMMs and convolutions)");
  if (precision == Precision::bf16 || precision == Precision::f16)
    os << " (" << precision_name(precision) << " activations and GEMM inputs, fp32 math, weights and optimizer state"
       << (precision == Precision::f16 ? ", dynamic loss scaling" : "") << ")";
  for (const auto& [layer, p] : layer_precision) os << "; " << layer << " in " << precision_name(p);
  return os.str();
}

std::string Model::summary() const {
  const Impl& m = impl();
  std::ostringstream os;
  os << "Model: " << m.name << "\n";
  os << std::left << std::setw(24) << "layer (type)" << std::setw(22) << "output shape"
     << "params\n";
  os << std::string(58, '-') << "\n";
  int64_t total = 0;
  std::set<const Layer*> counted;
  for (const auto& n : m.nodes) {
    if (n->source) continue;  // a further output of a layer listed already
    int64_t params = 0;
    if (n->layer && counted.insert(n->layer.get()).second)
      for (const auto& [k, t] : n->layer->params()) params += t.numel();
    total += params;
    std::string shape = "(None, " + n->shape.str().substr(1);
    if (n->shape.rank() == 0) shape = "(None,)";
    if (n->shape.rank() == 1) shape = "(None, " + std::to_string(n->shape[0]) + ")";
    std::string label = n->layer ? m.layer_name(n->layer.get()) + " (" + n->layer->kind() + ")" : n->name + " (input)";
    os << std::setw(24) << label << std::setw(22) << shape << (n->layer ? std::to_string(params) : "") << "\n";
  }
  os << std::string(58, '-') << "\n";
  os << "total parameters: " << total << (m.compiled ? "" : " (created at compile)") << "\n";
  if (m.compiled) os << m.report.str() << "\n";
  return os.str();
}

void Model::set_profiling(bool on) { impl().profiling = on; }

std::string Model::profile_table() const {
  std::vector<graph::OpProfile> rows;
  double total = 0;
  for (const auto& [k, p] : impl().profile) {
    rows.push_back(p);
    total += p.total_ms;
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.total_ms > b.total_ms; });
  std::ostringstream os;
  os << std::left << std::setw(24) << "op" << std::right << std::setw(10) << "calls" << std::setw(14) << "total ms"
     << std::setw(12) << "mean us" << std::setw(9) << "share"
     << "\n";
  for (const auto& p : rows)
    os << std::left << std::setw(24) << p.op << std::right << std::setw(10) << p.calls << std::setw(14) << std::fixed
       << std::setprecision(2) << p.total_ms << std::setw(12) << std::setprecision(1)
       << 1000.0 * p.total_ms / std::max<int64_t>(p.calls, 1) << std::setw(8) << std::setprecision(1)
       << (total > 0 ? 100.0 * p.total_ms / total : 0.0) << "%\n";
  return os.str();
}

}  // namespace cudl
