// bench/step_counters.cpp — what ONE training step of cudl-mnist's mlp / cnn, a token model or cudl-seq-mnist's
// lstm asks of the GPU, counted
// under the emulator (tests/emu): launches, graphs, library calls, allocations, syncs, copies; and the
// bytes each node reads and writes against the minimum a step must move.
//
// Usage: bench_step_counters [--model mlp|cnn|embed|charlm|encoder|seq_lstm|seq_gru|dcgan|all]
//        [--batch B (128; charlm, dcgan 64)] [--warmup W (3)] [--precision f32|tf32|bf16|f16 (f32)]
//        [--propagate-nan 0|1 (0): CompileOptions::propagate_nan]
//        [--weight-copies fused|cast (fused)]
// (bf16/f16: fused, the optimizer step writes each weight's 16-bit copy that the next forward reads;
// cast, the program before that, which casts every weight at the start of each step)
// (embed: a token classifier whose step runs Gather / GatherBackward; bench/train_graph.hpp;
// charlm: cudl-charlm's Transformer, samples/charlm/charlm.hpp; encoder: the same without the causal
// mask, whose 16-bit attention forward runs as cuDNN's SDPA; seq_lstm / seq_gru: cudl-seq-mnist's
// model; all: every model but seq_gru, encoder and dcgan)
// dcgan: one GAN iteration of cudl-dcgan's models (samples/dcgan/models.hpp, its default sizes):
// D on a real and a generated batch, then G, each a train_on_batch on device-resident inputs.
// The counters come from Model::fit itself: a callback resets the emulator's counters after step W
// and reads them after step W+1, so exactly one exec->run() of the real training program lies in
// between (the emulator's lazy streams are drained with cudl_emu::flush_all on both sides; that is
// not a host synchronisation of the program and is not counted as one). CUDL_CUDA_GRAPHS=0 measures
// the step without graph capture. The byte table walks the model's own training program
// (cudl::detail::ModelInternals::training_step). The roofline estimate turns the same walk into a
// step time for an H100 SXM and an A100 (assumptions printed beside it): an estimate, not a measurement.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>

#include "../samples/dcgan/models.hpp"
#include "cudl/memory.hpp"
#include "emu/emu.hpp"
#include "ops/optim.hpp"
#include "samples/charlm/charlm.hpp"
#include "train_graph.hpp"

namespace {

using cudl::OpKind;
using cudl::graph::kNone;
using cudl::graph::Role;
using cudl::graph::ValueId;

struct Args {
  std::string model = "all";
  int64_t batch = 0;  // 0: 128, or 64 for charlm (the samples' batches)
  int warmup = 3;
  cudl::Precision precision = cudl::Precision::f32;  // CompileOptions::precision of every model
  bool propagate_nan = false;                         // CompileOptions::propagate_nan, likewise
  bool fused_copies = true;  // bf16/f16: the optimizer step writes the 16-bit weight copies (else Casts)
};

// Resets the counters after step `at`, reads them after step `at + 1`.
class CounterWindow : public cudl::Callback {
 public:
  explicit CounterWindow(int64_t at) : at_(at) {}
  void on_batch_end(cudl::Model& m, int64_t step) override {
    if (step == at_) {
      (void)cudl_emu::flush_all();
      cudl_emu::reset_counters();
      pool_before_ = cudl::memory_stats(m.device());
    } else if (step == at_ + 1) {
      (void)cudl_emu::flush_all();
      counters = cudl_emu::counters();
      const cudl::MemoryStats after = cudl::memory_stats(m.device());
      pool_allocs = after.num_allocs - pool_before_.num_allocs;
      done = true;
    }
  }
  cudl_emu::Counters counters;
  uint64_t pool_allocs = 0;
  bool done = false;

 private:
  int64_t at_;
  cudl::MemoryStats pool_before_;
};

const char* verdict(bool ok) { return ok ? "met" : "NOT MET"; }

std::string human(double b) {
  char buf[64];
  if (b >= 1 << 20)
    std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1 << 20));
  else if (b >= 1 << 10)
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / (1 << 10));
  else
    std::snprintf(buf, sizeof buf, "%.0f B", b);
  return buf;
}

