// distributed/socket_io.hpp — whole-buffer send and receive on a stream socket (retrying short
// transfers and EINTR), with an optional deadline: the TCP store's and the emulated NCCL's framing.
#pragma once

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstddef>

namespace cudl::net {

inline bool write_all(int fd, const void* p, size_t n) {
  const char* b = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t k = ::send(fd, b, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// Reads n bytes, waiting at most until deadline (none: forever). False on EOF, error or timeout
// (*timed_out says which).
inline bool read_all(int fd, void* p, size_t n, const std::chrono::steady_clock::time_point* deadline = nullptr,
                     bool* timed_out = nullptr) {
  char* b = static_cast<char*>(p);
  while (n > 0) {
    if (deadline) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - std::chrono::steady_clock::now());
      pollfd pf{fd, POLLIN, 0};
      const int r = ::poll(&pf, 1, static_cast<int>(std::max<long long>(left.count(), 0)));
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) {
        if (timed_out) *timed_out = true;
        return false;
      }
    }
    ssize_t k = ::recv(fd, b, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    b += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

}  // namespace cudl::net
