// memory/device_buffer.hpp — DeviceBuffer<T>: move-only RAII array on a device, from the device's
// pool (copies deleted to prevent performance accidents, as tiny-cuda-nn's GPUMemory).
#pragma once

#include <cstddef>
#include <cstdio>
#include <utility>
#include <vector>

#include "cudl/device.hpp"
#include "cudl/error.hpp"
#include "memory/allocator.hpp"

namespace cudl::memory {

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  /// `count` elements on `device` (contents undefined: pool memory is not zeroed).
  explicit DeviceBuffer(size_t count, Device device = Device::cuda(0)) : device_(device) { resize(count); }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), count_(std::exchange(o.count_, 0)), device_(o.device_) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = std::exchange(o.data_, nullptr);
      count_ = std::exchange(o.count_, 0);
      device_ = o.device_;
    }
    return *this;
  }

  T* data() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }
  Device device() const { return device_; }
  bool empty() const { return count_ == 0; }

  /// Reallocates to `count` elements when the size changes; the contents are not kept.
  void resize(size_t count) {
    if (count == count_ && data_) return;
    reset();
    if (count == 0) return;
    data_ = static_cast<T*>(allocate(device_, count * sizeof(T)));
    count_ = count;
  }

  /// Blocking copies from and to host memory; `count` must not exceed size().
  void copy_from_host(const T* src, size_t count) {
    CUDL_CHECK(count <= count_, "DeviceBuffer::copy_from_host: ", count, " elements into a buffer of ", count_);
    copy_bytes(device_, data_, Device::cpu(), src, count * sizeof(T));
  }
  void copy_from_host(const std::vector<T>& src) {
    resize(src.size());
    copy_from_host(src.data(), src.size());
  }
  void copy_to_host(T* dst, size_t count) const {
    CUDL_CHECK(count <= count_, "DeviceBuffer::copy_to_host: ", count, " elements from a buffer of ", count_);
    copy_bytes(Device::cpu(), dst, device_, data_, count * sizeof(T));
  }
  std::vector<T> to_host() const {
    std::vector<T> out(count_);
    copy_to_host(out.data(), count_);
    return out;
  }

  /// Gives the memory back to the pool now (destructors only log errors).
  void reset() noexcept {
    if (!data_) return;
    try {
      deallocate(device_, data_, bytes());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "cudl: error freeing a device buffer of %zu bytes on %s: %s\n", bytes(),
                   device_.str().c_str(), e.what());
    }
    data_ = nullptr;
    count_ = 0;
  }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
  Device device_ = Device::cuda(0);
};

}  // namespace cudl::memory
