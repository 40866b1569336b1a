// cuda/data.cpp — CUDA backend entries of the data-movement op family: the checks of
// ops/data.hpp, then the kernels of kernels/data.cu.
#include "ops/data.hpp"

#include <cstring>

#include "backend/backend.hpp"
#include "cuda/context.hpp"
#include "kernels/data.cuh"

namespace cudl {
namespace {

cudaStream_t stream_of(const OpCall& c) { return cuda_context(c).stream(); }

int cast_type(DType t) {
  switch (t) {
    case DType::f16:
      return kernels::kCastF16;
    case DType::bf16:
      return kernels::kCastBf16;
    case DType::i32:
      return kernels::kCastI32;
    default:
      return kernels::kCastF32;
  }
}

void cuda_fill(const OpCall& c) {
  const ops::FillArgs p = ops::check_fill_call(c);
  uint64_t bits = 0;
  std::memcpy(&bits, p.bytes, static_cast<size_t>(p.elem_size));
  kernels::fill_cuda(p.y.data, p.n, p.elem_size, bits, stream_of(c));
}

void cuda_copy(const OpCall& c) {
  const ops::CopyArgs p = ops::check_copy_call(c);
  if (p.y.data == p.x.data) return;
  kernels::copy_bytes_cuda(p.y.data, p.x.data, p.bytes, stream_of(c));
}

void cuda_cast(const OpCall& c) {
  const ops::CastArgs p = ops::check_cast_call(c);
  const TensorView& x = p.x;
  const TensorView& y = p.y;
  if (x.dtype == y.dtype) {
    if (x.data != y.data)
      kernels::copy_bytes_cuda(y.data, x.data, x.numel() * static_cast<int64_t>(dtype_size(x.dtype)), stream_of(c));
    return;
  }
  kernels::cast_cuda(x.data, cast_type(x.dtype), y.data, cast_type(y.dtype), x.numel(), stream_of(c));
}

void cuda_permute(const OpCall& c) {
  const ops::PermuteArgs p = ops::check_permute_call(c);
  kernels::permute_cuda(p.x.data, p.y.data, p.elem_size, p.rank, p.out_dims, p.in_strides, p.n,
                        stream_of(c));
}

void cuda_concat(const OpCall& c) {
  const ops::ConcatArgs p = ops::check_concat_call(c);
  const int64_t es = p.elem_size, y_pitch = p.total * p.inner * es;
  int64_t at = 0;
  for (int k = 0; k < p.n_xs; ++k) {
    const int64_t row = p.lens[k] * p.inner * es;
    kernels::copy_rows_cuda(static_cast<char*>(p.y.data) + at, y_pitch, p.xs[k].data, row, p.outer, row,
                            stream_of(c));
    at += row;
  }
}

void cuda_slice(const OpCall& c) {
  const ops::SliceArgs p = ops::check_slice_call(c);
  const int64_t es = p.elem_size, part = p.len * p.inner * es;
  kernels::copy_rows_cuda(p.y.data, part, static_cast<const char*>(p.x.data) + p.start * p.inner * es,
                          p.full * p.inner * es, p.outer, part, stream_of(c));
}

void cuda_slice_backward(const OpCall& c) {
  const ops::SliceArgs p = ops::check_slice_call(c);
  const int64_t es = p.elem_size;
  kernels::slice_backward_cuda(p.dy.data, p.dx.data, p.outer, p.full * p.inner * es,
                               p.start * p.inner * es, p.len * p.inner * es, stream_of(c));
}

void cuda_gather(const OpCall& c) {
  const ops::GatherArgs p = ops::check_gather_call(c);
  if (p.y.dtype != p.table.dtype) {  // f32 table -> bf16 / f16 rows (16-bit storage)
    kernels::gather_rows_convert_cuda(p.table.as<float>(), p.idx.as<int32_t>(), p.y.data,
                                      kernels::storage_of(p.y.dtype), p.rows, p.row, p.m, stream_of(c));
    return;
  }
  kernels::gather_rows_cuda(p.table.data, p.idx.as<int32_t>(), p.y.data, p.rows, p.row * p.elem_size,
                            p.m, stream_of(c));
}

void cuda_gather_backward(const OpCall& c) {
  const ops::GatherArgs p = ops::check_gather_call(c);
  CudaContext& ctx = cuda_context(c);
  void* ws = ctx.workspace(kernels::gather_backward_workspace_bytes(p.rows, p.m));
  kernels::gather_backward_cuda(p.dy.data, kernels::storage_of(p.dy.dtype), p.idx.as<int32_t>(),
                                p.dtable.as<float>(), p.rows, p.row, p.m, ws, ctx.stream());
}

void cuda_one_hot(const OpCall& c) {
  const ops::OneHotArgs p = ops::check_one_hot_call(c);
  kernels::one_hot_cuda(p.labels.as<int32_t>(), p.y.as<float>(), p.n, p.classes, stream_of(c));
}

void cuda_gather_images(const OpCall& c) {
  const ops::GatherArgs p = ops::check_gather_call(c);
  kernels::gather_images_cuda(p.table.as<uint8_t>(), p.idx.as<int32_t>(), p.y.as<float>(), p.rows,
                              p.row, p.m, p.mean, p.stddev,
                              stream_of(c));
}

void cuda_gather_batch(const OpCall& c) {
  const ops::GatherBatchArgs p = ops::check_gather_batch_call(c);
  CudaContext& ctx = cuda_context(c);
  kernels::GatherBatchArgs a;
  a.perm = p.perm.as<int32_t>();
  a.n = p.n;
  a.cursor = p.cursor.as<int64_t>();
  a.block_counter = ctx.block_counter();
  a.x = p.x.data;
  a.xb = p.xb.data;
  a.xb_dtype = p.xb.dtype;
  a.y = p.y.data;
  a.yb = p.yb.data;
  a.rows = p.rows;
  a.b = p.b;
  a.x_row = p.x_row;
  a.y_row_bytes = p.y_row_bytes;
  a.images = p.images;
  a.mean = p.mean;
  a.stddev = p.stddev;
  kernels::gather_batch_cuda(a, ctx.stream());
}

}  // namespace

void register_cuda_data_ops(OpTable& t) {
  t.add(OpKind::Fill, cuda_fill);
  t.add(OpKind::Copy, cuda_copy);
  t.add(OpKind::Cast, cuda_cast);
  t.add(OpKind::Permute, cuda_permute);
  t.add(OpKind::Concat, cuda_concat);
  t.add(OpKind::Slice, cuda_slice);
  t.add(OpKind::SliceBackward, cuda_slice_backward);
  t.add(OpKind::Gather, cuda_gather);
  t.add(OpKind::GatherBackward, cuda_gather_backward);
  t.add(OpKind::OneHot, cuda_one_hot);
  t.add(OpKind::GatherImages, cuda_gather_images);
  t.add(OpKind::GatherBatch, cuda_gather_batch);
}

}  // namespace cudl
