// tests/emu/tests/test_emu_runtime.cpp — the emulated CUDA runtime: device properties, memcpy
// directions and their errors, NaN fill, lazy streams, events, graphs, sticky errors, counters.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "emu/emu.hpp"
#include "kernels/launch.cuh"

namespace {

using cudl_emu::counters;
using cudl_emu::enqueue;
using cudl_emu::WorkKind;

#define ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << cudaGetErrorString(cudaGetLastError())

class Runtime : public ::testing::Test {
 protected:
  void SetUp() override {
    cudl_emu::reset_device_state();
    ASSERT_CUDA(cudaDeviceSynchronize());
    (void)cudaGetLastError();
    cudl_emu::reset_counters();
  }
  void TearDown() override {
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    cudl_emu::reset_device_state();
  }
};

// A message of the last error, for checks on what the detail names.
std::string last_message(cudaError_t err) { return cudaGetErrorString(err); }

TEST_F(Runtime, DeviceLooksLikeAnH100) {
  int n = 0;
  ASSERT_CUDA(cudaGetDeviceCount(&n));
  EXPECT_EQ(n, 1);
  cudaDeviceProp p;
  ASSERT_CUDA(cudaGetDeviceProperties(&p, 0));
  EXPECT_NE(std::string(p.name).find("H100"), std::string::npos) << p.name;
  EXPECT_EQ(p.major, 9);
  EXPECT_EQ(p.minor, 0);
  EXPECT_EQ(p.multiProcessorCount, 132);
  EXPECT_EQ(p.sharedMemPerBlock, 48u * 1024);
  EXPECT_EQ(p.sharedMemPerMultiprocessor, 228u * 1024);
  EXPECT_EQ(p.sharedMemPerBlockOptin, 227u * 1024);
  EXPECT_EQ(p.maxThreadsPerBlock, 1024);
  EXPECT_EQ(p.warpSize, 32);
  EXPECT_GE(p.totalGlobalMem, 79ull << 30);
  int v = 0;
  ASSERT_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, 0));
  EXPECT_EQ(v, 132);
  ASSERT_CUDA(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0));
  EXPECT_EQ(v, 227 * 1024);
  ASSERT_CUDA(cudaSetDevice(0));
  int d = -1;
  ASSERT_CUDA(cudaGetDevice(&d));
  EXPECT_EQ(d, 0);
}

TEST_F(Runtime, InvalidDeviceIsANonStickyError) {
  cudaDeviceProp p;
  EXPECT_EQ(cudaGetDeviceProperties(&p, 1), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaSetDevice(3), cudaErrorInvalidDevice);
  EXPECT_EQ(cudaPeekAtLastError(), cudaErrorInvalidDevice);  // peek does not clear
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidDevice);     // get returns it once
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_STREQ(cudaGetErrorName(cudaErrorInvalidDevice), "cudaErrorInvalidDevice");
  EXPECT_STREQ(cudaGetErrorName(cudaErrorIllegalAddress), "cudaErrorIllegalAddress");
  EXPECT_STREQ(cudaGetErrorString(cudaSuccess), "no error");
  EXPECT_NE(last_message(cudaErrorInvalidDevice).find("invalid device ordinal"), std::string::npos);
}

TEST_F(Runtime, FreshAllocationsReadAsNaN) {
  const size_t n = 1000;
  float* d = nullptr;
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(float)));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(d) % 16, 0u);
  std::vector<float> h(n, 0.0f);
  ASSERT_CUDA(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; ++i) ASSERT_TRUE(std::isnan(h[i])) << "element " << i << " = " << h[i];
  // The same bytes are NaN as f16 and bf16: exponent all ones, mantissa non-zero.
  std::vector<uint16_t> h16(n, 0);
  ASSERT_CUDA(cudaMemcpy(h16.data(), d, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(h16[i] & 0x7C00u, 0x7C00u);  // f16 exponent
    ASSERT_NE(h16[i] & 0x03FFu, 0u);       // f16 mantissa
    ASSERT_EQ(h16[i] & 0x7F80u, 0x7F80u);  // bf16 exponent
    ASSERT_NE(h16[i] & 0x007Fu, 0u);       // bf16 mantissa
  }
  ASSERT_CUDA(cudaFree(d));
}

TEST_F(Runtime, MemcpyRoundTripAndCounters) {
  const size_t n = 257;
  std::vector<int> a(n), b(n, -1);
  for (size_t i = 0; i < n; ++i) a[i] = static_cast<int>(i * 7 + 3);
  int *d1 = nullptr, *d2 = nullptr;
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&d1), n * sizeof(int)));
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&d2), n * sizeof(int)));
  ASSERT_CUDA(cudaMemcpy(d1, a.data(), n * sizeof(int), cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaMemcpy(d2, d1, n * sizeof(int), cudaMemcpyDeviceToDevice));
  ASSERT_CUDA(cudaMemcpy(b.data(), d2, n * sizeof(int), cudaMemcpyDefault));  // inferred D2H
  EXPECT_EQ(a, b);
  ASSERT_CUDA(cudaMemset(d2, 0, n * sizeof(int)));
  ASSERT_CUDA(cudaMemcpy(b.data(), d2, n * sizeof(int), cudaMemcpyDeviceToHost));
  EXPECT_EQ(b, std::vector<int>(n, 0));
  ASSERT_CUDA(cudaFree(d1));
  ASSERT_CUDA(cudaFree(d2));
  const cudl_emu::Counters c = counters();
  EXPECT_EQ(c.mallocs, 2u);
  EXPECT_EQ(c.frees, 2u);
  EXPECT_EQ(c.memcpy_h2d, 1u);
  EXPECT_EQ(c.memcpy_d2d, 1u);
  EXPECT_EQ(c.memcpy_d2h, 2u);
  EXPECT_EQ(c.bytes_h2d, n * sizeof(int));
  EXPECT_EQ(c.bytes_d2h, 2 * n * sizeof(int));
  EXPECT_EQ(c.bytes_d2d, n * sizeof(int));
  EXPECT_EQ(c.memsets, 1u);
  EXPECT_EQ(c.syncs, 7u);  // 4 blocking copies, 1 blocking memset, 2 cudaFree (implicit device syncs)
  cudl_emu::reset_counters();
  EXPECT_EQ(counters().memcpy_d2h, 0u);
  EXPECT_EQ(counters().mallocs, 0u);
}

