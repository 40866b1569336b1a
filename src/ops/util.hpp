// ops/util.hpp — argument checks of the graph utility ops, shared by the CPU reference and the
// CUDA backend so both reject the same calls with the same messages.
#pragma once

#include "backend/backend.hpp"
#include "cudl/error.hpp"

// --- graph utilities (kernels/util.cu, src/cpu/util.cpp): step counters and device-side metrics ---
// Accumulate      in: x (f32, i32, i64 or u8; n elements)   out: acc (f32, n) updated in place:
//                   acc += f[0] * x
// Increment       out: x (f32, i32 or i64) updated in place: x += f[0] (f32) or i[0] (integers)
// BatchIndices    in: perm i32 (N), cursor i64[1] (device)   out: idx i32 (B):
//                   idx[j] = perm[(cursor + j) % N]; the cursor is advanced by a separate Increment

namespace cudl {

/// Accumulate: x f32, i32, i64 or u8; acc f32 with as many elements as x.
inline void check_accumulate_call(const OpCall& c) {
  const TensorView& x = c.in(0);
  const TensorView& acc = c.out(0);
  if (x.dtype == DType::f16 || x.dtype == DType::bf16)
    CUDL_FAIL("Accumulate (", c.label, "): x dtype ", x.dtype, " not supported (f32, i32, i64, u8)");
  if (acc.dtype != DType::f32 || x.numel() != acc.numel())
    CUDL_FAIL("Accumulate (", c.label, "): acc must be f32 with as many elements as x; got x ", x.shape, " ",
              x.dtype, ", acc ", acc.shape, " ", acc.dtype);
}

/// Increment: x must be f32, i32 or i64.
inline void check_increment_call(const OpCall& c) {
  const DType t = c.out(0).dtype;
  if (t != DType::f32 && t != DType::i32 && t != DType::i64)
    CUDL_FAIL("Increment (", c.label, "): dtype ", t, " not supported (f32, i32, i64)");
}

/// BatchIndices: perm i32 (N > 0), cursor i64, idx i32.
inline void check_batch_indices_call(const OpCall& c) {
  const TensorView& perm = c.in(0);
  const TensorView& cursor = c.in(1);
  const TensorView& idx = c.out(0);
  if (perm.dtype != DType::i32 || idx.dtype != DType::i32 || cursor.dtype != DType::i64 || perm.numel() == 0)
    CUDL_FAIL("BatchIndices (", c.label, "): expected perm i32 (N > 0), cursor i64, idx i32; got perm ", perm.shape,
              " ", perm.dtype, ", cursor ", cursor.dtype, ", idx ", idx.dtype);
}

}  // namespace cudl
