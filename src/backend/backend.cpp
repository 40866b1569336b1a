// backend/backend.cpp — op table, dispatch, the per-device default contexts, and the CPU context
// (synchronous: its timer is the steady clock, its events are always complete, it cannot capture).
#include "backend/backend.hpp"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "cudl/error.hpp"
#include "ops/common.hpp"

namespace cudl {

const char* op_name(OpKind op) {
  const int k = static_cast<int>(op);
  return k >= 0 && k < kOpCount ? ops::kOpNames[k] : "invalid-op";  // generated from ops/op_list.inc
}

const char* math_mode_name(MathMode m) { return m == MathMode::TF32 ? "tf32" : "f32"; }

MathMode default_math_mode() {
  const char* e = std::getenv("CUDL_ALLOW_TF32");
  if (!e || !*e || std::strcmp(e, "0") == 0) return MathMode::F32;
  if (std::strcmp(e, "1") == 0) return MathMode::TF32;
  CUDL_FAIL("CUDL_ALLOW_TF32=", e, " is not 0 or 1");
}

const TensorView& OpCall::in(int k) const {
  if (k < 0 || k >= n_inputs) CUDL_FAIL(op_name(op), " (", label, "): needs input ", k, ", got ", n_inputs, " inputs");
  return inputs[k];
}

const TensorView& OpCall::out(int k) const {
  if (k < 0 || k >= n_outputs)
    CUDL_FAIL(op_name(op), " (", label, "): needs output ", k, ", got ", n_outputs, " outputs");
  return outputs[k];
}

void OpTable::add(OpKind op, OpFn fn) {
  int k = static_cast<int>(op);
  if (k < 0 || k >= kOpCount) CUDL_FAIL("backend ", name_, ": registering invalid op ", k);
  if (fns_[k]) CUDL_FAIL("backend ", name_, ": op ", op_name(op), " registered twice");
  fns_[k] = fn;
}

OpFn OpTable::get(OpKind op) const {
  if (!supports(op)) CUDL_FAIL("backend ", name_, " does not support op ", op_name(op));
  return fns_[static_cast<int>(op)];
}

namespace {

class SteadyClockTimer : public OpTimer {
 public:
  void start() override { t0_ = std::chrono::steady_clock::now(); }
  double stop_ms() override {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
};

/// Work on the CPU is done when the call that queues it returns, so an event is always complete.
class CompleteEvent : public DeviceEvent {
 public:
  void synchronize() override {}
};

/// Copies on the CPU are plain memcpy, done before copy_to_device returns.
class SyncCopyStream : public CopyStream {
 public:
  void copy_to_device(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void record(DeviceEvent&) override {}
  void wait(const DeviceEvent&) override {}
  void record_use(void*) override {}
};

class CpuContext : public ExecContext {
 public:
  CpuContext() : ExecContext(Device::cpu()) {}
  void synchronize() override {}
  std::unique_ptr<OpTimer> make_timer() override { return std::make_unique<SteadyClockTimer>(); }
  bool supports_capture() const override { return false; }
  void begin_capture() override {
    CUDL_FAIL("begin_capture on cpu: the CPU backend cannot capture work into a replayable graph "
              "(supports_capture() is false)");
  }
  std::unique_ptr<CapturedGraph> end_capture() override {
    CUDL_FAIL("end_capture on cpu: the CPU backend cannot capture work into a replayable graph");
  }
  void abort_capture() noexcept override {}
  std::unique_ptr<DeviceEvent> make_event() override { return std::make_unique<CompleteEvent>(); }
  void record(DeviceEvent&) override {}
  void wait(const DeviceEvent&) override {}
  std::unique_ptr<CopyStream> make_copy_stream() override { return std::make_unique<SyncCopyStream>(); }
};

}  // namespace

const OpTable& op_table(DeviceType type) {
  if (type == DeviceType::CPU) {
    static const OpTable cpu = [] {
      OpTable t("cpu");
      register_cpu_ops(t);
      return t;
    }();
    return cpu;
  }
  static const OpTable cuda = [] {
    OpTable t("cuda");
    register_cuda_ops(t);  // throws in a build without CUDA (backend/cuda_absent.cpp)
    return t;
  }();
  return cuda;
}

ExecContext& default_context(Device device) {
  if (device.is_cpu()) {
    static CpuContext cpu;
    return cpu;
  }
  return cuda_default_context(device.index());
}

void run_op(OpKind op, std::initializer_list<TensorView> inputs, std::initializer_list<TensorView> outputs,
            const OpAttrs& attrs, ExecContext* ctx, const char* label) {
  Device dev = Device::cpu();
  bool found = false;
  for (const TensorView* group : {inputs.begin(), outputs.begin()}) {
    const TensorView* end = group == inputs.begin() ? inputs.end() : outputs.end();
    for (const TensorView* v = group; v != end; ++v) {
      if (!v->defined()) continue;
      if (!found) {
        dev = v->device;
        found = true;
      } else if (v->device != dev) {
        CUDL_FAIL(op_name(op), " (", label, "): tensors on different devices: ", dev, " and ", v->device,
                  " (shape ", v->shape, ")");
      }
    }
  }
  if (!ctx) ctx = &default_context(dev);
  if (found && ctx->device() != dev)
    CUDL_FAIL(op_name(op), " (", label, "): tensors on ", dev, " but the context is for ", ctx->device());
  OpCall call;
  call.op = op;
  call.inputs = inputs.begin();
  call.n_inputs = static_cast<int>(inputs.size());
  call.outputs = outputs.begin();
  call.n_outputs = static_cast<int>(outputs.size());
  call.attrs = attrs;
  call.ctx = ctx;
  call.label = label;
  call.math = default_math_mode();
  ContextScope scope(*ctx);
  op_table(ctx->device().type()).run(call);
}

}  // namespace cudl