// Bytes a node must touch, from its tensors' sizes. A gather reads only the gathered rows of its
// table; in-place updates (optimizer groups, counters, accumulators, running statistics) are read
// and written.
struct NodeBytes {
  double read = 0, written = 0;
};

NodeBytes node_bytes(const cudl::graph::Graph& g, const cudl::graph::Node& n) {
  NodeBytes b;
  auto nb = [&](ValueId v) { return v == kNone ? 0.0 : static_cast<double>(g.value(v).nbytes()); };
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    const ValueId v = n.inputs[k];
    if (v == kNone) continue;
    double r = nb(v);
    if ((n.op == OpKind::Gather || n.op == OpKind::GatherImages) && k == 0) {
      const auto& s = g.value(v).shape;
      const double row = r / static_cast<double>(std::max<int64_t>(s[0], 1));
      r = row * static_cast<double>(g.value(n.inputs[1]).shape.numel());
    }
    if (n.op == OpKind::BatchIndices && k == 0) r = nb(n.outputs[0]);  // B entries of the permutation
    if (n.op == OpKind::GatherBatch) {  // B entries of the permutation, B rows of each table
      const double batch = static_cast<double>(g.value(n.outputs[0]).shape[0]);
      r = k == 0 ? batch * sizeof(int32_t) : r / static_cast<double>(std::max<int64_t>(g.value(v).shape[0], 1)) * batch;
    }
    // UnaryBackward reads x and y only when the op's derivative needs them (backend/op.hpp).
    if (n.op == OpKind::UnaryBackward && k < 2) {
      const auto u = static_cast<cudl::UnaryOp>(n.attrs.i[0]);
      if ((k == 0 && !cudl::unary_needs_input(u)) || (k == 1 && !cudl::unary_needs_output(u))) r = 0;
    }
    // LinearBackward reads x only for dw and w only for dx (absent outputs are not computed).
    if (n.op == OpKind::LinearBackward && k == 0 && (n.outputs.size() < 2 || n.outputs[1] == kNone)) r = 0;
    if (n.op == OpKind::LinearBackward && k == 1 && (n.outputs.empty() || n.outputs[0] == kNone)) r = 0;
    b.read += r;
  }
  for (ValueId v : n.outputs) b.written += nb(v);
  switch (n.op) {
    case OpKind::AdamStep: {  // groups (param, grad, m, v[, 16-bit copy]) after hyper: param, m, v rewritten
      const size_t stride = n.attrs.i[cudl::ops::kWeightCopiesSlot] ? 5 : 4;
      for (size_t k = 1; k + stride - 1 < n.inputs.size(); k += stride) {
        b.written += nb(n.inputs[k]) + nb(n.inputs[k + 2]) + nb(n.inputs[k + 3]);
        if (stride == 5) {  // the copy is written, not read
          b.read -= nb(n.inputs[k + 4]);
          b.written += nb(n.inputs[k + 4]);
        }
      }
      break;
    }
    case OpKind::Increment:
    case OpKind::Accumulate:
      for (ValueId v : n.outputs) b.read += nb(v);
      break;
    case OpKind::GatherBatch:  // the cursor (output 2) is read and advanced
      b.read += nb(n.outputs[2]);
      break;
    case OpKind::BatchNormTrain:
      if (n.inputs.size() > 4) b.written += nb(n.inputs[3]) + nb(n.inputs[4]);
      break;
    default:
      break;
  }
  return b;
}

