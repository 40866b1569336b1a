// cuda/storage_type.hpp — the kernels' element type for a storage DType (ops/precision.hpp): f32 ->
// float, bf16 -> __nv_bfloat16, f16 -> __half, so each op entry dispatches its templated launchers here.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/op.hpp"
#include "cudl/error.hpp"

namespace cudl {

/// Carries a kernel element type through a generic lambda: `using T = typename decltype(tag)::type;`.
template <typename T>
struct StorageTag {
  using type = T;
};

/// Calls fn(StorageTag<T>{}) with T the kernel element type of storage dtype `st` (the value an op's
/// check returned, ops::check_storage). Throws naming `op` for any other dtype.
template <typename Fn>
void with_storage_type(DType st, const char* op, Fn&& fn) {
  switch (st) {
    case DType::f32:
      return fn(StorageTag<float>{});
    case DType::bf16:
      return fn(StorageTag<__nv_bfloat16>{});
    case DType::f16:
      return fn(StorageTag<__half>{});
    default:
      break;
  }
  CUDL_FAIL(op, ": the CUDA kernels have no storage type ", st, " (f32, bf16 or f16)");
}

}  // namespace cudl
