// tests/test_exec_context.cpp — the ExecContext services the executor and the prefetcher use:
// synchronous on the CPU, stream-ordered on CUDA (where missing ordering shows as stale data).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "memory/pinned.hpp"
#include "testing.hpp"

using namespace cudl;
using cudl::testing::error_message;

namespace {

TEST(ExecContextCpu, CannotCaptureAndSaysSo) {
  ExecContext& ctx = default_context(Device::cpu());
  EXPECT_FALSE(ctx.supports_capture());
  const std::string msg = error_message([&] { ctx.begin_capture(); });
  EXPECT_NE(msg.find("begin_capture on cpu"), std::string::npos) << msg;
  EXPECT_NE(error_message([&] { ctx.end_capture(); }).find("end_capture on cpu"), std::string::npos);
}

TEST(ExecContextCpu, TimerMeasuresHostTime) {
  std::unique_ptr<OpTimer> timer = default_context(Device::cpu()).make_timer();
  timer->start();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const double ms = timer->stop_ms();
  EXPECT_GE(ms, 19.0);
  EXPECT_LT(ms, 5000.0);
}

TEST(ExecContextCpu, CopyStreamCopiesAtOnceAndEventsAreComplete) {
  ExecContext& ctx = default_context(Device::cpu());
  std::unique_ptr<CopyStream> copy = ctx.make_copy_stream();
  std::unique_ptr<DeviceEvent> done = ctx.make_event();
  const std::vector<int> src{1, 2, 3, 4, 5};
  std::vector<int> dst(5, 0);
  copy->copy_to_device(dst.data(), src.data(), 5 * sizeof(int));
  EXPECT_EQ(dst, src);  // before any event: the copy is synchronous
  copy->record(*done);
  ctx.wait(*done);
  done->synchronize();
  ctx.synchronize();
}

TEST(ExecContextCuda, CopyStreamIsOrderedByEvents) {
  // Pinned host data → device on the side stream; the context's stream reads it after waiting on
  // the copy's event. Without that wait the emulator's lazy streams would show the zero fill.
  CUDL_REQUIRE_CUDA();
  const Device gpu = Device::cuda(0);
  ExecContext& ctx = default_context(gpu);
  const int64_t n = 4099;
  Tensor dst = Tensor::zeros(Shape{n}, DType::f32, gpu);
  ctx.synchronize();  // the zero fill is done before the side stream writes
  memory::PinnedBuffer host(n * sizeof(float));
  for (int64_t i = 0; i < n; ++i) host.data_as<float>()[i] = static_cast<float>(i) * 0.5f - 7.f;
  std::unique_ptr<CopyStream> copy = ctx.make_copy_stream();
  std::unique_ptr<DeviceEvent> copied = ctx.make_event();
  copy->copy_to_device(dst.data(), host.data(), n * sizeof(float));
  copy->record(*copied);
  ctx.wait(*copied);
  const std::vector<float> got = dst.to(Device::cpu()).to_vector<float>();  // on the context's stream
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], static_cast<float>(i) * 0.5f - 7.f) << "index " << i;
}

TEST(ExecContextCuda, TimerAndForeignEvents) {
  CUDL_REQUIRE_CUDA();
  ExecContext& ctx = default_context(Device::cuda(0));
  EXPECT_TRUE(ctx.supports_capture());
  std::unique_ptr<OpTimer> timer = ctx.make_timer();
  timer->start();
  Tensor t = Tensor::full(Shape{1000}, 3.0, DType::f32, Device::cuda(0));
  const double ms = timer->stop_ms();
  EXPECT_GE(ms, 0.0);
  EXPECT_TRUE(std::isfinite(ms));
  std::unique_ptr<DeviceEvent> cpu_event = default_context(Device::cpu()).make_event();
  const std::string msg = error_message([&] { ctx.record(*cpu_event); });
  EXPECT_NE(msg.find("not made by a CUDA context"), std::string::npos) << msg;
}

}  // namespace
