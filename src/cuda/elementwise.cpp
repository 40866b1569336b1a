// cuda/elementwise.cpp — CUDA backend entries of the elementwise op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_elementwise_ops(OpTable& t) {}

}  // namespace cudl
