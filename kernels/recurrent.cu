// kernels/recurrent.cu — the fused cell step of the recurrent family: one thread per (row, unit)
// evaluates every gate of its unit (ops/recurrent.hpp's cell math), forward and backward.
#include "ops/recurrent.hpp"
#include "kernels/common.cuh"
#include "kernels/recurrent.cuh"

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
