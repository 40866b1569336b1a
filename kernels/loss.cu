// kernels/loss.cu — loss kernels: per-element losses with a fused gradient (16-byte loads where
// aligned), warp-per-row cross-entropy family. Predictions / logits and their gradient are of the
// storage type (f32, bf16, f16; widened on load, the gradient rounded once on store); targets, the
// loss, the partial sums and the metric accumulators are f32, and so is the math. One launch per
// loss: each block writes its partial sums, and the last block to finish (kernels::last_block) adds
// them in a fixed order (no float atomics), writes the loss and updates the metric accumulators.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <math.h>

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/loss.cuh"
#include "ops/loss.hpp"

namespace cudl::kernels {

namespace {

constexpr int kLossBlock = 256;  // threads per block, a multiple of 32
constexpr int kWarpsPerBlock = kLossBlock / kWarpSize;
constexpr int kMaxLossBlocks = 1024;  // partials the final pass sums

// ---- math shared by the kernels (mirrors src/cpu/loss.cpp) ----------------------------------

struct MseFn {
  __device__ float value(float x, float t) const { return (x - t) * (x - t); }
  __device__ float grad(float x, float t) const { return 2.f * (x - t); }
};
struct L1Fn {
  __device__ float value(float x, float t) const { return fabsf(x - t); }
  __device__ float grad(float x, float t) const {
    const float d = x - t;
    return d > 0.f ? 1.f : d < 0.f ? -1.f : d;  // sign, 0 at 0, NaN stays NaN
  }
};
struct HuberFn {
  float delta;
  __device__ float value(float x, float t) const {
    const float d = fabsf(x - t);
    return d < delta ? 0.5f * d * d : delta * (d - 0.5f * delta);
  }
  __device__ float grad(float x, float t) const {
    const float d = x - t;
    return d < -delta ? -delta : d > delta ? delta : d;
  }
};
/// max(v, lo) that keeps NaN (fmaxf would drop it), as std::max(v, lo) in the CPU reference.
__device__ __forceinline__ float clamp_below(float v, float lo) { return v < lo ? lo : v; }

struct BceFn {  // logs clamped at -100, gradient denominator at 1e-12 (PyTorch); NaN propagates
  __device__ float value(float x, float t) const {
    return -(t * clamp_below(logf(x), -100.f) + (1.f - t) * clamp_below(log1pf(-x), -100.f));
  }
  __device__ float grad(float x, float t) const { return (x - t) / clamp_below((1.f - x) * x, 1e-12f); }
};
struct BceWithLogitsFn {  // max(x, 0) - x t + log1p(exp(-|x|)); gradient sigmoid(x) - t
  __device__ float value(float x, float t) const { return fmaxf(x, 0.f) - x * t + log1pf(expf(-fabsf(x))); }
  __device__ float grad(float x, float t) const { return 1.f / (1.f + expf(-x)) - t; }
};

__device__ __forceinline__ bool is_nan(float v) { return v != v; }

/// Running (max, sum of exp(x - max)) of a stream of values. -Inf values add nothing; NaN makes
/// the sum NaN; the max never becomes NaN.
struct OnlineSoftmax {
  float m = -INFINITY, s = 0.f;
  __device__ void add(float x) {
    if (x > m) {
      s = s * expf(m - x) + 1.f;  // m == -Inf: s is 0 and expf(-Inf) is 0
      m = x;
    } else if (x != -INFINITY) {
      s += expf(x - m);
    }
  }
  __device__ void merge(float om, float os) {
    const float nm = fmaxf(m, om);
    const float a = m == -INFINITY ? 0.f : s * expf(m - nm);
    const float b = om == -INFINITY ? 0.f : os * expf(om - nm);
    s = a + b;
    m = nm;
  }
  /// Combines the 32 lanes' states; every lane ends with the row's state.
  __device__ void warp_merge() {
    for (int off = kWarpSize / 2; off > 0; off >>= 1) {
      const float om = __shfl_xor_sync(0xffffffffu, m, off);
      const float os = __shfl_xor_sync(0xffffffffu, s, off);
      merge(om, os);
    }
  }
  /// log(sum(exp(x))): NaN when the max is +-Inf (as the CPU reference's x - max gives).
  __device__ float lse() const { return fabsf(m) == INFINITY ? NAN : m + logf(s); }
};

/// Argmax order: NaN above every number, then larger values, then the smaller index; index < 0
/// means "no candidate". A strict total order, so any reduction tree gives the same winner.
__device__ __forceinline__ bool argmax_before(float v, int i, float bv, int bi) {
  if (i < 0) return false;
  if (bi < 0) return true;
  const bool vn = is_nan(v), bn = is_nan(bv);
  if (vn || bn) return vn && bn ? i < bi : vn;
  if (v != bv) return v > bv;
  return i < bi;
}

__device__ __forceinline__ void warp_argmax(float& bv, int& bi) {
  for (int off = kWarpSize / 2; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
    if (argmax_before(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
}

__device__ __forceinline__ float grad_scale(const float* dloss, float grad_mul) {
  return (dloss ? *dloss : 1.f) * grad_mul;
}

/// The per-launch reduction target (device view of LossSink plus the per-block partials).
struct Sink {
  float* partials;  // one per block (workspace)
  int* hits;        // one per block, or null (only CE counts correct rows)
  LossSink out;
  float divisor;
  float rows;              // CE: rows counted by correct_acc when no row is ignored
  const int* kept;         // CE with an ignore index: the rows kept (device), or null
  bool mean;               // with `kept`: the loss is divided by *kept
  __device__ bool active() const { return out.loss || out.correct || out.loss_acc || out.correct_acc; }
};

/// Every thread of every block calls this after its share; `total` and `hits` are valid in thread 0.
/// The last block sums all partials in a fixed order (threads stride over the blocks, then a fixed
/// tree), so the result does not depend on which block is last.
__device__ __forceinline__ void finish(const Sink& s, float total, int hits) {
  if (!s.active()) return;  // uniform over the grid
  if (threadIdx.x == 0) {
    s.partials[blockIdx.x] = total;
    if (s.hits) s.hits[blockIdx.x] = hits;
  }
  if (!last_block(s.out.counter)) return;
  float acc = 0.f;
  int h = 0;
  for (unsigned i = threadIdx.x; i < gridDim.x; i += blockDim.x) {
    acc += __ldcg(s.partials + i);
    if (s.hits) h += __ldcg(s.hits + i);
  }
  acc = block_reduce_sum<WarpResults::kSerial>(acc);
  h = block_reduce_sum<WarpResults::kSerial>(h);
  if (threadIdx.x == 0) {
    const float counted = s.kept ? static_cast<float>(*s.kept) : s.rows;  // CE's rows not ignored
    float loss = acc / s.divisor;
    if (s.kept && s.mean) loss = counted > 0.f ? acc / counted : 0.f;  // a Mean over no rows is 0
    if (s.out.loss) *s.out.loss = loss;
    if (s.out.correct) *s.out.correct = h;
    if (s.out.loss_acc) *s.out.loss_acc += s.out.acc_scale * loss;
    if (s.out.correct_acc && counted > 0.f)
      *s.out.correct_acc += (s.out.acc_scale * static_cast<float>(h)) / counted;
  }
}

// ---- kernels ----------------------------------------------------------------------------------

/// kV consecutive floats of p from group i (16-byte aligned p, kV a multiple of 4): kV / 4 float4 loads.
template <int kV>
__device__ __forceinline__ void load_floats(const float* __restrict__ p, int64_t i, float (&out)[kV]) {
  const float4* p4 = reinterpret_cast<const float4*>(p) + i * (kV / 4);
  for (int k = 0; k < kV / 4; ++k) {
    const float4 v = p4[k];
    out[4 * k] = v.x, out[4 * k + 1] = v.y, out[4 * k + 2] = v.z, out[4 * k + 3] = v.w;
  }
}

/// Per-element loss: each thread sums its grid-stride share (16-byte groups of pred when `vec`:
/// 4 floats or 8 bf16 / f16 values, and the matching f32 targets) and writes the scaled gradient,
/// rounded to pred's storage type T; the blocks' sums meet in finish().
template <typename Fn, typename T>
__global__ void __launch_bounds__(kLossBlock)
    elementwise_loss_kernel(Fn fn, const T* __restrict__ pred, const float* __restrict__ target, int64_t n, bool vec,
                            const float* __restrict__ dloss, float grad_mul, T* __restrict__ dpred, Sink sink) {
  constexpr int kV = kVec16<T>;
  const float scale = dpred ? grad_scale(dloss, grad_mul) : 0.f;
  const int64_t tid = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  float acc = 0.f;
  int64_t tail = 0;
  if (vec) {
    const int64_t groups = n / kV;
    for (int64_t i = tid; i < groups; i += stride) {
      float p[kV], t[kV];
      load16(pred, i, p);
      load_floats(target, i, t);
      float part = fn.value(p[0], t[0]);
      for (int k = 1; k < kV; ++k) part += fn.value(p[k], t[k]);
      acc += part;
      if (dpred) {
        float g[kV];
        for (int k = 0; k < kV; ++k) g[k] = fn.grad(p[k], t[k]) * scale;
        store16(dpred, i, g);
      }
    }
    tail = groups * kV;
  }
  for (int64_t i = tail + tid; i < n; i += stride) {
    const float p = to_float(pred[i]), t = target[i];
    acc += fn.value(p, t);
    if (dpred) dpred[i] = from_float<T>(fn.grad(p, t) * scale);
  }
  if (sink.active()) finish(sink, block_reduce_sum<WarpResults::kSerial>(acc), 0);
}

/// One block: *kept = the number of labels not equal to `ignore_index` (CE with an ignore index).
__global__ void __launch_bounds__(kLossBlock)
    count_kept_kernel(const int32_t* __restrict__ labels, int64_t rows, int32_t ignore_index, int* __restrict__ kept) {
  int n = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) n += labels[r] != ignore_index;
  n = block_reduce_sum<WarpResults::kSerial>(n);
  if (threadIdx.x == 0) *kept = n;
}

/// One warp per row of logits: online max/sum-exp, sum of logits (smoothing), argmax; then the
/// gradient row in a second pass over the (cached) row. With `ignore`, rows labelled ignore_index
/// add nothing and get a zero gradient row, and Mean divides by *sink.kept. Logits and dpred are
/// of the storage type T (widened on load, the gradient rounded once on store).
template <typename T>
__global__ void __launch_bounds__(kLossBlock)
    cross_entropy_kernel(const T* __restrict__ logits, const int32_t* __restrict__ labels, int64_t rows, int64_t cols,
                         float smoothing, bool ignore, int32_t ignore_index, const float* __restrict__ dloss,
                         float grad_mul, T* __restrict__ dpred, Sink sink) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  if (ignore && sink.mean) {  // 1 / rows kept, 0 when every row is ignored (no row has a gradient)
    const int kept = *sink.kept;
    grad_mul = kept > 0 ? 1.f / static_cast<float>(kept) : 0.f;
  }
  const float scale = dpred ? grad_scale(dloss, grad_mul) : 0.f;
  const float inv_cols = 1.f / static_cast<float>(cols);
  float acc = 0.f;  // this warp's rows (lane-uniform)
  int hits = 0;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const T* xr = logits + r * cols;
    const int32_t y = labels[r];
    if (ignore && y == ignore_index) {  // warp-uniform
      if (dpred)
        for (int64_t j = lane; j < cols; j += kWarpSize) dpred[r * cols + j] = from_float<T>(0.f);
      continue;
    }
    const bool valid = y >= 0 && y < cols;
    OnlineSoftmax sm;
    float sum_x = 0.f, best_v = 0.f;
    int best_i = -1;
    for (int64_t j = lane; j < cols; j += kWarpSize) {
      const float v = to_float(xr[j]);
      sm.add(v);
      sum_x += v;
      if (argmax_before(v, static_cast<int>(j), best_v, best_i)) best_v = v, best_i = static_cast<int>(j);
    }
    sm.warp_merge();
    sum_x = warp_reduce_sum(sum_x);
    warp_argmax(best_v, best_i);
    const float lse = sm.lse();
    float row = NAN;
    if (valid) {
      row = (1.f - smoothing) * (lse - to_float(xr[y]));
      if (smoothing > 0.f) row += smoothing * (lse - sum_x * inv_cols);
    }
    acc += row;
    hits += valid && best_i == y;
    if (dpred) {
      T* gr = dpred + r * cols;
      const float off_target = smoothing * inv_cols;
      for (int64_t j = lane; j < cols; j += kWarpSize) {
        const float target = (j == y ? 1.f - smoothing : 0.f) + off_target;
        gr[j] = from_float<T>(valid ? (expf(to_float(xr[j]) - lse) - target) * scale : NAN);
      }
    }
  }
  const float total = block_combine_warps<SumOp, WarpResults::kSerial>(acc);
  const int total_hits = block_combine_warps<SumOp, WarpResults::kSerial>(hits);
  finish(sink, total, total_hits);
}

/// One warp per row: loss_i = sum(t) lse - sum(t x); dpred = softmax sum(t) - t. Logits and dpred
/// of the storage type T, the targets f32.
template <typename T>
__global__ void __launch_bounds__(kLossBlock)
    soft_cross_entropy_kernel(const T* __restrict__ logits, const float* __restrict__ target, int64_t rows,
                              int64_t cols, const float* __restrict__ dloss, float grad_mul, T* __restrict__ dpred,
                              Sink sink) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const float scale = dpred ? grad_scale(dloss, grad_mul) : 0.f;
  float acc = 0.f;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const T* xr = logits + r * cols;
    const float* tr = target + r * cols;
    OnlineSoftmax sm;
    float sum_t = 0.f, sum_tx = 0.f;
    for (int64_t j = lane; j < cols; j += kWarpSize) {
      const float v = to_float(xr[j]), t = tr[j];
      sm.add(v);
      sum_t += t;
      sum_tx += t * v;
    }
    sm.warp_merge();
    sum_t = warp_reduce_sum(sum_t);
    sum_tx = warp_reduce_sum(sum_tx);
    const float lse = sm.lse();
    acc += sum_t * lse - sum_tx;
    if (dpred) {
      T* gr = dpred + r * cols;
      for (int64_t j = lane; j < cols; j += kWarpSize)
        gr[j] = from_float<T>((expf(to_float(xr[j]) - lse) * sum_t - tr[j]) * scale);
    }
  }
  finish(sink, block_combine_warps<SumOp, WarpResults::kSerial>(acc), 0);
}

