// ops/optim.hpp — the optimizer op family's contract: typed attributes, the multi-tensor argument
// view and the checks the CPU reference and the CUDA backend run first.
#pragma once

#include "backend/op.hpp"

// --- optimizers (kernels/optim.cu, src/cpu/optim.cpp): multi-tensor, in place ---
// in: hyper (f32 on the device: [0]=lr, [1]=step t, 1-based, already incremented unless i[1]), then per
// parameter a group of tensors; out: none (updates in place). See optim attrs below.
// SgdStep         groups: (param, grad, [momentum_buf]); f[0]=momentum f[1]=dampening
//                   f[2]=weight_decay i[0]=nesterov
// AdamStep        groups: (param, grad, m, v); f[0]=beta1 f[1]=beta2 f[2]=eps f[3]=weight_decay
//                   i[0]=decoupled (AdamW)
// RmspropStep     groups: (param, grad, sq_avg); f[0]=alpha f[1]=eps f[2]=weight_decay
// AdagradStep     groups: (param, grad, sum); f[0]=eps f[1]=weight_decay
// WeightPenalty   groups: (param, grad); grad += f[0]*sign(param) + f[1]*param  (L1, L2)
// ClipGradNorm    in: grads...   out: total_norm (f32[1]); scales grads in place by
//                   min(1, f[0] / (norm + 1e-6)); deterministic two-stage reduction
// AmpUnscale      in: state (f32[4]), hyper (f32, >= 3 elements), grads...; out: none. Dynamic loss
//                   scaling (torch.cuda.amp.GradScaler): f[0]=growth f[1]=backoff i[0]=growth interval
// Optimizer details (src/cpu/optim.cpp is the spec; the rules are torch.optim's): every tensor is
// f32, a group's tensors have the parameter's shape. SgdStep groups have 3 tensors when
// momentum != 0, else 2; at t == 1 the momentum buffer is overwritten with the (decayed) gradient
// (torch: buffer None), so it need not be initialised; nesterov needs momentum > 0, dampening 0.
// Adam/RMSprop/Adagrad state starts as the caller initialised it (zeros, or Adagrad's initial
// accumulator value). AdamStep: decoupled -> p *= 1 - lr*wd, else g += wd*p; m, v updated;
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps), or with i[2] (epsilon_hat, Keras/TF's rule)
// p -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps), i.e. eps/sqrt(1-b2^t) in the first form. RmspropStep (not centered, no momentum):
// sq = a*sq + (1-a)*g^2, p -= lr*g/(sqrt(sq)+eps), or with i[2] (Keras's rule) lr*g/sqrt(sq+eps). AdagradStep: f[2]=lr_decay, clr = lr/(1+(t-1)
// *lr_decay), sum += g^2, p -= clr*g/(sqrt(sum)+eps). Gradients are never modified by the steps.
// WeightPenalty takes the hyper slot too (input 0, unused, may be undefined); sign(0) = 0.
// ClipGradNorm has no hyper input: inputs are the gradients; f[0]=max_norm > 0; a NaN norm gives
// NaN gradients (like torch). Sgd/Adam/Rmsprop/AdagradStep with i[1] != 0 advance t themselves
// (hyper[1] += 1 in f32, then the update with the new t), so the training step needs no separate
// Increment; on CUDA the last block of the last launch stores it, after every block has read the
// old t. On CUDA one launch covers every tensor of the list (more launches
// only when the list outgrows the kernel's 4 KB argument block), and lr and t are read from hyper
// by the kernel, so a captured graph follows a changing schedule; the CPU additionally checks t >= 1.
// Skipping a step (i[3], skip_on_flag; the mixed-precision f16 step): the step reads hyper[2] (so hyper
// needs >= 3 elements) and, when it is nonzero, leaves every parameter and state tensor untouched
// and does not advance t; on CUDA every block reads the flag on the device, so a captured graph
// skips or steps as the flag says at replay.
// 16-bit weight copies (i[4], weight_copies; the mixed-precision training step): every group has one
// more tensor at its end, the parameter's bf16 or f16 copy (its shape), or undefined when that
// parameter has none; in the pass that updates the f32 parameter the step also stores
// round_to_nearest_even(new parameter) there, so the forward of the next step reads it instead of a
// Cast. A skipped step (skip_on_flag) writes neither, so the copy stays the unchanged master's.
// AmpUnscale details (torch's _amp_foreach_non_finite_check_and_unscale_ + _amp_update_scale_):
// state = [scale, clean steps since the last change, skipped steps in total, last step overflowed
// (0/1)], all f32 on the device. inv = f32(1 / f64(scale)); every gradient element g (f32) becomes
// g * inv, found = any g (before scaling) is NaN or +-Inf. Then, with the scale read before this
// call: found -> scale *= backoff, clean = 0, skipped += 1, state[3] = 1, hyper[2] = 1; else
// clean += 1, and when clean reaches the interval scale *= growth (only if the result is finite,
// like torch) and clean = 0; state[3] = 0, hyper[2] = 0. The new scale is f32(f64(scale) * factor).
// growth >= 1, 0 < backoff <= 1, interval >= 1. On CUDA one launch covers every gradient (more only
// when the list outgrows the argument block); the last block of the last launch, once every block
// has unscaled its chunks and reported what it found, updates state and hyper.

namespace cudl {
namespace ops {

/// Every optimizer step: i[3] = skip_on_flag (the step does nothing when hyper[2] != 0).
constexpr int kSkipOnFlagSlot = 3;
/// Every optimizer step: i[4] = weight_copies (each group ends with the parameter's 16-bit copy).
constexpr int kWeightCopiesSlot = 4;

/// SgdStep: f[0] = momentum, f[1] = dampening, f[2] = weight_decay, i[0] = nesterov, i[1] = advance_t,
/// i[3] = skip_on_flag. e.g. ops::SgdAttrs{0.9, 0, 5e-4, true, true}.to_op_attrs().
struct SgdAttrs {
  double momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, advance_t = false, skip_on_flag = false, weight_copies = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = momentum, a.f[1] = dampening, a.f[2] = weight_decay;
    a.i[0] = nesterov ? 1 : 0, a.i[1] = advance_t ? 1 : 0, a.i[kSkipOnFlagSlot] = skip_on_flag ? 1 : 0;
    a.i[kWeightCopiesSlot] = weight_copies ? 1 : 0;
    return a;
  }
  static SgdAttrs from(const OpAttrs& a) {
    return {a.f[0], a.f[1], a.f[2], a.i[0] != 0, a.i[1] != 0, a.i[kSkipOnFlagSlot] != 0, a.i[kWeightCopiesSlot] != 0};
  }
};

/// AdamStep: f[0] = beta1, f[1] = beta2, f[2] = eps, f[3] = weight_decay, i[0] = decoupled (AdamW),
/// i[1] = advance_t, i[2] = epsilon_hat (Keras's rule: eps is added before the bias correction),
/// i[3] = skip_on_flag.
struct AdamAttrs {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false, advance_t = false, epsilon_hat = false, skip_on_flag = false, weight_copies = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = beta1, a.f[1] = beta2, a.f[2] = eps, a.f[3] = weight_decay;
    a.i[0] = decoupled ? 1 : 0, a.i[1] = advance_t ? 1 : 0, a.i[2] = epsilon_hat ? 1 : 0;
    a.i[kSkipOnFlagSlot] = skip_on_flag ? 1 : 0;
    a.i[kWeightCopiesSlot] = weight_copies ? 1 : 0;
    return a;
  }
  static AdamAttrs from(const OpAttrs& a) {
    return {a.f[0],      a.f[1],      a.f[2],      a.f[3], a.i[0] != 0, a.i[1] != 0, a.i[2] != 0,
            a.i[kSkipOnFlagSlot] != 0, a.i[kWeightCopiesSlot] != 0};
  }
};

/// RmspropStep: f[0] = alpha, f[1] = eps, f[2] = weight_decay, i[1] = advance_t, i[2] = eps_in_sqrt
/// (Keras's rule: p -= lr*g/sqrt(sq + eps)), i[3] = skip_on_flag.
struct RmspropAttrs {
  double alpha = 0.99, eps = 1e-8, weight_decay = 0;
  bool advance_t = false, eps_in_sqrt = false, skip_on_flag = false, weight_copies = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = alpha, a.f[1] = eps, a.f[2] = weight_decay;
    a.i[1] = advance_t ? 1 : 0, a.i[2] = eps_in_sqrt ? 1 : 0, a.i[kSkipOnFlagSlot] = skip_on_flag ? 1 : 0;
    a.i[kWeightCopiesSlot] = weight_copies ? 1 : 0;
    return a;
  }
  static RmspropAttrs from(const OpAttrs& a) {
    return {a.f[0], a.f[1], a.f[2], a.i[1] != 0, a.i[2] != 0, a.i[kSkipOnFlagSlot] != 0, a.i[kWeightCopiesSlot] != 0};
  }
};

