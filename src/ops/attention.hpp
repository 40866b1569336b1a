// ops/attention.hpp — the attention op family's contract (scaled dot-product attention over heads,
// forward and backward): typed attributes, named arguments and the checks both backends run first.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// --- attention (kernels/attention.cu, src/cpu/attention.cpp) ---
// Attention          in: q (B, Tq, H*D), k (B, Tk, H*D), v (B, Tk, H*Dv), [key_mask (B, Tk) f32],
//                        [rng i64[2] {seed, offset}, required when dropout p > 0]
//                    out: o (B, Tq, H*Dv), lse (B, H, Tq)
// AttentionBackward  in: q, k, v, o, lse, do (B, Tq, H*Dv), [key_mask], [rng]
//                    out: dq, dk, dv (any may be undefined, not all)
// attrs: f[0] = scale (> 0; 1/sqrt(D) is the usual), f[1] = dropout p in [0, 1];
//        i[0] = heads H, i[1] = causal, i[2] = engine (AttentionEngine), i[3] = dropout stream id.
// Heads are interleaved in the feature dimension (the layout of a Dense projection's output, no
// permute): head h of token t is features [h*D, (h+1)*D). Per batch b and head h:
//   s_ij = scale * q_i·k_j over the keys j allowed for query i: j <= i when causal (top-left aligned,
//   Keras's use_causal_mask), and key_mask[b][j] != 0 when a key mask is given;
//   lse_i = log Σ_j exp(s_ij), p_ij = exp(s_ij - lse_i);  o_i = Σ_j p_ij * keep_ij / (1-p) * v_j.
// A query with no allowed key has lse_i = -inf and o_i = 0 (gradients 0), not NaN.
// Dropout keeps element (b, h, i, j) of the virtual (B, H, Tq, Tk) weight tensor by the Dropout
// op's rule (ops/random.hpp): flat index n = ((b*H + h)*Tq + i)*Tk + j, Philox block n/4 + offset,
// word n%4, stream i[3]; forward and backward draw the same mask (rng is read, never advanced).
// q, k, v, o, do, dq, dk, dv: f32, or all bf16 / f16 under 16-bit storage (ops/precision.hpp; fp32
// math, each stored value rounded once); key_mask and lse are f32 in every mode.
// Backward: Δ_i = do_i·o_i (of the o given: under 16-bit storage, the rounded o); dp_ij = keep_ij / (1-p) * do_i·v_j;
// ds_ij = p_ij (dp_ij - Δ_i);
//   dq_i = scale Σ_j ds_ij k_j; dk_j = scale Σ_i ds_ij q_i; dv_j = Σ_i p_ij keep_ij / (1-p) do_i.
// Engines (CUDA; the CPU reference ignores the choice): Fused is one tiled kernel per direction with
// an online softmax that never writes the Tq x Tk weights to memory (forward saves lse, backward
// recomputes the weights from it); Unfused is strided-batched cuBLASLt GEMMs around a masked-softmax
// kernel, with the weights in the context's workspace; Cudnn runs the forward as cuDNN's fused
// attention (one SDPA graph operation on the tensor cores, cuda/sdpa.hpp) and the backward on the
// fused kernel, and takes 16-bit calls without masks or dropout whose D = Dv is a multiple of 8 up to
// 128. Auto: Cudnn for the calls it takes (when cuDNN has a plan), else Fused when D and Dv are at
// most kAttentionMaxFusedHeadDim, else Unfused (each fallback logged once per reason and shape).

namespace cudl {

enum class AttentionEngine : int { Auto, Fused, Unfused, Cudnn, Count };

/// Head sizes (D and Dv) up to this run on the fused kernel.
constexpr int64_t kAttentionMaxFusedHeadDim = 128;

namespace ops {

/// Attention / AttentionBackward: f[0] = scale, f[1] = dropout p; i[0] = heads, i[1] = causal,
/// i[2] = engine, i[3] = dropout stream id.
struct AttentionAttrs {
  double scale = 1, dropout = 0;
  int64_t heads = 1;
  bool causal = false;
  AttentionEngine engine = AttentionEngine::Auto;
  int64_t stream = 0;

  OpAttrs to_op_attrs() const {
    OpAttrs a;
    a.f[0] = scale, a.f[1] = dropout;
    a.i[0] = heads, a.i[1] = causal ? 1 : 0, a.i[2] = static_cast<int64_t>(engine), a.i[3] = stream;
    return a;
  }
  static AttentionAttrs from(const OpAttrs& a) {
    return {a.f[0], a.f[1], a.i[0], a.i[1] != 0, static_cast<AttentionEngine>(a.i[2]), a.i[3]};
  }
};

/// A validated Attention or AttentionBackward call.
struct AttentionArgs {
  TensorView q, k, v;        // (B, Tq, H*D), (B, Tk, H*D), (B, Tk, H*Dv)
  TensorView key_mask, rng;  // (B, Tk) f32; i64[2]; undefined when not given
  TensorView o, lse;         // forward outputs; backward inputs 3, 4
  TensorView d_o;            // backward: in 5
  TensorView dq, dk, dv;     // backward outputs, any may be undefined
  int64_t batch = 0, tq = 0, tk = 0, heads = 1, d = 0, dv_dim = 0;
  float scale = 1, dropout = 0;
  float keep_scale = 1;    // 1 / (1 - p), 0 when p == 1
  uint32_t threshold = 0;  // philox::keep_threshold(p)
  uint64_t stream = 0;
  bool causal = false;
  AttentionEngine engine = AttentionEngine::Auto;
  bool has_mask = false, has_dropout = false;
  bool has_dq = false, has_dk = false, has_dv = false;
  bool backward = false;
  DType storage = DType::f32;  // of q, k, v, o, do, dq, dk, dv (ops/precision.hpp)
};
AttentionArgs check_attention_call(const OpCall& call);

}  // namespace ops
}  // namespace cudl