/// One warp per row: loss_i = -x[y]; dpred row = -scale at y, 0 elsewhere. logp and dpred of the
/// storage type T.
template <typename T>
__global__ void __launch_bounds__(kLossBlock)
    nll_kernel(const T* __restrict__ logp, const int32_t* __restrict__ labels, int64_t rows, int64_t cols,
               const float* __restrict__ dloss, float grad_mul, T* __restrict__ dpred, Sink sink) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const float scale = dpred ? grad_scale(dloss, grad_mul) : 0.f;
  float acc = 0.f;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kWarpsPerBlock) {
    const int32_t y = labels[r];
    const bool valid = y >= 0 && y < cols;
    acc += valid ? -to_float(logp[r * cols + y]) : NAN;
    if (dpred) {
      T* gr = dpred + r * cols;
      for (int64_t j = lane; j < cols; j += kWarpSize) gr[j] = from_float<T>(valid ? (j == y ? -scale : 0.f) : NAN);
    }
  }
  finish(sink, block_combine_warps<SumOp, WarpResults::kSerial>(acc), 0);
}

unsigned row_blocks(int64_t rows) {
  int64_t b = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  return static_cast<unsigned>(b < 1 ? 1 : b > kMaxLossBlocks ? kMaxLossBlocks : b);
}

