// tests/emu/tests/test_emu_kernel_bugs.cpp — planted kernel bugs the executor must catch: a missing
// __syncthreads (wrong answer under some schedule), barrier/warp divergence, bad launch configurations,
// and what a GPU refuses: misaligned vector accesses, launches over __launch_bounds__, warp masks
// naming absent lanes, oversized parameter blocks; and captured pageable copies read at replay.
#undef NDEBUG  // the device-assert test needs assert()
#include <gtest/gtest.h>

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <string>
#include <vector>

#include "emu/emu.hpp"
#include "kernels/launch.cuh"

namespace {

// --- kernels with planted bugs ------------------------------------------------------------------

// Tree reduction; `with_barrier` = false drops the __syncthreads inside the loop (the classic race).
__global__ void racy_reduce_kernel(const int* __restrict__ in, int* __restrict__ out, bool with_barrier) {
  __shared__ int s[256];
  const unsigned t = threadIdx.x;
  s[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (t < stride) s[t] += s[t + stride];
    if (with_barrier) __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

// Writes to shared memory and reads a neighbour's slot with no barrier in between. (`salt` makes
// each launch write different values: static shared memory keeps what the previous block left.)
__global__ void racy_neighbour_kernel(int* __restrict__ out, int salt, bool with_barrier) {
  __shared__ int s[128];
  const unsigned t = threadIdx.x;
  s[t] = (int)t + salt;
  if (with_barrier) __syncthreads();
  out[t] = s[(t + 1) % blockDim.x];
}

__global__ void divergent_barrier_kernel(int* out) {
  if (threadIdx.x < 16) __syncthreads();  // only half the block reaches the barrier
  out[threadIdx.x] = 1;
}

__global__ void early_exit_barrier_kernel(int* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // the tail block's extra threads leave before the barrier
  __syncthreads();
  out[i] = 1;
}

__global__ void two_barriers_kernel(int* out) {
  if (threadIdx.x % 2 == 0) {
    __syncthreads();
    out[threadIdx.x] = 1;
  } else {
    __syncthreads();
    out[threadIdx.x] = 2;
  }
}

__global__ void absent_lanes_shuffle_kernel(float* out) {
  float v = (float)threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // lanes 16..31 never arrive
  out[threadIdx.x] = v;
}

__global__ void exited_lanes_shuffle_kernel(float* out, int n) {
  const int i = threadIdx.x;
  if (i >= n) return;
  float v = (float)i;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);  // names exited lanes
  out[i] = v;
}

__global__ void mask_without_self_kernel(int* out) {
  out[threadIdx.x] = __shfl_sync(0x1u, (int)threadIdx.x, 0);  // lanes other than 0 are not in the mask
}

__global__ void mismatched_warp_ops_kernel(unsigned* out) {
  if (threadIdx.x < 16)
    out[threadIdx.x] = (unsigned)__shfl_sync(0xffffffffu, (int)threadIdx.x, 0);
  else
    out[threadIdx.x] = __ballot_sync(0xffffffffu, 1);
}

__global__ void shuffle_vs_barrier_kernel(int* out) {
  int v = (int)threadIdx.x;
  if (threadIdx.x == 0)
    __syncthreads();
  else
    v = __shfl_xor_sync(0xffffffffu, v, 2);  // names lane 0, which waits at the barrier: deadlock
  out[threadIdx.x] = v;
}

__global__ void trap_kernel(int* out) {
  if (threadIdx.x == 3) __trap();
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void assert_kernel(const int* in, int* out) {
  assert(in[threadIdx.x] >= 0);
  out[threadIdx.x] = in[threadIdx.x];
}

__global__ void fill_kernel(int* out, int value) {
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  out[blockIdx.x * threads + threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)] = value;
}

__global__ void dynamic_fill_kernel(int* out, int n) {
  CUDL_DYNAMIC_SHARED(int, buf);
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = i;
  __syncthreads();
  if (threadIdx.x == 0) out[0] = buf[n - 1];
}

// A local object with a destructor: abandoned grids unwind their suspended threads.
int g_live_guards = 0;
struct Guard {
  Guard() { ++g_live_guards; }
  ~Guard() { --g_live_guards; }
};
__global__ void raii_divergent_kernel(int* out) {
  Guard guard;
  if (threadIdx.x != 5) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shared_overrun_kernel(int* out) {
  CUDL_DYNAMIC_SHARED(int, buf);
  buf[threadIdx.x * 1024] = 1;  // 256 bytes of dynamic shared memory, written 4 KB apart
  out[threadIdx.x] = buf[0];
}

__device__ int deep_recursion(int n) {
  volatile char local[4096];
  local[0] = (char)n;
  return n == 0 ? 0 : deep_recursion(n - 1) + local[0];
}
__global__ void deep_recursion_kernel(int* out, int depth) { out[threadIdx.x] = deep_recursion(depth); }

// --- what a GPU refuses: misaligned vectors, launch bounds, partial-warp masks, parameter size -----

// Reads one float4 at `base + offset` floats: misaligned unless offset % 4 == 0.
__global__ void float4_load_kernel(const float* base, int offset, float* out) {
  const float4 v = reinterpret_cast<const float4*>(base + offset)[threadIdx.x];
  out[threadIdx.x] = v.x + v.y + v.z + v.w;
}
__global__ void float2_store_kernel(float* base, int offset) {
  reinterpret_cast<float2*>(base + offset)[threadIdx.x] = make_float2(1.0f, 2.0f);
}
__global__ void uint4_copy_kernel(const char* src, char* dst, int offset) {
  reinterpret_cast<uint4*>(dst)[threadIdx.x] = reinterpret_cast<const uint4*>(src + offset)[threadIdx.x];
}
__global__ void double2_load_kernel(const double* base, int offset, double* out) {
  const double2 v = *reinterpret_cast<const double2*>(base + offset);
  out[threadIdx.x] = v.x + v.y;
}

__global__ void __launch_bounds__(128) bounded_kernel(int* out) { out[threadIdx.x] = 1; }
template <int kThreads>
__global__ void __launch_bounds__(kThreads, 2) bounded_template_kernel(int* out) {
  out[threadIdx.x] = kThreads;
}

// A full-warp shuffle in a 48-thread block: the second warp has only lanes 0..15.
__global__ void partial_warp_shuffle_kernel(float* out) {
  float v = (float)threadIdx.x;
  v += __shfl_down_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}
__global__ void partial_warp_ballot_kernel(unsigned* out) { out[threadIdx.x] = __ballot_sync(0xffffffffu, 1); }
__global__ void partial_warp_reduce_kernel(unsigned* out) {
  out[threadIdx.x] = __reduce_add_sync(0xffffffffu, 1u);
}
// The correct form for a partial warp: the mask names only the lanes that exist.
__global__ void partial_warp_masked_kernel(unsigned* out) {
  const unsigned lanes = blockDim.x - (threadIdx.x & ~31u) >= 32 ? 32 : blockDim.x - (threadIdx.x & ~31u);
  const unsigned mask = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
  out[threadIdx.x] = __reduce_add_sync(mask, 1u);
}
// Lanes 0..15 shuffle among themselves, but lanes 8..15 read lanes 16..23, outside the mask.
__global__ void shuffle_outside_mask_kernel(float* out) {
  float v = (float)threadIdx.x;
  if (threadIdx.x < 16) v = __shfl_down_sync(0x0000ffffu, v, 8);
  out[threadIdx.x] = v;
}

struct Params {
  unsigned char bytes[4100];
};
struct HugeParams {
  unsigned char bytes[32768];
};
__global__ void large_params_kernel(Params p, int* out) { out[threadIdx.x] = p.bytes[threadIdx.x]; }
__global__ void huge_params_kernel(HugeParams p, int* out) { out[threadIdx.x] = p.bytes[threadIdx.x]; }

// --- helpers -----------------------------------------------------------------------------------

std::vector<cudl_emu::Schedule> all_schedules() {
  std::vector<cudl_emu::Schedule> v{{cudl_emu::Schedule::Forward, 0}, {cudl_emu::Schedule::Reverse, 0}};
  for (uint64_t seed : {1ull, 2ull, 3ull, 77ull}) v.push_back({cudl_emu::Schedule::Shuffle, seed});
  return v;
}

class EmuKernelBugs : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = cudl_emu::schedule();
    cudl_emu::reset_device_state();
    ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&buf_, 4096 * sizeof(int)), cudaSuccess);
    ASSERT_EQ(cudaMemset(buf_, 0, 4096 * sizeof(int)), cudaSuccess);
  }
  void TearDown() override {
    cudl_emu::reset_device_state();
    cudaGetLastError();
    EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    EXPECT_EQ(cudaFree(buf_), cudaSuccess);
    EXPECT_EQ(cudaStreamDestroy(stream_), cudaSuccess);
    cudl_emu::set_schedule(saved_);
  }

  // Synchronises and expects the sticky error `code` whose message names `kernel` and contains
  // `what`; then clears the device state for the next check.
  void expect_kernel_error(cudaError_t code, const std::string& kernel, const std::string& what) {
    const cudaError_t e = cudaStreamSynchronize(stream_);
    EXPECT_EQ(e, code) << cudaGetErrorName(e);
    const std::string msg = cudaGetErrorString(e);
    const std::string detail = cudl_emu::last_error_detail();
    EXPECT_NE(msg.find("'" + kernel + "'"), std::string::npos) << msg;
    EXPECT_NE(detail.find("'" + kernel + "'"), std::string::npos) << detail;
    EXPECT_NE(detail.find(what), std::string::npos) << detail;
    // Sticky: later calls keep returning it until the context is reset.
    EXPECT_EQ(cudaDeviceSynchronize(), code);
    EXPECT_EQ(cudaGetLastError(), code);
    cudl_emu::reset_device_state();
    cudaGetLastError();
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }

  std::vector<int> download(int n) {
    std::vector<int> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), buf_, n * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }

  float* fbuf() { return reinterpret_cast<float*>(buf_); }
  // The launch and the grid succeeded.
  static void expect_ok(cudaStream_t s) {
    EXPECT_EQ(cudaGetLastError(), cudaSuccess) << cudl_emu::last_error_detail();
    EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess) << cudl_emu::last_error_detail();
  }

  cudaStream_t stream_ = nullptr;
  int* buf_ = nullptr;
  cudl_emu::Schedule saved_;
};

