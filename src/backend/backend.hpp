// backend/backend.hpp — the op table every backend fills, and the per-call execution context.
// Registration is explicit (one function per backend), rejects duplicates, and never falls back.
#pragma once

#include <array>
#include <string>

#include "backend/op.hpp"

namespace cudl {

using OpFn = void (*)(const OpCall& call);

/// One function per OpKind for one device type.
class OpTable {
 public:
  explicit OpTable(std::string backend_name) : name_(std::move(backend_name)) {}
  /// Registers `fn` for `op`; throws cudl::Error when `op` already has one.
  void add(OpKind op, OpFn fn);
  bool supports(OpKind op) const { return fns_[static_cast<int>(op)] != nullptr; }
  /// The function for `op`; throws "backend <name> does not support op <op>" when absent.
  OpFn get(OpKind op) const;
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::array<OpFn, kOpCount> fns_{};
};

/// Everything an op needs besides its tensors: the device and, on CUDA, stream and handles.
class ExecContext {
 public:
  explicit ExecContext(Device device) : device_(device) {}
  virtual ~ExecContext() = default;
  Device device() const { return device_; }

 private:
  Device device_;
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

}  // namespace cudl