unsigned elementwise_blocks(int64_t n) { return grid_for((n + 3) / 4, kLossBlock, kMaxLossBlocks); }

Sink make_sink(void* workspace, unsigned blocks, bool with_hits, const LossSink& out, float divisor) {
  float* sums = static_cast<float*>(workspace);
  return Sink{sums, with_hits ? reinterpret_cast<int*>(sums + blocks) : nullptr, out, divisor, divisor, nullptr, false};
}

template <typename Fn>
void launch_elementwise(Fn fn, Storage type, const void* pred, const float* target, int64_t n, bool vec,
                        const float* dloss, float grad_mul, void* dpred, const Sink& sink, unsigned blocks,
                        cudaStream_t stream) {
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<elementwise_loss_kernel<Fn, T>>(blocks, kLossBlock, 0, stream, fn, static_cast<const T*>(pred), target, n,
                                           vec, dloss, grad_mul, static_cast<T*>(dpred), sink);
  });
}

}  // namespace

size_t loss_workspace_bytes(int64_t items, bool per_row) {
  const unsigned blocks = per_row ? row_blocks(items) : elementwise_blocks(items);
  return static_cast<size_t>(blocks) * (sizeof(float) + sizeof(int)) + sizeof(int);  // + CE's kept count
}

void elementwise_loss_cuda(ElementwiseLoss kind, float param, Storage type, const void* pred, const float* target,
                           int64_t n, bool mean, const float* dloss, void* dpred, const LossSink& out, void* workspace,
                           cudaStream_t stream) {
  const unsigned blocks = elementwise_blocks(n);
  const Sink sink = make_sink(workspace, blocks, false, out, mean ? static_cast<float>(n) : 1.f);
  const bool vec = aligned16(pred) && aligned16(target) && (!dpred || aligned16(dpred));
  const float grad_mul = mean ? 1.f / static_cast<float>(n) : 1.f;
  switch (kind) {
    case ElementwiseLoss::Mse:
      launch_elementwise(MseFn{}, type, pred, target, n, vec, dloss, grad_mul, dpred, sink, blocks, stream);
      break;
    case ElementwiseLoss::L1:
      launch_elementwise(L1Fn{}, type, pred, target, n, vec, dloss, grad_mul, dpred, sink, blocks, stream);
      break;
    case ElementwiseLoss::Huber:
      launch_elementwise(HuberFn{param}, type, pred, target, n, vec, dloss, grad_mul, dpred, sink, blocks, stream);
      break;
    case ElementwiseLoss::Bce:
      launch_elementwise(BceFn{}, type, pred, target, n, vec, dloss, grad_mul, dpred, sink, blocks, stream);
      break;
    case ElementwiseLoss::BceWithLogits:
      launch_elementwise(BceWithLogitsFn{}, type, pred, target, n, vec, dloss, grad_mul, dpred, sink, blocks, stream);
      break;
  }
}

