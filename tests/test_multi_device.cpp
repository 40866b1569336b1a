// tests/test_multi_device.cpp — cudl on two CUDA devices in one process (ctest runs it with
// CUDL_EMU_DEVICES=2): every op, copy, event and library handle of a context runs with the
// context's device current, whatever device the caller made current, and the caller's current
// device is left as it was. Under the emulator a launch on a stream of another device fails
// (cudaErrorInvalidResourceHandle) and a kernel touching another device's memory faults, as on a
// real multi-GPU machine.
#include <gtest/gtest.h>

#if CUDL_WITH_CUDA
#include <cuda_runtime.h>

#include <vector>

#include "cuda/context.hpp"
#include "memory/pinned.hpp"
#include "testing.hpp"
#endif

#if CUDL_WITH_CUDA
using namespace cudl;
using cudl::testing::tv;

namespace {

class MultiDevice : public ::testing::Test {
 protected:
  void SetUp() override {
    CUDL_REQUIRE_CUDA();
    if (cuda_device_count() < 2)
      GTEST_SKIP() << "needs 2 CUDA devices (ctest sets CUDL_EMU_DEVICES=2); this run has " << cuda_device_count();
    ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  }
  void TearDown() override { (void)cudaSetDevice(0); }
  static int current() {
    int d = -1;
    EXPECT_EQ(cudaGetDevice(&d), cudaSuccess);
    return d;
  }
};

Dataset blobs(int64_t n, uint64_t seed) { return cudl::testing::separable_blobs(n, 8, 3, 2.f, 0.5f, seed); }

Sequential mlp(const std::string& tag) {
  return Sequential(Shape{8}, {layers::Dense(16, "relu"), layers::Dense(3)}, tag);
}

// Trains the same model (same code, seed and data) on `device` while `current` is the caller's
// current device; returns its final weights.
std::vector<float> train_on(Device device, int current, DataPlacement placement = DataPlacement::Device) {
  EXPECT_EQ(cudaSetDevice(current), cudaSuccess);
  Sequential m = mlp("md");
  m.compile(cudl::testing::classifier_options(device, optim::Adam(0.02), 3));
  FitOptions f = cudl::testing::quiet_fit(2, 16, 9);  // 3 steps per epoch: eager, captured, replayed
  f.data_placement = placement;
  History h = m.fit(blobs(48, 7), f);
  EXPECT_LT(h.metrics["loss"].back(), h.metrics["loss"].front());
  Tensor p = m.predict(blobs(8, 8).x);
  EXPECT_EQ(p.device(), Device::cpu());
  int d = -1;
  EXPECT_EQ(cudaGetDevice(&d), cudaSuccess);
  EXPECT_EQ(d, current) << "training on " << device << " changed the caller's current device";
  return cudl::testing::flat_weights(m);
}

TEST_F(MultiDevice, TrainOnDevice1WhileDevice0IsCurrentAndTheReverse) {
  const std::vector<float> on0 = train_on(Device::cuda(0), 0);
  const std::vector<float> on1 = train_on(Device::cuda(1), 0);
  const std::vector<float> on0_from1 = train_on(Device::cuda(0), 1);
  ASSERT_FALSE(on0.empty());
  EXPECT_EQ(on1, on0) << "the same model trained on device 1 must end with the same weights";
  EXPECT_EQ(on0_from1, on0);
  // Batches streamed through pinned buffers, a copy stream and events of device 1.
  EXPECT_EQ(train_on(Device::cuda(1), 0, DataPlacement::Stream), on0);
}

Tensor add(const Tensor& a, const Tensor& b) {
  Tensor c = Tensor::empty(a.shape(), DType::f32, a.device());
  OpAttrs at;
  at.i[0] = static_cast<int64_t>(BinaryOp::Add);
  run_op(OpKind::Binary, {tv(a), tv(b)}, {tv(c)}, at);
  return c;
}

TEST_F(MultiDevice, OpsOnTwoDevicesInterleaved) {
  std::vector<float> x(1000), y(1000), want(1000);
  for (int i = 0; i < 1000; ++i) {
    x[i] = 0.5f * i;
    y[i] = 3.f - i;
    want[i] = x[i] + y[i];
  }
  Tensor a0 = Tensor::from_vector(x, Shape{1000}, Device::cuda(0));
  Tensor b0 = Tensor::from_vector(y, Shape{1000}, Device::cuda(0));
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  Tensor a1 = Tensor::from_vector(x, Shape{1000}, Device::cuda(1));
  Tensor b1 = Tensor::from_vector(y, Shape{1000}, Device::cuda(1));
  Tensor c0 = add(a0, b0);  // device 1 current
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  Tensor c1 = add(a1, b1);  // device 0 current
  Tensor d1 = add(c1, b1);
  Tensor d0 = add(c0, b0);
  EXPECT_EQ(current(), 0);
  EXPECT_EQ(c0.to(Device::cpu()).to_vector<float>(), want);
  EXPECT_EQ(c1.to(Device::cpu()).to_vector<float>(), want);
  EXPECT_EQ(d0.to(Device::cpu()).to_vector<float>(), d1.to(Device::cpu()).to_vector<float>());
  EXPECT_THROW(add(a0, b1), Error) << "tensors on two devices in one op";
}

TEST_F(MultiDevice, TensorsMoveAndCopyBetweenDevices) {
  std::vector<float> x(777);
  for (int i = 0; i < 777; ++i) x[i] = 1.f / (1 + i);
  Tensor a0 = Tensor::from_vector(x, Shape{777}, Device::cuda(0));
  ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
  Tensor a1 = a0.to(Device::cuda(1));
  EXPECT_EQ(a1.device(), Device::cuda(1));
  Tensor back = Tensor::zeros(Shape{777}, DType::f32, Device::cuda(0));  // a fill kernel on device 0
  EXPECT_EQ(current(), 1);
  Tensor sum1 = add(a1, a1);      // on device 1
  Tensor sum0 = sum1.to(Device::cuda(0));
  EXPECT_EQ(current(), 1);
  std::vector<float> twice(777);
  for (int i = 0; i < 777; ++i) twice[i] = x[i] + x[i];
  EXPECT_EQ(a1.to(Device::cpu()).to_vector<float>(), x);
  EXPECT_EQ(sum0.to(Device::cpu()).to_vector<float>(), twice);
  EXPECT_EQ(back.to(Device::cpu()).to_vector<float>(), std::vector<float>(777, 0.f));
}

TEST_F(MultiDevice, EventsAndCopyStreamsBelongToTheirContextsDevice) {
  ExecContext& c1 = default_context(Device::cuda(1));
  ASSERT_EQ(current(), 0);
  std::unique_ptr<DeviceEvent> e = c1.make_event();
  std::unique_ptr<CopyStream> copy = c1.make_copy_stream();
  EXPECT_EQ(current(), 0);
  Tensor t = Tensor::zeros(Shape{64}, DType::f32, Device::cuda(1));
  std::vector<float> src(64, 2.5f);
  copy->copy_to_device(t.data(), src.data(), 64 * sizeof(float));
  copy->record(*e);  // an event of device 1 on a stream of device 1
  c1.wait(*e);
  c1.record(*e);
  e->synchronize();
  EXPECT_EQ(t.to(Device::cpu()).to_vector<float>(), src);
}

TEST_F(MultiDevice, PinnedPoolServesBothDevices) {
  CudaContext& c0 = CudaContext::get(0);
  CudaContext& c1 = CudaContext::get(1);
  // Uploads only (no kernels), so what is checked is the pool's events on both devices' streams.
  Tensor t0 = Tensor::from_vector(std::vector<float>(256, 0.f), Shape{256}, Device::cuda(0));
  Tensor t1 = Tensor::from_vector(std::vector<float>(256, 0.f), Shape{256}, Device::cuda(1));
  empty_pinned_cache();
  const MemoryStats before = pinned_memory_stats();
  for (int round = 0; round < 3; ++round) {
    for (auto [ctx, t] : {std::pair<CudaContext*, Tensor*>{&c1, &t1}, {&c0, &t0}}) {
      memory::PinnedBuffer b(256 * sizeof(float));
      for (int i = 0; i < 256; ++i) b.data_as<float>()[i] = float(round * 1000 + i);
      ASSERT_EQ(cudaMemcpyAsync(t->data(), b.data(), b.size(), cudaMemcpyHostToDevice, ctx->stream()), cudaSuccess);
      b.record_stream(ctx->stream());  // released when the copy on that device's stream is done
    }
    for (Tensor* t : {&t0, &t1}) {
      std::vector<float> v = t->to(Device::cpu()).to_vector<float>();
      EXPECT_EQ(v[0], float(round * 1000));
      EXPECT_EQ(v[255], float(round * 1000 + 255));
    }
  }
  // Every buffer went back to the pool's free lists, so emptying the cache returns all of it (a
  // failed event record on a stream of another device loses the block: PinnedBuffer's destructor
  // can only log the error, and the segment stays reserved for ever).
  empty_pinned_cache();
  const MemoryStats after = pinned_memory_stats();
  EXPECT_EQ(after.num_frees - before.num_frees, 6u);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(after.reserved_bytes, before.reserved_bytes);
}

}  // namespace
#else
TEST(MultiDevice, NeedsTheCudaBackend) {
  GTEST_SKIP() << "cudl was built without CUDA (CUDL_WITH_CUDA=OFF): no devices to run on";
}
#endif

