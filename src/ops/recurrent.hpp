// ops/recurrent.hpp — the recurrent op family's contract (SimpleRNN, LSTM, GRU over a whole sequence):
// typed attributes, named arguments, the checks, and the per-unit cell math shared by CPU and CUDA.
#pragma once

#include <math.h>

#include <cstdint>

#include "backend/hd.hpp"
#include "backend/op.hpp"

// --- recurrent (src/cpu/recurrent.cpp, kernels/recurrent.cu) ---
// Sequences are time-major: T steps of B rows. G gates per unit: 1 (simple), 4 (lstm), 3 (gru).
// The input projection xp = x·Wᵀ + b of every step is NOT part of these ops: it is one Linear
// (one GEMM over T*B rows) in front of them. The initial state is zero. xp, h, dh and dxp are in the
// storage type (f32, bf16 or f16: ops/precision.hpp), and so are the saved gates; everything else
// (aux, u, the weight gradients) and the recurrence are f32.
// RecurrentSequence  in: xp (T, B, G*H), u (G*H, H), [bias_r (G*H), gru only]
//                    out: h (T, B, H), [gates (T, B, G*H)], [aux (T, B, H)]; i[0] = cell
//   per step, rec = h_{t-1}·uᵀ (+ bias_r), a = xp_t + rec (Keras gate order):
//   simple: h = tanh(a)                                   (gates and aux not given)
//   lstm:   i, f, g, o = σ(a_i), σ(a_f), tanh(a_c), σ(a_o); c = f c_{t-1} + i g; h = o tanh(c)
//           gates = (i, f, g, o), aux = c                (both required)
//   gru (reset_after, Keras's default): z = σ(xp_z + rec_z), r = σ(xp_r + rec_r),
//           n = tanh(xp_h + r ⊙ rec_h), h = z h_{t-1} + (1 - z) n
//           gates = (z, r, n), aux = rec_h               (both required)
// RecurrentSequenceBackward  in: u, h, [gates], [aux], dh (T, B, H), [daux (T, B, H), lstm only: dc]
//                    out: dxp (T, B, G*H), [du (G*H, H)], [dbias_r (G*H)]; i[0] = cell
//   backpropagation through time: per step (last first) the fused cell backward, then
//   dh_{t-1} += drec_t·u; du = Σ_{t≥1} drec_tᵀ·h_{t-1} as one GEMM over (T-1)*B rows after the
//   loop; dbias_r = Σ drec over all rows. drec = dxp except for gru (drec_h = dxp_h ⊙ r).

namespace cudl {

enum class RecurrentCell : int { Simple = 0, Lstm = 1, Gru = 2 };

constexpr int recurrent_gates(RecurrentCell c) { return c == RecurrentCell::Lstm ? 4 : c == RecurrentCell::Gru ? 3 : 1; }
inline const char* recurrent_cell_name(RecurrentCell c) {
  return c == RecurrentCell::Lstm ? "lstm" : c == RecurrentCell::Gru ? "gru" : "simple";
}

namespace ops {

/// RecurrentSequence / RecurrentSequenceBackward: i[0] = cell.
struct RecurrentAttrs {
  RecurrentCell cell = RecurrentCell::Lstm;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.i[0] = static_cast<int64_t>(cell);
    return a;
  }
  static RecurrentAttrs from(const OpAttrs& a) { return {static_cast<RecurrentCell>(a.i[0])}; }
};

/// The named views of a RecurrentSequence or RecurrentSequenceBackward call.
struct RecurrentArgs {
  TensorView xp, u, bias;   // forward: (T, B, G*H), (G*H, H), [(G*H)]
  TensorView h, gates, aux; // forward outputs, backward inputs
  TensorView dh, daux;      // backward inputs: (T, B, H), [(T, B, H)]
  TensorView dxp, du, dbias;// backward outputs: du and dbias may be undefined
  RecurrentCell cell = RecurrentCell::Lstm;
  DType storage = DType::f32;  // of xp, h, gates, dh, dxp (ops::check_storage)
  int64_t steps = 0, batch = 0, hidden = 0, gates_per_unit = 1;
  int64_t gate_cols() const { return gates_per_unit * hidden; }  // G*H
};

/// Validate a RecurrentSequence / RecurrentSequenceBackward call; throws cudl::Error naming the op,
/// the call's label, the tensor, its shape and the shape expected.
RecurrentArgs check_recurrent_call(const OpCall& call);

}  // namespace ops

