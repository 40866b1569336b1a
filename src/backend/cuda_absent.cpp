// backend/cuda_absent.cpp — the CUDA backend's entry points in a build without CUDA (CMake compiles
// this file instead of src/cuda/): no devices, and every CUDA request fails saying why.
#include <memory>
#include <string>

#include "backend/backend.hpp"
#include "backend/communicator.hpp"
#include "core/nvtx.hpp"
#include "cuda/conv.hpp"
#include "cuda/matmul.hpp"
#include "cuda/sdpa.hpp"
#include "cudl/device.hpp"
#include "cudl/error.hpp"
#include "memory/allocator.hpp"
#include "memory/caching_allocator.hpp"

namespace cudl {

namespace {
constexpr const char* kReason = "cudl was built without the CUDA backend";
}  // namespace

bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() { return std::string("no CUDA device: ") + kReason; }

DeviceInfo cuda_device_info(int index) {
  CUDL_FAIL("CUDA device ", index, " does not exist (0 device(s); ", cuda_unavailable_reason(), ")");
}

void register_cuda_ops(OpTable&) { CUDL_FAIL("the CUDA backend is not available: ", kReason); }

ExecContext& cuda_default_context(int index) { CUDL_FAIL("no context for cuda:", index, ": ", kReason); }

CommunicatorId cuda_communicator_id() { CUDL_FAIL("no NCCL communicator: ", kReason); }
std::unique_ptr<DeviceCommunicator> make_cuda_communicator(const CommunicatorId&, int, int rank, int device) {
  CUDL_FAIL("no NCCL communicator for rank ", rank, " on cuda:", device, ": ", kReason);
}

MatmulPlanStats cuda_matmul_plan_stats() { CUDL_FAIL("cuda_matmul_plan_stats: ", kReason); }
int64_t conv_plans_built() { CUDL_FAIL("conv_plans_built: ", kReason); }
void conv_clear_plan_cache() { CUDL_FAIL("conv_clear_plan_cache: ", kReason); }
int64_t sdpa_plans_built() { CUDL_FAIL("sdpa_plans_built: ", kReason); }
void sdpa_clear_plan_cache() { CUDL_FAIL("sdpa_clear_plan_cache: ", kReason); }

namespace memory {
void* cuda_allocate(int device_index, size_t nbytes) {
  CUDL_FAIL("cannot allocate ", nbytes, " bytes on cuda:", device_index, ": ", kReason);
}
void cuda_deallocate(int device_index, void*, size_t nbytes) {
  CUDL_FAIL("cannot free ", nbytes, " bytes on cuda:", device_index, ": ", kReason);
}
void cuda_copy_bytes(Device dst_device, void*, Device src_device, const void*, size_t) {
  CUDL_FAIL("cannot copy between ", src_device, " and ", dst_device, ": ", kReason);
}
void cuda_copy_foreign(int device_index, void*, const void*, size_t) {
  CUDL_FAIL("cannot copy memory of cuda:", device_index, ": ", kReason);
}
void cuda_fill_bytes(int device_index, void*, const void*, size_t, size_t count) {
  CUDL_FAIL("cannot fill ", count, " elements on cuda:", device_index, ": ", kReason);
}
CachingAllocator& cuda_pool(int device_index) { CUDL_FAIL("no memory pool for cuda:", device_index, ": ", kReason); }
void cuda_record_stream(int device_index, void*, void*) {
  CUDL_FAIL("record_stream on cuda:", device_index, ": ", kReason);
}
// No CUDA runtime to page-lock host memory: the pinned pool uses plain aligned host memory
// (memory/pinned.cpp names that pool "host (no CUDA device, not pinned)").
std::unique_ptr<RawAllocator> make_cuda_pinned_raw_allocator() { return nullptr; }
bool cuda_is_pinned_host(const void*) { return false; }
}  // namespace memory

namespace detail {
// No NVTX without CUDA (no Nsight tool can attach to a CPU-only build): ranges mark nothing.
void nvtx_push(const char*) {}
void nvtx_pop() {}
}  // namespace detail

}  // namespace cudl
