// ops/pool.hpp — the pooling op family's contract: typed attributes, geometry, named arguments and
// the checks the CPU reference and the CUDA backend run first.
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
namespace ops {

/// MaxPool2d, MaxPool2dBackward, AvgPool2d, AvgPool2dBackward: i[0..1] = kernel h, w;
/// i[2..3] = stride h, w; i[4..5] = padding h, w. (GlobalAvgPool and its backward take none.)
struct Pool2dAttrs {
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = kernel_h, a.i[1] = kernel_w, a.i[2] = stride_h, a.i[3] = stride_w, a.i[4] = pad_h, a.i[5] = pad_w;
    return a;
  }
  static Pool2dAttrs from(const OpAttrs& a) { return {a.i[0], a.i[1], a.i[2], a.i[3], a.i[4], a.i[5]}; }
};

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
/// A validated pooling call: its geometry and its tensors by name (undefined where the op has none).
/// MaxPool2d: x -> y, [argmax]. MaxPool2dBackward: x, y, dy -> dx. AvgPool2d, GlobalAvgPool: x -> y.
/// AvgPool2dBackward, GlobalAvgPoolBackward: dy -> dx.
struct PoolArgs : PoolGeometry {
  DType storage = DType::f32;  // x, y, dy, dx: f32, bf16 or f16 (ops/precision.hpp); the math is fp32
  TensorView x, y, argmax;
  TensorView dy, dx;
};
PoolArgs check_pool_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
