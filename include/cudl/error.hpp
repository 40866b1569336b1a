// cudl/error.hpp — the one exception type cudl throws, and the checking macros.
// Every failure names what was wrong: the expression, file and line, and the library's own message.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

#include "cudl/export.hpp"

namespace cudl {

/// The exception every cudl function throws on bad input or a failed library call.
class CUDL_API Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
[[noreturn]] CUDL_API void throw_error(const char* file, int line, const std::string& message);

/// Builds a message from any streamable arguments: CUDL_FAIL("op ", name, ": got ", shape).
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail
}  // namespace cudl

/// Throws cudl::Error with a message built from the arguments, tagged with file and line.
#define CUDL_FAIL(...) ::cudl::detail::throw_error(__FILE__, __LINE__, ::cudl::detail::concat(__VA_ARGS__))

/// Throws cudl::Error unless `cond` holds: CUDL_CHECK(a.shape() == b.shape(), "add: ", a, " vs ", b).
#define CUDL_CHECK(cond, ...)                                                          \
  do {                                                                                 \
    if (!(cond)) CUDL_FAIL("check failed: " #cond ": ", ::cudl::detail::concat(__VA_ARGS__)); \
  } while (0)
