// backend/backend.hpp — the op table every backend fills, and the execution context: what an op call
// and the layers above (executor, prefetcher) need from a device queue, so none of them is compiled
// differently with or without CUDA. Registration is explicit (one function per backend), rejects
// duplicates, and never falls back.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <string>

#include "backend/op.hpp"

namespace cudl {

using OpFn = void (*)(const OpCall& call);
/// A backend-wide wrapper around every op function: gets the function and the call, and runs it
/// (the CPU backend widens 16-bit storage there: src/cpu/precision.cpp).
using OpAdapter = void (*)(OpFn fn, const OpCall& call);

/// One function per OpKind for one device type.
class OpTable {
 public:
  explicit OpTable(std::string backend_name) : name_(std::move(backend_name)) {}
  /// Registers `fn` for `op`; throws cudl::Error when `op` already has one.
  void add(OpKind op, OpFn fn);
  bool supports(OpKind op) const { return fns_[static_cast<int>(op)] != nullptr; }
  /// The function for `op`; throws "backend <name> does not support op <op>" when absent.
  OpFn get(OpKind op) const;
  /// Runs `call` with its op's function, through the adapter when one is set.
  void run(const OpCall& call) const {
    const OpFn fn = get(call.op);
    if (adapter_) adapter_(fn, call);
    else fn(call);
  }
  void set_adapter(OpAdapter a) { adapter_ = a; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::array<OpFn, kOpCount> fns_{};
  OpAdapter adapter_ = nullptr;
};

/// Times work queued on a context (the executor's per-op profile).
class OpTimer {
 public:
  virtual ~OpTimer() = default;
  /// Marks the start in the context's queue.
  virtual void start() = 0;
  /// Marks the end, waits for it on the host, and returns the milliseconds since start().
  virtual double stop_ms() = 0;
};

/// Work captured from a context's queue (ExecContext::begin_capture/end_capture), replayable with
/// the addresses and kernel arguments it was captured with.
class CapturedGraph {
 public:
  virtual ~CapturedGraph() = default;
  /// Queues one replay on the context it was captured from.
  virtual void launch() = 0;
};

/// A marker in a queue of device work; the host or another queue can wait until the work queued
/// before it is done. Made by ExecContext::make_event, placed by ExecContext/CopyStream::record.
class DeviceEvent {
 public:
  virtual ~DeviceEvent() = default;
  /// Blocks the host until the work before the last record() is done (returns at once if never recorded).
  virtual void synchronize() = 0;
};

/// A second queue on a context's device for host-to-device copies that overlap the context's own
/// work (the batch prefetcher). Its work is ordered against the context's only through events.
class CopyStream {
 public:
  virtual ~CopyStream() = default;
  /// Queues a copy of `bytes` from host memory `src` to device memory `dst`. `src` must stay
  /// untouched until an event recorded after the copy has completed; pinned memory
  /// (memory::PinnedBuffer) makes the copy truly asynchronous.
  virtual void copy_to_device(void* dst, const void* src, size_t bytes) = 0;
  /// Places `event` after the work queued so far on this stream.
  virtual void record(DeviceEvent& event) = 0;
  /// Later work on this stream starts after the work before `event`'s last record().
  virtual void wait(const DeviceEvent& event) = 0;
  /// Work queued on this stream uses the device pool block at `device_ptr`: the pool does not hand
  /// it out again before that work is done, even once it is freed (CachingAllocator::record_stream).
  virtual void record_use(void* device_ptr) = 0;
};

/// Everything an op needs besides its tensors: the device and, on CUDA, stream and handles; plus
/// the few device-queue services the layers above the op table use, so that none of them needs to
/// know which backend it runs on. The CPU context runs everything synchronously on the calling
/// thread; the CUDA context (src/cuda/context.hpp) queues on its stream.
class ExecContext {
 public:
  explicit ExecContext(Device device) : device_(device) {}
  virtual ~ExecContext() = default;
  ExecContext(const ExecContext&) = delete;
  ExecContext& operator=(const ExecContext&) = delete;
  Device device() const { return device_; }

  /// Blocks the host until all work queued on this context is done (CPU: nothing is ever queued).
  virtual void synchronize() = 0;
  /// A timer for one op at a time (CUDA: events on the stream; CPU: the steady clock).
  virtual std::unique_ptr<OpTimer> make_timer() = 0;

  /// Whether begin_capture/end_capture work here (CUDA: stream capture into a CUDA graph; CPU: no).
  virtual bool supports_capture() const = 0;
  /// From here on, work queued on this context by this thread is recorded, not run. Throws when
  /// capture is unsupported.
  virtual void begin_capture() = 0;
  /// Stops recording and returns the recorded work, ready to launch.
  virtual std::unique_ptr<CapturedGraph> end_capture() = 0;
  /// Stops a capture that failed midway and drops what was recorded; never throws.
  virtual void abort_capture() noexcept = 0;

  /// A new event (CPU: always complete).
  virtual std::unique_ptr<DeviceEvent> make_event() = 0;
  /// Places `event` after the work queued so far on this context.
  virtual void record(DeviceEvent& event) = 0;
  /// Later work on this context starts after the work before `event`'s last record().
  virtual void wait(const DeviceEvent& event) = 0;
  /// A new copy stream on this context's device (CPU: copies synchronously).
  virtual std::unique_ptr<CopyStream> make_copy_stream() = 0;

  /// Makes this context's device current (CUDA: cudaSetDevice) and returns what leave() needs to
  /// restore the previous one (CPU: nothing to do). Used through ContextScope.
  virtual int enter() { return -1; }
  virtual void leave(int previous) noexcept { (void)previous; }

 private:
  Device device_;
};

/// Runs a block with `ctx`'s device current and restores the previous device at its end, so work
/// queued from it lands on the context's device whatever the caller made current. The op
/// dispatch (run_op) and the executor's entry points hold one.
class ContextScope {
 public:
  explicit ContextScope(ExecContext& ctx) : ctx_(ctx), previous_(ctx.enter()) {}
  ~ContextScope() { ctx_.leave(previous_); }
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

 private:
  ExecContext& ctx_;
  int previous_;
};

/// The table of the backend for a device type (built on first use by register_*_ops).
/// Throws for CUDA when the library was built without it.
const OpTable& op_table(DeviceType type);
/// The default execution context of a device (CPU, or the CUDA context of that device index).
ExecContext& default_context(Device device);

/// Runs one op: checks every tensor is on ctx's device, then dispatches through the table.
void run_op(OpKind op, std::initializer_list<TensorView> inputs, std::initializer_list<TensorView> outputs,
            const OpAttrs& attrs = {}, ExecContext* ctx = nullptr, const char* label = "");

/// Registration, one function per backend (src/cpu/cpu_backend.cpp, src/cuda/cuda_backend.cpp).
void register_cpu_ops(OpTable& table);
void register_cuda_ops(OpTable& table);
/// The default context of CUDA device `index` (src/cuda/context.cpp; throws when the device is absent).
ExecContext& cuda_default_context(int index);

// The CUDA backend's entry points (register_cuda_ops, cuda_default_context, the device queries of
// cudl/device.hpp, the CUDA memory functions of memory/allocator.hpp, NVTX) are defined in src/cuda
// when cudl is built with CUDA, and by src/backend/cuda_absent.cpp otherwise, where each one says
// that cudl was built without CUDA. CMake compiles exactly one of the two.

}  // namespace cudl
