// ops/softmax.cpp — argument checks of the softmax op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/softmax.hpp"

#include <cmath>
#include <limits>

#include "cudl/error.hpp"
#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

namespace chk = op_checks;

SoftmaxArgs check_softmax_call(const OpCall& call) {
  const bool backward = call.op == OpKind::SoftmaxBackward || call.op == OpKind::LogSoftmaxBackward;
  chk::arity(call);
  const TensorView& first = chk::need_in(call, 0, backward ? "y" : "x");
  const char* first_name = backward ? "y" : "x";
  const DType st = check_storage(call);
  chk::dtype(call, first, first_name, st);
  if (first.shape.rank() < 1) CUDL_FAIL(chk::who(call), ": ", first_name, " must have at least one dimension");
  const std::string same = std::string("same as ") + first_name;
  if (backward) {
    const TensorView& dy = chk::need_in(call, 1, "dy");
    chk::dtype(call, dy, "dy", st);
    chk::shape(call, dy, "dy", first.shape, same);
  }
  const TensorView& out = chk::need_out(call, 0, backward ? "dx" : "y");
  chk::dtype(call, out, backward ? "dx" : "y", st);
  chk::shape(call, out, backward ? "dx" : "y", first.shape, same);
  SoftmaxArgs p;
  p.storage = st;
  if (backward)
    p.y = first, p.dy = call.inputs[1], p.dx = out;
  else
    p.x = first, p.y = out;
  p.cols = first.shape[-1];
  p.rows = p.cols == 0 ? 0 : first.shape.numel() / p.cols;
  return p;
}

}  // namespace ops
}  // namespace cudl
