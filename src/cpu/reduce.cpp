// cpu/reduce.cpp — CPU reference implementations of the reduce op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_reduce_ops(OpTable& t) {}

}  // namespace cudl
