// tests/emu/tests/test_emu_cub.cpp — the emulated CUB subset (cub::DeviceRadixSort::SortPairs)
// against std::stable_sort: the size query, bit ranges, stability, stream order, graph capture,
// and the errors CUB documents (storage too small, overlapping ranges) or a GPU would raise.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "emu/cub.hpp"
#include "emu/emu.hpp"

namespace {

template <typename T>
T* device_copy(const std::vector<T>& h) {
  T* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(1, h.size()) * sizeof(T)), cudaSuccess);
  if (!h.empty()) EXPECT_EQ(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return p;
}

template <typename T>
std::vector<T> host_copy(const T* p, size_t n) {
  std::vector<T> h(n);
  if (n) EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return h;
}

struct Sorted {
  std::vector<uint32_t> keys;
  std::vector<int32_t> values;
};

/// The reference: pairs (keys[i], i) stably sorted by the key bits [begin, end).
Sorted reference(const std::vector<uint32_t>& keys, int begin, int end) {
  std::vector<int32_t> order(keys.size());
  std::iota(order.begin(), order.end(), 0);
  const uint64_t mask = (uint64_t{1} << (end - begin)) - 1;
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return ((keys[a] >> begin) & mask) < ((keys[b] >> begin) & mask); });
  Sorted s;
  for (int32_t i : order) s.keys.push_back(keys[i]), s.values.push_back(i);
  return s;
}

std::vector<uint32_t> random_keys(size_t n, uint32_t below, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint32_t> k(n);
  for (auto& v : k) v = static_cast<uint32_t>(rng() % below);
  return k;
}

}  // namespace

TEST(EmuCub, SortPairsSortsStablyByTheBitRange) {
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  for (auto [n, below, begin, end] : {std::tuple{1, 5u, 0, 3}, std::tuple{1000, 17u, 0, 5}, std::tuple{4097, 3u, 0, 2},
                                      std::tuple{777, 1u << 20, 0, 32}, std::tuple{500, 256u, 4, 8}}) {
    const std::vector<uint32_t> keys = random_keys(n, below, n);
    std::vector<int32_t> vals(n);
    std::iota(vals.begin(), vals.end(), 0);
    uint32_t *ki = device_copy(keys), *ko = device_copy(std::vector<uint32_t>(n));
    int32_t *vi = device_copy(vals), *vo = device_copy(std::vector<int32_t>(n));
    size_t bytes = 0;
    ASSERT_EQ(cub::DeviceRadixSort::SortPairs(nullptr, bytes, ki, ko, vi, vo, n, begin, end, s), cudaSuccess);
    EXPECT_GE(bytes, 2 * size_t(n) * 8) << "the documented ~2N auxiliary storage";
    const auto launches = cudl_emu::counters().library_calls;
    void* temp = nullptr;
    ASSERT_EQ(cudaMalloc(&temp, bytes), cudaSuccess);
    ASSERT_EQ(cub::DeviceRadixSort::SortPairs(temp, bytes, ki, ko, vi, vo, n, begin, end, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    EXPECT_EQ(cudl_emu::counters().library_calls, launches + 1);
    const Sorted want = reference(keys, begin, end);
    EXPECT_EQ(host_copy(ko, n), want.keys) << "n=" << n << " bits [" << begin << ", " << end << ")";
    EXPECT_EQ(host_copy(vo, n), want.values) << "n=" << n;
    EXPECT_EQ(host_copy(ki, n), keys) << "inputs are not altered";
    for (void* p : {static_cast<void*>(ki), static_cast<void*>(ko), static_cast<void*>(vi), static_cast<void*>(vo), temp})
      cudaFree(p);
  }
  cudaStreamDestroy(s);
}

TEST(EmuCub, SortPairsRejectsWhatCubRejects) {
  const size_t n = 64;
  uint32_t *ki = device_copy(random_keys(n, 9, 1)), *ko = device_copy(std::vector<uint32_t>(n));
  int32_t *vi = device_copy(std::vector<int32_t>(n)), *vo = device_copy(std::vector<int32_t>(n));
  size_t need = 0;
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(nullptr, need, ki, ko, vi, vo, n), cudaSuccess);
  void* temp = nullptr;
  ASSERT_EQ(cudaMalloc(&temp, need), cudaSuccess);
  size_t small = need - 1;
  EXPECT_EQ(cub::DeviceRadixSort::SortPairs(temp, small, ki, ko, vi, vo, n), cudaErrorInvalidValue) << "too small";
  EXPECT_EQ(cub::DeviceRadixSort::SortPairs(temp, need, ki, ki, vi, vo, n), cudaErrorInvalidValue) << "in place";
  EXPECT_EQ(cub::DeviceRadixSort::SortPairs(temp, need, ki, ko, vi, vo, n, 0, 33), cudaErrorInvalidValue);
  EXPECT_EQ(cub::DeviceRadixSort::SortPairs(temp, need, ki, ko, vi, vo, n, 5, 4), cudaErrorInvalidValue);
  // Host memory where device memory belongs: a sticky illegal address naming the call, when it runs.
  std::vector<uint32_t> host_keys(n);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(temp, need, host_keys.data(), ko, vi, vo, n, 0, 32, s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaErrorIllegalAddress);
  EXPECT_NE(cudl_emu::last_error_detail().find("cub::DeviceRadixSort::SortPairs: d_keys_in"), std::string::npos)
      << cudl_emu::last_error_detail();
  cudl_emu::reset_device_state();
  cudaStreamDestroy(s);
  for (void* p : {static_cast<void*>(ki), static_cast<void*>(ko), static_cast<void*>(vi), static_cast<void*>(vo), temp})
    cudaFree(p);
}

TEST(EmuCub, SortPairsRunsInStreamOrderAndReplaysFromAGraph) {
  const size_t n = 300;
  std::vector<uint32_t> a = random_keys(n, 40, 2), b = random_keys(n, 40, 3);
  std::vector<int32_t> iota(n);
  std::iota(iota.begin(), iota.end(), 0);
  uint32_t *ki = device_copy(std::vector<uint32_t>(n)), *ko = device_copy(std::vector<uint32_t>(n));
  int32_t *vi = device_copy(iota), *vo = device_copy(std::vector<int32_t>(n));
  size_t need = 0;
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(nullptr, need, ki, ko, vi, vo, n, 0, 6), cudaSuccess);
  void* temp = nullptr;
  ASSERT_EQ(cudaMalloc(&temp, need), cudaSuccess);
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  // The copy queued before the sort is what it sorts (lazy streams run both in order at the sync).
  ASSERT_EQ(cudaMemcpyAsync(ki, a.data(), n * 4, cudaMemcpyHostToDevice, s), cudaSuccess);
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(temp, need, ki, ko, vi, vo, n, 0, 6, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(host_copy(vo, n), reference(a, 0, 6).values);
  // Captured into a graph: each replay sorts the keys the buffer holds then.
  cudaGraph_t g;
  cudaGraphExec_t ge;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(temp, need, ki, ko, vi, vo, n, 0, 6, s), cudaSuccess);
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&ge, g, 0), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(ki, b.data(), n * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(ge, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(host_copy(ko, n), reference(b, 0, 6).keys);
  EXPECT_EQ(host_copy(vo, n), reference(b, 0, 6).values);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  for (void* p : {static_cast<void*>(ki), static_cast<void*>(ko), static_cast<void*>(vi), static_cast<void*>(vo), temp})
    cudaFree(p);
}
