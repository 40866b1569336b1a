// tests/emu/tests/test_emu_devices.cpp — several emulated devices in one process (ctest runs this
// with CUDL_EMU_DEVICES=2): the current device per host thread, memory and streams per device,
// the launch and event rules CUDA states for multi-device programs, peer access and peer copies.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "emu/emu.hpp"
#include "kernels/launch.cuh"

namespace {

#define ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << cudaGetErrorString(cudaGetLastError())

__global__ void add_one(float* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.f;
}

class Devices : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    ASSERT_CUDA(cudaGetDeviceCount(&n));
    if (n < 2) GTEST_SKIP() << "needs CUDL_EMU_DEVICES=2 (ctest sets it); this run has " << n << " device(s)";
    cudl_emu::reset_device_state();
    ASSERT_CUDA(cudaSetDevice(0));
    (void)cudaGetLastError();
  }
  void TearDown() override {
    (void)cudaDeviceSynchronize();
    cudl_emu::reset_device_state();
    (void)cudaSetDevice(0);
  }
  // A device buffer of n floats on `device`, filled with `value`.
  float* make(int device, int n, float value) {
    int prev = 0;
    EXPECT_EQ(cudaGetDevice(&prev), cudaSuccess);
    EXPECT_EQ(cudaSetDevice(device), cudaSuccess);
    float* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, n * sizeof(float)), cudaSuccess);
    std::vector<float> h(n, value);
    EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cudaSetDevice(prev), cudaSuccess);
    return p;
  }
  std::vector<float> read(const float* p, int n) {
    std::vector<float> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

TEST_F(Devices, CurrentDeviceIsPerHostThread) {
  int d = -1;
  ASSERT_CUDA(cudaSetDevice(1));
  ASSERT_CUDA(cudaGetDevice(&d));
  EXPECT_EQ(d, 1);
  int other = -1;
  std::thread([&] { (void)cudaGetDevice(&other); }).join();
  EXPECT_EQ(other, 0) << "a new host thread starts on device 0";
  ASSERT_CUDA(cudaGetDevice(&d));
  EXPECT_EQ(d, 1);
  EXPECT_EQ(cudaSetDevice(2), cudaErrorInvalidDevice);
  EXPECT_NE(cudl_emu::last_error_detail().find("2 device(s)"), std::string::npos) << cudl_emu::last_error_detail();
  (void)cudaGetLastError();
  cudaDeviceProp p0, p1;
  ASSERT_CUDA(cudaGetDeviceProperties(&p0, 0));
  ASSERT_CUDA(cudaGetDeviceProperties(&p1, 1));
  EXPECT_NE(p0.pciBusID, p1.pciBusID);
  EXPECT_EQ(p0.multiProcessorCount, p1.multiProcessorCount);
}

TEST_F(Devices, MemoryBelongsToTheDeviceCurrentAtAllocation) {
  size_t free0 = 0, free1 = 0, free1_before = 0, total = 0;
  ASSERT_CUDA(cudaMemGetInfo(&free0, &total));
  ASSERT_CUDA(cudaSetDevice(1));
  ASSERT_CUDA(cudaMemGetInfo(&free1_before, &total));
  ASSERT_CUDA(cudaSetDevice(0));
  float* p = make(1, 1 << 20, 0.f);
  cudaPointerAttributes a{};
  ASSERT_CUDA(cudaPointerGetAttributes(&a, p));
  EXPECT_EQ(a.type, cudaMemoryTypeDevice);
  EXPECT_EQ(a.device, 1);
  size_t free0_after = 0;
  ASSERT_CUDA(cudaMemGetInfo(&free0_after, &total));
  EXPECT_EQ(free0_after, free0) << "device 1's allocation does not use device 0's memory";
  ASSERT_CUDA(cudaSetDevice(1));
  ASSERT_CUDA(cudaMemGetInfo(&free1, &total));
  EXPECT_EQ(free1, free1_before - (4u << 20));
  ASSERT_CUDA(cudaFree(p));
}

TEST_F(Devices, KernelOnAStreamOfAnotherDeviceIsAnInvalidResourceHandle) {
  float* x = make(0, 64, 1.f);
  cudaStream_t s0 = nullptr;
  ASSERT_CUDA(cudaStreamCreate(&s0));  // device 0's
  int sd = -1;
  ASSERT_CUDA(cudaStreamGetDevice(s0, &sd));
  EXPECT_EQ(sd, 0);
  ASSERT_CUDA(cudaSetDevice(1));
  CUDL_LAUNCH(add_one, 1, 64, 0, s0)(x, 64);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidResourceHandle);
  EXPECT_NE(cudl_emu::last_error_detail().find("device 1 is current"), std::string::npos)
      << cudl_emu::last_error_detail();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess) << "not sticky";
  // A copy on that stream is allowed from any device.
  std::vector<float> h(64, 5.f);
  ASSERT_CUDA(cudaMemcpyAsync(x, h.data(), 64 * sizeof(float), cudaMemcpyHostToDevice, s0));
  ASSERT_CUDA(cudaSetDevice(0));
  CUDL_LAUNCH(add_one, 1, 64, 0, s0)(x, 64);
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaStreamSynchronize(s0));
  EXPECT_EQ(read(x, 64), std::vector<float>(64, 6.f)) << "the refused launch did not run";
  ASSERT_CUDA(cudaStreamDestroy(s0));
  ASSERT_CUDA(cudaFree(x));
}

