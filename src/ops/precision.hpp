// ops/precision.hpp — which op slots hold the model's 16-bit storage type in bf16/f16 mode, and the
// check both backends run on them. One table for both backends, so the graph a bf16 model builds is
// the same on the CPU and on CUDA.
#pragma once

#include <cstdint>

#include "backend/op.hpp"

// Storage rules (CompileOptions::precision bf16 / f16; see docs/performance.md "Mixed precision"):
// an op listed in storage_slots() reads and writes the float tensors of the slots it names in one
// storage type: all f32, all bf16 or all f16 (never mixed); its other float slots stay f32 (norm
// statistics, losses). Math is fp32 whatever the storage: every load widens, every store rounds to
// nearest even. Ops not listed take f32 only; the model builder inserts Cast nodes around them
// (nn/layers.cpp, BuildContext::node). The CPU reference implements every listed op by widening
// its 16-bit tensors to f32, running the f32 function and rounding what it wrote back
// (src/cpu/precision.cpp), which is the definition the CUDA kernels are compared with.

namespace cudl {
namespace ops {

/// Bit k of `in` / `out`: input / output slot k follows the storage type. Both 0: f32 only.
/// `f32_out`: outputs among `out` that may also be f32 when the storage is 16-bit (a GEMM that
/// writes its fp32 result directly: LinearBackward's weight and bias gradients into f32 masters).
/// A variadic op (Concat) lists its inputs from slot 31 on with bit 31: input(k) for k >= 31 reads it.
/// `copies`: the op copies elements of any dtype (data movement), so the CPU runs it on the 16-bit
/// tensors as they are, bit patterns (NaN payloads) included, instead of widening them.
struct StorageSlots {
  uint32_t in = 0, out = 0, f32_out = 0;
  bool copies = false;
  bool any() const { return in != 0 || out != 0; }
  bool input(int k) const { return bit(in, k); }
  bool output(int k) const { return bit(out, k); }
  bool f32_output(int k) const { return bit(f32_out, k); }
  static bool bit(uint32_t mask, int k) { return (mask >> (k < 31 ? k : 31) & 1u) != 0; }
};

/// The slots of `op` that follow the storage type ({0, 0} for ops that are f32 only).
StorageSlots storage_slots(OpKind op);

inline bool is_16bit_float(DType t) { return t == DType::bf16 || t == DType::f16; }

/// The storage type of a call of an op listed in storage_slots(): the dtype of its first defined
/// float tensor in a storage slot (f32 when it has none). Throws, naming the op, the slot and both
/// dtypes, unless every float tensor in a storage slot has that dtype, it is f32, bf16 or f16, and
/// every float tensor outside the storage slots is f32.
DType check_storage(const OpCall& call);

}  // namespace ops
}  // namespace cudl
