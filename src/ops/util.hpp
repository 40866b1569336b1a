// ops/util.hpp — the graph utility ops' contract: typed attributes, named arguments and the checks
// the CPU reference and the CUDA backend run first, so both reject the same calls alike.
#pragma once

#include "backend/op.hpp"
#include "cudl/error.hpp"

// --- graph utilities (kernels/util.cu, src/cpu/util.cpp): step counters and device-side metrics ---
// Accumulate      in: x (f32, i32, i64 or u8; n elements)   out: acc (f32, n) updated in place:
//                   acc += f[0] * x
// Increment       out: x (f32, i32 or i64) updated in place: x += f[0] (f32) or i[0] (integers)
// BatchIndices    in: perm i32 (N), cursor i64[1] (device)   out: idx i32 (B):
//                   idx[j] = perm[(cursor + j) % N]; the cursor is advanced by a separate Increment

namespace cudl {
namespace ops {

/// Accumulate: f[0] = scale (acc += scale * x).
struct AccumulateAttrs {
  double scale = 1;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = scale;
    return a;
  }
  static AccumulateAttrs from(const OpAttrs& a) { return {a.f[0]}; }
};

/// Increment: f[0] = step for an f32 x, i[0] = step for an i32 / i64 x.
struct IncrementAttrs {
  double step = 1;
  int64_t int_step = 1;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = step;
    a.i[0] = int_step;
    return a;
  }
  static IncrementAttrs from(const OpAttrs& a) { return {a.f[0], a.i[0]}; }
};

/// Accumulate: x f32, i32, i64 or u8; acc f32 with as many elements as x.
struct AccumulateArgs {
  TensorView x, acc;
  float scale = 1;
};
inline AccumulateArgs check_accumulate_call(const OpCall& c) {
  const TensorView& x = c.in(0);
  const TensorView& acc = c.out(0);
  if (x.dtype == DType::f16 || x.dtype == DType::bf16)
    CUDL_FAIL("Accumulate (", c.label, "): x dtype ", x.dtype, " not supported (f32, i32, i64, u8)");
  if (acc.dtype != DType::f32 || x.numel() != acc.numel())
    CUDL_FAIL("Accumulate (", c.label, "): acc must be f32 with as many elements as x; got x ", x.shape, " ",
              x.dtype, ", acc ", acc.shape, " ", acc.dtype);
  return AccumulateArgs{x, acc, static_cast<float>(AccumulateAttrs::from(c.attrs).scale)};
}

/// Increment: x (the output, updated in place) must be f32, i32 or i64.
struct IncrementArgs {
  TensorView x;
  IncrementAttrs attrs;
};
inline IncrementArgs check_increment_call(const OpCall& c) {
  const DType t = c.out(0).dtype;
  if (t != DType::f32 && t != DType::i32 && t != DType::i64)
    CUDL_FAIL("Increment (", c.label, "): dtype ", t, " not supported (f32, i32, i64)");
  return IncrementArgs{c.out(0), IncrementAttrs::from(c.attrs)};
}

/// BatchIndices: perm i32 (N > 0), cursor i64, idx i32.
struct BatchIndicesArgs {
  TensorView perm, cursor, idx;
};
inline BatchIndicesArgs check_batch_indices_call(const OpCall& c) {
  const TensorView& perm = c.in(0);
  const TensorView& cursor = c.in(1);
  const TensorView& idx = c.out(0);
  if (perm.dtype != DType::i32 || idx.dtype != DType::i32 || cursor.dtype != DType::i64 || perm.numel() == 0)
    CUDL_FAIL("BatchIndices (", c.label, "): expected perm i32 (N > 0), cursor i64, idx i32; got perm ", perm.shape,
              " ", perm.dtype, ", cursor ", cursor.dtype, ", idx ", idx.dtype);
  return BatchIndicesArgs{perm, cursor, idx};
}

}  // namespace ops
}  // namespace cudl
