// ops/data.hpp — the data-movement op family's contract: typed attributes, named arguments and
// layouts, and the checks the CPU reference and the CUDA backend run first.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "backend/op.hpp"

// --- data movement (kernels/data.cu, src/cpu/data.cpp) ---
// Fill            out: y = f[0]
// Copy            in: x              out: y (same numel, any shape)
// Cast            in: x              out: y (dtype of y), f32 <-> f16/bf16/i32
// Permute         in: x              out: y; i[0..rank-1]=perm (y dim k = x dim perm[k]); on CUDA a
//                   32 x 32 shared-memory tiled transpose when x's contiguous dim does not stay last
// Concat          in: x0, x1, ...    out: y; i[0]=axis
// Slice           in: x              out: y; i[0]=axis i[1]=start (length from y)
// SliceBackward   in: dy             out: dx (zeros outside the slice); i[0]=axis i[1]=start
// Gather          in: table (R, ...), idx i32 (M)   out: y (M, ...) of the table's dtype, or bf16 /
//                   f16 from an f32 table (each value rounded to nearest even: 16-bit storage)
// GatherBackward  in: dy (M, ...) f32, bf16 or f16, idx  out: dtable (R, ...) f32 (deterministic: on
//                   CUDA a CUB radix sort of (row, position) pairs, then each row's run summed in
//                   position order, in fp32)
// OneHot          in: labels i32 (N)  out: y f32 (N, C)
// GatherImages    in: images u8 (R, ...), idx i32 (B)   out: y f32 (B, ...) = (u8/255 - f[0]) / f[1]
// GatherBatch     in: perm i32 (N), x (R, ...) u8 or f32, y (R, ...)   out: xb (B, ...), yb (B, ...),
//                   cursor i64[1] (device) updated in place: a training step's whole data stage.
//                   Row j of xb and yb is table row perm[(cursor + j) mod N]; then cursor += B.
//                   u8 x: xb f32 as GatherImages (f[0]=mean, f[1]=std), or bf16 / f16 (each pixel
//                   normalised in fp32 and rounded once; 16-bit storage, ops/precision.hpp); f32 or i32
//                   x: copied (xb of x's dtype). y: any dtype, yb alike
// Data details (src/cpu/data.cpp is the spec): Fill, Copy, Permute, Concat, Slice, SliceBackward
// and Gather move bytes of any dtype (inputs and outputs of one dtype; Gather's float tables are f32,
// its y f32 or, rounded, the storage type). Fill converts f[0] like
// backend/convert.hpp's element_bytes (floats round to nearest even; integers truncate and
// saturate, NaN -> 0). Copy: x and y must not partially overlap. Cast rounds f32 -> f16/bf16 to
// nearest even (NaN stays NaN, overflow gives Inf), f32 -> i32 truncates toward zero with NaN -> 0
// and saturation (convert::f32_to_i32), i32 -> f32 rounds to nearest even; same dtype copies.
// Concat/Slice: negative axis counts from the back; Slice needs 0 <= start, start+len <= dim.
// Gather/GatherBackward/GatherImages: idx may have any shape; y is idx.shape followed by the
// table's dims after the first. GatherBackward (f32) sums the dy rows of each table row in
// increasing position order starting from 0 (bitwise equal on CPU and CUDA). OneHot: labels of any
// shape, y = labels.shape + (C,). Out-of-range indices or labels: the CPU throws naming the op,
// the index and the table shape; CUDA cannot throw from a kernel, so Gather writes all-ones bytes
// (NaN for f32, -1 for i32), GatherImages and OneHot write NaN rows, GatherBackward ignores them.
// GatherImages computes (float(u) / 255.f - f[0]) / f[1] in f32 (bitwise equal on CPU and CUDA).
// GatherBatch = BatchIndices + GatherImages or Gather (x) + Gather (y) + Increment (cursor) in one
// call: x and y have the same number of rows R, N > 0, the cursor is read as cursor mod N (never
// negative) and advanced by B after the gather. Out-of-range perm entries: the CPU throws as Gather
// does, before writing anything (the cursor stays); CUDA writes NaN x rows (as GatherImages for u8
// x, as Gather for f32 and i32 x: all-ones bytes) and all-ones y rows, and still advances the cursor. On CUDA it is one
// kernel: every block reads the cursor, and the last block to finish writes cursor + B.

namespace cudl {
namespace ops {

/// Fill: f[0] = value (converted to y's dtype).
struct FillAttrs {
  double value = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = value;
    return a;
  }
  static FillAttrs from(const OpAttrs& a) { return {a.f[0]}; }
};

/// Permute: i[0..rank-1] = perm (y dim k = x dim perm[k]); slots past the rank are unused.
struct PermuteAttrs {
  std::array<int64_t, 8> perm{};

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i = perm;
    return a;
  }
  static PermuteAttrs from(const OpAttrs& a) { return {a.i}; }
};

