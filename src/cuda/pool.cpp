// cuda/pool.cpp — CUDA backend entries of the pool op family: checks, then kernel launches.
#include "backend/backend.hpp"

namespace cudl {

void register_cuda_pool_ops(OpTable& t) {}

}  // namespace cudl
