// cuda/graph_capture.hpp — the CUDA context's capture and timing services (ExecContext hooks):
// stream capture into an instantiated CUDA graph, and per-op timing with events on the stream.
#pragma once

#include <cuda_runtime.h>

#include "backend/backend.hpp"

namespace cudl {

class CudaContext;

/// A captured and instantiated CUDA graph, replayed on the stream it was captured from.
class CudaStepGraph : public CapturedGraph {
 public:
  /// Takes ownership of `graph` and `exec`.
  CudaStepGraph(CudaContext& ctx, cudaGraph_t graph, cudaGraphExec_t exec) : ctx_(ctx), graph_(graph), exec_(exec) {}
  ~CudaStepGraph() override;
  CudaStepGraph(const CudaStepGraph&) = delete;
  CudaStepGraph& operator=(const CudaStepGraph&) = delete;
  void launch() override;

 private:
  CudaContext& ctx_;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

/// Times work on a CUDA context stream with a pair of events.
class CudaEventTimer : public OpTimer {
 public:
  explicit CudaEventTimer(CudaContext& ctx);
  ~CudaEventTimer() override;
  CudaEventTimer(const CudaEventTimer&) = delete;
  CudaEventTimer& operator=(const CudaEventTimer&) = delete;
  void start() override;
  double stop_ms() override;

 private:
  CudaContext& ctx_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

}  // namespace cudl