TEST_F(Runtime, MemcpyDirectionIsCheckedAgainstThePointers) {
  std::vector<float> h(64, 1.0f);
  float* d = nullptr;
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&d), 64 * sizeof(float)));
  // Host-to-device with the arguments swapped: dst is pageable host memory, src is device memory.
  cudaError_t e = cudaMemcpy(h.data(), d, 64 * sizeof(float), cudaMemcpyHostToDevice);
  EXPECT_EQ(e, cudaErrorInvalidValue);
  std::string msg = cudaGetErrorString(e);
  EXPECT_NE(msg.find("invalid argument"), std::string::npos) << msg;
  EXPECT_NE(msg.find("cudaMemcpyHostToDevice"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pageable host memory"), std::string::npos) << msg;
  EXPECT_NE(msg.find("device memory"), std::string::npos) << msg;
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  // Device-to-host from a host pointer.
  EXPECT_EQ(cudaMemcpy(h.data(), h.data() + 32, 16, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  // Device-to-device with a host destination, asynchronously.
  EXPECT_EQ(cudaMemcpyAsync(h.data(), d, 16, cudaMemcpyDeviceToDevice, nullptr), cudaErrorInvalidValue);
  // A kind that is no cudaMemcpyKind.
  EXPECT_EQ(cudaMemcpy(d, h.data(), 16, static_cast<cudaMemcpyKind>(7)), cudaErrorInvalidMemcpyDirection);
  // Pinned memory counts as host memory.
  float* p = nullptr;
  ASSERT_CUDA(cudaMallocHost(reinterpret_cast<void**>(&p), 64 * sizeof(float)));
  EXPECT_EQ(cudaMemcpy(p, d, 16, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  msg = cudaGetErrorString(cudaErrorInvalidValue);
  EXPECT_NE(msg.find("pinned host memory"), std::string::npos) << msg;
  ASSERT_CUDA(cudaMemcpy(p, d, 16, cudaMemcpyDeviceToHost));
  (void)cudaGetLastError();
  ASSERT_CUDA(cudaFreeHost(p));
  ASSERT_CUDA(cudaFree(d));
}

TEST_F(Runtime, CopiesOutsideAnAllocationAreErrorsNamingIt) {
  char* d = nullptr;
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&d), 100));
  std::vector<char> h(256, 1);
  cudaError_t e = cudaMemcpy(d + 90, h.data(), 40, cudaMemcpyHostToDevice);
  EXPECT_EQ(e, cudaErrorInvalidValue);
  std::string msg = cudaGetErrorString(e);
  EXPECT_NE(msg.find("30 bytes past the end of device allocation"), std::string::npos) << msg;
  EXPECT_NE(msg.find("100 bytes"), std::string::npos) << msg;
  e = cudaMemcpy(h.data(), d, 101, cudaMemcpyDeviceToHost);
  EXPECT_EQ(e, cudaErrorInvalidValue);
  EXPECT_NE(std::string(cudaGetErrorString(e)).find("1 bytes past the end"), std::string::npos);
  EXPECT_EQ(cudaMemset(d - 4, 0, 8), cudaErrorInvalidValue);
  EXPECT_NE(std::string(cudaGetErrorString(cudaErrorInvalidValue)).find("4 bytes before the start"), std::string::npos);
  EXPECT_EQ(cudaMemsetAsync(d, 0, 101, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(h.data(), 0, 8), cudaErrorInvalidValue);       // not device memory
  ASSERT_CUDA(cudaMemcpy(d, h.data(), 100, cudaMemcpyHostToDevice));  // exactly fits
  ASSERT_CUDA(cudaFree(d));
  // After the free the pointer is a freed allocation, never silently host memory.
  e = cudaMemcpy(h.data(), d, 4, cudaMemcpyDeviceToHost);
  EXPECT_EQ(e, cudaErrorInvalidValue);
  EXPECT_NE(std::string(cudaGetErrorString(e)).find("freed"), std::string::npos);
  EXPECT_EQ(cudaFree(d), cudaErrorInvalidValue);  // double free
  EXPECT_NE(std::string(cudaGetErrorString(cudaErrorInvalidValue)).find("double free"), std::string::npos);
  (void)cudaGetLastError();
}

TEST_F(Runtime, PointerKindsAndPinnedMemory) {
  void* d = nullptr;
  void* p = nullptr;
  std::vector<char> pageable(4096);
  ASSERT_CUDA(cudaMalloc(&d, 64));
  ASSERT_CUDA(cudaHostAlloc(&p, 1000, cudaHostAllocDefault));
  EXPECT_EQ(cudl_emu::pointer_kind(d), cudl_emu::PtrKind::Device);
  EXPECT_EQ(cudl_emu::pointer_kind(p), cudl_emu::PtrKind::PinnedHost);
  EXPECT_EQ(cudl_emu::pointer_kind(static_cast<char*>(p) + 999), cudl_emu::PtrKind::PinnedHost);
  EXPECT_EQ(cudl_emu::pointer_kind(pageable.data()), cudl_emu::PtrKind::PageableHost);
  EXPECT_TRUE(cudl_emu::is_device_range(d, 64));
  EXPECT_FALSE(cudl_emu::is_device_range(d, 65));
  cudaPointerAttributes a;
  ASSERT_CUDA(cudaPointerGetAttributes(&a, d));
  EXPECT_EQ(a.type, cudaMemoryTypeDevice);
  ASSERT_CUDA(cudaPointerGetAttributes(&a, p));
  EXPECT_EQ(a.type, cudaMemoryTypeHost);
  ASSERT_CUDA(cudaPointerGetAttributes(&a, pageable.data()));
  EXPECT_EQ(a.type, cudaMemoryTypeUnregistered);
  // Registering pageable memory makes it pinned until unregistered.
  ASSERT_CUDA(cudaHostRegister(pageable.data(), pageable.size(), cudaHostRegisterDefault));
  EXPECT_EQ(cudl_emu::pointer_kind(pageable.data() + 100), cudl_emu::PtrKind::PinnedHost);
  EXPECT_EQ(cudaHostRegister(pageable.data() + 8, 16, 0), cudaErrorHostMemoryAlreadyRegistered);
  EXPECT_EQ(cudaFreeHost(pageable.data()), cudaErrorInvalidValue);
  ASSERT_CUDA(cudaHostUnregister(pageable.data()));
  EXPECT_EQ(cudaHostUnregister(pageable.data()), cudaErrorHostMemoryNotRegistered);
  EXPECT_EQ(cudl_emu::pointer_kind(pageable.data()), cudl_emu::PtrKind::PageableHost);
  EXPECT_EQ(cudaFreeHost(pageable.data()), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  size_t free_before = 0, total = 0, free_after = 0;
  ASSERT_CUDA(cudaMemGetInfo(&free_before, &total));
  void* big = nullptr;
  ASSERT_CUDA(cudaMalloc(&big, 1 << 20));
  ASSERT_CUDA(cudaMemGetInfo(&free_after, &total));
  EXPECT_EQ(free_before - free_after, size_t(1) << 20);
  EXPECT_GE(total, free_before);
  ASSERT_CUDA(cudaFree(big));
  ASSERT_CUDA(cudaFreeHost(p));
  ASSERT_CUDA(cudaFree(d));
  EXPECT_EQ(counters().host_mallocs, 1u);
  EXPECT_EQ(counters().host_frees, 1u);
}

TEST_F(Runtime, StreamsAreLazyInOrderQueues) {
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::vector<int> order;
  ASSERT_CUDA(enqueue(s, WorkKind::Host, "first", [&] { order.push_back(1); }));
  ASSERT_CUDA(enqueue(s, WorkKind::Host, "second", [&] { order.push_back(2); }));
  ASSERT_CUDA(cudaLaunchHostFunc(
      s, [](void* v) { static_cast<std::vector<int>*>(v)->push_back(3); }, &order));
  EXPECT_TRUE(order.empty()) << "work ran before anything synchronised";
  EXPECT_EQ(cudaStreamQuery(s), cudaErrorNotReady);
  EXPECT_TRUE(order.empty());
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not-ready is no error
  ASSERT_CUDA(cudaStreamSynchronize(s));
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(cudaStreamQuery(s), cudaSuccess);
  // A query that keeps being asked completes the work (polling loops terminate).
  ASSERT_CUDA(enqueue(s, WorkKind::Host, "fourth", [&] { order.push_back(4); }));
  int polls = 0;
  while (cudaStreamQuery(s) == cudaErrorNotReady) ++polls;
  EXPECT_EQ(polls, 1);
  EXPECT_EQ(order.back(), 4);
  ASSERT_CUDA(cudaStreamDestroy(s));
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
}

TEST_F(Runtime, DestroyedStreamStillRunsItsWorkAtTheNextSync) {
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreate(&s));
  bool ran = false;
  ASSERT_CUDA(enqueue(s, WorkKind::Host, "late", [&] { ran = true; }));
  ASSERT_CUDA(cudaStreamDestroy(s));
  EXPECT_FALSE(ran);
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_TRUE(ran);
}

// Planted bug: reading a pinned buffer after cudaMemcpyAsync without synchronising.
TEST_F(Runtime, PinnedReadWithoutSyncSeesStaleData) {
  const size_t n = 128;
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int* d = nullptr;
  int* pinned = nullptr;
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(int)));
  ASSERT_CUDA(cudaMallocHost(reinterpret_cast<void**>(&pinned), n * sizeof(int)));
  std::vector<int> src(n);
  for (size_t i = 0; i < n; ++i) src[i] = static_cast<int>(i) + 1;
  ASSERT_CUDA(cudaMemcpy(d, src.data(), n * sizeof(int), cudaMemcpyHostToDevice));
  for (size_t i = 0; i < n; ++i) pinned[i] = -7;
  ASSERT_CUDA(cudaMemcpyAsync(pinned, d, n * sizeof(int), cudaMemcpyDeviceToHost, s));
  // The bug: the host reads without cudaStreamSynchronize. It sees the old contents.
  EXPECT_EQ(pinned[0], -7);
  EXPECT_EQ(pinned[n - 1], -7);
  ASSERT_CUDA(cudaStreamSynchronize(s));
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(pinned[i], src[i]) << i;
  // Host-to-device from pinned memory reads the buffer when the copy runs, not at the call.
  for (size_t i = 0; i < n; ++i) pinned[i] = 100;
  ASSERT_CUDA(cudaMemcpyAsync(d, pinned, n * sizeof(int), cudaMemcpyHostToDevice, s));
  for (size_t i = 0; i < n; ++i) pinned[i] = 200;  // a race on a real GPU too
  ASSERT_CUDA(cudaStreamSynchronize(s));
  std::vector<int> back(n);
  ASSERT_CUDA(cudaMemcpy(back.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost));
  EXPECT_EQ(back[0], 200);
  ASSERT_CUDA(cudaFreeHost(pinned));
  ASSERT_CUDA(cudaFree(d));
  ASSERT_CUDA(cudaStreamDestroy(s));
}

TEST_F(Runtime, PageableAsyncCopiesFollowTheDocumentedSemantics) {
  const size_t n = 64;
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreate(&s));
  int* d = nullptr;
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(int)));
  std::vector<int> h(n, 5);
  // Pageable source: staged at the call, so a later host write is not seen by the device.
  ASSERT_CUDA(cudaMemcpyAsync(d, h.data(), n * sizeof(int), cudaMemcpyHostToDevice, s));
  std::fill(h.begin(), h.end(), 9);
  // Pageable destination: the call returns only once the copy has completed.
  std::vector<int> out(n, 0);
  ASSERT_CUDA(cudaMemcpyAsync(out.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost, s));
  EXPECT_EQ(out, std::vector<int>(n, 5));
  ASSERT_CUDA(cudaFree(d));
  ASSERT_CUDA(cudaStreamDestroy(s));
}