/// AdagradStep: f[0] = eps, f[1] = weight_decay, f[2] = lr_decay, i[1] = advance_t, i[3] = skip_on_flag.
struct AdagradAttrs {
  double eps = 1e-10, weight_decay = 0, lr_decay = 0;
  bool advance_t = false, skip_on_flag = false, weight_copies = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = eps, a.f[1] = weight_decay, a.f[2] = lr_decay;
    a.i[1] = advance_t ? 1 : 0, a.i[kSkipOnFlagSlot] = skip_on_flag ? 1 : 0;
    a.i[kWeightCopiesSlot] = weight_copies ? 1 : 0;
    return a;
  }
  static AdagradAttrs from(const OpAttrs& a) {
    return {a.f[0], a.f[1], a.f[2], a.i[1] != 0, a.i[kSkipOnFlagSlot] != 0, a.i[kWeightCopiesSlot] != 0};
  }
};

/// WeightPenalty: f[0] = l1, f[1] = l2 (grad += l1 * sign(param) + l2 * param).
struct WeightPenaltyAttrs {
  double l1 = 0, l2 = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = l1, a.f[1] = l2;
    return a;
  }
  static WeightPenaltyAttrs from(const OpAttrs& a) { return {a.f[0], a.f[1]}; }
};

/// ClipGradNorm: f[0] = max_norm > 0.
struct ClipGradNormAttrs {
  double max_norm = 1;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = max_norm;
    return a;
  }
  static ClipGradNormAttrs from(const OpAttrs& a) { return {a.f[0]}; }
};

