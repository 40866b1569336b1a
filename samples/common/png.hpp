// samples/common/png.hpp — writes 8-bit grayscale PNG images with zlib (already a dependency of the
// library): signature, IHDR, one IDAT of unfiltered rows, IEND; written atomically.
#pragma once

#include <zlib.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sample_util.hpp"

namespace sample {

namespace png_detail {

inline void put_u32(std::string& s, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((v >> shift) & 0xff));
}

/// Appends one chunk: length, type, data, CRC-32 of type and data.
inline void chunk(std::string& out, const char* type, const std::string& data) {
  put_u32(out, static_cast<uint32_t>(data.size()));
  const std::string body = std::string(type, 4) + data;
  out += body;
  put_u32(out, static_cast<uint32_t>(crc32(0L, reinterpret_cast<const Bytef*>(body.data()),
                                           static_cast<uInt>(body.size()))));
}

}  // namespace png_detail

/// Writes `pixels` (height rows of width bytes, 0 = black) to `path` as a grayscale PNG; false
/// (errno set where the file system failed) when it could not.
inline bool write_gray_png(const std::string& path, const std::vector<uint8_t>& pixels, int width, int height) {
  if (width <= 0 || height <= 0 || pixels.size() != static_cast<size_t>(width) * static_cast<size_t>(height))
    return false;
  std::string raw;  // each row: filter type 0 (none), then its bytes
  raw.reserve(static_cast<size_t>(height) * (width + 1));
  for (int r = 0; r < height; ++r) {
    raw.push_back('\0');
    raw.append(reinterpret_cast<const char*>(pixels.data()) + static_cast<size_t>(r) * width, width);
  }
  uLongf packed_size = compressBound(static_cast<uLong>(raw.size()));
  std::string packed(packed_size, '\0');
  if (compress2(reinterpret_cast<Bytef*>(&packed[0]), &packed_size, reinterpret_cast<const Bytef*>(raw.data()),
                static_cast<uLong>(raw.size()), 9) != Z_OK)
    return false;
  packed.resize(packed_size);
  std::string ihdr;
  png_detail::put_u32(ihdr, static_cast<uint32_t>(width));
  png_detail::put_u32(ihdr, static_cast<uint32_t>(height));
  ihdr += std::string("\x08\x00\x00\x00\x00", 5);  // 8-bit depth, grayscale, deflate, no filter set, no interlace
  std::string file("\x89PNG\r\n\x1a\n", 8);
  png_detail::chunk(file, "IHDR", ihdr);
  png_detail::chunk(file, "IDAT", packed);
  png_detail::chunk(file, "IEND", "");
  return write_file_atomically(path, file);
}

}  // namespace sample
