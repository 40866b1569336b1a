// tests/emu/tests/test_emu_nccl.cpp — the emulated NCCL subset on two emulated devices (ctest sets
// CUDL_EMU_DEVICES=2): ranks as threads and as communicators of one thread in a group, AllReduce
// (sum, avg) and Broadcast in stream order, and the errors that replace hangs.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "emu/emu.hpp"
#include "kernels/launch.cuh"

namespace {

#define ASSERT_CUDA(expr) ASSERT_EQ((expr), cudaSuccess) << cudaGetErrorString(cudaGetLastError())
#define ASSERT_NCCL(expr) ASSERT_EQ((expr), ncclSuccess) << ncclGetLastError(nullptr)

__global__ void scale(float* x, int n, float a) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= a;
}

constexpr int kN = 100;

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    ASSERT_CUDA(cudaGetDeviceCount(&n));
    if (n < 2) GTEST_SKIP() << "needs CUDL_EMU_DEVICES=2 (ctest sets it); this run has " << n << " device(s)";
  }
};

std::vector<float> read(const float* p) {
  std::vector<float> h(kN);
  EXPECT_EQ(cudaMemcpy(h.data(), p, kN * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

float* upload(const std::vector<float>& h) {
  float* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, h.size() * sizeof(float)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  return p;
}

TEST_F(Nccl, RanksAsThreadsAllReduceAndBroadcastInStreamOrder) {
  ncclUniqueId id;
  ASSERT_NCCL(ncclGetUniqueId(&id));
  std::vector<std::vector<float>> sum(2), avg(2), bcast(2);
  auto rank_main = [&](int rank) {
    ASSERT_CUDA(cudaSetDevice(rank));
    ncclComm_t comm = nullptr;
    ASSERT_NCCL(ncclCommInitRank(&comm, 2, id, rank));
    int dev = -1, r = -1, count = 0;
    ASSERT_NCCL(ncclCommCuDevice(comm, &dev));
    ASSERT_NCCL(ncclCommUserRank(comm, &r));
    ASSERT_NCCL(ncclCommCount(comm, &count));
    EXPECT_EQ(dev, rank);
    EXPECT_EQ(r, rank);
    EXPECT_EQ(count, 2);
    std::vector<float> h(kN);
    for (int i = 0; i < kN; ++i) h[i] = float(i + 1000 * rank);
    float* x = upload(h);
    float* y = nullptr;
    ASSERT_CUDA(cudaMalloc(&y, kN * sizeof(float)));
    cudaStream_t s = nullptr;
    ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    // Queued before the collective on the same stream: the reduction must see it.
    CUDL_LAUNCH(scale, 1, kN, 0, s)(x, kN, 2.f);
    ASSERT_NCCL(ncclAllReduce(x, y, kN, ncclFloat32, ncclSum, comm, s));
    ASSERT_CUDA(cudaStreamSynchronize(s));
    sum[rank] = read(y);
    ASSERT_NCCL(ncclAllReduce(x, x, kN, ncclFloat32, ncclAvg, comm, s));  // in place
    ASSERT_CUDA(cudaStreamSynchronize(s));
    avg[rank] = read(x);
    ASSERT_CUDA(cudaMemcpy(y, h.data(), kN * sizeof(float), cudaMemcpyHostToDevice));
    ASSERT_NCCL(ncclBroadcast(y, y, kN, ncclFloat32, /*root=*/1, comm, s));
    ASSERT_CUDA(cudaStreamSynchronize(s));
    bcast[rank] = read(y);
    ASSERT_CUDA(cudaStreamDestroy(s));
    ASSERT_CUDA(cudaFree(x));
    ASSERT_CUDA(cudaFree(y));
    ASSERT_NCCL(ncclCommDestroy(comm));
  };
  std::thread t1(rank_main, 1);
  rank_main(0);
  t1.join();
  (void)cudaSetDevice(0);
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_EQ(sum[rank].size(), size_t(kN));
    for (int i = 0; i < kN; ++i) {
      EXPECT_EQ(sum[rank][i], 2.f * i + 2.f * (i + 1000)) << "rank " << rank << " element " << i;
      EXPECT_EQ(avg[rank][i], (2.f * i + 2.f * (i + 1000)) / 2) << "rank " << rank << " element " << i;
      EXPECT_EQ(bcast[rank][i], float(i + 1000)) << "rank " << rank << " element " << i;
    }
  }
}

TEST_F(Nccl, InitAllAndAGroupFromOneThread) {
  ncclComm_t comms[2];
  const int devs[2] = {0, 1};
  ASSERT_NCCL(ncclCommInitAll(comms, 2, devs));
  float* x[2];
  cudaStream_t s[2];
  for (int d = 0; d < 2; ++d) {
    ASSERT_CUDA(cudaSetDevice(d));
    x[d] = upload(std::vector<float>(kN, float(d + 1)));
    ASSERT_CUDA(cudaStreamCreate(&s[d]));
  }
  ASSERT_NCCL(ncclGroupStart());
  for (int d = 0; d < 2; ++d) ASSERT_NCCL(ncclAllReduce(x[d], x[d], kN, ncclFloat32, ncclSum, comms[d], s[d]));
  ASSERT_NCCL(ncclGroupEnd());
  for (int d = 0; d < 2; ++d) {
    ASSERT_CUDA(cudaSetDevice(d));
    ASSERT_CUDA(cudaStreamSynchronize(s[d]));
    EXPECT_EQ(read(x[d]), std::vector<float>(kN, 3.f));
    ASSERT_CUDA(cudaStreamDestroy(s[d]));
    ASSERT_CUDA(cudaFree(x[d]));
    ASSERT_NCCL(ncclCommDestroy(comms[d]));
  }
  (void)cudaSetDevice(0);
}

TEST_F(Nccl, MismatchedCollectivesAreAnErrorNamingBothCalls) {
  ncclComm_t comms[2];
  ASSERT_NCCL(ncclCommInitAll(comms, 2, nullptr));
  float* x[2];
  for (int d = 0; d < 2; ++d) {
    ASSERT_CUDA(cudaSetDevice(d));
    x[d] = upload(std::vector<float>(kN, 1.f));
  }
  ASSERT_NCCL(ncclGroupStart());
  ASSERT_NCCL(ncclAllReduce(x[0], x[0], kN, ncclFloat32, ncclSum, comms[0], nullptr));
  EXPECT_EQ(ncclAllReduce(x[1], x[1], kN - 1, ncclFloat32, ncclSum, comms[1], nullptr), ncclInvalidUsage);
  const std::string msg = ncclGetLastError(comms[1]);
  EXPECT_NE(msg.find("rank 0 called ncclAllReduce(count 100, float32, sum)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank 1 called ncclAllReduce(count 99, float32, sum)"), std::string::npos) << msg;
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage) << "rank 0's part fails too, instead of hanging";
  for (int d = 0; d < 2; ++d) {
    ASSERT_CUDA(cudaSetDevice(d));
    ASSERT_CUDA(cudaDeviceSynchronize());
    EXPECT_EQ(read(x[d]), std::vector<float>(kN, 1.f)) << "nothing ran";
    ASSERT_CUDA(cudaFree(x[d]));
    ASSERT_NCCL(ncclCommDestroy(comms[d]));
  }
  (void)cudaSetDevice(0);
}

TEST_F(Nccl, ARankThatNeverCallsIsATimeoutNamingIt) {
  ncclComm_t comms[2];
  ASSERT_NCCL(ncclCommInitAll(comms, 2, nullptr));
  ASSERT_CUDA(cudaSetDevice(0));
  float* x = upload(std::vector<float>(kN, 1.f));
  setenv("CUDL_EMU_NCCL_TIMEOUT_MS", "200", 1);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(ncclBroadcast(x, x, kN, ncclFloat32, 0, comms[0], nullptr), ncclSystemError);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  unsetenv("CUDL_EMU_NCCL_TIMEOUT_MS");
  EXPECT_GE(s, 0.19);
  EXPECT_LT(s, 10.0);
  const std::string msg = ncclGetLastError(comms[0]);
  EXPECT_NE(msg.find("rank(s) 1 of 2 did not call it within 200 ms"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ncclBroadcast(count 100, float32, root 0)"), std::string::npos) << msg;
  // A stream of the wrong device is refused up front.
  cudaStream_t s1 = nullptr;
  ASSERT_CUDA(cudaSetDevice(1));
  ASSERT_CUDA(cudaStreamCreate(&s1));
  EXPECT_EQ(ncclAllReduce(x, x, kN, ncclFloat32, ncclSum, comms[0], s1), ncclInvalidArgument);
  EXPECT_NE(std::string(ncclGetLastError(comms[0])).find("the stream on device 1"), std::string::npos)
      << ncclGetLastError(comms[0]);
  ASSERT_CUDA(cudaStreamDestroy(s1));
  ASSERT_CUDA(cudaSetDevice(0));
  ASSERT_CUDA(cudaFree(x));
  for (auto c : comms) ASSERT_NCCL(ncclCommDestroy(c));
}

}  // namespace
