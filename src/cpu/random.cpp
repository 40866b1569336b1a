// cpu/random.cpp — CPU reference of the random op family (dropout, uniform, normal): the spec.
// Every value comes from backend/philox.hpp with the counter layout documented there and in op.hpp.
#include "cpu/random.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/backend.hpp"
#include "backend/philox.hpp"
#include "cpu/select.hpp"

namespace cudl {
namespace {

void expect(const OpCall& c, const TensorView& t, const char* what, DType dtype) {
  if (!t.defined()) CUDL_FAIL(op_name(c.op), " (", c.label, "): ", what, " is undefined");
  if (t.dtype != dtype)
    CUDL_FAIL(op_name(c.op), " (", c.label, "): ", what, " must be ", dtype, ", got ", t.dtype, " (shape ", t.shape,
              ")");
}

void expect_same_shape(const OpCall& c, const TensorView& a, const char* an, const TensorView& b, const char* bn) {
  if (a.shape != b.shape)
    CUDL_FAIL(op_name(c.op), " (", c.label, "): ", an, " shape ", a.shape, " differs from ", bn, " shape ", b.shape);
}

double dropout_scale(const OpCall& c, double p) {
  if (!(p >= 0 && p <= 1)) CUDL_FAIL(op_name(c.op), " (", c.label, "): drop probability f[0]=", p, " not in [0, 1]");
  return p >= 1 ? 0.0 : 1.0 / (1.0 - p);
}

// Philox blocks generated per chunk into a buffer, so that each block is computed once (not once
// per element) and the keep/scale loop vectorises.
constexpr int64_t kDropoutChunkBlocks = 256;

// in: x, rng i64[2] {seed, offset}   out: y, [mask u8]
void dropout(const OpCall& c) {
  const DropoutProblem pr = check_dropout_call(c);
  const int64_t* rng = c.inputs[1].as<int64_t>();
  const uint64_t seed = static_cast<uint64_t>(rng[0]), offset = static_cast<uint64_t>(rng[1]);
  const float* xp = c.inputs[0].as<float>();
  float* yp = c.outputs[0].as<float>();
  uint8_t* mp = pr.has_mask ? c.outputs[1].as<uint8_t>() : nullptr;
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
  const DropoutBackwardProblem pr = check_dropout_backward_call(c);
  const float* g = c.inputs[0].as<float>();
  const uint8_t* m = c.inputs[1].as<uint8_t>();
  float* o = c.outputs[0].as<float>();
  for (int64_t i = 0; i < pr.n; ++i) o[i] = cpu_select::keep_if(m[i] != 0, g[i] * pr.scale);
}

// out: y ~ U[f0, f1): y = fma(f1 - f0, u, f0)
void random_uniform(const OpCall& c) {
  const RandomFillProblem pr = check_random_fill_call(c);
  float* yp = c.outputs[0].as<float>();
  for (int64_t i = 0; i < pr.n; ++i) {
    const philox::U32x4 w = philox::block_words(pr.seed, pr.offset, pr.stream, static_cast<uint64_t>(i / 4));
    yp[i] = std::fma(pr.b, philox::uniform01(philox::word(w, static_cast<int>(i % 4))), pr.a);
  }
}

// out: y ~ N(f0, f1^2): y = fma(f1, z, f0), z from Box-Muller on word pairs (0,1) and (2,3) of a block.
void random_normal(const OpCall& c) {
  const RandomFillProblem pr = check_random_fill_call(c);
  float* yp = c.outputs[0].as<float>();
  for (int64_t b = 0; b * 4 < pr.n; ++b) {
    const philox::U32x4 w = philox::block_words(pr.seed, pr.offset, pr.stream, static_cast<uint64_t>(b));
    float z[4];
    philox::box_muller(w.x, w.y, &z[0], &z[1]);
    philox::box_muller(w.z, w.w, &z[2], &z[3]);
    for (int k = 0; k < 4 && b * 4 + k < pr.n; ++k) yp[b * 4 + k] = std::fma(pr.b, z[k], pr.a);
  }
}

}  // namespace

DropoutProblem check_dropout_call(const OpCall& c) {
  const TensorView& x = c.in(0);
  const TensorView& rng = c.in(1);
  const TensorView& y = c.out(0);
  expect(c, x, "x", DType::f32);
  expect(c, y, "y", DType::f32);
  expect(c, rng, "rng state", DType::i64);
  if (rng.numel() != 2)
    CUDL_FAIL(op_name(c.op), " (", c.label, "): rng state must have 2 elements {seed, offset}, got shape ", rng.shape);
  expect_same_shape(c, x, "x", y, "y");
  DropoutProblem pr;
  pr.n = x.numel();
  pr.has_mask = c.has_out(1);
  if (pr.has_mask) {
    expect(c, c.outputs[1], "mask", DType::u8);
    expect_same_shape(c, x, "x", c.outputs[1], "mask");
  }
  pr.scale = static_cast<float>(dropout_scale(c, c.attrs.f[0]));
  pr.threshold = philox::keep_threshold(c.attrs.f[0]);
  pr.stream = static_cast<uint64_t>(c.attrs.i[0]);
  return pr;
}

DropoutBackwardProblem check_dropout_backward_call(const OpCall& c) {
  const TensorView& dy = c.in(0);
  const TensorView& mask = c.in(1);
  const TensorView& dx = c.out(0);
  expect(c, dy, "dy", DType::f32);
  expect(c, mask, "mask", DType::u8);
  expect(c, dx, "dx", DType::f32);
  expect_same_shape(c, dy, "dy", mask, "mask");
  expect_same_shape(c, dy, "dy", dx, "dx");
  return DropoutBackwardProblem{dy.numel(), static_cast<float>(dropout_scale(c, c.attrs.f[0]))};
}

RandomFillProblem check_random_fill_call(const OpCall& c) {
  const TensorView& y = c.out(0);
  expect(c, y, "y", DType::f32);
  RandomFillProblem pr;
  pr.n = y.numel();
  pr.seed = static_cast<uint64_t>(c.attrs.i[0]);
  pr.offset = static_cast<uint64_t>(c.attrs.i[1]);
  pr.stream = static_cast<uint64_t>(c.attrs.i[2]);
  if (c.op == OpKind::RandomUniform) {
    if (!(c.attrs.f[1] >= c.attrs.f[0]))
      CUDL_FAIL(op_name(c.op), " (", c.label, "): empty range [", c.attrs.f[0], ", ", c.attrs.f[1], ") for y shape ",
                y.shape);
    pr.a = static_cast<float>(c.attrs.f[0]);
    pr.b = static_cast<float>(c.attrs.f[1] - c.attrs.f[0]);
  } else {
    if (!(c.attrs.f[1] >= 0))
      CUDL_FAIL(op_name(c.op), " (", c.label, "): negative standard deviation ", c.attrs.f[1], " for y shape ",
                y.shape);
    pr.a = static_cast<float>(c.attrs.f[0]);
    pr.b = static_cast<float>(c.attrs.f[1]);
  }
  return pr;
}

void register_cpu_random_ops(OpTable& t) {
  t.add(OpKind::Dropout, dropout);
  t.add(OpKind::DropoutBackward, dropout_backward);
  t.add(OpKind::RandomUniform, random_uniform);
  t.add(OpKind::RandomNormal, random_normal);
}

}  // namespace cudl
