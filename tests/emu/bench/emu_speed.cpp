// tests/emu/bench/emu_speed.cpp — emulator speed: emulated GPU threads per second for a
// barrier-free kernel, barrier crossings per second for a barrier-heavy kernel, launch overhead.
#include <time.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "emu/emu.hpp"
#include "kernels/launch.cuh"

namespace {

__global__ void saxpy_kernel(float* __restrict__ y, const float* __restrict__ x, float a, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

// Every thread crosses `rounds` barriers; shared-memory neighbour exchange between them.
__global__ void barrier_kernel(float* __restrict__ out, int rounds) {
  __shared__ float s[1024];
  const unsigned t = threadIdx.x;
  float v = (float)t;
  for (int r = 0; r < rounds; ++r) {
    s[t] = v;
    __syncthreads();
    v = 0.5f * (v + s[(t + 1) % blockDim.x]);
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + t] = v;
}

__global__ void shuffle_kernel(float* __restrict__ out, int rounds) {
  float v = (float)threadIdx.x;
  for (int r = 0; r < rounds; ++r)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

__global__ void empty_kernel() {}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// CPU time of this process: on a shared machine the rate per CPU-second is the stable figure.
double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Timer {
  double wall = now(), cpu = cpu_now();
  // Prints `count` per second of wall time and per CPU-second, in millions.
  void report(const char* label, double count) const {
    const double w = now() - wall, c = cpu_now() - cpu;
    std::printf("%-46s %8.2f M/s wall   %8.2f M/s per CPU-second\n", label, count / w / 1e6, count / c / 1e6);
  }
};

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const double scale = argc > 1 ? std::atof(argv[1]) : 1.0;
  cudaStream_t s;
  check(cudaStreamCreate(&s), "cudaStreamCreate");
  const cudl_emu::Schedule sc = cudl_emu::schedule();
  std::printf("schedule: %s\n", sc.kind == cudl_emu::Schedule::Forward   ? "forward"
                                : sc.kind == cudl_emu::Schedule::Reverse ? "reverse"
                                                                         : "shuffle");

  // 1. Barrier-free: saxpy over n elements, one thread each.
  const int n = (int)(4 << 20) * scale;
  float *x, *y;
  check(cudaMalloc(&x, n * sizeof(float)), "cudaMalloc");
  check(cudaMalloc(&y, n * sizeof(float)), "cudaMalloc");
  check(cudaMemset(x, 0, n * sizeof(float)), "cudaMemset");
  check(cudaMemset(y, 0, n * sizeof(float)), "cudaMemset");
  for (int block : {256, 32}) {
    CUDL_LAUNCH(saxpy_kernel, (n + block - 1) / block, block, 0, s)(y, x, 2.0f, n);  // warm-up
    check(cudaStreamSynchronize(s), "saxpy");
    Timer t;
    const int reps = 3;
    for (int r = 0; r < reps; ++r) CUDL_LAUNCH(saxpy_kernel, (n + block - 1) / block, block, 0, s)(y, x, 2.0f, n);
    check(cudaStreamSynchronize(s), "saxpy");
    char label[96];
    std::snprintf(label, sizeof label, "barrier-free threads (block %d):", block);
    t.report(label, reps * (double)n);
  }

  // 2. Barrier-heavy: each thread crosses 2*rounds barriers.
  for (int block : {256, 1024, 32}) {
    const int blocks = (int)(64 * scale) + 1, rounds = 32;
    float* out;
    check(cudaMalloc(&out, (size_t)blocks * block * sizeof(float)), "cudaMalloc");
    cudl_emu::reset_counters();
    Timer t;
    CUDL_LAUNCH(barrier_kernel, blocks, block, 0, s)(out, rounds);
    check(cudaStreamSynchronize(s), "barrier_kernel");
    char label[96];
    std::snprintf(label, sizeof label, "barrier crossings by threads (block %d):", block);
    t.report(label, (double)blocks * block * 2 * rounds);
    std::snprintf(label, sizeof label, "  block-wide barriers (block %d):", block);
    t.report(label, (double)cudl_emu::counters().barriers);
    check(cudaFree(out), "cudaFree");
  }

  // 3. Warp shuffles: 5 rendezvous per round per warp.
  {
    const int blocks = (int)(64 * scale) + 1, block = 256, rounds = 16;
    float* out;
    check(cudaMalloc(&out, (size_t)blocks * block * sizeof(float)), "cudaMalloc");
    Timer t;
    CUDL_LAUNCH(shuffle_kernel, blocks, block, 0, s)(out, rounds);
    check(cudaStreamSynchronize(s), "shuffle_kernel");
    t.report("warp shuffles (per thread):", (double)blocks * block * rounds * 5);
    check(cudaFree(out), "cudaFree");
  }

  // 4. Launch overhead: empty 1-thread kernels, launched and synchronised in batches.
  {
    const int launches = (int)(20000 * scale) + 1;
    const double w0 = now(), c0 = cpu_now();
    for (int i = 0; i < launches; ++i) CUDL_LAUNCH(empty_kernel, 1, 1, 0, s)();
    check(cudaStreamSynchronize(s), "empty_kernel");
    std::printf("%-46s %8.2f us wall     %8.2f us CPU (enqueue + run of a 1-thread grid)\n",
                "launch overhead:", (now() - w0) / launches * 1e6, (cpu_now() - c0) / launches * 1e6);
  }
  check(cudaFree(x), "cudaFree");
  check(cudaFree(y), "cudaFree");
  check(cudaStreamDestroy(s), "cudaStreamDestroy");
  return 0;
}
