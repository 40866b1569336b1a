// tests/test_emu_kernel_common.cpp — kernels/common.cuh on the emulator: block_reduce against a host
// model of its documented order (bitwise) for float sum, int sum and NaN-propagating max, full and
// partial last warps, both warp-result orders, every schedule; and launch() naming a failed kernel.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#if defined(CUDL_EMULATED)
#include "cudl/error.hpp"
#include "emu/emu.hpp"
#include "kernels/common.cuh"
#endif

#if defined(CUDL_EMULATED)

namespace cudl::kernels::test_common {

// Each block reduces its blockDim.x inputs; every thread writes the result it received.
template <typename Op, WarpResults kOrder, typename T>
__global__ void block_reduce_kernel(const T* __restrict__ in, T* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const T r = block_reduce<Op, kOrder>(in[i]);
  out[i] = r;
}

template <int kTag>
__global__ void probe_kernel(int* p) {
  if (p) p[threadIdx.x] = kTag;
}

// --- host model of the documented order ----------------------------------------------------------

template <typename Op, typename T>
T model_butterfly(std::vector<T> v) {  // 32 lanes, every lane combines with lane ^ offset
  for (int offset = 16; offset > 0; offset >>= 1) {
    std::vector<T> next(32);
    for (int l = 0; l < 32; ++l) next[l] = Op{}(v[l], v[l ^ offset]);
    v = next;
  }
  return v[0];
}

template <typename Op, typename T>
T model_partial(std::vector<T> v, int lanes) {  // lane l adds l + offset while that lane exists
  for (int offset = 16; offset > 0; offset >>= 1) {
    std::vector<T> next = v;
    for (int l = 0; l < lanes; ++l)
      if (l + offset < lanes) next[l] = Op{}(v[l], v[l + offset]);
    v = next;
  }
  return v[0];
}

template <typename Op, WarpResults kOrder, typename T>
T model_block(const T* x, int threads) {
  const int n_warps = (threads + 31) / 32, tail = threads % 32;
  std::vector<T> warp_results;
  for (int w = 0; w < n_warps; ++w) {
    std::vector<T> lanes(32, T{});
    for (int l = 0; l < 32 && w * 32 + l < threads; ++l) lanes[l] = x[w * 32 + l];
    warp_results.push_back(tail != 0 && w == n_warps - 1 ? model_partial<Op>(lanes, tail) : model_butterfly<Op>(lanes));
  }
  if (kOrder == WarpResults::kSerial) {
    T v = Op::template identity<T>();
    for (const T& r : warp_results) v = Op{}(v, r);
    return v;
  }
  if (threads < 32) return warp_results[0];
  std::vector<T> lanes(32, Op::template identity<T>());
  for (int w = 0; w < n_warps; ++w) lanes[w] = warp_results[w];
  return model_butterfly<Op>(lanes);
}

template <typename T>
bool same_bits(T a, T b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <typename T>
std::string show(T v) {
  return std::to_string(v);
}

class KernelCommon : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(cudaStreamCreate(&stream_), cudaSuccess); }
  void TearDown() override { EXPECT_EQ(cudaStreamDestroy(stream_), cudaSuccess); }

