// ops/common.hpp — what every op contract uses: the op list's names and arities (generated from
// ops/op_list.inc, with the generic arity check) and small argument checks that throw cudl::Error
// naming the op, the call's label, the tensor and its shape.
#pragma once

#include <string>

#include "backend/op.hpp"
#include "cudl/error.hpp"

namespace cudl {
namespace ops {

/// Arity bound meaning "any number of tensors" (variadic ops: Concat, the optimizers).
constexpr int kAnyCount = 1 << 20;

/// Each op's name, in OpKind order (generated from ops/op_list.inc).
constexpr const char* kOpNames[] = {
#define X(name, min_in, max_in, min_out, max_out) #name,
#include "ops/op_list.inc"
#undef X
};
static_assert(sizeof(kOpNames) / sizeof(kOpNames[0]) == kOpCount, "ops/op_list.inc out of step with OpKind");

/// How many inputs and outputs an op takes (inclusive bounds; kAnyCount = unbounded).
struct OpArity {
  int min_in, max_in, min_out, max_out;
};
constexpr OpArity kOpArity[] = {
#define X(name, min_in, max_in, min_out, max_out) {min_in, max_in, min_out, max_out},
#include "ops/op_list.inc"
#undef X
};
static_assert(sizeof(kOpArity) / sizeof(kOpArity[0]) == kOpCount, "ops/op_list.inc out of step with OpKind");

constexpr const OpArity& arity_of(OpKind op) { return kOpArity[static_cast<int>(op)]; }

}  // namespace ops

namespace op_checks {

/// "Binary (layer/add)" or "Binary" when the call has no label.
inline std::string who(const OpCall& call) {
  std::string s = op_name(call.op);
  if (call.label && call.label[0]) s += std::string(" (") + call.label + ")";
  return s;
}

/// Throws "Op (label): msg".
[[noreturn]] inline void fail_at(const OpCall& call, const std::string& msg) {
  CUDL_FAIL(op_name(call.op), " (", call.label, "): ", msg);
}

/// Throws unless the call has between min and max inputs and between min and max outputs.
inline void counts(const OpCall& call, int min_in, int max_in, int min_out, int max_out) {
  if (call.n_inputs < min_in || call.n_inputs > max_in || call.n_outputs < min_out || call.n_outputs > max_out)
    CUDL_FAIL(who(call), ": expected ", min_in, "..", max_in, " inputs and ", min_out, "..", max_out, " outputs, got ",
              call.n_inputs, " and ", call.n_outputs);
}

/// Input k, which must be given (defined).
inline const TensorView& need_in(const OpCall& call, int k, const char* name) {
  if (!call.has_in(k)) CUDL_FAIL(who(call), ": input ", k, " (", name, ") is required but was not given");
  return call.inputs[k];
}

/// Output k, which must be given (defined).
inline const TensorView& need_out(const OpCall& call, int k, const char* name) {
  if (!call.has_out(k)) CUDL_FAIL(who(call), ": output ", k, " (", name, ") is required but was not given");
  return call.outputs[k];
}

/// Input k, or an undefined view when it was not given.
inline TensorView opt_in(const OpCall& call, int k) { return call.has_in(k) ? call.inputs[k] : TensorView{}; }

/// Output k, or an undefined view when it was not given.
inline TensorView opt_out(const OpCall& call, int k) { return call.has_out(k) ? call.outputs[k] : TensorView{}; }

inline void dtype(const OpCall& call, const TensorView& v, const char* name, DType expected) {
  if (v.dtype != expected)
    CUDL_FAIL(who(call), ": ", name, " ", v.shape, " has dtype ", v.dtype, ", expected ", expected);
}

/// Throws unless v has shape `expected`; `why` says where the expectation comes from ("same as x").
inline void shape(const OpCall& call, const TensorView& v, const char* name, const Shape& expected,
                  const std::string& why) {
  if (v.shape != expected)
    CUDL_FAIL(who(call), ": ", name, " has shape ", v.shape, ", expected ", expected, " (", why, ")");
}

/// The generic arity check: throws unless the call's input and output counts are within the bounds
/// that ops/op_list.inc gives its op.
inline void arity(const OpCall& call) {
  const int k = static_cast<int>(call.op);
  if (k < 0 || k >= kOpCount) CUDL_FAIL("invalid op ", k, " (", call.label, ")");
  const ops::OpArity& a = ops::kOpArity[k];
  if (call.n_inputs >= a.min_in && call.n_inputs <= a.max_in && call.n_outputs >= a.min_out &&
      call.n_outputs <= a.max_out)
    return;
  if (a.max_in == ops::kAnyCount)
    CUDL_FAIL(who(call), ": expected at least ", a.min_in, " inputs and ", a.min_out, "..", a.max_out,
              " outputs, got ", call.n_inputs, " and ", call.n_outputs);
  counts(call, a.min_in, a.max_in, a.min_out, a.max_out);
}

}  // namespace op_checks
}  // namespace cudl
