// cudl/device.hpp — where a tensor lives and what the machine offers.
// Queries answer cleanly without a GPU or driver: device_count() is 0 and the reason is kept.
#pragma once

#include <cstddef>
#include <ostream>
#include <string>
#include <vector>

#include "cudl/export.hpp"

namespace cudl {

enum class DeviceType { CPU, CUDA };

class CUDL_API Device {
 public:
  constexpr Device() = default;
  constexpr Device(DeviceType type, int index) : type_(type), index_(index) {}
  static constexpr Device cpu() { return Device(DeviceType::CPU, 0); }
  static constexpr Device cuda(int index = 0) { return Device(DeviceType::CUDA, index); }
  /// "cpu", "cuda", "cuda:1"; throws cudl::Error on anything else.
  static Device parse(const std::string& s);

  DeviceType type() const { return type_; }
  int index() const { return index_; }
  bool is_cpu() const { return type_ == DeviceType::CPU; }
  bool is_cuda() const { return type_ == DeviceType::CUDA; }
  std::string str() const;

  bool operator==(const Device& o) const { return type_ == o.type_ && index_ == o.index_; }
  bool operator!=(const Device& o) const { return !(*this == o); }

 private:
  DeviceType type_ = DeviceType::CPU;
  int index_ = 0;
};

inline std::ostream& operator<<(std::ostream& os, const Device& d) { return os << d.str(); }

struct DeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;  // compute capability
  size_t total_memory = 0;         // bytes
  int multiprocessors = 0;
};

/// True when the library was built with the CUDA backend.
CUDL_API bool built_with_cuda();
/// Number of usable CUDA devices; 0 when there is no GPU, no driver or no CUDA build.
CUDL_API int cuda_device_count();
/// Why cuda_device_count() is 0: "no CUDA device: <runtime's message>"; empty when devices exist.
CUDL_API std::string cuda_unavailable_reason();
/// Properties of CUDA device `index`; throws cudl::Error when it does not exist.
CUDL_API DeviceInfo cuda_device_info(int index);
/// One line per device the process sees, CPU first.
CUDL_API std::vector<std::string> describe_devices();

}  // namespace cudl
