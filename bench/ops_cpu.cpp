// bench/ops_cpu.cpp — Google Benchmark throughput of the main CPU reference ops, called through
// cudl::run_op exactly as the executor calls them (validation included). Items/s and bytes/s.
//
// Run: bench_ops_cpu [--benchmark_filter=Linear] [--benchmark_min_time=0.5]
// Threads: Linear uses OpenBLAS's threads (OPENBLAS_NUM_THREADS, default nproc); the Conv2d ops
// split the batch over as many threads, each with single-threaded GEMMs; batch norm (channels) and
// 2x2 max pooling (planes) split over as many threads too; every other CPU op is single-threaded. Rates (items/s, bytes/s, GFLOP/s) are per second of the process's CPU time (all
// its threads), which a machine shared with other work disturbs far less than wall time; "Time" is
// wall time, which is what threads shorten. Add --benchmark_min_time=1 for steadier figures.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "backend/backend.hpp"
#include "cudl/tensor.hpp"

namespace {

using cudl::DType;
using cudl::OpAttrs;
using cudl::OpKind;
using cudl::Shape;
using cudl::Tensor;
using cudl::TensorView;

Tensor rand_tensor(const Shape& s, uint32_t seed, float lo = -1.f, float hi = 1.f) {
  Tensor t = Tensor::empty(s, DType::f32);
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  float* p = t.data_as<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = d(g);
  return t;
}

Tensor rand_labels(int64_t n, int classes, uint32_t seed) {
  std::vector<int32_t> v(n);
  std::mt19937 g(seed);
  for (auto& x : v) x = static_cast<int32_t>(g() % classes);
  return Tensor::from_vector(v, Shape{n});
}

TensorView V(const Tensor& t) { return TensorView::of(t); }
const TensorView kNoView{};

void set_bytes(benchmark::State& st, double bytes_per_iter, double items_per_iter) {
  st.SetBytesProcessed(static_cast<int64_t>(bytes_per_iter * st.iterations()));
  st.SetItemsProcessed(static_cast<int64_t>(items_per_iter * st.iterations()));
}
void set_flops(benchmark::State& st, double flops_per_iter) {
  st.counters["GFLOP/s"] = benchmark::Counter(flops_per_iter * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// --- Linear (the mlp's first layer: x (128, 784) · Wᵀ (784 -> 128) + b, ReLU epilogue) -----------
void BM_LinearForward(benchmark::State& st) {
  const int64_t N = st.range(0), K = st.range(1), M = st.range(2);
  Tensor x = rand_tensor(Shape{N, K}, 1), w = rand_tensor(Shape{M, K}, 2), b = rand_tensor(Shape{M}, 3);
  Tensor y = Tensor::empty(Shape{N, M});
  OpAttrs a;
  a.i[0] = static_cast<int64_t>(cudl::Epilogue::Relu);
  for (auto _ : st) cudl::run_op(OpKind::Linear, {V(x), V(w), V(b)}, {V(y), kNoView}, a);
  set_flops(st, 2.0 * N * K * M);
  set_bytes(st, 4.0 * (N * K + M * K + M + N * M), static_cast<double>(N * M));
}
BENCHMARK(BM_LinearForward)
    ->MeasureProcessCPUTime()
    ->Args({128, 784, 128})
    ->Args({128, 128, 10})
    ->Unit(benchmark::kMicrosecond);

void BM_LinearBackward(benchmark::State& st) {
  const int64_t N = st.range(0), K = st.range(1), M = st.range(2);
  Tensor x = rand_tensor(Shape{N, K}, 1), w = rand_tensor(Shape{M, K}, 2), dy = rand_tensor(Shape{N, M}, 3);
  Tensor y = rand_tensor(Shape{N, M}, 4, 0.f, 1.f);  // ReLU output: the gradient mask
  Tensor dx = Tensor::empty(Shape{N, K}), dw = Tensor::empty(Shape{M, K}), db = Tensor::empty(Shape{M});
  OpAttrs a;
  a.i[0] = static_cast<int64_t>(cudl::Epilogue::Relu);
  for (auto _ : st) cudl::run_op(OpKind::LinearBackward, {V(x), V(w), V(dy), V(y), kNoView}, {V(dx), V(dw), V(db)}, a);
  set_flops(st, 4.0 * N * K * M);  // dx = dy·W and dW = dyᵀ·x
  set_bytes(st, 4.0 * (2 * N * K + 2 * M * K + 2 * N * M + M), static_cast<double>(N * K + M * K));
}
BENCHMARK(BM_LinearBackward)
    ->MeasureProcessCPUTime()
    ->Args({128, 784, 128})
    ->Args({128, 128, 10})
    ->Unit(benchmark::kMicrosecond);

// --- softmax and cross-entropy on the logits (128, 10) --------------------------------------------
void BM_Softmax(benchmark::State& st) {
  const int64_t N = st.range(0), C = st.range(1);
  Tensor x = rand_tensor(Shape{N, C}, 1, -4, 4), y = Tensor::empty(Shape{N, C});
  for (auto _ : st) cudl::run_op(OpKind::Softmax, {V(x)}, {V(y)});
  set_bytes(st, 8.0 * N * C, static_cast<double>(N * C));
}
BENCHMARK(BM_Softmax)->MeasureProcessCPUTime()->Args({128, 10})->Args({4096, 1000})->Unit(benchmark::kMicrosecond);

void BM_CrossEntropyFused(benchmark::State& st) {  // loss + dlogits + correct count, one call
  const int64_t N = st.range(0), C = st.range(1);
  Tensor x = rand_tensor(Shape{N, C}, 1, -4, 4), labels = rand_labels(N, static_cast<int>(C), 2);
  Tensor loss = Tensor::empty(Shape{1}), dx = Tensor::empty(Shape{N, C});
  Tensor correct = Tensor::empty(Shape{1}, DType::i32);
  OpAttrs a;
  a.i[0] = static_cast<int64_t>(cudl::Reduction::Mean);
  for (auto _ : st) cudl::run_op(OpKind::CrossEntropyLoss, {V(x), V(labels), kNoView}, {V(loss), V(dx), V(correct)}, a);
  set_bytes(st, 8.0 * N * C + 4.0 * N, static_cast<double>(N * C));
}
BENCHMARK(BM_CrossEntropyFused)
    ->MeasureProcessCPUTime()
    ->Args({128, 10})
    ->Args({4096, 1000})
    ->Unit(benchmark::kMicrosecond);

// --- unary activations on 1M elements --------------------------------------------------------------
void BM_Unary(benchmark::State& st) {
  const int64_t n = st.range(1);
  const auto op = static_cast<cudl::UnaryOp>(st.range(0));
  Tensor x = rand_tensor(Shape{n}, 1, -3, 3), y = Tensor::empty(Shape{n});
  OpAttrs a;
  a.i[0] = static_cast<int64_t>(op);
  for (auto _ : st) cudl::run_op(OpKind::Unary, {V(x)}, {V(y)}, a);
  st.SetLabel(op == cudl::UnaryOp::Relu ? "relu" : op == cudl::UnaryOp::GeluErf ? "gelu(erf)" : "gelu(tanh)");
  set_bytes(st, 8.0 * n, static_cast<double>(n));
}
BENCHMARK(BM_Unary)
    ->MeasureProcessCPUTime()
    ->Args({static_cast<int64_t>(cudl::UnaryOp::Relu), 1 << 20})
    ->Args({static_cast<int64_t>(cudl::UnaryOp::GeluErf), 1 << 20})
    ->Args({static_cast<int64_t>(cudl::UnaryOp::GeluTanh), 1 << 20})
    ->Unit(benchmark::kMicrosecond);

void BM_UnaryBackward(benchmark::State& st) {
  const int64_t n = st.range(1);
  const auto op = static_cast<cudl::UnaryOp>(st.range(0));
  Tensor x = rand_tensor(Shape{n}, 1, -3, 3), y = rand_tensor(Shape{n}, 2, 0, 3), dy = rand_tensor(Shape{n}, 3);
  Tensor dx = Tensor::empty(Shape{n});
  OpAttrs a;
  a.i[0] = static_cast<int64_t>(op);
  const bool nx = cudl::unary_needs_input(op), ny = cudl::unary_needs_output(op);
  for (auto _ : st) cudl::run_op(OpKind::UnaryBackward, {nx ? V(x) : kNoView, ny ? V(y) : kNoView, V(dy)}, {V(dx)}, a);
  st.SetLabel(op == cudl::UnaryOp::Relu ? "relu" : "gelu(erf)");
  set_bytes(st, 12.0 * n, static_cast<double>(n));
}
BENCHMARK(BM_UnaryBackward)
    ->MeasureProcessCPUTime()
    ->Args({static_cast<int64_t>(cudl::UnaryOp::Relu), 1 << 20})
    ->Args({static_cast<int64_t>(cudl::UnaryOp::GeluErf), 1 << 20})
    ->Unit(benchmark::kMicrosecond);

// --- binary add: same shape, and a row vector broadcast over (1024, 1024) --------------------------
void BM_BinaryAdd(benchmark::State& st) {
  const int64_t rows = 1024, cols = 1024;
  const bool broadcast = st.range(0) != 0;
  Tensor a = rand_tensor(Shape{rows, cols}, 1);
  Tensor b = broadcast ? rand_tensor(Shape{cols}, 2) : rand_tensor(Shape{rows, cols}, 2);
  Tensor c = Tensor::empty(Shape{rows, cols});
  OpAttrs at;
  at.i[0] = static_cast<int64_t>(cudl::BinaryOp::Add);
  for (auto _ : st) cudl::run_op(OpKind::Binary, {V(a), V(b)}, {V(c)}, at);
  st.SetLabel(broadcast ? "(1024,1024)+(1024,)" : "(1024,1024)+(1024,1024)");
  set_bytes(st, 4.0 * (2 * rows * cols + b.numel()), static_cast<double>(rows * cols));
}
BENCHMARK(BM_BinaryAdd)->MeasureProcessCPUTime()->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// --- reduce sum over the last axis and over everything ----------------------------------------------
void BM_ReduceSum(benchmark::State& st) {
  const int64_t rows = 1024, cols = 1024;
  const bool all = st.range(0) != 0;
  Tensor x = rand_tensor(Shape{rows, cols}, 1);
  Tensor y = Tensor::empty(all ? Shape{1} : Shape{rows});
  OpAttrs a;
  a.i[0] = static_cast<int64_t>(cudl::ReduceOp::Sum);
  a.i[1] = all ? cudl::kReduceAllAxes : -1;
  for (auto _ : st) cudl::run_op(OpKind::Reduce, {V(x)}, {V(y), kNoView}, a);
  st.SetLabel(all ? "all axes" : "last axis");
  set_bytes(st, 4.0 * (rows * cols + y.numel()), static_cast<double>(rows * cols));
}
BENCHMARK(BM_ReduceSum)->MeasureProcessCPUTime()->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

// --- conv2d: the cnn's second convolution, x (128, 16, 14, 14), w (32, 16, 3, 3), pad 1 --------------
OpAttrs conv_attrs() {
  OpAttrs a;
  a.i[0] = a.i[1] = 1;  // stride
  a.i[2] = a.i[3] = 1;  // padding
  a.i[4] = a.i[5] = 1;  // dilation
  a.i[6] = 1;           // groups
  a.i[7] = static_cast<int64_t>(cudl::Epilogue::None);
  return a;
}
constexpr int64_t kConvN = 128, kConvC = 16, kConvH = 14, kConvK = 32;
double conv_flops() { return 2.0 * kConvN * kConvK * kConvH * kConvH * kConvC * 9; }

void BM_Conv2dForward(benchmark::State& st) {
  Tensor x = rand_tensor(Shape{kConvN, kConvC, kConvH, kConvH}, 1), w = rand_tensor(Shape{kConvK, kConvC, 3, 3}, 2);
  Tensor y = Tensor::empty(Shape{kConvN, kConvK, kConvH, kConvH});
  for (auto _ : st) cudl::run_op(OpKind::Conv2d, {V(x), V(w), kNoView}, {V(y)}, conv_attrs());
  set_flops(st, conv_flops());
  set_bytes(st, 4.0 * (x.numel() + w.numel() + y.numel()), static_cast<double>(y.numel()));
}
BENCHMARK(BM_Conv2dForward)->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);

void BM_Conv2dBackwardData(benchmark::State& st) {
  Tensor dy = rand_tensor(Shape{kConvN, kConvK, kConvH, kConvH}, 1), w = rand_tensor(Shape{kConvK, kConvC, 3, 3}, 2);
  Tensor dx = Tensor::empty(Shape{kConvN, kConvC, kConvH, kConvH});
  for (auto _ : st) cudl::run_op(OpKind::Conv2dBackwardData, {V(dy), V(w)}, {V(dx)}, conv_attrs());
  set_flops(st, conv_flops());
  set_bytes(st, 4.0 * (dx.numel() + w.numel() + dy.numel()), static_cast<double>(dx.numel()));
}
BENCHMARK(BM_Conv2dBackwardData)->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);

void BM_Conv2dBackwardFilter(benchmark::State& st) {
  Tensor x = rand_tensor(Shape{kConvN, kConvC, kConvH, kConvH}, 1);
  Tensor dy = rand_tensor(Shape{kConvN, kConvK, kConvH, kConvH}, 2);
  Tensor dw = Tensor::empty(Shape{kConvK, kConvC, 3, 3});
  for (auto _ : st) cudl::run_op(OpKind::Conv2dBackwardFilter, {V(x), V(dy)}, {V(dw)}, conv_attrs());
  set_flops(st, conv_flops());
  set_bytes(st, 4.0 * (x.numel() + dw.numel() + dy.numel()), static_cast<double>(dw.numel()));
}
BENCHMARK(BM_Conv2dBackwardFilter)->MeasureProcessCPUTime()->Unit(benchmark::kMillisecond);

// --- max pooling 2x2 on the cnn's first feature map (128, 16, 28, 28) -------------------------------
OpAttrs pool_attrs() {
  OpAttrs a;
  a.i[0] = a.i[1] = 2;
  a.i[2] = a.i[3] = 2;
  a.i[4] = a.i[5] = 0;
  return a;
}

void BM_MaxPool2d(benchmark::State& st) {
  Tensor x = rand_tensor(Shape{128, 16, 28, 28}, 1), y = Tensor::empty(Shape{128, 16, 14, 14});
  for (auto _ : st) cudl::run_op(OpKind::MaxPool2d, {V(x)}, {V(y), kNoView}, pool_attrs());
  set_bytes(st, 4.0 * (x.numel() + y.numel()), static_cast<double>(x.numel()));
}
BENCHMARK(BM_MaxPool2d)->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

void BM_MaxPool2dBackward(benchmark::State& st) {
  Tensor x = rand_tensor(Shape{128, 16, 28, 28}, 1), y = Tensor::empty(Shape{128, 16, 14, 14});
  cudl::run_op(OpKind::MaxPool2d, {V(x)}, {V(y), kNoView}, pool_attrs());
  Tensor dy = rand_tensor(y.shape(), 2), dx = Tensor::empty(x.shape());
  for (auto _ : st) cudl::run_op(OpKind::MaxPool2dBackward, {V(x), V(y), V(dy)}, {V(dx)}, pool_attrs());
  set_bytes(st, 4.0 * (2 * x.numel() + 2 * y.numel()), static_cast<double>(x.numel()));
}
BENCHMARK(BM_MaxPool2dBackward)->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

// --- batch norm (training statistics) on (128, 16, 28, 28) ------------------------------------------
void BM_BatchNormTrain(benchmark::State& st) {
  const int64_t C = 16;
  Tensor x = rand_tensor(Shape{128, C, 28, 28}, 1), y = Tensor::empty(x.shape());
  Tensor gamma = rand_tensor(Shape{C}, 2, 0.5, 1.5), beta = rand_tensor(Shape{C}, 3);
  Tensor rm = Tensor::zeros(Shape{C}), rv = Tensor::full(Shape{C}, 1.0);
  Tensor sm = Tensor::empty(Shape{C}), si = Tensor::empty(Shape{C});
  OpAttrs a;
  a.f[0] = 1e-5;
  a.f[1] = 0.1;
  for (auto _ : st)
    cudl::run_op(OpKind::BatchNormTrain, {V(x), V(gamma), V(beta), V(rm), V(rv)}, {V(y), V(sm), V(si)}, a);
  set_bytes(st, 4.0 * 2 * x.numel(), static_cast<double>(x.numel()));  // x read (at least) once, y written
}
BENCHMARK(BM_BatchNormTrain)->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

void BM_BatchNormBackward(benchmark::State& st) {
  const int64_t C = 16;
  Tensor x = rand_tensor(Shape{128, C, 28, 28}, 1), y = Tensor::empty(x.shape());
  Tensor gamma = rand_tensor(Shape{C}, 2, 0.5, 1.5), beta = rand_tensor(Shape{C}, 3);
  Tensor sm = Tensor::empty(Shape{C}), si = Tensor::empty(Shape{C});
  OpAttrs a;
  a.f[0] = 1e-5;
  a.f[1] = 0.1;
  cudl::run_op(OpKind::BatchNormTrain, {V(x), V(gamma), V(beta), kNoView, kNoView}, {V(y), V(sm), V(si)}, a);
  Tensor dy = rand_tensor(x.shape(), 4), dx = Tensor::empty(x.shape());
  Tensor dg = Tensor::empty(Shape{C}), db = Tensor::empty(Shape{C});
  for (auto _ : st)
    cudl::run_op(OpKind::BatchNormBackward, {V(x), V(gamma), V(sm), V(si), V(dy)}, {V(dx), V(dg), V(db)}, a);
  set_bytes(st, 4.0 * 3 * x.numel(), static_cast<double>(x.numel()));  // x, dy read, dx written
}
BENCHMARK(BM_BatchNormBackward)->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

// --- dropout (p = 0.5) on the cnn's flattened features (128, 32 * 7 * 7) -----------------------------
struct DropoutCase {
  Tensor x = rand_tensor(Shape{128, 1568}, 1), y = Tensor::empty(x.shape());
  Tensor mask = Tensor::empty(x.shape(), DType::u8), rng = Tensor::from_vector<int64_t>({1234, 0}, Shape{2});
  OpAttrs a = [] {
    OpAttrs r;
    r.f[0] = 0.5;
    return r;
  }();
  void forward() { cudl::run_op(OpKind::Dropout, {V(x), V(rng)}, {V(y), V(mask)}, a); }
};

void BM_Dropout(benchmark::State& st) {
  DropoutCase d;
  for (auto _ : st) d.forward();
  set_bytes(st, 9.0 * d.x.numel(), static_cast<double>(d.x.numel()));  // x read, y and mask written
}
BENCHMARK(BM_Dropout)->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

void BM_DropoutBackward(benchmark::State& st) {
  DropoutCase d;
  d.forward();
  Tensor dy = rand_tensor(d.x.shape(), 2), dx = Tensor::empty(d.x.shape());
  for (auto _ : st) cudl::run_op(OpKind::DropoutBackward, {V(dy), V(d.mask)}, {V(dx)}, d.a);
  set_bytes(st, 9.0 * d.x.numel(), static_cast<double>(d.x.numel()));  // dy and mask read, dx written
}
BENCHMARK(BM_DropoutBackward)->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

// --- Adam step over the mlp's parameters (784*128 + 128 + 128*10 + 10 = 101,770) ------------------
void BM_AdamStep(benchmark::State& st) {
  const std::vector<Shape> shapes{Shape{128, 784}, Shape{128}, Shape{10, 128}, Shape{10}};
  std::vector<Tensor> keep;
  std::vector<TensorView> ins;
  Tensor hyper = Tensor::from_vector<float>({1e-3f, 1.f}, Shape{2});
  ins.push_back(V(hyper));
  int64_t params = 0;
  uint32_t seed = 1;
  for (const Shape& s : shapes) {
    keep.push_back(rand_tensor(s, seed++));              // param
    keep.push_back(rand_tensor(s, seed++));              // grad
    keep.push_back(Tensor::zeros(s));                    // m
    keep.push_back(rand_tensor(s, seed++, 0.f, 1e-3f));  // v
    for (int k = 0; k < 4; ++k) ins.push_back(V(keep[keep.size() - 4 + k]));
    params += s.numel();
  }
  OpAttrs a;
  a.f[0] = 0.9;
  a.f[1] = 0.999;
  a.f[2] = 1e-8;
  a.f[3] = 0;
  const cudl::OpTable& table = cudl::op_table(cudl::DeviceType::CPU);
  cudl::OpCall call;
  call.op = OpKind::AdamStep;
  call.inputs = ins.data();
  call.n_inputs = static_cast<int>(ins.size());
  call.attrs = a;
  call.ctx = &cudl::default_context(cudl::Device::cpu());
  call.label = "bench/adam";
  const cudl::OpFn fn = table.get(OpKind::AdamStep);  // variadic inputs: called as the executor does
  for (auto _ : st) fn(call);
  st.SetLabel(std::to_string(params) + " params");
  set_bytes(st, 4.0 * 7 * params, static_cast<double>(params));  // read p, g, m, v; write p, m, v
}
BENCHMARK(BM_AdamStep)->MeasureProcessCPUTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
