// ops/optim.cpp — argument checks of the optim op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/optim.hpp"

#include <cmath>
#include <vector>

#include "cudl/error.hpp"
#include "ops/common.hpp"

namespace cudl {

using op_checks::fail_at;

OptimGroups check_optim_call(const OpCall& c) {
  OptimGroups g;
  switch (c.op) {
    case OpKind::SgdStep:
      g.depth = c.attrs.f[0] != 0 ? 3 : 2;
      if (c.attrs.i[0] && (c.attrs.f[0] <= 0 || c.attrs.f[1] != 0))
        fail_at(c, "Nesterov momentum requires momentum f[0] > 0 and dampening f[1] = 0");
      break;
    case OpKind::AdamStep:
      g.depth = 4;
      if (!(c.attrs.f[0] >= 0 && c.attrs.f[0] < 1 && c.attrs.f[1] >= 0 && c.attrs.f[1] < 1))
        fail_at(c, detail::concat("betas (", c.attrs.f[0], ", ", c.attrs.f[1], ") not in [0, 1)"));
      break;
    case OpKind::RmspropStep:
    case OpKind::AdagradStep:
      g.depth = 3;
      break;
    case OpKind::WeightPenalty:
      g.depth = 2;
      break;
    case OpKind::ClipGradNorm:
      g.depth = 1;
      break;
    default:
      fail_at(c, "not an optimizer op");
  }
  const bool stepper = c.op != OpKind::WeightPenalty && c.op != OpKind::ClipGradNorm;
  g.first = c.op == OpKind::ClipGradNorm ? 0 : 1;
  if (stepper) {
    const TensorView& h = c.in(0);
    if (!h.defined() || h.dtype != DType::f32 || h.numel() < 2)
      fail_at(c, detail::concat("hyper (input 0) must be f32 with at least 2 elements [lr, t], got ",
                                h.defined() ? dtype_name(h.dtype) : "undefined", " shape ", h.shape));
  }
  if (c.op == OpKind::ClipGradNorm) {
    const TensorView& out = c.out(0);
    if (!out.defined() || out.dtype != DType::f32 || out.numel() != 1)
      fail_at(c, detail::concat("total_norm must be f32 with 1 element, got shape ", out.shape));
    if (!(c.attrs.f[0] > 0)) fail_at(c, detail::concat("max_norm f[0]=", c.attrs.f[0], " must be > 0"));
  }
  const int n = c.n_inputs - g.first;
  if (n < 0 || n % g.depth != 0)
    fail_at(c, detail::concat("expects groups of ", g.depth, " tensors after ", g.first, " leading input(s), got ",
                              c.n_inputs, " inputs"));
  g.n = n / g.depth;
  for (int k = 0; k < g.n; ++k) {
    const TensorView& p = g.at(c, k, 0);
    for (int j = 0; j < g.depth; ++j) {
      const TensorView& t = g.at(c, k, j);
      const int at = g.first + k * g.depth + j;
      if (!t.defined()) fail_at(c, detail::concat("input ", at, " (group ", k, ") is undefined"));
      if (t.dtype != DType::f32)
        fail_at(c, detail::concat("input ", at, " must be f32, got ", t.dtype, " (shape ", t.shape, ")"));
      if (t.shape != p.shape)
        fail_at(c, detail::concat("group ", k, ": tensor ", j, " has shape ", t.shape, " but the parameter has shape ",
                                  p.shape));
    }
  }
  return g;
}

}  // namespace cudl
