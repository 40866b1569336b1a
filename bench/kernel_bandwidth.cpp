// bench/kernel_bandwidth.cpp — achieved memory bandwidth of cudl's elementwise, softmax, loss and
// optimizer kernels (their launchers called directly) against the device's peak, and µs per launch.
//
// Usage: bench_kernel_bandwidth [--smoke]
// Peak = 2 (DDR) x memory clock x bus width, from cudaDeviceGetAttribute. Large tensors report
// GB/s and % of peak (issue 4's target: >= 90%); small ones report µs per launch (1000 back-to-back
// launches on one stream, so it is launch throughput, not latency). Times from CUDA events.
// Without a CUDA device it exits 1 with "no CUDA device: ...". Built against the emulator
// (bench_kernel_bandwidth_emu) it only checks that every launcher runs (--smoke sizes) and its
// figures mean nothing.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/op.hpp"
#include "kernels/elementwise.cuh"
#include "kernels/loss.cuh"
#include "kernels/optim.cuh"
#include "kernels/softmax.cuh"

namespace {

#define BENCH_CUDA(expr)                                                                              \
  do {                                                                                                \
    cudaError_t e_ = (expr);                                                                          \
    if (e_ != cudaSuccess) {                                                                          \
      std::fprintf(stderr, "bench_kernel_bandwidth: %s failed: %s\n", #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                                   \
    }                                                                                                 \
  } while (0)

struct DeviceBuffer {
  explicit DeviceBuffer(size_t bytes) : bytes(bytes) {
    BENCH_CUDA(cudaMalloc(&p, bytes));
    BENCH_CUDA(cudaMemset(p, 0, bytes));
  }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
  void* p = nullptr;
  size_t bytes;
};

// Small values (not zeros, so exp/log/sqrt paths see ordinary numbers): x = 0.01 * (i % 100 - 50).
void fill_pattern(const DeviceBuffer& b) {
  std::vector<float> h(b.bytes / sizeof(float));
  for (size_t i = 0; i < h.size(); ++i) h[i] = 0.01f * static_cast<float>(static_cast<int>(i % 100) - 50);
  BENCH_CUDA(cudaMemcpy(b.p, h.data(), b.bytes, cudaMemcpyHostToDevice));
}

struct Bench {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  double peak_gbs = 0;
  bool smoke = false;

  // Mean ms per call of `fn` over `iters` calls after `warm` warm-up calls.
  double time_ms(const std::function<void()>& fn, int warm, int iters) {
    for (int i = 0; i < warm; ++i) fn();
    BENCH_CUDA(cudaEventRecord(start, stream));
    for (int i = 0; i < iters; ++i) fn();
    BENCH_CUDA(cudaEventRecord(stop, stream));
    BENCH_CUDA(cudaEventSynchronize(stop));
    BENCH_CUDA(cudaGetLastError());
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start, stop));
    return ms / iters;
  }

  void large(const char* name, const std::string& shape, double bytes, const std::function<void()>& fn) {
    const double ms = time_ms(fn, smoke ? 1 : 3, smoke ? 1 : 20);
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    std::printf("  %-34s %-22s %10.1f MB %10.3f ms %9.1f GB/s %6.1f%% of peak\n", name, shape.c_str(), bytes / 1e6, ms,
                gbs, 100.0 * gbs / peak_gbs);
  }

  void small(const char* name, const std::string& shape, const std::function<void()>& fn) {
    const double ms = time_ms(fn, smoke ? 1 : 100, smoke ? 2 : 1000);
    std::printf("  %-34s %-22s %10.2f us per launch\n", name, shape.c_str(), ms * 1e3);
  }
};

std::string shape_str(std::initializer_list<int64_t> d) {
  std::string s = "(";
  for (int64_t v : d) s += std::to_string(v) + ",";
  s.back() = ')';
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  Bench b;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0)
      b.smoke = true;
    else {
      std::fprintf(stderr, "usage: bench_kernel_bandwidth [--smoke]\n");
      return 2;
    }
  }
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::fprintf(stderr, "bench_kernel_bandwidth: no CUDA device: %s\n",
                 e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount reports 0 devices");
    return 1;
  }
  BENCH_CUDA(cudaSetDevice(0));
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, 0));
  int mem_khz = 0, bus_bits = 0;
  BENCH_CUDA(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0));
  BENCH_CUDA(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0));
  b.peak_gbs = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9;
#if defined(CUDL_EMULATED)
  std::printf("EMULATED device (tests/emu): these figures are NOT GPU figures; this run only checks the launchers.\n");
  b.smoke = true;
