// cpu/conv.cpp — CPU reference implementations of the conv op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_conv_ops(OpTable& t) {}

}  // namespace cudl
