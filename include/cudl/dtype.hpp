// cudl/dtype.hpp — element types a tensor can hold.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>

#include "cudl/export.hpp"

namespace cudl {

enum class DType : uint8_t { f32, f16, bf16, i32, i64, u8 };

CUDL_API size_t dtype_size(DType t);
CUDL_API const char* dtype_name(DType t);
/// Parses "f32", "float32", "f16", "bf16", "i32", "i64", "u8"; throws cudl::Error otherwise.
CUDL_API DType dtype_from_name(const std::string& name);
CUDL_API bool dtype_is_float(DType t);
inline std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

/// Maps a C++ type to its DType: dtype_of<float>() == DType::f32.
template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<uint8_t>() { return DType::u8; }

}  // namespace cudl