// Two streams: producer writes, consumer copies the result out.
struct TwoStreams : Runtime {
  void SetUp() override {
    Runtime::SetUp();
    ASSERT_CUDA(cudaStreamCreateWithFlags(&producer, cudaStreamNonBlocking));
    ASSERT_CUDA(cudaStreamCreateWithFlags(&consumer, cudaStreamNonBlocking));
    ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&d), n));
    ASSERT_CUDA(cudaMallocHost(reinterpret_cast<void**>(&pinned), n));
    std::memset(pinned, 0, n);
    ASSERT_CUDA(cudaEventCreate(&ready));
  }
  void TearDown() override {
    EXPECT_EQ(cudaEventDestroy(ready), cudaSuccess);
    EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
    EXPECT_EQ(cudaFree(d), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(producer), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(consumer), cudaSuccess);
    Runtime::TearDown();
  }
  static constexpr size_t n = 256;
  cudaStream_t producer = nullptr, consumer = nullptr;
  unsigned char* d = nullptr;
  unsigned char* pinned = nullptr;
  cudaEvent_t ready = nullptr;
};

TEST_F(TwoStreams, WaitOnAnEventOrdersTheConsumerAfterTheProducer) {
  ASSERT_CUDA(cudaMemsetAsync(d, 7, n, producer));
  ASSERT_CUDA(cudaEventRecord(ready, producer));
  ASSERT_CUDA(cudaStreamWaitEvent(consumer, ready, 0));
  ASSERT_CUDA(cudaMemcpyAsync(pinned, d, n, cudaMemcpyDeviceToHost, consumer));
  ASSERT_CUDA(cudaStreamSynchronize(consumer));  // only the consumer: the wait pulls the producer
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(pinned[i], 7) << i;
  EXPECT_EQ(cudaEventQuery(ready), cudaSuccess);
}

