// cuda/launch_check.cpp — the host side of kernels/common.cuh: the post-launch check every launch
// makes, kernel names from the compiler's signatures, and the device's multiprocessor count.
#include <atomic>
#include <cstring>
#include <string>

#include "cuda/check.hpp"

namespace cudl::kernels {

void check_launch(const char* kernel_name) { CUDL_CHECK_LAUNCH(kernel_name); }

namespace detail {

namespace {

bool is_identifier_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

void erase_all(std::string& s, const char* what) {
  const size_t n = std::strlen(what);
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at)) s.erase(at, n);
}

}  // namespace

// g++ spells the signature "const char* cudl::kernels::kernel_name() [with auto K = <kernel>; ...]"
// (or "... [with auto K = <kernel>]"); nvcc's host pass names anonymous namespaces _GLOBAL__N__<id>.
std::string kernel_name_from_signature(const char* signature) {
  std::string s(signature);
  const size_t eq = s.find(" = ");
  if (eq == std::string::npos) return s;  // an unknown spelling: the whole signature still names it
  s.erase(0, eq + 3);
  const size_t end = s.find_first_of(";]");
  if (end != std::string::npos) s.erase(end);
  erase_all(s, "(anonymous namespace)::");
  erase_all(s, "{anonymous}::");
  // Drop every qualifier "ident::" (namespaces, including nvcc's _GLOBAL__N__... ones).
  for (size_t at = s.find("::"); at != std::string::npos; at = s.find("::")) {
    size_t begin = at;
    while (begin > 0 && is_identifier_char(s[begin - 1])) --begin;
    s.erase(begin, at + 2 - begin);
  }
  // A pointer spelled "&f" or "(& f)".
  while (!s.empty() && (s.front() == '&' || s.front() == ' ' || (s.front() == '(' && s.back() == ')'))) {
    if (s.front() == '(') s.pop_back();
    s.erase(0, 1);
  }
  return s;
}

}  // namespace detail

int sm_count() {
  constexpr int kCachedDevices = 64;
  static std::atomic<int> cached[kCachedDevices] = {};
  int device = 0;
  CUDL_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= 0 && device < kCachedDevices) {
    if (const int n = cached[device].load(std::memory_order_relaxed)) return n;
  }
  int n = 0;
  CUDL_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  if (n < 1) CUDL_FAIL("device ", device, " reports ", n, " multiprocessors");
  if (device >= 0 && device < kCachedDevices) cached[device].store(n, std::memory_order_relaxed);
  return n;
}

}  // namespace cudl::kernels
