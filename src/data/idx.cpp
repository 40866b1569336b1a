// data/idx.cpp — IDX reader (raw or gzip via zlib) with validation, and the MNIST loader.
#include <sys/stat.h>
#include <zlib.h>

#include <cstring>
#include <vector>

#include "cudl/data.hpp"
#include "cudl/error.hpp"

namespace cudl {
namespace {

bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

// Whole file, decompressed when it is gzip (zlib reads plain files as they are).
std::vector<unsigned char> slurp(const std::string& path) {
  if (!exists(path)) CUDL_FAIL("IDX file ", path, ": not found");
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) CUDL_FAIL("IDX file ", path, ": cannot open");
  std::vector<unsigned char> out;
  unsigned char buf[1 << 16];
  for (;;) {
    int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int err = 0;
      std::string msg = gzerror(f, &err);
      gzclose(f);
      CUDL_FAIL("IDX file ", path, ": corrupt gzip data (", msg, ")");
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  gzclose(f);
  return out;
}

uint32_t be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string find_file(const std::string& dir, const std::string& base) {
  for (const std::string& p : {dir + "/" + base, dir + "/" + base + ".gz"})
    if (exists(p)) return p;
  CUDL_FAIL("MNIST file ", dir, "/", base, " (or .gz) not found; run scripts/fetch-mnist.sh to fetch it");
}

}  // namespace

Tensor read_idx(const std::string& path) {
  std::vector<unsigned char> bytes = slurp(path);
  if (bytes.size() < 4)
    CUDL_FAIL("IDX file ", path, ": truncated: expected at least a 4-byte header, found ", bytes.size(), " bytes");
  if (bytes[0] != 0 || bytes[1] != 0)
    CUDL_FAIL("IDX file ", path, ": bad magic: expected 00 00 <type> <dims>, found bytes ", int(bytes[0]), " ",
              int(bytes[1]));
  if (bytes[2] != 0x08)
    CUDL_FAIL("IDX file ", path, ": element type 0x", std::hex, int(bytes[2]), std::dec,
              " is not supported (expected 0x08, unsigned byte)");
  const int ndims = bytes[3];
  if (ndims < 1 || ndims > Shape::kMaxDims)
    CUDL_FAIL("IDX file ", path, ": expected 1 to ", Shape::kMaxDims, " dimensions, found ", ndims);
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  if (bytes.size() < header)
    CUDL_FAIL("IDX file ", path, ": truncated: expected a ", header, "-byte header, found ", bytes.size(), " bytes");
  std::vector<int64_t> dims(ndims);
  size_t count = 1;
  for (int i = 0; i < ndims; ++i) {
    dims[i] = be32(&bytes[4 + 4 * i]);
    if (dims[i] == 0) CUDL_FAIL("IDX file ", path, ": dimension ", i, " is 0");
    count *= static_cast<size_t>(dims[i]);
  }
  if (bytes.size() != header + count)
    CUDL_FAIL("IDX file ", path, ": ", bytes.size() < header + count ? "truncated" : "too long", ": dimensions ",
              Shape(dims), " need ", header + count, " bytes, found ", bytes.size());
  Tensor t = Tensor::empty(Shape(dims), DType::u8);
  std::memcpy(t.data(), bytes.data() + header, count);
  return t;
}

Dataset load_mnist(const std::string& dir, bool train, int64_t limit, bool fashion) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string ipath = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string lpath = find_file(dir, prefix + "-labels-idx1-ubyte");
  Tensor images = read_idx(ipath);
  Tensor labels = read_idx(lpath);
  if (images.shape().rank() != 3)
    CUDL_FAIL("MNIST images ", ipath, ": expected 3 dimensions (N, rows, cols), found ", images.shape());
  if (labels.shape().rank() != 1)
    CUDL_FAIL("MNIST labels ", lpath, ": expected 1 dimension (N,), found ", labels.shape());
  if (images.shape()[0] != labels.shape()[0])
    CUDL_FAIL("MNIST files disagree: ", ipath, " has ", images.shape()[0], " images but ", lpath, " has ",
              labels.shape()[0], " labels");
  int64_t n = images.shape()[0];
  if (limit > 0 && limit < n) n = limit;
  const int64_t h = images.shape()[1], w = images.shape()[2];
  Dataset d;
  d.x = images.view_bytes(0, Shape{n, 1, h, w}, DType::u8).clone();
  std::vector<int32_t> y(n);
  const uint8_t* l = labels.data_as<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (l[i] > 9) CUDL_FAIL("MNIST labels ", lpath, ": label ", int(l[i]), " at index ", i, " is out of range 0..9");
    y[i] = l[i];
  }
  d.y = Tensor::from_vector(y, Shape{n});
  d.mean = fashion ? 0.2860f : 0.1307f;
  d.std = fashion ? 0.3530f : 0.3081f;
  return d;
}

}  // namespace cudl
