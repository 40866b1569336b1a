// ops/optim.hpp — argument checks of the optimizer op family, shared by the CPU reference and the
// CUDA backend so both accept and reject exactly the same calls.
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

namespace cudl {

/// A validated multi-tensor call: `n` groups of `depth` f32 tensors starting at input `first`;
/// the tensors of a group share the parameter's shape. Optimizer steps also have a valid hyper
/// tensor (input 0: f32, >= 2 elements); ClipGradNorm a total_norm output (f32[1]).
struct OptimGroups {
  int first = 0;
  int depth = 0;
  int n = 0;
  const TensorView& at(const OpCall& c, int group, int d) const { return c.inputs[first + group * depth + d]; }
};
OptimGroups check_optim_call(const OpCall& call);

}  // namespace cudl
