// cuda/device_query.cpp — the CUDA device queries of cudl/device.hpp: how many devices the runtime
// reports (0 with the runtime's reason when there is no GPU or driver) and their properties.
#include <cuda_runtime.h>

#include <string>

#include "cudl/device.hpp"
#include "cudl/error.hpp"

namespace cudl {

bool built_with_cuda() { return true; }

namespace {
struct CudaProbe {
  int count = 0;
  std::string reason;
};

const CudaProbe& probe() {
  static CudaProbe p = [] {
    CudaProbe r;
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // clear, so later calls do not see it
      r.reason = std::string("no CUDA device: ") + cudaGetErrorString(err);
    } else if (n == 0) {
      r.reason = "no CUDA device: the runtime reports 0 devices";
    }
    r.count = err == cudaSuccess ? n : 0;
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
  cudaDeviceProp prop{};
  cudaError_t err = cudaGetDeviceProperties(&prop, index);
  if (err != cudaSuccess) CUDL_FAIL("cudaGetDeviceProperties(", index, "): ", cudaGetErrorString(err));
  info.index = index;
  info.name = prop.name;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  info.total_memory = prop.totalGlobalMem;
  info.multiprocessors = prop.multiProcessorCount;
  return info;
}

}  // namespace cudl
