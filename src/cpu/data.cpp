// cpu/data.cpp — CPU reference of the data-movement op family (fill, copy, cast, permute, concat,
// slice, gather, one-hot, image and training batch gathers): the spec. Layout-only ops work on any dtype.
#include "cpu/data.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "backend/convert.hpp"
#include "core/half.hpp"

namespace cudl {
namespace {

[[noreturn]] void fail_at(const OpCall& c, const std::string& msg) {
  CUDL_FAIL(op_name(c.op), " (", c.label, "): ", msg);
}

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
void check_index(const OpCall& c, int32_t r, int64_t rows, int64_t at, const Shape& table_shape) {
  if (r < 0 || r >= rows)
    fail_at(c, detail::concat("index ", r, " at position ", at, " out of range for table shape ", table_shape));
}

// --- the reference implementations -----------------------------------------------------------------

// out: y = f[0] converted to y's dtype (convert::element_bytes)
void fill(const OpCall& c) {
  const FillProblem p = check_fill_call(c);
  auto* y = static_cast<unsigned char*>(c.outputs[0].data);
  for (int64_t i = 0; i < p.n; ++i) std::memcpy(y + i * p.elem_size, p.bytes, p.elem_size);
}

// in: x   out: y (same dtype and numel, any shape)
void copy(const OpCall& c) {
  const int64_t bytes = check_copy_call(c);
  std::memmove(c.outputs[0].data, c.inputs[0].data, static_cast<size_t>(bytes));
}

// in: x   out: y: f32 <-> f16/bf16 (round to nearest even), f32 -> i32 (convert::f32_to_i32),
// i32 -> f32 (round to nearest even), identity
void cast(const OpCall& c) {
  check_cast_call(c);
  const TensorView& x = c.inputs[0];
  const TensorView& y = c.outputs[0];
  const int64_t n = x.numel();
  if (x.dtype == y.dtype) {
    std::memmove(y.data, x.data, static_cast<size_t>(n) * dtype_size(x.dtype));
  } else if (x.dtype == DType::f32) {
    const float* s = x.as<float>();
    if (y.dtype == DType::f16)
      for (int64_t i = 0; i < n; ++i) y.as<uint16_t>()[i] = float_to_half_bits(s[i]);
    else if (y.dtype == DType::bf16)
      for (int64_t i = 0; i < n; ++i) y.as<uint16_t>()[i] = float_to_bf16_bits(s[i]);
    else
      for (int64_t i = 0; i < n; ++i) y.as<int32_t>()[i] = convert::f32_to_i32(s[i]);
  } else {
    float* d = y.as<float>();
    if (x.dtype == DType::f16)
      for (int64_t i = 0; i < n; ++i) d[i] = half_bits_to_float(x.as<uint16_t>()[i]);
    else if (x.dtype == DType::bf16)
      for (int64_t i = 0; i < n; ++i) d[i] = bf16_bits_to_float(x.as<uint16_t>()[i]);
    else
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(x.as<int32_t>()[i]);
  }
}

// in: x   out: y; y dim k = x dim perm[k]
void permute(const OpCall& c) {
  const PermuteProblem p = check_permute_call(c);
  const auto* src = static_cast<const unsigned char*>(c.inputs[0].data);
  auto* dst = static_cast<unsigned char*>(c.outputs[0].data);
  std::vector<int64_t> idx(p.rank, 0);  // coordinates in y
  for (int64_t o = 0; o < p.n; ++o) {
    int64_t off = 0;
    for (int k = 0; k < p.rank; ++k) off += idx[k] * p.in_strides[k];
    std::memcpy(dst + o * p.elem_size, src + off * p.elem_size, p.elem_size);
    for (int k = p.rank - 1; k >= 0; --k) {
      if (++idx[k] < p.out_dims[k]) break;
      idx[k] = 0;
    }
  }
}

// in: x0, x1, ...   out: y; i[0] = axis
void concat(const OpCall& c) {
  const ConcatProblem p = check_concat_call(c);
  auto* y = static_cast<unsigned char*>(c.outputs[0].data);
  const int64_t y_row = p.total * p.inner * p.elem_size;
  int64_t at = 0;
  for (int k = 0; k < c.n_inputs; ++k) {
    const int64_t x_row = p.lens[k] * p.inner * p.elem_size;
    const auto* x = static_cast<const unsigned char*>(c.inputs[k].data);
    for (int64_t o = 0; o < p.outer; ++o) std::memcpy(y + o * y_row + at, x + o * x_row, static_cast<size_t>(x_row));
    at += x_row;
  }
}

// in: x   out: y = x[..., start:start+len, ...] along i[0]; i[1] = start
void slice(const OpCall& c) {
  const SliceProblem p = check_slice_call(c);
  const int64_t part = p.len * p.inner * p.elem_size, full = p.full * p.inner * p.elem_size;
  const int64_t at = p.start * p.inner * p.elem_size;
  const auto* x = static_cast<const unsigned char*>(c.inputs[0].data);
  auto* y = static_cast<unsigned char*>(c.outputs[0].data);
  for (int64_t o = 0; o < p.outer; ++o) std::memcpy(y + o * part, x + o * full + at, static_cast<size_t>(part));
}

// in: dy   out: dx (zeros outside the slice)
void slice_backward(const OpCall& c) {
  const SliceProblem p = check_slice_call(c);
  const int64_t part = p.len * p.inner * p.elem_size, full = p.full * p.inner * p.elem_size;
  const int64_t at = p.start * p.inner * p.elem_size;
  const auto* dy = static_cast<const unsigned char*>(c.inputs[0].data);
  auto* dx = static_cast<unsigned char*>(c.outputs[0].data);
  std::memset(dx, 0, static_cast<size_t>(p.outer * full));
  for (int64_t o = 0; o < p.outer; ++o) std::memcpy(dx + o * full + at, dy + o * part, static_cast<size_t>(part));
}

// in: table (R, ...), idx i32 (any shape)   out: y (idx..., ...) = table[idx]
void gather(const OpCall& c) {
  const GatherProblem p = check_gather_call(c);
  const TensorView& table = c.inputs[0];
  const int32_t* idx = c.inputs[1].as<int32_t>();
  const size_t bytes = static_cast<size_t>(p.row) * p.elem_size;
  for (int64_t m = 0; m < p.m; ++m) {
    check_index(c, idx[m], p.rows, m, table.shape);
    std::memcpy(static_cast<unsigned char*>(c.outputs[0].data) + m * bytes,
                static_cast<const unsigned char*>(table.data) + idx[m] * bytes, bytes);
  }
}

// in: dy (idx..., ...), idx   out: dtable (R, ...): row r = the sum of the dy rows m with idx[m] == r,
// added in increasing m starting from 0 (this order is the spec; CUDA sums each row in the same order).
void gather_backward(const OpCall& c) {
  const GatherProblem p = check_gather_call(c);
  const float* dy = c.inputs[0].as<float>();
  const int32_t* idx = c.inputs[1].as<int32_t>();
  float* out = c.outputs[0].as<float>();
  std::fill(out, out + p.rows * p.row, 0.0f);
  for (int64_t m = 0; m < p.m; ++m) {
    check_index(c, idx[m], p.rows, m, c.outputs[0].shape);
    for (int64_t k = 0; k < p.row; ++k) out[idx[m] * p.row + k] += dy[m * p.row + k];
  }
}

// in: labels i32 (...)   out: y f32 (..., C)
void one_hot(const OpCall& c) {
  const OneHotProblem p = check_one_hot_call(c);
  const int32_t* lab = c.inputs[0].as<int32_t>();
  float* y = c.outputs[0].as<float>();
  std::fill(y, y + p.n * p.classes, 0.0f);
  for (int64_t n = 0; n < p.n; ++n) {
    if (lab[n] < 0 || lab[n] >= p.classes)
      fail_at(c, detail::concat("label ", lab[n], " at position ", n, " out of range for ", p.classes,
                                " classes (y shape ", c.outputs[0].shape, ")"));
    y[n * p.classes + lab[n]] = 1.0f;
  }
}

// dst[k] = (src[k] / 255 - mean) / stddev in f32 for k < n (GatherImages and GatherBatch)
void normalise_pixels(const uint8_t* src, float* dst, int64_t n, float mean, float stddev) {
  for (int64_t k = 0; k < n; ++k) dst[k] = (static_cast<float>(src[k]) / 255.0f - mean) / stddev;
}

// in: images u8 (R, ...), idx i32 (B)   out: y f32 (B, ...) = (u8 / 255 - f[0]) / f[1], in f32
void gather_images(const OpCall& c) {
  const GatherProblem p = check_gather_call(c);
  const float mean = static_cast<float>(c.attrs.f[0]), stddev = static_cast<float>(c.attrs.f[1]);
  const int32_t* idx = c.inputs[1].as<int32_t>();
  for (int64_t b = 0; b < p.m; ++b) {
    check_index(c, idx[b], p.rows, b, c.inputs[0].shape);
    normalise_pixels(c.inputs[0].as<uint8_t>() + idx[b] * p.row, c.outputs[0].as<float>() + b * p.row, p.row, mean,
                     stddev);
  }
}

// in: perm i32 (N), x (R, ...) u8 or f32, y (R, ...)   out: xb f32 (B, ...), yb (B, ...), cursor i64[1]
// in place: row j = table row perm[(cursor + j) mod N], then cursor += B. Every index is checked
// before anything is written, so a failing call leaves the outputs and the cursor as they were.
void gather_batch(const OpCall& c) {
  const GatherBatchProblem p = check_gather_batch_call(c);
  const int32_t* perm = c.inputs[0].as<int32_t>();
  int64_t* cursor = c.outputs[2].as<int64_t>();
  const int64_t start = (cursor[0] % p.n + p.n) % p.n;
  auto row_of = [&](int64_t j) { return perm[(start + j) % p.n]; };
  for (int64_t j = 0; j < p.b; ++j) check_index(c, row_of(j), p.rows, j, c.inputs[1].shape);
  const auto* y = static_cast<const unsigned char*>(c.inputs[2].data);
  auto* yb = static_cast<unsigned char*>(c.outputs[1].data);
  const size_t x_bytes = static_cast<size_t>(p.x_row) * sizeof(float), y_bytes = static_cast<size_t>(p.y_row_bytes);
  for (int64_t j = 0; j < p.b; ++j) {
    const int64_t r = row_of(j);
    float* xb = c.outputs[0].as<float>() + j * p.x_row;
    if (p.images)
      normalise_pixels(c.inputs[1].as<uint8_t>() + r * p.x_row, xb, p.x_row, p.mean, p.stddev);
    else
      std::memcpy(xb, c.inputs[1].as<float>() + r * p.x_row, x_bytes);
    std::memcpy(yb + j * y_bytes, y + r * y_bytes, y_bytes);
  }
  cursor[0] += p.b;
}

}  // namespace

// --- checks (shared with src/cuda/data.cpp) -----------------------------------------------------------

FillProblem check_fill_call(const OpCall& c) {
  const TensorView& y = c.out(0);
  expect_defined(c, y, "y");
  FillProblem p;
  p.n = y.numel();
  p.elem_size = static_cast<int>(dtype_size(y.dtype));
  convert::element_bytes(y.dtype, c.attrs.f[0], p.bytes);
  return p;
}

int64_t check_copy_call(const OpCall& c) {
  const TensorView& x = c.in(0);
  const TensorView& y = c.out(0);
  expect_defined(c, x, "x");
  expect_defined(c, y, "y");
  expect_same_dtype(c, x, "x", y, "y");
  if (x.numel() != y.numel())
    fail_at(c, detail::concat("x shape ", x.shape, " and y shape ", y.shape, " have different element counts"));
  return x.numel() * static_cast<int64_t>(dtype_size(x.dtype));
}

void check_cast_call(const OpCall& c) {
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
}

PermuteProblem check_permute_call(const OpCall& c) {
  const TensorView& x = c.in(0);
  const TensorView& y = c.out(0);
  expect_defined(c, x, "x");
  expect_defined(c, y, "y");
  expect_same_dtype(c, x, "x", y, "y");
  PermuteProblem p;
  p.rank = x.shape.rank();
  if (y.shape.rank() != p.rank)
    fail_at(c, detail::concat("x shape ", x.shape, " and y shape ", y.shape, " differ in rank"));
  const auto xs = x.shape.strides();
  std::vector<bool> seen(p.rank, false);
  for (int k = 0; k < p.rank; ++k) {
    const int64_t q = c.attrs.i[k];
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

ConcatProblem check_concat_call(const OpCall& c) {
  const TensorView& y = c.out(0);
  expect_defined(c, y, "y");
  if (c.n_inputs < 1) fail_at(c, detail::concat("needs at least one input (y shape ", y.shape, ")"));
  ConcatProblem p;
  p.axis = normalise_axis(c, c.attrs.i[0], y.shape);
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

SliceProblem check_slice_call(const OpCall& c) {
  const bool forward = c.op == OpKind::Slice;
  const TensorView& full = forward ? c.in(0) : c.out(0);
  const TensorView& part = forward ? c.out(0) : c.in(0);
  const std::string fn = forward ? "x" : "dx", pn = forward ? "y" : "dy";
  expect_defined(c, full, fn);
  expect_defined(c, part, pn);
  expect_same_dtype(c, full, fn, part, pn);
  SliceProblem p;
  p.axis = normalise_axis(c, c.attrs.i[0], full.shape);
  expect_same_except(c, part, pn, full, fn, p.axis);
  p.outer = prod(full.shape, 0, p.axis);
  p.inner = prod(full.shape, p.axis + 1, full.shape.rank());
  p.start = c.attrs.i[1];
  p.len = part.shape.dims()[p.axis];
  p.full = full.shape.dims()[p.axis];
  if (p.start < 0 || p.start + p.len > p.full)
    fail_at(c, detail::concat("slice [", p.start, ", ", p.start + p.len, ") along axis ", p.axis, " is outside ", fn,
                              " shape ", full.shape, " (", pn, " shape ", part.shape, ")"));
  p.elem_size = static_cast<int>(dtype_size(full.dtype));
  return p;
}

GatherProblem check_gather_call(const OpCall& c) {
  const bool backward = c.op == OpKind::GatherBackward;
  const TensorView& table = backward ? c.out(0) : c.in(0);
  const TensorView& idx = c.in(1);
  const TensorView& rows = backward ? c.in(0) : c.out(0);  // the gathered side
  const std::string tn = backward ? "dtable" : c.op == OpKind::GatherImages ? "images" : "table";
  const std::string rn = backward ? "dy" : "y";
  expect_defined(c, table, tn);
  expect_dtype(c, idx, "idx", DType::i32);
  expect_defined(c, rows, rn);
  if (c.op == OpKind::Gather) expect_same_dtype(c, table, tn, rows, rn);
  if (backward) {
    expect_dtype(c, rows, rn, DType::f32);
    expect_dtype(c, table, tn, DType::f32);
  }
  if (c.op == OpKind::GatherImages) {
    expect_dtype(c, table, tn, DType::u8);
    expect_dtype(c, rows, rn, DType::f32);
    if (!(c.attrs.f[1] != 0)) fail_at(c, detail::concat("std f[1] must be nonzero (images shape ", table.shape, ")"));
  }
  expect_gather_shape(c, table, tn, idx, rows, rn);
  GatherProblem p;
  p.rows = table.shape.dims()[0];
  p.row = prod(table.shape, 1, table.shape.rank());
  p.m = idx.numel();
  p.elem_size = static_cast<int>(dtype_size(table.dtype));
  return p;
}

GatherBatchProblem check_gather_batch_call(const OpCall& c) {
  const TensorView& perm = c.in(0);
  const TensorView& x = c.in(1);
  const TensorView& y = c.in(2);
  const TensorView& xb = c.out(0);
  const TensorView& yb = c.out(1);
  const TensorView& cursor = c.out(2);
  expect_dtype(c, perm, "perm", DType::i32);
  expect_defined(c, x, "x");
  expect_defined(c, y, "y");
  expect_dtype(c, xb, "xb", DType::f32);
  expect_defined(c, yb, "yb");
  expect_dtype(c, cursor, "cursor", DType::i64);
  if (perm.numel() == 0) fail_at(c, detail::concat("perm must not be empty (shape ", perm.shape, ")"));
  if (cursor.numel() != 1) fail_at(c, detail::concat("cursor must have one element, got shape ", cursor.shape));
  if (x.dtype != DType::u8 && x.dtype != DType::f32)
    fail_at(c, detail::concat("x must be u8 or f32, got ", x.dtype, " (shape ", x.shape, ")"));
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
  GatherBatchProblem p;
  p.images = x.dtype == DType::u8;
  if (p.images && !(c.attrs.f[1] != 0)) fail_at(c, detail::concat("std f[1] must be nonzero (x shape ", x.shape, ")"));
  p.n = perm.numel();
  p.rows = x.shape.dims()[0];
  p.b = b;
  p.x_row = prod(x.shape, 1, x.shape.rank());
  p.y_row_bytes = prod(y.shape, 1, y.shape.rank()) * static_cast<int64_t>(dtype_size(y.dtype));
  p.mean = static_cast<float>(c.attrs.f[0]);
  p.stddev = static_cast<float>(c.attrs.f[1]);
  return p;
}

OneHotProblem check_one_hot_call(const OpCall& c) {
  const TensorView& lab = c.in(0);
  const TensorView& y = c.out(0);
  expect_dtype(c, lab, "labels", DType::i32);
  expect_dtype(c, y, "y", DType::f32);
  std::vector<int64_t> want = lab.shape.dims();
  const int64_t classes = y.shape.rank() > 0 ? y.shape.dims().back() : 0;
  want.push_back(classes);
  if (y.shape != Shape(want) || classes < 1)
    fail_at(c, detail::concat("y shape ", y.shape, " must be labels shape ", lab.shape, " followed by C >= 1"));
  return OneHotProblem{lab.numel(), classes};
}

void register_cpu_data_ops(OpTable& t) {
  t.add(OpKind::Fill, fill);
  t.add(OpKind::Copy, copy);
  t.add(OpKind::Cast, cast);
  t.add(OpKind::Permute, permute);
  t.add(OpKind::Concat, concat);
  t.add(OpKind::Slice, slice);
  t.add(OpKind::SliceBackward, slice_backward);
  t.add(OpKind::Gather, gather);
  t.add(OpKind::GatherBackward, gather_backward);
  t.add(OpKind::OneHot, one_hot);
  t.add(OpKind::GatherImages, gather_images);
  t.add(OpKind::GatherBatch, gather_batch);
}

}  // namespace cudl
