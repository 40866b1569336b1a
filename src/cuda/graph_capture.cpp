// cuda/graph_capture.cpp — CUDA graph capture/replay and event timing on a context stream.
#include "cuda/graph_capture.hpp"

#include <cstdio>

#include "cuda/check.hpp"
#include "cuda/context.hpp"

namespace cudl {

CudaStepGraph::~CudaStepGraph() {
  if (exec_ && cudaGraphExecDestroy(exec_) != cudaSuccess) std::fprintf(stderr, "cudl: cudaGraphExecDestroy failed\n");
  if (graph_ && cudaGraphDestroy(graph_) != cudaSuccess) std::fprintf(stderr, "cudl: cudaGraphDestroy failed\n");
}

void CudaStepGraph::launch() {
  ContextScope scope(ctx_);
  CUDL_CUDA_CHECK(cudaGraphLaunch(exec_, ctx_.stream()));
}

CudaEventTimer::CudaEventTimer(CudaContext& ctx) : ctx_(ctx) {
  DeviceGuard guard(ctx.device().index());
  CUDL_CUDA_CHECK(cudaEventCreate(&start_));
  if (cudaError_t err = cudaEventCreate(&stop_); err != cudaSuccess) {
    cudaEventDestroy(start_);
    CUDL_CUDA_CHECK(err);
  }
}

CudaEventTimer::~CudaEventTimer() {
  if (start_) cudaEventDestroy(start_);
  if (stop_) cudaEventDestroy(stop_);
}

void CudaEventTimer::start() { CUDL_CUDA_CHECK(cudaEventRecord(start_, ctx_.stream())); }

double CudaEventTimer::stop_ms() {
  CUDL_CUDA_CHECK(cudaEventRecord(stop_, ctx_.stream()));
  CUDL_CUDA_CHECK(cudaEventSynchronize(stop_));
  float ms = 0;
  CUDL_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
  return ms;
}

std::unique_ptr<OpTimer> CudaContext::make_timer() { return std::make_unique<CudaEventTimer>(*this); }

void CudaContext::begin_capture() {
  CUDL_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
}

std::unique_ptr<CapturedGraph> CudaContext::end_capture() {
  cudaGraph_t graph = nullptr;
  if (cudaError_t err = cudaStreamEndCapture(stream_, &graph); err != cudaSuccess) {
    (void)cudaGetLastError();  // consumed here: the caller falls back, and later launch checks stay clean
    if (graph) cudaGraphDestroy(graph);
    CUDL_CUDA_CHECK(err);
  }
  cudaGraphExec_t exec = nullptr;
  if (cudaError_t err = cudaGraphInstantiate(&exec, graph, 0); err != cudaSuccess) {
    (void)cudaGetLastError();
    cudaGraphDestroy(graph);
    CUDL_CUDA_CHECK(err);
  }
  return std::make_unique<CudaStepGraph>(*this, graph, exec);
}

void CudaContext::abort_capture() noexcept {
  cudaGraph_t graph = nullptr;
  (void)cudaStreamEndCapture(stream_, &graph);
  if (graph) cudaGraphDestroy(graph);
}

}  // namespace cudl
