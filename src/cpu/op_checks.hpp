// cpu/op_checks.hpp — small argument checks used by the elementwise, reduce and softmax families'
// check functions; each throws cudl::Error naming the op, the call's label, the tensor and its shape.
#pragma once

#include <string>

#include "backend/op.hpp"
#include "cudl/error.hpp"

namespace cudl::op_checks {

/// "Binary (layer/add)" or "Binary" when the call has no label.
inline std::string who(const OpCall& call) {
  std::string s = op_name(call.op);
  if (call.label && call.label[0]) s += std::string(" (") + call.label + ")";
  return s;
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

}  // namespace cudl::op_checks
