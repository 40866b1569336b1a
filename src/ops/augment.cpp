// ops/augment.cpp — argument checks of the augment op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/augment.hpp"

#include <cmath>

#include "backend/augment.hpp"
#include "cudl/error.hpp"
#include "ops/common.hpp"

namespace cudl {
namespace ops {
namespace {

constexpr double kPi = 3.14159265358979323846;

}  // namespace

AugmentArgs check_augment_call(const OpCall& c) {
  using namespace op_checks;
  arity(c);
  const AugmentAttrs attrs = AugmentAttrs::from(c.attrs);
  const TensorView& x = need_in(c, 0, "x");
  const TensorView& rng = need_in(c, 1, "rng state");
  const TensorView& y = need_out(c, 0, "y");
  dtype(c, x, "x", DType::f32);
  dtype(c, y, "y", DType::f32);
  dtype(c, rng, "rng state", DType::i64);
  if (rng.numel() != 2) CUDL_FAIL(who(c), ": rng state must have 2 elements {seed, offset}, got shape ", rng.shape);
  if (x.shape.rank() != 4) CUDL_FAIL(who(c), ": x must be images (B, C, H, W), got shape ", x.shape);
  shape(c, y, "y", x.shape, "same as x");
  if (x.data == y.data) CUDL_FAIL(who(c), ": y must not alias x (shape ", x.shape, ")");
  const int64_t max_shift = attrs.max_shift;
  if (max_shift < 0 || max_shift > (int64_t{1} << 20))
    CUDL_FAIL(who(c), ": max shift i[0]=", max_shift, " must be in [0, 2^20] pixels (x shape ", x.shape, ")");
  const int64_t stream = attrs.stream;
  if (stream < 0 || stream > 0x7fffffff)
    CUDL_FAIL(who(c), ": stream id i[1]=", stream, " must be in [0, 2^31) (x shape ", x.shape, ")");
  const double degrees = attrs.max_degrees;
  if (!(degrees >= 0 && degrees <= 180))
    CUDL_FAIL(who(c), ": max rotation f[0]=", degrees, " degrees must be in [0, 180] (x shape ", x.shape, ")");
  if (x.shape[0] > 0xffffffffll) CUDL_FAIL(who(c), ": at most 2^32 images per call, got x shape ", x.shape);
  AugmentArgs pr;
  pr.x = x, pr.rng = rng, pr.y = y;
  pr.B = x.shape[0];
  pr.C = x.shape[1];
  pr.H = x.shape[2];
  pr.W = x.shape[3];
  pr.max_shift = max_shift;
  pr.max_radians = static_cast<float>(degrees * kPi / 180.0);
  pr.fill = static_cast<float>(attrs.fill);
  pr.stream = static_cast<uint64_t>(stream);
  return pr;
}

}  // namespace ops
}  // namespace cudl
