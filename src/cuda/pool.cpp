// cuda/pool.cpp — CUDA backend entries of the pool op family: the checks of
// ops/pool.hpp, then kernel launches on the context's stream (kernels/pool.cuh).
#include "ops/pool.hpp"

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/pool.cuh"

namespace cudl {

namespace {

kernels::Pool2dShape shape_of(const ops::PoolGeometry& g) {
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
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::max_pool2d_cuda(g.x.data, g.y.data, g.argmax.as<int32_t>(), kernels::storage_of(g.storage), shape_of(g),
                           cuda_context(call).stream());
}

void max_pool2d_backward(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::max_pool2d_backward_cuda(g.x.data, g.y.data, g.dy.data, g.dx.data, kernels::storage_of(g.storage),
                                    shape_of(g), cuda_context(call).stream());
}

void avg_pool2d(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::avg_pool2d_cuda(g.x.data, g.y.data, kernels::storage_of(g.storage), shape_of(g),
                           cuda_context(call).stream());
}

void avg_pool2d_backward(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::avg_pool2d_backward_cuda(g.dy.data, g.dx.data, kernels::storage_of(g.storage), shape_of(g),
                                    cuda_context(call).stream());
}

void global_avg_pool(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::global_avg_pool_cuda(g.x.data, g.y.data, kernels::storage_of(g.storage), g.n * g.c, g.h * g.w,
                                cuda_context(call).stream());
}

void global_avg_pool_backward(const OpCall& call) {
  const ops::PoolArgs g = ops::check_pool_call(call);
  kernels::global_avg_pool_backward_cuda(g.dy.data, g.dx.data, kernels::storage_of(g.storage), g.n * g.c, g.h * g.w,
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
