// cuda/graph_capture.hpp — stream capture into a CUDA graph and replay, plus event timing, for the
// executor (kept here so src/graph stays free of CUDA headers).
#pragma once

#include <memory>

namespace cudl {

class CudaGraphRunner {
 public:
  explicit CudaGraphRunner(int device_index);
  ~CudaGraphRunner();
  CudaGraphRunner(const CudaGraphRunner&) = delete;
  CudaGraphRunner& operator=(const CudaGraphRunner&) = delete;

  /// Starts recording the device's context stream (thread-local capture mode).
  void begin_capture();
  /// Stops recording and instantiates the graph.
  void end_capture();
  /// Launches the instantiated graph on the context stream.
  void launch();
  bool ready() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Times work on a CUDA context stream with events (for the per-op profile).
class CudaEventTimer {
 public:
  explicit CudaEventTimer(int device_index);
  ~CudaEventTimer();
  void start();
  /// Records the stop event, waits for it and returns the elapsed milliseconds.
  double stop_ms();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cudl
