// tests/test_op_util.cpp — the graph utility ops (Accumulate, Increment, BatchIndices): CPU reference
// against hand-computed values, CUDA against CPU under the emulator, and argument errors.
#include <gtest/gtest.h>

#include "testing.hpp"

using namespace cudl;
using cudl::testing::all_close;
using cudl::testing::tv;

namespace {

Tensor accumulate(const Tensor& x, Tensor acc, double scale) {
  OpAttrs a;
  a.f[0] = scale;
  run_op(OpKind::Accumulate, {tv(x)}, {tv(acc)}, a);
  return acc;
}

Tensor increment(Tensor x, double f, int64_t i) {
  OpAttrs a;
  a.f[0] = f;
  a.i[0] = i;
  run_op(OpKind::Increment, {}, {tv(x)}, a);
  return x;
}

Tensor batch_indices(const Tensor& perm, const Tensor& cursor, int64_t b) {
  Tensor idx = Tensor::empty(Shape{b}, DType::i32, perm.device());
  run_op(OpKind::BatchIndices, {tv(perm), tv(cursor)}, {tv(idx)});
  return idx;
}

std::vector<int32_t> iota_perm(int64_t n, int64_t mult) {
  std::vector<int32_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>((i * mult) % n);
  return p;
}

}  // namespace

TEST(UtilCpu, HandComputedValues) {
  Tensor acc = Tensor::from_vector<float>({1, 2, 3}, Shape{3});
  accumulate(Tensor::from_vector<int32_t>({4, -5, 6}, Shape{3}), acc, 0.5);
  EXPECT_EQ(acc.to_vector<float>(), (std::vector<float>{3, -0.5f, 6}));
  accumulate(Tensor::from_vector<uint8_t>({255, 0, 1}, Shape{3}), acc, 1.0);
  EXPECT_EQ(acc.to_vector<float>(), (std::vector<float>{258, -0.5f, 7}));
  EXPECT_EQ(increment(Tensor::from_vector<int64_t>({7, -1}, Shape{2}), 0, 128).to_vector<int64_t>(),
            (std::vector<int64_t>{135, 127}));
  EXPECT_EQ(increment(Tensor::from_vector<float>({0.5f}, Shape{1}), 1.0, 0).to_vector<float>(),
            (std::vector<float>{1.5f}));
  // perm (0 3 1 4 2) with the cursor at 3: two from the end, then wrap to the start.
  Tensor perm = Tensor::from_vector(iota_perm(5, 3), Shape{5});
  Tensor idx = batch_indices(perm, Tensor::from_vector<int64_t>({3}, Shape{1}), 4);
  EXPECT_EQ(idx.to_vector<int32_t>(), (std::vector<int32_t>{4, 2, 0, 3}));
}

TEST(UtilCuda, MatchesCpu) {
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda(0);
  for (int64_t n : {1, 3, 33, 1000, 4099}) {
    Tensor xf = cudl::testing::random_tensor(Shape{n}, 3 + n), xi = cudl::testing::random_labels(n, 1000, 5 + n);
    Tensor acc = cudl::testing::random_tensor(Shape{n}, 7 + n);
    Tensor cpu = accumulate(xi, accumulate(xf, acc.clone(), 2.5), -0.25);
    Tensor dev = accumulate(xi.to(gpu), accumulate(xf.to(gpu), acc.to(gpu), 2.5), -0.25);
    EXPECT_TRUE(all_close(dev.to(Device::cpu()), cpu, 1e-6, 1e-6)) << "Accumulate n=" << n;
    std::vector<int64_t> l(n);
    for (int64_t i = 0; i < n; ++i) l[i] = i * 1000003;
    Tensor x64 = Tensor::from_vector(l, Shape{n});
    EXPECT_EQ(increment(x64.to(gpu), 0, 4097).to_vector<int64_t>(), increment(x64.clone(), 0, 4097).to_vector<int64_t>());
    EXPECT_EQ(increment(xi.to(gpu), 0, -9).to_vector<int32_t>(), increment(xi.clone(), 0, -9).to_vector<int32_t>());
    EXPECT_EQ(increment(xf.to(gpu), 0.75, 0).to_vector<float>(), increment(xf.clone(), 0.75, 0).to_vector<float>());
    Tensor perm = Tensor::from_vector(iota_perm(n, 7), Shape{n});
    for (int64_t cursor : {int64_t{0}, n / 2, n - 1, 3 * n + 1}) {
      Tensor c = Tensor::from_vector<int64_t>({cursor}, Shape{1});
      const int64_t b = std::min<int64_t>(n + 2, 300);
      EXPECT_EQ(batch_indices(perm.to(gpu), c.to(gpu), b).to_vector<int32_t>(),
                batch_indices(perm, c, b).to_vector<int32_t>())
          << "BatchIndices n=" << n << " cursor=" << cursor;
    }
  }
}

TEST(Util, BadArgumentsNameTheOp) {
  for (Device d : {Device::cpu(), Device::cuda(0)}) {
    if (d.is_cuda() && !cudl::testing::cuda_available())
      GTEST_SKIP() << "CPU part checked; the CUDA part needs a CUDA device (" << cuda_unavailable_reason() << ")";
    Tensor acc = Tensor::zeros(Shape{3}, DType::f32, d);
    EXPECT_THROW(accumulate(Tensor::zeros(Shape{4}, DType::f32, d), acc, 1), Error);
    EXPECT_THROW(accumulate(Tensor::zeros(Shape{3}, DType::f16, d), acc, 1), Error);
    try {
      increment(Tensor::zeros(Shape{2}, DType::u8, d), 1, 1);
      FAIL();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("Increment"), std::string::npos) << e.what();
    }
    EXPECT_THROW(batch_indices(Tensor::zeros(Shape{4}, DType::i64, d), Tensor::zeros(Shape{1}, DType::i64, d), 2),
                 Error);
  }
}
