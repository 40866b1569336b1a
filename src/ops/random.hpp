// ops/random.hpp — argument checks of the random op family, shared by the CPU reference and the
// CUDA backend so both accept and reject exactly the same calls and derive the same constants.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- randomness (kernels/random.cu, src/cpu/random.cpp; Philox-4x32-10 in src/backend/philox.hpp) ---
// Dropout         in: x, rng (i64[2] on the device: {seed, offset})   out: y, mask (u8)
//                   f[0]=p (drop probability), i[0]=stream id (distinguishes dropout layers)
// DropoutBackward in: dy, mask       out: dx = dy * mask / (1-p); f[0]=p
// RandomUniform   out: y ~ U[f[0], f[1]);  i[0]=seed (low 63 bits), i[1]=offset
// RandomNormal    out: y ~ N(f[0], f[1]^2); i[0]=seed, i[1]=offset
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

namespace cudl {

/// A validated Dropout call: x, rng (i64[2]) -> y, [mask u8], all of one shape.
struct DropoutProblem {
  int64_t n = 0;
  bool has_mask = false;
  uint32_t threshold = 0;  // philox::keep_threshold(p)
  float scale = 1;         // 1 / (1 - p), 0 when p == 1
  uint64_t stream = 0;     // i[0]
};
DropoutProblem check_dropout_call(const OpCall& call);

/// A validated DropoutBackward call: dy, mask -> dx.
struct DropoutBackwardProblem {
  int64_t n = 0;
  float scale = 1;
};
DropoutBackwardProblem check_dropout_backward_call(const OpCall& call);

/// A validated RandomUniform (a = lo, b = hi - lo) or RandomNormal (a = mean, b = std) call.
struct RandomFillProblem {
  int64_t n = 0;
  uint64_t seed = 0, offset = 0, stream = 0;
  float a = 0, b = 0;
};
RandomFillProblem check_random_fill_call(const OpCall& call);

}  // namespace cudl