  // Runs block_reduce<Op, kOrder> over `blocks` blocks of `threads` and compares every thread's
  // result with the model, bitwise, under forward, reverse and shuffled schedules.
  template <typename Op, WarpResults kOrder, typename T>
  void check(const std::vector<T>& in, int threads, const char* what) {
    const int blocks = static_cast<int>(in.size()) / threads;
    ASSERT_EQ(static_cast<size_t>(blocks) * threads, in.size());
    T *d_in = nullptr, *d_out = nullptr;
    ASSERT_EQ(cudaMalloc(&d_in, in.size() * sizeof(T)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&d_out, in.size() * sizeof(T)), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(d_in, in.data(), in.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    const cudl_emu::Schedule schedules[] = {
        {cudl_emu::Schedule::Forward, 0}, {cudl_emu::Schedule::Reverse, 0}, {cudl_emu::Schedule::Shuffle, 7}};
    const cudl_emu::Schedule saved = cudl_emu::schedule();
    for (const cudl_emu::Schedule& s : schedules) {
      cudl_emu::set_schedule(s);
      launch<block_reduce_kernel<Op, kOrder, T>>(blocks, threads, 0, stream_, d_in, d_out);
      ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess) << cudl_emu::last_error_detail();
      std::vector<T> out(in.size());
      ASSERT_EQ(cudaMemcpy(out.data(), d_out, out.size() * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
      for (int b = 0; b < blocks; ++b) {
        const T want = model_block<Op, kOrder>(in.data() + static_cast<size_t>(b) * threads, threads);
        for (int t = 0; t < threads; ++t) {
          const T got = out[static_cast<size_t>(b) * threads + t];
          ASSERT_TRUE(same_bits(got, want))
              << what << ": block of " << threads << " threads, block " << b << ", thread " << t << ", schedule "
              << s.kind << ": got " << show(got) << ", want " << show(want);
        }
      }
    }
    cudl_emu::set_schedule(saved);
    cudaFree(d_in);
    cudaFree(d_out);
  }

  cudaStream_t stream_ = nullptr;
};

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng) * std::exp2(static_cast<float>(static_cast<int>(rng() % 24) - 12));
  return v;
}

// Block sizes: full warps (32, 96, 1024), partial last warps (1, 17, 100), 2 blocks each.
const int kSizes[] = {1, 17, 32, 96, 100, 1024};

TEST_F(KernelCommon, FloatSumMatchesTheDocumentedOrderBitwise) {
  for (int threads : kSizes) {
    const std::vector<float> in = random_floats(2 * static_cast<size_t>(threads), 11u + threads);
    check<SumOp, WarpResults::kTree>(in, threads, "float sum, tree");
    check<SumOp, WarpResults::kSerial>(in, threads, "float sum, serial");
  }
}

TEST_F(KernelCommon, FloatSumOfExactValuesIsTheSum) {
  // Small integers sum exactly in any order: this checks that every element is counted once.
  for (int threads : kSizes) {
    std::vector<float> in(2 * static_cast<size_t>(threads));
    double want0 = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      in[i] = static_cast<float>(static_cast<int>(i % 7) - 3);
      if (i < static_cast<size_t>(threads)) want0 += in[i];
    }
    check<SumOp, WarpResults::kTree>(in, threads, "exact float sum");
    EXPECT_EQ((model_block<SumOp, WarpResults::kTree>(in.data(), threads)), static_cast<float>(want0)) << threads;
  }
}

TEST_F(KernelCommon, IntSum) {
  for (int threads : kSizes) {
    std::vector<int> in(2 * static_cast<size_t>(threads));
    long long want0 = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      in[i] = static_cast<int>((i * 7919) % 1000) - 333;
      if (i < static_cast<size_t>(threads)) want0 += in[i];
    }
    check<SumOp, WarpResults::kTree>(in, threads, "int sum, tree");
    check<SumOp, WarpResults::kSerial>(in, threads, "int sum, serial");
    EXPECT_EQ((model_block<SumOp, WarpResults::kTree>(in.data(), threads)), want0) << threads;
  }
}

TEST_F(KernelCommon, MaxPropagatesNaN) {
  for (int threads : kSizes) {
    std::vector<float> in = random_floats(2 * static_cast<size_t>(threads), 5u + threads);
    in[0] = -std::numeric_limits<float>::infinity();
    in[threads + threads / 2] = std::numeric_limits<float>::quiet_NaN();  // block 1 holds a NaN
    check<MaxNanOp, WarpResults::kTree>(in, threads, "max, tree");
    float want0 = -std::numeric_limits<float>::infinity();
    for (int i = 0; i < threads; ++i) want0 = std::max(want0, in[i]);
    EXPECT_EQ((model_block<MaxNanOp, WarpResults::kTree>(in.data(), threads)), want0) << threads;
    EXPECT_TRUE(std::isnan((model_block<MaxNanOp, WarpResults::kTree>(in.data() + threads, threads)))) << threads;
  }
}

