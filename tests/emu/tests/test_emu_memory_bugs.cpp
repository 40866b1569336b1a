// tests/emu/tests/test_emu_memory_bugs.cpp — planted memory bugs the emulator must catch: writes
// and reads past an allocation (guard pages, slack canaries), use after free, bad host copies.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "emu/emu.hpp"
#include "kernels/launch.cuh"

namespace {

// Off by one: thread n writes out[n], one element past the end.
__global__ void oob_write_kernel(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[i] = 1.0f;
}

// Off by one on the read side.
__global__ void oob_read_kernel(const float* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) out[0] += in[i];
}

// Writes the element before the start (a negative index).
__global__ void underflow_write_kernel(float* out) {
  if (threadIdx.x == 0) out[-1] = 2.0f;
}

__global__ void scale_kernel(const float* in, float* out, float factor, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = in[i] * factor;
}

float* device_floats(size_t n) {
  float* d = nullptr;
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&d), n * sizeof(float)), cudaSuccess);
  return d;
}

class MemoryBugs : public ::testing::Test {
 protected:
  void SetUp() override {
    ::testing::FLAGS_gtest_death_test_style = "threadsafe";
    cudl_emu::reset_device_state();
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  }
  void TearDown() override {
    EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
    cudl_emu::reset_device_state();
  }
  cudaStream_t stream = nullptr;
};

