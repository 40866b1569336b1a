// core/device.cpp — Device parsing and the device list; the CUDA device queries live in
// cuda/device_query.cpp (backend/cuda_absent.cpp in a build without CUDA).
#include "cudl/device.hpp"

#include <cstdlib>

#include "cudl/error.hpp"

namespace cudl {

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) {
    const std::string idx = s.substr(5);
    char* end = nullptr;
    long v = std::strtol(idx.c_str(), &end, 10);
    if (!idx.empty() && end && *end == '\0' && v >= 0) return cuda(static_cast<int>(v));
  }
  CUDL_FAIL("invalid device '", s, "' (expected cpu, cuda or cuda:N)");
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index_); }

std::vector<std::string> describe_devices() {
  std::vector<std::string> out{"cpu: CPU reference backend"};
  int n = cuda_device_count();
  if (n == 0) out.push_back(cuda_unavailable_reason());
  for (int i = 0; i < n; ++i) {
    DeviceInfo d = cuda_device_info(i);
    out.push_back("cuda:" + std::to_string(i) + ": " + d.name + ", compute capability " +
                  std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor) + ", " +
                  std::to_string(d.total_memory >> 20) + " MiB, " + std::to_string(d.multiprocessors) + " SMs");
  }
  return out;
}

}  // namespace cudl
