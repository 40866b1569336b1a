// core/nvtx.hpp — CUDL_NVTX_RANGE("name"): a scoped NVTX range in the "cudl" domain, shown by
// Nsight Systems. Always compiled in with CUDA (NVTX3 is header-only, a no-op without a tool attached).
#pragma once

#include <string>

#if defined(CUDL_WITH_CUDA)
#include <nvtx3/nvToolsExt.h>
#endif

namespace cudl::detail {

#if defined(CUDL_WITH_CUDA)
inline nvtxDomainHandle_t nvtx_domain() {
  static nvtxDomainHandle_t domain = nvtxDomainCreateA("cudl");
  return domain;
}

/// Pushes a range on construction, pops it on destruction.
class NvtxRange {
 public:
  explicit NvtxRange(const char* name) {
    nvtxEventAttributes_t attr{};
    attr.version = NVTX_VERSION;
    attr.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    attr.messageType = NVTX_MESSAGE_TYPE_ASCII;
    attr.message.ascii = name;
    nvtxDomainRangePushEx(nvtx_domain(), &attr);
  }
  explicit NvtxRange(const std::string& name) : NvtxRange(name.c_str()) {}
  ~NvtxRange() { nvtxDomainRangePop(nvtx_domain()); }
  NvtxRange(const NvtxRange&) = delete;
  NvtxRange& operator=(const NvtxRange&) = delete;
};
#else
class NvtxRange {
 public:
  explicit NvtxRange(const char*) {}
  explicit NvtxRange(const std::string&) {}
};
#endif

}  // namespace cudl::detail

#define CUDL_NVTX_CONCAT_(a, b) a##b
#define CUDL_NVTX_CONCAT(a, b) CUDL_NVTX_CONCAT_(a, b)
/// Marks the rest of the enclosing scope as an NVTX range: CUDL_NVTX_RANGE("dense/forward").
#define CUDL_NVTX_RANGE(name) ::cudl::detail::NvtxRange CUDL_NVTX_CONCAT(cudl_nvtx_range_, __LINE__)(name)