// Planted bug: the consumer does not wait for the producer's event.
TEST_F(TwoStreams, WithoutTheWaitTheConsumerRunsFirstAndSeesStaleData) {
  ASSERT_CUDA(cudaMemsetAsync(d, 7, n, producer));
  ASSERT_CUDA(cudaEventRecord(ready, producer));
  ASSERT_CUDA(cudaMemcpyAsync(pinned, d, n, cudaMemcpyDeviceToHost, consumer));
  ASSERT_CUDA(cudaStreamSynchronize(consumer));
  EXPECT_EQ(pinned[0], 0xFF) << "the consumer saw the producer's write without waiting for it";
  EXPECT_EQ(cudaEventQuery(ready), cudaErrorNotReady);
  ASSERT_CUDA(cudaEventSynchronize(ready));
  EXPECT_EQ(cudaEventQuery(ready), cudaSuccess);
  ASSERT_CUDA(cudaMemcpyAsync(pinned, d, n, cudaMemcpyDeviceToHost, consumer));
  ASSERT_CUDA(cudaStreamSynchronize(consumer));
  EXPECT_EQ(pinned[0], 7);
}

TEST_F(TwoStreams, BlockingCopyWaitsForBlockingStreamsOnly) {
  cudaStream_t blocking;
  ASSERT_CUDA(cudaStreamCreate(&blocking));
  ASSERT_CUDA(cudaMemsetAsync(d, 3, n / 2, blocking));          // legacy semantics: waited for
  ASSERT_CUDA(cudaMemsetAsync(d + n / 2, 4, n / 2, producer));  // non-blocking: not waited for
  std::vector<unsigned char> h(n);
  ASSERT_CUDA(cudaMemcpy(h.data(), d, n, cudaMemcpyDeviceToHost));
  EXPECT_EQ(h[0], 3);
  EXPECT_EQ(h[n - 1], 0xFF);
  ASSERT_CUDA(cudaStreamDestroy(blocking));
}

