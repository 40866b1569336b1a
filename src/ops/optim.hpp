// cpu/optim.hpp — argument checks of the optimizer op family, shared by the CPU reference and the
// CUDA backend so both accept and reject exactly the same calls.
#pragma once

#include "backend/op.hpp"

namespace cudl {

/// A validated multi-tensor call: `n` groups of `depth` f32 tensors starting at input `first`;
/// the tensors of a group share the parameter's shape. Optimizer steps also have a valid hyper
/// tensor (input 0: f32, >= 2 elements); ClipGradNorm a total_norm output (f32[1]).
struct OptimGroups {
  int first = 0;
  int depth = 0;
  int n = 0;
  const TensorView& at(const OpCall& c, int group, int d) const { return c.inputs[first + group * depth + d]; }
};
OptimGroups check_optim_call(const OpCall& call);

}  // namespace cudl
