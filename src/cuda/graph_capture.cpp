// cuda/graph_capture.cpp — CUDA graph capture/replay and event timing on a context stream.
#include "cuda/graph_capture.hpp"

#include <cstdio>

#include "cuda/check.hpp"
#include "cuda/context.hpp"

namespace cudl {

struct CudaGraphRunner::Impl {
  CudaContext* ctx = nullptr;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
};

CudaGraphRunner::CudaGraphRunner(int device_index) : impl_(std::make_unique<Impl>()) {
  impl_->ctx = &CudaContext::get(device_index);
}

CudaGraphRunner::~CudaGraphRunner() {
  if (impl_->exec && cudaGraphExecDestroy(impl_->exec) != cudaSuccess)
    std::fprintf(stderr, "cudl: cudaGraphExecDestroy failed\n");
  if (impl_->graph && cudaGraphDestroy(impl_->graph) != cudaSuccess)
    std::fprintf(stderr, "cudl: cudaGraphDestroy failed\n");
}

void CudaGraphRunner::begin_capture() {
  CUDL_CUDA_CHECK(cudaStreamBeginCapture(impl_->ctx->stream(), cudaStreamCaptureModeThreadLocal));
}

void CudaGraphRunner::end_capture() {
  CUDL_CUDA_CHECK(cudaStreamEndCapture(impl_->ctx->stream(), &impl_->graph));
  CUDL_CUDA_CHECK(cudaGraphInstantiate(&impl_->exec, impl_->graph, 0));
}

void CudaGraphRunner::launch() { CUDL_CUDA_CHECK(cudaGraphLaunch(impl_->exec, impl_->ctx->stream())); }

bool CudaGraphRunner::ready() const { return impl_->exec != nullptr; }

struct CudaEventTimer::Impl {
  CudaContext* ctx = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
};

CudaEventTimer::CudaEventTimer(int device_index) : impl_(std::make_unique<Impl>()) {
  impl_->ctx = &CudaContext::get(device_index);
  CUDL_CUDA_CHECK(cudaEventCreate(&impl_->start));
  CUDL_CUDA_CHECK(cudaEventCreate(&impl_->stop));
}

CudaEventTimer::~CudaEventTimer() {
  if (impl_->start) cudaEventDestroy(impl_->start);
  if (impl_->stop) cudaEventDestroy(impl_->stop);
}

void CudaEventTimer::start() { CUDL_CUDA_CHECK(cudaEventRecord(impl_->start, impl_->ctx->stream())); }

double CudaEventTimer::stop_ms() {
  CUDL_CUDA_CHECK(cudaEventRecord(impl_->stop, impl_->ctx->stream()));
  CUDL_CUDA_CHECK(cudaEventSynchronize(impl_->stop));
  float ms = 0;
  CUDL_CUDA_CHECK(cudaEventElapsedTime(&ms, impl_->start, impl_->stop));
  return ms;
}

}  // namespace cudl