TEST_F(TwoStreams, LegacyStreamWorkWaitsForEarlierBlockingStreamWork) {
  cudaStream_t blocking;
  ASSERT_CUDA(cudaStreamCreate(&blocking));
  std::vector<int> order;
  ASSERT_CUDA(enqueue(blocking, WorkKind::Host, "a", [&] { order.push_back(1); }));
  ASSERT_CUDA(enqueue(nullptr, WorkKind::Host, "legacy", [&] { order.push_back(2); }));
  ASSERT_CUDA(enqueue(blocking, WorkKind::Host, "b", [&] { order.push_back(3); }));
  ASSERT_CUDA(cudaStreamSynchronize(blocking));  // b waits for the legacy item, which waits for a
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  ASSERT_CUDA(cudaStreamDestroy(blocking));
}

TEST_F(TwoStreams, EventTimesArePlausible) {
  cudaEvent_t start, stop, untimed;
  ASSERT_CUDA(cudaEventCreate(&start));
  ASSERT_CUDA(cudaEventCreate(&stop));
  ASSERT_CUDA(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming));
  float ms = -1;
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaErrorInvalidResourceHandle);  // never recorded
  ASSERT_CUDA(cudaEventRecord(start, producer));
  ASSERT_CUDA(
      enqueue(producer, WorkKind::Host, "sleep", [] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); }));
  ASSERT_CUDA(cudaEventRecord(stop, producer));
  ASSERT_CUDA(cudaEventRecord(untimed, producer));
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, stop), cudaErrorNotReady);
  ASSERT_CUDA(cudaEventSynchronize(stop));
  ASSERT_CUDA(cudaEventElapsedTime(&ms, start, stop));
  EXPECT_GE(ms, 15.0f);
  EXPECT_LT(ms, 5000.0f);
  ASSERT_CUDA(cudaEventElapsedTime(&ms, start, start));
  EXPECT_EQ(ms, 0.0f);
  ASSERT_CUDA(cudaEventSynchronize(untimed));
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, untimed), cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
  for (cudaEvent_t e : {start, stop, untimed}) ASSERT_CUDA(cudaEventDestroy(e));
  EXPECT_EQ(cudaEventRecord(start, producer), cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
}

// ---- graphs ----------------------------------------------------------------------------------------

// What the launcher does: copy the argument into the queued work at launch time.
void launch_store(cudaStream_t s, int* out, int value) {
  ASSERT_CUDA(enqueue(s, WorkKind::Kernel, "store_kernel", [out, value] { *out = value; }));
}

TEST_F(Runtime, GraphReplayUsesTheArgumentsCopiedAtCapture) {
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int* out = nullptr;
  ASSERT_CUDA(cudaMallocHost(reinterpret_cast<void**>(&out), sizeof(int)));
  *out = 0;
  int host_value = 1;
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  cudaStreamCaptureStatus status;
  ASSERT_CUDA(cudaStreamIsCapturing(s, &status));
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  EXPECT_TRUE(cudl_emu::is_capturing(s));
  launch_store(s, out, host_value);
  unsigned long long id = 0;
  cudaGraph_t building = nullptr;
  ASSERT_CUDA(cudaStreamGetCaptureInfo(s, &status, &id, &building));
  EXPECT_NE(building, nullptr);
  EXPECT_NE(id, 0u);
  size_t so_far = 0;
  ASSERT_CUDA(cudaGraphGetNodes(building, nullptr, &so_far));
  EXPECT_EQ(so_far, 1u);
  cudaGraph_t graph = nullptr;
  ASSERT_CUDA(cudaStreamEndCapture(s, &graph));
  ASSERT_NE(graph, nullptr);
  ASSERT_CUDA(cudaStreamIsCapturing(s, &status));
  EXPECT_EQ(status, cudaStreamCaptureStatusNone);
  ASSERT_CUDA(cudaStreamSynchronize(s));
  EXPECT_EQ(*out, 0) << "captured work must not run during capture";
  size_t nodes = 0;
  ASSERT_CUDA(cudaGraphGetNodes(graph, nullptr, &nodes));
  EXPECT_EQ(nodes, 1u);
  cudaGraphExec_t exec = nullptr;
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));

  host_value = 2;  // planted bug: the host changes the by-value argument after capture
  ASSERT_CUDA(cudaGraphLaunch(exec, s));
  EXPECT_EQ(*out, 0);  // lazy: nothing ran yet
  ASSERT_CUDA(cudaStreamSynchronize(s));
  EXPECT_EQ(*out, 1) << "replay must use the value copied at capture time";
  *out = 0;
  ASSERT_CUDA(cudaGraphLaunch(exec, s));
  ASSERT_CUDA(cudaGraphLaunch(exec, s));
  ASSERT_CUDA(cudaStreamSynchronize(s));
  EXPECT_EQ(*out, 1);
  EXPECT_EQ(counters().graph_launches, 3u);
  EXPECT_EQ(counters().kernel_launches, 3u);
  ASSERT_CUDA(cudaGraphExecDestroy(exec));
  ASSERT_CUDA(cudaGraphDestroy(graph));
  EXPECT_EQ(cudaGraphLaunch(exec, s), cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
  ASSERT_CUDA(cudaFreeHost(out));
  ASSERT_CUDA(cudaStreamDestroy(s));
}

