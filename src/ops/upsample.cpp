// ops/upsample.cpp — argument checks of the upsampling op family: the contract the CPU reference
// (src/cpu) and the CUDA backend (kernels/upsample.cu) both run first.
#include "ops/upsample.hpp"

#include "cudl/error.hpp"
#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

Upsample2dArgs check_upsample2d_call(const OpCall& c) {
  using namespace op_checks;
  arity(c);
  if (c.op != OpKind::Upsample2d && c.op != OpKind::Upsample2dBackward)
    CUDL_FAIL("check_upsample2d_call: ", op_name(c.op), " is not an upsampling op");
  const bool forward = c.op == OpKind::Upsample2d;
  const Upsample2dAttrs a = Upsample2dAttrs::from(c.attrs);
  const TensorView& in = need_in(c, 0, forward ? "x" : "dy");
  const TensorView& out = need_out(c, 0, forward ? "y" : "dx");
  const DType st = check_storage(c);  // f32, bf16 or f16: one for x and y (dy and dx)
  dtype(c, in, forward ? "x" : "dy", st);
  dtype(c, out, forward ? "y" : "dx", st);
  if (a.scale_h < 1 || a.scale_w < 1)
    fail_at(c, "scale must be >= 1, got (" + std::to_string(a.scale_h) + ", " + std::to_string(a.scale_w) + ")");
  if (a.mode != UpsampleMode::Nearest && a.mode != UpsampleMode::Bilinear)
    fail_at(c, "mode " + std::to_string(static_cast<int64_t>(a.mode)) + " is neither nearest (0) nor bilinear (1)");
  const TensorView& small = forward ? in : out;
  const TensorView& large = forward ? out : in;
  if (small.shape.rank() != 4)
    CUDL_FAIL(who(c), ": ", forward ? "x" : "dx", " must be (N, C, H, W), got ", small.shape);
  Upsample2dArgs g;
  g.storage = st;
  g.N = small.shape[0], g.C = small.shape[1], g.H = small.shape[2], g.W = small.shape[3];
  g.sh = a.scale_h, g.sw = a.scale_w;
  g.bilinear = a.mode == UpsampleMode::Bilinear;
  shape(c, large, forward ? "y" : "dy", Shape{g.N, g.C, g.Ho(), g.Wo()},
        std::string(forward ? "x " : "dx ") + small.shape.str() + " upsampled by (" + std::to_string(g.sh) + ", " +
            std::to_string(g.sw) + ")");
  if (forward)
    g.x = in, g.y = out;
  else
    g.dy = in, g.dx = out;
  return g;
}

}  // namespace ops
}  // namespace cudl
