// cudl/distributed.hpp — data-parallel training across GPUs: a World of ranks (host threads of this
// process, one CUDA device each) or ranks as processes (init_from_env, as torchrun and
// scripts/cudlrun launch them), each rank's Communicator (NCCL), and the sharded sampler fit uses.
// A model compiled with CompileOptions::communicator trains data-parallel: see docs/distributed.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cudl/device.hpp"
#include "cudl/export.hpp"
#include "cudl/tensor.hpp"

namespace cudl {
class DeviceCommunicator;  // the backend's side (src/backend/communicator.hpp)
}

namespace cudl::distributed {

class Communicator;

/// Where this process stands in a job launched as processes, as torchrun, scripts/cudlrun or a
/// cluster's launcher describe it in the environment (docs/distributed.md).
struct LaunchEnv {
  int rank = 0;             // RANK: this process's rank, 0 .. world_size-1
  int world_size = 1;       // WORLD_SIZE: the number of processes (ranks) of the job
  int local_rank = 0;       // LOCAL_RANK: its rank on this machine; it trains on cuda:LOCAL_RANK
  std::string master_addr;  // MASTER_ADDR: the host of rank 0, which serves the TCP store
  int master_port = 0;      // MASTER_PORT: the store's TCP port there
};

/// True when the environment says this process is one rank of a launched job (RANK or
/// WORLD_SIZE is set).
CUDL_API bool launched();
/// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; a missing or malformed one is
/// an error naming the variable and its value.
CUDL_API LaunchEnv launch_env();
/// Joins the job as rank env.rank on cuda:env.local_rank: rank 0 serves a TCP store on
/// master_port and publishes the NCCL unique id there (ncclGetUniqueId), the other ranks fetch it
/// from master_addr:master_port, then every rank creates its communicator (ncclCommInitRank;
/// returns once all ranks have joined). A rank that cannot reach the store within
/// timeout_seconds fails with an error naming MASTER_ADDR:MASTER_PORT and the rank.
CUDL_API std::shared_ptr<Communicator> init(const LaunchEnv& env, double timeout_seconds = 300);
/// init(launch_env(), timeout_seconds): what a program started by cudlrun or torchrun calls.
CUDL_API std::shared_ptr<Communicator> init_from_env(double timeout_seconds = 300);

/// One rank's view of a data-parallel job: its rank, the number of ranks and its device, and
/// collectives on tensors of that device (each queued on the device's default stream and waited
/// for, so the tensor is ready when the call returns). Every rank must make the same calls in
/// the same order; a mismatch is an error (or, on a GPU, a hang).
class CUDL_API Communicator {
 public:
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const;
  int size() const;
  Device device() const;
  /// Copies root's t (on device()) to every rank's t.
  void broadcast(Tensor& t, int root = 0);
  /// Sums (average: the mean) the f32 tensor t across the ranks, in place.
  void all_reduce(Tensor& t, bool average = false);
  /// The most gradient bytes one all-reduce of a training step carries (default 25 MiB, as PyTorch
  /// DDP). Each bucket starts as soon as the backward pass has finished its gradients, overlapping
  /// the rest; smaller buckets start earlier but cost more calls. Read when a model is compiled.
  void set_bucket_bytes(size_t bytes);
  size_t bucket_bytes() const;

  /// The backend's communicator (what a compiled model's step records its collectives with).
  DeviceCommunicator& backend() const { return *comm_; }

 private:
  friend class World;
  friend std::shared_ptr<Communicator> init(const LaunchEnv& env, double timeout_seconds);
  explicit Communicator(std::unique_ptr<DeviceCommunicator> comm);
  std::unique_ptr<DeviceCommunicator> comm_;
};

/// The ranks of a data-parallel job as host threads of this process, rank r on CUDA device
/// devices[r] (by default device r).
class CUDL_API World {
 public:
  /// A world of `size` ranks on CUDA devices 0 .. size-1; throws when there are fewer devices.
  explicit World(int size);
  /// One rank per listed CUDA device (distinct indices).
  explicit World(std::vector<int> devices);
  int size() const { return static_cast<int>(devices_.size()); }
  Device device(int rank) const;

  /// Runs fn on one host thread per rank, each with its own communicator (created first; every
  /// rank joins before fn starts) and its device current, and returns when all have finished.
  /// When a rank throws, the first error (by rank) is rethrown here, prefixed with its rank; the
  /// other ranks' pending collectives fail by timeout under the emulator (on a GPU they would
  /// hang: a rank that throws must do so on every rank, as a shape error does).
  void run(const std::function<void(const std::shared_ptr<Communicator>&)>& fn) const;

 private:
  std::vector<int> devices_;
};

/// The sharded sampler: the rows rank `rank` of `size` trains on in one epoch, in order, given the
/// epoch's global order (the same permutation on every rank). Step s of the epoch takes the
/// global batch order[s * global_batch .. (s + 1) * global_batch) and gives rank r its slice
/// [r * b, (r + 1) * b) with b = global_batch / size, so the ranks' parts of each step are
/// disjoint and together are exactly the batch one rank would train on. The incomplete last
/// global batch is dropped. Throws unless global_batch is a positive multiple of size.
CUDL_API std::vector<int32_t> shard(const std::vector<int32_t>& order, int64_t global_batch, int rank, int size);

}  // namespace cudl::distributed
