// ops/recurrent.cpp — argument checks of the recurrent op family: the contract the CPU reference
// (src/cpu) and the CUDA backend (src/cuda) both run first.
#include "ops/recurrent.hpp"

#include <string>

#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

namespace chk = op_checks;

namespace {

void typed_shape(const OpCall& call, const TensorView& v, const char* name, DType dtype, const Shape& expected,
                 const char* why) {
  chk::dtype(call, v, name, dtype);
  chk::shape(call, v, name, expected, why);
}

void f32_shape(const OpCall& call, const TensorView& v, const char* name, const Shape& expected, const char* why) {
  typed_shape(call, v, name, DType::f32, expected, why);
}

}  // namespace

RecurrentArgs check_recurrent_call(const OpCall& call) {
  chk::arity(call);
  RecurrentArgs p;
  const int64_t cell = call.attrs.i[0];
  if (cell < 0 || cell > 2)
    chk::fail_at(call, "cell i[0] must be 0 (simple), 1 (lstm) or 2 (gru), got " + std::to_string(cell));
  p.cell = static_cast<RecurrentCell>(cell);
  p.gates_per_unit = recurrent_gates(p.cell);
  const bool simple = p.cell == RecurrentCell::Simple;
  const bool forward = call.op == OpKind::RecurrentSequence;
  const std::string cell_s = recurrent_cell_name(p.cell);
  // xp, h, gates, dh and dxp: the storage type (ops/precision.hpp); u, bias_r, aux and the weight
  // gradients f32.
  const DType st = check_storage(call);
  p.storage = st;

  const TensorView& u = chk::need_in(call, forward ? 1 : 0, "u");
  chk::dtype(call, u, "u", DType::f32);
  if (u.shape.rank() != 2 || u.shape[0] != p.gates_per_unit * u.shape[1] || u.shape[1] < 1)
    chk::fail_at(call, "u must be (G*H, H) with G = " + std::to_string(p.gates_per_unit) + " for a " + cell_s +
                           " cell and H >= 1, got " + u.shape.str());
  p.u = u;
  p.hidden = u.shape[1];
  const int64_t gh = p.gate_cols();

  if (forward) {
    const TensorView& xp = chk::need_in(call, 0, "xp");
    chk::dtype(call, xp, "xp", st);
    if (xp.shape.rank() != 3 || xp.shape[2] != gh)
      chk::fail_at(call, "xp must be (T, B, " + std::to_string(gh) + ") for u " + u.shape.str() + ", got " +
                             xp.shape.str());
    p.xp = xp;
  } else {
    const TensorView& dh = chk::need_in(call, 4, "dh");
    chk::dtype(call, dh, "dh", st);
    if (dh.shape.rank() != 3 || dh.shape[2] != p.hidden)
      chk::fail_at(call, "dh must be (T, B, " + std::to_string(p.hidden) + ") for u " + u.shape.str() + ", got " +
                             dh.shape.str());
    p.dh = dh;
  }
  const Shape& ts = forward ? p.xp.shape : p.dh.shape;
  p.steps = ts[0];
  p.batch = ts[1];
  if (p.steps < 1) chk::fail_at(call, "a sequence needs at least one step, got shape " + ts.str());
  const Shape hs{p.steps, p.batch, p.hidden}, gs{p.steps, p.batch, gh};

  const int bias_slot = forward ? 2 : -1;
  if (forward && call.has_in(bias_slot)) {
    if (p.cell != RecurrentCell::Gru) chk::fail_at(call, "bias_r is only taken by a gru cell, not " + cell_s);
    f32_shape(call, call.in(2), "bias_r", Shape{gh}, "G*H of u");
    p.bias = call.in(2);
  }
  // h, gates, aux: forward outputs 0..2, backward inputs 1..3.
  auto slot = [&](int k) -> TensorView {
    return forward ? chk::opt_out(call, k) : chk::opt_in(call, k + 1);
  };
  const TensorView h = slot(0), gates = slot(1), aux = slot(2);
  if (!h.defined()) chk::fail_at(call, "h is required");
  typed_shape(call, h, "h", st, hs, "(T, B, H)");
  p.h = h;
  if (simple) {
    if (gates.defined() || aux.defined()) chk::fail_at(call, "a simple cell takes no gates or aux tensors");
  } else {
    if (!gates.defined() || !aux.defined())
      chk::fail_at(call, "gates and aux are required for a " + cell_s + " cell");
    typed_shape(call, gates, "gates", st, gs, "(T, B, G*H)");
    f32_shape(call, aux, "aux", hs, "(T, B, H)");
    p.gates = gates;
    p.aux = aux;
  }
  if (forward) return p;

  if (call.has_in(5)) {
    if (p.cell != RecurrentCell::Lstm) chk::fail_at(call, "daux (dc) is only taken by an lstm cell, not " + cell_s);
    f32_shape(call, call.in(5), "daux", hs, "(T, B, H)");
    p.daux = call.in(5);
  }
  const TensorView& dxp = chk::need_out(call, 0, "dxp");
  typed_shape(call, dxp, "dxp", st, gs, "(T, B, G*H)");
  p.dxp = dxp;
  p.du = chk::opt_out(call, 1);
  if (p.du.defined()) f32_shape(call, p.du, "du", u.shape, "same as u");
  p.dbias = chk::opt_out(call, 2);
  if (p.dbias.defined()) {
    if (p.cell != RecurrentCell::Gru) chk::fail_at(call, "dbias_r is only given by a gru cell, not " + cell_s);
    f32_shape(call, p.dbias, "dbias_r", Shape{gh}, "G*H of u");
  }
  return p;
}

}  // namespace ops
}  // namespace cudl
