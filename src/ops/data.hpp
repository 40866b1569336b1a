// cpu/data.hpp — argument checks and layouts of the data-movement op family, shared by the CPU
// reference and the CUDA backend so both accept and reject exactly the same calls.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/op.hpp"

namespace cudl {

/// Fill: the bytes of one element of y holding f[0] (convert::element_bytes).
struct FillProblem {
  int64_t n = 0;
  int elem_size = 0;
  unsigned char bytes[8] = {};
};
FillProblem check_fill_call(const OpCall& call);

/// Copy: x and y of one dtype and numel; returns the byte count.
int64_t check_copy_call(const OpCall& call);

/// Cast: x and y of one shape and a supported dtype pair (identity, f32 <-> f16/bf16/i32).
void check_cast_call(const OpCall& call);

/// Permute: y element with coordinates c (in y's dims) reads x at sum_k c[k] * in_strides[k].
struct PermuteProblem {
  int rank = 0;
  int64_t out_dims[8] = {};
  int64_t in_strides[8] = {};  // x's stride of dim perm[k]
  int64_t n = 0;
  int elem_size = 0;
};
PermuteProblem check_permute_call(const OpCall& call);

/// Concat: y = (outer, sum lens * inner) rows; input k fills columns [sum lens[<k], ...) * inner.
struct ConcatProblem {
  int axis = 0;
  int64_t outer = 1, inner = 1, total = 0;
  std::vector<int64_t> lens;
  int elem_size = 0;
};
ConcatProblem check_concat_call(const OpCall& call);

/// Slice (x -> y) and SliceBackward (dy -> dx): the full tensor is (outer, full, inner), the
/// slice (outer, len, inner) starting at `start` along the axis.
struct SliceProblem {
  int axis = 0;
  int64_t outer = 1, inner = 1, start = 0, len = 0, full = 0;
  int elem_size = 0;
};
SliceProblem check_slice_call(const OpCall& call);

/// Gather / GatherBackward / GatherImages: table (rows, row...) and m indices.
struct GatherProblem {
  int64_t rows = 0, row = 1, m = 0;
  int elem_size = 0;  // of the table
};
GatherProblem check_gather_call(const OpCall& call);

/// GatherBatch: perm (n), tables x and y of `rows` rows each, b batch rows. x rows are x_row
/// elements (u8 normalised into f32 when `images`, else f32 copied); y rows are y_row_bytes bytes.
struct GatherBatchProblem {
  int64_t n = 0, rows = 0, b = 0, x_row = 1, y_row_bytes = 0;
  bool images = false;
  float mean = 0.f, stddev = 1.f;
};
GatherBatchProblem check_gather_batch_call(const OpCall& call);

/// OneHot: n labels, y (n, classes).
struct OneHotProblem {
  int64_t n = 0, classes = 0;
};
OneHotProblem check_one_hot_call(const OpCall& call);

/// Gather family, CPU: throws naming the op, the index, its position and the table shape unless
/// 0 <= r < rows (CUDA cannot throw from a kernel; see the data section above).
void check_gather_index(const OpCall& call, int32_t r, int64_t rows, int64_t at, const Shape& table_shape);
/// OneHot, CPU: throws naming the label, its position and the class count unless 0 <= label < classes.
void check_one_hot_label(const OpCall& call, int32_t label, int64_t at, int64_t classes, const Shape& y_shape);

}  // namespace cudl
