// cuda/matmul.hpp — what the CUDA matmul family exposes besides its op-table entries: statistics of
// its cuBLASLt plan cache (descriptors, layouts and heuristic result, built once per shape).
#pragma once

#include <cstddef>

namespace cudl {

struct MatmulPlanStats {
  size_t built = 0;    // plans created (one heuristic query each)
  size_t reused = 0;   // GEMMs that found their plan in the cache
  size_t unfused = 0;  // GEMMs run without the fused epilogue because cuBLASLt had no algo for it
};
MatmulPlanStats cuda_matmul_plan_stats();
/// Forgets the per-device check of cuBLASLt's relu mask layout (matmul.cpp, MaskLayout): the next
/// Linear with a relu mask runs it again. For tests that change the (emulated) library.
void cuda_matmul_forget_mask_layout();

}  // namespace cudl
