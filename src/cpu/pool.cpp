// cpu/pool.cpp — CPU reference implementations of the pool op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_pool_ops(OpTable& t) {}

}  // namespace cudl
