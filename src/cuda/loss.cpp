// cuda/loss.cpp — CUDA backend entries of the loss op family: the checks of
// ops/loss.hpp, then kernel launches on the context's stream (kernels/loss.cuh).
#include "ops/loss.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/loss.cuh"

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
