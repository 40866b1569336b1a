// ops/data.cpp — argument checks of the data op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/data.hpp"
#include "ops/precision.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/convert.hpp"
#include "cudl/error.hpp"
#include "ops/common.hpp"

namespace cudl {
namespace ops {

namespace {

using op_checks::fail_at;

void expect_defined(const OpCall& c, const TensorView& t, const std::string& what) {
  if (!t.defined()) fail_at(c, what + " is undefined");
}
void expect_dtype(const OpCall& c, const TensorView& t, const std::string& what, DType dtype) {
  expect_defined(c, t, what);
  if (t.dtype != dtype)
    fail_at(c, detail::concat(what, " must be ", dtype, ", got ", t.dtype, " (shape ", t.shape, ")"));
}
void expect_same_dtype(const OpCall& c, const TensorView& a, const std::string& an, const TensorView& b,
                       const std::string& bn) {
  if (a.dtype != b.dtype)
    fail_at(c, detail::concat(an, " dtype ", a.dtype, " differs from ", bn, " dtype ", b.dtype, " (shapes ", a.shape,
                              " and ", b.shape, ")"));
}
int normalise_axis(const OpCall& c, int64_t axis, const Shape& s) {
  const int rank = s.rank();
  if (axis < -rank || axis >= rank) fail_at(c, detail::concat("axis ", axis, " out of range for shape ", s));
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}
int64_t prod(const Shape& s, int from, int to) {
  int64_t p = 1;
  for (int k = from; k < to; ++k) p *= s.dims()[k];
  return p;
}
/// Throws unless `part` equals `whole` except along `axis`.
void expect_same_except(const OpCall& c, const TensorView& part, const std::string& pn, const TensorView& whole,
                        const std::string& wn, int axis) {
  bool ok = part.shape.rank() == whole.shape.rank();
  for (int k = 0; ok && k < whole.shape.rank(); ++k)
    if (k != axis && part.shape.dims()[k] != whole.shape.dims()[k]) ok = false;
  if (!ok)
    fail_at(c, detail::concat(pn, " shape ", part.shape, " and ", wn, " shape ", whole.shape,
                              " must match except along axis ", axis));
}
/// out.shape must be idx.shape followed by table.shape[1:].
void expect_gather_shape(const OpCall& c, const TensorView& table, const std::string& tn, const TensorView& idx,
                         const TensorView& out, const std::string& on) {
  if (table.shape.rank() < 1) fail_at(c, detail::concat(tn, " must have rank >= 1, got shape ", table.shape));
  std::vector<int64_t> want = idx.shape.dims();
  for (int k = 1; k < table.shape.rank(); ++k) want.push_back(table.shape.dims()[k]);
  if (out.shape != Shape(want))
    fail_at(c, detail::concat(on, " shape ", out.shape, " must be idx shape ", idx.shape, " followed by ", tn,
                              " shape ", table.shape, " without its first dim"));
}

// --- the reference implementations -----------------------------------------------------------------

}  // namespace

void check_gather_index(const OpCall& c, int32_t r, int64_t rows, int64_t at, const Shape& table_shape) {
  if (r < 0 || r >= rows)
    fail_at(c, detail::concat("index ", r, " at position ", at, " out of range for table shape ", table_shape));
}

void check_one_hot_label(const OpCall& c, int32_t label, int64_t at, int64_t classes, const Shape& y_shape) {
  if (label < 0 || label >= classes)
    fail_at(c, detail::concat("label ", label, " at position ", at, " out of range for ", classes,
                              " classes (y shape ", y_shape, ")"));
}

// --- checks ---------------------------------------------------------------------------------------------

FillArgs check_fill_call(const OpCall& c) {
  const TensorView& y = c.out(0);
  expect_defined(c, y, "y");
  FillArgs p;
  p.y = y;
  p.n = y.numel();
  p.elem_size = static_cast<int>(dtype_size(y.dtype));
  convert::element_bytes(y.dtype, FillAttrs::from(c.attrs).value, p.bytes);
  return p;
}

CopyArgs check_copy_call(const OpCall& c) {
  const TensorView& x = c.in(0);
  const TensorView& y = c.out(0);
  expect_defined(c, x, "x");
  expect_defined(c, y, "y");
  expect_same_dtype(c, x, "x", y, "y");
  if (x.numel() != y.numel())
    fail_at(c, detail::concat("x shape ", x.shape, " and y shape ", y.shape, " have different element counts"));
  return CopyArgs{x, y, x.numel() * static_cast<int64_t>(dtype_size(x.dtype))};
}

CastArgs check_cast_call(const OpCall& c) {
  const TensorView& x = c.in(0);
  const TensorView& y = c.out(0);
  expect_defined(c, x, "x");
  expect_defined(c, y, "y");
  if (x.shape != y.shape) fail_at(c, detail::concat("x shape ", x.shape, " differs from y shape ", y.shape));
  auto other = [](DType t) { return t == DType::f16 || t == DType::bf16 || t == DType::i32; };
  const bool ok =
      x.dtype == y.dtype || (x.dtype == DType::f32 && other(y.dtype)) || (y.dtype == DType::f32 && other(x.dtype));
  if (!ok)
    fail_at(c, detail::concat("unsupported cast ", x.dtype, " -> ", y.dtype, " (shape ", x.shape,
                              "); supported: f32 <-> f16, bf16, i32"));
  return CastArgs{x, y};
}

PermuteArgs check_permute_call(const OpCall& c) {
  const TensorView& x = c.in(0);
  const TensorView& y = c.out(0);
  expect_defined(c, x, "x");
  expect_defined(c, y, "y");
  expect_same_dtype(c, x, "x", y, "y");
  PermuteArgs p;
  const PermuteAttrs attrs = PermuteAttrs::from(c.attrs);
  p.x = x, p.y = y;
  p.rank = x.shape.rank();
  if (y.shape.rank() != p.rank)
    fail_at(c, detail::concat("x shape ", x.shape, " and y shape ", y.shape, " differ in rank"));
  const auto xs = x.shape.strides();
  std::vector<bool> seen(p.rank, false);
  for (int k = 0; k < p.rank; ++k) {
    const int64_t q = attrs.perm[k];
    if (q < 0 || q >= p.rank || seen[q])
      fail_at(c, detail::concat("i[0..", p.rank - 1, "] is not a permutation of the dims of x shape ", x.shape));
    seen[q] = true;
    if (y.shape.dims()[k] != x.shape.dims()[q])
      fail_at(c, detail::concat("y shape ", y.shape, " is not x shape ", x.shape, " permuted (dim ", k, ")"));
    p.out_dims[k] = y.shape.dims()[k];
    p.in_strides[k] = xs[q];
  }
  p.n = y.numel();
  p.elem_size = static_cast<int>(dtype_size(x.dtype));
  return p;
}

ConcatArgs check_concat_call(const OpCall& c) {
  const TensorView& y = c.out(0);
  expect_defined(c, y, "y");
  if (c.n_inputs < 1) fail_at(c, detail::concat("needs at least one input (y shape ", y.shape, ")"));
  ConcatArgs p;
  p.xs = c.inputs, p.n_xs = c.n_inputs, p.y = y;
  p.axis = normalise_axis(c, ConcatAttrs::from(c.attrs).axis, y.shape);
  for (int k = 0; k < c.n_inputs; ++k) {
    const TensorView& x = c.inputs[k];
    const std::string name = detail::concat("input ", k);
    expect_defined(c, x, name);
    expect_same_dtype(c, x, name, y, "y");
    expect_same_except(c, x, name, y, "y", p.axis);
    p.lens.push_back(x.shape.dims()[p.axis]);
    p.total += x.shape.dims()[p.axis];
  }
  if (p.total != y.shape.dims()[p.axis])
    fail_at(c, detail::concat("inputs sum to ", p.total, " along axis ", p.axis, " but y shape is ", y.shape));
  p.outer = prod(y.shape, 0, p.axis);
  p.inner = prod(y.shape, p.axis + 1, y.shape.rank());
  p.elem_size = static_cast<int>(dtype_size(y.dtype));
  return p;
}

SliceArgs check_slice_call(const OpCall& c) {
  const bool forward = c.op == OpKind::Slice;
  const TensorView& full = forward ? c.in(0) : c.out(0);
  const TensorView& part = forward ? c.out(0) : c.in(0);
  const std::string fn = forward ? "x" : "dx", pn = forward ? "y" : "dy";
  expect_defined(c, full, fn);
  expect_defined(c, part, pn);
  expect_same_dtype(c, full, fn, part, pn);
  SliceArgs p;
  const SliceAttrs attrs = SliceAttrs::from(c.attrs);
  if (forward)
    p.x = full, p.y = part;
  else
    p.dy = part, p.dx = full;
  p.axis = normalise_axis(c, attrs.axis, full.shape);
  expect_same_except(c, part, pn, full, fn, p.axis);
  p.outer = prod(full.shape, 0, p.axis);
  p.inner = prod(full.shape, p.axis + 1, full.shape.rank());
  p.start = attrs.start;
  p.len = part.shape.dims()[p.axis];
  p.full = full.shape.dims()[p.axis];
  if (p.start < 0 || p.start + p.len > p.full)
    fail_at(c, detail::concat("slice [", p.start, ", ", p.start + p.len, ") along axis ", p.axis, " is outside ", fn,
                              " shape ", full.shape, " (", pn, " shape ", part.shape, ")"));
  p.elem_size = static_cast<int>(dtype_size(full.dtype));
  return p;
}

GatherArgs check_gather_call(const OpCall& c) {
  const bool backward = c.op == OpKind::GatherBackward;
  const TensorView& table = backward ? c.out(0) : c.in(0);
  const TensorView& idx = c.in(1);
  const TensorView& rows = backward ? c.in(0) : c.out(0);  // the gathered side
  const std::string tn = backward ? "dtable" : c.op == OpKind::GatherImages ? "images" : "table";
  const std::string rn = backward ? "dy" : "y";
  expect_defined(c, table, tn);
  expect_dtype(c, idx, "idx", DType::i32);
  expect_defined(c, rows, rn);
  // 16-bit storage (ops/precision.cpp): a float table is f32 and y (dy) f32 or the storage type;
  // other tables (i32 labels, token ids) gather into y of their own dtype.
  const DType st = c.op == OpKind::Gather || backward ? check_storage(c) : DType::f32;
  if (c.op == OpKind::Gather) {
    if (dtype_is_float(table.dtype)) expect_dtype(c, rows, rn, st);
    else expect_same_dtype(c, table, tn, rows, rn);
  }
  if (backward) {  // dy f32 or the storage type, dtable f32
    expect_dtype(c, rows, rn, st);
    expect_dtype(c, table, tn, DType::f32);
  }
  if (c.op == OpKind::GatherImages) {
    expect_dtype(c, table, tn, DType::u8);
    expect_dtype(c, rows, rn, DType::f32);
    if (!(NormalizeAttrs::from(c.attrs).std != 0))
      fail_at(c, detail::concat("std f[1] must be nonzero (images shape ", table.shape, ")"));
  }
  expect_gather_shape(c, table, tn, idx, rows, rn);
  GatherArgs p;
  p.storage = st;
  p.idx = idx;
  if (backward) {
    p.dy = rows, p.dtable = table;
  } else {
    p.table = table, p.y = rows;
  }
  if (c.op == OpKind::GatherImages) {
    const NormalizeAttrs norm = NormalizeAttrs::from(c.attrs);
    p.mean = static_cast<float>(norm.mean);
    p.stddev = static_cast<float>(norm.std);
  }
  p.rows = table.shape.dims()[0];
  p.row = prod(table.shape, 1, table.shape.rank());
  p.m = idx.numel();
  p.elem_size = static_cast<int>(dtype_size(table.dtype));
  return p;
}

GatherBatchArgs check_gather_batch_call(const OpCall& c) {
  const TensorView& perm = c.in(0);
  const TensorView& x = c.in(1);
  const TensorView& y = c.in(2);
  const TensorView& xb = c.out(0);
  const TensorView& yb = c.out(1);
  const TensorView& cursor = c.out(2);
  if (x.defined() && xb.defined()) ops::check_storage(c);  // a 16-bit xb: u8 x only (ops/precision.cpp)
  expect_dtype(c, perm, "perm", DType::i32);
  expect_defined(c, x, "x");
  expect_defined(c, y, "y");
  expect_defined(c, xb, "xb");
  expect_defined(c, yb, "yb");
  expect_dtype(c, cursor, "cursor", DType::i64);
  if (perm.numel() == 0) fail_at(c, detail::concat("perm must not be empty (shape ", perm.shape, ")"));
  if (cursor.numel() != 1) fail_at(c, detail::concat("cursor must have one element, got shape ", cursor.shape));
  if (x.dtype != DType::u8 && x.dtype != DType::f32 && x.dtype != DType::i32)
    fail_at(c, detail::concat("x must be u8, f32 or i32, got ", x.dtype, " (shape ", x.shape, ")"));
  if (x.dtype != DType::u8) expect_dtype(c, xb, "xb", x.dtype);
  else if (!dtype_is_float(xb.dtype))  // images: normalised in fp32, stored in xb's float type
    fail_at(c, detail::concat("xb ", xb.shape, " has dtype ", xb.dtype, ", expected f32, bf16 or f16 (x is u8)"));
  expect_same_dtype(c, y, "y", yb, "yb");
  if (x.shape.rank() < 1 || y.shape.rank() < 1 || x.shape.dims()[0] != y.shape.dims()[0])
    fail_at(c, detail::concat("x shape ", x.shape, " and y shape ", y.shape, " must have the same number of rows"));
  if (xb.shape.rank() < 1) fail_at(c, detail::concat("xb must have rank >= 1, got shape ", xb.shape));
  const int64_t b = xb.shape.dims()[0];
  auto expect_rows_of = [&](const TensorView& out, const std::string& on, const TensorView& table,
                            const std::string& tn) {
    std::vector<int64_t> want = table.shape.dims();
    want[0] = b;
    if (out.shape != Shape(want))
      fail_at(c, detail::concat(on, " shape ", out.shape, " must be ", tn, " shape ", table.shape, " with ", b,
                                " rows (the batch size, from xb)"));
  };
  expect_rows_of(xb, "xb", x, "x");
  expect_rows_of(yb, "yb", y, "y");
  GatherBatchArgs p;
  const NormalizeAttrs norm = NormalizeAttrs::from(c.attrs);
  p.perm = perm, p.x = x, p.y = y, p.xb = xb, p.yb = yb, p.cursor = cursor;
  p.images = x.dtype == DType::u8;
  if (p.images && !(norm.std != 0)) fail_at(c, detail::concat("std f[1] must be nonzero (x shape ", x.shape, ")"));
  p.n = perm.numel();
  p.rows = x.shape.dims()[0];
  p.b = b;
  p.x_row = prod(x.shape, 1, x.shape.rank());
  p.y_row_bytes = prod(y.shape, 1, y.shape.rank()) * static_cast<int64_t>(dtype_size(y.dtype));
  p.mean = static_cast<float>(norm.mean);
  p.stddev = static_cast<float>(norm.std);
  return p;
}

OneHotArgs check_one_hot_call(const OpCall& c) {
  const TensorView& lab = c.in(0);
  const TensorView& y = c.out(0);
  expect_dtype(c, lab, "labels", DType::i32);
  expect_dtype(c, y, "y", DType::f32);
  std::vector<int64_t> want = lab.shape.dims();
  const int64_t classes = y.shape.rank() > 0 ? y.shape.dims().back() : 0;
  want.push_back(classes);
  if (y.shape != Shape(want) || classes < 1)
    fail_at(c, detail::concat("y shape ", y.shape, " must be labels shape ", lab.shape, " followed by C >= 1"));
  OneHotArgs p;
  p.labels = lab, p.y = y;
  p.n = lab.numel();
  p.classes = classes;
  return p;
}

}  // namespace ops
}  // namespace cudl
