// kernels/optim.cu — fused multi-tensor optimizer steps (SGD, Adam/AdamW, RMSprop, Adagrad), weight
// penalties and global-norm clipping; the steps optionally store each updated parameter's bf16/f16
// copy in the same pass. Like PyTorch's multi_tensor_apply: the tensor list travels by
// value in the kernel arguments, blocks walk fixed-size chunks of all tensors; lr and t are read
// from the device inside the kernel.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <vector>

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/optim.cuh"
#include "ops/optim.hpp"

namespace cudl::kernels {

namespace {

constexpr int kBlock = 256;
constexpr int64_t kChunk = 4096;     // elements per chunk (a multiple of 4: chunks keep float4 alignment)
constexpr int kMaxBlocks = 132 * 8;  // grid cap per launch (grid-stride beyond)
constexpr int kArgBytes = 3900;      // the list's share of the 4 KB kernel parameter space

// Per tensor: depth f32 pointers, size and chunk start (8 bytes each); in the steps' lists (depth >= 2)
// also the 16-bit copy's pointer and type (9 bytes).
constexpr bool carries_copies(int depth) { return depth >= 2; }
constexpr int max_tensors(int depth) {
  return carries_copies(depth) ? (kArgBytes - 24) / (8 * depth + 25) : (kArgBytes - 16) / (8 * depth + 16);
}

}  // namespace

/// The tensors of one launch: group k has `depth` pointers ptr[d][k] of size[k] elements;
/// chunk_start[k] is the first global chunk of group k (a prefix sum), chunk_start[n] the total.
/// copy[k]: the 16-bit copy of group k's parameter (the steps' weight copies), of copy_type[k], or null.
template <int D>
struct TensorList {
  static constexpr bool kCopies = carries_copies(D);
  static constexpr int kMax = max_tensors(D);
  static constexpr int kCopyMax = kCopies ? kMax : 1;
  float* ptr[D][kMax];
  void* copy[kCopyMax];
  int64_t size[kMax];
  int64_t chunk_start[kMax + 1];
  int n;
  WeightCopyType copy_type[kCopyMax];
};
static_assert(sizeof(TensorList<1>) <= kArgBytes && sizeof(TensorList<2>) <= kArgBytes &&
                  sizeof(TensorList<3>) <= kArgBytes && sizeof(TensorList<4>) <= kArgBytes,
              "multi-tensor argument block exceeds its share of the kernel parameter space");

/// The group holding global chunk c (binary search over the prefix sums; every group has a chunk).
template <int D>
__device__ __forceinline__ int group_of_chunk(const TensorList<D>& l, int64_t c) {
  int lo = 0, hi = l.n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (l.chunk_start[mid] <= c)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

__device__ __forceinline__ float lane(const float4& v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}
__device__ __forceinline__ void set_lane(float4& v, int k, float x) {
  if (k == 0)
    v.x = x;
  else if (k == 1)
    v.y = x;
  else if (k == 2)
    v.z = x;
  else
    v.w = x;
}

/// Stores round_to_nearest_even(v) at element i of a 16-bit weight copy (cpu/optim.cpp's rule).
__device__ __forceinline__ void store_copy(void* copy, WeightCopyType type, int64_t i, float v) {
  if (type == WeightCopyType::bf16)
    static_cast<__nv_bfloat16*>(copy)[i] = from_float<__nv_bfloat16>(v);
  else
    static_cast<__half*>(copy)[i] = from_float<__half>(v);
}

// --- update rules (the math of cpu/optim.cpp, element by element) ------------------------------------

/// torch.optim.SGD; D = 2 (no momentum) or 3 (with momentum buffer).
struct SgdOp {
  float momentum, dampening, wd;
  bool nesterov;
  struct Step {
    float lr;
    bool first;
  };
  static constexpr unsigned writes(int depth) { return depth == 3 ? 0b101u : 0b001u; }
  __device__ Step prepare(const float* hyper) const { return Step{hyper[0], hyper[1] == 1.0f}; }
  template <int D>
  __device__ __forceinline__ void apply(const Step& s, float (&e)[D]) const {
    float d = e[1];
    if (wd != 0) d = d + wd * e[0];
    if constexpr (D == 3) {
      const float b = s.first ? d : momentum * e[2] + (1 - dampening) * d;
      e[2] = b;
      d = nesterov ? d + momentum * b : b;
    }
    e[0] = e[0] - s.lr * d;
  }
};

/// torch.optim.Adam / AdamW; D = 4 (param, grad, m, v). epsilon_hat: Keras's rule (eps added before
/// the bias correction, i.e. eps / sqrt(1 - b2^t) in torch's formula).
struct AdamOp {
  double beta1, beta2, eps;
  float wd;
  bool decoupled, epsilon_hat;
  struct Step {
    float step_size, bc2_sqrt, eps, decay, b1, b2, cb1, cb2;
  };
  static constexpr unsigned writes(int) { return 0b1101u; }
  __device__ Step prepare(const float* hyper) const {
    const float lr = hyper[0];
    const double t = hyper[1];
    Step s;
    s.step_size = static_cast<float>(lr / (1.0 - pow(beta1, t)));
    const double bc2 = sqrt(1.0 - pow(beta2, t));
    s.bc2_sqrt = static_cast<float>(bc2);
    s.eps = static_cast<float>(epsilon_hat ? eps / bc2 : eps);
    s.decay = static_cast<float>(1.0 - static_cast<double>(lr) * static_cast<double>(wd));
    s.b1 = static_cast<float>(beta1);
    s.b2 = static_cast<float>(beta2);
    s.cb1 = static_cast<float>(1.0 - beta1);
    s.cb2 = static_cast<float>(1.0 - beta2);
    return s;
  }
  template <int D>
  __device__ __forceinline__ void apply(const Step& s, float (&e)[D]) const {
    float d = e[1];
    float w = e[0];
    if (decoupled)
      w = w * s.decay;
    else if (wd != 0)
      d = d + wd * w;
    const float m = s.b1 * e[2] + s.cb1 * d;
    const float v = s.b2 * e[3] + s.cb2 * (d * d);
    e[2] = m;
    e[3] = v;
    e[0] = w - s.step_size * (m / (sqrtf(v) / s.bc2_sqrt + s.eps));
  }
};

/// torch.optim.RMSprop (centered=False, momentum=0); D = 3 (param, grad, sq_avg).
struct RmspropOp {
  float alpha, calpha, eps, wd;
  bool eps_in_sqrt;  // Keras's rule: lr*g/sqrt(sq + eps)
  struct Step {
    float lr;
  };
  static constexpr unsigned writes(int) { return 0b101u; }
  __device__ Step prepare(const float* hyper) const { return Step{hyper[0]}; }
  template <int D>
  __device__ __forceinline__ void apply(const Step& s, float (&e)[D]) const {
    float d = e[1];
    if (wd != 0) d = d + wd * e[0];
    const float sq = alpha * e[2] + calpha * (d * d);
    e[2] = sq;
    e[0] = e[0] - s.lr * (d / (eps_in_sqrt ? sqrtf(sq + eps) : sqrtf(sq) + eps));
  }
};

/// torch.optim.Adagrad; D = 3 (param, grad, sum).
struct AdagradOp {
  float eps, wd;
  double lr_decay;
  struct Step {
    float clr;
  };
  static constexpr unsigned writes(int) { return 0b101u; }
  __device__ Step prepare(const float* hyper) const {
    const double t = hyper[1];
    return Step{static_cast<float>(static_cast<double>(hyper[0]) / (1.0 + (t - 1.0) * lr_decay))};
  }
  template <int D>
  __device__ __forceinline__ void apply(const Step& s, float (&e)[D]) const {
    float d = e[1];
    if (wd != 0) d = d + wd * e[0];
    const float sum = e[2] + d * d;
    e[2] = sum;
    e[0] = e[0] - s.clr * (d / (sqrtf(sum) + eps));
  }
};

/// grad += l1 * sign(p) + l2 * p; D = 2.
struct PenaltyOp {
  float l1, l2;
  struct Step {};
  static constexpr unsigned writes(int) { return 0b10u; }
  __device__ Step prepare(const float*) const { return Step{}; }
  template <int D>
  __device__ __forceinline__ void apply(const Step&, float (&e)[D]) const {
    const float s = static_cast<float>((e[0] > 0) - (e[0] < 0));
    e[1] = e[1] + (l1 * s + l2 * e[0]);
  }
};

/// g *= coef, coef read from the device (the clipping coefficient); D = 1.
struct ScaleOp {
  struct Step {
    float coef;
  };
  static constexpr unsigned writes(int) { return 0b1u; }
  __device__ Step prepare(const float* coef) const { return Step{coef[0]}; }
  template <int D>
  __device__ __forceinline__ void apply(const Step& s, float (&e)[D]) const {
    e[0] = e[0] * s.coef;
  }
};

// --- the multi-tensor kernel -----------------------------------------------------------------------

// aux: hyper {lr, t} (or the clipping coefficient) on the device. A group with a weight copy gets
// its updated parameter (element 0) stored there, rounded, in the same pass. With `counter`, the step
// computes with t = hyper[1] + 1 and, when `t_out` is set (the last launch of a list), the last
// block stores that t there after every block has read the old one. With `skip` (hyper + 2, the
// skip_on_flag steps), every block reads the flag first and, when it is nonzero, returns at once:
// nothing is written and no block counts itself, so the counter stays 0 and t does not advance.
template <int D, typename Op>
static __global__ void __launch_bounds__(kBlock)
    multi_tensor_kernel(TensorList<D> list, Op op, const float* aux, unsigned int* counter, float* t_out,
                        const float* skip) {
  constexpr unsigned kWrites = Op::writes(D);
  if (skip && *skip != 0.f) return;  // the same value in every block: uniform across the grid
  float advanced[2] = {0.f, 0.f};
  const float* h = aux;
  if (counter) {
    advanced[0] = aux[0];
    advanced[1] = aux[1] + 1.f;  // as an Increment node would add it, in f32
    h = advanced;
  }
  const typename Op::Step s = op.prepare(h);
  const int64_t chunks = list.chunk_start[list.n];
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int k = group_of_chunk(list, c);
    const int64_t start = (c - list.chunk_start[k]) * kChunk;
    const int64_t len = list.size[k] - start < kChunk ? list.size[k] - start : kChunk;
    float* p[D];
    bool vec = true;
    for (int d = 0; d < D; ++d) {
      p[d] = list.ptr[d][k] + start;
      vec = vec && aligned16(p[d]);
    }
    WeightCopyType copy_type = WeightCopyType::bf16;
    void* copy = nullptr;
    if constexpr (TensorList<D>::kCopies) {
      copy_type = list.copy_type[k];
      if (list.copy[k]) copy = static_cast<char*>(list.copy[k]) + start * 2;  // 2-byte elements
    }
    int64_t done = 0;
    if (vec) {
      const int64_t n4 = len / 4;
      for (int64_t i = threadIdx.x; i < n4; i += blockDim.x) {
        float4 v[D];
        for (int d = 0; d < D; ++d) v[d] = reinterpret_cast<const float4*>(p[d])[i];
        for (int j = 0; j < 4; ++j) {
          float e[D];
          for (int d = 0; d < D; ++d) e[d] = lane(v[d], j);
          op.template apply<D>(s, e);
          for (int d = 0; d < D; ++d) set_lane(v[d], j, e[d]);
          if (copy) store_copy(copy, copy_type, i * 4 + j, e[0]);
        }
        for (int d = 0; d < D; ++d)
          if (kWrites & (1u << d)) reinterpret_cast<float4*>(p[d])[i] = v[d];
      }
      done = n4 * 4;
    }
    for (int64_t i = done + threadIdx.x; i < len; i += blockDim.x) {
      float e[D];
      for (int d = 0; d < D; ++d) e[d] = p[d][i];
      op.template apply<D>(s, e);
      for (int d = 0; d < D; ++d)
        if (kWrites & (1u << d)) p[d][i] = e[d];
      if (copy) store_copy(copy, copy_type, i, e[0]);
    }
  }
  if (t_out && last_block(counter) && threadIdx.x == 0) *t_out = advanced[1];
}

namespace {

/// Packs groups [first, end) with nonzero size into `list`, as many as fit; returns the next group.
/// copies (nullable): group k's 16-bit weight copy copies[k] (null: none) of copy_types[k].
template <int D>
int pack(TensorList<D>& list, float* const* ptrs, const int64_t* sizes, int n, int first,
         void* const* copies = nullptr, const WeightCopyType* copy_types = nullptr) {
  list.n = 0;
  int64_t chunks = 0;
  int k = first;
  for (; k < n && list.n < TensorList<D>::kMax; ++k) {
    if (sizes[k] == 0) continue;
    for (int d = 0; d < D; ++d) list.ptr[d][list.n] = ptrs[static_cast<int64_t>(k) * D + d];
    if constexpr (TensorList<D>::kCopies) {
      list.copy[list.n] = copies ? copies[k] : nullptr;
      list.copy_type[list.n] = copies ? copy_types[k] : WeightCopyType::bf16;
    }
    list.size[list.n] = sizes[k];
    list.chunk_start[list.n] = chunks;
    chunks += (sizes[k] + kChunk - 1) / kChunk;
    ++list.n;
  }
  list.chunk_start[list.n] = chunks;
  return k;
}

unsigned grid_for_chunks(int64_t chunks) {
  return static_cast<unsigned>(chunks < kMaxBlocks ? (chunks < 1 ? 1 : chunks) : kMaxBlocks);
}

/// Launches `op` over every group, as few launches as the argument space allows.
/// skip_on_flag: every launch reads aux[2] (hyper's skip flag) and does nothing when it is nonzero.
/// copies: the steps' 16-bit weight copies (WeightCopies; default none).
template <int D, typename Op>
void multi_tensor_apply(const Op& op, float* aux, float* const* ptrs, const int64_t* sizes, int n, cudaStream_t stream,
                        unsigned int* advance_t = nullptr, bool skip_on_flag = false,
                        const WeightCopies& copies = {}) {
  const float* skip = skip_on_flag ? aux + 2 : nullptr;
  auto launch_list = [&](const TensorList<D>& list, float* t_out) {
    launch<multi_tensor_kernel<D, Op>>(grid_for_chunks(list.chunk_start[list.n]), kBlock, 0, stream, list, op, aux,
                                       advance_t, t_out, skip);
  };
  int last_group = -1;  // the last nonempty group: the launch that holds it stores t
  for (int k = 0; k < n; ++k)
    if (sizes[k] != 0) last_group = k;
  int next = 0;
  while (next < n) {
    TensorList<D> list;
    next = pack(list, ptrs, sizes, n, next, copies.ptrs, copies.types);
    if (list.n == 0) continue;
    launch_list(list, advance_t && next > last_group ? aux + 1 : nullptr);
  }
  if (advance_t && last_group < 0) {  // every tensor is empty: t still advances
    TensorList<D> empty;
    empty.n = 0;
    empty.chunk_start[0] = 0;
    launch_list(empty, aux + 1);
  }
}

}  // namespace

void sgd_step_cuda(float* hyper, float* const* ptrs, const int64_t* sizes, int n, int depth, float momentum,
                   float dampening, float weight_decay, bool nesterov, cudaStream_t stream, unsigned int* advance_t,
                   bool skip_on_flag, const WeightCopies& copies) {
  const SgdOp op{momentum, dampening, weight_decay, nesterov};
  if (depth == 3)
    multi_tensor_apply<3>(op, hyper, ptrs, sizes, n, stream, advance_t, skip_on_flag, copies);
  else
    multi_tensor_apply<2>(op, hyper, ptrs, sizes, n, stream, advance_t, skip_on_flag, copies);
}

void adam_step_cuda(float* hyper, float* const* ptrs, const int64_t* sizes, int n, double beta1, double beta2,
                    double eps, float weight_decay, bool decoupled, bool epsilon_hat, cudaStream_t stream,
                    unsigned int* advance_t, bool skip_on_flag, const WeightCopies& copies) {
  const AdamOp op{beta1, beta2, eps, weight_decay, decoupled, epsilon_hat};
  multi_tensor_apply<4>(op, hyper, ptrs, sizes, n, stream, advance_t, skip_on_flag, copies);
}

void rmsprop_step_cuda(float* hyper, float* const* ptrs, const int64_t* sizes, int n, double alpha, float eps,
                       float weight_decay, bool eps_in_sqrt, cudaStream_t stream, unsigned int* advance_t,
                       bool skip_on_flag, const WeightCopies& copies) {
  const RmspropOp op{static_cast<float>(alpha), static_cast<float>(1.0 - alpha), eps, weight_decay, eps_in_sqrt};
  multi_tensor_apply<3>(op, hyper, ptrs, sizes, n, stream, advance_t, skip_on_flag, copies);
}

void adagrad_step_cuda(float* hyper, float* const* ptrs, const int64_t* sizes, int n, float eps, float weight_decay,
                       double lr_decay, cudaStream_t stream, unsigned int* advance_t, bool skip_on_flag,
                       const WeightCopies& copies) {
  const AdagradOp op{eps, weight_decay, lr_decay};
  multi_tensor_apply<3>(op, hyper, ptrs, sizes, n, stream, advance_t, skip_on_flag, copies);
}

void weight_penalty_cuda(float* const* ptrs, const int64_t* sizes, int n, float l1, float l2, cudaStream_t stream) {
  multi_tensor_apply<2>(PenaltyOp{l1, l2}, nullptr, ptrs, sizes, n, stream);
}

// --- dynamic loss scaling (AmpUnscale) ---------------------------------------------------------------

__device__ __forceinline__ bool non_finite(float v) {
  return (__float_as_uint(v) & 0x7f800000u) == 0x7f800000u;  // exponent all ones: Inf or NaN (fast-math safe)
}

// Every block multiplies its chunks by inv = f32(1 / f64(state[0])) and, when it met a non-finite
// value, sets *found (0 at the start of the list's first launch). With `update` (the list's last
// launch), the last block to arrive reads *found, writes state and hyper[2] and sets *found back to
// 0; every block read state[0] before it counted itself, so the scale it used is the old one.
static __global__ void __launch_bounds__(kBlock)
    amp_unscale_kernel(TensorList<1> list, float* __restrict__ state, float* __restrict__ hyper, double growth,
                       double backoff, int64_t interval, unsigned int* counter, unsigned int* found, bool update) {
  const float inv = static_cast<float>(1.0 / static_cast<double>(state[0]));
  int any = 0;
  const int64_t chunks = list.chunk_start[list.n];
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int k = group_of_chunk(list, c);
    const int64_t start = (c - list.chunk_start[k]) * kChunk;
    const int64_t len = list.size[k] - start < kChunk ? list.size[k] - start : kChunk;
    float* p = list.ptr[0][k] + start;
    int64_t done = 0;
    if (aligned16(p)) {
      const int64_t n4 = len / 4;
      for (int64_t i = threadIdx.x; i < n4; i += blockDim.x) {
        float4 v = reinterpret_cast<const float4*>(p)[i];
        any |= non_finite(v.x) | non_finite(v.y) | non_finite(v.z) | non_finite(v.w);
        v.x *= inv, v.y *= inv, v.z *= inv, v.w *= inv;
        reinterpret_cast<float4*>(p)[i] = v;
      }
      done = n4 * 4;
    }
    for (int64_t i = done + threadIdx.x; i < len; i += blockDim.x) {
      any |= non_finite(p[i]);
      p[i] = p[i] * inv;
    }
  }
  if (__syncthreads_or(any) && threadIdx.x == 0) atomicOr(found, 1u);
  if (!update || !last_block(counter) || threadIdx.x != 0) return;
  const bool overflow = atomicExch(found, 0u) != 0;  // read and reset for the next list
  const float scale = state[0];
  if (overflow) {
    state[0] = static_cast<float>(static_cast<double>(scale) * backoff);
    state[1] = 0.f;
    state[2] = state[2] + 1.f;
  } else {
    const float clean = state[1] + 1.f;
    if (clean >= static_cast<float>(interval)) {
      const float grown = static_cast<float>(static_cast<double>(scale) * growth);
      if (!non_finite(grown)) state[0] = grown;
      state[1] = 0.f;
    } else {
      state[1] = clean;
    }
  }
  state[3] = overflow ? 1.f : 0.f;
  hyper[2] = overflow ? 1.f : 0.f;
}