// Floating-point operations of a node: 2 per multiply-add of the GEMMs and convolutions (the
// backward ops count only the outputs they compute), one per output element elsewhere.
double node_flops(const cudl::graph::Graph& g, const cudl::graph::Node& n) {
  auto numel = [&](ValueId v) { return v == kNone ? 0.0 : static_cast<double>(g.value(v).shape.numel()); };
  auto present = [&](size_t k) { return k < n.outputs.size() && n.outputs[k] != kNone; };
  switch (n.op) {
    case OpKind::Linear: {  // x (N, in), w (out, in): y = x·wᵀ
      const double in = static_cast<double>(g.value(n.inputs[1]).shape[1]);
      return 2 * numel(n.outputs[0]) * in;
    }
    case OpKind::LinearBackward: {  // in: x, w, dy; dx = dy·w, dw = dyᵀ·x, db = Σ dy
      const auto& ws = g.value(n.inputs[1]).shape;
      const double mac = numel(n.inputs[2]) * static_cast<double>(ws[1]);  // N * out * in
      return (present(0) ? 2 * mac : 0) + (present(1) ? 2 * mac : 0) + (present(2) ? numel(n.inputs[2]) : 0);
    }
    case OpKind::Matmul: {  // c (..., M, N) = a (..., M, K) · b
      const auto& as = g.value(n.inputs[0]).shape;
      const int r = as.rank();
      const double k = static_cast<double>(n.attrs.i[0] ? as[r - 2] : as[r - 1]);
      return 2 * numel(n.outputs[0]) * k;
    }
    case OpKind::Conv2d:                // y (N, K, P, Q), w (K, C/g, R, S)
    case OpKind::Conv2dBackwardData:    // dy (N, K, P, Q), w
    case OpKind::Conv2dBackwardFilter: {  // x, dy (N, K, P, Q); out dw (K, C/g, R, S)
      const ValueId w = n.op == OpKind::Conv2dBackwardFilter ? n.outputs[0] : n.inputs[1];
      const ValueId y = n.op == OpKind::Conv2d ? n.outputs[0] : n.inputs[n.op == OpKind::Conv2dBackwardData ? 0 : 1];
      const auto& ws = g.value(w).shape;
      return 2 * numel(y) * static_cast<double>(ws[1] * ws[2] * ws[3]);
    }
    case OpKind::RecurrentSequence:            // per step after the first: rec (B, GH) = h·uᵀ, u (GH, H)
    case OpKind::RecurrentSequenceBackward: {  // per step after the first: drec·u, and du over all steps
      const auto& us = g.value(n.inputs[n.op == OpKind::RecurrentSequence ? 1 : 0]).shape;
      const auto& hs = g.value(n.op == OpKind::RecurrentSequence ? n.outputs[0] : n.inputs[1]).shape;  // (T, B, H)
      const double mac = static_cast<double>(hs[0] - 1) * static_cast<double>(hs[1]) * us.numel();
      const double gemms = n.op == OpKind::RecurrentSequence ? 1 : (present(1) ? 2 : 1);
      return 2 * mac * gemms + numel(n.outputs[0]);  // + the cell math, one per output
    }
    default: {
      double out = 0;
      for (ValueId v : n.outputs) out += numel(v);
      return out;
    }
  }
}

// The GPUs of the estimate. Peaks from NVIDIA's data sheets (dense, no sparsity): H100 SXM5 80 GB
// ("NVIDIA H100 Tensor Core GPU" datasheet: 3.35 TB/s HBM3, FP32 67 TFLOPS, BF16/FP16 Tensor Core
// 989 TFLOPS); A100 SXM 80 GB ("NVIDIA A100 Tensor Core GPU" datasheet: 2,039 GB/s HBM2e, FP32 19.5
// TFLOPS, BF16/FP16 Tensor Core 312 TFLOPS); TF32 Tensor Core: H100 SXM 494.7, A100 156 TFLOPS dense
// (the datasheets' 989 / 312 are with sparsity). fp32 GEMMs and convolutions run without TF32 by
// default (CompileOptions::precision f32), so their peak is the FP32 (non-tensor) one; a second line
// gives the estimate with precision tf32. f16/bf16 ones use the tensor-core peak.
struct GpuPeaks {
  const char* name;
  double bandwidth;   // bytes/s
  double fp32_flops;  // FLOP/s, CUDA cores
  double tf32_flops;  // FLOP/s, TF32 tensor cores (dense)
  double tensor_16;   // FLOP/s, f16/bf16 tensor cores (dense)
};
constexpr GpuPeaks kGpus[] = {{"H100 SXM", 3.35e12, 67e12, 494.7e12, 989e12},
                              {"A100 SXM", 2.0e12, 19.5e12, 156e12, 312e12}};
