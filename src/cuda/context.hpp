// cuda/context.hpp — per-device CUDA state: a non-default stream, lazily created library handles
// bound to it, and a growable workspace for ops' scratch memory.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <memory>
#include <utility>
#include <vector>

#include "backend/backend.hpp"

namespace cudl {

/// Makes CUDA device `device` current for its lifetime and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : previous_(enter(device)) {}
  ~DeviceGuard() { leave(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  /// Makes `device` current; returns the device to restore, or -1 when it already was current.
  static int enter(int device);
  /// Restores `previous` (no-op for -1); never throws.
  static void leave(int previous) noexcept;

 private:
  int previous_;
};

class CudaContext : public ExecContext {
 public:
  /// Makes `device` current and creates a non-blocking stream on it.
  explicit CudaContext(Device device);
  ~CudaContext() override;
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  cudaStream_t stream() const { return stream_; }
  /// Handles are created on first use and bound to stream().
  cublasHandle_t cublas();
  cublasLtHandle_t cublaslt();
  cudnnHandle_t cudnn();
  /// Scratch memory valid until the next workspace() call on this context (ops on one stream run
  /// in order, so one buffer is enough). Grows, never shrinks; carve several buffers from one call.
  void* workspace(size_t bytes);
  size_t workspace_size() const { return workspace_bytes_; }
  /// A device word that is 0 whenever no kernel is running on stream(): single-pass kernels count
  /// their finished blocks in it (kernels::last_block in kernels/common.cuh), and the last block
  /// leaves it 0 again. Kernels on one stream run one after another, so one word serves them all.
  unsigned int* block_counter() const { return block_counter_; }
  /// A second such word: the blocks of a grid (or of the launches of one multi-tensor list) raise
  /// it to report what they found, and the list's last block reads it and sets it back to 0
  /// (kernels::amp_unscale_cuda's non-finite flag).
  unsigned int* grid_flag() const { return block_counter_ + 1; }
  /// Blocks the host until all work queued on stream() is done.
  void synchronize() override;

  // ExecContext services on stream() (cuda/graph_capture.cpp, cuda/copy_stream.cpp).
  /// Event pairs recorded on stream() around the timed op.
  std::unique_ptr<OpTimer> make_timer() override;
  /// Stream capture (thread-local mode) into a CUDA graph, instantiated by end_capture().
  bool supports_capture() const override { return true; }
  void begin_capture() override;
  std::unique_ptr<CapturedGraph> end_capture() override;
  void abort_capture() noexcept override;
  /// cudaEvents without timing; record/wait act on stream().
  std::unique_ptr<DeviceEvent> make_event() override;
  void record(DeviceEvent& event) override;
  void wait(const DeviceEvent& event) override;
  /// A non-blocking stream of this device for asynchronous host-to-device copies.
  std::unique_ptr<CopyStream> make_copy_stream() override;
  /// Make device() current / restore the previous device (ContextScope).
  int enter() override { return DeviceGuard::enter(device().index()); }
  void leave(int previous) noexcept override { DeviceGuard::leave(previous); }

  /// The default context of CUDA device `index` (created on first use; throws when absent).
  static CudaContext& get(int index);

 private:
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  void* cublas_workspace_ = nullptr;  // set on cublas_ with cublasSetWorkspace
  size_t cublas_workspace_bytes_ = 0;
  cublasLtHandle_t cublaslt_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  unsigned int* block_counter_ = nullptr;  // [0] block_counter(), [1] grid_flag()
  std::vector<std::pair<void*, size_t>> retired_;  // outgrown workspaces (graphs may still use them)
};

/// The CUDA context an op call runs in (throws naming the op when ctx is not a CUDA context).
CudaContext& cuda_context(const OpCall& call);

}  // namespace cudl
