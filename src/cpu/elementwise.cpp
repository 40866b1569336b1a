// cpu/elementwise.cpp — CPU reference implementations of the elementwise op family (the spec for these ops).
#include "backend/backend.hpp"

namespace cudl {

void register_cpu_elementwise_ops(OpTable& t) {}

}  // namespace cudl