// Cost of each kernel or library call inside a replayed CUDA graph: dependent nodes start one after
// another, and a small grid's launch, ramp-up and drain are not hidden. An assumed figure, in the
// range NVIDIA's CUDA Graphs posts give for back-to-back short kernels (~1-3 us); not measured here.
constexpr double kNodeLaunchSeconds = 2.0e-6;
constexpr int64_t kEpochRows = 60000;  // MNIST training set

void roofline(const cudl::graph::Executor& exec, int64_t batch_rows, uint64_t launches) {
  const cudl::graph::Graph& g = exec.graph();
  std::printf("\nroofline step-time estimate (estimate, not measured on a GPU):\n");
  std::printf("  per node max(bytes / HBM bandwidth, flops / peak for the node's precision), summed, plus %.1f us per\n"
              "  kernel or library call of the step (%llu, counted above) for launch inside a CUDA graph\n",
              kNodeLaunchSeconds * 1e6, static_cast<unsigned long long>(launches));
  std::printf("  assumptions: every byte of the node table moves through HBM once at full bandwidth (no cache\n"
              "  reuse, no occupancy or tail effects); fp32 GEMM/conv at the FP32 CUDA-core peak (TF32 off),\n"
              "  f16/bf16 at the dense tensor-core peak; other nodes at 1 flop per output element.\n");
  for (const GpuPeaks& gpu : kGpus)
    for (const bool tf32 : {false, true}) {
      double mem_s = 0, flop_s = 0, node_s = 0, total_flops = 0, total_bytes = 0;
      int mem_bound = 0, compute_bound = 0;
      for (const auto& n : g.nodes()) {
        if (n.is_view()) continue;
        const NodeBytes b = node_bytes(g, n);
        const double bytes = b.read + b.written, flops = node_flops(g, n);
        const ValueId first = n.inputs.empty() ? kNone : n.inputs[0];
        const bool gemm = n.op == OpKind::Linear || n.op == OpKind::LinearBackward || n.op == OpKind::Matmul ||
                          n.op == OpKind::Conv2d || n.op == OpKind::Conv2dBackwardData ||
                          n.op == OpKind::Conv2dBackwardFilter || n.op == OpKind::RecurrentSequence ||
                          n.op == OpKind::RecurrentSequenceBackward;
        const bool half = gemm && first != kNone && g.value(first).dtype != cudl::DType::f32;
        const double peak = half ? gpu.tensor_16 : gemm && tf32 ? gpu.tf32_flops : gpu.fp32_flops;
        const double t_mem = bytes / gpu.bandwidth, t_flop = flops / peak;
        mem_s += t_mem;
        flop_s += t_flop;
        node_s += std::max(t_mem, t_flop);
        (t_mem >= t_flop ? mem_bound : compute_bound)++;
        total_flops += flops;
        total_bytes += bytes;
      }
      const double launch_s = static_cast<double>(launches) * kNodeLaunchSeconds;
      const double step_s = node_s + launch_s;
      const int64_t steps = (kEpochRows + batch_rows - 1) / batch_rows;
      if (tf32) {
        std::printf("  %-9s with precision tf32 (GEMM/conv at %.1f TFLOP/s): nodes %.1f us (%d memory-bound, %d "
                    "compute-bound) + launches %.1f us = step %.1f us; epoch %.1f ms\n",
                    gpu.name, gpu.tf32_flops / 1e12, node_s * 1e6, mem_bound, compute_bound, launch_s * 1e6,
                    step_s * 1e6, step_s * 1e3 * static_cast<double>(steps));
        continue;
      }
      std::printf("  %-9s %5.2f TB/s %5.1f TFLOP/s fp32: %.3g GFLOP, %s per step; nodes %.1f us (%d memory-bound, "
                  "%d compute-bound; all-memory %.1f us, all-compute %.1f us) + launches %.1f us = step %.1f us; "
                  "epoch of %lld rows (%lld steps) %.1f ms\n",
                  gpu.name, gpu.bandwidth / 1e12, gpu.fp32_flops / 1e12, total_flops / 1e9, human(total_bytes).c_str(),
                  node_s * 1e6, mem_bound, compute_bound, mem_s * 1e6, flop_s * 1e6, launch_s * 1e6, step_s * 1e6,
                  static_cast<long long>(kEpochRows), static_cast<long long>(steps), step_s * 1e3 * static_cast<double>(steps));
    }
}

