// ops/random.cpp — argument checks of the random op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/random.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/philox.hpp"
#include "cudl/error.hpp"
#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

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
}  // namespace

DropoutArgs check_dropout_call(const OpCall& c) {
  const DropoutAttrs attrs = DropoutAttrs::from(c.attrs);
  const TensorView& x = c.in(0);
  const TensorView& rng = c.in(1);
  const TensorView& y = c.out(0);
  const DType st = check_storage(c);
  expect(c, x, "x", st);
  expect(c, y, "y", st);
  expect(c, rng, "rng state", DType::i64);
  if (rng.numel() != 2)
    CUDL_FAIL(op_name(c.op), " (", c.label, "): rng state must have 2 elements {seed, offset}, got shape ", rng.shape);
  expect_same_shape(c, x, "x", y, "y");
  DropoutArgs pr;
  pr.x = x, pr.rng = rng, pr.y = y;
  pr.n = x.numel();
  pr.storage = st;
  pr.has_mask = c.has_out(1);
  if (pr.has_mask) {
    pr.mask = c.outputs[1];
    expect(c, c.outputs[1], "mask", DType::u8);
    expect_same_shape(c, x, "x", c.outputs[1], "mask");
  }
  pr.scale = static_cast<float>(dropout_scale(c, attrs.p));
  pr.threshold = philox::keep_threshold(attrs.p);
  pr.stream = static_cast<uint64_t>(attrs.stream);
  return pr;
}

DropoutBackwardArgs check_dropout_backward_call(const OpCall& c) {
  const TensorView& dy = c.in(0);
  const TensorView& mask = c.in(1);
  const TensorView& dx = c.out(0);
  const DType st = check_storage(c);
  expect(c, dy, "dy", st);
  expect(c, mask, "mask", DType::u8);
  expect(c, dx, "dx", st);
  expect_same_shape(c, dy, "dy", mask, "mask");
  expect_same_shape(c, dy, "dy", dx, "dx");
  DropoutBackwardArgs pr;
  pr.dy = dy, pr.mask = mask, pr.dx = dx;
  pr.n = dy.numel();
  pr.storage = st;
  pr.scale = static_cast<float>(dropout_scale(c, DropoutAttrs::from(c.attrs).p));
  return pr;
}

RandomFillArgs check_random_fill_call(const OpCall& c) {
  const TensorView& y = c.out(0);
  // RandomNormal writes the storage type (one rounding of each fp32 draw); RandomUniform f32.
  const DType st = c.op == OpKind::RandomNormal ? check_storage(c) : DType::f32;
  expect(c, y, "y", st);
  RandomFillArgs pr;
  pr.y = y;
  pr.storage = st;
  pr.n = y.numel();
  if (c.op == OpKind::RandomUniform) {
    const RandomUniformAttrs a = RandomUniformAttrs::from(c.attrs);
    pr.seed = static_cast<uint64_t>(a.seed), pr.offset = static_cast<uint64_t>(a.offset);
    pr.stream = static_cast<uint64_t>(a.stream);
    if (!(a.hi >= a.lo))
      CUDL_FAIL(op_name(c.op), " (", c.label, "): empty range [", a.lo, ", ", a.hi, ") for y shape ", y.shape);
    pr.a = static_cast<float>(a.lo);
    pr.b = static_cast<float>(a.hi - a.lo);
  } else {
    const RandomNormalAttrs a = RandomNormalAttrs::from(c.attrs);
    op_checks::arity(c);
    if (c.has_in(0)) {
      pr.rng = c.in(0);
      expect(c, pr.rng, "rng", DType::i64);
      if (pr.rng.shape != Shape{2})
        CUDL_FAIL(op_name(c.op), " (", c.label, "): rng must be i64 (2,) {seed, offset}, got ", pr.rng.shape,
                  " for y shape ", y.shape);
    }
    pr.seed = static_cast<uint64_t>(a.seed), pr.offset = static_cast<uint64_t>(a.offset);
    pr.stream = static_cast<uint64_t>(a.stream);
    if (!(a.std >= 0))
      CUDL_FAIL(op_name(c.op), " (", c.label, "): negative standard deviation ", a.std, " for y shape ", y.shape);
    pr.a = static_cast<float>(a.mean);
    pr.b = static_cast<float>(a.std);
  }
  return pr;
}

}  // namespace ops
}  // namespace cudl
