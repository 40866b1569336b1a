// ops/random.cpp — argument checks of the random op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/random.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/philox.hpp"
#include "cudl/error.hpp"
#include "ops/common.hpp"

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

}  // namespace cudl
