// cuda/loss.cpp — CUDA backend entries of the loss op family: the same checks as the CPU
// reference (cpu/loss.hpp), then kernel launches on the context's stream (kernels/loss.cuh).
#include "ops/loss.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/loss.cuh"

namespace cudl {

namespace {

struct LossPointers {
  const float* dloss;
  float* dpred;
  kernels::LossSink sink;
};

LossPointers pointers(const OpCall& call, const LossProblem& p, CudaContext& ctx) {
  kernels::LossSink s;
  s.loss = p.has_loss ? call.out(0).as<float>() : nullptr;
  s.correct = p.has_correct ? call.out(2).as<int32_t>() : nullptr;
  s.loss_acc = p.has_loss_acc ? call.out(3).as<float>() : nullptr;
  s.acc_scale = p.acc_scale;
  s.correct_acc = p.has_correct_acc ? call.out(4).as<float>() : nullptr;
  s.counter = ctx.block_counter();
  return {p.has_dloss ? call.in(2).as<float>() : nullptr, p.has_dpred ? call.out(1).as<float>() : nullptr, s};
}

template <kernels::ElementwiseLoss kKind>
void elementwise_loss(const OpCall& call) {
  const LossProblem p = check_loss_call(call);
  CudaContext& ctx = cuda_context(call);
  const LossPointers io = pointers(call, p, ctx);
  void* ws = ctx.workspace(kernels::loss_workspace_bytes(p.n, false));
  kernels::elementwise_loss_cuda(kKind, static_cast<float>(p.param), call.in(0).as<float>(), call.in(1).as<float>(),
                                 p.n, p.mean, io.dloss, io.dpred, io.sink, ws, ctx.stream());
}

void cross_entropy_loss(const OpCall& call) {
  const LossProblem p = check_loss_call(call);
  CudaContext& ctx = cuda_context(call);
  const LossPointers io = pointers(call, p, ctx);
  void* ws = ctx.workspace(kernels::loss_workspace_bytes(p.rows, true));
  kernels::cross_entropy_loss_cuda(call.in(0).as<float>(), call.in(1).as<int32_t>(), p.rows, p.cols,
                                   static_cast<float>(p.param), p.mean, io.dloss, io.dpred, io.sink, ws, ctx.stream());
}

void soft_cross_entropy_loss(const OpCall& call) {
  const LossProblem p = check_loss_call(call);
  CudaContext& ctx = cuda_context(call);
  const LossPointers io = pointers(call, p, ctx);
  void* ws = ctx.workspace(kernels::loss_workspace_bytes(p.rows, true));
  kernels::soft_cross_entropy_loss_cuda(call.in(0).as<float>(), call.in(1).as<float>(), p.rows, p.cols, p.mean,
                                        io.dloss, io.dpred, io.sink, ws, ctx.stream());
}

void nll_loss(const OpCall& call) {
  const LossProblem p = check_loss_call(call);
  CudaContext& ctx = cuda_context(call);
  const LossPointers io = pointers(call, p, ctx);
  void* ws = ctx.workspace(kernels::loss_workspace_bytes(p.rows, true));
  kernels::nll_loss_cuda(call.in(0).as<float>(), call.in(1).as<int32_t>(), p.rows, p.cols, p.mean, io.dloss, io.dpred,
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
