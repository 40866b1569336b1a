// ops/random.hpp — the random op family's contract: typed attributes, named arguments and the checks
// the CPU reference and the CUDA backend run first, so both derive the same constants.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- randomness (kernels/random.cu, src/cpu/random.cpp; Philox-4x32-10 in src/backend/philox.hpp) ---
// Dropout         in: x, rng (i64[2] on the device: {seed, offset})   out: y, mask (u8)
//                   f[0]=p (drop probability), i[0]=stream id (distinguishes dropout layers)
// DropoutBackward in: dy, mask       out: dx = dy * mask / (1-p); f[0]=p
// RandomUniform   out: y ~ U[f[0], f[1]);  i[0]=seed (low 63 bits), i[1]=offset
// RandomNormal    in: [rng (i64[2] on the device: {seed, offset})]   out: y ~ N(f[0], f[1]^2)
//                   i[0]=seed, i[1]=offset; with rng, the seed is rng[0] and the offset rng[1] + i[1],
//                   read on the device when the op runs (a captured step draws fresh noise each
//                   replay once the owner advances rng[1]; i[0] is then unused)
// Random details (src/cpu/random.cpp is the spec, backend/philox.hpp the generator): element i
// uses word i%4 of philox4x32_10(counter {lo32(b), hi32(b), lo32(s), hi32(s)}, key {lo32(seed),
// hi32(seed)}) with b = i/4 + offset and s = stream id (Dropout: i[0]; RandomUniform/Normal: i[2]).
// A call consumes philox::blocks(numel) = ceil(numel/4) counter blocks from `offset`: advance the
// offset by at least that between calls sharing seed and stream (e.g. Increment on a view of
// element 1 of the rng tensor). The kernels read rng on the device; nothing modifies it.
// u = (word >> 8) * 2^-24 in [0, 1). Dropout keeps element i iff (word >> 8) >= ceil(p * 2^24);
// y = keep ? x / (1-p) : 0 (dropped elements are exactly 0, even for NaN/Inf x; p = 1 gives all
// zeros), mask = keep; the mask output may be undefined. RandomUniform y = fma(f1 - f0, u, f0);
// RandomNormal pairs words (0,1) and (2,3) of a block by Box-Muller (u1 from the first word in
// (0, 1], angle from the second) and y = fma(f1, z, f0). Dropout and RandomUniform are bitwise
// equal on CPU and CUDA; RandomNormal to a few ulp (logf/sinf/cosf differ between platforms).
// Dropout's x and y, and DropoutBackward's dy and dx, are f32, bf16 or f16 (one type per call,
// ops/precision.hpp): the scaling is fp32, the store rounds to nearest even; the mask is the same
// whatever the storage.

namespace cudl {
namespace ops {

/// Dropout / DropoutBackward: f[0] = p (drop probability), i[0] = stream id (Dropout; distinguishes
/// dropout layers).
struct DropoutAttrs {
  double p = 0;
  int64_t stream = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = p;
    a.i[0] = stream;
    return a;
  }
  static DropoutAttrs from(const OpAttrs& a) { return {a.f[0], a.i[0]}; }
};

/// RandomUniform: f[0] = lo, f[1] = hi; i[0] = seed, i[1] = offset, i[2] = stream id.
struct RandomUniformAttrs {
  double lo = 0, hi = 1;
  int64_t seed = 0, offset = 0, stream = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = lo, a.f[1] = hi;
    a.i[0] = seed, a.i[1] = offset, a.i[2] = stream;
    return a;
  }
  static RandomUniformAttrs from(const OpAttrs& a) { return {a.f[0], a.f[1], a.i[0], a.i[1], a.i[2]}; }
};

/// RandomNormal: f[0] = mean, f[1] = std; i[0] = seed, i[1] = offset, i[2] = stream id.
struct RandomNormalAttrs {
  double mean = 0, std = 1;
  int64_t seed = 0, offset = 0, stream = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = mean, a.f[1] = std;
    a.i[0] = seed, a.i[1] = offset, a.i[2] = stream;
    return a;
  }
  static RandomNormalAttrs from(const OpAttrs& a) { return {a.f[0], a.f[1], a.i[0], a.i[1], a.i[2]}; }
};

/// A validated Dropout call: x, rng (i64[2]) -> y, [mask u8], all of one shape.
struct DropoutArgs {
  TensorView x, rng, y, mask;  // mask may be undefined
  int64_t n = 0;
  bool has_mask = false;
  uint32_t threshold = 0;  // philox::keep_threshold(p)
  float scale = 1;         // 1 / (1 - p), 0 when p == 1
  uint64_t stream = 0;
  DType storage = DType::f32;  // of x and y: f32, bf16 or f16
};
DropoutArgs check_dropout_call(const OpCall& call);

/// A validated DropoutBackward call: dy, mask -> dx.
struct DropoutBackwardArgs {
  TensorView dy, mask, dx;
  int64_t n = 0;
  float scale = 1;
  DType storage = DType::f32;  // of dy and dx: f32, bf16 or f16
};
DropoutBackwardArgs check_dropout_backward_call(const OpCall& call);

/// A validated RandomUniform (a = lo, b = hi - lo) or RandomNormal (a = mean, b = std) call. With
/// `rng` defined, the seed and the offset (added to `offset`) are read from it where the op runs.
struct RandomFillArgs {
  TensorView y;    // RandomUniform: f32; RandomNormal: the storage type (f32, bf16, f16)
  DType storage = DType::f32;
  TensorView rng;  // RandomNormal's optional device state {seed, offset}; undefined when absent
  int64_t n = 0;
  uint64_t seed = 0, offset = 0, stream = 0;
  float a = 0, b = 0;
};
RandomFillArgs check_random_fill_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
