// tests/test_cpu_parallel.cpp — the CPU backend's parallel_for (chunking, nesting, concurrent
// callers, exceptions), its thread counts (ScopedCpuThreads, SingleThreadedBlas) and the GEMM split
// over it (cpu/blas.hpp).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cpu/blas.hpp"
#include "cpu/parallel.hpp"

using namespace cudl;

namespace {

TEST(CpuParallel, ChunksCoverTheRangeOnceInOrder) {
  for (int64_t n : {1, 2, 3, 7, 16, 101})
    for (int threads : {1, 2, 3, 4, 8, 200}) {
      SCOPED_TRACE("n " + std::to_string(n) + " threads " + std::to_string(threads));
      const int chunks = static_cast<int>(std::min<int64_t>(threads, n));
      std::vector<int> hits(n, 0), owner(n, -1);
      std::vector<std::pair<int64_t, int64_t>> ranges(chunks, {-1, -1});
      parallel_for(n, threads, [&](int64_t b, int64_t e, int chunk) {
        ranges[chunk] = {b, e};
        for (int64_t i = b; i < e; ++i) ++hits[i], owner[i] = chunk;
      });
      for (int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[i], 1) << "element " << i;
      for (int c = 0; c < chunks; ++c) {
        EXPECT_EQ(ranges[c].first, c * n / chunks) << "chunk " << c;
        EXPECT_EQ(ranges[c].second, (c + 1) * n / chunks) << "chunk " << c;
        EXPECT_LT(ranges[c].first, ranges[c].second) << "chunk " << c << " is empty";
      }
    }
}

TEST(CpuParallel, ChunksRunOnSeveralThreads) {
  std::vector<std::thread::id> ids(4);
  parallel_for(4, 4, [&](int64_t, int64_t, int chunk) { ids[chunk] = std::this_thread::get_id(); });
  EXPECT_EQ(ids[0], std::this_thread::get_id());
  for (int i = 1; i < 4; ++i) EXPECT_NE(ids[i], std::this_thread::get_id()) << "chunk " << i;
}

TEST(CpuParallel, EmptyRangeCallsNothing) {
  bool called = false;
  parallel_for(0, 4, [&](int64_t, int64_t, int) { called = true; });
  EXPECT_FALSE(called);
}

TEST(CpuParallel, NestedCallsRunSeriallyWithTheSameChunks) {
  std::vector<std::vector<std::pair<int64_t, int64_t>>> inner(3, std::vector<std::pair<int64_t, int64_t>>(3));
  parallel_for(3, 3, [&](int64_t, int64_t, int outer) {
    const std::thread::id me = std::this_thread::get_id();
    parallel_for(10, 3, [&](int64_t b, int64_t e, int chunk) {
      EXPECT_EQ(std::this_thread::get_id(), me);
      inner[outer][chunk] = {b, e};
    });
  });
  for (int o = 0; o < 3; ++o) {
    EXPECT_EQ(inner[o][0], std::make_pair(int64_t{0}, int64_t{3}));
    EXPECT_EQ(inner[o][1], std::make_pair(int64_t{3}, int64_t{6}));
    EXPECT_EQ(inner[o][2], std::make_pair(int64_t{6}, int64_t{10}));
  }
}

TEST(CpuParallel, ConcurrentCallersAllComplete) {
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 200; ++rep) parallel_for(50, 3, [&](int64_t b, int64_t e, int) { total += e - b; });
    });
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 4 * 200 * 50);
}

TEST(CpuParallel, ExceptionOfAChunkReachesTheCaller) {
  for (int bad : {0, 2}) {
    std::atomic<int> done{0};
    EXPECT_THROW(parallel_for(4, 4,
                              [&](int64_t, int64_t, int chunk) {
                                if (chunk == bad) throw std::runtime_error("chunk failed");
                                ++done;
                              }),
                 std::runtime_error);
    EXPECT_EQ(done.load(), 3) << "the other chunks still ran to the end";
  }
  // The pool is usable afterwards.
  std::atomic<int> n{0};
  parallel_for(4, 4, [&](int64_t b, int64_t e, int) { n += static_cast<int>(e - b); });
  EXPECT_EQ(n.load(), 4);
}

