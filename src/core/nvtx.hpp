// core/nvtx.hpp — CUDL_NVTX_RANGE("name"): a scoped NVTX range in the "cudl" domain, shown by
// Nsight Systems. The push/pop live in cuda/nvtx.cpp (NVTX3, header-only, a no-op without a tool
// attached); in a build without CUDA, backend/cuda_absent.cpp defines them as no-ops.
#pragma once

#include <string>

namespace cudl::detail {

/// Pushes / pops a range in the "cudl" NVTX domain of the calling thread.
void nvtx_push(const char* name);
void nvtx_pop();

/// Pushes a range on construction, pops it on destruction.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) { nvtx_push(name); }
  explicit NvtxRange(const std::string& name) : NvtxRange(name.c_str()) {}
  ~NvtxRange() { nvtx_pop(); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};

}  // namespace cudl::detail

#define CUDL_NVTX_CONCAT_(a, b) a##b
#define CUDL_NVTX_CONCAT(a, b) CUDL_NVTX_CONCAT_(a, b)
/// Marks the rest of the enclosing scope as an NVTX range: CUDL_NVTX_RANGE("dense/forward").
#define CUDL_NVTX_RANGE(name) ::cudl::detail::NvtxRange CUDL_NVTX_CONCAT(cudl_nvtx_range_, __LINE__)(name)
