// kernels/attention.cuh — host launchers of the attention kernels (ops/attention.hpp): the fused
// forward/backward (tiled, online softmax) and the masked-softmax kernels of the unfused path.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/storage.cuh"

namespace cudl::kernels {

/// One attention problem: q (B, Tq, H*D), k (B, Tk, H*D), v (B, Tk, H*Dv), heads interleaved in the
/// features; key_mask (B, Tk) or null; rng {seed, offset} on the device (read when dropout). q, k, v
/// and the fused kernels' o, do, dq, dk, dv are of `type` (f32, bf16 or f16; fp32 math, each store
/// rounded once); lse, delta, the key mask and the unfused path's matrices are f32.
struct AttentionProblem {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  Storage type = Storage::kF32;
  const float* key_mask = nullptr;
  const int64_t* rng = nullptr;
  int batch = 0, tq = 0, tk = 0, heads = 1, d = 0, dv = 0;
  float scale = 1, keep_scale = 1;
  uint32_t threshold = 0;
  uint64_t stream = 0;
  bool causal = false, dropout = false;
};

/// Fused forward: o (B, Tq, H*Dv) and lse (B, H, Tq), one block per (query tile, head, batch).
void attention_forward_cuda(const AttentionProblem& p, void* o, float* lse, cudaStream_t stream);
/// Fused backward with recomputation: delta (B, H, Tq) is scratch (Δ_i = do_i·o_i); dq, dk, dv may be
/// null. Two kernels: dq per query tile, then dk and dv per key tile (no atomics).
void attention_backward_cuda(const AttentionProblem& p, const void* o, const float* lse, const void* d_o,
                             float* delta, void* dq, void* dk, void* dv, cudaStream_t stream);

/// Unfused forward, between the two GEMMs: s (B, H, Tq, Tk) holds q_i·k_j (unscaled) and receives the
/// dropped-out weights p_ij keep_ij / (1-p); lse (B, H, Tq).
void attention_softmax_cuda(const AttentionProblem& p, float* s, float* lse, cudaStream_t stream);
/// Unfused backward, between the GEMMs: s holds q_i·k_j and receives p_ij keep_ij / (1-p) (for dv);
/// dp holds do_i·v_j and receives scale * ds_ij (for dq and dk), with Δ_i = do_i·o_i from o and do
/// (B, Tq, H*Dv) f32.
void attention_softmax_backward_cuda(const AttentionProblem& p, float* s, float* dp, const float* lse, const float* o,
                                     const float* d_o, cudaStream_t stream);

}  // namespace cudl::kernels
