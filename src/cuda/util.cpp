// cuda/util.cpp — CUDA backend entries of the graph utility ops: Accumulate and Increment.
#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/util.cuh"

namespace cudl {
namespace {

int code_of(DType t, const OpCall& c) {
  switch (t) {
    case DType::f32: return 0;
    case DType::i32: return 1;
    case DType::i64: return 2;
    case DType::u8: return 3;
    default: CUDL_FAIL(op_name(c.op), " (", c.label, "): dtype ", t, " not supported");
  }
}

void cuda_accumulate(const OpCall& c) {
  const TensorView& x = c.in(0);
  const TensorView& acc = c.out(0);
  if (acc.dtype != DType::f32 || x.numel() != acc.numel())
    CUDL_FAIL("Accumulate (", c.label, "): acc must be f32 with as many elements as x; got x ", x.shape, " ",
              x.dtype, ", acc ", acc.shape, " ", acc.dtype);
  kernels::accumulate_cuda(acc.as<float>(), x.data, code_of(x.dtype, c), static_cast<float>(c.attrs.f[0]),
                           x.numel(), cuda_context(c).stream());
}

void cuda_increment(const OpCall& c) {
  const TensorView& x = c.out(0);
  const int code = code_of(x.dtype, c);
  if (code == 3) CUDL_FAIL("Increment (", c.label, "): dtype u8 not supported (f32, i32, i64)");
  kernels::increment_cuda(x.data, code, code == 0 ? c.attrs.f[0] : static_cast<double>(c.attrs.i[0]), x.numel(),
                          cuda_context(c).stream());
}

void cuda_batch_indices(const OpCall& c) {
  const TensorView& perm = c.in(0);
  const TensorView& cursor = c.in(1);
  const TensorView& idx = c.out(0);
  if (perm.dtype != DType::i32 || idx.dtype != DType::i32 || cursor.dtype != DType::i64 || perm.numel() == 0)
    CUDL_FAIL("BatchIndices (", c.label, "): expected perm i32 (N > 0), cursor i64, idx i32; got perm ", perm.shape,
              " ", perm.dtype, ", cursor ", cursor.dtype, ", idx ", idx.dtype);
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