/// One unit of one step of each cell, shared by the CPU reference and the kernels so that both
/// compute the same expressions. `row` arguments point at the row's G*H gate values; `j` is the unit.
namespace recurrent_math {

CUDL_HD float sigmoid(float v) { return 1.f / (1.f + expf(-v)); }

/// tanh through one expf (3-4x cheaper than tanhf on the CPU): (1 - e)/(1 + e) with e = exp(-2|v|),
/// and its Taylor series below |v| = 0.125 where that form cancels; within 3e-7 relative of tanh.
CUDL_HD float tanh_cell(float v) {
  const float a = fabsf(v);
  if (a < 0.125f) {
    const float v2 = v * v;
    return v * (1.f + v2 * (-1.f / 3.f + v2 * (2.f / 15.f + v2 * (-17.f / 315.f))));
  }
  const float e = expf(-2.f * a);
  return copysignf((1.f - e) / (1.f + e), v);
}

/// Forward of unit j: a_k = xp[k*H + j] + rec[k*H + j] (rec null: zero state, bias only).
/// Stores gates[k*H + j] through `put_gate(k*H + j, value)` (not called for simple) and writes aux
/// (c for lstm, rec_h for gru); returns h, computed from the unrounded gate values. `xp` is anything
/// whose [i] is a float: a const float*, or a kernel's widening reader of 16-bit xp; `put_gate` a
/// kernel's (rounding) store.
template <class XP, class PutGate>
CUDL_HD float cell_forward(int cell, const XP& xp, const float* rec, const float* bias, int64_t H, int64_t j,
                           float h_prev, float c_prev, const PutGate& put_gate, float* aux) {
  auto r_at = [&](int k) { return (rec ? rec[k * H + j] : 0.f) + (bias ? bias[k * H + j] : 0.f); };
  if (cell == static_cast<int>(RecurrentCell::Simple)) return tanh_cell(xp[j] + r_at(0));
  if (cell == static_cast<int>(RecurrentCell::Lstm)) {
    const float i = sigmoid(xp[j] + r_at(0)), f = sigmoid(xp[H + j] + r_at(1));
    const float g = tanh_cell(xp[2 * H + j] + r_at(2)), o = sigmoid(xp[3 * H + j] + r_at(3));
    const float c = f * c_prev + i * g;
    put_gate(j, i), put_gate(H + j, f), put_gate(2 * H + j, g), put_gate(3 * H + j, o);
    *aux = c;
    return o * tanh_cell(c);
  }
  const float q = r_at(2);
  const float z = sigmoid(xp[j] + r_at(0)), r = sigmoid(xp[H + j] + r_at(1));
  const float n = tanh_cell(xp[2 * H + j] + r * q);
  put_gate(j, z), put_gate(H + j, r), put_gate(2 * H + j, n);
  *aux = q;
  return z * h_prev + (1.f - z) * n;
}

/// Backward of unit j. dh: total gradient reaching h_t; dc: total gradient reaching c_t (lstm).
/// `gates` is anything whose [i] is a float (the saved gates as stored: rounded in 16 bits).
/// Stores dxp[k*H + j] through `put_dxp(k*H + j, value)` (a kernel's rounding store to 16-bit dxp)
/// and writes drec[k*H + j] (the gradient of rec, f32; drec may equal dxp except for gru),
/// *dc_prev (lstm: gradient reaching c_{t-1}) and returns the direct part of dh_{t-1} (gru: dh z).
template <class Gates, class PutDxp>
CUDL_HD float cell_backward(int cell, const Gates& gates, float h, float h_prev, float aux, float c_prev, int64_t H,
                            int64_t j, float dh, float dc, const PutDxp& put_dxp, float* drec, float* dc_prev) {
  if (cell == static_cast<int>(RecurrentCell::Simple)) {
    const float da = dh * (1.f - h * h);
    put_dxp(j, da);
    drec[j] = da;
    return 0.f;
  }
  if (cell == static_cast<int>(RecurrentCell::Lstm)) {
    const float i = gates[j], f = gates[H + j], g = gates[2 * H + j], o = gates[3 * H + j];
    const float tc = tanh_cell(aux);
    const float dct = dc + dh * o * (1.f - tc * tc);
    const float da_i = dct * g * i * (1.f - i), da_f = dct * c_prev * f * (1.f - f);
    const float da_g = dct * i * (1.f - g * g), da_o = dh * tc * o * (1.f - o);
    put_dxp(j, da_i), put_dxp(H + j, da_f), put_dxp(2 * H + j, da_g), put_dxp(3 * H + j, da_o);
    drec[j] = da_i, drec[H + j] = da_f, drec[2 * H + j] = da_g, drec[3 * H + j] = da_o;
    *dc_prev = dct * f;
    return 0.f;
  }
  const float z = gates[j], r = gates[H + j], n = gates[2 * H + j];
  const float da_n = dh * (1.f - z) * (1.f - n * n);
  const float da_z = dh * (h_prev - n) * z * (1.f - z);
  const float da_r = da_n * aux * r * (1.f - r);
  put_dxp(j, da_z), put_dxp(H + j, da_r), put_dxp(2 * H + j, da_n);
  drec[j] = da_z, drec[H + j] = da_r, drec[2 * H + j] = da_n * r;
  return dh * z;
}

}  // namespace recurrent_math
}  // namespace cudl
