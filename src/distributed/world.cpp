// distributed/world.cpp — World (ranks as threads, one communicator each), the public Communicator
// over the backend's, and the sharded sampler.
#include <exception>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "backend/communicator.hpp"
#include "cudl/distributed.hpp"
#include "cudl/error.hpp"

namespace cudl::distributed {

Communicator::Communicator(std::unique_ptr<DeviceCommunicator> comm) : comm_(std::move(comm)) {}
Communicator::~Communicator() = default;
int Communicator::rank() const { return comm_->rank(); }
int Communicator::size() const { return comm_->size(); }
Device Communicator::device() const { return comm_->device(); }

namespace {
void check_on_device(const Communicator& c, const Tensor& t, const char* what) {
  if (!t.defined()) CUDL_FAIL(what, " on rank ", c.rank(), ": the tensor is undefined");
  if (t.device() != c.device())
    CUDL_FAIL(what, " on rank ", c.rank(), ": the tensor ", t.shape(), " is on ", t.device(), ", the communicator on ",
              c.device());
}
}  // namespace

void Communicator::broadcast(Tensor& t, int root) {
  check_on_device(*this, t, "broadcast");
  if (root < 0 || root >= size()) CUDL_FAIL("broadcast on rank ", rank(), ": root ", root, " of ", size(), " ranks");
  ExecContext& ctx = default_context(device());
  comm_->broadcast(TensorView::of(t), root, ctx);
  ctx.synchronize();
}

void Communicator::all_reduce(Tensor& t, bool average) {
  check_on_device(*this, t, "all_reduce");
  if (t.dtype() != DType::f32) CUDL_FAIL("all_reduce on rank ", rank(), ": the tensor is ", t.dtype(), " (f32 only)");
  ExecContext& ctx = default_context(device());
  comm_->all_reduce({TensorView::of(t)}, average, ctx);
  ctx.synchronize();
}

void Communicator::set_bucket_bytes(size_t bytes) {
  if (bytes == 0) CUDL_FAIL("set_bucket_bytes on rank ", rank(), ": a bucket must hold at least one byte");
  comm_->bucket_bytes = bytes;
}
size_t Communicator::bucket_bytes() const { return comm_->bucket_bytes; }

World::World(int size) {
  if (size < 1) CUDL_FAIL("World: size must be >= 1, got ", size);
  for (int r = 0; r < size; ++r) devices_.push_back(r);
  if (cuda_device_count() < size)
    CUDL_FAIL("World: ", size, " ranks need ", size, " CUDA devices, this machine has ", cuda_device_count(), " (",
              cuda_device_count() == 0 ? cuda_unavailable_reason() : std::string("one rank per device"), ")");
}

World::World(std::vector<int> devices) : devices_(std::move(devices)) {
  if (devices_.empty()) CUDL_FAIL("World: no devices");
  std::set<int> seen;
  for (int d : devices_) {
    if (d < 0 || d >= cuda_device_count())
      CUDL_FAIL("World: CUDA device ", d, " does not exist (", cuda_device_count(), " device(s))");
    if (!seen.insert(d).second) CUDL_FAIL("World: CUDA device ", d, " listed twice (one rank per device)");
  }
}

Device World::device(int rank) const {
  if (rank < 0 || rank >= size()) CUDL_FAIL("World: rank ", rank, " of ", size());
  return Device::cuda(devices_[rank]);
}

void World::run(const std::function<void(const std::shared_ptr<Communicator>&)>& fn) const {
  const CommunicatorId id = cuda_communicator_id();
  const int n = size();
  std::vector<std::exception_ptr> errors(n);
  auto rank_main = [&](int rank) {
    try {
      ContextScope scope(default_context(device(rank)));
      std::shared_ptr<Communicator> comm(new Communicator(make_cuda_communicator(id, n, rank, devices_[rank])));
      fn(comm);
    } catch (...) {
      errors[rank] = std::current_exception();
    }
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < n; ++r) threads.emplace_back(rank_main, r);
  rank_main(0);
  for (auto& t : threads) t.join();
  for (int r = 0; r < n; ++r) {
    if (!errors[r]) continue;
    try {
      std::rethrow_exception(errors[r]);
    } catch (const std::exception& e) {
      CUDL_FAIL("rank ", r, " of ", n, ": ", e.what());
    }
  }
}

std::vector<int32_t> shard(const std::vector<int32_t>& order, int64_t global_batch, int rank, int size) {
  if (size < 1 || rank < 0 || rank >= size) CUDL_FAIL("shard: rank ", rank, " of ", size);
  if (global_batch <= 0 || global_batch % size != 0)
    CUDL_FAIL("shard: the global batch (", global_batch, ") must be a positive multiple of the ", size, " ranks");
  const int64_t b = global_batch / size, steps = static_cast<int64_t>(order.size()) / global_batch;
  std::vector<int32_t> rows;
  rows.reserve(static_cast<size_t>(steps * b));
  for (int64_t s = 0; s < steps; ++s)
    for (int64_t j = 0; j < b; ++j) rows.push_back(order[s * global_batch + rank * b + j]);
  return rows;
}

}  // namespace cudl::distributed
