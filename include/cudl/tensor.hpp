// cudl/tensor.hpp — a contiguous n-d array owning storage on one device.
// Tensors are cheap handles: copies share storage (like a shared_ptr); clone() copies data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cudl/device.hpp"
#include "cudl/dtype.hpp"
#include "cudl/error.hpp"
#include "cudl/shape.hpp"

namespace cudl {

/// Raw bytes on a device, allocated from that device's pool; move-only, freed on destruction.
class CUDL_API Storage {
 public:
  Storage(Device device, size_t nbytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  Device device_;
  size_t nbytes_ = 0;
  void* data_ = nullptr;
};

class CUDL_API Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu());
  /// Copies host values into a new tensor of dtype_of<T>() on `device`; size must match the shape.
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* data() const { return storage_ ? static_cast<char*>(storage_->data()) + offset_ : nullptr; }
  template <typename T>
  T* data_as() const {
    check_dtype(dtype_of<T>(), "data_as");
    return static_cast<T*>(data());
  }

  /// Same storage seen with another shape of equal numel.
  Tensor reshape(const Shape& shape) const;
  /// A tensor sharing this one's storage, starting `byte_offset` bytes in; throws when it would
  /// reach past the storage.
  Tensor view_bytes(size_t byte_offset, const Shape& shape, DType dtype) const;
  /// New tensor with the same contents on `device` (a copy even when the device is the same).
  Tensor to(Device device) const;
  Tensor clone() const { return to(device()); }
  /// Copies `src` (same shape and dtype, any device) into this tensor; blocks until done.
  void copy_from(const Tensor& src);
  /// Sets every element to `value` (converted to the dtype).
  void fill(double value);
  /// All elements as host values of T (dtype must be dtype_of<T>()).
  template <typename T>
  std::vector<T> to_vector() const;
  /// Element i (flat index) converted to double; blocks on device tensors.
  double item(int64_t i = 0) const;

  /// "Tensor(shape=(2, 3), dtype=f32, device=cpu)\n[[...]]" with at most `max_per_dim` per dimension.
  std::string str(int max_per_dim = 6) const;

  /// Throws cudl::Error naming `what` and both sides unless dtypes match.
  void check_dtype(DType expected, const char* what) const;

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  DType dtype_ = DType::f32;
};

CUDL_API std::ostream& operator<<(std::ostream& os, const Tensor& t);

/// Throws cudl::Error naming `what` and both shapes unless they are equal.
CUDL_API void check_same_shape(const Tensor& a, const Tensor& b, const char* what);
/// Throws cudl::Error naming `what` and both devices unless they are equal.
CUDL_API void check_same_device(const Tensor& a, const Tensor& b, const char* what);

}  // namespace cudl
