// cpu/data.cpp — CPU reference of the data-movement op family (fill, copy, cast, permute, concat,
// slice, gather, one-hot, image and training batch gathers): the spec. Layout-only ops work on any dtype.
#include "ops/data.hpp"

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
// out: y = f[0] converted to y's dtype (convert::element_bytes)
void fill(const OpCall& c) {
  const ops::FillArgs p = ops::check_fill_call(c);
  auto* y = static_cast<unsigned char*>(p.y.data);
  for (int64_t i = 0; i < p.n; ++i) std::memcpy(y + i * p.elem_size, p.bytes, p.elem_size);
}

// in: x   out: y (same dtype and numel, any shape)
void copy(const OpCall& c) {
  const ops::CopyArgs p = ops::check_copy_call(c);
  std::memmove(p.y.data, p.x.data, static_cast<size_t>(p.bytes));
}

// in: x   out: y: f32 <-> f16/bf16 (round to nearest even), f32 -> i32 (convert::f32_to_i32),
// i32 -> f32 (round to nearest even), identity
void cast(const OpCall& c) {
  const ops::CastArgs p = ops::check_cast_call(c);
  const TensorView& x = p.x;
  const TensorView& y = p.y;
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
  const ops::PermuteArgs p = ops::check_permute_call(c);
  const auto* src = static_cast<const unsigned char*>(p.x.data);
  auto* dst = static_cast<unsigned char*>(p.y.data);
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
  const ops::ConcatArgs p = ops::check_concat_call(c);
  auto* y = static_cast<unsigned char*>(p.y.data);
  const int64_t y_row = p.total * p.inner * p.elem_size;
  int64_t at = 0;
  for (int k = 0; k < c.n_inputs; ++k) {
    const int64_t x_row = p.lens[k] * p.inner * p.elem_size;
    const auto* x = static_cast<const unsigned char*>(p.xs[k].data);
    for (int64_t o = 0; o < p.outer; ++o) std::memcpy(y + o * y_row + at, x + o * x_row, static_cast<size_t>(x_row));
    at += x_row;
  }
}

// in: x   out: y = x[..., start:start+len, ...] along i[0]; i[1] = start
void slice(const OpCall& c) {
  const ops::SliceArgs p = ops::check_slice_call(c);
  const int64_t part = p.len * p.inner * p.elem_size, full = p.full * p.inner * p.elem_size;
  const int64_t at = p.start * p.inner * p.elem_size;
  const auto* x = static_cast<const unsigned char*>(p.x.data);
  auto* y = static_cast<unsigned char*>(p.y.data);
  for (int64_t o = 0; o < p.outer; ++o) std::memcpy(y + o * part, x + o * full + at, static_cast<size_t>(part));
}

// in: dy   out: dx (zeros outside the slice)
void slice_backward(const OpCall& c) {
  const ops::SliceArgs p = ops::check_slice_call(c);
  const int64_t part = p.len * p.inner * p.elem_size, full = p.full * p.inner * p.elem_size;
  const int64_t at = p.start * p.inner * p.elem_size;
  const auto* dy = static_cast<const unsigned char*>(p.dy.data);
  auto* dx = static_cast<unsigned char*>(p.dx.data);
  std::memset(dx, 0, static_cast<size_t>(p.outer * full));
  for (int64_t o = 0; o < p.outer; ++o) std::memcpy(dx + o * full + at, dy + o * part, static_cast<size_t>(part));
}

// in: table (R, ...), idx i32 (any shape)   out: y (idx..., ...) = table[idx]
void gather(const OpCall& c) {
  const ops::GatherArgs p = ops::check_gather_call(c);
  const TensorView& table = p.table;
  const int32_t* idx = p.idx.as<int32_t>();
  const size_t bytes = static_cast<size_t>(p.row) * p.elem_size;
  for (int64_t m = 0; m < p.m; ++m) {
    ops::check_gather_index(c, idx[m], p.rows, m, table.shape);
    std::memcpy(static_cast<unsigned char*>(p.y.data) + m * bytes,
                static_cast<const unsigned char*>(table.data) + idx[m] * bytes, bytes);
  }
}

