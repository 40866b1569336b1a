// cpu/vmath.hpp — float exp, sigmoid, tanh and tanh-GELU for the CPU backend's loops, in plain
// arithmetic and selects (no calls, no branches) so that GCC vectorises the loops that use them.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "ops/matmul.hpp"

namespace cudl::vmath {

/// Whether the CPU runs AVX2: loops over these functions keep a copy compiled for it
/// ([[gnu::target("avx2")]], no FMA, so the same bits as the baseline copy) and take it then.
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

/// Loop::run(args...) compiled twice, for the baseline ISA and for AVX2, the AVX2 copy taken where
/// the CPU has it. Loop::run must be [[gnu::always_inline]] so that its body is compiled in each
/// copy. Neither copy may contract to FMA (AVX2 alone has none) and every lane rounds each
/// operation as the scalar code does: both give the same bits.
template <typename Loop, typename... Args>
void simd_base(Args... args) {
  Loop::run(args...);
}
template <typename Loop, typename... Args>
[[gnu::target("avx2")]] void simd_avx2(Args... args) {
  Loop::run(args...);
}
template <typename Loop, typename... Args>
void simd(Args... args) {
  cpu_has_avx2() ? simd_avx2<Loop>(args...) : simd_base<Loop>(args...);
}

/// e^x: Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, Cephes's degree-7 polynomial for e^r,
/// times 2^n built in the exponent bits. Within 1 ulp of e^x for normal results (tests/
/// test_cpu_vmath.cpp measures it); 0 below -87.33 (where e^x would be subnormal), +inf above
/// 88.72, NaN for NaN. Deterministic: no FMA contraction is possible at the baseline x86-64 ISA
/// the library is built for, and the result depends on x alone.
inline float exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;  // kLn2Hi has 9 bits: n*kLn2Hi is exact
  constexpr float kRound = 12582912.f;                               // 1.5 * 2^23: adding it rounds to an integer
  constexpr float kLo = -87.3365479f, kHi = 88.7228394f;
  const float xc = x < kLo ? kLo : (x > kHi ? kHi : x);  // NaN stays NaN
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  uint32_t tb;
  std::memcpy(&tb, &t, sizeof tb);
  const int32_t ni = static_cast<int32_t>(tb - 0x4B400000u);  // n, from t's low mantissa bits (NaN: unused)
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.f;
  // 2^n for n in [-126, 128]: 2^128 is not a float, so n = 128 scales by 2^127 and then by 2.
  const int32_t big = ni > 127 ? 1 : 0;
  const uint32_t bits = static_cast<uint32_t>(ni - big + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  float e = p * scale * (big ? 2.f : 1.f);
  e = x < kLo ? 0.f : e;
  e = x > kHi ? std::numeric_limits<float>::infinity() : e;
  return e;
}

/// 1 / (1 + e^-v), as the shared cell math writes it (ops/recurrent.hpp), with exp above.
inline float sigmoid(float v) { return 1.f / (1.f + exp(-v)); }

/// tanh as recurrent_math::tanh_cell computes it (Taylor series below |v| = 0.125, else
/// (1 - e)/(1 + e) with e = e^(-2|v|)), with exp above; within 4 ulp of tanh.
inline float tanh(float v) {
  const float a = v < 0.f ? -v : v;
  const float v2 = v * v;
  const float small = v * (1.f + v2 * (-1.f / 3.f + v2 * (2.f / 15.f + v2 * (-17.f / 315.f))));
  const float e = exp(-2.f * a);
  const float big = (1.f - e) / (1.f + e);
  const float large = v < 0.f ? -big : big;
  return a < 0.125f ? small : large;  // NaN: a < 0.125 is false, large is NaN
}

/// The tanh-GELU's pieces for x: s = 0.5 (1 + tanh(u)) = sigmoid(2u) and 1 - s, with
/// u = sqrt(2/pi) (x + 0.044715 x^3). Both come from e = e^(-2|u|) without cancellation:
/// s = 1/(1 + e) or e/(1 + e) by the sign of u. matmul_math::gelu_tanh's 0.5 x (1 + tanh(u)) is the
/// same function; this form keeps full relative accuracy in the negative tail too.
struct GeluParts {
  float s, one_minus_s, du_dx;
};
inline GeluParts gelu_parts(float x) {
  using matmul_math::kSqrt2OverPi;
  constexpr float kCoef = matmul_math::kGeluCoef;
  const float x2 = x * x;
  const float u = kSqrt2OverPi * (x + kCoef * x2 * x);
  const float au = u < 0.f ? -u : u;
  const float e = exp(-2.f * au);
  const float inv = 1.f / (1.f + e);
  const float ei = e * inv;
  const bool neg = u < 0.f;
  return {neg ? ei : inv, neg ? inv : ei, kSqrt2OverPi * (1.f + 3.f * kCoef * x2)};
}

/// gelu_tanh(x) = x s.
inline float gelu_tanh(float x) { return x * gelu_parts(x).s; }

/// dy · gelu_tanh'(x) = dy (s + 2 x s (1 - s) du/dx)  (d/du of sigmoid(2u) is 2 s (1 - s)).
inline float gelu_tanh_grad(float dy, float x) {
  const GeluParts g = gelu_parts(x);
  return dy * (g.s + 2.f * x * g.s * g.one_minus_s * g.du_dx);
}

}  // namespace cudl::vmath