__global__ void fill_kernel(int* out, int value, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = value;
}

// The project's rule for per-step values: read them from device memory, so replays see updates.
__global__ void fill_from_device_kernel(int* out, const int* value, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = *value;
}

std::vector<int> download(const int* d, int n) {
  std::vector<int> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

// Planted bug with a real kernel: a by-value kernel argument changed by the host after capture.
TEST_F(Runtime, GraphReplayOfAKernelUsesTheValueCapturedAtLaunch) {
  const int n = 100;
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int *out = nullptr, *value = nullptr;
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&out), n * sizeof(int)));
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&value), sizeof(int)));
  int step = 1;
  ASSERT_CUDA(cudaMemcpy(value, &step, sizeof(int), cudaMemcpyHostToDevice));
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  CUDL_LAUNCH(fill_kernel, dim3(4), dim3(32), 0, s)(out, step, n);
  ASSERT_CUDA(cudaGetLastError());
  cudaGraph_t graph;
  ASSERT_CUDA(cudaStreamEndCapture(s, &graph));
  cudaGraphExec_t exec;
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  ASSERT_CUDA(cudaGraphDestroy(graph));  // the exec outlives its graph

  step = 2;  // the bug: the next training step's value never reaches the captured kernel
  ASSERT_CUDA(cudaGraphLaunch(exec, s));
  ASSERT_CUDA(cudaStreamSynchronize(s));
  EXPECT_EQ(download(out, n), std::vector<int>(n, 1));
  ASSERT_CUDA(cudaGraphExecDestroy(exec));

  // The fix: the kernel reads the value from device memory, which the host updates each step.
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  CUDL_LAUNCH(fill_from_device_kernel, dim3(4), dim3(32), 0, s)(out, value, n);
  ASSERT_CUDA(cudaStreamEndCapture(s, &graph));
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (step = 3; step < 5; ++step) {
    ASSERT_CUDA(cudaMemcpyAsync(value, &step, sizeof(int), cudaMemcpyHostToDevice, s));
    ASSERT_CUDA(cudaGraphLaunch(exec, s));
    ASSERT_CUDA(cudaStreamSynchronize(s));
    EXPECT_EQ(download(out, n), std::vector<int>(n, step));
  }
  EXPECT_EQ(counters().graph_launches, 3u);
  EXPECT_EQ(counters().kernel_launches, 3u);
  EXPECT_EQ(counters().threads, 3u * 128u);
  ASSERT_CUDA(cudaGraphExecDestroy(exec));
  ASSERT_CUDA(cudaGraphDestroy(graph));
  ASSERT_CUDA(cudaFree(out));
  ASSERT_CUDA(cudaFree(value));
  ASSERT_CUDA(cudaStreamDestroy(s));
}

// A kernel's output copied to pinned memory: stale until the stream is synchronised.
TEST_F(Runtime, KernelOutputInPinnedMemoryNeedsASync) {
  const int n = 64;
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int* d = nullptr;
  int* pinned = nullptr;
  ASSERT_CUDA(cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(int)));
  ASSERT_CUDA(cudaMallocHost(reinterpret_cast<void**>(&pinned), n * sizeof(int)));
  for (int i = 0; i < n; ++i) pinned[i] = 0;
  CUDL_LAUNCH(fill_kernel, dim3(2), dim3(32), 0, s)(d, 42, n);
  ASSERT_CUDA(cudaMemcpyAsync(pinned, d, n * sizeof(int), cudaMemcpyDeviceToHost, s));
  EXPECT_EQ(pinned[0], 0);  // the planted bug: no synchronisation before the host read
  EXPECT_EQ(counters().kernel_launches, 0u);
  ASSERT_CUDA(cudaStreamSynchronize(s));
  EXPECT_EQ(pinned[0], 42);
  EXPECT_EQ(pinned[n - 1], 42);
  EXPECT_EQ(counters().kernel_launches, 1u);
  ASSERT_CUDA(cudaFreeHost(pinned));
  ASSERT_CUDA(cudaFree(d));
  ASSERT_CUDA(cudaStreamDestroy(s));
}