TEST_F(KernelCommon, AlignmentHolds) {
  alignas(16) unsigned char buf[32];
  EXPECT_TRUE(aligned16(buf));
  EXPECT_FALSE(aligned16(buf + 4));
  EXPECT_TRUE(aligned_to<4>(buf + 4));
  EXPECT_FALSE(aligned_to<4>(buf + 2));
  EXPECT_TRUE(aligned16(nullptr));
}

TEST_F(KernelCommon, KernelNamesDropNamespacesAndKeepTemplateArguments) {
  EXPECT_STREQ(kernel_name<probe_kernel<3>>(), "probe_kernel<3>");
  const std::string reduce = kernel_name<block_reduce_kernel<SumOp, WarpResults::kTree, float>>();
  EXPECT_EQ(reduce.rfind("block_reduce_kernel<SumOp, ", 0), 0u) << reduce;
  EXPECT_EQ(reduce.find("::", reduce.find("WarpResults") + 11), std::string::npos) << reduce;
  // The spellings the host compilers produce, including nvcc's for anonymous namespaces.
  EXPECT_EQ(detail::kernel_name_from_signature(
                "const char* cudl::kernels::kernel_name() [with auto K = cudl::kernels::{anonymous}::softmax_kernel<"
                "true, false>]"),
            "softmax_kernel<true, false>");
  EXPECT_EQ(detail::kernel_name_from_signature("const char* cudl::kernels::kernel_name() [with auto K = "
                                               "mt_kernel<2, _GLOBAL__N__b1f56cac_4_t_cu_4d210d95::AdamOp>]"),
            "mt_kernel<2, AdamOp>");
  EXPECT_EQ(detail::kernel_name_from_signature("const char* kernel_name() [with auto K = (& ns::f)]"), "f");
}

TEST_F(KernelCommon, FailedLaunchThrowsNamingTheKernel) {
  int* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 64 * sizeof(int)), cudaSuccess);
  try {
    launch<probe_kernel<7>>(1, 2048, 0, stream_, p);  // over the 1024 threads a block may have
    FAIL() << "a launch of 2048 threads per block did not throw";
  } catch (const cudl::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("probe_kernel<7>"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cudaErrorInvalidConfiguration"), std::string::npos) << msg;
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // the check consumed the (non-sticky) error
  // The same kernel then launches and runs.
  launch<probe_kernel<7>>(1, 64, 0, stream_, p);
  ASSERT_EQ(cudaStreamSynchronize(stream_), cudaSuccess);
  std::vector<int> h(64);
  ASSERT_EQ(cudaMemcpy(h.data(), p, h.size() * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(h[0], 7);
  EXPECT_EQ(h[63], 7);
  cudaFree(p);
}

TEST_F(KernelCommon, GridSizingReadsTheMultiprocessorCount) {
  int device = 0, sms = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  EXPECT_EQ(sm_count(), sms);
  EXPECT_EQ(grid_for(int64_t(1) << 40, 256), static_cast<unsigned>(sms * kBlocksPerSm));
  EXPECT_EQ(grid_for(1000, 256), 4u);
  EXPECT_EQ(grid_for(0, 256), 1u);
  EXPECT_EQ(grid_for(int64_t(1) << 40, 256, 64), 64u);
}

}  // namespace cudl::kernels::test_common

#else

TEST(KernelCommon, NeedsTheCudaBuild) {
  GTEST_SKIP() << "kernels/common.cuh runs here only on the CUDA emulator, which a build without the CUDA "
                  "backend does not have";
}

#endif
