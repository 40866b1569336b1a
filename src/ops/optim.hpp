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

namespace cudl {
namespace ops {

/// SgdStep: f[0] = momentum, f[1] = dampening, f[2] = weight_decay, i[0] = nesterov, i[1] = advance_t.
/// e.g. ops::SgdAttrs{0.9, 0, 5e-4, true, true}.to_op_attrs().
struct SgdAttrs {
  double momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, advance_t = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = momentum, a.f[1] = dampening, a.f[2] = weight_decay;
    a.i[0] = nesterov ? 1 : 0, a.i[1] = advance_t ? 1 : 0;
    return a;
  }
  static SgdAttrs from(const OpAttrs& a) { return {a.f[0], a.f[1], a.f[2], a.i[0] != 0, a.i[1] != 0}; }
};

/// AdamStep: f[0] = beta1, f[1] = beta2, f[2] = eps, f[3] = weight_decay, i[0] = decoupled (AdamW),
/// i[1] = advance_t, i[2] = epsilon_hat (Keras's rule: eps is added before the bias correction).
struct AdamAttrs {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false, advance_t = false, epsilon_hat = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = beta1, a.f[1] = beta2, a.f[2] = eps, a.f[3] = weight_decay;
    a.i[0] = decoupled ? 1 : 0, a.i[1] = advance_t ? 1 : 0, a.i[2] = epsilon_hat ? 1 : 0;
    return a;
  }
  static AdamAttrs from(const OpAttrs& a) {
    return {a.f[0], a.f[1], a.f[2], a.f[3], a.i[0] != 0, a.i[1] != 0, a.i[2] != 0};
  }
};

/// RmspropStep: f[0] = alpha, f[1] = eps, f[2] = weight_decay, i[1] = advance_t, i[2] = eps_in_sqrt
/// (Keras's rule: p -= lr*g/sqrt(sq + eps)).
struct RmspropAttrs {
  double alpha = 0.99, eps = 1e-8, weight_decay = 0;
  bool advance_t = false, eps_in_sqrt = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = alpha, a.f[1] = eps, a.f[2] = weight_decay;
    a.i[1] = advance_t ? 1 : 0, a.i[2] = eps_in_sqrt ? 1 : 0;
    return a;
  }
  static RmspropAttrs from(const OpAttrs& a) { return {a.f[0], a.f[1], a.f[2], a.i[1] != 0, a.i[2] != 0}; }
};

/// AdagradStep: f[0] = eps, f[1] = weight_decay, f[2] = lr_decay, i[1] = advance_t.
struct AdagradAttrs {
  double eps = 1e-10, weight_decay = 0, lr_decay = 0;
  bool advance_t = false;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = eps, a.f[1] = weight_decay, a.f[2] = lr_decay;
    a.i[1] = advance_t ? 1 : 0;
    return a;
  }
  static AdagradAttrs from(const OpAttrs& a) { return {a.f[0], a.f[1], a.f[2], a.i[1] != 0}; }
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

/// A validated multi-tensor call: `n` groups of `depth` f32 tensors starting at input `first`;
/// the tensors of a group share the parameter's shape. Optimizer steps also have a valid hyper
/// tensor (input 0: f32, >= 2 elements); ClipGradNorm a total_norm output (f32[1]).
struct OptimArgs {
  TensorView hyper;       // Sgd/Adam/Rmsprop/AdagradStep: [lr, t]; undefined for ClipGradNorm
  TensorView total_norm;  // ClipGradNorm's output
  const TensorView* tensors = nullptr;  // the call's inputs
  int first = 0;
  int depth = 0;
  int n = 0;
  bool advance_t = false;  // the step advances hyper[1] itself (the steps' advance_t attribute)
  /// Tensor d of group `group` (0 = the parameter, for ClipGradNorm the gradient).
  const TensorView& at(int group, int d) const { return tensors[first + group * depth + d]; }
};
OptimArgs check_optim_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
