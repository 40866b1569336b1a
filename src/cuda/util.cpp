// cuda/util.cpp — CUDA backend entries of the graph utility ops: Accumulate, Increment, BatchIndices.
#include "backend/backend.hpp"
#include "ops/util.hpp"
#include "cuda/context.hpp"
#include "kernels/util.cuh"

namespace cudl {
namespace {

// The kernels' dtype codes (kernels/util.cuh); the shared checks have rejected anything else.
int code_of(DType t) {
  switch (t) {
    case DType::f32: return 0;
    case DType::i32: return 1;
    case DType::i64: return 2;
    default: return 3;  // u8
  }
}

void cuda_accumulate(const OpCall& c) {
  const ops::AccumulateArgs p = ops::check_accumulate_call(c);
  const TensorView& x = p.x;
  kernels::accumulate_cuda(p.acc.as<float>(), x.data, code_of(x.dtype), p.scale,
                           x.numel(), cuda_context(c).stream());
}

void cuda_increment(const OpCall& c) {
  const ops::IncrementArgs p = ops::check_increment_call(c);
  const TensorView& x = p.x;
  const int code = code_of(x.dtype);
  kernels::increment_cuda(x.data, code, code == 0 ? p.attrs.step : static_cast<double>(p.attrs.int_step), x.numel(),
                          cuda_context(c).stream());
}

void cuda_batch_indices(const OpCall& c) {
  const ops::BatchIndicesArgs p = ops::check_batch_indices_call(c);
  const TensorView& perm = p.perm;
  const TensorView& cursor = p.cursor;
  const TensorView& idx = p.idx;
  kernels::batch_indices_cuda(idx.as<int32_t>(), perm.as<int32_t>(), cursor.as<int64_t>(), perm.numel(), idx.numel(),
                              cuda_context(c).stream());
}

}  // namespace

void register_cuda_util_ops(OpTable& t) {
  t.add(OpKind::Accumulate, cuda_accumulate);
  t.add(OpKind::Increment, cuda_increment);
  t.add(OpKind::BatchIndices, cuda_batch_indices);
}

}  // namespace cudl
