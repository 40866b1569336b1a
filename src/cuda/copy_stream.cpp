// cuda/copy_stream.cpp — the CUDA context's events and its side stream for asynchronous
// host-to-device copies (ExecContext::make_event / make_copy_stream), as the prefetcher uses them.
#include <cstdio>

#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "memory/allocator.hpp"

namespace cudl {

namespace {

class CudaEvent : public DeviceEvent {
 public:
  explicit CudaEvent(int device) {
    DeviceGuard guard(device);  // an event belongs to the device current at creation
    CUDL_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
  }
  ~CudaEvent() override {
    if (event_ && cudaEventDestroy(event_) != cudaSuccess) std::fprintf(stderr, "cudl: cudaEventDestroy failed\n");
  }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  void synchronize() override { CUDL_CUDA_CHECK(cudaEventSynchronize(event_)); }
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

/// `event` as a CUDA event; throws naming the caller when it came from another backend.
const CudaEvent& cuda_event(const DeviceEvent& event, const char* what) {
  const auto* e = dynamic_cast<const CudaEvent*>(&event);
  if (!e) CUDL_FAIL(what, ": the event was not made by a CUDA context");
  return *e;
}

class CudaCopyStream : public CopyStream {
 public:
  explicit CudaCopyStream(int device) : device_(device) {
    DeviceGuard guard(device);
    CUDL_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~CudaCopyStream() override {
    // Host buffers and device memory outlive the copies queued here.
    if (cudaStreamSynchronize(stream_) != cudaSuccess) std::fprintf(stderr, "cudl: cudaStreamSynchronize failed\n");
    if (cudaStreamDestroy(stream_) != cudaSuccess) std::fprintf(stderr, "cudl: cudaStreamDestroy failed\n");
  }
  CudaCopyStream(const CudaCopyStream&) = delete;
  CudaCopyStream& operator=(const CudaCopyStream&) = delete;

  void copy_to_device(void* dst, const void* src, size_t bytes) override {
    CUDL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
  }
  void record(DeviceEvent& event) override {
    CUDL_CUDA_CHECK(cudaEventRecord(cuda_event(event, "CopyStream::record").get(), stream_));
  }
  void wait(const DeviceEvent& event) override {
    CUDL_CUDA_CHECK(cudaStreamWaitEvent(stream_, cuda_event(event, "CopyStream::wait").get(), 0));
  }
  void record_use(void* device_ptr) override { memory::cuda_record_stream(device_, device_ptr, stream_); }

 private:
  int device_;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::unique_ptr<DeviceEvent> CudaContext::make_event() { return std::make_unique<CudaEvent>(device().index()); }

void CudaContext::record(DeviceEvent& event) {
  CUDL_CUDA_CHECK(cudaEventRecord(cuda_event(event, "CudaContext::record").get(), stream_));
}

void CudaContext::wait(const DeviceEvent& event) {
  CUDL_CUDA_CHECK(cudaStreamWaitEvent(stream_, cuda_event(event, "CudaContext::wait").get(), 0));
}

std::unique_ptr<CopyStream> CudaContext::make_copy_stream() {
  return std::make_unique<CudaCopyStream>(device().index());
}

}  // namespace cudl
