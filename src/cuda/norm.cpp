// cuda/norm.cpp — CUDA backend entries of the norm op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_norm_ops(OpTable& t) {}

}  // namespace cudl
