// kernels/recurrent.cuh — host launchers of the fused recurrent cell kernels (one step of a
// SimpleRNN / LSTM / GRU sequence, forward and backward); the GEMMs around them are cuBLASLt's.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace cudl::kernels {

/// One step over (batch, hidden) units, rows contiguous: xp_t, rec, gates_t (batch, G*H); h_*, aux_*
/// (batch, H). rec = h_{t-1}·uᵀ is null at t = 0 (zero state), and h_prev / aux_prev with it;
/// bias (G*H) nullable; gates_t / aux_t null for a simple cell. cell as ops/recurrent.hpp.
void recurrent_cell_forward_cuda(int cell, const float* xp_t, const float* rec, const float* bias,
                                 const float* h_prev, const float* aux_prev, float* gates_t, float* h_t, float* aux_t,
                                 int64_t batch, int64_t hidden, cudaStream_t stream);

/// The same step backward. dh_t, daux_t (nullable): the gradients arriving from outside; dh_gemm
/// (= drec_{t+1}·u, nullable at the last step), dh_direct and dc: what step t+1 carried back, updated
/// in place to what step t carries to t-1. Writes dxp_t and drec_t (may alias dxp_t).
void recurrent_cell_backward_cuda(int cell, const float* gates_t, const float* h_t, const float* h_prev,
                                  const float* aux_t, const float* aux_prev, const float* dh_t, const float* daux_t,
                                  const float* dh_gemm, float* dh_direct, float* dc, float* dxp_t, float* drec_t,
                                  int64_t batch, int64_t hidden, cudaStream_t stream);

}  // namespace cudl::kernels
