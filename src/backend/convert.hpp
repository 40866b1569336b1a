// backend/convert.hpp — element conversions whose exact rule is part of the op spec (Cast, Fill):
// shared by the CPU reference and the kernels so both give bit-identical results.
#pragma once

#include <cstdint>

#include "backend/hd.hpp"

namespace cudl::convert {

/// f32 -> i32 truncating toward zero; NaN -> 0, out-of-range saturates (the GPU's cvt.rzi.s32.f32).
CUDL_HD int32_t f32_to_i32(float x) {
  if (x != x) return 0;
  if (x >= 2147483648.0f) return 2147483647;
  if (x <= -2147483648.0f) return -2147483647 - 1;
  return static_cast<int32_t>(x);
}

}  // namespace cudl::convert

#if !defined(__CUDACC__) || !defined(__CUDA_ARCH__)
#include <cmath>
#include <cstring>

#include "core/half.hpp"
#include "cudl/dtype.hpp"

namespace cudl::convert {

/// The bytes of one element of `dtype` holding `v` (host only; Fill's rule): floats round to nearest
/// even, integers truncate toward zero and saturate, NaN becomes 0 for integers.
inline void element_bytes(DType dtype, double v, unsigned char* out) {
  auto sat = [&](double lo, double hi) { return v != v ? 0.0 : std::trunc(v < lo ? lo : v > hi ? hi : v); };
  switch (dtype) {
    case DType::f32: {
      const float f = static_cast<float>(v);
      std::memcpy(out, &f, 4);
      break;
    }
    case DType::f16: {
      const uint16_t h = float_to_half_bits(static_cast<float>(v));
      std::memcpy(out, &h, 2);
      break;
    }
    case DType::bf16: {
      const uint16_t h = float_to_bf16_bits(static_cast<float>(v));
      std::memcpy(out, &h, 2);
      break;
    }
    case DType::i32: {
      const int32_t x = static_cast<int32_t>(sat(-2147483648.0, 2147483647.0));
      std::memcpy(out, &x, 4);
      break;
    }
    case DType::i64: {
      const int64_t x = v >= 9223372036854775807.0
                            ? INT64_MAX
                            : static_cast<int64_t>(sat(-9223372036854775808.0, 0x1.fffffffffffffp62));
      std::memcpy(out, &x, 8);
      break;
    }
    case DType::u8: {
      const uint8_t x = static_cast<uint8_t>(sat(0.0, 255.0));
      std::memcpy(out, &x, 1);
      break;
    }
  }
}

/// The value of one element of `dtype` stored at `in`, as a double (host only).
inline double element_value(DType dtype, const unsigned char* in) {
  switch (dtype) {
    case DType::f32: { float f; std::memcpy(&f, in, 4); return f; }
    case DType::f16: { uint16_t h; std::memcpy(&h, in, 2); return half_bits_to_float(h); }
    case DType::bf16: { uint16_t h; std::memcpy(&h, in, 2); return bf16_bits_to_float(h); }
    case DType::i32: { int32_t x; std::memcpy(&x, in, 4); return x; }
    case DType::i64: { int64_t x; std::memcpy(&x, in, 8); return static_cast<double>(x); }
    case DType::u8: return in[0];
  }
  return 0;
}

}  // namespace cudl::convert
#endif
