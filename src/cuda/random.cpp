// cuda/random.cpp — CUDA backend entries of the random op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_random_ops(OpTable& t) {}

}  // namespace cudl
