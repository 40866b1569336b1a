// cpu/random.hpp — argument checks of the random op family, shared by the CPU reference and the
// CUDA backend so both accept and reject exactly the same calls and derive the same constants.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

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