// The correct kernel on the same allocations runs clean: the death tests below fail for the bug.
TEST_F(MemoryBugs, InBoundsKernelRunsClean) {
  const int n = 64;
  float* in = device_floats(n);
  float* out = device_floats(n);
  std::vector<float> h(n);
  for (int i = 0; i < n; ++i) h[i] = static_cast<float>(i);
  ASSERT_EQ(cudaMemcpy(in, h.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  CUDL_LAUNCH(scale_kernel, dim3(2), dim3(32), 0, stream)(in, out, 3.0f, n);
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<float> r(n);
  ASSERT_EQ(cudaMemcpy(r.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < n; ++i) ASSERT_EQ(r[i], 3.0f * i) << i;
  ASSERT_EQ(cudaFree(in), cudaSuccess);
  ASSERT_EQ(cudaFree(out), cudaSuccess);
}

// Planted bug: a kernel writes one element past an allocation whose end touches the guard page.
TEST_F(MemoryBugs, WritePastTheEndFaultsAndNamesTheKernel) {
  EXPECT_DEATH(
      {
        const int n = 64;  // 256 bytes: the end of the allocation is the start of the guard page
        float* d = device_floats(n);
        CUDL_LAUNCH(oob_write_kernel, dim3(3), dim3(32), 0, stream)(d, n);
        cudaStreamSynchronize(stream);
      },
      "illegal memory access.*in kernel 'oob_write_kernel' \\(block \\(2,0,0\\) thread \\(0,0,0\\)\\): write at "
      "address 0x[0-9a-f]+ is 0 bytes past the end of "
      "device allocation #[0-9]+ \\(0x[0-9a-f]+, 256 bytes");
}

// Planted bug: the same off-by-one on an allocation whose size is not a multiple of 16: the write
// lands in the alignment slack and is caught by the canary check after the kernel.
TEST_F(MemoryBugs, WriteIntoTheSlackIsCaughtAfterTheKernel) {
  EXPECT_DEATH(
      {
        const int n = 5;  // 20 bytes, 12 bytes of slack before the guard page
        float* d = device_floats(n);
        CUDL_LAUNCH(oob_write_kernel, dim3(1), dim3(32), 0, stream)(d, n);
        cudaStreamSynchronize(stream);
      },
      "out-of-bounds write.*after 'oob_write_kernel' ran.*0 bytes past the end of device allocation #[0-9]+ "
      "\\(0x[0-9a-f]+, 20 bytes");
}

TEST_F(MemoryBugs, WriteBeforeTheStartIsCaught) {
  EXPECT_DEATH(
      {
        float* d = device_floats(64);
        CUDL_LAUNCH(underflow_write_kernel, dim3(1), dim3(32), 0, stream)(d);
        cudaStreamSynchronize(stream);
      },
      "out-of-bounds write.*'underflow_write_kernel'.*bytes before the start of device allocation");
  EXPECT_DEATH(
      {
        float* d = device_floats(1024);  // 4096 bytes: the start touches the leading guard page
        CUDL_LAUNCH(underflow_write_kernel, dim3(1), dim3(32), 0, stream)(d);
        cudaStreamSynchronize(stream);
      },
      "illegal memory access.*in kernel 'underflow_write_kernel.*write at address 0x[0-9a-f]+ is 4 bytes before "
      "the start of device allocation");
}

TEST_F(MemoryBugs, ReadPastTheEndFaults) {
  EXPECT_DEATH(
      {
        const int n = 64;
        float* in = device_floats(n);
        float* out = device_floats(1);
        CUDL_LAUNCH(oob_read_kernel, dim3(3), dim3(32), 0, stream)(in, out, n);
        cudaStreamSynchronize(stream);
      },
      "illegal memory access.*in kernel 'oob_read_kernel.*read at address 0x[0-9a-f]+ is 0 bytes past the end of "
      "device allocation");
}

// Planted bug: the kernel reads a buffer the host already freed.
TEST_F(MemoryBugs, ReadAfterFreeFaults) {
  EXPECT_DEATH(
      {
        const int n = 64;
        float* in = device_floats(n);
        float* out = device_floats(n);
        cudaFree(in);
        CUDL_LAUNCH(scale_kernel, dim3(2), dim3(32), 0, stream)(in, out, 2.0f, n);
        cudaStreamSynchronize(stream);
      },
      "illegal memory access.*in kernel 'scale_kernel.*read at address 0x[0-9a-f]+ is [0-9]+ bytes into freed device "
      "allocation #[0-9]+ .*freed by cudaFree \\(use after free\\)");
}

// Stream-ordered free: the kernel queued after cudaFreeAsync on the same stream reads freed memory.
TEST_F(MemoryBugs, UseAfterFreeAsyncFaults) {
  EXPECT_DEATH(
      {
        const int n = 64;
        float* in = nullptr;
        cudaMallocAsync(reinterpret_cast<void**>(&in), n * sizeof(float), stream);
        float* out = device_floats(n);
        cudaFreeAsync(in, stream);
        CUDL_LAUNCH(scale_kernel, dim3(2), dim3(32), 0, stream)(in, out, 2.0f, n);
        cudaStreamSynchronize(stream);
      },
      "in kernel 'scale_kernel.*freed by cudaFreeAsync \\(use after free\\)");
}

// Host code touching freed device memory is reported too (no kernel running).
TEST_F(MemoryBugs, HostDereferenceOfFreedDeviceMemoryFaults) {
  EXPECT_DEATH(
      {
        float* d = device_floats(16);
        cudaFree(d);
        volatile float x = d[3];
        (void)x;
      },
      "illegal memory access.*in host code: read at address 0x[0-9a-f]+ is 12 bytes into freed device allocation");
}

// Not a death: host copies past the end of an allocation are refused with an error naming it.
TEST_F(MemoryBugs, HostCopyPastTheEndIsAnError) {
  float* d = device_floats(10);
  std::vector<float> h(20, 1.0f);
  const cudaError_t e = cudaMemcpy(d, h.data(), 20 * sizeof(float), cudaMemcpyHostToDevice);
  EXPECT_EQ(e, cudaErrorInvalidValue);
  const std::string msg = cudaGetErrorString(e);
  EXPECT_NE(msg.find("runs 40 bytes past the end of device allocation"), std::string::npos) << msg;
  EXPECT_NE(msg.find("40 bytes, from cudaMalloc"), std::string::npos) << msg;
  EXPECT_EQ(cudaMemcpyAsync(h.data(), d + 5, 6 * sizeof(float), cudaMemcpyDeviceToHost, stream), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  // The memory next to the allocation was not touched: the in-range part is still NaN.
  std::vector<float> r(10, 0.0f);
  ASSERT_EQ(cudaMemcpy(r.data(), d, 10 * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (float v : r) EXPECT_TRUE(std::isnan(v));
  ASSERT_EQ(cudaFree(d), cudaSuccess);
}

// Reads of memory nobody initialised propagate as NaN through a kernel.
TEST_F(MemoryBugs, UninitialisedInputSurfacesAsNaN) {
  const int n = 40;
  float* in = device_floats(n);
  float* out = device_floats(n);
  ASSERT_EQ(cudaMemset(out, 0, n * sizeof(float)), cudaSuccess);
  CUDL_LAUNCH(scale_kernel, dim3(2), dim3(32), 0, stream)(in, out, 2.0f, n);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  std::vector<float> r(n);
  ASSERT_EQ(cudaMemcpy(r.data(), out, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < n; ++i) EXPECT_TRUE(std::isnan(r[i])) << i;
  ASSERT_EQ(cudaFree(in), cudaSuccess);
  ASSERT_EQ(cudaFree(out), cudaSuccess);
}

}  // namespace
