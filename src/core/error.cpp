// core/error.cpp — cudl::Error construction with file and line.
#include "cudl/error.hpp"

#include <cstring>

#include "cudl/version.hpp"

namespace cudl {
namespace detail {

[[noreturn]] void throw_error(const char* file, int line, const std::string& message) {
  const char* base = std::strrchr(file, '/');
  throw Error(message + " [" + (base ? base + 1 : file) + ":" + std::to_string(line) + "]");
}

}  // namespace detail

const char* version() { return "0.1.0"; }

}  // namespace cudl
