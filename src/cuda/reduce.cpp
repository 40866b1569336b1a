// cuda/reduce.cpp — CUDA backend entries of the reduce op family: checks (src/ops),
// workspace carving, then kernel launches on the context's stream.
#include "ops/reduce.hpp"

#include <climits>

#include "ops/common.hpp"
#include "cuda/context.hpp"
#include "kernels/reduce.cuh"

namespace cudl {

namespace {

size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

ops::ReduceArgs check_for_cuda(const OpCall& call) {
  const ops::ReduceArgs p = ops::check_reduce_call(call);
  if (p.R > INT_MAX)
    CUDL_FAIL(op_checks::who(call), ": reducing ", p.R, " elements along one axis of ", p.x_shape,
              " is not supported on CUDA (at most 2^31 - 1)");
  return p;
}

void cuda_reduce(const OpCall& call) {
  const ops::ReduceArgs p = check_for_cuda(call);
  CudaContext& ctx = cuda_context(call);
  const size_t ws = kernels::reduce_workspace_bytes(p.outer, p.R, p.inner);
  kernels::reduce_cuda(static_cast<int>(p.op), p.unbiased, p.x.as<float>(), p.y.as<float>(),
                       p.indices.as<int64_t>(), nullptr, p.outer, p.R, p.inner,
                       ws ? ctx.workspace(ws) : nullptr, ctx.stream());
}

void cuda_reduce_backward(const OpCall& call) {
  const ops::ReduceArgs p = check_for_cuda(call);
  CudaContext& ctx = cuda_context(call);
  const float* x = p.x.as<float>();
  const int64_t* idx = p.indices.as<int64_t>();
  float* mean = nullptr;
  if (p.op == ReduceOp::Var) {
    // The per-output means first (into the workspace), then the elementwise gradient.
    const size_t mean_bytes = align256(static_cast<size_t>(p.out_numel()) * sizeof(float));
    const size_t ws = kernels::reduce_workspace_bytes(p.outer, p.R, p.inner);
    char* base = static_cast<char*>(ctx.workspace(mean_bytes + ws));
    mean = reinterpret_cast<float*>(base);
    kernels::reduce_cuda(static_cast<int>(ReduceOp::Mean), false, x, mean, nullptr, nullptr, p.outer, p.R, p.inner,
                         ws ? base + mean_bytes : nullptr, ctx.stream());
  }
  kernels::reduce_backward_cuda(static_cast<int>(p.op), p.unbiased, x, mean, p.dy.as<float>(), idx,
                                p.dx.as<float>(), p.outer, p.R, p.inner, ctx.stream());
}

void cuda_argmax(const OpCall& call) {
  const ops::ReduceArgs p = check_for_cuda(call);
  CudaContext& ctx = cuda_context(call);
  const size_t ws = kernels::reduce_workspace_bytes(p.outer, p.R, p.inner);
  kernels::reduce_cuda(static_cast<int>(ReduceOp::Max), false, p.x.as<float>(), nullptr, nullptr,
                       p.indices.as<int32_t>(), p.outer, p.R, p.inner, ws ? ctx.workspace(ws) : nullptr,
                       ctx.stream());
}

}  // namespace

void register_cuda_reduce_ops(OpTable& t) {
  t.add(OpKind::Reduce, cuda_reduce);
  t.add(OpKind::ReduceBackward, cuda_reduce_backward);
  t.add(OpKind::Argmax, cuda_argmax);
}

}  // namespace cudl
