// kernels/elementwise.cu — elementwise kernels: one templated grid-stride kernel per shape of work
// (unary, unary gradient, same-shape binary, broadcast binary, broadcast gradient reduction) and
// storage type (f32, bf16, f16; fp32 math), 16-byte vector paths.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <cstdint>
#include <type_traits>

#include "backend/op.hpp"
#include "cuda/context.hpp"
#include "cuda/storage_type.hpp"
#include "kernels/elementwise.cuh"
#include "ops/elementwise.hpp"

namespace cudl::kernels {

namespace {

constexpr int kBlock = 256;
constexpr int64_t kVectorMin = 256;  // below this the scalar loop is as good

// ---------------------------------------------------------------------------------------------
// Math (device functors). Semantics are documented in backend/op.hpp; the CPU reference in
// src/cpu/elementwise.cpp is the spec.
// ---------------------------------------------------------------------------------------------

constexpr float kSqrt1_2 = 0.70710678118654752f;      // 1/sqrt(2)
constexpr float kSqrt2OverPi = 0.79788456080286536f;  // sqrt(2/pi)
constexpr float kInvSqrt2Pi = 0.39894228040143268f;   // 1/sqrt(2 pi)
constexpr float kGeluCoef = 0.044715f;
constexpr float kSoftplusThreshold = 20.f;

__device__ __forceinline__ float sigmoid_f(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}

struct Relu {
  float alpha;
  __device__ float operator()(float x) const { return (x > 0.f || x != x) ? x : 0.f; }
};
struct LeakyRelu {
  float alpha;
  __device__ float operator()(float x) const { return x > 0.f ? x : alpha * x; }
};
struct Elu {
  float alpha;
  __device__ float operator()(float x) const { return x > 0.f ? x : alpha * expm1f(x); }
};
struct GeluErf {
  float alpha;
  __device__ float operator()(float x) const { return 0.5f * x * (1.f + erff(x * kSqrt1_2)); }
};
struct GeluTanh {
  float alpha;
  __device__ float operator()(float x) const {
    return 0.5f * x * (1.f + tanhf(kSqrt2OverPi * (x + kGeluCoef * x * x * x)));
  }
};
struct Silu {
  float alpha;
  __device__ float operator()(float x) const { return x * sigmoid_f(x); }
};
struct Sigmoid {
  float alpha;
  __device__ float operator()(float x) const { return sigmoid_f(x); }
};
struct Tanh {
  float alpha;
  __device__ float operator()(float x) const { return tanhf(x); }
};
struct Softplus {
  float alpha;
  __device__ float operator()(float x) const { return x > kSoftplusThreshold ? x : log1pf(expf(x)); }
};
struct Exp {
  float alpha;
  __device__ float operator()(float x) const { return expf(x); }
};
struct Log {
  float alpha;
  __device__ float operator()(float x) const { return logf(x); }
};
struct Sqrt {
  float alpha;
  __device__ float operator()(float x) const { return sqrtf(x); }
};
struct Abs {
  float alpha;
  __device__ float operator()(float x) const { return fabsf(x); }
};
struct Neg {
  float alpha;
  __device__ float operator()(float x) const { return -x; }
};
struct Square {
  float alpha;
  __device__ float operator()(float x) const { return x * x; }
};

// Gradients: dx = f'(.) * dy, reading x and/or y as declared (checked against op.hpp below).
template <bool X, bool Y>
struct Needs {
  static constexpr bool kNeedsX = X, kNeedsY = Y;
};
struct ReluGrad : Needs<false, true> {
  float alpha;
  __device__ float operator()(float, float y, float dy) const { return y <= 0.f ? 0.f : dy; }
};
struct LeakyReluGrad : Needs<true, false> {
  float alpha;
  __device__ float operator()(float x, float, float dy) const { return x > 0.f ? dy : dy * alpha; }
};
struct EluGrad : Needs<true, false> {
  float alpha;
  __device__ float operator()(float x, float, float dy) const { return x > 0.f ? dy : dy * alpha * expf(x); }
};
struct GeluErfGrad : Needs<true, false> {
  float alpha;
  __device__ float operator()(float x, float, float dy) const {
    const float cdf = 0.5f * (1.f + erff(x * kSqrt1_2));
    const float pdf = kInvSqrt2Pi * expf(-0.5f * x * x);
    return dy * (cdf + x * pdf);
  }
};
struct GeluTanhGrad : Needs<true, false> {
  float alpha;
  __device__ float operator()(float x, float, float dy) const {
    const float t = tanhf(kSqrt2OverPi * (x + kGeluCoef * x * x * x));
    const float dinner = kSqrt2OverPi * (1.f + 3.f * kGeluCoef * x * x);
    return dy * (0.5f * (1.f + t) + 0.5f * x * (1.f - t * t) * dinner);
  }
};
struct SiluGrad : Needs<true, false> {
  float alpha;
  __device__ float operator()(float x, float, float dy) const {
    const float s = sigmoid_f(x);
    return dy * s * (1.f + x * (1.f - s));
  }
};
struct SigmoidGrad : Needs<false, true> {
  float alpha;
  __device__ float operator()(float, float y, float dy) const { return dy * y * (1.f - y); }
};
struct TanhGrad : Needs<false, true> {
  float alpha;
  __device__ float operator()(float, float y, float dy) const { return dy * (1.f - y * y); }
};
struct SoftplusGrad : Needs<true, false> {
  float alpha;
  __device__ float operator()(float x, float, float dy) const {
    return x > kSoftplusThreshold ? dy : dy * sigmoid_f(x);
  }
};
struct ExpGrad : Needs<false, true> {
  float alpha;
  __device__ float operator()(float, float y, float dy) const { return dy * y; }
};
struct LogGrad : Needs<true, false> {
  float alpha;
  __device__ float operator()(float x, float, float dy) const { return dy / x; }
};
struct SqrtGrad : Needs<false, true> {
  float alpha;
  __device__ float operator()(float, float y, float dy) const { return dy / (2.f * y); }
};
struct AbsGrad : Needs<true, false> {
  float alpha;
  __device__ float operator()(float x, float, float dy) const {
    const float sign = x > 0.f ? 1.f : (x < 0.f ? -1.f : (x == 0.f ? 0.f : x));  // sign(NaN) = NaN
    return dy * sign;
  }
};
struct NegGrad : Needs<false, false> {
  float alpha;
  __device__ float operator()(float, float, float dy) const { return -dy; }
};
struct SquareGrad : Needs<true, false> {
  float alpha;
  __device__ float operator()(float x, float, float dy) const { return 2.f * x * dy; }
};

#define CUDL_CHECK_NEEDS(Op)                                                                                       \
  static_assert(                                                                                                   \
      Op##Grad::kNeedsX == unary_needs_input(UnaryOp::Op) && Op##Grad::kNeedsY == unary_needs_output(UnaryOp::Op), \
      "UnaryBackward of " #Op ": the kernel reads other inputs than unary_needs_* declare")
CUDL_CHECK_NEEDS(Relu);
CUDL_CHECK_NEEDS(LeakyRelu);
CUDL_CHECK_NEEDS(Elu);
CUDL_CHECK_NEEDS(GeluErf);
CUDL_CHECK_NEEDS(GeluTanh);
CUDL_CHECK_NEEDS(Silu);
CUDL_CHECK_NEEDS(Sigmoid);
CUDL_CHECK_NEEDS(Tanh);
CUDL_CHECK_NEEDS(Softplus);
CUDL_CHECK_NEEDS(Exp);
CUDL_CHECK_NEEDS(Log);
CUDL_CHECK_NEEDS(Sqrt);
CUDL_CHECK_NEEDS(Abs);
CUDL_CHECK_NEEDS(Neg);
CUDL_CHECK_NEEDS(Square);
#undef CUDL_CHECK_NEEDS

// Binary ops: value, and gradients with respect to a and b (PyTorch's tie rule for max/min).
struct AddOp {
  static constexpr bool kGradReadsValues = false;
  static __device__ float apply(float a, float b) { return a + b; }
  static __device__ float ga(float, float, float dc) { return dc; }
  static __device__ float gb(float, float, float dc) { return dc; }
};
struct SubOp {
  static constexpr bool kGradReadsValues = false;
  static __device__ float apply(float a, float b) { return a - b; }
  static __device__ float ga(float, float, float dc) { return dc; }
  static __device__ float gb(float, float, float dc) { return -dc; }
};
struct MulOp {
  static constexpr bool kGradReadsValues = true;
  static __device__ float apply(float a, float b) { return a * b; }
  static __device__ float ga(float, float b, float dc) { return dc * b; }
  static __device__ float gb(float a, float, float dc) { return dc * a; }
};
struct DivOp {
  static constexpr bool kGradReadsValues = true;
  static __device__ float apply(float a, float b) { return a / b; }
  static __device__ float ga(float, float b, float dc) { return dc / b; }
  static __device__ float gb(float a, float b, float dc) { return -dc * a / (b * b); }
};
struct MaxOp {
  static constexpr bool kGradReadsValues = true;
  static __device__ float apply(float a, float b) { return (a > b || a != a) ? a : b; }  // NaN wins
  static __device__ float ga(float a, float b, float dc) { return a == b ? 0.5f * dc : (a < b ? 0.f : dc); }
  static __device__ float gb(float a, float b, float dc) { return a == b ? 0.5f * dc : (a > b ? 0.f : dc); }
};
struct MinOp {
  static constexpr bool kGradReadsValues = true;
  static __device__ float apply(float a, float b) { return (a < b || a != a) ? a : b; }
  static __device__ float ga(float a, float b, float dc) { return a == b ? 0.5f * dc : (a > b ? 0.f : dc); }
  static __device__ float gb(float a, float b, float dc) { return a == b ? 0.5f * dc : (a < b ? 0.f : dc); }
};

// Tensor-scalar forms as unary functors.
template <typename B, bool kScalarFirst>
struct ScalarOp {
  float s;
  __device__ float operator()(float x) const { return kScalarFirst ? B::apply(s, x) : B::apply(x, s); }
};
template <typename B, bool kScalarFirst>
struct ScalarGrad : Needs<true, false> {
  float s;
  __device__ float operator()(float x, float, float dy) const {
    return kScalarFirst ? B::gb(s, x, dy) : B::ga(x, s, dy);
  }
};

// ---------------------------------------------------------------------------------------------
// Kernels, templated over the storage type T (float, __nv_bfloat16, __half): every load widens to
// float, the functors compute in fp32 exactly as for f32, every store rounds to T once (to nearest
// even). The vector paths move 16 bytes per access: 4 floats or 8 16-bit values (kVec16<T>).
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// The kernels of ops the planner may run in place (Unary, UnaryBackward, Binary, BinaryScalar[Backward]:
// the output shares its buffer with an input, src/graph/planner.cpp in_place_input) take no
// __restrict__ pointers: each thread reads element i before writing it, which aliasing allows.

// y = f(x); kVec: 16-byte body over n / kVec16<T> groups, then the scalar tail.
template <typename T, typename F, bool kVec>
static __global__ void __launch_bounds__(kBlock) unary_kernel(const T* x, T* y, int64_t n, F f) {
  constexpr int kN = kVec16<T>;
  int64_t tail = 0;
  if (kVec) {
    const int64_t groups = n / kN;
    for (int64_t i = global_thread(); i < groups; i += grid_stride()) {
      float v[kN];
      load16(x, i, v);
      for (int k = 0; k < kN; ++k) v[k] = f(v[k]);
      store16(y, i, v);
    }
    tail = groups * kN;
  }
  for (int64_t i = tail + global_thread(); i < n; i += grid_stride()) y[i] = from_float<T>(f(to_float(x[i])));
}

// dx = g(x, y, dy), reading x / y only when the functor needs them (they may be null otherwise).
template <typename T, typename G, bool kVec>
static __global__ void __launch_bounds__(kBlock)
    unary_backward_kernel(const T* x, const T* y, const T* dy, T* dx, int64_t n, G g) {
  constexpr int kN = kVec16<T>;
  int64_t tail = 0;
  if (kVec) {
    const int64_t groups = n / kN;
    for (int64_t i = global_thread(); i < groups; i += grid_stride()) {
      float xv[kN] = {}, yv[kN] = {}, d[kN];
      if (G::kNeedsX) load16(x, i, xv);
      if (G::kNeedsY) load16(y, i, yv);
      load16(dy, i, d);
      for (int k = 0; k < kN; ++k) d[k] = g(xv[k], yv[k], d[k]);
      store16(dx, i, d);
    }
    tail = groups * kN;
  }
  for (int64_t i = tail + global_thread(); i < n; i += grid_stride())
    dx[i] = from_float<T>(g(G::kNeedsX ? to_float(x[i]) : 0.f, G::kNeedsY ? to_float(y[i]) : 0.f, to_float(dy[i])));
}

// c = a op b, all of n elements.
template <typename T, typename B, bool kVec>
static __global__ void __launch_bounds__(kBlock) binary_same_kernel(const T* a, const T* b, T* c, int64_t n) {
  constexpr int kN = kVec16<T>;
  int64_t tail = 0;
  if (kVec) {
    const int64_t groups = n / kN;
    for (int64_t i = global_thread(); i < groups; i += grid_stride()) {
      float u[kN], v[kN];
      load16(a, i, u);
      load16(b, i, v);
      for (int k = 0; k < kN; ++k) u[k] = B::apply(u[k], v[k]);
      store16(c, i, u);
    }
    tail = groups * kN;
  }
  for (int64_t i = tail + global_thread(); i < n; i += grid_stride())
    c[i] = from_float<T>(B::apply(to_float(a[i]), to_float(b[i])));
}

// c = a op b with broadcasting: each element finds its operands through the loop-nest strides.
// I is the index type (32-bit when every offset fits, to keep the divisions cheap).
template <typename T, typename B, typename I>
static __global__ void __launch_bounds__(kBlock)
    binary_broadcast_kernel(const T* a, const T* b, T* c, int64_t n, BroadcastStrides s) {
  for (int64_t i = global_thread(); i < n; i += grid_stride()) {
    I rem = static_cast<I>(i), ia = 0, ib = 0;
    for (int d = s.rank - 1; d >= 0; --d) {
      const I size = static_cast<I>(s.dims[d]);
      const I coord = rem % size;
      rem /= size;
      ia += coord * static_cast<I>(s.a_stride[d]);
      ib += coord * static_cast<I>(s.b_stride[d]);
    }
    c[i] = from_float<T>(B::apply(to_float(a[ia]), to_float(b[ib])));
  }
}

// da = ga(a, b, dc), db = gb(a, b, dc) elementwise (same shapes); either output may be null.
template <typename T, typename B, bool kVec>
static __global__ void __launch_bounds__(kBlock)
    binary_backward_same_kernel(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ dc,
                                T* __restrict__ da, T* __restrict__ db, int64_t n) {
  constexpr int kN = kVec16<T>;
  int64_t tail = 0;
  if (kVec) {
    const int64_t groups = n / kN;
    for (int64_t i = global_thread(); i < groups; i += grid_stride()) {
      float u[kN] = {}, v[kN] = {}, g[kN], out[kN];
      if (B::kGradReadsValues) {
        load16(a, i, u);
        load16(b, i, v);
      }
      load16(dc, i, g);
      if (da) {
        for (int k = 0; k < kN; ++k) out[k] = B::ga(u[k], v[k], g[k]);
        store16(da, i, out);
      }
      if (db) {
        for (int k = 0; k < kN; ++k) out[k] = B::gb(u[k], v[k], g[k]);
        store16(db, i, out);
      }
    }
    tail = groups * kN;
  }
  for (int64_t i = tail + global_thread(); i < n; i += grid_stride()) {
    const float u = B::kGradReadsValues ? to_float(a[i]) : 0.f, v = B::kGradReadsValues ? to_float(b[i]) : 0.f;
    const float g = to_float(dc[i]);
    if (da) da[i] = from_float<T>(B::ga(u, v, g));
    if (db) db[i] = from_float<T>(B::gb(u, v, g));
  }
}

// Offsets into c and the other operand of kept-coordinates element j of self.
struct GradBase {
  int64_t c, other;
};
__device__ __forceinline__ GradBase grad_base(const BroadcastGradPlan& p, int64_t j) {
  GradBase base{0, 0};
  for (int d = p.n_kept - 1; d >= 0; --d) {
    const int64_t coord = j % p.kept_size[d];
    j /= p.kept_size[d];
    base.c += coord * p.kept_c[d];
    base.other += coord * p.kept_other[d];
  }
  return base;
}

// Gradient contribution (fp32) of reduced-coordinates element r for the self element at `base`.
template <typename T, typename B, bool kSelfIsA>
__device__ __forceinline__ float grad_term(const BroadcastGradPlan& p, GradBase base, int64_t r, float self,
                                           const T* __restrict__ other, const T* __restrict__ dc) {
  int64_t c_off = base.c, o_off = base.other;
  for (int d = p.n_red - 1; d >= 0; --d) {
    const int64_t coord = r % p.red_size[d];
    r /= p.red_size[d];
    c_off += coord * p.red_c[d];
    o_off += coord * p.red_other[d];
  }
  const float o = B::kGradReadsValues ? to_float(other[o_off]) : 0.f;
  const float g = to_float(dc[c_off]);
  return kSelfIsA ? B::ga(self, o, g) : B::gb(o, self, g);
}

// One thread per element of self, looping over its broadcast preimage in order (short preimages).
// The sum is fp32 and rounds to T once, at the store.
template <typename T, typename B, bool kSelfIsA>
static __global__ void __launch_bounds__(kBlock)
    binary_grad_thread_kernel(const T* __restrict__ self_values, const T* __restrict__ other, const T* __restrict__ dc,
                              T* __restrict__ out, int64_t n_out, BroadcastGradPlan p) {
  for (int64_t j = global_thread(); j < n_out; j += grid_stride()) {
    const GradBase base = grad_base(p, j);
    const float self = B::kGradReadsValues ? to_float(self_values[j]) : 0.f;
    float acc = 0.f;
    for (int64_t r = 0; r < p.red_count; ++r) acc += grad_term<T, B, kSelfIsA>(p, base, r, self, other, dc);
    out[j] = from_float<T>(acc);
  }
}

// One block per element of self (long preimages): threads stride over the preimage, then a
// fixed-order block reduction — deterministic, no atomics. fp32 throughout, one rounding at the store.
template <typename T, typename B, bool kSelfIsA>
static __global__ void __launch_bounds__(kBlock)
    binary_grad_block_kernel(const T* __restrict__ self_values, const T* __restrict__ other, const T* __restrict__ dc,
                             T* __restrict__ out, int64_t n_out, BroadcastGradPlan p) {
  for (int64_t j = blockIdx.x; j < n_out; j += gridDim.x) {
    const GradBase base = grad_base(p, j);
    const float self = B::kGradReadsValues ? to_float(self_values[j]) : 0.f;
    float acc = 0.f;
    for (int64_t r = threadIdx.x; r < p.red_count; r += blockDim.x)
      acc += grad_term<T, B, kSelfIsA>(p, base, r, self, other, dc);
    acc = block_reduce_sum(acc);
    if (threadIdx.x == 0) out[j] = from_float<T>(acc);
  }
}

// ---------------------------------------------------------------------------------------------
// Launch helpers
// ---------------------------------------------------------------------------------------------

/// Blocks for the vector path: one thread per 16-byte group (and the tail).
template <typename T>
unsigned vector_grid(int64_t n) {
  return grid_for((n + kVec16<T> - 1) / kVec16<T>, kBlock);
}

template <typename T, typename F>
void launch_unary(const F& f, const T* x, T* y, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  if (n >= kVectorMin && aligned16(x) && aligned16(y)) {
    launch<unary_kernel<T, F, true>>(vector_grid<T>(n), kBlock, 0, stream, x, y, n, f);
  } else {
    launch<unary_kernel<T, F, false>>(grid_for(n, kBlock), kBlock, 0, stream, x, y, n, f);
  }
}

template <typename T, typename G>
void launch_unary_backward(const G& g, const T* x, const T* y, const T* dy, T* dx, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  const bool vec = n >= kVectorMin && aligned16(dy) && aligned16(dx) && (!G::kNeedsX || aligned16(x)) &&
                   (!G::kNeedsY || aligned16(y));
  if (vec) {
    launch<unary_backward_kernel<T, G, true>>(vector_grid<T>(n), kBlock, 0, stream, x, y, dy, dx, n, g);
  } else {
    launch<unary_backward_kernel<T, G, false>>(grid_for(n, kBlock), kBlock, 0, stream, x, y, dy, dx, n, g);
  }
}

// Calls fn(Op{}) with the functor type of binary op `op`.
template <typename Fn>
void with_binary_op(int op, Fn&& fn) {
  switch (static_cast<BinaryOp>(op)) {
    case BinaryOp::Add:
      fn(AddOp{});
      return;
    case BinaryOp::Sub:
      fn(SubOp{});
      return;
    case BinaryOp::Mul:
      fn(MulOp{});
      return;
    case BinaryOp::Div:
      fn(DivOp{});
      return;
    case BinaryOp::Maximum:
      fn(MaxOp{});
      return;
    case BinaryOp::Minimum:
      fn(MinOp{});
      return;
    case BinaryOp::Count:
      break;
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------------------------

template <typename T>
void unary_cuda(int op, float alpha, const T* x, T* y, int64_t n, cudaStream_t stream) {
  switch (static_cast<UnaryOp>(op)) {
    case UnaryOp::Relu:
      return launch_unary(Relu{alpha}, x, y, n, stream);
    case UnaryOp::LeakyRelu:
      return launch_unary(LeakyRelu{alpha}, x, y, n, stream);
    case UnaryOp::Elu:
      return launch_unary(Elu{alpha}, x, y, n, stream);
    case UnaryOp::GeluErf:
      return launch_unary(GeluErf{alpha}, x, y, n, stream);
    case UnaryOp::GeluTanh:
      return launch_unary(GeluTanh{alpha}, x, y, n, stream);
    case UnaryOp::Silu:
      return launch_unary(Silu{alpha}, x, y, n, stream);
    case UnaryOp::Sigmoid:
      return launch_unary(Sigmoid{alpha}, x, y, n, stream);
    case UnaryOp::Tanh:
      return launch_unary(Tanh{alpha}, x, y, n, stream);
    case UnaryOp::Softplus:
      return launch_unary(Softplus{alpha}, x, y, n, stream);
    case UnaryOp::Exp:
      return launch_unary(Exp{alpha}, x, y, n, stream);
    case UnaryOp::Log:
      return launch_unary(Log{alpha}, x, y, n, stream);
    case UnaryOp::Sqrt:
      return launch_unary(Sqrt{alpha}, x, y, n, stream);
    case UnaryOp::Abs:
      return launch_unary(Abs{alpha}, x, y, n, stream);
    case UnaryOp::Neg:
      return launch_unary(Neg{alpha}, x, y, n, stream);
    case UnaryOp::Square:
      return launch_unary(Square{alpha}, x, y, n, stream);
    case UnaryOp::Count:
      break;
  }
}

template <typename T>
void unary_backward_cuda(int op, float alpha, const T* x, const T* y, const T* dy, T* dx, int64_t n,
                         cudaStream_t stream) {
  switch (static_cast<UnaryOp>(op)) {
    case UnaryOp::Relu:
      return launch_unary_backward(ReluGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::LeakyRelu:
      return launch_unary_backward(LeakyReluGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Elu:
      return launch_unary_backward(EluGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::GeluErf:
      return launch_unary_backward(GeluErfGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::GeluTanh:
      return launch_unary_backward(GeluTanhGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Silu:
      return launch_unary_backward(SiluGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Sigmoid:
      return launch_unary_backward(SigmoidGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Tanh:
      return launch_unary_backward(TanhGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Softplus:
      return launch_unary_backward(SoftplusGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Exp:
      return launch_unary_backward(ExpGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Log:
      return launch_unary_backward(LogGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Sqrt:
      return launch_unary_backward(SqrtGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Abs:
      return launch_unary_backward(AbsGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Neg:
      return launch_unary_backward(NegGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Square:
      return launch_unary_backward(SquareGrad{{}, alpha}, x, y, dy, dx, n, stream);
    case UnaryOp::Count:
      break;
  }
}

template <typename T>
void binary_cuda(int op, const T* a, const T* b, T* c, int64_t n, const BroadcastStrides* strides,
                 cudaStream_t stream) {
  if (n <= 0) return;
  with_binary_op(op, [&](auto op_functor) {
    using B = decltype(op_functor);
    if (!strides) {
      if (n >= kVectorMin && aligned16(a) && aligned16(b) && aligned16(c)) {
        launch<binary_same_kernel<T, B, true>>(vector_grid<T>(n), kBlock, 0, stream, a, b, c, n);
      } else {
        launch<binary_same_kernel<T, B, false>>(grid_for(n, kBlock), kBlock, 0, stream, a, b, c, n);
      }
      return;
    }
    // 32-bit index arithmetic when every flat offset fits (the operands are no larger than c).
    if (n < (int64_t{1} << 31)) {
      launch<binary_broadcast_kernel<T, B, uint32_t>>(grid_for(n, kBlock), kBlock, 0, stream, a, b, c, n, *strides);
    } else {
      launch<binary_broadcast_kernel<T, B, int64_t>>(grid_for(n, kBlock), kBlock, 0, stream, a, b, c, n, *strides);
    }
  });
}

template <typename T>
void binary_backward_same_cuda(int op, const T* a, const T* b, const T* dc, T* da, T* db, int64_t n,
                               cudaStream_t stream) {
  if (n <= 0 || (!da && !db)) return;
  with_binary_op(op, [&](auto op_functor) {
    using B = decltype(op_functor);
    const bool vec = n >= kVectorMin && aligned16(a) && aligned16(b) && aligned16(dc) && aligned16(da) &&
                     aligned16(db);  // null is aligned
    if (vec) {
      launch<binary_backward_same_kernel<T, B, true>>(vector_grid<T>(n), kBlock, 0, stream, a, b, dc, da, db, n);
    } else {
      launch<binary_backward_same_kernel<T, B, false>>(grid_for(n, kBlock), kBlock, 0, stream, a, b, dc, da, db, n);
    }
  });
}

template <typename T>
void binary_backward_reduce_cuda(int op, bool self_is_a, const T* a, const T* b, const T* dc, T* out, int64_t n_out,
                                 const BroadcastGradPlan& plan, cudaStream_t stream) {
  if (n_out <= 0) return;
  // A block per output when the preimages are long and there are few outputs to spread over threads.
  const bool per_block = plan.red_count >= 1024 || (plan.red_count >= 64 && n_out < 1024);
  const T* self = self_is_a ? a : b;
  const T* other = self_is_a ? b : a;
  with_binary_op(op, [&](auto op_functor) {
    using B = decltype(op_functor);
    auto launch_grad = [&](auto self_is_a_tag) {
      constexpr bool kSelfIsA = decltype(self_is_a_tag)::value;
      if (per_block) {
        launch<binary_grad_block_kernel<T, B, kSelfIsA>>(grid_for(n_out, 1), kBlock, 0, stream, self, other, dc, out,
                                                         n_out, plan);
      } else {
        launch<binary_grad_thread_kernel<T, B, kSelfIsA>>(grid_for(n_out, kBlock), kBlock, 0, stream, self, other, dc,
                                                          out, n_out, plan);
      }
    };
    if (self_is_a)
      launch_grad(std::true_type{});
    else
      launch_grad(std::false_type{});
  });
}

template <typename T>
void binary_scalar_cuda(int op, float s, bool scalar_first, const T* x, T* y, int64_t n, cudaStream_t stream) {
  with_binary_op(op, [&](auto op_functor) {
    using B = decltype(op_functor);
    if (scalar_first)
      launch_unary(ScalarOp<B, true>{s}, x, y, n, stream);
    else
      launch_unary(ScalarOp<B, false>{s}, x, y, n, stream);
  });
}

template <typename T>
void binary_scalar_backward_cuda(int op, float s, bool scalar_first, const T* x, const T* dy, T* dx, int64_t n,
                                 cudaStream_t stream) {
  with_binary_op(op, [&](auto op_functor) {
    using B = decltype(op_functor);
    if (scalar_first)
      launch_unary_backward(ScalarGrad<B, true>{{}, s}, x, static_cast<const T*>(nullptr), dy, dx, n, stream);
    else
      launch_unary_backward(ScalarGrad<B, false>{{}, s}, x, static_cast<const T*>(nullptr), dy, dx, n, stream);
  });
}

// The storage types the launchers exist for (kernels/elementwise.cuh).
#define CUDL_ELEMENTWISE_INSTANTIATE(T)                                                                         \
  template void unary_cuda<T>(int, float, const T*, T*, int64_t, cudaStream_t);                                 \
  template void unary_backward_cuda<T>(int, float, const T*, const T*, const T*, T*, int64_t, cudaStream_t);    \
  template void binary_cuda<T>(int, const T*, const T*, T*, int64_t, const BroadcastStrides*, cudaStream_t);    \
  template void binary_backward_same_cuda<T>(int, const T*, const T*, const T*, T*, T*, int64_t, cudaStream_t); \
  template void binary_backward_reduce_cuda<T>(int, bool, const T*, const T*, const T*, T*, int64_t,            \
                                               const BroadcastGradPlan&, cudaStream_t);                         \
  template void binary_scalar_cuda<T>(int, float, bool, const T*, T*, int64_t, cudaStream_t);                   \
  template void binary_scalar_backward_cuda<T>(int, float, bool, const T*, const T*, T*, int64_t, cudaStream_t);
CUDL_ELEMENTWISE_INSTANTIATE(float)
CUDL_ELEMENTWISE_INSTANTIATE(__nv_bfloat16)
CUDL_ELEMENTWISE_INSTANTIATE(__half)
#undef CUDL_ELEMENTWISE_INSTANTIATE

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/elementwise.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_elementwise_ops puts them into the CUDA op table.

namespace cudl {

namespace {

static_assert(kernels::kMaxBroadcastDims == Shape::kMaxDims, "broadcast structs must hold every dimension");

// True when the collapsed loop nest is a plain elementwise walk over all three tensors.
bool is_elementwise(const BroadcastLayout& l) {
  return l.rank == 0 || (l.rank == 1 && l.a_stride[0] == 1 && l.b_stride[0] == 1);
}

kernels::BroadcastStrides to_strides(const BroadcastLayout& l) {
  kernels::BroadcastStrides s{};
  s.rank = l.rank;
  for (int d = 0; d < l.rank; ++d) {
    s.dims[d] = l.dims[d];
    s.a_stride[d] = l.a_stride[d];
    s.b_stride[d] = l.b_stride[d];
  }
  return s;
}

// Splits c's loop nest into the dimensions `self` keeps (its own elements) and those it is
// broadcast over (summed in its gradient).
kernels::BroadcastGradPlan grad_plan(const BroadcastLayout& l, bool self_is_a) {
  kernels::BroadcastGradPlan p{};
  p.red_count = 1;
  int64_t c_stride = 1;
  // Innermost first, so each dimension knows its stride in c; then reverse each list.
  int64_t ks[Shape::kMaxDims], kc[Shape::kMaxDims], ko[Shape::kMaxDims];
  int64_t rs[Shape::kMaxDims], rc[Shape::kMaxDims], ro[Shape::kMaxDims];
  int nk = 0, nr = 0;
  for (int d = l.rank - 1; d >= 0; --d) {
    const int64_t self_stride = self_is_a ? l.a_stride[d] : l.b_stride[d];
    const int64_t other_stride = self_is_a ? l.b_stride[d] : l.a_stride[d];
    if (self_stride != 0) {
      ks[nk] = l.dims[d], kc[nk] = c_stride, ko[nk] = other_stride, ++nk;
    } else {
      rs[nr] = l.dims[d], rc[nr] = c_stride, ro[nr] = other_stride, ++nr;
      p.red_count *= l.dims[d];
    }
    c_stride *= l.dims[d];
  }
  p.n_kept = nk;
  p.n_red = nr;
  for (int k = 0; k < nk; ++k)
    p.kept_size[k] = ks[nk - 1 - k], p.kept_c[k] = kc[nk - 1 - k], p.kept_other[k] = ko[nk - 1 - k];
  for (int k = 0; k < nr; ++k)
    p.red_size[k] = rs[nr - 1 - k], p.red_c[k] = rc[nr - 1 - k], p.red_other[k] = ro[nr - 1 - k];
  return p;
}

// The kernels' element type T follows the call's storage type (f32, bf16 or f16; ops/precision.hpp).

void cuda_unary(const OpCall& call) {
  const ops::UnaryArgs p = ops::check_unary_call(call);
  with_storage_type(p.storage, "Unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::unary_cuda<T>(static_cast<int>(p.op), p.alpha, p.x.as<T>(), p.y.as<T>(), p.n, cuda_context(call).stream());
  });
}

void cuda_unary_backward(const OpCall& call) {
  const ops::UnaryArgs p = ops::check_unary_call(call);
  with_storage_type(p.storage, "UnaryBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::unary_backward_cuda<T>(static_cast<int>(p.op), p.alpha, p.x.as<T>(), p.y.as<T>(), p.dy.as<T>(),
                                    p.dx.as<T>(), p.n, cuda_context(call).stream());
  });
}

void cuda_binary(const OpCall& call) {
  const ops::BinaryArgs p = ops::check_binary_call(call);
  const BroadcastLayout l = broadcast_layout(p.a_shape, p.b_shape, p.c_shape);
  const kernels::BroadcastStrides s = to_strides(l);
  with_storage_type(p.storage, "Binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::binary_cuda<T>(static_cast<int>(p.op), p.a.as<T>(), p.b.as<T>(), p.c.as<T>(), p.c_shape.numel(),
                            is_elementwise(l) ? nullptr : &s, cuda_context(call).stream());
  });
}

void cuda_binary_backward(const OpCall& call) {
  const ops::BinaryArgs p = ops::check_binary_call(call);
  const BroadcastLayout l = broadcast_layout(p.a_shape, p.b_shape, p.c_shape);
  cudaStream_t stream = cuda_context(call).stream();
  with_storage_type(p.storage, "BinaryBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = p.a.as<T>();
    const T* b = p.b.as<T>();
    const T* dc = p.dc.as<T>();
    T* da = p.da.as<T>();
    T* db = p.db.as<T>();
    if (is_elementwise(l)) {
      kernels::binary_backward_same_cuda<T>(static_cast<int>(p.op), a, b, dc, da, db, p.c_shape.numel(), stream);
      return;
    }
    if (da)
      kernels::binary_backward_reduce_cuda<T>(static_cast<int>(p.op), true, a, b, dc, da, p.a_shape.numel(),
                                              grad_plan(l, true), stream);
    if (db)
      kernels::binary_backward_reduce_cuda<T>(static_cast<int>(p.op), false, a, b, dc, db, p.b_shape.numel(),
                                              grad_plan(l, false), stream);
  });
}

void cuda_binary_scalar(const OpCall& call) {
  const ops::BinaryScalarArgs p = ops::check_binary_scalar_call(call);
  with_storage_type(p.storage, "BinaryScalar", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::binary_scalar_cuda<T>(static_cast<int>(p.op), p.scalar, p.scalar_first, p.x.as<T>(), p.y.as<T>(), p.n,
                                   cuda_context(call).stream());
  });
}

void cuda_binary_scalar_backward(const OpCall& call) {
  const ops::BinaryScalarArgs p = ops::check_binary_scalar_call(call);
  with_storage_type(p.storage, "BinaryScalarBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::binary_scalar_backward_cuda<T>(static_cast<int>(p.op), p.scalar, p.scalar_first, p.x.as<T>(), p.dy.as<T>(),
                                            p.dx.as<T>(), p.n, cuda_context(call).stream());
  });
}

}  // namespace

void register_cuda_elementwise_ops(OpTable& t) {
  t.add(OpKind::Unary, cuda_unary);
  t.add(OpKind::UnaryBackward, cuda_unary_backward);
  t.add(OpKind::Binary, cuda_binary);
  t.add(OpKind::BinaryBackward, cuda_binary_backward);
  t.add(OpKind::BinaryScalar, cuda_binary_scalar);
  t.add(OpKind::BinaryScalarBackward, cuda_binary_scalar_backward);
}

}  // namespace cudl
