// kernels/recurrent.cu — the fused cell step of the recurrent family: one thread per (row, unit)
// evaluates every gate of its unit (ops/recurrent.hpp's cell math), forward and backward.
// The family's CUDA op-table entries follow the kernels (the backend registers them from here).
#include "kernels/common.cuh"

#include <cstdint>
#include <type_traits>
#include <cuda_runtime.h>
#include <vector>

#include "backend/backend.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cuda/matmul.hpp"
#include "cuda/storage_type.hpp"
#include "kernels/data.cuh"
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
template <typename H>
__device__ __forceinline__ Unit unit_at(int cell, int64_t i, int64_t hidden, const H* h_prev, const float* aux_prev) {
  const int64_t r = i / hidden;
  return Unit{r, i - r * hidden, h_prev ? to_float(h_prev[i]) : 0.f,
              aux_prev && cell == static_cast<int>(RecurrentCell::Lstm) ? aux_prev[i] : 0.f};
}

/// xp[i] of a step's rows in the storage type S, widened (recurrent_math::cell_forward's reader).
template <typename S>
struct Widen {
  const S* p;
  __device__ __forceinline__ float operator[](int64_t i) const { return to_float(p[i]); }
};
/// dxp[i] = v rounded to the storage type S (recurrent_math::cell_backward's store).
template <typename S>
struct Narrow {
  S* p;
  __device__ __forceinline__ void operator()(int64_t i, float v) const { p[i] = from_float<S>(v); }
};

/// S: the storage type of xp_t, gates_t and h_t (the gates rounded as stored; h computed from the
/// unrounded values). h_prev is the f32 state of step t-1 (the f32 h itself when
/// S is float); h32_t (null when S is float) receives h_t unrounded, the state step t+1 reads.
template <typename S>
static __global__ void recurrent_cell_forward_kernel(int cell, const S* __restrict__ xp_t, const float* __restrict__ rec,
                                                     const float* __restrict__ bias, const float* __restrict__ h_prev,
                                                     const float* __restrict__ aux_prev, S* __restrict__ gates_t,
                                                     S* __restrict__ h_t, float* __restrict__ h32_t,
                                                     float* __restrict__ aux_t, int64_t batch, int64_t hidden,
                                                     int64_t gh) {
  const int64_t n = batch * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Unit u = unit_at(cell, i, hidden, h_prev, aux_prev);
    const int64_t off = u.row * gh;
    float a = 0.f;
    const float h = rm::cell_forward(cell, Widen<S>{xp_t + off}, rec ? rec + off : nullptr, bias, hidden, u.j,
                                     u.h_prev, u.c_prev, Narrow<S>{gates_t ? gates_t + off : nullptr}, &a);
    h_t[i] = from_float<S>(h);
    if (h32_t) h32_t[i] = h;
    if (aux_t) aux_t[i] = a;
  }
}

/// S: the storage type of gates, h, dh_t and dxp_t (gates and h as the forward stored them: rounded in 16 bits, as the
/// CPU reference reads it). drec_t is f32 (the GEMMs' input); it may alias dxp_t when S is float.
template <typename S>
static __global__ void recurrent_cell_backward_kernel(int cell, const S* __restrict__ gates_t,
                                                      const S* __restrict__ h_t, const S* __restrict__ h_prev,
                                                      const float* __restrict__ aux_t,
                                                      const float* __restrict__ aux_prev,
                                                      const S* __restrict__ dh_t, const float* __restrict__ daux_t,
                                                      const float* __restrict__ dh_gemm, float* __restrict__ dh_direct,
                                                      float* __restrict__ dc, S* dxp_t, float* drec_t, int64_t batch,
                                                      int64_t hidden, int64_t gh) {
  const int64_t n = batch * hidden;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Unit u = unit_at(cell, i, hidden, h_prev, aux_prev);
    const float dh = to_float(dh_t[i]) + (dh_gemm ? dh_gemm[i] : 0.f) + dh_direct[i];
    const float dct = dc[i] + (daux_t ? daux_t[i] : 0.f);
    float dc_prev = 0.f;
    const int64_t off = u.row * gh;
    dh_direct[i] = rm::cell_backward(cell, Widen<S>{gates_t ? gates_t + off : nullptr}, to_float(h_t[i]), u.h_prev,
                                     aux_t ? aux_t[i] : 0.f, u.c_prev, hidden, u.j, dh, dct, Narrow<S>{dxp_t + off},
                                     drec_t + off, &dc_prev);
    dc[i] = dc_prev;
  }
}

