// cpu/util.cpp — CPU reference of the graph utility ops: Accumulate, Increment, BatchIndices.
#include <cstdint>

#include "backend/backend.hpp"
#include "backend/convert.hpp"
#include "ops/util.hpp"

namespace cudl {
namespace {

void cpu_accumulate(const OpCall& c) {
  const ops::AccumulateArgs p = ops::check_accumulate_call(c);
  const TensorView& x = p.x;
  const TensorView& acc = p.acc;
  const float scale = p.scale;
  float* a = acc.as<float>();
  const auto* bytes = static_cast<const unsigned char*>(x.data);
  const size_t es = dtype_size(x.dtype);
  for (int64_t i = 0; i < x.numel(); ++i)
    a[i] += scale * static_cast<float>(convert::element_value(x.dtype, bytes + i * es));
}

void cpu_increment(const OpCall& c) {
  const ops::IncrementArgs p = ops::check_increment_call(c);
  const TensorView& x = p.x;
  switch (x.dtype) {
    case DType::f32:
      for (int64_t i = 0; i < x.numel(); ++i) x.as<float>()[i] += static_cast<float>(p.attrs.step);
      break;
    case DType::i32:
      for (int64_t i = 0; i < x.numel(); ++i) x.as<int32_t>()[i] += static_cast<int32_t>(p.attrs.int_step);
      break;
    case DType::i64:
      for (int64_t i = 0; i < x.numel(); ++i) x.as<int64_t>()[i] += p.attrs.int_step;
      break;
    default:
      break;
  }
}

void cpu_batch_indices(const OpCall& c) {
  const ops::BatchIndicesArgs p = ops::check_batch_indices_call(c);
  const TensorView& perm = p.perm;
  const TensorView& cursor = p.cursor;
  const TensorView& idx = p.idx;
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
