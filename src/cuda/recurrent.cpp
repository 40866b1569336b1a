// cuda/recurrent.cpp — CUDA backend of the recurrent family: per step one cuBLASLt GEMM (the
// recurrent product h_{t-1}·uᵀ, or drec_t·u backward) and one fused cell kernel, all queued on the
// context's stream so that a captured training step holds the whole unrolled sequence; du is one
// GEMM over every step after the loop, dbias_r one column-sum kernel. No atomics: deterministic.
#include "ops/recurrent.hpp"

#include <vector>

#include "backend/backend.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cuda/matmul.hpp"
#include "kernels/matmul.cuh"
#include "kernels/recurrent.cuh"

namespace cudl {

namespace {

size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

/// Row-major C (m, n) = op(A) · op(B), rows of A lda and of B ldb elements apart, C contiguous:
/// one GEMM through the matmul family's cuBLASLt plan cache (cuda_strided_gemm, batch 1).
void gemm(const OpCall& call, CudaContext& ctx, bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a,
          int64_t lda, const float* b, int64_t ldb, float* c, void* lt) {
  StridedGemm g;
  g.m = m, g.n = n, g.k = k, g.ta = ta, g.tb = tb;
  g.a = a, g.lda = lda, g.b = b, g.ldb = ldb, g.c = c, g.ldc = n;
  cuda_strided_gemm(call, ctx, g, lt);
}

/// One workspace() call carved into float buffers of the given element counts, then the GEMM scratch.
struct Carve {
  std::vector<float*> bufs;
  void* lt = nullptr;
};

Carve carve(CudaContext& ctx, std::initializer_list<int64_t> counts) {
  size_t total = cuda_gemm_workspace_bytes();
  for (int64_t n : counts) total += round_up(static_cast<size_t>(n) * sizeof(float));
  char* base = static_cast<char*>(ctx.workspace(total));
  Carve c;
  for (int64_t n : counts) {
    c.bufs.push_back(reinterpret_cast<float*>(base));
    base += round_up(static_cast<size_t>(n) * sizeof(float));
  }
  c.lt = base;
  return c;
}

void recurrent_sequence_cuda(const OpCall& call) {
  const ops::RecurrentArgs p = ops::check_recurrent_call(call);
  CudaContext& ctx = cuda_context(call);
  const int64_t T = p.steps, B = p.batch, H = p.hidden, GH = p.gate_cols();
  if (B == 0) return;
  const int cell = static_cast<int>(p.cell);
  const float* xp = p.xp.as<float>();
  const float* u = p.u.as<float>();
  float* h = p.h.as<float>();
  float* gates = p.gates.as<float>();
  float* aux = p.aux.as<float>();
  const Carve ws = carve(ctx, {B * GH});
  float* rec = ws.bufs[0];
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = t * B, prev = row - B;
    if (t > 0) gemm(call, ctx, false, true, B, GH, H, h + prev * H, H, u, H, rec, ws.lt);  // rec = h_{t-1}·uᵀ
    kernels::recurrent_cell_forward_cuda(cell, xp + row * GH, t > 0 ? rec : nullptr, p.bias.as<float>(),
                                         t > 0 ? h + prev * H : nullptr, t > 0 && aux ? aux + prev * H : nullptr,
                                         gates ? gates + row * GH : nullptr, h + row * H, aux ? aux + row * H : nullptr,
                                         B, H, ctx.stream());
  }
}

void recurrent_sequence_backward_cuda(const OpCall& call) {
  const ops::RecurrentArgs p = ops::check_recurrent_call(call);
  CudaContext& ctx = cuda_context(call);
  const int64_t T = p.steps, B = p.batch, H = p.hidden, GH = p.gate_cols();
  const int cell = static_cast<int>(p.cell);
  const bool gru = p.cell == RecurrentCell::Gru;
  const float* u = p.u.as<float>();
  const float* h = p.h.as<float>();
  const float* gates = p.gates.as<float>();
  const float* aux = p.aux.as<float>();
  const float* daux = p.daux.as<float>();
  float* dxp = p.dxp.as<float>();
  // [dh_gemm | dh_direct | dc | drec (gru only)] then the GEMM scratch.
  const Carve ws = carve(ctx, {B * H, B * H, B * H, gru ? T * B * GH : 0});
  float* dh_gemm = ws.bufs[0];
  float* drec = gru ? ws.bufs[3] : dxp;
  if (B > 0) {
    CUDL_CUDA_CHECK(cudaMemsetAsync(ws.bufs[1], 0, static_cast<size_t>(B * H) * sizeof(float), ctx.stream()));
    CUDL_CUDA_CHECK(cudaMemsetAsync(ws.bufs[2], 0, static_cast<size_t>(B * H) * sizeof(float), ctx.stream()));
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t row = t * B, prev = row - B;
      kernels::recurrent_cell_backward_cuda(
          cell, gates ? gates + row * GH : nullptr, h + row * H, t > 0 ? h + prev * H : nullptr,
          aux ? aux + row * H : nullptr, t > 0 && aux ? aux + prev * H : nullptr, p.dh.as<float>() + row * H,
          daux ? daux + row * H : nullptr, t < T - 1 ? dh_gemm : nullptr, ws.bufs[1], ws.bufs[2], dxp + row * GH,
          drec + row * GH, B, H, ctx.stream());
      if (t > 0) gemm(call, ctx, false, false, B, H, GH, drec + row * GH, GH, u, H, dh_gemm, ws.lt);  // drec_t·u
    }
  }
  if (p.du.defined() && (T - 1) * B == 0)  // no step before the first: du = 0
    CUDL_CUDA_CHECK(cudaMemsetAsync(p.du.data, 0, static_cast<size_t>(GH * H) * sizeof(float), ctx.stream()));
  else if (p.du.defined())  // du (GH, H) = Σ_{t≥1} drec_tᵀ·h_{t-1}: one GEMM over (T-1)*B rows
    gemm(call, ctx, true, false, GH, H, (T - 1) * B, drec + B * GH, GH, h, H, p.du.as<float>(), ws.lt);
  if (p.dbias.defined()) kernels::bias_grad_cuda(drec, p.dbias.as<float>(), T * B, GH, ctx.stream());
}

}  // namespace

void register_cuda_recurrent_ops(OpTable& t) {
  t.add(OpKind::RecurrentSequence, recurrent_sequence_cuda);
  t.add(OpKind::RecurrentSequenceBackward, recurrent_sequence_backward_cuda);
}

}  // namespace cudl
