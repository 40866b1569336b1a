// cuda/norm.cpp — CUDA backend entries of the norm op family: the same checks as the CPU
// reference (cpu/norm.hpp), then kernel launches on the context's stream (kernels/norm.cuh).
#include "ops/norm.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/norm.cuh"

namespace cudl {

namespace {

float* out_or_null(const OpCall& call, int k) { return call.has_out(k) ? call.out(k).as<float>() : nullptr; }
float* in_or_null(const OpCall& call, int k) { return call.has_in(k) ? call.in(k).as<float>() : nullptr; }

void batch_norm_train(const OpCall& call) {
  const BatchNormProblem p = check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_train_cuda(call.in(0).as<float>(), in_or_null(call, 1), in_or_null(call, 2),
                                 p.has_running ? call.in(3).as<float>() : nullptr,
                                 p.has_running ? call.in(4).as<float>() : nullptr, call.out(0).as<float>(),
                                 p.has_saved ? call.out(1).as<float>() : nullptr,
                                 p.has_saved ? call.out(2).as<float>() : nullptr, p.n, p.c, p.spatial,
                                 static_cast<float>(p.eps), static_cast<float>(p.momentum), ctx.stream());
}

void batch_norm_inference(const OpCall& call) {
  const BatchNormProblem p = check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_inference_cuda(call.in(0).as<float>(), in_or_null(call, 1), in_or_null(call, 2),
                                     call.in(3).as<float>(), call.in(4).as<float>(), call.out(0).as<float>(), p.n, p.c,
                                     p.spatial, static_cast<float>(p.eps), ctx.stream());
}

void batch_norm_backward(const OpCall& call) {
  const BatchNormProblem p = check_batch_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::batch_norm_backward_cuda(call.in(0).as<float>(), in_or_null(call, 1), call.in(2).as<float>(),
                                    call.in(3).as<float>(), call.in(4).as<float>(), out_or_null(call, 0),
                                    out_or_null(call, 1), out_or_null(call, 2), p.n, p.c, p.spatial, ctx.stream());
}

void layer_norm(const OpCall& call) {
  const LayerNormProblem p = check_layer_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::layer_norm_cuda(call.in(0).as<float>(), in_or_null(call, 1), in_or_null(call, 2), call.out(0).as<float>(),
                           p.has_stats ? call.out(1).as<float>() : nullptr,
                           p.has_stats ? call.out(2).as<float>() : nullptr, p.rows, p.d, static_cast<float>(p.eps),
                           ctx.stream());
}

void layer_norm_backward(const OpCall& call) {
  const LayerNormProblem p = check_layer_norm_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::layer_norm_backward_cuda(call.in(0).as<float>(), in_or_null(call, 1), call.in(2).as<float>(),
                                    call.in(3).as<float>(), call.in(4).as<float>(), out_or_null(call, 0),
                                    out_or_null(call, 1), out_or_null(call, 2), p.rows, p.d, ctx.stream());
}

}  // namespace

void register_cuda_norm_ops(OpTable& t) {
  t.add(OpKind::BatchNormTrain, batch_norm_train);
  t.add(OpKind::BatchNormInference, batch_norm_inference);
  t.add(OpKind::BatchNormBackward, batch_norm_backward);
  t.add(OpKind::LayerNorm, layer_norm);
  t.add(OpKind::LayerNormBackward, layer_norm_backward);
}

}  // namespace cudl
