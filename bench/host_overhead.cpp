// bench/host_overhead.cpp — the executor's own per-node dispatch cost: the sample's mlp and cnn
// training steps on the CPU backend, run for real at batch 1 and with ExecutorOptions::dry_run.
//
// dry_run does everything a step does on the host (walk the node list, build each OpCall, look the
// op up in the table, NVTX range) except calling the op, so it isolates the executor's dispatch
// cost: the figure that bounds small-model GPU speed when CUDA graphs are off (on a GPU each node
// additionally pays its launcher's host work and cudaLaunchKernel, which this does not measure).
// Usage: bench_host_overhead [steps (default 20000)]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "train_graph.hpp"

namespace {

struct Timing {
  double us_per_step = 0;
  int nodes = 0;
};

// Median over 5 repetitions of `steps` runs.
Timing time_steps(cudl::graph::Executor& e, int steps) {
  for (int i = 0; i < std::min(steps, 100); ++i) e.run();  // warm-up
  std::vector<double> reps;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) e.run();
    e.synchronize();
    reps.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / steps);
  }
  std::sort(reps.begin(), reps.end());
  return {reps[reps.size() / 2], e.kernels_per_run()};
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 20000;
  if (steps <= 0) {
    std::fprintf(stderr, "usage: bench_host_overhead [steps > 0]\n");
    return 2;
  }
  try {
    const cudl::Device cpu = cudl::Device::cpu();
    const cudl::Dataset data = cudl_bench::synthetic_mnist(1024);
    std::printf("executor dispatch cost on the CPU backend (median of 5 x %d steps)\n", steps);
    std::printf("%-5s %6s %5s %14s %12s %18s %14s\n", "model", "batch", "nodes", "real us/step", "real us/node",
                "dry-run us/step", "dry us/node");
    for (const char* kind : {"mlp", "cnn"}) {
      const int64_t batch = 1;
      cudl::Sequential model = cudl_bench::build_mnist_model(kind);
      cudl_bench::compile_like_sample(model, cpu, batch);
      cudl::graph::ExecutorOptions real_opt, dry_opt;
      dry_opt.dry_run = true;
      auto real = cudl_bench::training_step(model, data, batch, real_opt);
      auto dry = cudl_bench::training_step(model, data, batch, dry_opt);
      const int real_steps = std::string(kind) == "cnn" ? std::max(1, steps / 20) : std::max(1, steps / 4);
      const Timing r = time_steps(*real, real_steps);
      const Timing d = time_steps(*dry, steps);
      std::printf("%-5s %6lld %5d %14.2f %12.3f %18.3f %14.4f\n", kind, static_cast<long long>(batch), r.nodes,
                  r.us_per_step, r.us_per_step / r.nodes, d.us_per_step, d.us_per_step / d.nodes);
    }
    std::printf(
        "dry run: no op is called; the time is the executor's node loop (OpCall build, table lookup, "
        "NVTX range) per step and per node.\n");
    return 0;
  } catch (const cudl::Error& e) {
    std::fprintf(stderr, "bench_host_overhead: %s\n", e.what());
    return 1;
  }
}
