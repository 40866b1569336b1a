// cudl/export.hpp — symbol visibility for the public API.
// The library is built with hidden visibility; CUDL_API marks what users may link against.
#pragma once

#if defined(CUDL_BUILDING_LIBRARY)
#define CUDL_API __attribute__((visibility("default")))
#else
#define CUDL_API
#endif
