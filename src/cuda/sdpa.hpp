// cuda/sdpa.hpp — cuDNN's fused attention for the Attention op's forward: the graph API's SDPA
// forward operation (one cuDNN op: o and the log-sum-exp statistics from q, k, v and the scale) on
// the tensor cores, for 16-bit calls it can take. The backward stays on cudl's fused kernel, which
// recomputes the weights from the log-sum-exp cuDNN wrote (cuDNN 9.19's SDPA backward operation
// does not finalize; its forward has no causal mask, key mask or dropout).
#pragma once

#include <cstdint>
#include <string>

#include "backend/op.hpp"
#include "ops/attention.hpp"

namespace cudl {

class CudaContext;

/// Why cuDNN's SDPA forward cannot take this call (empty when it can): f32 storage, a causal or key
/// mask, dropout, D != Dv, or a head size that is not a multiple of 8 up to 128.
std::string sdpa_ineligible(const ops::AttentionArgs& a);

/// Runs the forward through cuDNN's SDPA when the call is eligible and cuDNN has a plan for its
/// shape (built once per shape, storage type, alignment and handle, then cached), writing o and lse.
/// Returns false (and logs why, once per reason and shape) when it does not: the caller runs its own
/// kernel. `required` (AttentionEngine::Cudnn): throws instead, naming the reason.
bool sdpa_forward(CudaContext& ctx, const OpCall& call, const ops::AttentionArgs& a, bool required);

/// Execution plans the SDPA path has built since the start or the last sdpa_clear_plan_cache().
int64_t sdpa_plans_built();

/// Forgets every cached plan and "no plan" verdict, and resets the counter.
void sdpa_clear_plan_cache();

}  // namespace cudl