/// AmpUnscale: f[0] = growth factor (>= 1), f[1] = backoff factor (in (0, 1]), i[0] = growth interval
/// (>= 1). The defaults are torch.cuda.amp.GradScaler's.
struct AmpUnscaleAttrs {
  double growth = 2.0, backoff = 0.5;
  int64_t interval = 2000;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = growth, a.f[1] = backoff;
    a.i[0] = interval;
    return a;
  }
  static AmpUnscaleAttrs from(const OpAttrs& a) { return {a.f[0], a.f[1], a.i[0]}; }
};

/// AmpUnscale's state tensor: f32[kAmpStateSize] = [scale, clean steps, skipped steps, overflowed].
constexpr int kAmpStateSize = 4;

/// A validated multi-tensor call: `n` groups of `depth` f32 tensors starting at input `first`
/// (+ the 16-bit copy with weight_copies: `stride` = depth + 1 inputs per group);
/// the tensors of a group share the parameter's shape. Optimizer steps also have a valid hyper
/// tensor (input 0: f32, >= 2 elements, >= 3 with skip_on_flag); ClipGradNorm a total_norm output
/// (f32[1]); AmpUnscale its state (input 0, f32[4]) and hyper (input 1, f32, >= 3 elements).
struct OptimArgs {
  TensorView hyper;       // the steps: [lr, t, (skip flag)]; AmpUnscale: [lr, t, skip flag]; else undefined
  TensorView total_norm;  // ClipGradNorm's output
  TensorView amp_state;   // AmpUnscale's state
  const TensorView* tensors = nullptr;  // the call's inputs
  int first = 0;
  int depth = 0;   // f32 tensors per group
  int stride = 0;  // inputs per group: depth, + 1 with weight_copies
  int n = 0;
  bool advance_t = false;      // the step advances hyper[1] itself (the steps' advance_t attribute)
  bool skip_on_flag = false;   // the step does nothing when hyper[2] != 0 (the steps' skip_on_flag)
  bool weight_copies = false;  // each group ends with the parameter's 16-bit copy (may be undefined)
  /// Tensor d of group `group` (0 = the parameter, for ClipGradNorm the gradient).
  const TensorView& at(int group, int d) const { return tensors[first + group * stride + d]; }
  /// The 16-bit copy of group `group`'s parameter (weight_copies; undefined when it has none).
  const TensorView& copy(int group) const { return tensors[first + group * stride + depth]; }
};
OptimArgs check_optim_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