/// Concat: i[0] = axis (negative counts from the back).
struct ConcatAttrs {
  int64_t axis = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = axis;
    return a;
  }
  static ConcatAttrs from(const OpAttrs& a) { return {a.i[0]}; }
};

/// Slice / SliceBackward: i[0] = axis, i[1] = start (the length is the slice's size along the axis).
struct SliceAttrs {
  int64_t axis = 0, start = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = axis;
    a.i[1] = start;
    return a;
  }
  static SliceAttrs from(const OpAttrs& a) { return {a.i[0], a.i[1]}; }
};

/// GatherImages / GatherBatch: f[0] = mean, f[1] = std of the u8 -> f32 normalisation (u8/255 - mean) / std.
struct NormalizeAttrs {
  double mean = 0, std = 1;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = mean;
    a.f[1] = std;
    return a;
  }
  static NormalizeAttrs from(const OpAttrs& a) { return {a.f[0], a.f[1]}; }
};

/// Fill: the bytes of one element of y holding f[0] (convert::element_bytes).
struct FillArgs {
  TensorView y;
  int64_t n = 0;
  int elem_size = 0;
  unsigned char bytes[8] = {};
};
FillArgs check_fill_call(const OpCall& call);

/// Copy: x and y of one dtype and numel.
struct CopyArgs {
  TensorView x, y;
  int64_t bytes = 0;
};
CopyArgs check_copy_call(const OpCall& call);

/// Cast: x and y of one shape and a supported dtype pair (identity, f32 <-> f16/bf16/i32).
struct CastArgs {
  TensorView x, y;
};
CastArgs check_cast_call(const OpCall& call);

/// Permute: y element with coordinates c (in y's dims) reads x at sum_k c[k] * in_strides[k].
struct PermuteArgs {
  TensorView x, y;
  int rank = 0;
  int64_t out_dims[8] = {};
  int64_t in_strides[8] = {};  // x's stride of dim perm[k]
  int64_t n = 0;
  int elem_size = 0;
};
PermuteArgs check_permute_call(const OpCall& call);

/// Concat: y = (outer, sum lens * inner) rows; input k fills columns [sum lens[<k], ...) * inner.
struct ConcatArgs {
  const TensorView* xs = nullptr;  // the n_xs inputs, in order
  int n_xs = 0;
  TensorView y;
  int axis = 0;
  int64_t outer = 1, inner = 1, total = 0;
  std::vector<int64_t> lens;
  int elem_size = 0;
};
ConcatArgs check_concat_call(const OpCall& call);

/// Slice (x -> y) and SliceBackward (dy -> dx): the full tensor is (outer, full, inner), the
/// slice (outer, len, inner) starting at `start` along the axis.
struct SliceArgs {
  TensorView x, y;    // Slice
  TensorView dy, dx;  // SliceBackward
  int axis = 0;
  int64_t outer = 1, inner = 1, start = 0, len = 0, full = 0;
  int elem_size = 0;
};
SliceArgs check_slice_call(const OpCall& call);

/// Gather: table, idx -> y. GatherBackward: dy, idx -> dtable. GatherImages: table (the u8 images),
/// idx -> y, normalised with mean and stddev. The table (rows, row...) and m indices.
struct GatherArgs {
  TensorView table, idx, y;  // Gather, GatherImages
  TensorView dy, dtable;     // GatherBackward (with idx)
  float mean = 0.f, stddev = 1.f;  // GatherImages
  int64_t rows = 0, row = 1, m = 0;
  int elem_size = 0;  // of the table
  DType storage = DType::f32;  // Gather's y, GatherBackward's dy: f32, or bf16 / f16 (ops/precision.hpp)
};
GatherArgs check_gather_call(const OpCall& call);

/// GatherBatch: perm (n), tables x and y of `rows` rows each, b batch rows. x rows are x_row
/// elements (u8 normalised into f32 when `images`, else f32 copied); y rows are y_row_bytes bytes.
struct GatherBatchArgs {
  TensorView perm, x, y;       // inputs
  TensorView xb, yb, cursor;   // outputs (cursor updated in place)
  int64_t n = 0, rows = 0, b = 0, x_row = 1, y_row_bytes = 0;
  bool images = false;
  float mean = 0.f, stddev = 1.f;
};
GatherBatchArgs check_gather_batch_call(const OpCall& call);

/// OneHot: n labels, y (n, classes).
struct OneHotArgs {
  TensorView labels, y;
  int64_t n = 0, classes = 0;
};
OneHotArgs check_one_hot_call(const OpCall& call);

/// Gather family, CPU: throws naming the op, the index, its position and the table shape unless
/// 0 <= r < rows (CUDA cannot throw from a kernel; see the data section above).
void check_gather_index(const OpCall& call, int32_t r, int64_t rows, int64_t at, const Shape& table_shape);
/// OneHot, CPU: throws naming the label, its position and the class count unless 0 <= label < classes.
void check_one_hot_label(const OpCall& call, int32_t label, int64_t at, int64_t classes, const Shape& y_shape);

}  // namespace ops
}  // namespace cudl
