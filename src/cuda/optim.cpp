// cuda/optim.cpp — CUDA backend entries of the optimizer op family: the checks of
// ops/optim.hpp, then one fused multi-tensor launch per call (kernels/optim.cu).
#include "ops/optim.hpp"

#include <vector>

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/optim.cuh"

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
