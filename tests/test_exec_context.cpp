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

#if defined(CUDL_EMULATED)
#include "emu/emu.hpp"

// Copies between device buffers, uploads from pageable memory and fills are stream-ordered: no
// host synchronisation, no host buffer for a fill. Reading back still waits (the host needs it).
TEST(StreamOrderedCopies, DeviceCopiesUploadsAndFillsDoNotSynchronise) {
  CUDL_REQUIRE_CUDA();
  const Device dev = Device::cuda(0);
  Tensor a = Tensor::empty(Shape{1000}, DType::f32, dev), b = Tensor::empty(Shape{1000}, DType::f32, dev);
  Tensor c = Tensor::empty(Shape{3, 5}, DType::i64, dev);
  std::vector<float> host(1000);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i) * 0.5f;
  Tensor h = Tensor::from_vector(host, Shape{1000});
  (void)a.to_vector<float>();  // the allocations' queued work is done
  cudl_emu::reset_counters();
  a.copy_from(h);  // pageable host -> device: staged before the call returns
  h.fill(-1.0);    // so a later host write does not show in a
  b.copy_from(a);  // device -> device
  a.fill(2.5);
  c.fill(-7);
  EXPECT_EQ(cudl_emu::counters().syncs, 0u);
  EXPECT_EQ(b.to_vector<float>(), host);  // waits: everything queued has run now
  const auto k = cudl_emu::counters();
  EXPECT_GE(k.syncs, 1u) << "reading back waits";
  EXPECT_EQ(k.memcpy_h2d, 1u) << "the upload only; fills run a kernel, not a host buffer copy";
  EXPECT_EQ(k.memcpy_d2d, 1u);
  EXPECT_EQ(k.memcpy_d2h, 1u);
  EXPECT_EQ(a.to_vector<float>(), std::vector<float>(1000, 2.5f));
  EXPECT_EQ(c.to_vector<int64_t>(), std::vector<int64_t>(15, -7));
  Tensor half = Tensor::empty(Shape{7}, DType::f16, dev), bytes = Tensor::empty(Shape{9}, DType::u8, dev);
  half.fill(1.0);
  bytes.fill(300);  // saturates like element_bytes
  for (int64_t i = 0; i < 7; ++i) EXPECT_EQ(half.item(i), 1.0);
  EXPECT_EQ(bytes.to_vector<uint8_t>(), std::vector<uint8_t>(9, 255));
}
#endif

#if defined(CUDL_EMULATED)
#include <cublas_v2.h>

#include "cuda/context.hpp"

// The context's cuBLAS handle carries a workspace of its own, so a GEMM captured into a CUDA
// graph (the im2col convolution fallback's) allocates nothing: without it cuBLAS would put a
// cudaMallocAsync into every captured graph.
TEST(CublasWorkspace, AGemmCapturedOnTheContextStreamAllocatesNothing) {
  CUDL_REQUIRE_CUDA();
  CudaContext& ctx = CudaContext::get(0);
  cublasHandle_t h = ctx.cublas();
  Tensor a = Tensor::full(Shape{8, 8}, 1.0, DType::f32, Device::cuda(0));
  Tensor c = Tensor::zeros(Shape{8, 8}, DType::f32, Device::cuda(0));
  const float one = 1.f, zero = 0.f;
  (void)c.to_vector<float>();
  cudl_emu::reset_counters();
  auto graph = cudl::testing::capture(ctx, [&] {
    ASSERT_EQ(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, static_cast<const float*>(a.data()), 8,
                          static_cast<const float*>(a.data()), 8, &zero, static_cast<float*>(c.data()), 8),
              CUBLAS_STATUS_SUCCESS);
  });
  EXPECT_EQ(cudl_emu::counters().mallocs, 0u) << "cuBLAS allocated a workspace inside the capture";
  graph->launch();
  EXPECT_EQ(c.to_vector<float>(), std::vector<float>(64, 8.f));
}
#endif

// Work still queued when the process exits (a fill nobody waited for) runs before the library's
// pools, contexts and kernel names go away, and the emulator can still run it then (its executor
// outlives the thread_locals). A failure shows at exit: this executable crashes (the emulator's
// fibers were gone) or valgrind reports a freed kernel name (teardown_under_valgrind).
TEST(Teardown, WorkQueuedAtExitRunsBeforeTheLibraryGoesAway) {
  CUDL_REQUIRE_CUDA();
  Tensor t = Tensor::empty(Shape{1 << 16}, DType::f32, Device::cuda(0));
  t.fill(2.0);
  EXPECT_EQ(t.item(7), 2.0);  // a kernel has run on this thread (its emulated executor exists)
  t.fill(1.0);                // queued; nothing waits for it
}
