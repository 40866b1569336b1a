// backend/communicator.hpp — one rank's communicator as the layers above the backend see it: the
// collectives data-parallel training needs, queued on an execution context like ops (CUDA: NCCL
// on the context's stream, recorded into a captured step). src/cuda/nccl.cpp implements it;
// without CUDA, src/backend/cuda_absent.cpp says that cudl was built without it.
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "backend/backend.hpp"

namespace cudl {

class DeviceCommunicator {
 public:
  virtual ~DeviceCommunicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual Device device() const = 0;
  /// Sums (average: the mean) each f32 tensor across the ranks in place, on ctx's queue. Runs of
  /// tensors adjacent in memory go to the library as one call each, up to bucket_bytes.
  virtual void all_reduce(const std::vector<TensorView>& xs, bool average, ExecContext& ctx) = 0;
  /// all_reduce on the communicator's own queue of ctx's device, after the work ctx has queued so
  /// far: it overlaps what ctx queues next. The xs must not be touched before finish(ctx).
  virtual void start_all_reduce(const std::vector<TensorView>& xs, bool average, ExecContext& ctx) = 0;
  /// Work ctx queues from now on waits for every started all-reduce.
  virtual void finish(ExecContext& ctx) = 0;
  /// Copies root's x to every rank's x, on ctx's queue.
  virtual void broadcast(const TensorView& x, int root, ExecContext& ctx) = 0;
  size_t bucket_bytes = size_t(25) << 20;
};

/// The identifier every rank of one job passes to make_cuda_communicator (ncclGetUniqueId).
using CommunicatorId = std::array<char, 128>;
CommunicatorId cuda_communicator_id();
/// Rank `rank` of `size` on CUDA device `device`; returns once every rank has joined.
std::unique_ptr<DeviceCommunicator> make_cuda_communicator(const CommunicatorId& id, int size, int rank, int device);

}  // namespace cudl
