// cuda/conv.hpp — introspection of the CUDA conv backend's cuDNN execution-plan cache (for tests
// and benchmarks): plans are built once per (op, shape, attributes, alignment, handle) and reused.
#pragma once

#include <cstdint>

namespace cudl {

/// Number of cuDNN execution plans built (finalized) by the conv ops since the process started or
/// the last conv_clear_plan_cache(); a call that finds its plan in the cache builds none.
int64_t conv_plans_built();

/// Forgets every cached plan and every cached "cuDNN has no plan" verdict, and resets the counter.
void conv_clear_plan_cache();

}  // namespace cudl
