// data/idx.cpp — IDX reader (raw or gzip via zlib) that checks the header before sizing anything
// by it and never inflates past the size the header promises, and the MNIST loader.
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
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

uint32_t be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

std::string find_file(const std::string& dir, const std::string& base) {
  for (const std::string& p : {dir + "/" + base, dir + "/" + base + ".gz"})
    if (exists(p)) return p;
  CUDL_FAIL("MNIST file ", dir, "/", base, " (or .gz) not found; run scripts/fetch-mnist.sh to fetch it");
}

// A file read through zlib (gzip inflated, anything else read as it is), never more than asked:
// a stream that inflates to far more than the header promises is stopped at the promise.
class IdxStream {
 public:
  explicit IdxStream(const std::string& path) : path_(path) {
    f_ = gzopen(path.c_str(), "rb");
    if (!f_) CUDL_FAIL("IDX file ", path, ": cannot open: ", std::strerror(errno));
  }
  ~IdxStream() { gzclose(f_); }
  IdxStream(const IdxStream&) = delete;
  IdxStream& operator=(const IdxStream&) = delete;

  // Reads up to n bytes (fewer only at the end of the data); fails on corrupt or cut-off gzip data.
  size_t read(unsigned char* p, size_t n) {
    size_t got = 0;
    while (got < n) {
      const unsigned want = static_cast<unsigned>(std::min<size_t>(n - got, size_t{1} << 30));
      const int r = gzread(f_, p + got, want);
      if (r < 0) fail_corrupt();
      if (r == 0) break;
      got += static_cast<size_t>(r);
    }
    if (got < n) {
      int err = Z_OK;
      const char* msg = gzerror(f_, &err);
      // zlib reports a gzip stream cut off mid-way only as an error beside a short read.
      if (err != Z_OK) CUDL_FAIL("IDX file ", path_, ": truncated or corrupt gzip data (", msg, ")");
    }
    total_ += got;
    return got;
  }
  bool raw() { return gzdirect(f_) != 0; }
  uint64_t total() const { return total_; }

 private:
  [[noreturn]] void fail_corrupt() {
    int err = Z_OK;
    const std::string msg = gzerror(f_, &err);
    CUDL_FAIL("IDX file ", path_, ": corrupt gzip data (", msg, ")");
  }
  const std::string& path_;
  gzFile f_ = nullptr;
  uint64_t total_ = 0;
};

}  // namespace

Tensor read_idx(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    CUDL_FAIL("IDX file ", path, ": ", errno == ENOENT ? "not found" : std::strerror(errno));
  if (S_ISDIR(st.st_mode)) CUDL_FAIL("IDX file ", path, ": is a directory, not an IDX file");
  IdxStream in(path);
  unsigned char head[4 + 4 * Shape::kMaxDims];
  size_t got = in.read(head, 4);
  if (got < 4) CUDL_FAIL("IDX file ", path, ": truncated: expected at least a 4-byte header, found ", got, " bytes");
  if (head[0] != 0 || head[1] != 0)
    CUDL_FAIL("IDX file ", path, ": bad magic: expected 00 00 <type> <dims>, found bytes ", int(head[0]), " ",
              int(head[1]));
  if (head[2] != 0x08)
    CUDL_FAIL("IDX file ", path, ": element type 0x", std::hex, int(head[2]), std::dec,
              " is not supported (expected 0x08, unsigned byte)");
  const int ndims = head[3];
  if (ndims < 1 || ndims > Shape::kMaxDims)
    CUDL_FAIL("IDX file ", path, ": expected 1 to ", Shape::kMaxDims, " dimensions, found ", ndims);
  const size_t header = 4 + 4 * static_cast<size_t>(ndims);
  got = 4 + in.read(head + 4, header - 4);
  if (got < header)
    CUDL_FAIL("IDX file ", path, ": truncated: expected a ", header, "-byte header, found ", got, " bytes");
  std::vector<int64_t> dims(ndims);
  std::string dims_text;
  for (int i = 0; i < ndims; ++i) {
    dims[i] = be32(&head[4 + 4 * i]);
    dims_text += (i ? ", " : "") + std::to_string(dims[i]);
  }
  for (int i = 0; i < ndims; ++i)
    if (dims[i] == 0) CUDL_FAIL("IDX file ", path, ": dimension ", i, " is 0 (dimensions ", dims_text, ")");
  // Each dimension is below 2^32, their product may not be: check before anything is sized by it.
  int64_t count = 1;
  for (int64_t d : dims)
    if (__builtin_mul_overflow(count, d, &count))
      CUDL_FAIL("IDX file ", path, ": corrupt header: dimensions (", dims_text,
                ") overflow 64-bit sizes (more than 2^63 - 1 bytes)");
  const uint64_t need = header + static_cast<uint64_t>(count);
  const Shape shape(dims);

  if (in.raw()) {  // a plain file: its size says at once whether the data is all there
    const uint64_t size = static_cast<uint64_t>(st.st_size);
    if (size != need)
      CUDL_FAIL("IDX file ", path, ": ", size < need ? "truncated" : "too long", ": dimensions ", shape, " need ", need,
                " bytes, found ", size);
    Tensor t = Tensor::empty(shape, DType::u8);
    got = in.read(static_cast<unsigned char*>(t.data()), static_cast<size_t>(count));
    if (got != static_cast<uint64_t>(count))
      CUDL_FAIL("IDX file ", path, ": truncated while reading: dimensions ", shape, " need ", need, " bytes, found ",
                header + got, " (the file shrank?)");
    return t;
  }
  // gzip: the inflated size is unknown until the stream ends, so the buffer grows with the data
  // that actually arrives (a header promising terabytes over a few bytes allocates a few bytes),
  // and inflating stops one byte past the promise (a gzip bomb is cut off there).
  std::vector<unsigned char> data;
  size_t have = 0;
  while (have < static_cast<uint64_t>(count)) {
    const size_t chunk = std::min<size_t>(static_cast<size_t>(count) - have, std::max<size_t>(have, size_t{1} << 20));
    data.resize(have + chunk);
    const size_t r = in.read(data.data() + have, chunk);
    have += r;
    if (r < chunk) break;
  }
  if (have < static_cast<uint64_t>(count))
    CUDL_FAIL("IDX file ", path, ": truncated: dimensions ", shape, " need ", need, " bytes, found ", header + have);
  unsigned char extra;
  if (in.read(&extra, 1) != 0)
    CUDL_FAIL("IDX file ", path, ": too long: dimensions ", shape, " need ", need,
              " bytes, but the gzip stream holds more than the ", need, " bytes (inflating stopped there)");
  Tensor t = Tensor::empty(shape, DType::u8);
  std::memcpy(t.data(), data.data(), static_cast<size_t>(count));
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
