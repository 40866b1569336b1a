// ops/optim.cpp — argument checks of the optim op family: the contract the CPU reference (src/cpu) and
// the CUDA backend (src/cuda) both run first, so both accept and reject exactly the same calls.
#include "ops/optim.hpp"

#include <cmath>
#include <vector>

#include "cudl/error.hpp"
#include "ops/common.hpp"

namespace cudl {
namespace ops {

using op_checks::fail_at;

namespace {
/// What every step's attributes tell the argument view: its group depth, advance_t, skip_on_flag.
template <typename StepAttrs>
void take_step(OptimArgs& g, const StepAttrs& a, int depth) {
  g.depth = depth;
  g.advance_t = a.advance_t;
  g.skip_on_flag = a.skip_on_flag;
  g.weight_copies = a.weight_copies;
}
}  // namespace

OptimArgs check_optim_call(const OpCall& c) {
  OptimArgs g;
  switch (c.op) {
    case OpKind::SgdStep: {
      const SgdAttrs a = SgdAttrs::from(c.attrs);
      take_step(g, a, a.momentum != 0 ? 3 : 2);
      if (a.nesterov && (a.momentum <= 0 || a.dampening != 0))
        fail_at(c, "Nesterov momentum requires momentum f[0] > 0 and dampening f[1] = 0");
      break;
    }
    case OpKind::AdamStep: {
      const AdamAttrs a = AdamAttrs::from(c.attrs);
      take_step(g, a, 4);
      if (!(a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1))
        fail_at(c, detail::concat("betas (", a.beta1, ", ", a.beta2, ") not in [0, 1)"));
      break;
    }
    case OpKind::RmspropStep:
      take_step(g, RmspropAttrs::from(c.attrs), 3);
      break;
    case OpKind::AdagradStep:
      take_step(g, AdagradAttrs::from(c.attrs), 3);
      break;
    case OpKind::AmpUnscale: {
      const AmpUnscaleAttrs a = AmpUnscaleAttrs::from(c.attrs);
      g.depth = 1;
      if (!(a.growth >= 1 && std::isfinite(a.growth)))
        fail_at(c, detail::concat("growth factor f[0]=", a.growth, " must be finite and >= 1"));
      if (!(a.backoff > 0 && a.backoff <= 1))
        fail_at(c, detail::concat("backoff factor f[1]=", a.backoff, " must be in (0, 1]"));
      if (a.interval < 1) fail_at(c, detail::concat("growth interval i[0]=", a.interval, " must be >= 1"));
      break;
    }
    case OpKind::WeightPenalty:
      g.depth = 2;
      break;
    case OpKind::ClipGradNorm:
      g.depth = 1;
      break;
    default:
      fail_at(c, "not an optimizer op");
  }
  const bool amp = c.op == OpKind::AmpUnscale;
  const bool stepper = c.op != OpKind::WeightPenalty && c.op != OpKind::ClipGradNorm && !amp;
  g.first = c.op == OpKind::ClipGradNorm ? 0 : amp ? 2 : 1;
  if (amp) {
    const TensorView& s = c.in(0);
    if (!s.defined() || s.dtype != DType::f32 || s.numel() != kAmpStateSize)
      fail_at(c, detail::concat("state (input 0) must be f32 with ", kAmpStateSize,
                                " elements [scale, clean steps, skipped steps, overflowed], got ",
                                s.defined() ? dtype_name(s.dtype) : "undefined", " shape ", s.shape));
    g.amp_state = s;
  }
  if (stepper || amp) {
    const int at = amp ? 1 : 0;
    const bool flag = amp || g.skip_on_flag;
    const TensorView& h = c.in(at);
    if (!h.defined() || h.dtype != DType::f32 || h.numel() < (flag ? 3 : 2))
      fail_at(c, detail::concat("hyper (input ", at, ") must be f32 with at least ",
                                flag ? "3 elements [lr, t, skip flag]" : "2 elements [lr, t]", ", got ",
                                h.defined() ? dtype_name(h.dtype) : "undefined", " shape ", h.shape,
                                g.skip_on_flag ? " (skip_on_flag i[3] is set)" : ""));
    g.hyper = h;
  }
  if (c.op == OpKind::ClipGradNorm) {
    const TensorView& out = c.out(0);
    if (!out.defined() || out.dtype != DType::f32 || out.numel() != 1)
      fail_at(c, detail::concat("total_norm must be f32 with 1 element, got shape ", out.shape));
    const double max_norm = ClipGradNormAttrs::from(c.attrs).max_norm;
    if (!(max_norm > 0)) fail_at(c, detail::concat("max_norm f[0]=", max_norm, " must be > 0"));
    g.total_norm = out;
  }
  g.stride = g.depth + (g.weight_copies ? 1 : 0);
  const int n = c.n_inputs - g.first;
  if (n < 0 || n % g.stride != 0)
    fail_at(c, detail::concat("expects groups of ", g.stride, " tensors after ", g.first, " leading input(s), got ",
                              c.n_inputs, " inputs", g.weight_copies ? " (weight_copies i[4] is set)" : ""));
  g.n = n / g.stride;
  g.tensors = c.inputs;
  for (int k = 0; k < g.n; ++k) {
    const TensorView& p = g.at(k, 0);
    for (int j = 0; j < g.depth; ++j) {
      const TensorView& t = g.at(k, j);
      const int at = g.first + k * g.stride + j;
      if (!t.defined()) fail_at(c, detail::concat("input ", at, " (group ", k, ") is undefined"));
      if (t.dtype != DType::f32)
        fail_at(c, detail::concat("input ", at, " must be f32, got ", t.dtype, " (shape ", t.shape, ")"));
      if (t.shape != p.shape)
        fail_at(c, detail::concat("group ", k, ": tensor ", j, " has shape ", t.shape, " but the parameter has shape ",
                                  p.shape));
    }
    if (!g.weight_copies) continue;
    const TensorView& w = g.copy(k);
    const int at = g.first + k * g.stride + g.depth;
    if (!w.defined()) continue;  // this parameter has no 16-bit copy
    if (w.dtype != DType::bf16 && w.dtype != DType::f16)
      fail_at(c, detail::concat("input ", at, " (group ", k, "'s 16-bit weight copy) must be bf16 or f16, got ",
                                w.dtype, " (shape ", w.shape, ")"));
    if (w.shape != p.shape)
      fail_at(c, detail::concat("group ", k, ": the 16-bit weight copy (input ", at, ") has shape ", w.shape,
                                " but the parameter has shape ", p.shape));
    if (w.device != p.device)
      fail_at(c, detail::concat("group ", k, ": the 16-bit weight copy (input ", at, ") is on ", w.device,
                                " but the parameter is on ", p.device));
  }
  return g;
}

}  // namespace ops
}  // namespace cudl
