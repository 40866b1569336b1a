// cuda/context.cpp — per-device stream, lazy cuBLAS/cuBLASLt/cuDNN handles, workspace.
#include "cuda/context.hpp"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

#include "core/nvtx.hpp"
#include "cuda/check.hpp"
#include "memory/allocator.hpp"

namespace cudl {

namespace detail {
const char* cublas_status_string(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "unknown cuBLAS status";
}
}  // namespace detail

int DeviceGuard::enter(int device) {
  int previous = -1;
  CUDL_CUDA_CHECK(cudaGetDevice(&previous));
  if (previous == device) return -1;
  CUDL_CUDA_CHECK(cudaSetDevice(device));
  return previous;
}

void DeviceGuard::leave(int previous) noexcept {
  if (previous >= 0 && cudaSetDevice(previous) != cudaSuccess)
    std::fprintf(stderr, "cudl: restoring CUDA device %d failed\n", previous);
}

CudaContext::CudaContext(Device device) : ExecContext(device) {
  DeviceGuard guard(device.index());
  CUDL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  // Its own allocation (not the caching pool, which itself asks for this context).
  // Two words: the block counter, then the grid flag (grid_flag()).
  CUDL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&block_counter_), 2 * sizeof(unsigned int)));
  CUDL_CUDA_CHECK(cudaMemsetAsync(block_counter_, 0, 2 * sizeof(unsigned int), stream_));
  CUDL_CUDA_CHECK(cudaStreamSynchronize(stream_));  // done here, not inside a later caller's work
}

CudaContext::~CudaContext() {
  // Destructors only log.
  int previous = -1;
  try {
    previous = DeviceGuard::enter(device().index());
    if (workspace_) memory::cuda_deallocate(device().index(), workspace_, workspace_bytes_);
    if (cublas_workspace_) memory::cuda_deallocate(device().index(), cublas_workspace_, cublas_workspace_bytes_);
    for (auto& [p, n] : retired_) memory::cuda_deallocate(device().index(), p, n);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cudl: freeing the workspace of %s failed: %s\n", device().str().c_str(), e.what());
  }
  if (cudnn_ && cudnnDestroy(cudnn_) != CUDNN_STATUS_SUCCESS) std::fprintf(stderr, "cudl: cudnnDestroy failed\n");
  if (cublaslt_ && cublasLtDestroy(cublaslt_) != CUBLAS_STATUS_SUCCESS)
    std::fprintf(stderr, "cudl: cublasLtDestroy failed\n");
  if (cublas_ && cublasDestroy(cublas_) != CUBLAS_STATUS_SUCCESS) std::fprintf(stderr, "cudl: cublasDestroy failed\n");
  if (block_counter_ && cudaFree(block_counter_) != cudaSuccess) std::fprintf(stderr, "cudl: cudaFree failed\n");
  if (stream_ && cudaStreamDestroy(stream_) != cudaSuccess) std::fprintf(stderr, "cudl: cudaStreamDestroy failed\n");
  DeviceGuard::leave(previous);
}

cublasHandle_t CudaContext::cublas() {
  if (!cublas_) {
    DeviceGuard guard(device().index());  // a handle belongs to the device current at creation
    CUDL_CUBLAS_CHECK(cublasCreate(&cublas_));
    CUDL_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    // A workspace of our own: without one cuBLAS allocates its own, and inside a stream capture
    // that is a cudaMallocAsync in every captured graph. Size as the cuBLAS documentation
    // recommends: 32 MiB on Hopper and later, 4 MiB before.
    const DeviceInfo info = cuda_device_info(device().index());
    cublas_workspace_bytes_ = info.cc_major >= 9 ? (32u << 20) : (4u << 20);
    cublas_workspace_ = memory::cuda_allocate(device().index(), cublas_workspace_bytes_);
    CUDL_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_, cublas_workspace_bytes_));
  }
  return cublas_;
}

cublasLtHandle_t CudaContext::cublaslt() {
  if (!cublaslt_) {
    DeviceGuard guard(device().index());
    CUDL_CUBLAS_CHECK(cublasLtCreate(&cublaslt_));
  }
  return cublaslt_;
}

cudnnHandle_t CudaContext::cudnn() {
  if (!cudnn_) {
    DeviceGuard guard(device().index());
    CUDL_CUDNN_CHECK(cudnnCreate(&cudnn_));
    CUDL_CUDNN_CHECK(cudnnSetStream(cudnn_, stream_));
  }
  return cudnn_;
}

void* CudaContext::workspace(size_t bytes) {
  if (bytes > workspace_bytes_) {
    // A captured CUDA graph may hold the old buffer's address: keep it alive until the context
    // goes away instead of freeing it.
    if (workspace_) retired_.emplace_back(workspace_, workspace_bytes_);
    workspace_ = nullptr;
    workspace_bytes_ = 0;
    size_t rounded = (bytes + (1u << 20) - 1) & ~size_t((1u << 20) - 1);  // grow in MiB steps
    workspace_ = memory::cuda_allocate(device().index(), rounded);
    workspace_bytes_ = rounded;
  }
  return workspace_;
}

void CudaContext::synchronize() {
  CUDL_NVTX_RANGE("cudl/stream_synchronize");
  CUDL_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

namespace {
std::mutex& contexts_mu() {
  static std::mutex mu;
  return mu;
}
std::vector<std::unique_ptr<CudaContext>>& contexts() {
  static std::vector<std::unique_ptr<CudaContext>> c;
  return c;
}
// At exit, before the contexts' static storage is destroyed and before the CUDA runtime's own exit
// handler (registered at the runtime's first call, earlier, so it runs later): every context's
// queued work runs to completion (a fill or copy nobody waited for must not run against memory or
// names already gone), then the contexts are destroyed in device order: their library handles,
// workspaces and streams go while the runtime is still there, whatever the order of the other
// static destructors. The plan caches (matmul, conv) hold only host descriptors and stay.
void teardown_contexts_at_exit() {
  std::lock_guard<std::mutex> lock(contexts_mu());
  for (auto& c : contexts())
    if (c && cudaStreamSynchronize(c->stream()) != cudaSuccess)
      std::fprintf(stderr, "cudl: synchronising %s at exit failed\n", c->device().str().c_str());
  for (auto& c : contexts()) c.reset();
}
}  // namespace

CudaContext& CudaContext::get(int index) {
  static std::mutex& mu = contexts_mu();
  static std::vector<std::unique_ptr<CudaContext>>& contexts = ::cudl::contexts();
  static const bool registered = std::atexit(teardown_contexts_at_exit) == 0;
  (void)registered;
  std::lock_guard<std::mutex> lock(mu);
  int n = cuda_device_count();
  if (index < 0 || index >= n)
    CUDL_FAIL("CUDA device ", index, " is not available (", n, " device(s)",
              n == 0 ? "; " + cuda_unavailable_reason() : std::string(), ")");
  if (contexts.size() < static_cast<size_t>(n)) contexts.resize(n);
  if (!contexts[index]) contexts[index] = std::make_unique<CudaContext>(Device::cuda(index));
  return *contexts[index];
}

ExecContext& cuda_default_context(int index) { return CudaContext::get(index); }

CudaContext& cuda_context(const OpCall& call) {
  auto* c = dynamic_cast<CudaContext*>(call.ctx);
  if (!c) CUDL_FAIL(op_name(call.op), " (", call.label, "): CUDA op called without a CUDA context");
  return *c;
}

}  // namespace cudl
