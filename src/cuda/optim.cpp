// cuda/optim.cpp — CUDA backend entries of the optimizer op family: the CPU reference's checks
// (cpu/optim.hpp), then one fused multi-tensor launch per call (kernels/optim.cu).
#include "ops/optim.hpp"

#include <vector>

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/optim.cuh"

namespace cudl {
namespace {

/// The groups of a checked call flattened for the launchers: ptrs[k * depth + d], sizes[k].
struct Flat {
  OptimGroups g;
  std::vector<float*> ptrs;
  std::vector<int64_t> sizes;
};

Flat flatten(const OpCall& c) {
  Flat f;
  f.g = check_optim_call(c);
  f.ptrs.reserve(static_cast<size_t>(f.g.n) * f.g.depth);
  for (int k = 0; k < f.g.n; ++k) {
    for (int d = 0; d < f.g.depth; ++d) f.ptrs.push_back(f.g.at(c, k, d).as<float>());
    f.sizes.push_back(f.g.at(c, k, 0).numel());
  }
  return f;
}

float* hyper_of(const OpCall& c) { return c.inputs[0].as<float>(); }

/// i[1] != 0: the step advances hyper[1] itself (counted in the stream's block counter).
unsigned int* advance_t(const OpCall& c) { return c.attrs.i[1] ? cuda_context(c).block_counter() : nullptr; }

void cuda_sgd_step(const OpCall& c) {
  const Flat f = flatten(c);
  kernels::sgd_step_cuda(hyper_of(c), f.ptrs.data(), f.sizes.data(), f.g.n, f.g.depth, static_cast<float>(c.attrs.f[0]),
                         static_cast<float>(c.attrs.f[1]), static_cast<float>(c.attrs.f[2]), c.attrs.i[0] != 0,
                         cuda_context(c).stream(), advance_t(c));
}

void cuda_adam_step(const OpCall& c) {
  const Flat f = flatten(c);
  kernels::adam_step_cuda(hyper_of(c), f.ptrs.data(), f.sizes.data(), f.g.n, c.attrs.f[0], c.attrs.f[1],
                          static_cast<float>(c.attrs.f[2]), static_cast<float>(c.attrs.f[3]), c.attrs.i[0] != 0,
                          cuda_context(c).stream(), advance_t(c));
}

void cuda_rmsprop_step(const OpCall& c) {
  const Flat f = flatten(c);
  kernels::rmsprop_step_cuda(hyper_of(c), f.ptrs.data(), f.sizes.data(), f.g.n, c.attrs.f[0],
                             static_cast<float>(c.attrs.f[1]), static_cast<float>(c.attrs.f[2]),
                             cuda_context(c).stream(), advance_t(c));
}

void cuda_adagrad_step(const OpCall& c) {
  const Flat f = flatten(c);
  kernels::adagrad_step_cuda(hyper_of(c), f.ptrs.data(), f.sizes.data(), f.g.n, static_cast<float>(c.attrs.f[0]),
                             static_cast<float>(c.attrs.f[1]), c.attrs.f[2], cuda_context(c).stream(),
                             advance_t(c));
}

void cuda_weight_penalty(const OpCall& c) {
  const Flat f = flatten(c);
  kernels::weight_penalty_cuda(f.ptrs.data(), f.sizes.data(), f.g.n, static_cast<float>(c.attrs.f[0]),
                               static_cast<float>(c.attrs.f[1]), cuda_context(c).stream());
}

void cuda_clip_grad_norm(const OpCall& c) {
  const Flat f = flatten(c);
  CudaContext& ctx = cuda_context(c);
  void* ws = ctx.workspace(kernels::clip_grad_norm_workspace_bytes(f.sizes.data(), f.g.n));
  kernels::clip_grad_norm_cuda(f.ptrs.data(), f.sizes.data(), f.g.n, c.attrs.f[0], c.outputs[0].as<float>(), ws,
                               ctx.stream());
}

}  // namespace

void register_cuda_optim_ops(OpTable& t) {
  t.add(OpKind::SgdStep, cuda_sgd_step);
  t.add(OpKind::AdamStep, cuda_adam_step);
  t.add(OpKind::RmspropStep, cuda_rmsprop_step);
  t.add(OpKind::AdagradStep, cuda_adagrad_step);
  t.add(OpKind::WeightPenalty, cuda_weight_penalty);
  t.add(OpKind::ClipGradNorm, cuda_clip_grad_norm);
}

}  // namespace cudl
