// cpu/softmax.cpp — CPU reference implementations of the softmax op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_softmax_ops(OpTable& t) {}

}  // namespace cudl
