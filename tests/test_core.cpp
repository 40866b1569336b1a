// tests/test_core.cpp — Shape, DType, Device, Tensor basics and the op table's registration rules.
#include <gtest/gtest.h>

#include "backend/backend.hpp"
#include "testing.hpp"

using namespace cudl;

TEST(Shape, NumelStridesAndPrinting) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.strides(), (std::vector<int64_t>{12, 4, 1}));
  EXPECT_EQ(s.str(), "(2, 3, 4)");
  EXPECT_EQ(Shape{5}.str(), "(5,)");
  EXPECT_EQ(s[-1], 4);
  EXPECT_THROW(s[3], Error);
}

TEST(Tensor, EmptyWhoseByteCountOverflowsIsAnError) {
  // 2^62 f32 elements fit in int64 but their 2^64 bytes do not (they wrapped to 0 before).
  const std::string m =
      cudl::testing::error_message([] { Tensor::empty(Shape{int64_t(1) << 31, int64_t(1) << 31}, DType::f32); });
  EXPECT_NE(m.find("Tensor::empty: (2147483648, 2147483648) of f32 overflows 2^63 bytes"), std::string::npos) << m;
}

TEST(Shape, NumelThatOverflowsIsAnErrorNamingTheDims) {
  // 2^32 * 2^32 = 2^64 wraps to 0 in int64 arithmetic (undefined behaviour): an error instead.
  const int64_t big = int64_t(1) << 32;
  std::string m = cudl::testing::error_message([&] { Shape{3, big, big}.numel(); });
  EXPECT_NE(m.find("(3, 4294967296, 4294967296)"), std::string::npos) << m;
  EXPECT_NE(m.find("overflow"), std::string::npos) << m;
  m = cudl::testing::error_message([&] { Shape{int64_t(1) << 31, int64_t(1) << 31, 2}.numel(); });  // 2^63
  EXPECT_NE(m.find("overflow"), std::string::npos) << m;
  // The largest products that fit still work, and a zero dimension makes zero however big the rest.
  EXPECT_EQ((Shape{int64_t(1) << 31, int64_t(1) << 31}.numel()), int64_t(1) << 62);
  EXPECT_EQ((Shape{INT64_MAX, 1}.numel()), INT64_MAX);
  EXPECT_EQ((Shape{int64_t(1) << 62, int64_t(1) << 62, 0}.numel()), 0);
  EXPECT_EQ(Shape{}.numel(), 1);
}

TEST(Shape, BroadcastNamesBothShapes) {
  EXPECT_EQ(broadcast_shapes(Shape{4, 1, 3}, Shape{5, 1}), (Shape{4, 5, 3}));
  try {
    broadcast_shapes(Shape{2, 3}, Shape{4, 3}, "add");
    FAIL() << "no error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("add"), std::string::npos) << m;
    EXPECT_NE(m.find("(2, 3)"), std::string::npos) << m;
    EXPECT_NE(m.find("(4, 3)"), std::string::npos) << m;
  }
}

TEST(DType, NamesAndSizes) {
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_from_name("float32"), DType::f32);
  EXPECT_THROW(dtype_from_name("f8"), Error);
}

TEST(Device, ParseAndQueriesAnswerCleanly) {
  EXPECT_EQ(Device::parse("cuda:1"), Device::cuda(1));
  EXPECT_THROW(Device::parse("gpu"), Error);
  const int n = cuda_device_count();
  if (n == 0) {
    EXPECT_EQ(cuda_unavailable_reason().rfind("no CUDA device: ", 0), 0u) << cuda_unavailable_reason();
    EXPECT_THROW(cuda_device_info(0), Error);
  } else {
    DeviceInfo d = cuda_device_info(0);
    EXPECT_FALSE(d.name.empty());
    EXPECT_GT(d.total_memory, 0u);
  }
  EXPECT_GE(describe_devices().size(), 2u);
}

TEST(Tensor, FillCopyPrint) {
  Tensor t = Tensor::full(Shape{2, 3}, 1.5);
  EXPECT_EQ(t.to_vector<float>(), std::vector<float>(6, 1.5f));
  Tensor u = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, Shape{2, 3});
  t.copy_from(u);
  EXPECT_EQ(t.item(5), 6.0);
  EXPECT_NE(u.str().find("[[1, 2, 3],\n [4, 5, 6]]"), std::string::npos) << u.str();
  Tensor h = Tensor::full(Shape{3}, 0.1, DType::f16);
  EXPECT_NEAR(h.item(0), 0.1, 1e-4);
  Tensor b = Tensor::full(Shape{3}, -2.5, DType::bf16);
  EXPECT_EQ(b.item(2), -2.5);
}

TEST(Tensor, MismatchesNameBothSides) {
  Tensor a = Tensor::zeros(Shape{2, 3});
  Tensor b = Tensor::zeros(Shape{3, 2});
  try {
    a.copy_from(b);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("(2, 3)"), std::string::npos) << m;
    EXPECT_NE(m.find("(3, 2)"), std::string::npos) << m;
  }
  Tensor c = Tensor::zeros(Shape{2, 3}, DType::i32);
  EXPECT_THROW(a.copy_from(c), Error);
  EXPECT_THROW(a.data_as<int32_t>(), Error);
  EXPECT_THROW(a.reshape(Shape{5}), Error);
}

TEST(Tensor, DeviceRoundTrip) {
  CUDL_REQUIRE_CUDA();
  Tensor a = Tensor::from_vector<float>({1, -2, 3.5f}, Shape{3});
  Tensor d = a.to(Device::cuda(0));
  EXPECT_EQ(d.device(), Device::cuda(0));
  d.fill(7);
  EXPECT_EQ(d.to(Device::cpu()).to_vector<float>(), std::vector<float>(3, 7.f));
  Tensor d2 = a.to(Device::cuda(0));
  EXPECT_EQ(d2.to_vector<float>(), a.to_vector<float>());
}

namespace {
void dummy_op(const OpCall&) {}
}  // namespace

TEST(OpTable, RejectsDuplicatesAndUnsupported) {
  OpTable t("test");
  EXPECT_FALSE(t.supports(OpKind::Unary));
  t.add(OpKind::Unary, dummy_op);
  EXPECT_TRUE(t.supports(OpKind::Unary));
  EXPECT_THROW(t.add(OpKind::Unary, dummy_op), Error);
  try {
    t.get(OpKind::Conv2d);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not support op Conv2d"), std::string::npos) << e.what();
  }
}
