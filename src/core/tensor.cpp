// core/tensor.cpp — Tensor construction, copies between devices, fill, printing.
#include <limits>

#include "cudl/tensor.hpp"
#include "cudl/interop.hpp"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "backend/convert.hpp"
#include "memory/allocator.hpp"

namespace cudl {

Storage::Storage(Device device, size_t nbytes) : device_(device), nbytes_(nbytes) {
  data_ = memory::allocate(device, nbytes);
}

Storage::~Storage() {
  try {
    memory::deallocate(device_, data_, nbytes_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cudl: error freeing %zu bytes on %s: %s\n", nbytes_, device_.str().c_str(), e.what());
  }
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  const int64_t n = shape.numel();  // checked: fits in int64
  const int64_t es = static_cast<int64_t>(dtype_size(dtype));
  if (n > std::numeric_limits<int64_t>::max() / es)
    CUDL_FAIL("Tensor::empty: ", shape, " of ", dtype_name(dtype), " overflows 2^63 bytes");
  t.storage_ = std::make_shared<Storage>(device, static_cast<size_t>(n * es));
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill(value);
  return t;
}


template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  if (static_cast<int64_t>(values.size()) != shape.numel())
    CUDL_FAIL("Tensor::from_vector: ", values.size(), " values for shape ", shape, " (", shape.numel(),
              " elements)");
  Tensor t = empty(shape, dtype_of<T>(), device);
  memory::copy_bytes(device, t.data(), Device::cpu(), values.data(), values.size() * sizeof(T));
  return t;
}
template Tensor Tensor::from_vector<float>(const std::vector<float>&, const Shape&, Device);
template Tensor Tensor::from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, Device);
template Tensor Tensor::from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, Device);
template Tensor Tensor::from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, Device);

Tensor Tensor::reshape(const Shape& shape) const {
  if (shape.numel() != numel()) CUDL_FAIL("reshape: cannot view ", shape_, " as ", shape, " (element counts differ)");
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::view_bytes(size_t byte_offset, const Shape& shape, DType dtype) const {
  if (!defined()) CUDL_FAIL("Tensor::view_bytes: tensor is undefined");
  const size_t need = offset_ + byte_offset + static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  if (need > storage_->nbytes())
    CUDL_FAIL("Tensor::view_bytes: ", shape, " ", dtype, " at byte ", byte_offset, " reaches past the storage (",
              storage_->nbytes(), " bytes)");
  Tensor t = *this;
  t.offset_ = offset_ + byte_offset;
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::to(Device device) const {
  if (!defined()) CUDL_FAIL("Tensor::to(", device, "): tensor is undefined");
  Tensor t = empty(shape_, dtype_, device);
  memory::copy_bytes(device, t.data(), this->device(), data(), nbytes());
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  if (!defined() || !src.defined()) CUDL_FAIL("Tensor::copy_from: undefined tensor");
  check_same_shape(*this, src, "Tensor::copy_from");
  src.check_dtype(dtype_, "Tensor::copy_from");
  memory::copy_bytes(device(), data(), src.device(), src.data(), nbytes());
}

Tensor tensor_copy_of(const void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t = Tensor::empty(shape, dtype, device);
  if (t.nbytes() == 0) return t;
  if (!data) CUDL_FAIL("tensor_copy_of: null data for a ", shape, " ", dtype, " tensor on ", device);
  if (device.is_cpu())
    std::memcpy(t.data(), data, t.nbytes());
  else
    memory::cuda_copy_foreign(device.index(), t.data(), data, t.nbytes());
  return t;
}

void Tensor::fill(double value) {
  if (!defined()) CUDL_FAIL("Tensor::fill: tensor is undefined");
  unsigned char one[8];
  convert::element_bytes(dtype_, value, one);
  memory::fill_bytes(device(), data(), one, dtype_size(dtype_), static_cast<size_t>(numel()));
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  check_dtype(dtype_of<T>(), "Tensor::to_vector");
  std::vector<T> out(static_cast<size_t>(numel()));
  memory::copy_bytes(Device::cpu(), out.data(), device(), data(), nbytes());
  return out;
}
template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

double Tensor::item(int64_t i) const {
  if (i < 0 || i >= numel()) CUDL_FAIL("Tensor::item(", i, ") out of range for shape ", shape_);
  const size_t es = dtype_size(dtype_);
  unsigned char buf[8];
  memory::copy_bytes(Device::cpu(), buf, device(), static_cast<const char*>(data()) + i * es, es);
  return convert::element_value(dtype_, buf);
}

void Tensor::check_dtype(DType expected, const char* what) const {
  if (dtype_ != expected) CUDL_FAIL(what, ": expected dtype ", expected, ", got ", dtype_, " (shape ", shape_, ")");
}

std::string Tensor::str(int max_per_dim) const {
  std::ostringstream os;
  os << "Tensor(shape=" << shape_ << ", dtype=" << dtype_ << ", device=" << device() << ")";
  if (!defined()) return os.str() + " <undefined>";
  std::vector<unsigned char> host(nbytes());
  memory::copy_bytes(Device::cpu(), host.data(), device(), data(), nbytes());
  const size_t es = dtype_size(dtype_);
  const auto strides = shape_.strides();
  os << "\n" << std::setprecision(5);
  // Recursive printer with elision: "[a, b, ..., z]".
  auto print = [&](auto&& self, int dim, int64_t base) -> void {
    if (dim == shape_.rank()) {
      os << convert::element_value(dtype_, host.data() + base * es);
      return;
    }
    const int64_t n = shape_.dims()[dim];
    os << "[";
    for (int64_t k = 0; k < n; ++k) {
      if (n > max_per_dim && k == max_per_dim / 2) {
        os << "...";
        k = n - max_per_dim / 2 - 1;
        if (k + 1 < n) os << ", ";
        continue;
      }
      self(self, dim + 1, base + k * strides[dim]);
      if (k + 1 < n) os << (dim + 1 == shape_.rank() ? ", " : ",\n ");
    }
    os << "]";
  };
  print(print, 0, 0);
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

void check_same_shape(const Tensor& a, const Tensor& b, const char* what) {
  if (a.shape() != b.shape()) CUDL_FAIL(what, ": shape mismatch: ", a.shape(), " vs ", b.shape());
}

void check_same_device(const Tensor& a, const Tensor& b, const char* what) {
  if (a.device() != b.device()) CUDL_FAIL(what, ": device mismatch: ", a.device(), " vs ", b.device());
}

}  // namespace cudl
