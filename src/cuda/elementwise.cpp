// cuda/elementwise.cpp — CUDA backend entries of the elementwise op family: checks (ops/elementwise.hpp), broadcast
// planning on the host, then kernel launches on the context's stream for the call's storage type.
#include "ops/elementwise.hpp"

#include "cuda/context.hpp"
#include "cuda/storage_type.hpp"
#include "kernels/elementwise.cuh"

namespace cudl {

namespace {

static_assert(kernels::kMaxBroadcastDims == Shape::kMaxDims, "broadcast structs must hold every dimension");

// True when the collapsed loop nest is a plain elementwise walk over all three tensors.
bool is_elementwise(const BroadcastLayout& l) {
  return l.rank == 0 || (l.rank == 1 && l.a_stride[0] == 1 && l.b_stride[0] == 1);
}

kernels::BroadcastStrides to_strides(const BroadcastLayout& l) {
  kernels::BroadcastStrides s{};
  s.rank = l.rank;
  for (int d = 0; d < l.rank; ++d) {
    s.dims[d] = l.dims[d];
    s.a_stride[d] = l.a_stride[d];
    s.b_stride[d] = l.b_stride[d];
  }
  return s;
}

// Splits c's loop nest into the dimensions `self` keeps (its own elements) and those it is
// broadcast over (summed in its gradient).
kernels::BroadcastGradPlan grad_plan(const BroadcastLayout& l, bool self_is_a) {
  kernels::BroadcastGradPlan p{};
  p.red_count = 1;
  int64_t c_stride = 1;
  // Innermost first, so each dimension knows its stride in c; then reverse each list.
  int64_t ks[Shape::kMaxDims], kc[Shape::kMaxDims], ko[Shape::kMaxDims];
  int64_t rs[Shape::kMaxDims], rc[Shape::kMaxDims], ro[Shape::kMaxDims];
  int nk = 0, nr = 0;
  for (int d = l.rank - 1; d >= 0; --d) {
    const int64_t self_stride = self_is_a ? l.a_stride[d] : l.b_stride[d];
    const int64_t other_stride = self_is_a ? l.b_stride[d] : l.a_stride[d];
    if (self_stride != 0) {
      ks[nk] = l.dims[d], kc[nk] = c_stride, ko[nk] = other_stride, ++nk;
    } else {
      rs[nr] = l.dims[d], rc[nr] = c_stride, ro[nr] = other_stride, ++nr;
      p.red_count *= l.dims[d];
    }
    c_stride *= l.dims[d];
  }
  p.n_kept = nk;
  p.n_red = nr;
  for (int k = 0; k < nk; ++k)
    p.kept_size[k] = ks[nk - 1 - k], p.kept_c[k] = kc[nk - 1 - k], p.kept_other[k] = ko[nk - 1 - k];
  for (int k = 0; k < nr; ++k)
    p.red_size[k] = rs[nr - 1 - k], p.red_c[k] = rc[nr - 1 - k], p.red_other[k] = ro[nr - 1 - k];
  return p;
}

// The kernels' element type T follows the call's storage type (f32, bf16 or f16; ops/precision.hpp).

void cuda_unary(const OpCall& call) {
  const ops::UnaryArgs p = ops::check_unary_call(call);
  with_storage_type(p.storage, "Unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::unary_cuda<T>(static_cast<int>(p.op), p.alpha, p.x.as<T>(), p.y.as<T>(), p.n, cuda_context(call).stream());
  });
}

void cuda_unary_backward(const OpCall& call) {
  const ops::UnaryArgs p = ops::check_unary_call(call);
  with_storage_type(p.storage, "UnaryBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::unary_backward_cuda<T>(static_cast<int>(p.op), p.alpha, p.x.as<T>(), p.y.as<T>(), p.dy.as<T>(),
                                    p.dx.as<T>(), p.n, cuda_context(call).stream());
  });
}

void cuda_binary(const OpCall& call) {
  const ops::BinaryArgs p = ops::check_binary_call(call);
  const BroadcastLayout l = broadcast_layout(p.a_shape, p.b_shape, p.c_shape);
  const kernels::BroadcastStrides s = to_strides(l);
  with_storage_type(p.storage, "Binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::binary_cuda<T>(static_cast<int>(p.op), p.a.as<T>(), p.b.as<T>(), p.c.as<T>(), p.c_shape.numel(),
                            is_elementwise(l) ? nullptr : &s, cuda_context(call).stream());
  });
}

void cuda_binary_backward(const OpCall& call) {
  const ops::BinaryArgs p = ops::check_binary_call(call);
  const BroadcastLayout l = broadcast_layout(p.a_shape, p.b_shape, p.c_shape);
  cudaStream_t stream = cuda_context(call).stream();
  with_storage_type(p.storage, "BinaryBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = p.a.as<T>();
    const T* b = p.b.as<T>();
    const T* dc = p.dc.as<T>();
    T* da = p.da.as<T>();
    T* db = p.db.as<T>();
    if (is_elementwise(l)) {
      kernels::binary_backward_same_cuda<T>(static_cast<int>(p.op), a, b, dc, da, db, p.c_shape.numel(), stream);
      return;
    }
    if (da)
      kernels::binary_backward_reduce_cuda<T>(static_cast<int>(p.op), true, a, b, dc, da, p.a_shape.numel(),
                                              grad_plan(l, true), stream);
    if (db)
      kernels::binary_backward_reduce_cuda<T>(static_cast<int>(p.op), false, a, b, dc, db, p.b_shape.numel(),
                                              grad_plan(l, false), stream);
  });
}

void cuda_binary_scalar(const OpCall& call) {
  const ops::BinaryScalarArgs p = ops::check_binary_scalar_call(call);
  with_storage_type(p.storage, "BinaryScalar", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::binary_scalar_cuda<T>(static_cast<int>(p.op), p.scalar, p.scalar_first, p.x.as<T>(), p.y.as<T>(), p.n,
                                   cuda_context(call).stream());
  });
}

void cuda_binary_scalar_backward(const OpCall& call) {
  const ops::BinaryScalarArgs p = ops::check_binary_scalar_call(call);
  with_storage_type(p.storage, "BinaryScalarBackward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::binary_scalar_backward_cuda<T>(static_cast<int>(p.op), p.scalar, p.scalar_first, p.x.as<T>(), p.dy.as<T>(),
                                            p.dx.as<T>(), p.n, cuda_context(call).stream());
  });
}

}  // namespace

void register_cuda_elementwise_ops(OpTable& t) {
  t.add(OpKind::Unary, cuda_unary);
  t.add(OpKind::UnaryBackward, cuda_unary_backward);
  t.add(OpKind::Binary, cuda_binary);
  t.add(OpKind::BinaryBackward, cuda_binary_backward);
  t.add(OpKind::BinaryScalar, cuda_binary_scalar);
  t.add(OpKind::BinaryScalarBackward, cuda_binary_scalar_backward);
}

}  // namespace cudl
