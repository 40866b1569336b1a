// cpu/precision.cpp — the CPU reference of 16-bit storage: an op listed in ops::storage_slots() that
// gets bf16/f16 tensors runs its f32 function on widened copies, and what it wrote is rounded back
// to nearest even. This is the definition of every op in bf16/f16 ("fp32 math, 16-bit storage, round
// on every store") that the CUDA kernels are compared with.
#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/backend.hpp"
#include "core/half.hpp"
#include "ops/precision.hpp"

namespace cudl {
namespace {

void widen(const TensorView& v, float* out) {
  const int64_t n = v.numel();
  const uint16_t* h = v.as<const uint16_t>();
  if (v.dtype == DType::bf16)
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_bits_to_float(h[i]);
  else
    for (int64_t i = 0; i < n; ++i) out[i] = half_bits_to_float(h[i]);
}

void narrow(const float* in, const TensorView& v) {
  const int64_t n = v.numel();
  uint16_t* h = v.as<uint16_t>();
  if (v.dtype == DType::bf16)
    for (int64_t i = 0; i < n; ++i) h[i] = float_to_bf16_bits(in[i]);
  else
    for (int64_t i = 0; i < n; ++i) h[i] = float_to_half_bits(in[i]);
}

void storage_adapter(OpFn fn, const OpCall& call) {
  const ops::StorageSlots slots = ops::storage_slots(call.op);
  if (!slots.any()) return fn(call);
  const DType st = ops::check_storage(call);
  if (st == DType::f32 || slots.copies) return fn(call);  // data movement copies 16-bit elements as they are
  // Widen every 16-bit tensor (outputs too: ops that accumulate into an output read it first).
  std::vector<TensorView> in(call.inputs, call.inputs + call.n_inputs);
  std::vector<TensorView> out(call.outputs, call.outputs + call.n_outputs);
  std::vector<std::vector<float>> buf;
  buf.reserve(in.size() + out.size());
  auto wide = [&](TensorView& v) {
    if (!v.defined() || !ops::is_16bit_float(v.dtype)) return;
    buf.emplace_back(std::max<size_t>(1, static_cast<size_t>(v.numel())));  // an empty tensor stays defined
    widen(v, buf.back().data());
    v.data = buf.back().data();
    v.dtype = DType::f32;
  };
  for (TensorView& v : in) wide(v);
  for (TensorView& v : out) wide(v);
  OpCall c = call;
  c.inputs = in.data();
  c.outputs = out.data();
  fn(c);
  // Outputs only: listed ops never write their inputs. An output sharing an input's bytes (in place)
  // gets the output's values, as it would on the device.
  for (int k = 0; k < call.n_outputs; ++k)
    if (call.outputs[k].defined() && ops::is_16bit_float(call.outputs[k].dtype))
      narrow(out[k].as<const float>(), call.outputs[k]);
}

}  // namespace

void set_cpu_storage_adapter(OpTable& t) { t.set_adapter(storage_adapter); }

}  // namespace cudl