void amp_unscale_cuda(float* state, float* hyper, float* const* grads, const int64_t* sizes, int n, double growth,
                      double backoff, int64_t interval, unsigned int* counter, unsigned int* found,
                      cudaStream_t stream) {
  int last_group = -1;  // the launch holding the last nonempty gradient updates the state
  for (int k = 0; k < n; ++k)
    if (sizes[k] != 0) last_group = k;
  auto launch_list = [&](const TensorList<1>& list, bool update) {
    launch<amp_unscale_kernel>(grid_for_chunks(list.chunk_start[list.n]), kBlock, 0, stream, list, state, hyper,
                               growth, backoff, interval, counter, found, update);
  };
  int next = 0;
  while (next < n) {
    TensorList<1> list;
    next = pack(list, grads, sizes, n, next);
    if (list.n == 0) continue;
    launch_list(list, next > last_group);
  }
  if (last_group < 0) {  // no gradient element at all: the step is clean
    TensorList<1> empty;
    empty.n = 0;
    empty.chunk_start[0] = 0;
    launch_list(empty, true);
  }
}

// --- global-norm clipping --------------------------------------------------------------------------

// Stage 1: block b writes the sum of squares of the chunks b, b + gridDim.x, ... to partial[b].
static __global__ void __launch_bounds__(kBlock) sum_squares_kernel(TensorList<1> list, float* __restrict__ partial) {
  const int64_t chunks = list.chunk_start[list.n];
  float acc = 0;
  for (int64_t c = blockIdx.x; c < chunks; c += gridDim.x) {
    const int k = group_of_chunk(list, c);
    const int64_t start = (c - list.chunk_start[k]) * kChunk;
    const int64_t len = list.size[k] - start < kChunk ? list.size[k] - start : kChunk;
    const float* p = list.ptr[0][k] + start;
    int64_t done = 0;
    if (aligned16(p)) {
      const int64_t n4 = len / 4;
      for (int64_t i = threadIdx.x; i < n4; i += blockDim.x) {
        const float4 v = reinterpret_cast<const float4*>(p)[i];
        acc += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
      }
      done = n4 * 4;
    }
    for (int64_t i = done + threadIdx.x; i < len; i += blockDim.x) acc += p[i] * p[i];
  }
  const float total = block_reduce_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// Stage 2 (one block): norm = sqrt(sum of partials) in f64, fixed order; coef = min(1, max / (norm + 1e-6)).
static __global__ void __launch_bounds__(kBlock)
    clip_coef_kernel(const float* __restrict__ partial, int n_partial, double max_norm, float* __restrict__ total_norm,
                     float* __restrict__ coef) {
  __shared__ double sums[kBlock];
  double acc = 0;
  for (int i = threadIdx.x; i < n_partial; i += blockDim.x) acc += partial[i];
  sums[threadIdx.x] = acc;
  __syncthreads();
  for (int width = kBlock / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) sums[threadIdx.x] += sums[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const float norm = static_cast<float>(sqrt(sums[0]));
    const double ratio = max_norm / (static_cast<double>(norm) + 1e-6);
    total_norm[0] = norm;
    coef[0] = static_cast<float>(ratio > 1.0 ? 1.0 : ratio);  // a NaN norm gives a NaN coefficient
  }
}

namespace {

/// The stage-1 launches of a list: (groups packed, grid) per launch; calls f(list, grid) for each.
template <typename F>
void for_each_sum_launch(float* const* grads, const int64_t* sizes, int n, F f) {
  int next = 0;
  while (next < n) {
    TensorList<1> list;
    next = pack(list, grads, sizes, n, next);
    if (list.n == 0) continue;
    f(list, grid_for_chunks(list.chunk_start[list.n]));
  }
}

}  // namespace

size_t clip_grad_norm_workspace_bytes(const int64_t* sizes, int n) {
  // Only sizes matter for the launch split; pointers are not read.
  size_t partials = 0;
  int next = 0;
  while (next < n) {
    int64_t chunks = 0;
    int packed = 0;
    for (; next < n && packed < TensorList<1>::kMax; ++next) {
      if (sizes[next] == 0) continue;
      chunks += (sizes[next] + kChunk - 1) / kChunk;
      ++packed;
    }
    if (packed) partials += grid_for_chunks(chunks);
  }
  return (partials + 2) * sizeof(float);
}

void clip_grad_norm_cuda(float* const* grads, const int64_t* sizes, int n, double max_norm, float* total_norm,
                         void* workspace, cudaStream_t stream) {
  float* partial = static_cast<float*>(workspace);
  int n_partial = 0;
  for_each_sum_launch(grads, sizes, n, [&](const TensorList<1>& list, unsigned grid) {
    launch<sum_squares_kernel>(grid, kBlock, 0, stream, list, partial + n_partial);
    n_partial += static_cast<int>(grid);
  });
  float* coef = partial + n_partial;
  launch<clip_coef_kernel>(1, kBlock, 0, stream, partial, n_partial, max_norm, total_norm, coef);
  multi_tensor_apply<1>(ScaleOp{}, coef, grads, sizes, n, stream);
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/optim.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_optim_ops puts them into the CUDA op table.

namespace cudl {
namespace {

/// The groups of a checked call flattened for the launchers: ptrs[k * depth + d], sizes[k], and the
/// steps' 16-bit weight copies copy_ptrs[k] (null: none) of copy_types[k].
struct Flat {
  ops::OptimArgs g;
  std::vector<float*> ptrs;
  std::vector<int64_t> sizes;
  std::vector<void*> copy_ptrs;
  std::vector<kernels::WeightCopyType> copy_types;

  kernels::WeightCopies copies() const {
    return g.weight_copies ? kernels::WeightCopies{copy_ptrs.data(), copy_types.data()} : kernels::WeightCopies{};
  }
};

Flat flatten(const OpCall& c) {
  Flat f;
  f.g = ops::check_optim_call(c);
  f.ptrs.reserve(static_cast<size_t>(f.g.n) * f.g.depth);
  for (int k = 0; k < f.g.n; ++k) {
    for (int d = 0; d < f.g.depth; ++d) f.ptrs.push_back(f.g.at(k, d).as<float>());
    f.sizes.push_back(f.g.at(k, 0).numel());
    if (!f.g.weight_copies) continue;
    const TensorView& w = f.g.copy(k);
    f.copy_ptrs.push_back(w.defined() ? w.data : nullptr);
    f.copy_types.push_back(w.defined() && w.dtype == DType::f16 ? kernels::WeightCopyType::f16
                                                                : kernels::WeightCopyType::bf16);
  }
  return f;
}

/// advance_t: the step advances hyper[1] itself (counted in the stream's block counter).
unsigned int* advance_t(const OpCall& c, const Flat& f) {
  return f.g.advance_t ? cuda_context(c).block_counter() : nullptr;
}

void cuda_sgd_step(const OpCall& c) {
  const Flat f = flatten(c);
  const ops::SgdAttrs a = ops::SgdAttrs::from(c.attrs);
  kernels::sgd_step_cuda(f.g.hyper.as<float>(), f.ptrs.data(), f.sizes.data(), f.g.n, f.g.depth,
                         static_cast<float>(a.momentum), static_cast<float>(a.dampening),
                         static_cast<float>(a.weight_decay), a.nesterov,
                         cuda_context(c).stream(), advance_t(c, f), a.skip_on_flag, f.copies());
}

void cuda_adam_step(const OpCall& c) {
  const Flat f = flatten(c);
  const ops::AdamAttrs a = ops::AdamAttrs::from(c.attrs);
  kernels::adam_step_cuda(f.g.hyper.as<float>(), f.ptrs.data(), f.sizes.data(), f.g.n, a.beta1, a.beta2, a.eps,
                          static_cast<float>(a.weight_decay), a.decoupled, a.epsilon_hat, cuda_context(c).stream(),
                          advance_t(c, f), a.skip_on_flag, f.copies());
}

void cuda_rmsprop_step(const OpCall& c) {
  const Flat f = flatten(c);
  const ops::RmspropAttrs a = ops::RmspropAttrs::from(c.attrs);
  kernels::rmsprop_step_cuda(f.g.hyper.as<float>(), f.ptrs.data(), f.sizes.data(), f.g.n, a.alpha,
                             static_cast<float>(a.eps), static_cast<float>(a.weight_decay), a.eps_in_sqrt,
                             cuda_context(c).stream(), advance_t(c, f), a.skip_on_flag, f.copies());
}

void cuda_adagrad_step(const OpCall& c) {
  const Flat f = flatten(c);
  const ops::AdagradAttrs a = ops::AdagradAttrs::from(c.attrs);
  kernels::adagrad_step_cuda(f.g.hyper.as<float>(), f.ptrs.data(), f.sizes.data(), f.g.n, static_cast<float>(a.eps),
                             static_cast<float>(a.weight_decay), a.lr_decay, cuda_context(c).stream(),
                             advance_t(c, f), a.skip_on_flag, f.copies());
}

void cuda_weight_penalty(const OpCall& c) {
  const Flat f = flatten(c);
  const ops::WeightPenaltyAttrs a = ops::WeightPenaltyAttrs::from(c.attrs);
  kernels::weight_penalty_cuda(f.ptrs.data(), f.sizes.data(), f.g.n, static_cast<float>(a.l1), static_cast<float>(a.l2),
                               cuda_context(c).stream());
}

void cuda_clip_grad_norm(const OpCall& c) {
  const Flat f = flatten(c);
  CudaContext& ctx = cuda_context(c);
  void* ws = ctx.workspace(kernels::clip_grad_norm_workspace_bytes(f.sizes.data(), f.g.n));
  kernels::clip_grad_norm_cuda(f.ptrs.data(), f.sizes.data(), f.g.n, ops::ClipGradNormAttrs::from(c.attrs).max_norm,
                               f.g.total_norm.as<float>(), ws,
                               ctx.stream());
}

void cuda_amp_unscale(const OpCall& c) {
  const Flat f = flatten(c);
  const ops::AmpUnscaleAttrs a = ops::AmpUnscaleAttrs::from(c.attrs);
  CudaContext& ctx = cuda_context(c);
  kernels::amp_unscale_cuda(f.g.amp_state.as<float>(), f.g.hyper.as<float>(), f.ptrs.data(), f.sizes.data(), f.g.n,
                            a.growth, a.backoff, a.interval, ctx.block_counter(), ctx.grid_flag(), ctx.stream());
}

}  // namespace

void register_cuda_optim_ops(OpTable& t) {
  t.add(OpKind::SgdStep, cuda_sgd_step);
  t.add(OpKind::AdamStep, cuda_adam_step);
  t.add(OpKind::RmspropStep, cuda_rmsprop_step);
  t.add(OpKind::AdagradStep, cuda_adagrad_step);
  t.add(OpKind::WeightPenalty, cuda_weight_penalty);
  t.add(OpKind::ClipGradNorm, cuda_clip_grad_norm);
  t.add(OpKind::AmpUnscale, cuda_amp_unscale);
}

}  // namespace cudl
