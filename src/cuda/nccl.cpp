// cuda/nccl.cpp — the CUDA communicator (NCCL: one communicator per rank, collectives on the
// context's stream, so a captured step records them) and the AllReduce op's CUDA entry.
#include <nccl.h>

#include <cstring>

#include "backend/communicator.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "ops/collective.hpp"

// NCCL's counterpart of CUDL_CUDA_CHECK (kept here: only this file includes nccl.h).
#define CUDL_NCCL_CHECK(comm, expr)                                                                       \
  do {                                                                                                    \
    ncclResult_t cudl_nr_ = (expr);                                                                       \
    if (cudl_nr_ != ncclSuccess)                                                                          \
      CUDL_FAIL("NCCL error: ", #expr, ": ", ncclGetErrorString(cudl_nr_), ": ", ncclGetLastError(comm)); \
  } while (0)

namespace cudl {
namespace {

class NcclCommunicator final : public DeviceCommunicator {
 public:
  NcclCommunicator(const CommunicatorId& id, int size, int rank, int device)
      : size_(size), rank_(rank), device_(device) {
    ncclUniqueId uid;
    static_assert(sizeof uid.internal == std::tuple_size<CommunicatorId>::value, "NCCL unique id size");
    std::memcpy(uid.internal, id.data(), sizeof uid.internal);
    DeviceGuard guard(device);
    CUDL_NCCL_CHECK(nullptr, ncclCommInitRank(&comm_, size, uid, rank));
  }
  ~NcclCommunicator() override {
    if (comm_) (void)ncclCommDestroy(comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cuda(device_); }

  void all_reduce(const std::vector<TensorView>& xs, bool average, ExecContext& ctx) override {
    cudaStream_t s = stream_of(ctx, "all_reduce");
    ContextScope scope(ctx);
    CUDL_NCCL_CHECK(comm_, ncclGroupStart());
    // Buckets: runs of tensors that follow each other in memory, up to bucket_bytes each.
    size_t k = 0;
    while (k < xs.size()) {
      char* begin = static_cast<char*>(xs[k].data);
      size_t bytes = xs[k].numel() * sizeof(float);
      size_t j = k + 1;
      while (j < xs.size() && static_cast<char*>(xs[j].data) == begin + bytes &&
             bytes + xs[j].numel() * sizeof(float) <= bucket_bytes)
        bytes += xs[j++].numel() * sizeof(float);
      if (bytes > 0)
        CUDL_NCCL_CHECK(comm_, ncclAllReduce(begin, begin, bytes / sizeof(float), ncclFloat32,
                                             average ? ncclAvg : ncclSum, comm_, s));
      k = j;
    }
    CUDL_NCCL_CHECK(comm_, ncclGroupEnd());
  }

  void broadcast(const TensorView& x, int root, ExecContext& ctx) override {
    cudaStream_t s = stream_of(ctx, "broadcast");
    ContextScope scope(ctx);
    CUDL_NCCL_CHECK(comm_, ncclBroadcast(x.data, x.data, x.numel() * dtype_size(x.dtype), ncclUint8, root, comm_, s));
  }

 private:
  cudaStream_t stream_of(ExecContext& ctx, const char* what) const {
    auto* c = dynamic_cast<CudaContext*>(&ctx);
    if (!c || ctx.device() != Device::cuda(device_))
      CUDL_FAIL("communicator of rank ", rank_, " (cuda:", device_, "): ", what, " on a context of ", ctx.device());
    return c->stream();
  }

  ncclComm_t comm_ = nullptr;
  int size_, rank_, device_;
};

void cuda_all_reduce(const OpCall& c) {
  const ops::AllReduceArgs a = ops::check_all_reduce_call(c);
  a.attrs.comm->all_reduce(a.xs, a.attrs.average, cuda_context(c));
}

}  // namespace

CommunicatorId cuda_communicator_id() {
  ncclUniqueId uid;
  CUDL_NCCL_CHECK(nullptr, ncclGetUniqueId(&uid));
  CommunicatorId id;
  std::memcpy(id.data(), uid.internal, id.size());
  return id;
}

std::unique_ptr<DeviceCommunicator> make_cuda_communicator(const CommunicatorId& id, int size, int rank, int device) {
  return std::make_unique<NcclCommunicator>(id, size, rank, device);
}

void register_cuda_collective_ops(OpTable& t) { t.add(OpKind::AllReduce, cuda_all_reduce); }

}  // namespace cudl
