// cpu/util.cpp — CPU reference of the graph utility ops: Accumulate and Increment.
#include <cstdint>

#include "backend/backend.hpp"
#include "core/half.hpp"
#include "cudl/error.hpp"

namespace cudl {
namespace {

double load(const TensorView& v, int64_t i) {
  switch (v.dtype) {
    case DType::f32: return v.as<float>()[i];
    case DType::i32: return v.as<int32_t>()[i];
    case DType::i64: return static_cast<double>(v.as<int64_t>()[i]);
    case DType::u8: return v.as<uint8_t>()[i];
    case DType::f16: return half_bits_to_float(v.as<uint16_t>()[i]);
    case DType::bf16: return bf16_bits_to_float(v.as<uint16_t>()[i]);
  }
  return 0;
}

void cpu_accumulate(const OpCall& c) {
  const TensorView& x = c.in(0);
  const TensorView& acc = c.out(0);
  if (acc.dtype != DType::f32 || x.numel() != acc.numel())
    CUDL_FAIL("Accumulate (", c.label, "): acc must be f32 with as many elements as x; got x ", x.shape, " ",
              x.dtype, ", acc ", acc.shape, " ", acc.dtype);
  const float scale = static_cast<float>(c.attrs.f[0]);
  float* a = acc.as<float>();
  for (int64_t i = 0; i < x.numel(); ++i) a[i] += scale * static_cast<float>(load(x, i));
}

void cpu_increment(const OpCall& c) {
  const TensorView& x = c.out(0);
  switch (x.dtype) {
    case DType::f32:
      for (int64_t i = 0; i < x.numel(); ++i) x.as<float>()[i] += static_cast<float>(c.attrs.f[0]);
      break;
    case DType::i32:
      for (int64_t i = 0; i < x.numel(); ++i) x.as<int32_t>()[i] += static_cast<int32_t>(c.attrs.i[0]);
      break;
    case DType::i64:
      for (int64_t i = 0; i < x.numel(); ++i) x.as<int64_t>()[i] += c.attrs.i[0];
      break;
    default:
      CUDL_FAIL("Increment (", c.label, "): dtype ", x.dtype, " not supported (f32, i32, i64)");
  }
}

void cpu_batch_indices(const OpCall& c) {
  const TensorView& perm = c.in(0);
  const TensorView& cursor = c.in(1);
  const TensorView& idx = c.out(0);
  if (perm.dtype != DType::i32 || idx.dtype != DType::i32 || cursor.dtype != DType::i64 || perm.numel() == 0)
    CUDL_FAIL("BatchIndices (", c.label, "): expected perm i32 (N > 0), cursor i64, idx i32; got perm ", perm.shape,
              " ", perm.dtype, ", cursor ", cursor.dtype, ", idx ", idx.dtype);
  const int64_t n = perm.numel(), start = cursor.as<int64_t>()[0];
  for (int64_t j = 0; j < idx.numel(); ++j) idx.as<int32_t>()[j] = perm.as<int32_t>()[(start + j) % n];
}

}  // namespace

void register_cpu_util_ops(OpTable& t) {
  t.add(OpKind::Accumulate, cpu_accumulate);
  t.add(OpKind::Increment, cpu_increment);
  t.add(OpKind::BatchIndices, cpu_batch_indices);
}

}  // namespace cudl
