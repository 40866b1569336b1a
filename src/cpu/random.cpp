// cpu/random.cpp — CPU reference implementations of the random op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_random_ops(OpTable& t) {}

}  // namespace cudl