bool starts_with(const std::string& s, const char* p) { return s.rfind(p, 0) == 0; }

void byte_table(const cudl::graph::Executor& exec, int64_t batch_rows, double raw_row_bytes) {
  const cudl::graph::Graph& g = exec.graph();
  std::printf("\nbytes per node (from the node's tensor sizes) of the model's training step:\n");
  std::printf("  %-34s %-22s %12s %12s\n", "node", "op", "read", "written");
  double rd = 0, wr = 0;
  for (const auto& n : g.nodes()) {
    if (n.is_view()) continue;
    const NodeBytes b = node_bytes(g, n);
    rd += b.read;
    wr += b.written;
    std::printf("  %-34s %-22s %12s %12s\n", n.label.c_str(), cudl::op_name(n.op), human(b.read).c_str(),
                human(b.written).c_str());
  }
  std::printf("  %-34s %-22s %12s %12s   total %s\n", "total", "", human(rd).c_str(), human(wr).c_str(),
              human(rd + wr).c_str());
  // The minimum: parameters, gradients and optimizer/BN state read once and written once;
  // forward activations written once and read once; the batch's raw images and labels read once.
  double params = 0, grads = 0, state = 0, acts = 0;
  const auto& vals = g.values();
  for (ValueId v = 0; v < static_cast<ValueId>(vals.size()); ++v) {
    const auto& val = vals[v];
    if (val.view_of != kNone) continue;
    const double nbytes = static_cast<double>(val.nbytes());
    if (val.role == Role::Param)
      params += nbytes;
    else if (val.role == Role::Grad)
      grads += nbytes;
    else if (val.role == Role::State && !starts_with(val.name, "data.") && !starts_with(val.name, "metric.") &&
             val.name != "optim.hyper" && val.name != "rng")
      state += nbytes;
  }
  std::set<ValueId> fwd_out;
  for (const auto& n : g.nodes())
    if (!n.is_view() && n.phase == cudl::graph::Phase::Forward)
      for (ValueId v : n.outputs)
        if (v != kNone && vals[v].role == Role::Intermediate) fwd_out.insert(v);
  for (ValueId v : fwd_out) acts += static_cast<double>(vals[v].nbytes());
  const double batch = static_cast<double>(batch_rows);
  const double raw = batch * raw_row_bytes;  // the batch's rows of x and y as stored
  const double minimum = 2 * params + 2 * grads + 2 * state + 2 * acts + raw;
  std::printf(
      "minimum a step must move: parameters %s x2 + gradients %s x2 + optimizer/BN state %s x2 + forward "
      "activations %s x2 + raw batch %s = %s\n",
      human(params).c_str(), human(grads).c_str(), human(state).c_str(), human(acts).c_str(), human(raw).c_str(),
      human(minimum).c_str());
  std::printf("bytes moved / minimum: %s / %s = %.2fx\n", human(rd + wr).c_str(), human(minimum).c_str(),
              (rd + wr) / minimum);
}

/// The model a sample trains, compiled as the sample compiles it, and data of its shape.
struct Subject {
  cudl::Model model;
  cudl::Dataset data;
};

