// ops/attention.cpp — argument checks of the attention op family: the contract the CPU reference
// (src/cpu) and the CUDA backend (src/cuda) both run first, so both accept and reject the same calls.
#include "ops/attention.hpp"

#include <cmath>
#include <string>

#include "backend/philox.hpp"
#include "cudl/error.hpp"
#include "ops/common.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace ops {

namespace chk = op_checks;

namespace {

/// Throws unless v is of the call's storage type `st` and rank 3 (B, T, F) with F a multiple of
/// `heads`; returns F / heads.
int64_t head_size(const OpCall& call, const TensorView& v, const char* name, int64_t heads, DType st) {
  chk::dtype(call, v, name, st);
  if (v.shape.rank() != 3)
    CUDL_FAIL(chk::who(call), ": ", name, " must be (B, T, heads*head_size), got shape ", v.shape);
  if (v.shape[2] % heads != 0 || v.shape[2] == 0)
    CUDL_FAIL(chk::who(call), ": ", name, " ", v.shape, " has ", v.shape[2], " features, not a positive multiple of ",
              heads, " heads");
  return v.shape[2] / heads;
}

}  // namespace

AttentionArgs check_attention_call(const OpCall& call) {
  chk::arity(call);
  AttentionArgs p;
  p.backward = call.op == OpKind::AttentionBackward;
  const AttentionAttrs a = AttentionAttrs::from(call.attrs);
  if (a.heads < 1) CUDL_FAIL(chk::who(call), ": heads i[0] must be >= 1, got ", a.heads);
  if (!(a.scale > 0) || std::isinf(a.scale))
    CUDL_FAIL(chk::who(call), ": scale f[0] must be finite and > 0, got ", a.scale);
  if (!(a.dropout >= 0 && a.dropout <= 1)) CUDL_FAIL(chk::who(call), ": dropout f[1] must be in [0, 1], got ", a.dropout);
  if (static_cast<int>(a.engine) < 0 || a.engine >= AttentionEngine::Count)
    CUDL_FAIL(chk::who(call), ": engine i[2] must be 0 (auto), 1 (fused) or 2 (unfused), got ",
              static_cast<int>(a.engine));
  p.heads = a.heads, p.causal = a.causal, p.engine = a.engine, p.stream = static_cast<uint64_t>(a.stream);
  p.scale = static_cast<float>(a.scale), p.dropout = static_cast<float>(a.dropout);
  p.has_dropout = a.dropout > 0;
  p.threshold = philox::keep_threshold(a.dropout);
  p.keep_scale = a.dropout >= 1 ? 0.f : static_cast<float>(1.0 / (1.0 - a.dropout));

  p.q = chk::need_in(call, 0, "q");
  p.k = chk::need_in(call, 1, "k");
  p.v = chk::need_in(call, 2, "v");
  p.storage = check_storage(call);
  const DType st = p.storage;
  p.d = head_size(call, p.q, "q", p.heads, st);
  const int64_t dk = head_size(call, p.k, "k", p.heads, st);
  p.dv_dim = head_size(call, p.v, "v", p.heads, st);
  p.batch = p.q.shape[0], p.tq = p.q.shape[1], p.tk = p.k.shape[1];
  if (dk != p.d || p.k.shape[0] != p.batch)
    CUDL_FAIL(chk::who(call), ": k ", p.k.shape, " must be (", p.batch, ", Tk, ", p.heads * p.d, ") for q ", p.q.shape);
  if (p.v.shape[0] != p.batch || p.v.shape[1] != p.tk)
    CUDL_FAIL(chk::who(call), ": v ", p.v.shape, " must be (", p.batch, ", ", p.tk, ", heads*Dv) for k ", p.k.shape);
  const Shape o_shape{p.batch, p.tq, p.heads * p.dv_dim}, lse_shape{p.batch, p.heads, p.tq};
  const std::string for_qv = "for q " + p.q.shape.str() + " and v " + p.v.shape.str();

  const int mask_slot = p.backward ? 6 : 3, rng_slot = mask_slot + 1;
  p.has_mask = call.has_in(mask_slot);
  if (p.has_mask) {
    p.key_mask = call.inputs[mask_slot];
    chk::dtype(call, p.key_mask, "key_mask", DType::f32);
    chk::shape(call, p.key_mask, "key_mask", Shape{p.batch, p.tk}, "(B, Tk) for k " + p.k.shape.str());
  }
  if (call.has_in(rng_slot)) {
    p.rng = call.inputs[rng_slot];
    chk::dtype(call, p.rng, "rng", DType::i64);
    if (p.rng.numel() != 2)
      CUDL_FAIL(chk::who(call), ": rng state must have 2 elements {seed, offset}, got shape ", p.rng.shape);
  } else if (p.has_dropout) {
    CUDL_FAIL(chk::who(call), ": dropout ", a.dropout, " needs the rng state (input ", rng_slot, ")");
  }

  if (!p.backward) {
    p.o = chk::need_out(call, 0, "o");
    p.lse = chk::need_out(call, 1, "lse");
  } else {
    p.o = chk::need_in(call, 3, "o");
    p.lse = chk::need_in(call, 4, "lse");
    p.d_o = chk::need_in(call, 5, "do");
    chk::dtype(call, p.d_o, "do", st);
    chk::shape(call, p.d_o, "do", o_shape, for_qv);
  }
  chk::dtype(call, p.o, "o", st);
  chk::shape(call, p.o, "o", o_shape, for_qv);
  chk::dtype(call, p.lse, "lse", DType::f32);
  chk::shape(call, p.lse, "lse", lse_shape, "(B, heads, Tq) " + for_qv);
  if (p.backward) {
    p.dq = chk::opt_out(call, 0), p.dk = chk::opt_out(call, 1), p.dv = chk::opt_out(call, 2);
    p.has_dq = p.dq.defined(), p.has_dk = p.dk.defined(), p.has_dv = p.dv.defined();
    if (!p.has_dq && !p.has_dk && !p.has_dv)
      CUDL_FAIL(chk::who(call), ": no output requested (dq, dk and dv are all undefined)");
    const TensorView* outs[3] = {&p.dq, &p.dk, &p.dv};
    const TensorView* ins[3] = {&p.q, &p.k, &p.v};
    const char* names[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; ++i) {
      if (!outs[i]->defined()) continue;
      chk::dtype(call, *outs[i], names[i], st);
      chk::shape(call, *outs[i], names[i], ins[i]->shape, std::string("same as ") + (names[i] + 1));
    }
  }
  return p;
}

}  // namespace ops
}  // namespace cudl
