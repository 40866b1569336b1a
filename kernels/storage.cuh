// kernels/storage.cuh — the storage-type code that launchers of kernels generic over f32/bf16/f16
// take (the device side, load widening and store rounding, lives in kernels/common.cuh).
#pragma once

#include "cudl/dtype.hpp"
#include "cudl/error.hpp"

namespace cudl::kernels {

/// The float type a kernel reads and writes its storage-typed tensors in; its math is fp32 always.
enum class Storage : int { kF32 = 0, kBf16 = 1, kF16 = 2 };

inline Storage storage_of(DType t) {
  switch (t) {
    case DType::f32:
      return Storage::kF32;
    case DType::bf16:
      return Storage::kBf16;
    case DType::f16:
      return Storage::kF16;
    default:
      CUDL_FAIL("storage_of: ", t, " is not a float storage type (f32, bf16 or f16)");
  }
}

}  // namespace cudl::kernels