Subject subject(const std::string& kind, const cudl::Device dev, int64_t rows, cudl::Precision precision,
                bool propagate_nan, bool fused_copies) {
  if (kind == "charlm" || kind == "encoder") {  // cudl-charlm: AdamW 3e-3 (wd 0.01), windows of random tokens
    charlm::Config config;
    config.causal = kind == "charlm";  // encoder: the same Transformer without the causal mask
    cudl::Model model = charlm::build(config);
    cudl::CompileOptions opt;
    opt.optimizer = cudl::optim::AdamW(3e-3, 0.01);
    opt.loss = "sparse_categorical_crossentropy";
    opt.device = dev;
    opt.seed = 1;
    opt.precision = precision;
    opt.propagate_nan = propagate_nan;
    cudl::detail::ModelInternals::set_fused_weight_copies(model, fused_copies);
    model.compile(opt);
    std::vector<int32_t> stream(static_cast<size_t>(rows * 16 + 1));
    charlm::SplitMix64 rng(1);
    for (int32_t& t : stream) t = static_cast<int32_t>(rng.next() % charlm::kVocab);
    return {std::move(model), charlm::windows(stream, 16)};
  }
  cudl::Sequential model = kind == "embed" ? cudl_bench::build_token_model() : cudl_bench::build_mnist_model(kind);
  cudl::CompileOptions opt;
  opt.optimizer = cudl::optim::Adam(1e-3);
  opt.loss = "sparse_categorical_crossentropy";
  opt.metrics = {"accuracy"};
  opt.device = dev;
  opt.seed = 1;
  opt.precision = precision;
  opt.propagate_nan = propagate_nan;
  cudl::detail::ModelInternals::set_fused_weight_copies(model, fused_copies);
  model.compile(opt);
  return {std::move(model), kind == "embed" ? cudl_bench::synthetic_tokens(rows) : cudl_bench::synthetic_mnist(rows)};
}

int run_model(const std::string& kind, const Args& args) {
  Args a = args;
  if (a.batch == 0) a.batch = kind == "charlm" || kind == "encoder" ? 64 : 128;
  const cudl::Device dev = cudl::Device::cuda(0);
  const char* env = std::getenv("CUDL_CUDA_GRAPHS");
  const bool graphs = !(env && std::strcmp(env, "0") == 0);
  Subject sub = subject(kind, dev, a.batch * (a.warmup + 2), a.precision, a.propagate_nan, a.fused_copies);
  cudl::Model& model = sub.model;
  const cudl::Dataset& data = sub.data;
  const int plan_kernels = model.plan_report().kernels_per_step;

  auto window = std::make_shared<CounterWindow>(a.warmup);
  cudl::FitOptions fo;
  fo.epochs = 1;
  fo.batch_size = a.batch;
  fo.verbose = 0;
  fo.callbacks = {window};
  model.fit(data, fo);
  if (!window->done) {
    std::fprintf(stderr, "bench_step_counters: the counter window did not close (steps %lld)\n",
                 static_cast<long long>(model.step()));
    return 1;
  }
  const cudl_emu::Counters& c = window->counters;
  const uint64_t kernels = c.kernel_launches + c.library_calls;
  const uint64_t hd_bytes = c.bytes_h2d + c.bytes_d2h;
  std::printf(
      "\n== %s: one training step (batch %lld) after %d warm-up steps, Model::fit on cuda:0 under the "
      "emulator, CUDA graphs %s\n",
      kind.c_str(), static_cast<long long>(a.batch), a.warmup, graphs ? "on" : "off (CUDL_CUDA_GRAPHS=0)");
  std::printf("  %-44s %10llu\n", "graph nodes (plan's kernels per step)",
              static_cast<unsigned long long>(plan_kernels));
  std::printf("  %-44s %10llu\n", "kernel launches (grids run)", static_cast<unsigned long long>(c.kernel_launches));
  std::printf("  %-44s %10llu\n", "library calls (cuBLAS/cuBLASLt/cuDNN)",
              static_cast<unsigned long long>(c.library_calls));
  std::printf("  %-44s %10llu   target <= 8 (mlp): %s\n", "kernels + library calls",
              static_cast<unsigned long long>(kernels), kind == "mlp" ? verdict(kernels <= 8) : "n/a");
  std::printf("  %-44s %10llu   target 1: %s\n", "graph launches", static_cast<unsigned long long>(c.graph_launches),
              verdict(c.graph_launches == 1));
  std::printf("  %-44s %10llu   target 0: %s\n", "device allocations (cudaMalloc/Async)",
              static_cast<unsigned long long>(c.mallocs), verdict(c.mallocs == 0));
  std::printf("  %-44s %10llu   target 0: %s\n", "pool allocations (cudl caching pool)",
              static_cast<unsigned long long>(window->pool_allocs), verdict(window->pool_allocs == 0));
  std::printf("  %-44s %10llu   target 0: %s\n", "pinned host allocations",
              static_cast<unsigned long long>(c.host_mallocs), verdict(c.host_mallocs == 0));
  std::printf("  %-44s %10llu   target 0: %s\n", "host synchronisations", static_cast<unsigned long long>(c.syncs),
              verdict(c.syncs == 0));
  std::printf("  %-44s %10llu   target 0: %s\n", "host<->device bytes", static_cast<unsigned long long>(hd_bytes),
              verdict(hd_bytes == 0));
  std::printf("  %-44s %10llu / %llu\n", "host->device / device->host copies",
              static_cast<unsigned long long>(c.memcpy_h2d), static_cast<unsigned long long>(c.memcpy_d2h));
  std::printf("  %-44s %10llu (%s)\n", "device->device copies (bytes)", static_cast<unsigned long long>(c.memcpy_d2d),
              human(static_cast<double>(c.bytes_d2d)).c_str());
  std::printf("  %-44s %10llu\n", "memsets", static_cast<unsigned long long>(c.memsets));
  std::printf("  %-44s %10llu\n", "emulated GPU threads run", static_cast<unsigned long long>(c.threads));

  // The byte table walks the same training program fit() ran (built again on its own executor).
  cudl::graph::ExecutorOptions eo;
  eo.cuda_graphs = graphs;
  auto step = cudl_bench::training_step(model, data, a.batch, eo);
  const double row_bytes = static_cast<double>(data.x.numel() * cudl::dtype_size(data.x.dtype()) +
                                              data.y.numel() * cudl::dtype_size(data.y.dtype())) /
                           static_cast<double>(data.size());
  byte_table(*step, a.batch, row_bytes);
  const cudl::PlanReport& report = model.plan_report();  // the program fit ran
  if (a.precision == cudl::Precision::bf16 || a.precision == cudl::Precision::f16)
    std::printf("16-bit weight copies (%s): %s persistent, written by the optimizer step; %s made in the step "
                "(arena, weights' copies and 16-bit weight gradients)\n",
                a.fused_copies ? "fused into the optimizer step" : "cast at each step's start",
                human(static_cast<double>(report.persistent_copy_bytes)).c_str(),
                human(static_cast<double>(report.weight_copy_bytes)).c_str());
  roofline(*step, a.batch, kernels);
  return 0;
}

