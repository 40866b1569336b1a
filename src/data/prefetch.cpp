// data/prefetch.cpp — BatchPrefetcher: host gather into pinned double buffers, asynchronous copies
// on the context's copy stream ordered against its compute stream with events (ExecContext hooks);
// on the CPU the gather writes the slot directly.
#include "data/prefetch.hpp"

#include <cstring>
#include <vector>

#include "backend/backend.hpp"
#include "cudl/error.hpp"

namespace cudl::data {

/// The device side: a copy stream next to the context's compute stream, and per slot an event
/// for "its copy is done" (recorded on the copy stream) and "its last reader is done" (recorded
/// on the compute stream).
struct BatchPrefetcher::Async {
  ExecContext* compute = nullptr;
  std::unique_ptr<CopyStream> copy;  // destroyed last: it waits for its queued copies
  std::unique_ptr<DeviceEvent> copied[2], consumed[2];
  bool copy_pending[2] = {false, false}, consume_pending[2] = {false, false};
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
  async_ = std::make_unique<Async>();
  async_->compute = &default_context(device);
  async_->compute->synchronize();  // the staging tensors' zero fill (compute stream) is done before any copy
  async_->copy = async_->compute->make_copy_stream();
  for (int k = 0; k < 2; ++k) {
    async_->copied[k] = async_->compute->make_event();
    async_->consumed[k] = async_->compute->make_event();
    pinned_x_[k] = memory::PinnedBuffer(static_cast<size_t>(batch) * row_x_);
    pinned_y_[k] = memory::PinnedBuffer(static_cast<size_t>(batch) * row_y_);
  }
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
  if (!async_) {
    gather(static_cast<unsigned char*>(stage_x_.data()) + off_x, static_cast<unsigned char*>(stage_y_.data()) + off_y);
    return;
  }
  Async& c = *async_;
  // The pinned slot is rewritten only after its previous copy has read it.
  if (c.copy_pending[slot]) c.copied[slot]->synchronize();
  gather(pinned_x_[slot].data_as<unsigned char>(), pinned_y_[slot].data_as<unsigned char>());
  // The device slot is overwritten only after the step that last read it.
  if (c.consume_pending[slot]) c.copy->wait(*c.consumed[slot]);
  c.copy->copy_to_device(static_cast<unsigned char*>(stage_x_.data()) + off_x, pinned_x_[slot].data(), n * row_x_);
  c.copy->copy_to_device(static_cast<unsigned char*>(stage_y_.data()) + off_y, pinned_y_[slot].data(), n * row_y_);
  c.copy->record(*c.copied[slot]);
  c.copy_pending[slot] = true;
}

void BatchPrefetcher::begin_step(int64_t step) {
  if (!async_) return;
  const int slot = static_cast<int>(step % 2);
  if (!async_->copy_pending[slot]) CUDL_FAIL("BatchPrefetcher::begin_step(", step, "): the batch was not staged");
  async_->compute->wait(*async_->copied[slot]);
}

void BatchPrefetcher::end_step(int64_t step) {
  if (!async_) return;
  const int slot = static_cast<int>(step % 2);
  async_->compute->record(*async_->consumed[slot]);
  async_->consume_pending[slot] = true;
}

}  // namespace cudl::data