#endif
  std::printf("device: %s (cc %d.%d), memory clock %d MHz, bus %d bits, peak %.0f GB/s%s\n", prop.name, prop.major,
              prop.minor, mem_khz / 1000, bus_bits, b.peak_gbs, b.smoke ? " [smoke sizes]" : "");
  BENCH_CUDA(cudaStreamCreateWithFlags(&b.stream, cudaStreamNonBlocking));
  BENCH_CUDA(cudaEventCreate(&b.start));
  BENCH_CUDA(cudaEventCreate(&b.stop));
  cudaStream_t s = b.stream;
  namespace k = cudl::kernels;
  const int relu = static_cast<int>(cudl::UnaryOp::Relu), gelu = static_cast<int>(cudl::UnaryOp::GeluTanh);
  const int add = static_cast<int>(cudl::BinaryOp::Add), mul = static_cast<int>(cudl::BinaryOp::Mul);

  // --- large tensors: bandwidth ----------------------------------------------------------------
  const int64_t n = b.smoke ? 4099 : (int64_t{1} << 26);  // 64M floats = 256 MB per tensor
  const int64_t cols = 1024, rows = n / cols;
  {
    DeviceBuffer x(n * 4), y(n * 4), z(n * 4), w(n * 4), u(n * 4), row(cols * 4);
    fill_pattern(x);
    fill_pattern(y);
    fill_pattern(row);
    std::printf("large tensors (GB/s counts each tensor read or written once):\n");
    const std::string sn = shape_str({n});
    b.large("unary relu", sn, 8.0 * n, [&] { k::unary_cuda(relu, 0.f, x.as<float>(), z.as<float>(), n, s); });
    b.large("unary gelu(tanh)", sn, 8.0 * n, [&] { k::unary_cuda(gelu, 0.f, x.as<float>(), z.as<float>(), n, s); });
    b.large("unary relu backward", sn, 12.0 * n, [&] {
      k::unary_backward_cuda<float>(relu, 0.f, nullptr, x.as<float>(), y.as<float>(), z.as<float>(), n, s);
    });
    b.large("binary add", sn, 12.0 * n,
            [&] { k::binary_cuda(add, x.as<float>(), y.as<float>(), z.as<float>(), n, nullptr, s); });
    k::BroadcastStrides bs{};
    bs.rank = 2;
    bs.dims[0] = rows;
    bs.dims[1] = cols;
    bs.a_stride[0] = cols;
    bs.a_stride[1] = 1;
    bs.b_stride[0] = 0;
    bs.b_stride[1] = 1;
    b.large("binary add, row broadcast", shape_str({rows, cols}) + "+(1024)", 8.0 * rows * cols + 4.0 * cols,
            [&] { k::binary_cuda(add, x.as<float>(), row.as<float>(), z.as<float>(), rows * cols, &bs, s); });
    b.large("binary mul backward (da, db)", sn, 20.0 * n, [&] {
      k::binary_backward_same_cuda(mul, x.as<float>(), y.as<float>(), z.as<float>(), w.as<float>(), u.as<float>(), n,
                                   s);
    });
    // bf16 storage (fp32 math): half the bytes per element, 16-byte accesses of 8 values.
    using bf16 = __nv_bfloat16;
    b.large("unary gelu(tanh) bf16", sn, 4.0 * n, [&] { k::unary_cuda(gelu, 0.f, x.as<bf16>(), z.as<bf16>(), n, s); });
    b.large("binary add bf16", sn, 6.0 * n,
            [&] { k::binary_cuda(add, x.as<bf16>(), y.as<bf16>(), z.as<bf16>(), n, nullptr, s); });
    b.large("binary mul backward (da, db) bf16", sn, 10.0 * n, [&] {
      k::binary_backward_same_cuda(mul, x.as<bf16>(), y.as<bf16>(), z.as<bf16>(), w.as<bf16>(), u.as<bf16>(), n, s);
    });
    const k::Storage f32 = k::Storage::kF32, bf16s = k::Storage::kBf16;
    b.large("softmax", shape_str({rows, cols}), 8.0 * rows * cols,
            [&] { k::softmax_cuda(false, x.p, z.p, f32, rows, cols, s); });
    b.large("log-softmax", shape_str({rows, cols}), 8.0 * rows * cols,
            [&] { k::softmax_cuda(true, x.p, z.p, f32, rows, cols, s); });
    b.large("softmax backward", shape_str({rows, cols}), 12.0 * rows * cols,
            [&] { k::softmax_backward_cuda(false, x.p, y.p, z.p, f32, rows, cols, s); });
    b.large("softmax bf16", shape_str({rows, cols}), 4.0 * rows * cols,
            [&] { k::softmax_cuda(false, x.p, z.p, bf16s, rows, cols, s); });
    const int64_t srows = n / 10;
    b.large("softmax, 10 classes", shape_str({srows, 10}), 8.0 * srows * 10,
            [&] { k::softmax_cuda(false, x.p, z.p, f32, srows, 10, s); });
  }
  {
    // Adam over one large parameter and over many tensors (multi-tensor apply): p, g, m, v read;
    // p, m, v written.
    const int64_t np = b.smoke ? 5003 : (int64_t{1} << 25);  // 32M parameters
    DeviceBuffer p(np * 4), g(np * 4), m(np * 4), v(np * 4), hyper(8);
    fill_pattern(p);
    fill_pattern(g);
    const float hv[2] = {1e-3f, 1.f};
    BENCH_CUDA(cudaMemcpy(hyper.p, hv, sizeof hv, cudaMemcpyHostToDevice));
    float* ptrs[4] = {p.as<float>(), g.as<float>(), m.as<float>(), v.as<float>()};
    int64_t sizes[1] = {np};
    b.large("adam step, 1 tensor", shape_str({np}), 28.0 * np,
            [&] { k::adam_step_cuda(hyper.as<float>(), ptrs, sizes, 1, 0.9, 0.999, 1e-8, 0.f, false, false, s); });
    const int parts = 64;
    std::vector<float*> many;
    std::vector<int64_t> msizes;
    const int64_t each = np / parts;
    for (int t = 0; t < parts; ++t) {
      for (DeviceBuffer* buf : {&p, &g, &m, &v}) many.push_back(buf->as<float>() + t * each);
      msizes.push_back(each);
    }
    b.large("adam step, 64 tensors", "64x" + shape_str({each}), 28.0 * each * parts, [&] {
      k::adam_step_cuda(hyper.as<float>(), many.data(), msizes.data(), parts, 0.9, 0.999, 1e-8, 0.f, false, false, s);
    });
    // cross-entropy with fused gradient and accuracy count over (rows, 10) logits
    const int64_t crow = b.smoke ? 301 : (int64_t{1} << 21);
    DeviceBuffer logits(crow * 10 * 4), dlogits(crow * 10 * 4), labels(crow * 4), loss(4), correct(4), counter(4);
    BENCH_CUDA(cudaMemset(labels.p, 0, labels.bytes));
    BENCH_CUDA(cudaMemset(counter.p, 0, counter.bytes));  // the block counter: 0 between launches
    k::LossSink sink;
    sink.loss = loss.as<float>();
    sink.correct = correct.as<int32_t>();
    sink.counter = static_cast<unsigned int*>(counter.p);
    DeviceBuffer ws(std::max<size_t>(cudl::kernels::loss_workspace_bytes(crow, true), 16));
    fill_pattern(logits);
    b.large("cross-entropy + grad + correct", shape_str({crow, 10}), 8.0 * crow * 10 + 4.0 * crow, [&] {
      k::cross_entropy_loss_cuda(k::Storage::kF32, logits.p, labels.as<int32_t>(), crow, 10, 0.f, nullptr, true,
                                 nullptr, dlogits.p, sink, ws.p, s);
    });
  }

  // --- small tensors: µs per launch ----------------------------------------------------------------
  std::printf("small tensors (launch-bound):\n");
  {
    DeviceBuffer x(1 << 20), y(1 << 20), z(1 << 20), hyper(8);
    const float hv[2] = {1e-3f, 1.f};
    BENCH_CUDA(cudaMemcpy(hyper.p, hv, sizeof hv, cudaMemcpyHostToDevice));
    for (int64_t sn : {int64_t{1024}, int64_t{128 * 128}}) {
      b.small("unary relu", shape_str({sn}), [&] { k::unary_cuda(relu, 0.f, x.as<float>(), z.as<float>(), sn, s); });
      b.small("binary add", shape_str({sn}),
              [&] { k::binary_cuda(add, x.as<float>(), y.as<float>(), z.as<float>(), sn, nullptr, s); });
    }
    b.small("softmax", shape_str({128, 10}), [&] { k::softmax_cuda(false, x.p, z.p, k::Storage::kF32, 128, 10, s); });
    float* ptrs[4] = {x.as<float>(), y.as<float>(), z.as<float>(), z.as<float>() + 16384};
    int64_t sizes[1] = {16384};
    b.small("adam step, 1 tensor", shape_str({16384}),
            [&] { k::adam_step_cuda(hyper.as<float>(), ptrs, sizes, 1, 0.9, 0.999, 1e-8, 0.f, false, false, s); });
  }
  BENCH_CUDA(cudaStreamSynchronize(s));
  cudaEventDestroy(b.start);
  cudaEventDestroy(b.stop);
  cudaStreamDestroy(s);
  return 0;
}
