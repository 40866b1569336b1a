// cpu/random.cpp — CPU reference of the random op family (dropout, uniform, normal): the spec.
// Every value comes from backend/philox.hpp with the counter layout documented there and in op.hpp.
#include "ops/random.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/backend.hpp"
#include "backend/philox.hpp"
#include "cpu/select.hpp"

namespace cudl {
namespace {

// Philox blocks generated per chunk into a buffer, so that each block is computed once (not once
// per element) and the keep/scale loop vectorises.
constexpr int64_t kDropoutChunkBlocks = 256;

// in: x, rng i64[2] {seed, offset}   out: y, [mask u8]
void dropout(const OpCall& c) {
  const ops::DropoutArgs pr = ops::check_dropout_call(c);
  const int64_t* rng = pr.rng.as<int64_t>();
  const uint64_t seed = static_cast<uint64_t>(rng[0]), offset = static_cast<uint64_t>(rng[1]);
  const float* xp = pr.x.as<float>();
  float* yp = pr.y.as<float>();
  uint8_t* mp = pr.mask.as<uint8_t>();
  uint32_t words[4 * kDropoutChunkBlocks];
  for (int64_t b0 = 0; 4 * b0 < pr.n; b0 += kDropoutChunkBlocks) {
    const int64_t i0 = 4 * b0, len = std::min<int64_t>(4 * kDropoutChunkBlocks, pr.n - i0);
    for (int64_t b = 0; 4 * b < len; ++b) {
      const philox::U32x4 w = philox::block_words(seed, offset, pr.stream, static_cast<uint64_t>(b0 + b));
      words[4 * b] = w.x, words[4 * b + 1] = w.y, words[4 * b + 2] = w.z, words[4 * b + 3] = w.w;
    }
    for (int64_t i = 0; i < len; ++i) {
      const bool keep = philox::keep(words[i], pr.threshold);
      yp[i0 + i] = cpu_select::keep_if(keep, xp[i0 + i] * pr.scale);
      if (mp) mp[i0 + i] = keep ? 1 : 0;
    }
  }
}

// in: dy, mask   out: dx = mask ? dy / (1-p) : 0
void dropout_backward(const OpCall& c) {
  const ops::DropoutBackwardArgs pr = ops::check_dropout_backward_call(c);
  const float* g = pr.dy.as<float>();
  const uint8_t* m = pr.mask.as<uint8_t>();
  float* o = pr.dx.as<float>();
  for (int64_t i = 0; i < pr.n; ++i) o[i] = cpu_select::keep_if(m[i] != 0, g[i] * pr.scale);
}

// out: y ~ U[f0, f1): y = fma(f1 - f0, u, f0)
void random_uniform(const OpCall& c) {
  const ops::RandomFillArgs pr = ops::check_random_fill_call(c);
  float* yp = pr.y.as<float>();
  for (int64_t i = 0; i < pr.n; ++i) {
    const philox::U32x4 w = philox::block_words(pr.seed, pr.offset, pr.stream, static_cast<uint64_t>(i / 4));
    yp[i] = std::fma(pr.b, philox::uniform01(philox::word(w, static_cast<int>(i % 4))), pr.a);
  }
}

// in: [rng {seed, offset}]  out: y ~ N(f0, f1^2): y = fma(f1, z, f0), z from Box-Muller on word pairs (0,1) and (2,3) of a block.
void random_normal(const OpCall& c) {
  const ops::RandomFillArgs pr = ops::check_random_fill_call(c);
  float* yp = pr.y.as<float>();
  const int64_t* rng = pr.rng.as<int64_t>();
  const uint64_t seed = rng ? static_cast<uint64_t>(rng[0]) : pr.seed;
  const uint64_t offset = rng ? static_cast<uint64_t>(rng[1]) + pr.offset : pr.offset;
  for (int64_t b = 0; b * 4 < pr.n; ++b) {
    const philox::U32x4 w = philox::block_words(seed, offset, pr.stream, static_cast<uint64_t>(b));
    float z[4];
    philox::box_muller(w.x, w.y, &z[0], &z[1]);
    philox::box_muller(w.z, w.w, &z[2], &z[3]);
    for (int k = 0; k < 4 && b * 4 + k < pr.n; ++k) yp[b * 4 + k] = std::fma(pr.b, z[k], pr.a);
  }
}

}  // namespace

void register_cpu_random_ops(OpTable& t) {
  t.add(OpKind::Dropout, dropout);
  t.add(OpKind::DropoutBackward, dropout_backward);
  t.add(OpKind::RandomUniform, random_uniform);
  t.add(OpKind::RandomNormal, random_normal);
}

}  // namespace cudl
