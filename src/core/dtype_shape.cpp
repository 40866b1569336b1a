// core/dtype_shape.cpp — DType names and sizes, Shape arithmetic and broadcasting.
#include <algorithm>

#include "cudl/dtype.hpp"
#include "cudl/error.hpp"
#include "cudl/shape.hpp"

namespace cudl {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  CUDL_FAIL("invalid dtype value ", static_cast<int>(t));
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  return "invalid";
}

DType dtype_from_name(const std::string& n) {
  if (n == "f32" || n == "float32" || n == "F32") return DType::f32;
  if (n == "f16" || n == "float16" || n == "F16") return DType::f16;
  if (n == "bf16" || n == "bfloat16" || n == "BF16") return DType::bf16;
  if (n == "i32" || n == "int32" || n == "I32") return DType::i32;
  if (n == "i64" || n == "int64" || n == "I64") return DType::i64;
  if (n == "u8" || n == "uint8" || n == "U8") return DType::u8;
  CUDL_FAIL("unknown dtype '", n, "' (expected f32, f16, bf16, i32, i64 or u8)");
}

bool dtype_is_float(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16; }

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::vector<int64_t>(dims)) {}

Shape::Shape(const std::vector<int64_t>& dims) : dims_(dims) {
  if (static_cast<int>(dims_.size()) > kMaxDims)
    CUDL_FAIL("shape ", str(), " has ", dims_.size(), " dimensions; at most ", kMaxDims, " are supported");
  for (int64_t d : dims_)
    if (d < 0) CUDL_FAIL("shape ", str(), " has a negative dimension");
}

int64_t Shape::operator[](int i) const {
  int r = rank();
  int k = i < 0 ? i + r : i;
  if (k < 0 || k >= r) CUDL_FAIL("dimension ", i, " out of range for shape ", str());
  return dims_[k];
}

int64_t& Shape::at(int i) {
  int r = rank();
  int k = i < 0 ? i + r : i;
  if (k < 0 || k >= r) CUDL_FAIL("dimension ", i, " out of range for shape ", str());
  return dims_[k];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  bool overflow = false;
  for (int64_t d : dims_) {
    if (d == 0) return 0;  // zero elements however large the other dimensions are
    overflow |= __builtin_mul_overflow(n, d, &n);
  }
  if (overflow)
    CUDL_FAIL("shape ", str(), ": the element count overflows 64-bit integers (more than 2^63 - 1 elements)");
  return n;
}

std::vector<int64_t> Shape::strides() const {
  std::vector<int64_t> s(dims_.size(), 1);
  for (int i = rank() - 2; i >= 0; --i) s[i] = s[i + 1] * dims_[i + 1];
  return s;
}

std::string Shape::str() const {
  std::string s = "(";
  for (size_t i = 0; i < dims_.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[i]);
  }
  if (dims_.size() == 1) s += ",";
  return s + ")";
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* what) {
  int r = std::max(a.rank(), b.rank());
  std::vector<int64_t> out(r);
  for (int i = 0; i < r; ++i) {
    int ia = a.rank() - r + i, ib = b.rank() - r + i;
    int64_t da = ia >= 0 ? a.dims()[ia] : 1, db = ib >= 0 ? b.dims()[ib] : 1;
    if (da != db && da != 1 && db != 1)
      CUDL_FAIL(what, ": shapes ", a, " and ", b, " cannot be broadcast (dimension ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return Shape(out);
}

}  // namespace cudl
