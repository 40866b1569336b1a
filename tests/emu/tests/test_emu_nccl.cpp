// tests/emu/tests/test_emu_nccl.cpp — the emulated NCCL subset on two emulated devices (ctest sets
// CUDL_EMU_DEVICES=2): ranks as threads and as communicators of one thread in a group, AllReduce
// (sum, avg), Broadcast, AllGather and ReduceScatter in stream order, collectives captured into CUDA
// graphs and replayed, and the errors that replace hangs (planted mismatches, a rank that never comes);
// then ranks as processes (the test starts itself again as rank 1): every collective eager and
// replayed, a mismatched count naming both ranks, a rank that never calls, a rank that exits.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <nccl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "emu/emu.hpp"
#include "kernels/launch.cuh"

extern char** environ;

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

std::vector<float> read_n(const float* p, size_t n) {
  std::vector<float> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
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


// Runs body(rank, comm) on one host thread per rank, each with its device current.
template <typename Body>
void ranks_as_threads(int n, Body body) {
  ncclUniqueId id;
  ASSERT_NCCL(ncclGetUniqueId(&id));
  auto rank_main = [&](int rank) {
    ASSERT_CUDA(cudaSetDevice(rank));
    ncclComm_t comm = nullptr;
    ASSERT_NCCL(ncclCommInitRank(&comm, n, id, rank));
    body(rank, comm);
    ASSERT_NCCL(ncclCommDestroy(comm));
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < n; ++r) threads.emplace_back(rank_main, r);
  rank_main(0);
  for (auto& t : threads) t.join();
  (void)cudaSetDevice(0);
}

cudaStream_t nonblocking_stream() {
  cudaStream_t s = nullptr;
  EXPECT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  return s;
}

float* zeros(size_t n) {
  float* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n * sizeof(float)), cudaSuccess);
  EXPECT_EQ(cudaMemset(p, 0, n * sizeof(float)), cudaSuccess);
  return p;
}

// What `record` queues on s, captured (thread-local mode) and instantiated; the graph itself is dropped.
template <typename Record>
cudaGraphExec_t capture(cudaStream_t s, Record record) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  record();
  EXPECT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  EXPECT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  return exec;
}

TEST_F(Nccl, AllGatherAndReduceScatterInRankOrder) {
  std::vector<std::vector<float>> gathered(2), scattered(2), scattered_avg(2);
  ranks_as_threads(2, [&](int rank, ncclComm_t comm) {
    std::vector<float> h(2 * kN);
    for (int i = 0; i < 2 * kN; ++i) h[i] = float(i + 1000 * rank);
    float* x = upload(h);
    float* all = zeros(2 * kN);
    float* part = zeros(kN);
    cudaStream_t s = nonblocking_stream();
    CUDL_LAUNCH(scale, 2, kN, 0, s)(x, 2 * kN, 2.f);  // queued before: seen by both collectives
    ASSERT_NCCL(ncclAllGather(x, all, kN, ncclFloat32, comm, s));  // the first kN of each rank
    ASSERT_NCCL(ncclReduceScatter(x, part, kN, ncclFloat32, ncclSum, comm, s));
    ASSERT_CUDA(cudaStreamSynchronize(s));
    std::vector<float> g(2 * kN);
    ASSERT_CUDA(cudaMemcpy(g.data(), all, g.size() * sizeof(float), cudaMemcpyDeviceToHost));
    gathered[rank] = g;
    scattered[rank] = read(part);
    ASSERT_NCCL(ncclReduceScatter(x, part, kN, ncclFloat32, ncclAvg, comm, s));
    ASSERT_CUDA(cudaStreamSynchronize(s));
    scattered_avg[rank] = read(part);
    // A receive buffer too small for the gathered data is refused up front.
    EXPECT_EQ(ncclAllGather(x, part, kN, ncclFloat32, comm, s), ncclInvalidArgument);
    EXPECT_NE(std::string(ncclGetLastError(comm)).find("recvbuff of rank"), std::string::npos) << ncclGetLastError(comm);
    ASSERT_CUDA(cudaStreamDestroy(s));
    for (float* p : {x, all, part}) ASSERT_CUDA(cudaFree(p));
  });
  for (int rank = 0; rank < 2; ++rank) {
    ASSERT_EQ(gathered[rank].size(), size_t(2 * kN));
    ASSERT_EQ(scattered[rank].size(), size_t(kN));
    for (int i = 0; i < kN; ++i) {
      EXPECT_EQ(gathered[rank][i], 2.f * i) << "rank " << rank << " element " << i;
      EXPECT_EQ(gathered[rank][kN + i], 2.f * (i + 1000)) << "rank " << rank << " element " << kN + i;
      const int k = rank * kN + i;  // rank r receives chunk r of the sum
      EXPECT_EQ(scattered[rank][i], 2.f * k + 2.f * (k + 1000)) << "rank " << rank << " element " << i;
      EXPECT_EQ(scattered_avg[rank][i], (2.f * k + 2.f * (k + 1000)) / 2) << "rank " << rank << " element " << i;
    }
  }
}