void cross_entropy_loss_cuda(Storage type, const void* logits, const int32_t* labels, int64_t rows, int64_t cols,
                             float smoothing, const int32_t* ignore_index, bool mean, const float* dloss, void* dpred,
                             const LossSink& out, void* workspace, cudaStream_t stream) {
  const unsigned blocks = row_blocks(rows);
  Sink sink = make_sink(workspace, blocks, true, out, mean ? static_cast<float>(rows) : 1.f);
  sink.rows = static_cast<float>(rows);
  sink.mean = mean;
  const float grad_mul = mean ? 1.f / static_cast<float>(rows) : 1.f;
  if (ignore_index) {  // the kept count sits after the partials and hits
    int* kept = reinterpret_cast<int*>(static_cast<char*>(workspace) + static_cast<size_t>(blocks) * 2 * sizeof(int));
    sink.kept = kept;
    launch<count_kept_kernel>(1, kLossBlock, 0, stream, labels, rows, *ignore_index, kept);
  }
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<cross_entropy_kernel<T>>(blocks, kLossBlock, 0, stream, static_cast<const T*>(logits), labels, rows, cols,
                                    smoothing, ignore_index != nullptr, ignore_index ? *ignore_index : 0, dloss,
                                    grad_mul, static_cast<T*>(dpred), sink);
  });
}