TEST_F(Runtime, SynchronisingDuringCaptureInvalidatesIt) {
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreate(&s));
  int x = 0;
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  launch_store(s, &x, 5);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorStreamCaptureUnsupported);
  cudaStreamCaptureStatus status;
  ASSERT_CUDA(cudaStreamIsCapturing(s, &status));
  EXPECT_EQ(status, cudaStreamCaptureStatusInvalidated);
  EXPECT_EQ(enqueue(s, WorkKind::Kernel, "after", [] {}), cudaErrorStreamCaptureInvalidated);
  cudaGraph_t g = reinterpret_cast<cudaGraph_t>(0x1234);
  EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(g, nullptr);
  EXPECT_EQ(x, 0);
  (void)cudaGetLastError();

  // Blocking calls are refused while any global-mode capture is active.
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  void* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, 16), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
  // The legacy stream cannot be used while a blocking stream captures.
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  EXPECT_EQ(enqueue(nullptr, WorkKind::Kernel, "legacy", [] {}), cudaErrorStreamCaptureImplicit);
  EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
  // Relaxed mode permits cudaMalloc.
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
  ASSERT_CUDA(cudaMalloc(&d, 16));
  ASSERT_CUDA(cudaStreamEndCapture(s, &g));
  ASSERT_CUDA(cudaGraphDestroy(g));
  ASSERT_CUDA(cudaFree(d));
  // Another thread's capture restricts this thread only when it is Global: a ThreadLocal one (what
  // cudl and data-parallel ranks as threads use) lets other threads allocate and copy, and stays valid.
  for (cudaStreamCaptureMode mode : {cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeGlobal}) {
    ASSERT_CUDA(cudaStreamBeginCapture(s, mode));
    cudaError_t other = cudaSuccess;
    std::thread t([&] {
      void* p = nullptr;
      other = cudaMalloc(&p, 16);
      if (other == cudaSuccess) other = cudaFree(p);
      (void)cudaGetLastError();
    });
    t.join();
    const cudaError_t end = cudaStreamEndCapture(s, &g);
    if (mode == cudaStreamCaptureModeThreadLocal) {
      EXPECT_EQ(other, cudaSuccess);
      ASSERT_CUDA(end);
      ASSERT_CUDA(cudaGraphDestroy(g));
    } else {
      EXPECT_EQ(other, cudaErrorStreamCaptureUnsupported);
      EXPECT_EQ(end, cudaErrorStreamCaptureInvalidated);
    }
    (void)cudaGetLastError();
  }
  EXPECT_EQ(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorIllegalState);
  (void)cudaGetLastError();
  // Destroying a stream mid-capture abandons the capture: blocking calls work again.
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  ASSERT_CUDA(cudaStreamDestroy(s));
  ASSERT_CUDA(cudaMalloc(&d, 16));
  ASSERT_CUDA(cudaFree(d));
}

TEST_F(Runtime, CaptureForksAndJoinsThroughEvents) {
  cudaStream_t s1, s2;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  cudaEvent_t fork, join;
  ASSERT_CUDA(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  ASSERT_CUDA(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
  std::vector<int> order;
  ASSERT_CUDA(cudaStreamBeginCapture(s1, cudaStreamCaptureModeGlobal));
  ASSERT_CUDA(enqueue(s1, WorkKind::Kernel, "a", [&] { order.push_back(1); }));
  ASSERT_CUDA(cudaEventRecord(fork, s1));
  ASSERT_CUDA(cudaStreamWaitEvent(s2, fork, 0));
  EXPECT_TRUE(cudl_emu::is_capturing(s2));
  ASSERT_CUDA(enqueue(s2, WorkKind::Kernel, "b", [&] { order.push_back(2); }));
  ASSERT_CUDA(cudaEventRecord(join, s2));
  ASSERT_CUDA(cudaStreamWaitEvent(s1, join, 0));
  ASSERT_CUDA(enqueue(s1, WorkKind::Kernel, "c", [&] { order.push_back(3); }));
  cudaGraph_t g;
  ASSERT_CUDA(cudaStreamEndCapture(s1, &g));
  EXPECT_FALSE(cudl_emu::is_capturing(s2));
  size_t nodes = 0;
  ASSERT_CUDA(cudaGraphGetNodes(g, nullptr, &nodes));
  EXPECT_EQ(nodes, 3u);
  cudaGraphExec_t x;
  ASSERT_CUDA(cudaGraphInstantiateWithFlags(&x, g, 0));
  ASSERT_CUDA(cudaGraphLaunch(x, s1));
  ASSERT_CUDA(cudaStreamSynchronize(s1));
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  ASSERT_CUDA(cudaGraphExecDestroy(x));
  ASSERT_CUDA(cudaGraphDestroy(g));
  ASSERT_CUDA(cudaEventDestroy(fork));
  ASSERT_CUDA(cudaEventDestroy(join));
  ASSERT_CUDA(cudaStreamDestroy(s1));
  ASSERT_CUDA(cudaStreamDestroy(s2));
}

TEST_F(Runtime, CapturedMallocAsyncIsFreshAtEveryReplay) {
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  int* seen = nullptr;
  ASSERT_CUDA(cudaMallocHost(reinterpret_cast<void**>(&seen), 2 * sizeof(int)));
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  int* tmp = nullptr;
  ASSERT_CUDA(cudaMallocAsync(reinterpret_cast<void**>(&tmp), 2 * sizeof(int), s));
  ASSERT_NE(tmp, nullptr);
  ASSERT_CUDA(cudaMemcpyAsync(seen, tmp, 2 * sizeof(int), cudaMemcpyDeviceToHost, s));
  ASSERT_CUDA(cudaMemsetAsync(tmp, 0, 2 * sizeof(int), s));
  ASSERT_CUDA(cudaFreeAsync(tmp, s));
  cudaGraph_t g;
  ASSERT_CUDA(cudaStreamEndCapture(s, &g));
  cudaGraphExec_t x;
  ASSERT_CUDA(cudaGraphInstantiate(&x, g, 0));
  for (int replay = 0; replay < 2; ++replay) {
    seen[0] = seen[1] = 0;
    ASSERT_CUDA(cudaGraphLaunch(x, s));
    ASSERT_CUDA(cudaStreamSynchronize(s));
    EXPECT_EQ(seen[0], -1) << "replay " << replay;  // 0xFFFFFFFF: fresh again, not the old zeros
  }
  ASSERT_CUDA(cudaGraphExecDestroy(x));
  ASSERT_CUDA(cudaGraphDestroy(g));
  ASSERT_CUDA(cudaFreeHost(seen));
  ASSERT_CUDA(cudaStreamDestroy(s));
}

TEST_F(Runtime, MallocAsyncAndFreeAsyncAreStreamOrdered) {
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreate(&s));
  float* d = nullptr;
  ASSERT_CUDA(cudaMallocAsync(reinterpret_cast<void**>(&d), 64, s));
  ASSERT_CUDA(cudaMemsetAsync(d, 0, 64, s));
  ASSERT_CUDA(cudaFreeAsync(d, s));
  EXPECT_EQ(cudaFreeAsync(d, s), cudaErrorInvalidValue);  // already queued for freeing
  (void)cudaGetLastError();
  EXPECT_TRUE(cudl_emu::is_device_range(d, 64));  // not freed before the stream reaches it
  ASSERT_CUDA(cudaStreamSynchronize(s));
  EXPECT_FALSE(cudl_emu::is_device_range(d, 64));
  EXPECT_EQ(counters().mallocs, 1u);
  EXPECT_EQ(counters().frees, 1u);
  EXPECT_EQ(counters().memsets, 1u);
  ASSERT_CUDA(cudaStreamDestroy(s));
}

// ---- errors ----------------------------------------------------------------------------------------

TEST_F(Runtime, StickyErrorsPersistUntilReset) {
  cudl_emu::record_error(cudaErrorIllegalAddress, "kernel 'bad_kernel' wrote out of bounds", true);
  EXPECT_EQ(cudl_emu::sticky_error(), cudaErrorIllegalAddress);
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalAddress);
  EXPECT_EQ(cudaGetLastError(), cudaErrorIllegalAddress);  // not cleared by reading it
  EXPECT_EQ(cudaPeekAtLastError(), cudaErrorIllegalAddress);
  void* d = nullptr;
  EXPECT_EQ(cudaMalloc(&d, 16), cudaErrorIllegalAddress);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
  EXPECT_EQ(enqueue(nullptr, WorkKind::Kernel, "k", [] {}), cudaErrorIllegalAddress);
  const std::string msg = cudaGetErrorString(cudaErrorIllegalAddress);
  EXPECT_EQ(msg, "an illegal memory access was encountered (kernel 'bad_kernel' wrote out of bounds)");
  EXPECT_EQ(cudl_emu::last_error_detail(), "kernel 'bad_kernel' wrote out of bounds");
  cudl_emu::reset_device_state();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_STREQ(cudaGetErrorString(cudaErrorIllegalAddress), "an illegal memory access was encountered");
  ASSERT_CUDA(cudaMalloc(&d, 16));
  ASSERT_CUDA(cudaFree(d));
}

