// kernels/recurrent.cu — the fused cell step of the recurrent family: one thread per (row, unit)
// evaluates every gate of its unit (ops/recurrent.hpp's cell math), forward and backward.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <cstdint>
#include <cuda_runtime.h>
#include <vector>

#include "backend/backend.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cuda/matmul.hpp"
#include "kernels/matmul.cuh"
#include "ops/recurrent.hpp"

namespace cudl::kernels {

namespace rm = cudl::recurrent_math;

/// Element i of a step's (batch, hidden) state: its row, its unit and its state at t-1 (h and, for
/// an lstm, c; zero at t = 0, where h_prev and aux_prev are null).
struct Unit {
  int64_t row, j;
  float h_prev, c_prev;
};
__device__ __forceinline__ Unit unit_at(int cell, int64_t i, int64_t hidden, const float* h_prev,
                                        const float* aux_prev) {
  const int64_t r = i / hidden;
  return Unit{r, i - r * hidden, h_prev ? h_prev[i] : 0.f,
              aux_prev && cell == static_cast<int>(RecurrentCell::Lstm) ? aux_prev[i] : 0.f};
}

static __global__ void recurrent_cell_forward_kernel(int cell, const float* __restrict__ xp_t,
                                                     const float* __restrict__ rec, const float* __restrict__ bias,
                                                     const float* __restrict__ h_prev,
                                                     const float* __restrict__ aux_prev, float* __restrict__ gates_t,
                                                     float* __restrict__ h_t, float* __restrict__ aux_t, int64_t batch,
                                                     int64_t hidden, int64_t gh) {
  const int64_t n = batch * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Unit u = unit_at(cell, i, hidden, h_prev, aux_prev);
    const int64_t off = u.row * gh;
    float a = 0.f;
    h_t[i] = rm::cell_forward(cell, xp_t + off, rec ? rec + off : nullptr, bias, hidden, u.j, u.h_prev, u.c_prev,
                              gates_t ? gates_t + off : nullptr, &a);
    if (aux_t) aux_t[i] = a;
  }
}

static __global__ void recurrent_cell_backward_kernel(int cell, const float* __restrict__ gates_t,
                                                      const float* __restrict__ h_t, const float* __restrict__ h_prev,
                                                      const float* __restrict__ aux_t,
                                                      const float* __restrict__ aux_prev,
                                                      const float* __restrict__ dh_t, const float* __restrict__ daux_t,
                                                      const float* __restrict__ dh_gemm, float* __restrict__ dh_direct,
                                                      float* __restrict__ dc, float* dxp_t, float* drec_t,
                                                      int64_t batch, int64_t hidden, int64_t gh) {
  const int64_t n = batch * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Unit u = unit_at(cell, i, hidden, h_prev, aux_prev);
    const float dh = dh_t[i] + (dh_gemm ? dh_gemm[i] : 0.f) + dh_direct[i];
    const float dct = dc[i] + (daux_t ? daux_t[i] : 0.f);
    float dc_prev = 0.f;
    const int64_t off = u.row * gh;
    dh_direct[i] = rm::cell_backward(cell, gates_t ? gates_t + off : nullptr, h_t[i], u.h_prev,
                                     aux_t ? aux_t[i] : 0.f, u.c_prev, hidden, u.j, dh, dct, dxp_t + off, drec_t + off,
                                     &dc_prev);
    dc[i] = dc_prev;
  }
}

/// One step over (batch, hidden) units, rows contiguous: xp_t, rec, gates_t (batch, G*H); h_*, aux_*
/// (batch, H). rec = h_{t-1}·uᵀ is null at t = 0 (zero state), and h_prev / aux_prev with it;
/// bias (G*H) nullable; gates_t / aux_t null for a simple cell. cell as ops/recurrent.hpp.
void recurrent_cell_forward_cuda(int cell, const float* xp_t, const float* rec, const float* bias,
                                 const float* h_prev, const float* aux_prev, float* gates_t, float* h_t, float* aux_t,
                                 int64_t batch, int64_t hidden, cudaStream_t stream) {
  const int64_t n = batch * hidden;
  if (n == 0) return;
  const int block = 256;
  launch<recurrent_cell_forward_kernel>(grid_for(n, block), block, 0, stream, cell, xp_t, rec, bias, h_prev, aux_prev,
                                        gates_t, h_t, aux_t, batch, hidden,
                                        recurrent_gates(static_cast<RecurrentCell>(cell)) * hidden);
}

/// The same step backward. dh_t, daux_t (nullable): the gradients arriving from outside; dh_gemm
/// (= drec_{t+1}·u, nullable at the last step), dh_direct and dc: what step t+1 carried back, updated
/// in place to what step t carries to t-1. Writes dxp_t and drec_t (may alias dxp_t).
void recurrent_cell_backward_cuda(int cell, const float* gates_t, const float* h_t, const float* h_prev,
                                  const float* aux_t, const float* aux_prev, const float* dh_t, const float* daux_t,
                                  const float* dh_gemm, float* dh_direct, float* dc, float* dxp_t, float* drec_t,
                                  int64_t batch, int64_t hidden, cudaStream_t stream) {
  const int64_t n = batch * hidden;
  if (n == 0) return;
  const int block = 256;
  launch<recurrent_cell_backward_kernel>(grid_for(n, block), block, 0, stream, cell, gates_t, h_t, h_prev, aux_t,
                                         aux_prev, dh_t, daux_t, dh_gemm, dh_direct, dc, dxp_t, drec_t, batch, hidden,
                                         recurrent_gates(static_cast<RecurrentCell>(cell)) * hidden);
}

}  // namespace cudl::kernels

// --- CUDA backend entries: each checks its call (ops/recurrent.hpp) and launches the kernels above on
// --- the context's stream; register_cuda_recurrent_ops puts them into the CUDA op table.

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
