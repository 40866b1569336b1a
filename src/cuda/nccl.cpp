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
    DeviceGuard guard(device_);
    if (comm_) (void)ncclCommDestroy(comm_);
    if (forked_) (void)cudaEventDestroy(forked_);
    if (reduced_) (void)cudaEventDestroy(reduced_);
    if (comm_stream_) (void)cudaStreamDestroy(comm_stream_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  Device device() const override { return Device::cuda(device_); }

  void all_reduce(const std::vector<TensorView>& xs, bool average, ExecContext& ctx) override {
    cudaStream_t s = stream_of(ctx, "all_reduce");
    ContextScope scope(ctx);
    issue(xs, average, s);
  }

  void start_all_reduce(const std::vector<TensorView>& xs, bool average, ExecContext& ctx) override {
    cudaStream_t s = stream_of(ctx, "start_all_reduce");
    ContextScope scope(ctx);
    if (!comm_stream_) {  // first use (the eager first step): nothing is being captured yet
      CUDL_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
      CUDL_CUDA_CHECK(cudaEventCreateWithFlags(&forked_, cudaEventDisableTiming));
      CUDL_CUDA_CHECK(cudaEventCreateWithFlags(&reduced_, cudaEventDisableTiming));
    }
    // Fork: the bucket's gradients are final once the work queued so far on s is done.
    CUDL_CUDA_CHECK(cudaEventRecord(forked_, s));
    CUDL_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, forked_, 0));
    issue(xs, average, comm_stream_);
    CUDL_CUDA_CHECK(cudaEventRecord(reduced_, comm_stream_));
    started_ = true;
  }

  void broadcast(const TensorView& x, int root, ExecContext& ctx) override {
    cudaStream_t s = stream_of(ctx, "broadcast");
    ContextScope scope(ctx);
    CUDL_NCCL_CHECK(comm_, ncclBroadcast(x.data, x.data, x.numel() * dtype_size(x.dtype), ncclUint8, root, comm_, s));
  }

  void finish(ExecContext& ctx) override {
    cudaStream_t s = stream_of(ctx, "finish");
    ContextScope scope(ctx);
    if (started_) CUDL_CUDA_CHECK(cudaStreamWaitEvent(s, reduced_, 0));  // join: every bucket so far
  }

 private:
  void issue(const std::vector<TensorView>& xs, bool average, cudaStream_t s) {
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

  cudaStream_t stream_of(ExecContext& ctx, const char* what) const {
    auto* c = dynamic_cast<CudaContext*>(&ctx);
    if (!c || ctx.device() != Device::cuda(device_))
      CUDL_FAIL("communicator of rank ", rank_, " (cuda:", device_, "): ", what, " on a context of ", ctx.device());
    return c->stream();
  }

  ncclComm_t comm_ = nullptr;
  int size_, rank_, device_;
  cudaStream_t comm_stream_ = nullptr;  // the buckets started during the backward pass
  cudaEvent_t forked_ = nullptr, reduced_ = nullptr;
  bool started_ = false;
};

void cuda_all_reduce(const OpCall& c) {
  const ops::AllReduceArgs a = ops::check_all_reduce_call(c);
  switch (a.attrs.stage) {
    case ops::AllReduceStage::kWhole:
      a.attrs.comm->all_reduce(a.xs, a.attrs.average, cuda_context(c));
      break;
    case ops::AllReduceStage::kStart:
      a.attrs.comm->start_all_reduce(a.xs, a.attrs.average, cuda_context(c));
      break;
    case ops::AllReduceStage::kFinish:
      a.attrs.comm->finish(cuda_context(c));
      break;
  }
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
