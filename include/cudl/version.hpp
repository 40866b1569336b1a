// cudl/version.hpp — library version.
#pragma once

#include "cudl/export.hpp"

#define CUDL_VERSION_MAJOR 0
#define CUDL_VERSION_MINOR 1
#define CUDL_VERSION_PATCH 0

namespace cudl {
/// "0.1.0" — the version of the library actually loaded (may differ from the header's).
CUDL_API const char* version();
}  // namespace cudl