TEST_F(Nccl, CollectivesInAGraphRunOnEveryReplay) {
  constexpr int kReplays = 3;
  std::vector<std::vector<float>> result(2);
  cudl_emu::reset_counters();
  ranks_as_threads(2, [&](int rank, ncclComm_t comm) {
    float* x = upload(std::vector<float>(kN, float(rank + 1)));
    float* y = zeros(2 * kN);
    cudaStream_t s = nonblocking_stream();
    cudaGraphExec_t exec = capture(s, [&] {
      CUDL_LAUNCH(scale, 1, kN, 0, s)(x, kN, 2.f);
      ASSERT_NCCL(ncclAllReduce(x, x, kN, ncclFloat32, ncclSum, comm, s));  // recorded, nothing runs
      ASSERT_NCCL(ncclAllGather(x, y, kN, ncclFloat32, comm, s));
    });
    ASSERT_CUDA(cudaStreamSynchronize(s));
    EXPECT_EQ(read(x), std::vector<float>(kN, float(rank + 1))) << "capturing must not run the collective";
    for (int i = 0; i < kReplays; ++i) ASSERT_CUDA(cudaGraphLaunch(exec, s));
    ASSERT_CUDA(cudaStreamSynchronize(s));
    result[rank] = read(y);
    ASSERT_CUDA(cudaGraphExecDestroy(exec));
    ASSERT_CUDA(cudaStreamDestroy(s));
    ASSERT_CUDA(cudaFree(x));
    ASSERT_CUDA(cudaFree(y));
  });
  // x: 1 and 2 -> each replay doubles then sums: (2 + 4) = 6, then (12 + 12) = 24, then 96.
  for (int rank = 0; rank < 2; ++rank) EXPECT_EQ(result[rank], std::vector<float>(kN, 96.f)) << "rank " << rank;
  for (int d = 0; d < 2; ++d) {  // per device: each replay is one launch and two collectives
    const cudl_emu::Counters c = cudl_emu::counters(d);
    EXPECT_EQ(c.graph_launches, uint64_t(kReplays)) << "device " << d;
    EXPECT_EQ(c.collectives, uint64_t(2 * kReplays)) << "device " << d;
    EXPECT_EQ(c.collective_bytes, uint64_t(2 * kReplays * kN * sizeof(float))) << "device " << d;
  }
}

TEST_F(Nccl, ReplaysFromOneThreadInsideAGroup) {
  ncclComm_t comms[2];
  ASSERT_NCCL(ncclCommInitAll(comms, 2, nullptr));
  float* x[2];
  cudaStream_t s[2];
  cudaGraphExec_t e[2];
  for (int d = 0; d < 2; ++d) {
    ASSERT_CUDA(cudaSetDevice(d));
    x[d] = upload(std::vector<float>(kN, float(d + 1)));
    s[d] = nonblocking_stream();
    e[d] = capture(s[d], [&] { ASSERT_NCCL(ncclReduceScatter(x[d], x[d], kN / 2, ncclFloat32, ncclSum, comms[d], s[d])); });
  }
  ASSERT_NCCL(ncclGroupStart());
  for (int d = 0; d < 2; ++d) {
    ASSERT_CUDA(cudaSetDevice(d));
    ASSERT_CUDA(cudaGraphLaunch(e[d], s[d]));
  }
  ASSERT_NCCL(ncclGroupEnd());
  for (int d = 0; d < 2; ++d) {
    ASSERT_CUDA(cudaSetDevice(d));
    ASSERT_CUDA(cudaStreamSynchronize(s[d]));
    std::vector<float> h = read(x[d]);
    for (int i = 0; i < kN / 2; ++i) EXPECT_EQ(h[i], 3.f) << "device " << d << " element " << i;
    ASSERT_CUDA(cudaGraphExecDestroy(e[d]));
    ASSERT_CUDA(cudaStreamDestroy(s[d]));
    ASSERT_CUDA(cudaFree(x[d]));
    ASSERT_NCCL(ncclCommDestroy(comms[d]));
  }
  (void)cudaSetDevice(0);
}