TEST(CpuParallel, ScopedThreadsSetsTheCountForThisThreadOnly) {
  const int outside = cpu_thread_count();
  EXPECT_GE(outside, 1);
  {
    ScopedCpuThreads three(3);
    EXPECT_EQ(cpu_thread_count(), 3);
    {
      ScopedCpuThreads one(1);
      EXPECT_EQ(cpu_thread_count(), 1);
    }
    EXPECT_EQ(cpu_thread_count(), 3);
    int other = 0;
    std::thread([&] { other = cpu_thread_count(); }).join();
    EXPECT_EQ(other, outside);
  }
  EXPECT_EQ(cpu_thread_count(), outside);
}

TEST(CpuParallel, SingleThreadedBlasKeepsTheBackendCount) {
  const int outside = cpu_thread_count();
  {
    SingleThreadedBlas a;
    SingleThreadedBlas b;
    EXPECT_EQ(cpu_thread_count(), outside) << "the count the BLAS had before the scopes";
  }
  EXPECT_EQ(cpu_thread_count(), outside);
}

// sgemm against a double reference, over the row split, the column split (few rows) and one call,
// with transposes and leading dimensions wider than the operands.
TEST(CpuGemm, SplitProductsMatchTheReference) {
  struct Case {
    bool ta, tb;
    int64_t m, n, k;
  };
  const Case cases[] = {{false, false, 203, 190, 170}, {true, false, 203, 190, 170}, {false, true, 203, 190, 170},
                        {true, true, 97, 250, 333},    {false, true, 20, 301, 800},  {true, false, 7, 5, 3},
                        {false, false, 50, 40, 0}};
  for (const Case& c : cases) {
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE("ta " + std::to_string(c.ta) + " tb " + std::to_string(c.tb) + " m " + std::to_string(c.m) + " n " +
                   std::to_string(c.n) + " k " + std::to_string(c.k) + " threads " + std::to_string(threads));
      ScopedCpuThreads scope(threads);
      const int64_t a_rows = c.ta ? c.k : c.m, a_cols = c.ta ? c.m : c.k;
      const int64_t b_rows = c.tb ? c.n : c.k, b_cols = c.tb ? c.k : c.n;
      const int64_t lda = a_cols + 3, ldb = b_cols + 5, ldc = c.n + 2;
      std::vector<float> a(static_cast<size_t>(std::max<int64_t>(1, a_rows * lda))),
          b(static_cast<size_t>(std::max<int64_t>(1, b_rows * ldb))), out(static_cast<size_t>(c.m * ldc), -7.f);
      for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>((i * 37 % 101) - 50) / 50.f;
      for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>((i * 53 % 97) - 48) / 48.f;
      sgemm(c.ta, c.tb, c.m, c.n, c.k, a.data(), lda, b.data(), ldb, out.data(), ldc);
      int bad = 0;
      for (int64_t i = 0; i < c.m; ++i) {
        for (int64_t j = 0; j < c.n; ++j) {
          double want = 0, mag = 0;
          for (int64_t p = 0; p < c.k; ++p) {
            const double x = c.ta ? a[p * lda + i] : a[i * lda + p];
            const double y = c.tb ? b[j * ldb + p] : b[p * ldb + j];
            want += x * y, mag += std::fabs(x * y);
          }
          const float got = out[i * ldc + j];
          if (std::fabs(got - want) > 1e-6 * mag + 1e-30 && bad++ < 5)
            ADD_FAILURE() << "C(" << i << ", " << j << ") = " << got << ", want " << want;
        }
        for (int64_t j = c.n; j < ldc; ++j)  // the padding between rows is left alone
          if (out[i * ldc + j] != -7.f && bad++ < 5) ADD_FAILURE() << "padding C(" << i << ", " << j << ") written";
      }
      EXPECT_EQ(bad, 0);
    }
  }
}

}  // namespace