void soft_cross_entropy_loss_cuda(Storage type, const void* logits, const float* target, int64_t rows, int64_t cols,
                                  bool mean, const float* dloss, void* dpred, const LossSink& out, void* workspace,
                                  cudaStream_t stream) {
  const unsigned blocks = row_blocks(rows);
  const Sink sink = make_sink(workspace, blocks, false, out, mean ? static_cast<float>(rows) : 1.f);
  const float grad_mul = mean ? 1.f / static_cast<float>(rows) : 1.f;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<soft_cross_entropy_kernel<T>>(blocks, kLossBlock, 0, stream, static_cast<const T*>(logits), target, rows,
                                         cols, dloss, grad_mul, static_cast<T*>(dpred), sink);
  });
}

void nll_loss_cuda(Storage type, const void* logp, const int32_t* labels, int64_t rows, int64_t cols, bool mean,
                   const float* dloss, void* dpred, const LossSink& out, void* workspace, cudaStream_t stream) {
  const unsigned blocks = row_blocks(rows);
  const Sink sink = make_sink(workspace, blocks, false, out, mean ? static_cast<float>(rows) : 1.f);
  const float grad_mul = mean ? 1.f / static_cast<float>(rows) : 1.f;
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    launch<nll_kernel<T>>(blocks, kLossBlock, 0, stream, static_cast<const T*>(logp), labels, rows, cols, dloss,
                          grad_mul, static_cast<T*>(dpred), sink);
  });
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/loss.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_loss_ops puts them into the CUDA op table.