// in: dy (idx..., ...), idx   out: dtable (R, ...): row r = the sum of the dy rows m with idx[m] == r,
// added in increasing m starting from 0 (this order is the spec; CUDA sums each row in the same order).
void gather_backward(const OpCall& c) {
  const ops::GatherArgs p = ops::check_gather_call(c);
  const float* dy = p.dy.as<float>();
  const int32_t* idx = p.idx.as<int32_t>();
  float* out = p.dtable.as<float>();
  std::fill(out, out + p.rows * p.row, 0.0f);
  for (int64_t m = 0; m < p.m; ++m) {
    ops::check_gather_index(c, idx[m], p.rows, m, p.dtable.shape);
    for (int64_t k = 0; k < p.row; ++k) out[idx[m] * p.row + k] += dy[m * p.row + k];
  }
}

// in: labels i32 (...)   out: y f32 (..., C)
void one_hot(const OpCall& c) {
  const ops::OneHotArgs p = ops::check_one_hot_call(c);
  const int32_t* lab = p.labels.as<int32_t>();
  float* y = p.y.as<float>();
  std::fill(y, y + p.n * p.classes, 0.0f);
  for (int64_t n = 0; n < p.n; ++n) {
    ops::check_one_hot_label(c, lab[n], n, p.classes, p.y.shape);
    y[n * p.classes + lab[n]] = 1.0f;
  }
}

// dst[k] = (src[k] / 255 - mean) / stddev in f32 for k < n (GatherImages and GatherBatch)
void normalise_pixels(const uint8_t* src, float* dst, int64_t n, float mean, float stddev) {
  for (int64_t k = 0; k < n; ++k) dst[k] = (static_cast<float>(src[k]) / 255.0f - mean) / stddev;
}

// in: images u8 (R, ...), idx i32 (B)   out: y f32 (B, ...) = (u8 / 255 - f[0]) / f[1], in f32
void gather_images(const OpCall& c) {
  const ops::GatherArgs p = ops::check_gather_call(c);
  const float mean = p.mean, stddev = p.stddev;
  const int32_t* idx = p.idx.as<int32_t>();
  for (int64_t b = 0; b < p.m; ++b) {
    ops::check_gather_index(c, idx[b], p.rows, b, p.table.shape);
    normalise_pixels(p.table.as<uint8_t>() + idx[b] * p.row, p.y.as<float>() + b * p.row, p.row, mean,
                     stddev);
  }
}

// in: perm i32 (N), x (R, ...) u8 or f32, y (R, ...)   out: xb f32 (B, ...), yb (B, ...), cursor i64[1]
// in place: row j = table row perm[(cursor + j) mod N], then cursor += B. Every index is checked
// before anything is written, so a failing call leaves the outputs and the cursor as they were.
void gather_batch(const OpCall& c) {
  const ops::GatherBatchArgs p = ops::check_gather_batch_call(c);
  const int32_t* perm = p.perm.as<int32_t>();
  int64_t* cursor = p.cursor.as<int64_t>();
  const int64_t start = (cursor[0] % p.n + p.n) % p.n;
  auto row_of = [&](int64_t j) { return perm[(start + j) % p.n]; };
  for (int64_t j = 0; j < p.b; ++j) ops::check_gather_index(c, row_of(j), p.rows, j, p.x.shape);
  const auto* y = static_cast<const unsigned char*>(p.y.data);
  auto* yb = static_cast<unsigned char*>(p.yb.data);
  const size_t x_bytes = static_cast<size_t>(p.x_row) * sizeof(float), y_bytes = static_cast<size_t>(p.y_row_bytes);
  for (int64_t j = 0; j < p.b; ++j) {
    const int64_t r = row_of(j);
    if (p.images)
      normalise_pixels(p.x.as<uint8_t>() + r * p.x_row, p.xb.as<float>() + j * p.x_row, p.x_row, p.mean, p.stddev);
    else  // f32 or i32 rows: copied
      std::memcpy(p.xb.as<unsigned char>() + j * x_bytes, p.x.as<unsigned char>() + r * x_bytes, x_bytes);
    std::memcpy(yb + j * y_bytes, y + r * y_bytes, y_bytes);
  }
  cursor[0] += p.b;
}

}  // namespace

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
