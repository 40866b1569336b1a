// cuda/pool.cpp — CUDA backend entries of the pool op family: the same checks as the CPU
// reference (cpu/pool.hpp), then kernel launches on the context's stream (kernels/pool.cuh).
#include "ops/pool.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/pool.cuh"

namespace cudl {

namespace {

kernels::Pool2dShape shape_of(const PoolGeometry& g) {
  return {g.n,
          g.c,
          g.h,
          g.w,
          g.p,
          g.q,
          static_cast<int>(g.kh),
          static_cast<int>(g.kw),
          static_cast<int>(g.sh),
          static_cast<int>(g.sw),
          static_cast<int>(g.ph),
          static_cast<int>(g.pw)};
}

void max_pool2d(const OpCall& call) {
  const PoolGeometry g = check_pool_call(call);
  kernels::max_pool2d_cuda(call.in(0).as<float>(), call.out(0).as<float>(),
                           g.has_argmax ? call.out(1).as<int32_t>() : nullptr, shape_of(g),
                           cuda_context(call).stream());
}

void max_pool2d_backward(const OpCall& call) {
  const PoolGeometry g = check_pool_call(call);
  kernels::max_pool2d_backward_cuda(call.in(0).as<float>(), call.in(1).as<float>(), call.in(2).as<float>(),
                                    call.out(0).as<float>(), shape_of(g), cuda_context(call).stream());
}

void avg_pool2d(const OpCall& call) {
  const PoolGeometry g = check_pool_call(call);
  kernels::avg_pool2d_cuda(call.in(0).as<float>(), call.out(0).as<float>(), shape_of(g), cuda_context(call).stream());
}

void avg_pool2d_backward(const OpCall& call) {
  const PoolGeometry g = check_pool_call(call);
  kernels::avg_pool2d_backward_cuda(call.in(0).as<float>(), call.out(0).as<float>(), shape_of(g),
                                    cuda_context(call).stream());
}

void global_avg_pool(const OpCall& call) {
  const PoolGeometry g = check_pool_call(call);
  kernels::global_avg_pool_cuda(call.in(0).as<float>(), call.out(0).as<float>(), g.n * g.c, g.h * g.w,
                                cuda_context(call).stream());
}

void global_avg_pool_backward(const OpCall& call) {
  const PoolGeometry g = check_pool_call(call);
  kernels::global_avg_pool_backward_cuda(call.in(0).as<float>(), call.out(0).as<float>(), g.n * g.c, g.h * g.w,
                                         cuda_context(call).stream());
}

}  // namespace

void register_cuda_pool_ops(OpTable& t) {
  t.add(OpKind::MaxPool2d, max_pool2d);
  t.add(OpKind::MaxPool2dBackward, max_pool2d_backward);
  t.add(OpKind::AvgPool2d, avg_pool2d);
  t.add(OpKind::AvgPool2dBackward, avg_pool2d_backward);
  t.add(OpKind::GlobalAvgPool, global_avg_pool);
  t.add(OpKind::GlobalAvgPoolBackward, global_avg_pool_backward);
}

}  // namespace cudl