TEST_F(Devices, DefaultStreamIsTheCurrentDevicesOwn) {
  float* x = make(1, 32, 0.f);
  ASSERT_CUDA(cudaSetDevice(1));
  int sd = -1;
  ASSERT_CUDA(cudaStreamGetDevice(nullptr, &sd));
  EXPECT_EQ(sd, 1);
  CUDL_LAUNCH(add_one, 1, 32, 0, nullptr)(x, 32);
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(read(x, 32), std::vector<float>(32, 1.f));
  ASSERT_CUDA(cudaFree(x));
}

TEST_F(Devices, KernelTouchingAnotherDevicesMemoryFaultsUnlessPeerAccessIsOn) {
  float* x0 = make(0, 32, 0.f);
  ASSERT_CUDA(cudaSetDevice(1));
  CUDL_LAUNCH(add_one, 1, 32, 0, nullptr)(x0, 32);
  ASSERT_CUDA(cudaGetLastError());  // the launch itself is fine; the access faults when it runs
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorIllegalAddress);
  const std::string detail = cudl_emu::last_error_detail();
  EXPECT_NE(detail.find("add_one"), std::string::npos) << detail;
  EXPECT_NE(detail.find("runs on device 1"), std::string::npos) << detail;
  EXPECT_NE(detail.find("on device 0"), std::string::npos) << detail;
  cudl_emu::reset_device_state();

  int can = -1;
  ASSERT_CUDA(cudaDeviceCanAccessPeer(&can, 1, 0));
  EXPECT_EQ(can, 1);
  ASSERT_CUDA(cudaDeviceCanAccessPeer(&can, 1, 1));
  EXPECT_EQ(can, 0);
  EXPECT_EQ(cudaDeviceDisablePeerAccess(0), cudaErrorPeerAccessNotEnabled);
  ASSERT_CUDA(cudaDeviceEnablePeerAccess(0, 0));
  EXPECT_EQ(cudaDeviceEnablePeerAccess(0, 0), cudaErrorPeerAccessAlreadyEnabled);
  (void)cudaGetLastError();
  CUDL_LAUNCH(add_one, 1, 32, 0, nullptr)(x0, 32);
  ASSERT_CUDA(cudaGetLastError());
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(read(x0, 32), std::vector<float>(32, 1.f));
  ASSERT_CUDA(cudaDeviceDisablePeerAccess(0));
  ASSERT_CUDA(cudaFree(x0));
}

TEST_F(Devices, EventRecordNeedsTheStreamsDeviceWaitAndSyncDoNot) {
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  ASSERT_CUDA(cudaEventCreate(&e0));
  ASSERT_CUDA(cudaSetDevice(1));
  ASSERT_CUDA(cudaEventCreate(&e1));
  cudaStream_t s1 = nullptr;
  ASSERT_CUDA(cudaStreamCreate(&s1));
  EXPECT_EQ(cudaEventRecord(e0, s1), cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
  ASSERT_CUDA(cudaEventRecord(e1, s1));
  ASSERT_CUDA(cudaSetDevice(0));
  cudaStream_t s0 = nullptr;
  ASSERT_CUDA(cudaStreamCreate(&s0));
  ASSERT_CUDA(cudaStreamWaitEvent(s0, e1, 0));  // across devices: allowed
  ASSERT_CUDA(cudaEventRecord(e0, s0));
  ASSERT_CUDA(cudaEventSynchronize(e1));  // from device 0: allowed
  ASSERT_CUDA(cudaEventSynchronize(e0));
  float ms = 0;
  EXPECT_EQ(cudaEventElapsedTime(&ms, e0, e1), cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
  ASSERT_CUDA(cudaStreamDestroy(s0));
  ASSERT_CUDA(cudaStreamDestroy(s1));
  ASSERT_CUDA(cudaEventDestroy(e0));
  ASSERT_CUDA(cudaEventDestroy(e1));
}

TEST_F(Devices, PeerCopies) {
  float* a = make(0, 16, 3.f);
  float* b = make(1, 16, 0.f);
  ASSERT_CUDA(cudaMemcpyPeer(b, 1, a, 0, 16 * sizeof(float)));
  EXPECT_EQ(read(b, 16), std::vector<float>(16, 3.f));
  float* c = make(1, 16, 7.f);
  cudaStream_t s0 = nullptr;
  ASSERT_CUDA(cudaStreamCreate(&s0));
  ASSERT_CUDA(cudaMemcpyPeerAsync(a, 0, c, 1, 16 * sizeof(float), s0));
  ASSERT_CUDA(cudaStreamSynchronize(s0));
  EXPECT_EQ(read(a, 16), std::vector<float>(16, 7.f));
  EXPECT_EQ(cudaMemcpyPeer(b, 0, a, 0, 16 * sizeof(float)), cudaErrorInvalidValue) << "b is on device 1";
  EXPECT_EQ(cudaMemcpyPeer(b, 1, a, 2, 16 * sizeof(float)), cudaErrorInvalidDevice);
  (void)cudaGetLastError();
  ASSERT_CUDA(cudaStreamDestroy(s0));
  for (float* p : {a, b, c}) ASSERT_CUDA(cudaFree(p));
}

}  // namespace
