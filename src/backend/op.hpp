// backend/op.hpp — the op table's vocabulary: op kinds, their attributes and the call record.
// This file is the contract between the CPU reference (src/cpu) and the CUDA backend (src/cuda).
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "cudl/device.hpp"
#include "cudl/dtype.hpp"
#include "cudl/shape.hpp"
#include "cudl/tensor.hpp"

namespace cudl {

// Every op a backend can implement. Conventions: inputs then outputs, all contiguous row-major;
// outputs are preallocated by the caller with the documented shape; an optional output or input
// is passed as an undefined view (data == nullptr). f32 unless stated. "attrs.f[k]" / "attrs.i[k]"
// name the attribute slots each op reads. Backward ops never use floating-point atomics.
enum class OpKind : int {
  // --- elementwise (kernels/elementwise.cu, src/cpu/elementwise.cpp) ---
  Unary,           // in: x              out: y             i[0]=UnaryOp, f[0]=alpha (leaky_relu, elu)
  UnaryBackward,   // in: x, y, dy       out: dx            same attrs; x or y may be undefined when the
                   //                                       op's derivative does not need it (see unary_needs)
  Binary,          // in: a, b           out: c = a op b, numpy broadcasting; i[0]=BinaryOp
  BinaryBackward,  // in: a, b, dc       out: da, db (either may be undefined), summed over broadcast dims
  BinaryScalar,    // in: x              out: y = x op f[0] (i[1]==0) or f[0] op x (i[1]==1); i[0]=BinaryOp
  BinaryScalarBackward,  // in: x, dy    out: dx; attrs as BinaryScalar
  // --- reductions (kernels/reduce.cu, src/cpu/reduce.cpp) ---
  Reduce,          // in: x              out: y, [indices i64 for Max]; i[0]=ReduceOp, i[1]=axis
                   // (negative counts from the back; kReduceAllAxes = every axis), i[2]=keepdim,
                   // i[3]=unbiased (Var)
  ReduceBackward,  // in: x, y, dy, [indices]  out: dx; same attrs. x is read only for Var, y never
                   // (either may be undefined otherwise), indices are required for Max
  Argmax,          // in: x              out: indices (i32); i[1]=axis, i[2]=keepdim. Max and Argmax:
                   // first occurrence wins, NaN counts as the maximum (like torch)
  // --- matmul / linear (kernels/matmul.cu, src/cuda/matmul.cpp via cuBLASLt, src/cpu/matmul.cpp) ---
  Matmul,          // in: a (..., M, K), b (..., K, N) or (K, N)   out: c (..., M, N)
                   // i[0]=trans_a, i[1]=trans_b (then a is (..., K, M), b is (..., N, K))
  Linear,          // in: x (N, in), w (out, in), [bias (out)]   out: y (N, out), [pre (N, out) for Gelu
                   // | relu mask u8 (N, relu_mask_row_bytes(out)) for Relu]
                   // i[0]=Epilogue (None, Relu, Gelu): y = act(x·wᵀ + b); pre = x·wᵀ + b
                   // (pre only with Gelu). The activations are cuBLASLt's fused epilogues: Gelu is the
                   // tanh form 0.5v(1 + tanh(sqrt(2/pi)(v + 0.044715v^3))); Relu is max(v, 0) with
                   // NaN -> 0 (unlike the Unary relu). x may have leading dims (..., in), flattened.
                   // The relu mask (cpu/matmul.hpp) has bit j%8 of byte j/8 of row r set where pre > 0.
  LinearBackward,  // in: x, w, dy, [y for Relu], [pre for Gelu], [relu mask below]
                   // out: dx, dw, db, [db below] (any may be undefined)
                   // slots: in 3 = y, in 4 = pre (Relu accepts either); x needed only for dw, w for dx.
                   // i[1]=1: x is the output of a Linear with Relu whose mask is in 5: dx is taken
                   // through that relu (dx = mask ⊙ dpre·w, the lower layer's dpre) and out 3 gets its
                   // bias gradient Σ_rows dx: on CUDA one GEMM with the DRELU_BGRAD epilogue
  // --- convolution (src/cuda/conv.cpp via cuDNN graph API + im2col fallback, src/cpu/conv.cpp) ---
  Conv2d,          // in: x (N, C, H, W), w (K, C/g, R, S), [bias (K)]   out: y (N, K, P, Q)
                   // i[0..1]=stride h,w  i[2..3]=pad h,w  i[4..5]=dilation h,w  i[6]=groups
                   // i[7]=Epilogue (None, Relu)
  Conv2dBackwardData,    // in: dy, w       out: dx (shape of x);  attrs as Conv2d (epilogue ignored)
  Conv2dBackwardFilter,  // in: x, dy       out: dw;  attrs as Conv2d
  Conv2dBackwardBias,    // in: dy          out: db (K)
  // --- pooling (kernels/pool.cu, src/cpu/pool.cpp) ---
  MaxPool2d,       // in: x (N,C,H,W)    out: y (N,C,P,Q), [argmax i32 (N,C,P,Q), flat index into H*W]
                   // i[0..1]=kernel h,w  i[2..3]=stride h,w  i[4..5]=pad h,w
  MaxPool2dBackward,     // in: x, y, dy   out: dx; attrs as MaxPool2d (ties: first max in window order)
  AvgPool2d,       // as MaxPool2d; padding counts as zeros in the average (count_include_pad)
  AvgPool2dBackward,     // in: dy         out: dx (shape given by dx)
  GlobalAvgPool,   // in: x (N,C,H,W)    out: y (N,C)
  GlobalAvgPoolBackward, // in: dy (N,C)   out: dx (N,C,H,W)
                   // pooling: padding at most half the kernel; max pooling's NaN counts as the maximum
                   // (first NaN wins); backward ops gather per input element (no atomics)
  // --- normalisation (kernels/norm.cu, src/cpu/norm.cpp) ---
  BatchNormTrain,  // in: x (N,C,...), gamma (C), beta (C), running_mean (C), running_var (C)
                   // out: y, saved_mean (C), saved_invstd (C); running stats updated in place:
                   // r = (1-f[1])*r + f[1]*batch (running_var uses the unbiased variance); f[0]=eps
                   // gamma/beta may be undefined (1/0); running stats may be undefined (not updated);
                   // saved_* may be undefined. With N*spatial == 1 the variance is 0 (y = beta) and
                   // the unbiased variance is taken as 0, so running_var stays finite.
  BatchNormInference,    // in: x, gamma, beta, running_mean, running_var   out: y; f[0]=eps
  BatchNormBackward,     // in: x, gamma, saved_mean, saved_invstd, dy   out: dx, dgamma, dbeta
  LayerNorm,       // in: x (..., D), [gamma (D)], [beta (D)]   out: y, mean (rows), rstd (rows); f[0]=eps
  LayerNormBackward,     // in: x, gamma, mean, rstd, dy   out: dx, dgamma, dbeta
                   // norms: biased variance, invstd/rstd = 1/sqrt(var + eps); gamma and each output of
                   // the backward ops may be undefined; mean/rstd may be undefined in LayerNorm
  // --- randomness (kernels/random.cu, src/cpu/random.cpp; Philox-4x32-10 in src/backend/philox.hpp) ---
  Dropout,         // in: x, rng (i64[2] on the device: {seed, offset})   out: y, mask (u8)
                   // f[0]=p (drop probability), i[0]=stream id (distinguishes dropout layers)
  DropoutBackward, // in: dy, mask       out: dx = dy * mask / (1-p); f[0]=p
  RandomUniform,   // out: y ~ U[f[0], f[1]);  i[0]=seed (low 63 bits), i[1]=offset
  RandomNormal,    // out: y ~ N(f[0], f[1]^2); i[0]=seed, i[1]=offset
  // Random details (src/cpu/random.cpp is the spec, backend/philox.hpp the generator): element i
  // uses word i%4 of philox4x32_10(counter {lo32(b), hi32(b), lo32(s), hi32(s)}, key {lo32(seed),
  // hi32(seed)}) with b = i/4 + offset and s = stream id (Dropout: i[0]; RandomUniform/Normal: i[2]).
  // A call consumes philox::blocks(numel) = ceil(numel/4) counter blocks from `offset`: advance the
  // offset by at least that between calls sharing seed and stream (e.g. Increment on a view of
  // element 1 of the rng tensor). The kernels read rng on the device; nothing modifies it.
  // u = (word >> 8) * 2^-24 in [0, 1). Dropout keeps element i iff (word >> 8) >= ceil(p * 2^24);
  // y = keep ? x / (1-p) : 0 (dropped elements are exactly 0, even for NaN/Inf x; p = 1 gives all
  // zeros), mask = keep; the mask output may be undefined. RandomUniform y = fma(f1 - f0, u, f0);
  // RandomNormal pairs words (0,1) and (2,3) of a block by Box-Muller (u1 from the first word in
  // (0, 1], angle from the second) and y = fma(f1, z, f0). Dropout and RandomUniform are bitwise
  // equal on CPU and CUDA; RandomNormal to a few ulp (logf/sinf/cosf differ between platforms).
  // --- softmax (kernels/softmax.cu, src/cpu/softmax.cpp), along the last axis ---
  Softmax,         // in: x (..., C)     out: y
  SoftmaxBackward, // in: y, dy          out: dx
  LogSoftmax,      // in: x              out: y
  LogSoftmaxBackward,    // in: y, dy     out: dx
  // --- losses (kernels/loss.cu, src/cpu/loss.cpp) ---
  // in: pred, target, [dloss (f32[1])]; out: loss (f32[1]), [dpred], [correct (i32[1]) for CE],
  // [loss_acc (f32[1])], [correct_acc (f32[1]) for CE]
  // i[0]=Reduction (Mean, Sum); dpred = d loss / d pred, times dloss when given. Mean divides by
  // the number of elements (per-sample losses: by the number of rows). The accumulators are metric
  // sums updated in place, in f32 as Accumulate would: loss_acc += f[1] * loss, correct_acc += correct.
  MseLoss, L1Loss,
  HuberLoss,       // f[0]=delta
  BceLoss,         // pred: probabilities in (0,1); log clamped at -100 like PyTorch
  BceWithLogitsLoss,
  CrossEntropyLoss,      // pred: logits (N, C); target: labels i32 (N); f[0]=label smoothing
  SoftCrossEntropyLoss,  // pred: logits (N, C); target: probabilities or one-hot f32 (N, C)
  NllLoss,         // pred: log-probabilities (N, C); target: labels i32 (N)
  // Loss details (src/cpu/loss.cpp is the spec): loss may be undefined when another output is
  // given. Huber: f[0]=delta > 0. CE smoothing e: target (1-e) one_hot + e/C (as PyTorch); CE's
  // correct counts rows whose argmax (first max, NaN counts as max) equals the label. NaN in pred
  // gives a NaN loss. Labels outside [0, C): the CPU throws naming the op and the label; CUDA cannot
  // throw from a kernel, so that row's loss term and its dpred row are NaN (the loss is NaN) and it
  // never counts as correct. The final reduction is deterministic (fixed-order partials, no float
  // atomics); on CUDA each loss is one kernel launch, whose last block does that reduction.
  // --- optimizers (kernels/optim.cu, src/cpu/optim.cpp): multi-tensor, in place ---
  // in: hyper (f32 on the device: [0]=lr, [1]=step t, 1-based, already incremented unless i[1]), then per
  // parameter a group of tensors; out: none (updates in place). See optim attrs below.
  SgdStep,         // groups: (param, grad, [momentum_buf]); f[0]=momentum f[1]=dampening
                   // f[2]=weight_decay i[0]=nesterov
  AdamStep,        // groups: (param, grad, m, v); f[0]=beta1 f[1]=beta2 f[2]=eps f[3]=weight_decay
                   // i[0]=decoupled (AdamW)
  RmspropStep,     // groups: (param, grad, sq_avg); f[0]=alpha f[1]=eps f[2]=weight_decay
  AdagradStep,     // groups: (param, grad, sum); f[0]=eps f[1]=weight_decay
  WeightPenalty,   // groups: (param, grad); grad += f[0]*sign(param) + f[1]*param  (L1, L2)
  ClipGradNorm,    // in: grads...   out: total_norm (f32[1]); scales grads in place by
                   // min(1, f[0] / (norm + 1e-6)); deterministic two-stage reduction
  // Optimizer details (src/cpu/optim.cpp is the spec; the rules are torch.optim's): every tensor is
  // f32, a group's tensors have the parameter's shape. SgdStep groups have 3 tensors when
  // momentum != 0, else 2; at t == 1 the momentum buffer is overwritten with the (decayed) gradient
  // (torch: buffer None), so it need not be initialised; nesterov needs momentum > 0, dampening 0.
  // Adam/RMSprop/Adagrad state starts as the caller initialised it (zeros, or Adagrad's initial
  // accumulator value). AdamStep: decoupled -> p *= 1 - lr*wd, else g += wd*p; m, v updated;
  // p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). RmspropStep (not centered, no momentum):
  // sq = a*sq + (1-a)*g^2, p -= lr*g/(sqrt(sq)+eps). AdagradStep: f[2]=lr_decay, clr = lr/(1+(t-1)
  // *lr_decay), sum += g^2, p -= clr*g/(sqrt(sum)+eps). Gradients are never modified by the steps.
  // WeightPenalty takes the hyper slot too (input 0, unused, may be undefined); sign(0) = 0.
  // ClipGradNorm has no hyper input: inputs are the gradients; f[0]=max_norm > 0; a NaN norm gives
  // NaN gradients (like torch). Sgd/Adam/Rmsprop/AdagradStep with i[1] != 0 advance t themselves
  // (hyper[1] += 1 in f32, then the update with the new t), so the training step needs no separate
  // Increment; on CUDA the last block of the last launch stores it, after every block has read the
  // old t. On CUDA one launch covers every tensor of the list (more launches
  // only when the list outgrows the kernel's 4 KB argument block), and lr and t are read from hyper
  // by the kernel, so a captured graph follows a changing schedule; the CPU additionally checks t >= 1.
  // --- data movement (kernels/data.cu, src/cpu/data.cpp) ---
  Fill,            // out: y = f[0]
  Copy,            // in: x              out: y (same numel, any shape)
  Cast,            // in: x              out: y (dtype of y), f32 <-> f16/bf16/i32
  Permute,         // in: x              out: y; i[0..rank-1]=perm (y dim k = x dim perm[k])
  Concat,          // in: x0, x1, ...    out: y; i[0]=axis
  Slice,           // in: x              out: y; i[0]=axis i[1]=start (length from y)
  SliceBackward,   // in: dy             out: dx (zeros outside the slice); i[0]=axis i[1]=start
  Gather,          // in: table (R, ...), idx i32 (M)   out: y (M, ...)
  GatherBackward,  // in: dy (M, ...), idx  out: dtable (R, ...) (deterministic: sorted segments)
  OneHot,          // in: labels i32 (N)  out: y f32 (N, C)
  GatherImages,    // in: images u8 (R, ...), idx i32 (B)   out: y f32 (B, ...) = (u8/255 - f[0]) / f[1]
  GatherBatch,     // in: perm i32 (N), x (R, ...) u8 or f32, y (R, ...)   out: xb f32 (B, ...), yb (B, ...),
                   // cursor i64[1] (device) updated in place: a training step's whole data stage.
                   // Row j of xb and yb is table row perm[(cursor + j) mod N]; then cursor += B.
                   // u8 x: xb as GatherImages (f[0]=mean, f[1]=std); f32 x: copied. y: any dtype, yb alike
  // Data details (src/cpu/data.cpp is the spec): Fill, Copy, Permute, Concat, Slice, SliceBackward
  // and Gather move bytes of any dtype (inputs and outputs of one dtype). Fill converts f[0] like
  // backend/convert.hpp's element_bytes (floats round to nearest even; integers truncate and
  // saturate, NaN -> 0). Copy: x and y must not partially overlap. Cast rounds f32 -> f16/bf16 to
  // nearest even (NaN stays NaN, overflow gives Inf), f32 -> i32 truncates toward zero with NaN -> 0
  // and saturation (convert::f32_to_i32), i32 -> f32 rounds to nearest even; same dtype copies.
  // Concat/Slice: negative axis counts from the back; Slice needs 0 <= start, start+len <= dim.
  // Gather/GatherBackward/GatherImages: idx may have any shape; y is idx.shape followed by the
  // table's dims after the first. GatherBackward (f32) sums the dy rows of each table row in
  // increasing position order starting from 0 (bitwise equal on CPU and CUDA). OneHot: labels of any
  // shape, y = labels.shape + (C,). Out-of-range indices or labels: the CPU throws naming the op,
  // the index and the table shape; CUDA cannot throw from a kernel, so Gather writes all-ones bytes
  // (NaN for f32, -1 for i32), GatherImages and OneHot write NaN rows, GatherBackward ignores them.
  // GatherImages computes (float(u) / 255.f - f[0]) / f[1] in f32 (bitwise equal on CPU and CUDA).
  // GatherBatch = BatchIndices + GatherImages or Gather (x) + Gather (y) + Increment (cursor) in one
  // call: x and y have the same number of rows R, N > 0, the cursor is read as cursor mod N (never
  // negative) and advanced by B after the gather. Out-of-range perm entries: the CPU throws as Gather
  // does, before writing anything (the cursor stays); CUDA writes NaN x rows (as GatherImages for u8
  // x, as Gather for f32 x) and all-ones y rows, and still advances the cursor. On CUDA it is one
  // kernel: every block reads the cursor, and the last block to finish writes cursor + B.
  // --- graph utilities (kernels/util.cu, src/cpu/util.cpp): step counters and device-side metrics ---
  Accumulate,      // in: x (f32, i32, i64 or u8; n elements)   out: acc (f32, n) updated in place:
                   // acc += f[0] * x
  Increment,       // out: x (f32, i32 or i64) updated in place: x += f[0] (f32) or i[0] (integers)
  BatchIndices,    // in: perm i32 (N), cursor i64[1] (device)   out: idx i32 (B):
                   // idx[j] = perm[(cursor + j) % N]; the cursor is advanced by a separate Increment
  // --- image augmentation (kernels/augment.cu, src/cpu/augment.cpp; math in backend/augment.hpp) ---
  AugmentImages,   // in: x (B, C, H, W), rng i64[2] {seed, offset} (device)   out: y (B, C, H, W), not x:
                   // each image shifted by an integer (tx, ty) uniform in [-i[0], i[0]]^2 and rotated about
                   // its centre by an angle uniform in [-f[0], f[0]) degrees, bilinear, f[1] outside;
                   // per-image Philox words keyed by (seed, offset, image, stream id i[1]). No backward.
  Count
};

constexpr int kOpCount = static_cast<int>(OpKind::Count);
CUDL_API const char* op_name(OpKind op);

enum class UnaryOp : int {
  Relu, LeakyRelu, Elu, GeluErf, GeluTanh, Silu, Sigmoid, Tanh, Softplus,
  Exp, Log, Sqrt, Abs, Neg, Square, Count
};
// Unary semantics (like PyTorch): relu(NaN) = NaN; softplus(x) = x for x > 20, else log1p(exp(x));
// gelu_tanh uses 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))). UnaryBackward reads y (the output)
// for Relu (dx = y > 0 ? dy : 0, NaN passes dy), Sigmoid, Tanh, Exp, Sqrt (dy / (2y)); nothing for
// Neg; x (the input) for every other op. abs'(x) = sign(x) with sign(0) = 0, sign(NaN) = NaN.
/// True when UnaryBackward of `op` reads its input x (in 0).
constexpr bool unary_needs_input(UnaryOp op) {
  return !(op == UnaryOp::Relu || op == UnaryOp::Sigmoid || op == UnaryOp::Tanh || op == UnaryOp::Exp ||
           op == UnaryOp::Sqrt || op == UnaryOp::Neg);
}
/// True when UnaryBackward of `op` reads the forward output y (in 1).
constexpr bool unary_needs_output(UnaryOp op) {
  return op == UnaryOp::Relu || op == UnaryOp::Sigmoid || op == UnaryOp::Tanh || op == UnaryOp::Exp ||
         op == UnaryOp::Sqrt;
}
// Maximum / Minimum propagate NaN (like torch.maximum). Their gradients follow PyTorch: on ties
// (a == b) each side gets dc / 2; otherwise the selected side gets dc; when either is NaN both get dc.
// BinaryBackward reads a and b (their shapes always; values for Mul, Div, Maximum, Minimum).
enum class BinaryOp : int { Add, Sub, Mul, Div, Maximum, Minimum, Count };
enum class ReduceOp : int { Sum, Mean, Max, Var, Count };
enum class Epilogue : int { None, Relu, Gelu };
enum class Reduction : int { Mean, Sum };
constexpr int64_t kReduceAllAxes = -1000;  // i[1] value for "reduce over every axis"

/// Scalar attributes of a call; each op documents which slots it reads.
struct OpAttrs {
  std::array<double, 4> f{};
  std::array<int64_t, 8> i{};
};

/// A non-owning view of a contiguous tensor, as ops see it.
struct TensorView {
  void* data = nullptr;
  Shape shape;
  DType dtype = DType::f32;
  Device device;

  bool defined() const { return data != nullptr; }
  int64_t numel() const { return shape.numel(); }
  template <typename T> T* as() const { return static_cast<T*>(data); }
  static TensorView of(const Tensor& t) {
    return t.defined() ? TensorView{t.data(), t.shape(), t.dtype(), t.device()} : TensorView{};
  }
};

class ExecContext;  // backend/backend.hpp

/// One call of an op: what the backend function receives.
struct OpCall {
  OpKind op = OpKind::Count;
  const TensorView* inputs = nullptr;
  int n_inputs = 0;
  const TensorView* outputs = nullptr;
  int n_outputs = 0;
  OpAttrs attrs;
  ExecContext* ctx = nullptr;
  const char* label = "";  // "layer/op" for errors and profiling

  const TensorView& in(int k) const;   // throws naming the op when k is out of range
  const TensorView& out(int k) const;
  bool has_in(int k) const { return k < n_inputs && inputs[k].defined(); }
  bool has_out(int k) const { return k < n_outputs && outputs[k].defined(); }
};

}  // namespace cudl