// Planted bug: the ranks call the same two collectives in a different order.
TEST_F(Nccl, CollectivesInADifferentOrderAcrossRanksAreAnError) {
  std::vector<std::string> errors(2);
  ranks_as_threads(2, [&](int rank, ncclComm_t comm) {
    float* x = upload(std::vector<float>(kN, 1.f));
    ncclResult_t r = rank == 0 ? ncclAllReduce(x, x, kN, ncclFloat32, ncclSum, comm, nullptr)
                               : ncclBroadcast(x, x, kN, ncclFloat32, 0, comm, nullptr);
    EXPECT_EQ(r, ncclInvalidUsage) << "rank " << rank;
    errors[rank] = ncclGetLastError(comm);
    ASSERT_CUDA(cudaDeviceSynchronize());
    ASSERT_CUDA(cudaFree(x));
  });
  for (const std::string& msg : errors) {
    EXPECT_NE(msg.find("collective #0 differs across ranks"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ncclAllReduce(count 100, float32, sum)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("ncclBroadcast(count 100, float32, root 0)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 0"), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank 1"), std::string::npos) << msg;
  }
}

// Planted bug: rank 1's captured graph gathers a different count; the replay fails on both ranks.
TEST_F(Nccl, AMismatchedCollectiveInAGraphFailsTheLaunchNamingTheRanks) {
  std::vector<cudaError_t> launch(2);
  std::vector<std::string> msg(2);
  ranks_as_threads(2, [&](int rank, ncclComm_t comm) {
    float* x = upload(std::vector<float>(kN, 1.f));
    float* y = zeros(2 * kN);
    cudaStream_t s = nonblocking_stream();
    cudaGraphExec_t exec =
        capture(s, [&] { ASSERT_NCCL(ncclAllGather(x, y, rank == 0 ? kN : kN - 1, ncclFloat32, comm, s)); });
    launch[rank] = cudaGraphLaunch(exec, s);
    msg[rank] = cudaGetErrorString(launch[rank]);
    ASSERT_CUDA(cudaStreamSynchronize(s));
    ASSERT_CUDA(cudaGraphExecDestroy(exec));
    ASSERT_CUDA(cudaStreamDestroy(s));
    ASSERT_CUDA(cudaFree(x));
    ASSERT_CUDA(cudaFree(y));
  });
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_EQ(launch[rank], cudaErrorLaunchFailure) << "rank " << rank;
    EXPECT_NE(msg[rank].find("differs across ranks"), std::string::npos) << msg[rank];
    EXPECT_NE(msg[rank].find("ncclAllGather(sendcount 100, float32)"), std::string::npos) << msg[rank];
    EXPECT_NE(msg[rank].find("ncclAllGather(sendcount 99, float32)"), std::string::npos) << msg[rank];
  }
}

// Planted bug: only rank 0 replays its graph; its launch times out naming rank 1, never hangs.
TEST_F(Nccl, AReplayThatOtherRanksNeverLaunchTimesOut) {
  std::string msg;
  cudaError_t launch = cudaSuccess;
  double seconds = 0;
  ranks_as_threads(2, [&](int rank, ncclComm_t comm) {
    float* x = upload(std::vector<float>(kN, 1.f));
    cudaStream_t s = nonblocking_stream();
    cudaGraphExec_t exec = capture(s, [&] { ASSERT_NCCL(ncclAllReduce(x, x, kN, ncclFloat32, ncclAvg, comm, s)); });
    if (rank == 0) {
      setenv("CUDL_EMU_NCCL_TIMEOUT_MS", "200", 1);
      const auto t0 = std::chrono::steady_clock::now();
      launch = cudaGraphLaunch(exec, s);
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      unsetenv("CUDL_EMU_NCCL_TIMEOUT_MS");
      msg = cudaGetErrorString(launch);
      ASSERT_CUDA(cudaStreamSynchronize(s));
      EXPECT_EQ(read(x), std::vector<float>(kN, 1.f)) << "nothing ran";
    }
    ASSERT_CUDA(cudaGraphExecDestroy(exec));
    ASSERT_CUDA(cudaStreamDestroy(s));
    ASSERT_CUDA(cudaFree(x));
  });
  EXPECT_EQ(launch, cudaErrorLaunchFailure);
  EXPECT_GE(seconds, 0.19);
  EXPECT_LT(seconds, 10.0);
  EXPECT_NE(msg.find("rank(s) 1 of 2 did not launch it within 200 ms"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ncclAllReduce(count 100, float32, avg)"), std::string::npos) << msg;
}

// ---- Ranks as processes: this test is rank 0 and starts the program again as rank 1 (the id in
// the environment, hex), each process on its own emulated device 0; both run the same scenario.

std::string hex(const ncclUniqueId& id) {
  std::string s;
  char b[3];
  for (char c : id.internal) {
    std::snprintf(b, sizeof b, "%02x", static_cast<unsigned char>(c));
    s += b;
  }
  return s;
}
ncclUniqueId unhex(const std::string& s) {
  ncclUniqueId id{};
  for (size_t i = 0; i < sizeof id.internal && 2 * i + 1 < s.size(); ++i)
    id.internal[i] = static_cast<char>(std::stoi(s.substr(2 * i, 2), nullptr, 16));
  return id;
}

// The scenarios, run by both ranks.
void collectives(int rank, ncclComm_t comm) {
  cudaStream_t s = nullptr;
  ASSERT_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::vector<float> h(kN);
  for (int i = 0; i < kN; ++i) h[i] = float(i + 1000 * rank);
  float* x = upload(h);
  float* y = upload(std::vector<float>(2 * kN, 0.f));
  // Queued before the collective on the same stream: the reduction must see it.
  CUDL_LAUNCH(scale, 1, kN, 0, s)(x, kN, 2.f);
  ASSERT_NCCL(ncclAllReduce(x, y, kN, ncclFloat32, ncclSum, comm, s));
  ASSERT_CUDA(cudaStreamSynchronize(s));
  std::vector<float> sum = read(y);
  for (int i = 0; i < kN; ++i) EXPECT_EQ(sum[i], 2.f * i + 2.f * (i + 1000)) << "rank " << rank << " i " << i;
  ASSERT_NCCL(ncclAllReduce(x, x, kN, ncclFloat32, ncclAvg, comm, s));  // in place
  ASSERT_NCCL(ncclBroadcast(x, y, kN, ncclFloat32, 1, comm, s));        // root 1
  ASSERT_CUDA(cudaStreamSynchronize(s));
  for (int i = 0; i < kN; ++i) EXPECT_EQ(read(x)[i], sum[i] / 2) << "avg, rank " << rank;
  EXPECT_EQ(read(y), read(x)) << "broadcast from rank 1 of its (averaged) x";
  // AllGather: rank r's part at r * kN; ReduceScatter: rank r gets chunk r of the sum.
  float* g = upload(std::vector<float>(kN, float(rank + 1)));
  float* all = upload(std::vector<float>(2 * kN, 0.f));
  ASSERT_NCCL(ncclAllGather(g, all, kN, ncclFloat32, comm, s));
  float* part = upload(std::vector<float>(kN, 0.f));
  ASSERT_NCCL(ncclReduceScatter(all, part, kN, ncclFloat32, ncclSum, comm, s));
  ASSERT_CUDA(cudaStreamSynchronize(s));
  std::vector<float> a = read_n(all, 2 * kN);
  for (int i = 0; i < 2 * kN; ++i) EXPECT_EQ(a[i], i < kN ? 1.f : 2.f) << "allgather, rank " << rank;
  EXPECT_EQ(read(part), std::vector<float>(kN, 2.f * (rank + 1))) << "reducescatter, rank " << rank;
  // Captured into a graph: every replay is a new collective (a few of them, no host sync between).
  float* z = upload(std::vector<float>(kN, float(rank + 1)));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ASSERT_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  CUDL_LAUNCH(scale, 1, kN, 0, s)(z, kN, 2.f);
  ASSERT_NCCL(ncclAllReduce(z, z, kN, ncclFloat32, ncclSum, comm, s));
  ASSERT_CUDA(cudaStreamEndCapture(s, &graph));
  ASSERT_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int i = 0; i < 3; ++i) ASSERT_CUDA(cudaGraphLaunch(exec, s));
  ASSERT_CUDA(cudaStreamSynchronize(s));
  // 1 and 2 -> (2 + 4) = 6 -> 24 -> 96
  EXPECT_EQ(read(z), std::vector<float>(kN, 96.f)) << "rank " << rank;
  ASSERT_CUDA(cudaGraphExecDestroy(exec));
  ASSERT_CUDA(cudaGraphDestroy(graph));
  for (float* p : {x, y, g, all, part, z}) ASSERT_CUDA(cudaFree(p));
  ASSERT_CUDA(cudaStreamDestroy(s));
}

void mismatch(int rank, ncclComm_t comm) {
  float* x = upload(std::vector<float>(kN, 1.f));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(ncclAllReduce(x, x, kN - rank, ncclFloat32, ncclSum, comm, nullptr), ncclInvalidUsage) << "rank " << rank;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 5.0) << "an error, not a wait for the timeout";
  const std::string msg = ncclGetLastError(comm);
  EXPECT_NE(msg.find("collective #0 differs across ranks"), std::string::npos) << msg;
  const size_t r0 = msg.find("rank 0 called ncclAllReduce(count 100, float32, sum)");
  const size_t r1 = msg.find("rank 1 called ncclAllReduce(count 99, float32, sum)");
  EXPECT_NE(r0, std::string::npos) << msg;
  EXPECT_NE(r1, std::string::npos) << msg;
  ASSERT_CUDA(cudaDeviceSynchronize());
  EXPECT_EQ(read(x), std::vector<float>(kN, 1.f)) << "nothing ran";
  ASSERT_CUDA(cudaFree(x));
}

void never_calls(int rank, ncclComm_t comm) {
  if (rank == 1) {  // joined, but never calls the collective
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    return;
  }
  float* x = upload(std::vector<float>(kN, 1.f));
  // Set after joining (a second process may take longer than this to start): the hub, here, times it.
  setenv("CUDL_EMU_NCCL_TIMEOUT_MS", "300", 1);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(ncclBroadcast(x, x, kN, ncclFloat32, 0, comm, nullptr), ncclSystemError);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  unsetenv("CUDL_EMU_NCCL_TIMEOUT_MS");
  EXPECT_GE(s, 0.29);
  EXPECT_LT(s, 5.0);
  const std::string msg = ncclGetLastError(comm);
  EXPECT_NE(msg.find("ncclBroadcast(count 100, float32, root 0) #0: rank(s) 1 of 2 did not call it within 300 ms"),
            std::string::npos)
      << msg;
  ASSERT_CUDA(cudaFree(x));
}

void exits(int rank, ncclComm_t comm) {
  if (rank == 1) std::_Exit(0);  // as a rank that crashed: its connection closes
  float* x = upload(std::vector<float>(kN, 1.f));
  EXPECT_EQ(ncclAllReduce(x, x, kN, ncclFloat32, ncclSum, comm, nullptr), ncclSystemError);
  const std::string msg = ncclGetLastError(comm);
  EXPECT_NE(msg.find("rank 1 of 2 (process "), std::string::npos) << msg;
  EXPECT_NE(msg.find("closed its connection before doing its part"), std::string::npos) << msg;
  ASSERT_CUDA(cudaFree(x));
}

void run_scenario(const std::string& name, int rank, const ncclUniqueId& id) {
  ASSERT_CUDA(cudaSetDevice(0));
  ncclComm_t comm = nullptr;
  ASSERT_NCCL(ncclCommInitRank(&comm, 2, id, rank));
  int r = -1, count = 0;
  ASSERT_NCCL(ncclCommUserRank(comm, &r));
  ASSERT_NCCL(ncclCommCount(comm, &count));
  EXPECT_EQ(r, rank);
  EXPECT_EQ(count, 2);
  if (name == "collectives") collectives(rank, comm);
  if (name == "mismatch") mismatch(rank, comm);
  if (name == "never_calls") never_calls(rank, comm);
  if (name == "exits") exits(rank, comm);
  ASSERT_NCCL(ncclCommDestroy(comm));
}

// Rank 0 here, rank 1 in a second process running this program's Rank1 test.
void two_processes(const std::string& name, bool rank1_must_pass = true) {
  ncclUniqueId id;
  ASSERT_NCCL(ncclGetUniqueId(&id));
  const std::string self = "/proc/self/exe";
  std::vector<std::string> env_strings = {"CUDL_TEST_NCCL_ID=" + hex(id), "CUDL_TEST_NCCL_SCENARIO=" + name};
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string filter = "--gtest_filter=NcclProcesses.Rank1";
  char* argv[] = {const_cast<char*>(self.c_str()), filter.data(), nullptr};
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, envp.data()), 0);
  run_scenario(name, 0, id);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  if (rank1_must_pass) EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "rank 1's process failed";
}

TEST(NcclProcesses, Rank1) {
  const char* id = std::getenv("CUDL_TEST_NCCL_ID");
  if (!id) GTEST_SKIP() << "rank 1 of the two-process tests: started by them (CUDL_TEST_NCCL_ID unset)";
  run_scenario(std::getenv("CUDL_TEST_NCCL_SCENARIO"), 1, unhex(id));
}

TEST(NcclProcesses, EveryCollectiveEagerAndReplayed) { two_processes("collectives"); }

TEST(NcclProcesses, AMismatchedCountIsAnErrorNamingBothRanks) { two_processes("mismatch"); }

TEST(NcclProcesses, ARankThatNeverCallsIsATimeoutNamingIt) { two_processes("never_calls"); }

TEST(NcclProcesses, ARankWhoseProcessExitsFailsTheOthers) { two_processes("exits"); }

}  // namespace
