// cudl/shape.hpp — tensor shapes (row-major, up to kMaxDims dimensions).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <ostream>
#include <string>
#include <vector>

#include "cudl/export.hpp"

namespace cudl {

class CUDL_API Shape {
 public:
  static constexpr int kMaxDims = 8;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int rank() const { return static_cast<int>(dims_.size()); }
  /// Dimension i; negative i counts from the back (-1 is the last). Throws when out of range.
  int64_t operator[](int i) const;
  int64_t& at(int i);
  /// Number of elements; throws cudl::Error naming the shape when it does not fit in int64_t.
  int64_t numel() const;
  const std::vector<int64_t>& dims() const { return dims_; }
  /// Row-major strides in elements.
  std::vector<int64_t> strides() const;
  std::string str() const;  // "(2, 3, 4)"

  bool operator==(const Shape& o) const { return dims_ == o.dims_; }
  bool operator!=(const Shape& o) const { return dims_ != o.dims_; }

 private:
  std::vector<int64_t> dims_;
};

inline std::ostream& operator<<(std::ostream& os, const Shape& s) { return os << s.str(); }

/// Numpy broadcasting of two shapes; throws cudl::Error naming `what` and both shapes if incompatible.
CUDL_API Shape broadcast_shapes(const Shape& a, const Shape& b, const char* what = "broadcast");

}  // namespace cudl