// --- races -------------------------------------------------------------------------------------

TEST_F(EmuKernelBugs, MissingSyncthreadsGivesWrongResultUnderSomeSchedule) {
  const int block = 256, blocks = 4;
  std::vector<int> h(block * blocks);
  for (size_t i = 0; i < h.size(); ++i) h[i] = (int)(i % 13) + 1;
  std::vector<int> expect(blocks, 0);
  for (size_t i = 0; i < h.size(); ++i) expect[i / block] += h[i];
  int* in;
  ASSERT_EQ(cudaMalloc(&in, h.size() * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(in, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  int wrong_schedules = 0;
  for (const cudl_emu::Schedule& s : all_schedules()) {
    cudl_emu::set_schedule(s);
    CUDL_LAUNCH(racy_reduce_kernel, blocks, block, 0, stream_)(in, buf_, true);
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    EXPECT_EQ(download(blocks), expect) << "correct kernel, schedule " << s.kind << ":" << s.seed;
    CUDL_LAUNCH(racy_reduce_kernel, blocks, block, 0, stream_)(in, buf_, false);
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    if (download(blocks) != expect) ++wrong_schedules;
  }
  EXPECT_GE(wrong_schedules, 1) << "the missing __syncthreads went unnoticed under every schedule";
  cudaFree(in);
}

TEST_F(EmuKernelBugs, MissingSyncthreadsBeforeNeighbourRead) {
  const int block = 128;
  int wrong = 0, salt = 0;
  std::vector<int> expect(block);
  for (const cudl_emu::Schedule& s : all_schedules()) {
    cudl_emu::set_schedule(s);
    salt += 1000;
    for (int t = 0; t < block; ++t) expect[t] = (t + 1) % block + salt;
    CUDL_LAUNCH(racy_neighbour_kernel, 1, block, 0, stream_)(buf_, salt, true);
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    EXPECT_EQ(download(block), expect);
    salt += 1000;
    for (int t = 0; t < block; ++t) expect[t] = (t + 1) % block + salt;
    CUDL_LAUNCH(racy_neighbour_kernel, 1, block, 0, stream_)(buf_, salt, false);
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    if (download(block) != expect) ++wrong;
  }
  EXPECT_GE(wrong, 1);
}

// --- barrier divergence -----------------------------------------------------------------------

TEST_F(EmuKernelBugs, SyncthreadsInDivergentCode) {
  for (const cudl_emu::Schedule& s : all_schedules()) {
    cudl_emu::set_schedule(s);
    CUDL_LAUNCH(divergent_barrier_kernel, 2, 64, 0, stream_)(buf_);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // the launch itself is fine
    expect_kernel_error(cudaErrorLaunchFailure, "divergent_barrier_kernel", "barrier divergence");
  }
}

TEST_F(EmuKernelBugs, ThreadsExitBeforeBarrier) {
  for (const cudl_emu::Schedule& s : all_schedules()) {
    cudl_emu::set_schedule(s);
    CUDL_LAUNCH(early_exit_barrier_kernel, 4, 64, 0, stream_)(buf_, 200);
    expect_kernel_error(cudaErrorLaunchFailure, "early_exit_barrier_kernel", "exited");
  }
  // Every thread in range: no divergence, no error.
  CUDL_LAUNCH(early_exit_barrier_kernel, 4, 64, 0, stream_)(buf_, 256);
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << cudl_emu::last_error_detail();
}

TEST_F(EmuKernelBugs, DifferentBarriers) {
  CUDL_LAUNCH(two_barriers_kernel, 1, 32, 0, stream_)(buf_);
  expect_kernel_error(cudaErrorLaunchFailure, "two_barriers_kernel", "barrier divergence");
}

TEST_F(EmuKernelBugs, ErrorAbandonsTheRestOfTheGridAndLaterWork) {
  cudl_emu::reset_counters();
  CUDL_LAUNCH(divergent_barrier_kernel, 64, 32, 0, stream_)(buf_);
  CUDL_LAUNCH(fill_kernel, 1, 32, 0, stream_)(buf_, 5);  // queued behind the failing grid
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaErrorLaunchFailure);
  cudl_emu::reset_device_state();
  cudaGetLastError();
  // The first block failed, the other 63 never ran, and neither did the work queued after it.
  EXPECT_EQ(cudl_emu::counters().threads, 32u);
  for (int v : download(32)) EXPECT_NE(v, 5);
}

TEST_F(EmuKernelBugs, AbandonedThreadsAreUnwound) {
  for (const cudl_emu::Schedule& s : all_schedules()) {
    cudl_emu::set_schedule(s);
    CUDL_LAUNCH(raii_divergent_kernel, 1, 64, 0, stream_)(buf_);
    expect_kernel_error(cudaErrorLaunchFailure, "raii_divergent_kernel", "barrier divergence");
    EXPECT_EQ(g_live_guards, 0);
  }
}

// --- faults inside kernels ------------------------------------------------------------------

using EmuKernelBugsDeathTest = EmuKernelBugs;

TEST_F(EmuKernelBugsDeathTest, DynamicSharedMemoryOverrunFaults) {
  EXPECT_DEATH(
      {
        CUDL_LAUNCH(shared_overrun_kernel, 1, 32, 256, stream_)(buf_);
        cudaStreamSynchronize(stream_);
      },
      "shared_overrun_kernel");
}

TEST_F(EmuKernelBugsDeathTest, StackOverflowFaults) {
  EXPECT_DEATH(
      {
        CUDL_LAUNCH(deep_recursion_kernel, 1, 4, 0, stream_)(buf_, 10000);
        cudaStreamSynchronize(stream_);
      },
      "deep_recursion_kernel");
  CUDL_LAUNCH(deep_recursion_kernel, 1, 4, 0, stream_)(buf_, 8);  // 36 KB of stack: fine
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
}

// --- warp intrinsics -------------------------------------------------------------------------

TEST_F(EmuKernelBugs, ShuffleWithAbsentLanes) {
  for (const cudl_emu::Schedule& s : all_schedules()) {
    cudl_emu::set_schedule(s);
    CUDL_LAUNCH(absent_lanes_shuffle_kernel, 1, 64, 0, stream_)(reinterpret_cast<float*>(buf_));
    expect_kernel_error(cudaErrorLaunchFailure, "absent_lanes_shuffle_kernel", "__shfl_xor_sync");
  }
}

TEST_F(EmuKernelBugs, ShuffleNamingExitedLanes) {
  for (const cudl_emu::Schedule& s : all_schedules()) {
    cudl_emu::set_schedule(s);
    CUDL_LAUNCH(exited_lanes_shuffle_kernel, 1, 32, 0, stream_)(reinterpret_cast<float*>(buf_), 20);
    expect_kernel_error(cudaErrorLaunchFailure, "exited_lanes_shuffle_kernel", "exited");
  }
}

TEST_F(EmuKernelBugs, ShuffleMaskWithoutOwnLane) {
  CUDL_LAUNCH(mask_without_self_kernel, 1, 32, 0, stream_)(buf_);
  expect_kernel_error(cudaErrorLaunchFailure, "mask_without_self_kernel", "does not include");
}

TEST_F(EmuKernelBugs, DifferentWarpIntrinsicsInOneWarp) {
  CUDL_LAUNCH(mismatched_warp_ops_kernel, 1, 32, 0, stream_)(reinterpret_cast<unsigned*>(buf_));
  expect_kernel_error(cudaErrorLaunchFailure, "mismatched_warp_ops_kernel", "warp divergence");
}

TEST_F(EmuKernelBugs, ShuffleWhileALaneWaitsAtABarrier) {
  for (const cudl_emu::Schedule& s : all_schedules()) {
    cudl_emu::set_schedule(s);
    CUDL_LAUNCH(shuffle_vs_barrier_kernel, 1, 32, 0, stream_)(buf_);
    // Either the barrier sees exited threads or the shuffle sees a lane at the barrier.
    const cudaError_t e = cudaStreamSynchronize(stream_);
    EXPECT_EQ(e, cudaErrorLaunchFailure);
    EXPECT_NE(cudl_emu::last_error_detail().find("'shuffle_vs_barrier_kernel'"), std::string::npos)
        << cudl_emu::last_error_detail();
    cudl_emu::reset_device_state();
    cudaGetLastError();
  }
}

// --- traps and asserts --------------------------------------------------------------------------

TEST_F(EmuKernelBugs, TrapIsAStickyLaunchFailure) {
  CUDL_LAUNCH(trap_kernel, 2, 32, 0, stream_)(buf_);
  expect_kernel_error(cudaErrorLaunchFailure, "trap_kernel", "__trap()");
}

TEST_F(EmuKernelBugs, FailedDeviceAssert) {
  std::vector<int> h(64, 1);
  h[40] = -1;
  int* in;
  ASSERT_EQ(cudaMalloc(&in, 64 * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(in, h.data(), 64 * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  CUDL_LAUNCH(assert_kernel, 1, 64, 0, stream_)(in, buf_);
  expect_kernel_error(cudaErrorAssert, "assert_kernel", "thread (40,0,0)");
  // The fiber that asserted was abandoned; the executor still runs kernels afterwards.
  h[40] = 1;
  ASSERT_EQ(cudaMemcpy(in, h.data(), 64 * sizeof(int), cudaMemcpyHostToDevice), cudaSuccess);
  CUDL_LAUNCH(assert_kernel, 1, 64, 0, stream_)(in, buf_);
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << cudl_emu::last_error_detail();
  EXPECT_EQ(download(64), h);
  cudaFree(in);
}

// --- launch configuration -------------------------------------------------------------------

TEST_F(EmuKernelBugs, TooManyThreadsPerBlock) {
  CUDL_LAUNCH(fill_kernel, 1, 2048, 0, stream_)(buf_, 3);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_NE(cudl_emu::last_error_detail().find("fill_kernel"), std::string::npos) << cudl_emu::last_error_detail();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // not sticky: reported once
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_EQ(download(2048), std::vector<int>(2048, 0));  // nothing ran
}

TEST_F(EmuKernelBugs, OtherInvalidConfigurations) {
  const std::vector<std::pair<dim3, dim3>> bad = {
      {dim3(1), dim3(1, 1, 65)},   // block z over 64
      {dim3(1), dim3(32, 33, 1)},  // 1056 threads
      {dim3(0), dim3(32)},         // empty grid
      {dim3(1, 65536), dim3(32)},  // grid y over 65535
      {dim3(1), dim3(0, 1, 1)},    // empty block
  };
  for (const auto& [grid, block] : bad) {
    CUDL_LAUNCH(fill_kernel, grid, block, 0, stream_)(buf_, 3);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration)
        << "grid " << grid.x << "," << grid.y << " block " << block.x << "," << block.y << "," << block.z;
  }
  CUDL_LAUNCH(fill_kernel, dim3(2, 1, 1), dim3(8, 4, 32), 0, stream_)(buf_, 3);  // 1024 threads: fine
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  EXPECT_EQ(download(2048), std::vector<int>(2048, 3));
}

TEST_F(EmuKernelBugs, TooMuchDynamicSharedMemory) {
  const int n = 16384;  // 64 KB of ints
  CUDL_LAUNCH(dynamic_fill_kernel, 1, 256, n * sizeof(int), stream_)(buf_, n);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_NE(cudl_emu::last_error_detail().find("dynamic_fill_kernel"), std::string::npos);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);

  // 48 KB is the default limit and works without opting in.
  CUDL_LAUNCH(dynamic_fill_kernel, 1, 256, 48 * 1024, stream_)(buf_, 12288);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << cudl_emu::last_error_detail();
  EXPECT_EQ(download(1)[0], 12287);

  // Opting in raises the limit for this kernel, up to the device's 227 KB.
  ASSERT_EQ(cudaFuncSetAttribute(dynamic_fill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, n * sizeof(int)),
            cudaSuccess);
  cudaFuncAttributes attr{};
  ASSERT_EQ(cudaFuncGetAttributes(&attr, dynamic_fill_kernel), cudaSuccess);
  EXPECT_EQ(attr.maxDynamicSharedSizeBytes, n * (int)sizeof(int));
  CUDL_LAUNCH(dynamic_fill_kernel, 1, 256, n * sizeof(int), stream_)(buf_, n);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << cudl_emu::last_error_detail();
  EXPECT_EQ(download(1)[0], n - 1);
  EXPECT_EQ(cudaFuncSetAttribute(dynamic_fill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024),
            cudaErrorInvalidValue);
  cudaGetLastError();
  CUDL_LAUNCH(dynamic_fill_kernel, 1, 256, 228 * 1024, stream_)(buf_, n);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
}

// --- misaligned vector accesses -----------------------------------------------------------------

TEST_F(EmuKernelBugs, AlignedFloat4LoadRuns) {
  CUDL_LAUNCH(float4_load_kernel, 1, 32, 0, stream_)(fbuf(), 4, fbuf() + 2048);
  expect_ok(stream_);
}

TEST_F(EmuKernelBugs, MisalignedFloat4Load) {
  CUDL_LAUNCH(float4_load_kernel, 1, 32, 0, stream_)(fbuf(), 1, fbuf() + 2048);
  expect_kernel_error(cudaErrorMisalignedAddress, "float4_load_kernel",
                      "misaligned address in kernel 'float4_load_kernel'");
  CUDL_LAUNCH(float4_load_kernel, 1, 32, 0, stream_)(fbuf(), 2, fbuf() + 2048);
  expect_kernel_error(cudaErrorMisalignedAddress, "float4_load_kernel", "float4', which requires 16-byte alignment");
}

TEST_F(EmuKernelBugs, MisalignedFloat2Store) {
  CUDL_LAUNCH(float2_store_kernel, 1, 32, 0, stream_)(fbuf(), 2);  // 8-byte aligned: fine
  expect_ok(stream_);
  CUDL_LAUNCH(float2_store_kernel, 1, 32, 0, stream_)(fbuf(), 1);
  expect_kernel_error(cudaErrorMisalignedAddress, "float2_store_kernel", "store to misaligned address");
}

TEST_F(EmuKernelBugs, MisalignedUint4Copy) {
  char* bytes = reinterpret_cast<char*>(buf_);
  CUDL_LAUNCH(uint4_copy_kernel, 1, 16, 0, stream_)(bytes, bytes + 8192, 16);
  expect_ok(stream_);
  CUDL_LAUNCH(uint4_copy_kernel, 1, 16, 0, stream_)(bytes, bytes + 8192, 8);  // 8-byte aligned, not 16
  expect_kernel_error(cudaErrorMisalignedAddress, "uint4_copy_kernel", "requires 16-byte alignment");
}

TEST_F(EmuKernelBugs, MisalignedDouble2Load) {
  const double* d = reinterpret_cast<const double*>(buf_);
  CUDL_LAUNCH(double2_load_kernel, 1, 1, 0, stream_)(d, 1, reinterpret_cast<double*>(fbuf() + 2048));
  expect_kernel_error(cudaErrorMisalignedAddress, "double2_load_kernel", "misaligned address");
}

// --- __launch_bounds__ --------------------------------------------------------------------------

TEST_F(EmuKernelBugs, LaunchOverLaunchBoundsFails) {
  int* out = buf_;
  CUDL_LAUNCH(bounded_kernel, 1, 128, 0, stream_)(out);
  expect_ok(stream_);
  CUDL_LAUNCH(bounded_kernel, 1, 256, 0, stream_)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchOutOfResources);
  const std::string detail = cudl_emu::last_error_detail();
  EXPECT_NE(detail.find("'bounded_kernel'"), std::string::npos) << detail;
  EXPECT_NE(detail.find("__launch_bounds__(128)"), std::string::npos) << detail;
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // a launch error, not sticky
  cudaFuncAttributes attr;
  ASSERT_EQ(cudaFuncGetAttributes(&attr, bounded_kernel), cudaSuccess);
  EXPECT_EQ(attr.maxThreadsPerBlock, 128);
  // Template-dependent bounds with a min-blocks argument.
  CUDL_LAUNCH(bounded_template_kernel<64>, 1, 64, 0, stream_)(out);
  expect_ok(stream_);
  CUDL_LAUNCH(bounded_template_kernel<64>, dim3(1), dim3(16, 8), 0, stream_)(out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorLaunchOutOfResources);
}

TEST_F(EmuKernelBugs, KernelWithoutLaunchBoundsTakes1024Threads) {
  int* out = buf_;
  CUDL_LAUNCH(partial_warp_masked_kernel, 1, 1024, 0, stream_)(reinterpret_cast<unsigned*>(out));
  expect_ok(stream_);
}

// --- warp intrinsics in partial warps -----------------------------------------------------------

TEST_F(EmuKernelBugs, FullMaskShuffleInPartialWarp) {
  CUDL_LAUNCH(partial_warp_shuffle_kernel, 1, 48, 0, stream_)(fbuf());
  expect_kernel_error(cudaErrorLaunchFailure, "partial_warp_shuffle_kernel", "do not exist");
}

TEST_F(EmuKernelBugs, FullMaskBallotAndReduceInPartialWarp) {
  unsigned* out = reinterpret_cast<unsigned*>(buf_);
  CUDL_LAUNCH(partial_warp_ballot_kernel, 1, 40, 0, stream_)(out);
  expect_kernel_error(cudaErrorLaunchFailure, "partial_warp_ballot_kernel", "__ballot_sync");
  CUDL_LAUNCH(partial_warp_reduce_kernel, 1, 20, 0, stream_)(out);
  expect_kernel_error(cudaErrorLaunchFailure, "partial_warp_reduce_kernel", "do not exist");
}

TEST_F(EmuKernelBugs, MaskOfExistingLanesInPartialWarpRuns) {
  unsigned* out = reinterpret_cast<unsigned*>(buf_);
  CUDL_LAUNCH(partial_warp_masked_kernel, 1, 40, 0, stream_)(out);
  expect_ok(stream_);
  std::vector<unsigned> h(40);
  ASSERT_EQ(cudaMemcpy(h.data(), out, 40 * sizeof(unsigned), cudaMemcpyDeviceToHost), cudaSuccess);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(h[i], i < 32 ? 32u : 8u) << i;
}

TEST_F(EmuKernelBugs, ShuffleReadingALaneOutsideTheMask) {
  CUDL_LAUNCH(shuffle_outside_mask_kernel, 1, 32, 0, stream_)(fbuf());
  expect_kernel_error(cudaErrorLaunchFailure, "shuffle_outside_mask_kernel", "not in the mask");
}

// --- kernel parameter blocks --------------------------------------------------------------------

TEST_F(EmuKernelBugs, ParameterBlockLimit) {
  int* out = buf_;
  Params p{};
  p.bytes[3] = 7;
  // 4100 + 8 bytes: over the pre-12.1 limit, within CUDA 12.1+'s 32764 bytes on Volta and newer.
  CUDL_LAUNCH(large_params_kernel, 1, 4, 0, stream_)(p, out);
  expect_ok(stream_);
  static HugeParams huge{};
  CUDL_LAUNCH(huge_params_kernel, 1, 4, 0, stream_)(huge, out);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  const std::string detail = cudl_emu::last_error_detail();
  EXPECT_NE(detail.find("'huge_params_kernel'"), std::string::npos) << detail;
  EXPECT_NE(detail.find("32776-byte parameter block"), std::string::npos) << detail;
  EXPECT_NE(detail.find("32764"), std::string::npos) << detail;
}

// --- pageable copies in stream capture ----------------------------------------------------------

// CUDA does not refuse a captured cudaMemcpyAsync from pageable memory: the graph's copy node reads
// the host pointer when the graph runs (docs/emulator.md). The emulator must not stage it at capture.
TEST_F(EmuKernelBugs, CapturedPageableCopyReadsTheHostBufferAtReplay) {
  std::vector<float> host(64, 1.0f);
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(fbuf(), host.data(), 64 * sizeof(float), cudaMemcpyHostToDevice, stream_), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (float v : {2.0f, 3.0f}) {
    std::fill(host.begin(), host.end(), v);
    ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
    std::vector<float> got(64);
    ASSERT_EQ(cudaMemcpy(got.data(), fbuf(), 64 * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(got, host) << "replay copied the capture-time contents, not the buffer's current ones";
  }
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
}

}  // namespace
