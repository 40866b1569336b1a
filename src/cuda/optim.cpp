// cuda/optim.cpp — CUDA backend entries of the optim op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_optim_ops(OpTable& t) {}

}  // namespace cudl
