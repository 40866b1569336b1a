// cuda/norm.cpp — CUDA backend entries of the norm op family: the checks of
// ops/norm.hpp, then kernel launches on the context's stream (kernels/norm.cuh).
#include "ops/norm.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/norm.cuh"

namespace cudl {

namespace {


/// The partial sums of a batch norm split across blocks, in the context's workspace.
float* bn_workspace(CudaContext& ctx, const ops::BatchNormArgs& p) {
  const size_t bytes = kernels::batch_norm_workspace_bytes(p.n, p.c, p.spatial);
  return bytes ? static_cast<float*>(ctx.workspace(bytes)) : nullptr;
}

void batch_norm_train(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_train_cuda(
      p.x.data, p.gamma.as<float>(), p.beta.as<float>(), p.running_mean.as<float>(), p.running_var.as<float>(),
      p.y.data, p.saved_mean.as<float>(), p.saved_invstd.as<float>(), kernels::storage_of(p.storage), p.n, p.c,
      p.spatial, static_cast<float>(p.eps), static_cast<float>(p.momentum), bn_workspace(ctx, p), ctx.stream());
}

void batch_norm_inference(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_inference_cuda(p.x.data, p.gamma.as<float>(), p.beta.as<float>(), p.running_mean.as<float>(),
                                     p.running_var.as<float>(), p.y.data, kernels::storage_of(p.storage), p.n, p.c,
                                     p.spatial, static_cast<float>(p.eps), ctx.stream());
}

void batch_norm_backward(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_backward_cuda(p.x.data, p.gamma.as<float>(), p.saved_mean.as<float>(), p.saved_invstd.as<float>(),
                                    p.dy.data, p.dx.data, p.dgamma.as<float>(), p.dbeta.as<float>(),
                                    kernels::storage_of(p.storage), p.n, p.c, p.spatial, bn_workspace(ctx, p),
                                    ctx.stream());
}

void batch_norm_inference_backward(const OpCall& call) {
  const ops::BatchNormArgs p = ops::check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_inference_backward_cuda(p.dy.data, p.gamma.as<float>(), p.running_var.as<float>(), p.dx.data,
                                              kernels::storage_of(p.storage), p.n, p.c, p.spatial,
                                              static_cast<float>(p.eps), ctx.stream());
}

void batch_norm_stats(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  kernels::batch_norm_stats_cuda(p.x.as<float>(), p.shift.as<float>(), p.stats.as<float>(), p.n, p.c, p.spatial,
                                 cuda_context(call).stream());
}

void batch_norm_apply(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  kernels::batch_norm_apply_cuda(
      p.x.as<float>(), p.gamma.as<float>(), p.beta.as<float>(), p.running_mean.as<float>(), p.running_var.as<float>(),
      p.stats.as<float>(), p.shift.as<float>(), p.y.as<float>(), p.saved_mean.as<float>(), p.saved_invstd.as<float>(),
      p.n, p.c, p.spatial, static_cast<float>(p.eps), static_cast<float>(p.momentum), cuda_context(call).stream());
}

void batch_norm_backward_reduce(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  kernels::batch_norm_backward_reduce_cuda(p.x.as<float>(), p.saved_mean.as<float>(), p.saved_invstd.as<float>(),
                                           p.dy.as<float>(), p.sums.as<float>(), p.dgamma.as<float>(),
                                           p.dbeta.as<float>(), p.n, p.c, p.spatial, cuda_context(call).stream());
}

void batch_norm_backward_apply(const OpCall& call) {
  const ops::SyncBatchNormArgs p = ops::check_sync_batch_norm_call(call);
  kernels::batch_norm_backward_apply_cuda(
      p.x.as<float>(), p.gamma.as<float>(), p.saved_mean.as<float>(), p.saved_invstd.as<float>(), p.dy.as<float>(),
      p.sums.as<float>(), p.stats.as<float>(), p.dx.as<float>(), p.n, p.c, p.spatial, cuda_context(call).stream());
}

void layer_norm(const OpCall& call) {
  const ops::LayerNormArgs p = ops::check_layer_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::layer_norm_cuda(p.x.data, p.gamma.as<float>(), p.beta.as<float>(), p.y.data, p.mean.as<float>(),
                           p.rstd.as<float>(), kernels::storage_of(p.storage), p.rows, p.d, static_cast<float>(p.eps),
                           ctx.stream());
}

void layer_norm_backward(const OpCall& call) {
  const ops::LayerNormArgs p = ops::check_layer_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::layer_norm_backward_cuda(p.x.data, p.gamma.as<float>(), p.mean.as<float>(), p.rstd.as<float>(), p.dy.data,
                                    p.dx.data, p.dgamma.as<float>(), p.dbeta.as<float>(),
                                    kernels::storage_of(p.storage), p.rows, p.d, ctx.stream());
}

}  // namespace

void register_cuda_norm_ops(OpTable& t) {
  t.add(OpKind::BatchNormTrain, batch_norm_train);
  t.add(OpKind::BatchNormInference, batch_norm_inference);
  t.add(OpKind::BatchNormBackward, batch_norm_backward);
  t.add(OpKind::BatchNormInferenceBackward, batch_norm_inference_backward);
  t.add(OpKind::BatchNormStats, batch_norm_stats);
  t.add(OpKind::BatchNormApply, batch_norm_apply);
  t.add(OpKind::BatchNormBackwardReduce, batch_norm_backward_reduce);
  t.add(OpKind::BatchNormBackwardApply, batch_norm_backward_apply);
  t.add(OpKind::LayerNorm, layer_norm);
  t.add(OpKind::LayerNormBackward, layer_norm_backward);
}

}  // namespace cudl
