// cuda/nvtx.cpp — the NVTX ranges behind CUDL_NVTX_RANGE (core/nvtx.hpp): one "cudl" domain,
// ASCII messages; NVTX3 is header-only and costs a pointer test when no tool is attached.
#include "core/nvtx.hpp"

#include <nvtx3/nvToolsExt.h>

namespace cudl::detail {

namespace {
nvtxDomainHandle_t nvtx_domain() {
  static nvtxDomainHandle_t domain = nvtxDomainCreateA("cudl");
  return domain;
}
}  // namespace

void nvtx_push(const char* name) {
  nvtxEventAttributes_t attr{};
  attr.version = NVTX_VERSION;
  attr.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  attr.messageType = NVTX_MESSAGE_TYPE_ASCII;
  attr.message.ascii = name;
  nvtxDomainRangePushEx(nvtx_domain(), &attr);
}

void nvtx_pop() { nvtxDomainRangePop(nvtx_domain()); }

}  // namespace cudl::detail