namespace cudl {

namespace {

struct LossPointers {
  kernels::Storage type;  // pred and dpred
  const float* dloss;
  void* dpred;
  kernels::LossSink sink;
};

LossPointers pointers(const OpCall& call, const ops::LossArgs& p, CudaContext& ctx) {
  kernels::LossSink s;
  s.loss = p.loss.as<float>();
  s.correct = p.correct.as<int32_t>();
  s.loss_acc = p.loss_acc.as<float>();
  s.acc_scale = p.acc_scale;
  s.correct_acc = p.correct_acc.as<float>();
  s.counter = ctx.block_counter();
  return {kernels::storage_of(p.storage), p.dloss.as<float>(), p.dpred.data, s};
}

template <kernels::ElementwiseLoss kKind>
void elementwise_loss(const OpCall& call) {
  const ops::LossArgs p = ops::check_loss_call(call);
  CudaContext& ctx = cuda_context(call);
  const LossPointers io = pointers(call, p, ctx);
  void* ws = ctx.workspace(kernels::loss_workspace_bytes(p.n, false));
  kernels::elementwise_loss_cuda(kKind, static_cast<float>(p.param), io.type, p.pred.data, p.target.as<float>(), p.n,
                                 p.mean, io.dloss, io.dpred, io.sink, ws, ctx.stream());
}

void cross_entropy_loss(const OpCall& call) {
  const ops::LossArgs p = ops::check_loss_call(call);
  CudaContext& ctx = cuda_context(call);
  const LossPointers io = pointers(call, p, ctx);
  void* ws = ctx.workspace(kernels::loss_workspace_bytes(p.rows, true));
  kernels::cross_entropy_loss_cuda(io.type, p.pred.data, p.target.as<int32_t>(), p.rows, p.cols,
                                   static_cast<float>(p.param), p.has_ignore ? &p.ignore_index : nullptr, p.mean,
                                   io.dloss, io.dpred, io.sink, ws, ctx.stream());
}

void soft_cross_entropy_loss(const OpCall& call) {
  const ops::LossArgs p = ops::check_loss_call(call);
  CudaContext& ctx = cuda_context(call);
  const LossPointers io = pointers(call, p, ctx);
  void* ws = ctx.workspace(kernels::loss_workspace_bytes(p.rows, true));
  kernels::soft_cross_entropy_loss_cuda(io.type, p.pred.data, p.target.as<float>(), p.rows, p.cols, p.mean, io.dloss,
                                        io.dpred, io.sink, ws, ctx.stream());
}

void nll_loss(const OpCall& call) {
  const ops::LossArgs p = ops::check_loss_call(call);
  CudaContext& ctx = cuda_context(call);
  const LossPointers io = pointers(call, p, ctx);
  void* ws = ctx.workspace(kernels::loss_workspace_bytes(p.rows, true));
  kernels::nll_loss_cuda(io.type, p.pred.data, p.target.as<int32_t>(), p.rows, p.cols, p.mean, io.dloss, io.dpred,
                         io.sink, ws, ctx.stream());
}

}  // namespace

void register_cuda_loss_ops(OpTable& t) {
  t.add(OpKind::MseLoss, elementwise_loss<kernels::ElementwiseLoss::Mse>);
  t.add(OpKind::L1Loss, elementwise_loss<kernels::ElementwiseLoss::L1>);
  t.add(OpKind::HuberLoss, elementwise_loss<kernels::ElementwiseLoss::Huber>);
  t.add(OpKind::BceLoss, elementwise_loss<kernels::ElementwiseLoss::Bce>);
  t.add(OpKind::BceWithLogitsLoss, elementwise_loss<kernels::ElementwiseLoss::BceWithLogits>);
  t.add(OpKind::CrossEntropyLoss, cross_entropy_loss);
  t.add(OpKind::SoftCrossEntropyLoss, soft_cross_entropy_loss);
  t.add(OpKind::NllLoss, nll_loss);
}

}  // namespace cudl
