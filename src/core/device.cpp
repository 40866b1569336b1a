// core/device.cpp — Device parsing and CUDA device queries that fail softly without a GPU.
#include "cudl/device.hpp"

#include <cstdlib>
#include <mutex>

#include "cudl/error.hpp"

#if defined(CUDL_WITH_CUDA)
#include <cuda_runtime.h>
#endif

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

bool built_with_cuda() {
#if defined(CUDL_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

namespace {
struct CudaProbe {
  int count = 0;
  std::string reason;
};

const CudaProbe& probe() {
  static CudaProbe p = [] {
    CudaProbe r;
#if defined(CUDL_WITH_CUDA)
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // clear, so later calls do not see it
      r.reason = std::string("no CUDA device: ") + cudaGetErrorString(err);
    } else if (n == 0) {
      r.reason = "no CUDA device: the runtime reports 0 devices";
    }
    r.count = err == cudaSuccess ? n : 0;
#else
    r.reason = "no CUDA device: cudl was built without the CUDA backend";
#endif
    return r;
  }();
  return p;
}
}  // namespace

int cuda_device_count() { return probe().count; }
std::string cuda_unavailable_reason() { return probe().reason; }

DeviceInfo cuda_device_info(int index) {
  if (index < 0 || index >= cuda_device_count())
    CUDL_FAIL("CUDA device ", index, " does not exist (", cuda_device_count(), " device(s)",
              cuda_device_count() == 0 ? "; " + cuda_unavailable_reason() : std::string(), ")");
  DeviceInfo info;
#if defined(CUDL_WITH_CUDA)
  cudaDeviceProp prop{};
  cudaError_t err = cudaGetDeviceProperties(&prop, index);
  if (err != cudaSuccess) CUDL_FAIL("cudaGetDeviceProperties(", index, "): ", cudaGetErrorString(err));
  info.index = index;
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.total_memory = prop.totalGlobalMem;
  info.multiprocessors = prop.multiProcessorCount;
#endif
  return info;
}

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
