// backend/philox.hpp — Philox-4x32-10 (Salmon et al., SC'11) and the value transforms built on it.
// One definition shared by the CPU reference (src/cpu/random.cpp) and the kernels (kernels/random.cu).
#pragma once

#include <cmath>
#include <cstdint>

#include "backend/hd.hpp"

namespace cudl::philox {

// Counter layout (the contract between CPU and CUDA; see also op.hpp, "randomness"):
//   element i of a tensor uses block b = i / 4 + offset (64-bit) and word i % 4 of
//   philox4x32_10(counter = {lo32(b), hi32(b), lo32(stream), hi32(stream)}, key = {lo32(seed), hi32(seed)}).
// A call consumes blocks(numel) consecutive blocks starting at `offset`; advancing offset by at least
// that much gives fresh numbers for the next call with the same seed and stream.

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // multipliers
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments (golden ratio, sqrt(3)-1)

struct U32x4 {
  uint32_t x, y, z, w;
};

CUDL_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

CUDL_HD U32x4 philox_round(U32x4 c, uint32_t k0, uint32_t k1) {
  uint32_t hi0, hi1;
  const uint32_t lo0 = mulhilo(kM0, c.x, &hi0);
  const uint32_t lo1 = mulhilo(kM1, c.z, &hi1);
  return U32x4{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
}

/// The Random123 philox4x32 with 10 rounds: 4 random words per (counter, key).
CUDL_HD U32x4 philox4x32_10(U32x4 ctr, uint32_t k0, uint32_t k1) {
  ctr = philox_round(ctr, k0, k1);
  for (int r = 1; r < 10; ++r) {
    k0 += kW0;
    k1 += kW1;
    ctr = philox_round(ctr, k0, k1);
  }
  return ctr;
}

/// Number of counter blocks a tensor of n elements consumes.
CUDL_HD uint64_t blocks(int64_t n) { return static_cast<uint64_t>((n + 3) / 4); }

/// The 4 words for block `block` (relative to `offset`) of stream `stream` under `seed`.
CUDL_HD U32x4 block_words(uint64_t seed, uint64_t offset, uint64_t stream, uint64_t block) {
  const uint64_t b = block + offset;
  const U32x4 ctr{static_cast<uint32_t>(b), static_cast<uint32_t>(b >> 32), static_cast<uint32_t>(stream),
                  static_cast<uint32_t>(stream >> 32)};
  return philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

CUDL_HD uint32_t word(const U32x4& w, int k) { return k == 0 ? w.x : k == 1 ? w.y : k == 2 ? w.z : w.w; }

/// Uniform float in [0, 1): the top 24 bits of a word times 2^-24 (exact in f32).
CUDL_HD float uniform01(uint32_t x) { return static_cast<float>(x >> 8) * 5.9604644775390625e-8f; }
/// Uniform float in (0, 1]: for logarithms.
CUDL_HD float uniform01_open0(uint32_t x) { return static_cast<float>((x >> 8) + 1u) * 5.9604644775390625e-8f; }

/// Dropout keep test: keep iff the top 24 bits are >= threshold = ceil(p * 2^24) (see keep_threshold).
/// p = 0 keeps everything (threshold 0), p = 1 drops everything (threshold 2^24).
CUDL_HD bool keep(uint32_t x, uint32_t threshold) { return (x >> 8) >= threshold; }
/// The dropout keep test of element n of a tensor (the Dropout op's rule, one element at a time).
CUDL_HD bool keep_element(uint64_t seed, uint64_t offset, uint64_t stream, uint32_t threshold, uint64_t n) {
  return keep(word(block_words(seed, offset, stream, n / 4), static_cast<int>(n % 4)), threshold);
}
inline uint32_t keep_threshold(double p) {
  if (!(p > 0)) return 0;
  if (p >= 1) return 1u << 24;
  return static_cast<uint32_t>(std::ceil(p * 16777216.0));
}

/// Box-Muller on a pair of words: z0 = r cos(2 pi u2), z1 = r sin(2 pi u2), r = sqrt(-2 ln u1),
/// u1 in (0, 1] from the first word, u2 in [0, 1) from the second. Elementary functions are the
/// platform's f32 versions (logf, sqrtf, cosf, sinf): CPU and GPU agree to a few ulp, not bitwise.
CUDL_HD void box_muller(uint32_t a, uint32_t b, float* z0, float* z1) {
  const float u1 = uniform01_open0(a);
  const float u2 = uniform01(b);
  const float r = sqrtf(-2.0f * logf(u1));
  const float theta = 6.2831853071795864769f * u2;
  *z0 = r * cosf(theta);
  *z1 = r * sinf(theta);
}

}  // namespace cudl::philox
