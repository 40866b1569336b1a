// cpu/pool.hpp — geometry and argument checking of the pooling op family, shared by the CPU
// reference and the CUDA backend so both accept and reject the same calls.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

namespace cudl {

/// x (n, c, h, w) pooled by kernel (kh, kw), stride (sh, sw), zero/implicit padding (ph, pw) into
/// y (n, c, p, q) with p = (h + 2 ph - kh) / sh + 1, q = (w + 2 pw - kw) / sw + 1.
/// GlobalAvgPool: kh = h, kw = w, p = q = 1 (no padding).
struct PoolGeometry {
  int64_t n = 0, c = 0, h = 0, w = 0, p = 0, q = 0;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
  bool has_argmax = false;  // MaxPool2d's optional argmax output
};

/// Validates every pooling op (MaxPool2d, MaxPool2dBackward, AvgPool2d, AvgPool2dBackward,
/// GlobalAvgPool, GlobalAvgPoolBackward); throws cudl::Error naming the op, label and shapes.
PoolGeometry check_pool_call(const OpCall& call);

}  // namespace cudl
