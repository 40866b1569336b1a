// samples/consumer/main.cpp — prints the cudl version and the devices it sees, and a small tensor.
// Proves that an installed cudl is found, compiles without CUDA headers, links and runs.
#include <cstdio>
#include <cudl/cudl.hpp>
#include <iostream>

int main() {
  try {
    std::cout << "cudl " << cudl::version() << " (headers " << CUDL_VERSION_MAJOR << "." << CUDL_VERSION_MINOR << "."
              << CUDL_VERSION_PATCH << ", CUDA backend " << (cudl::built_with_cuda() ? "on" : "off") << ")\n";
    for (const std::string& line : cudl::describe_devices()) std::cout << "device: " << line << "\n";

    cudl::Tensor t = cudl::Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, cudl::Shape{2, 3});
    std::cout << t << "\n";
    float sum = 0;
    for (float v : t.to_vector<float>()) sum += v;
    std::cout << "sum " << sum << "\n";
    if (cudl::cuda_device_count() > 0) {
      cudl::Tensor g = t.to(cudl::Device::cuda(0));
      g.fill(0.5);
      std::cout << g << "\n";
      std::cout << "cuda:0 pool: " << cudl::to_string(cudl::memory_stats(cudl::Device::cuda(0))) << "\n";
    }
    // Errors cross the library boundary as cudl::Error.
    try {
      cudl::Device::parse("gpu7");
      std::cout << "error: no exception\n";
      return 1;
    } catch (const cudl::Error& e) {
      std::cout << "caught cudl::Error: " << e.what() << "\n";
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
  return 0;
}
