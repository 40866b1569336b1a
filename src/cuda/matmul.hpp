// cuda/matmul.hpp — what the CUDA matmul family exposes besides its op-table entries: statistics of
// its cuBLASLt plan cache (descriptors, layouts and heuristic result, built once per shape).
#pragma once

#include <cstddef>
#include <cstdint>

#include "backend/op.hpp"

namespace cudl {

class CudaContext;

struct MatmulPlanStats {
  size_t built = 0;    // plans created (one heuristic query each)
  size_t reused = 0;   // GEMMs that found their plan in the cache
  size_t unfused = 0;  // GEMMs run without the fused epilogue because cuBLASLt had no algo for it
  size_t legacy = 0;   // plain GEMMs cuBLASLt had no algo for, run by cublasGemmStridedBatchedEx
};
MatmulPlanStats cuda_matmul_plan_stats();
/// Forgets the per-device (and storage type) checks of cuBLASLt's relu mask layout (matmul.cpp,
/// MaskLayout): the next Linear with a relu mask runs it again. For tests that change the (emulated)
/// library.
void cuda_matmul_forget_mask_layout();

/// A row-major strided-batched GEMM for other CUDA op families: for i < batch,
/// C_i (m, n) = op(A_i) (m, k) · op(B_i) (k, n), where X_i starts at x + i * stride_x and rows of X
/// are ld_x elements apart (A_i is stored (k, m) when ta, B_i (n, k) when tb).
struct StridedGemm {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool ta = false, tb = false;
  const float* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const float* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  float* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
};
/// Bytes of cuBLASLt workspace cuda_strided_gemm needs (carve them from the context's workspace).
size_t cuda_gemm_workspace_bytes();
/// Queues the GEMM through cuBLASLt (plans cached like the matmul family's); errors name `call`.
void cuda_strided_gemm(const OpCall& call, CudaContext& ctx, const StridedGemm& g, void* lt_workspace);

}  // namespace cudl
