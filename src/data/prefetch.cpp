// data/prefetch.cpp — BatchPrefetcher: host gather into pinned double buffers, asynchronous copies
// on a copy stream ordered against the compute stream with events (plain copies on the CPU).
#include "data/prefetch.hpp"

#include <cstring>
#include <vector>

#include "cudl/error.hpp"
#if defined(CUDL_WITH_CUDA)
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#endif

namespace cudl::data {

struct BatchPrefetcher::Cuda {
#if defined(CUDL_WITH_CUDA)
  int device = 0;
  cudaStream_t compute = nullptr, copy = nullptr;
  cudaEvent_t copied[2] = {nullptr, nullptr};    // slot's copy done (copy stream)
  cudaEvent_t consumed[2] = {nullptr, nullptr};  // slot's last reader done (compute stream)
  bool copy_pending[2] = {false, false}, consume_pending[2] = {false, false};
  ~Cuda() {
    for (int k = 0; k < 2; ++k) {
      if (copied[k]) cudaEventDestroy(copied[k]);
      if (consumed[k]) cudaEventDestroy(consumed[k]);
    }
    if (copy) {
      cudaStreamSynchronize(copy);  // pinned buffers and staging tensors outlive queued copies
      cudaStreamDestroy(copy);
    }
  }
#endif
};

namespace {
size_t row_bytes(const Tensor& t) {
  const int64_t rows = t.shape()[0];
  return rows > 0 ? t.nbytes() / static_cast<size_t>(rows) : 0;
}

Tensor staging(const Tensor& t, int64_t rows, Device device) {
  std::vector<int64_t> d = t.shape().dims();
  d[0] = rows;
  return Tensor::zeros(Shape(d), t.dtype(), device);
}
}  // namespace

BatchPrefetcher::BatchPrefetcher(const Tensor& x, const Tensor& y, int64_t batch, Device device)
    : batch_(batch) {
  if (!x.defined() || !y.defined() || x.shape().rank() == 0 || y.shape().rank() == 0)
    CUDL_FAIL("BatchPrefetcher: x and y must be defined tensors with a leading row dimension");
  if (x.shape()[0] != y.shape()[0])
    CUDL_FAIL("BatchPrefetcher: x ", x.shape(), " and y ", y.shape(), " differ in rows");
  if (batch < 1) CUDL_FAIL("BatchPrefetcher: batch must be positive, got ", batch);
  host_x_ = x.device().is_cpu() ? x : x.to(Device::cpu());
  host_y_ = y.device().is_cpu() ? y : y.to(Device::cpu());
  row_x_ = row_bytes(host_x_);
  row_y_ = row_bytes(host_y_);
  stage_x_ = staging(host_x_, 2 * batch, device);
  stage_y_ = staging(host_y_, 2 * batch, device);
  if (device.is_cpu()) return;
#if defined(CUDL_WITH_CUDA)
  cuda_ = std::make_unique<Cuda>();
  cuda_->device = device.index();
  CudaContext& ctx = CudaContext::get(device.index());
  cuda_->compute = ctx.stream();
  ctx.synchronize();  // the staging tensors' zero fill (compute stream) is done before any copy
  CUDL_CUDA_CHECK(cudaSetDevice(device.index()));
  CUDL_CUDA_CHECK(cudaStreamCreateWithFlags(&cuda_->copy, cudaStreamNonBlocking));
  for (int k = 0; k < 2; ++k) {
    CUDL_CUDA_CHECK(cudaEventCreateWithFlags(&cuda_->copied[k], cudaEventDisableTiming));
    CUDL_CUDA_CHECK(cudaEventCreateWithFlags(&cuda_->consumed[k], cudaEventDisableTiming));
    pinned_x_[k] = memory::PinnedBuffer(static_cast<size_t>(batch) * row_x_);
    pinned_y_[k] = memory::PinnedBuffer(static_cast<size_t>(batch) * row_y_);
  }
#else
  CUDL_FAIL("BatchPrefetcher: cannot stage to ", device, ": cudl was built without the CUDA backend");
#endif
}

BatchPrefetcher::~BatchPrefetcher() = default;

void BatchPrefetcher::stage(int64_t step, const int32_t* rows, int64_t n) {
  if (n < 1 || n > batch_) CUDL_FAIL("BatchPrefetcher::stage: ", n, " rows for a batch of ", batch_);
  const int64_t total = host_x_.shape()[0];
  for (int64_t i = 0; i < n; ++i)
    if (rows[i] < 0 || rows[i] >= total)
      CUDL_FAIL("BatchPrefetcher::stage: row ", rows[i], " out of range for ", total, " rows");
  const int slot = static_cast<int>(step % 2);
  const size_t off_x = static_cast<size_t>(slot) * batch_ * row_x_, off_y = static_cast<size_t>(slot) * batch_ * row_y_;
  auto gather = [&](unsigned char* dx, unsigned char* dy) {
    const auto* sx = static_cast<const unsigned char*>(host_x_.data());
    const auto* sy = static_cast<const unsigned char*>(host_y_.data());
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(dx + i * row_x_, sx + static_cast<size_t>(rows[i]) * row_x_, row_x_);
      std::memcpy(dy + i * row_y_, sy + static_cast<size_t>(rows[i]) * row_y_, row_y_);
    }
  };
  bytes_staged_ += static_cast<uint64_t>(n) * (row_x_ + row_y_);
  if (!cuda_) {
    gather(static_cast<unsigned char*>(stage_x_.data()) + off_x, static_cast<unsigned char*>(stage_y_.data()) + off_y);
    return;
  }
#if defined(CUDL_WITH_CUDA)
  Cuda& c = *cuda_;
  // The pinned slot is rewritten only after its previous copy has read it.
  if (c.copy_pending[slot]) CUDL_CUDA_CHECK(cudaEventSynchronize(c.copied[slot]));
  gather(pinned_x_[slot].data_as<unsigned char>(), pinned_y_[slot].data_as<unsigned char>());
  // The device slot is overwritten only after the step that last read it.
  if (c.consume_pending[slot]) CUDL_CUDA_CHECK(cudaStreamWaitEvent(c.copy, c.consumed[slot], 0));
  CUDL_CUDA_CHECK(cudaMemcpyAsync(static_cast<unsigned char*>(stage_x_.data()) + off_x, pinned_x_[slot].data(),
                                  n * row_x_, cudaMemcpyHostToDevice, c.copy));
  CUDL_CUDA_CHECK(cudaMemcpyAsync(static_cast<unsigned char*>(stage_y_.data()) + off_y, pinned_y_[slot].data(),
                                  n * row_y_, cudaMemcpyHostToDevice, c.copy));
  CUDL_CUDA_CHECK(cudaEventRecord(c.copied[slot], c.copy));
  c.copy_pending[slot] = true;
#endif
}

void BatchPrefetcher::begin_step(int64_t step) {
#if defined(CUDL_WITH_CUDA)
  if (!cuda_) return;
  const int slot = static_cast<int>(step % 2);
  if (!cuda_->copy_pending[slot]) CUDL_FAIL("BatchPrefetcher::begin_step(", step, "): the batch was not staged");
  CUDL_CUDA_CHECK(cudaStreamWaitEvent(cuda_->compute, cuda_->copied[slot], 0));
#else
  (void)step;
#endif
}

void BatchPrefetcher::end_step(int64_t step) {
#if defined(CUDL_WITH_CUDA)
  if (!cuda_) return;
  const int slot = static_cast<int>(step % 2);
  CUDL_CUDA_CHECK(cudaEventRecord(cuda_->consumed[slot], cuda_->compute));
  cuda_->consume_pending[slot] = true;
#else
  (void)step;
#endif
}

}  // namespace cudl::data
