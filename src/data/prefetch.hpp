// data/prefetch.hpp — BatchPrefetcher: streams training batches from host memory to the device
// through two pinned buffers and a copy stream, for datasets that are not kept on the device.
#pragma once

#include <cstdint>
#include <memory>

#include "cudl/tensor.hpp"
#include "memory/pinned.hpp"

namespace cudl::data {

/// Two staging slots of `batch` rows each on the device (x() and y() are (2 * batch, ...)).
/// Batch `step` goes to slot step % 2, so a program that gathers row (i mod 2 * batch) for the
/// i-th position of the epoch reads exactly the rows staged for its step, at fixed addresses
/// (a captured CUDA graph replays correctly).
///
/// On CUDA, per step (through the device context's copy stream and events, backend/backend.hpp):
/// stage() waits on the host until the slot's pinned buffer is free (its copy two steps ago has
/// completed), gathers the rows into it, and queues the copy on the copy stream behind the
/// compute stream's last use of the slot; begin_step() makes the compute stream wait
/// for the slot's copy; end_step() records the compute stream's use of the slot. Staging step
/// s + 1 before running step s overlaps the host gather and the copy with step s's kernels.
/// On the CPU, stage() gathers straight into the slot and the other two are no-ops.
class BatchPrefetcher {
 public:
  /// `x` (N, ...) and `y` (N, ...) are host tensors; throws naming both when they disagree in rows.
  BatchPrefetcher(const Tensor& x, const Tensor& y, int64_t batch, Device device);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  const Tensor& x() const { return stage_x_; }
  const Tensor& y() const { return stage_y_; }
  int64_t batch() const { return batch_; }

  /// Rows rows[0..n) of the host tensors (n <= batch) become batch `step`.
  void stage(int64_t step, const int32_t* rows, int64_t n);
  void begin_step(int64_t step);
  void end_step(int64_t step);

  /// Host→device bytes queued so far (for tests and benchmarks).
  uint64_t bytes_staged() const { return bytes_staged_; }

 private:
  struct Async;
  Tensor host_x_, host_y_, stage_x_, stage_y_;
  int64_t batch_ = 0;
  size_t row_x_ = 0, row_y_ = 0;  // bytes per row
  memory::PinnedBuffer pinned_x_[2], pinned_y_[2];
  std::unique_ptr<Async> async_;  // devices other than the CPU
  uint64_t bytes_staged_ = 0;
};

}  // namespace cudl::data