/// One step over (batch, hidden) units, rows contiguous: xp_t, rec, gates_t (batch, G*H); h_*, aux_*
/// (batch, H). rec = h_{t-1}·uᵀ is null at t = 0 (zero state), and h_prev / aux_prev with it;
/// bias (G*H) nullable; gates_t / aux_t null for a simple cell. cell as ops/recurrent.hpp. S, h_prev
/// and h32_t as the kernel's.
template <typename S>
void recurrent_cell_forward_cuda(int cell, const S* xp_t, const float* rec, const float* bias, const float* h_prev,
                                 const float* aux_prev, S* gates_t, S* h_t, float* h32_t, float* aux_t,
                                 int64_t batch, int64_t hidden, cudaStream_t stream) {
  const int64_t n = batch * hidden;
  if (n == 0) return;
  const int block = 256;
  launch<recurrent_cell_forward_kernel<S>>(grid_for(n, block), block, 0, stream, cell, xp_t, rec, bias, h_prev,
                                           aux_prev, gates_t, h_t, h32_t, aux_t, batch, hidden,
                                           recurrent_gates(static_cast<RecurrentCell>(cell)) * hidden);
}

/// The same step backward. dh_t, daux_t (nullable): the gradients arriving from outside; dh_gemm
/// (= drec_{t+1}·u, nullable at the last step), dh_direct and dc: what step t+1 carried back, updated
/// in place to what step t carries to t-1. Writes dxp_t and drec_t (may alias dxp_t when S is float).
template <typename S>
void recurrent_cell_backward_cuda(int cell, const S* gates_t, const S* h_t, const S* h_prev, const float* aux_t,
                                  const float* aux_prev, const S* dh_t, const float* daux_t, const float* dh_gemm,
                                  float* dh_direct, float* dc, S* dxp_t, float* drec_t, int64_t batch, int64_t hidden,
                                  cudaStream_t stream) {
  const int64_t n = batch * hidden;
  if (n == 0) return;
  const int block = 256;
  launch<recurrent_cell_backward_kernel<S>>(grid_for(n, block), block, 0, stream, cell, gates_t, h_t, h_prev, aux_t,
                                            aux_prev, dh_t, daux_t, dh_gemm, dh_direct, dc, dxp_t, drec_t, batch,
                                            hidden, recurrent_gates(static_cast<RecurrentCell>(cell)) * hidden);
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

/// In 16-bit storage (S bf16 or f16) the recurrence itself stays f32: each step's h is stored
/// rounded to S and also kept unrounded in a ping-pong pair of f32 rows, which the next step's GEMM
/// (against the f32 u) and cell read. This is the CPU reference's definition: its f32 op runs on the
/// widened xp and only what it wrote is rounded.
template <typename S>
void sequence_forward(const OpCall& call, const ops::RecurrentArgs& p) {
  CudaContext& ctx = cuda_context(call);
  constexpr bool kWide = std::is_same_v<S, float>;
  const int64_t T = p.steps, B = p.batch, H = p.hidden, GH = p.gate_cols();
  if (B == 0) return;
  const int cell = static_cast<int>(p.cell);
  const S* xp = static_cast<const S*>(p.xp.data);
  const float* u = p.u.as<float>();
  S* h = static_cast<S*>(p.h.data);
  S* gates = static_cast<S*>(p.gates.data);
  float* aux = p.aux.as<float>();
  // [rec | the f32 state of steps t-1 and t (16-bit storage only)] then the GEMM scratch.
  const Carve ws = carve(ctx, {B * GH, kWide ? 0 : 2 * B * H});
  float* rec = ws.bufs[0];
  auto state = [&](int64_t t) -> float* {  // the f32 h of step t
    if constexpr (kWide) return h + t * B * H;
    else return ws.bufs[1] + (t % 2) * B * H;
  };
  for (int64_t t = 0; t < T; ++t) {
    const int64_t row = t * B, prev = row - B;
    const float* h_prev = t > 0 ? state(t - 1) : nullptr;
    if (t > 0) gemm(call, ctx, false, true, B, GH, H, h_prev, H, u, H, rec, ws.lt);  // rec = h_{t-1}·uᵀ
    kernels::recurrent_cell_forward_cuda<S>(cell, xp + row * GH, t > 0 ? rec : nullptr, p.bias.as<float>(), h_prev,
                                            t > 0 && aux ? aux + prev * H : nullptr, gates ? gates + row * GH : nullptr,
                                            h + row * H, kWide ? nullptr : state(t), aux ? aux + row * H : nullptr, B,
                                            H, ctx.stream());
  }
}

/// In 16-bit storage drec is an f32 buffer for every cell (the GEMMs read f32), and du's GEMM reads h
/// widened once into f32 (the rounded values the forward stored, as the CPU reference reads them).
template <typename S>
void sequence_backward(const OpCall& call, const ops::RecurrentArgs& p) {
  CudaContext& ctx = cuda_context(call);
  constexpr bool kWide = std::is_same_v<S, float>;
  const int64_t T = p.steps, B = p.batch, H = p.hidden, GH = p.gate_cols();
  const int cell = static_cast<int>(p.cell);
  const bool gru = p.cell == RecurrentCell::Gru;
  const float* u = p.u.as<float>();
  const S* h = static_cast<const S*>(p.h.data);
  const S* dh = static_cast<const S*>(p.dh.data);
  const S* gates = static_cast<const S*>(p.gates.data);
  const float* aux = p.aux.as<float>();
  const float* daux = p.daux.as<float>();
  S* dxp = static_cast<S*>(p.dxp.data);
  const bool own_drec = gru || !kWide, widen_h = !kWide && p.du.defined() && T > 1;
  // [dh_gemm | dh_direct | dc | drec (gru or 16-bit) | h in f32 (16-bit, for du)] then the GEMM scratch.
  const Carve ws = carve(ctx, {B * H, B * H, B * H, own_drec ? T * B * GH : 0, widen_h ? T * B * H : 0});
  float* dh_gemm = ws.bufs[0];
  float* drec = ws.bufs[3];
  if constexpr (kWide)
    if (!own_drec) drec = dxp;
  if (B > 0) {
    CUDL_CUDA_CHECK(cudaMemsetAsync(ws.bufs[1], 0, static_cast<size_t>(B * H) * sizeof(float), ctx.stream()));
    CUDL_CUDA_CHECK(cudaMemsetAsync(ws.bufs[2], 0, static_cast<size_t>(B * H) * sizeof(float), ctx.stream()));
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t row = t * B, prev = row - B;
      kernels::recurrent_cell_backward_cuda<S>(
          cell, gates ? gates + row * GH : nullptr, h + row * H, t > 0 ? h + prev * H : nullptr,
          aux ? aux + row * H : nullptr, t > 0 && aux ? aux + prev * H : nullptr, dh + row * H,
          daux ? daux + row * H : nullptr, t < T - 1 ? dh_gemm : nullptr, ws.bufs[1], ws.bufs[2], dxp + row * GH,
          drec + row * GH, B, H, ctx.stream());
      if (t > 0) gemm(call, ctx, false, false, B, H, GH, drec + row * GH, GH, u, H, dh_gemm, ws.lt);  // drec_t·u
    }
  }
  if (p.du.defined() && (T - 1) * B == 0) {  // no step before the first: du = 0
    CUDL_CUDA_CHECK(cudaMemsetAsync(p.du.data, 0, static_cast<size_t>(GH * H) * sizeof(float), ctx.stream()));
  } else if (p.du.defined()) {  // du (GH, H) = Σ_{t≥1} drec_tᵀ·h_{t-1}: one GEMM over (T-1)*B rows
    const float* h32 = nullptr;
    if constexpr (kWide) {
      h32 = h;
    } else {  // steps 0..T-2 are the GEMM's rows
      kernels::cast_cuda(h, kernels::cast_code(p.h.dtype), ws.bufs[4], kernels::cast_code(DType::f32),
                         (T - 1) * B * H, ctx.stream());
      h32 = ws.bufs[4];
    }
    gemm(call, ctx, true, false, GH, H, (T - 1) * B, drec + B * GH, GH, h32, H, p.du.as<float>(), ws.lt);
  }
  if (p.dbias.defined()) kernels::bias_grad_cuda(drec, p.dbias.as<float>(), T * B, GH, ctx.stream());
}

// The entries: check the call, then run in its storage type.
void recurrent_sequence_cuda(const OpCall& call) {
  const ops::RecurrentArgs p = ops::check_recurrent_call(call);
  with_storage_type(p.storage, "RecurrentSequence",
                    [&](auto tag) { sequence_forward<typename decltype(tag)::type>(call, p); });
}

void recurrent_sequence_backward_cuda(const OpCall& call) {
  const ops::RecurrentArgs p = ops::check_recurrent_call(call);
  with_storage_type(p.storage, "RecurrentSequenceBackward",
                    [&](auto tag) { sequence_backward<typename decltype(tag)::type>(call, p); });
}

}  // namespace

void register_cuda_recurrent_ops(OpTable& t) {
  t.add(OpKind::RecurrentSequence, recurrent_sequence_cuda);
  t.add(OpKind::RecurrentSequenceBackward, recurrent_sequence_backward_cuda);
}

}  // namespace cudl
