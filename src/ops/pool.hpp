// ops/pool.hpp — geometry and argument checking of the pooling op family, shared by the CPU
// reference and the CUDA backend so both accept and reject the same calls.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- pooling (kernels/pool.cu, src/cpu/pool.cpp) ---
// MaxPool2d       in: x (N,C,H,W)    out: y (N,C,P,Q), [argmax i32 (N,C,P,Q), flat index into H*W]
//                   i[0..1]=kernel h,w  i[2..3]=stride h,w  i[4..5]=pad h,w
// MaxPool2dBackward     in: x, y, dy   out: dx; attrs as MaxPool2d (ties: first max in window order)
// AvgPool2d       as MaxPool2d; padding counts as zeros in the average (count_include_pad)
// AvgPool2dBackward     in: dy         out: dx (shape given by dx)
// GlobalAvgPool   in: x (N,C,H,W)    out: y (N,C)
// GlobalAvgPoolBackward in: dy (N,C)   out: dx (N,C,H,W)
//                   pooling: padding at most half the kernel; max pooling's NaN counts as the maximum
//                   (first NaN wins); backward ops gather per input element (no atomics)

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