TEST_F(Runtime, AFailingWorkItemIsAStickyLaunchFailureAndLaterWorkDoesNotRun) {
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreate(&s));
  bool later = false;
  ASSERT_CUDA(enqueue(s, WorkKind::Kernel, "throwing_kernel", [] { throw std::runtime_error("boom"); }));
  ASSERT_CUDA(enqueue(s, WorkKind::Kernel, "later_kernel", [&] { later = true; }));
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorLaunchFailure);
  EXPECT_FALSE(later);
  EXPECT_NE(std::string(cudaGetErrorString(cudaErrorLaunchFailure)).find("throwing_kernel"), std::string::npos);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorLaunchFailure);
  cudl_emu::reset_device_state();
  ASSERT_CUDA(cudaStreamDestroy(s));
}

TEST_F(Runtime, CurrentWorkNamesTheRunningItem) {
  EXPECT_EQ(cudl_emu::current_work(), nullptr);
  std::string seen;
  ASSERT_CUDA(enqueue(nullptr, WorkKind::Library, "cublasLtMatmul", [&] { seen = cudl_emu::current_work(); }));
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(seen, "cublasLtMatmul");
  EXPECT_EQ(cudl_emu::current_work(), nullptr);
  EXPECT_EQ(counters().library_calls, 1u);
  EXPECT_EQ(counters().kernel_launches, 0u);
}

TEST_F(Runtime, CountersCountSyncsAndKernels) {
  cudaStream_t s;
  ASSERT_CUDA(cudaStreamCreate(&s));
  ASSERT_CUDA(enqueue(s, WorkKind::Kernel, "k1", [] { cudl_emu::count_kernel(256, 3); }));
  ASSERT_CUDA(enqueue(s, WorkKind::Kernel, "k2", [] { cudl_emu::count_kernel(64, 0); }));
  EXPECT_EQ(counters().kernel_launches, 0u);  // counted when executed
  ASSERT_CUDA(cudaStreamSynchronize(s));
  ASSERT_CUDA(cudaDeviceSynchronize());
  const cudl_emu::Counters c = counters();
  EXPECT_EQ(c.kernel_launches, 2u);
  EXPECT_EQ(c.threads, 320u);
  EXPECT_EQ(c.barriers, 3u);
  EXPECT_EQ(c.syncs, 2u);
  ASSERT_CUDA(cudaStreamDestroy(s));
}

}  // namespace