// One GAN iteration: the counters of each of its three train_on_batch calls after `warmup`
// iterations (the second run of each program captures it; later runs replay).
int run_dcgan(const Args& a) {
  const cudl::Device dev = cudl::Device::cuda(0);
  const int64_t B = a.batch > 0 ? a.batch : 64;
  dcgan::Gan gan(dcgan::Sizes{}, 2e-4, dev, 1, a.precision);
  const cudl::Tensor x = cudl::Tensor::zeros(cudl::Shape{B, 1, 28, 28}, cudl::DType::f32, dev);
  std::vector<float> dy(static_cast<size_t>(2 * B), 0.f);
  for (int64_t r = 0; r < B; ++r) dy[2 * r] = 0.9f;
  const cudl::Tensor d_targets = cudl::Tensor::from_vector(dy, cudl::Shape{B, 2}).to(dev);
  const cudl::Tensor zeros = cudl::Tensor::zeros(cudl::Shape{B, 1}, cudl::DType::f32, dev);
  const cudl::Tensor ones = cudl::Tensor::full(cudl::Shape{B, 1}, 1.0, cudl::DType::f32, dev);
  struct Step {
    const char* name;
    cudl::Model* model;
    const cudl::Tensor *x, *y;
  };
  const Step steps[] = {{"D on real + generated (G frozen)", gan.disc.get(), &x, &d_targets},
                        {"G through D (D frozen)", gan.combined.get(), &zeros, &ones}};
  for (int i = 0; i < a.warmup; ++i)
    for (const Step& s : steps) s.model->train_on_batch(*s.x, *s.y, false);
  std::printf("\n== dcgan: one GAN iteration (batch %lld, G width 32, D width 64, %s) after %d warm-up iterations, train_on_batch on "
              "cuda:0 under the emulator\n",
              static_cast<long long>(B), cudl::precision_name(a.precision), a.warmup);
  std::printf("  %-34s %8s %8s %8s %8s %8s %8s %8s %12s\n", "step", "graphs", "kernels", "library", "mallocs", "syncs",
              "h2d", "d2h", "d2d (bytes)");
  for (const Step& s : steps) {
    (void)cudl_emu::flush_all();
    cudl_emu::reset_counters();
    s.model->train_on_batch(*s.x, *s.y, false);
    (void)cudl_emu::flush_all();
    const cudl_emu::Counters c = cudl_emu::counters();
    std::printf("  %-34s %8llu %8llu %8llu %8llu %8llu %8llu %8llu %4llu (%s)\n", s.name,
                static_cast<unsigned long long>(c.graph_launches), static_cast<unsigned long long>(c.kernel_launches),
                static_cast<unsigned long long>(c.library_calls), static_cast<unsigned long long>(c.mallocs),
                static_cast<unsigned long long>(c.syncs), static_cast<unsigned long long>(c.memcpy_h2d),
                static_cast<unsigned long long>(c.memcpy_d2h), static_cast<unsigned long long>(c.memcpy_d2d),
                human(static_cast<double>(c.bytes_d2d)).c_str());
  }
  (void)cudl_emu::flush_all();
  cudl_emu::reset_counters();
  (void)gan.combined->last_batch_logs();
  std::printf("  reading the G loss afterwards: %llu device->host copies, %llu synchronisations\n",
              static_cast<unsigned long long>(cudl_emu::counters().memcpy_d2h),
              static_cast<unsigned long long>(cudl_emu::counters().syncs));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: bench_step_counters [--model mlp|cnn|embed|charlm|encoder|seq_lstm|seq_gru|dcgan|all] "
                   "[--batch B] [--warmup W] [--precision f32|tf32|bf16|f16] [--propagate-nan 0|1] "
                   "[--weight-copies fused|cast]\n");
      return 2;
    }
    const std::string v = argv[++i];
    if (k == "--model")
      a.model = v;
    else if (k == "--batch")
      a.batch = std::atoll(v.c_str());
    else if (k == "--warmup")
      a.warmup = std::atoi(v.c_str());
    else if (k == "--precision")
      a.precision = cudl::parse_precision(v);
    else if (k == "--propagate-nan") {
      if (v != "0" && v != "1") {
        std::fprintf(stderr, "bench_step_counters: --propagate-nan takes 0 or 1, got '%s'\n", v.c_str());
        return 2;
      }
      a.propagate_nan = v == "1";
    } else if (k == "--weight-copies" && (v == "fused" || v == "cast")) {
      a.fused_copies = v == "fused";
    } else {
      std::fprintf(stderr, "bench_step_counters: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  const std::set<std::string> models{"mlp", "cnn", "embed", "charlm", "encoder", "seq_lstm", "seq_gru", "dcgan", "all"};
  if (!models.count(a.model) || a.batch < 0 || a.warmup < 2) {
    std::fprintf(stderr,
                 "bench_step_counters: --model mlp|cnn|embed|charlm|encoder|seq_lstm|seq_gru|dcgan|all, --batch >= 1, "
                 "--warmup >= 2 (the first run is eager, "
                 "the second captures)\n");
    return 2;
  }
  try {
    if (cudl::cuda_device_count() == 0) {
      std::fprintf(stderr, "bench_step_counters: no CUDA device: %s\n", cudl::cuda_unavailable_reason().c_str());
      return 1;
    }
    int rc = 0;
    for (const char* kind : {"mlp", "cnn", "embed", "charlm", "encoder", "seq_lstm", "seq_gru"})
      if (a.model == kind ||
          (a.model == "all" && std::strcmp(kind, "seq_gru") != 0 && std::strcmp(kind, "encoder") != 0))
        rc |= run_model(kind, a);
    if (a.model == "dcgan") rc |= run_dcgan(a);  // not in "all": its emulated convolutions take minutes
    return rc;
  } catch (const cudl::Error& e) {
    std::fprintf(stderr, "bench_step_counters: %s\n", e.what());
    return 1;
  }
}
