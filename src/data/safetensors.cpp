// data/safetensors.cpp — the safetensors writer (atomic: temporary file, fsync, rename, every call
// checked) and strict reader (the whole file is validated before anything is returned).
#include "data/safetensors.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>

#include "cudl/checkpoint.hpp"
#include "cudl/error.hpp"

namespace cudl {

namespace safetensors {
// Text shown in an error: printable ASCII as is, anything else as \xNN, at most 64 characters.
std::string shown(const std::string& s) {
  std::string o;
  for (size_t i = 0; i < s.size() && i < 64; ++i) {
    const unsigned char u = static_cast<unsigned char>(s[i]);
    if (u >= 0x20 && u < 0x7f) {
      o += s[i];
    } else {
      static const char* hex = "0123456789abcdef";
      o += "\\x";
      o += hex[u >> 4];
      o += hex[u & 15];
    }
  }
  return s.size() > 64 ? o + "..." : o;
}

// A decimal integer written with digits only (no sign, space, exponent or fraction) that fits in
// uint64_t; false otherwise.
bool parse_u64(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    if (__builtin_mul_overflow(v, uint64_t{10}, &v) || __builtin_add_overflow(v, uint64_t(c - '0'), &v)) return false;
  }
  *out = v;
  return true;
}
}  // namespace safetensors

namespace {

using safetensors::parse_u64;
using safetensors::shown;

// The format's own limit on the header (the Rust safetensors crate refuses larger ones too).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Arrays and objects nested deeper than this are not a safetensors header; the limit keeps the
// recursive parser's stack bounded whatever the file holds.
constexpr int kMaxJsonDepth = 32;

const char* st_dtype(DType t) {
  switch (t) {
    case DType::f32:
      return "F32";
    case DType::f16:
      return "F16";
    case DType::bf16:
      return "BF16";
    case DType::i32:
      return "I32";
    case DType::i64:
      return "I64";
    case DType::u8:
      return "U8";
  }
  CUDL_FAIL("safetensors: invalid dtype value ", static_cast<int>(t));
}

bool st_dtype_from_name(const std::string& n, DType* out) {
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i64, DType::u8})
    if (n == st_dtype(t)) return *out = t, true;
  return false;
}

// JSON string escaping: quote, backslash and every control character.
std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      o += '\\';
      o += c;
    } else if (u < 0x20) {
      static const char* hex = "0123456789abcdef";
      o += "\\u00";
      o += hex[u >> 4];
      o += hex[u & 15];
    } else {
      o += c;
    }
  }
  return o;
}

// --- a strict JSON reader for the safetensors header ---------------------------------------------
struct Json {
  enum Kind { Null, Bool, Num, Str, Arr, Obj } kind = Null;
  std::string text;  // Num: the number as written; Str: the decoded string
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;  // keys are unique (the parser refuses duplicates)
  const Json* get(const std::string& k) const {
    for (const auto& [key, v] : obj)
      if (key == k) return &v;
    return nullptr;
  }
};

const char* kind_name(Json::Kind k) {
  switch (k) {
    case Json::Null:
      return "null";
    case Json::Bool:
      return "a boolean";
    case Json::Num:
      return "a number";
    case Json::Str:
      return "a string";
    case Json::Arr:
      return "an array";
    case Json::Obj:
      return "an object";
  }
  return "?";
}

class Parser {
 public:
  Parser(const std::string& s, const std::string& path) : s_(s), path_(path) {}
  Json parse() {
    Json v = value(0);
    ws();
    if (i_ != s_.size()) fail("trailing characters after the JSON value");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    CUDL_FAIL("checkpoint ", path_, ": corrupt header: ", what, " at byte ", i_, " of ", s_.size());
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  char peek() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "', found '" + shown(std::string(1, s_[i_])) + "'");
    ++i_;
  }
  unsigned hex4() {
    if (s_.size() - i_ < 4) fail("unterminated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= unsigned(c - 'A' + 10);
      else
        fail("bad \\u escape");
    }
    return v;
  }
  static void utf8(std::string& o, unsigned cp) {
    if (cp < 0x80) {
      o += static_cast<char>(cp);
    } else if (cp < 0x800) {
      o += static_cast<char>(0xC0 | (cp >> 6));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      o += static_cast<char>(0xE0 | (cp >> 12));
      o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      o += static_cast<char>(0xF0 | (cp >> 18));
      o += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      o += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      o += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  std::string string() {
    expect('"');
    std::string o;
    for (;;) {
      if (i_ >= s_.size()) fail("unterminated string");
      const char c = s_[i_++];
      if (c == '"') return o;
      if (static_cast<unsigned char>(c) < 0x20) fail("unescaped control character in a string");
      if (c != '\\') {
        o += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated string");
      switch (const char e = s_[i_++]) {
        case '"':
          o += '"';
          break;
        case '\\':
          o += '\\';
          break;
        case '/':
          o += '/';
          break;
        case 'b':
          o += '\b';
          break;
        case 'f':
          o += '\f';
          break;
        case 'n':
          o += '\n';
          break;
        case 'r':
          o += '\r';
          break;
        case 't':
          o += '\t';
          break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("unpaired low surrogate in a \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (s_.size() - i_ < 2 || s_[i_] != '\\' || s_[i_ + 1] != 'u')
              fail("unpaired high surrogate in a \\u escape");
            i_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("unpaired high surrogate in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(o, cp);
          break;
        }
        default:
          --i_, fail("bad escape '\\" + shown(std::string(1, e)) + "'");
      }
    }
  }
  bool digit() const { return i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9'; }
  void digits() {
    if (!digit()) fail("malformed number");
    while (digit()) ++i_;
  }
  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, kept as text: callers convert what they need.
  std::string number() {
    const size_t start = i_;
    if (s_[i_] == '-') ++i_;
    if (i_ < s_.size() && s_[i_] == '0')
      ++i_;
    else
      digits();
    if (i_ < s_.size() && s_[i_] == '.') ++i_, digits();
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      digits();
    }
    return s_.substr(start, i_ - start);
  }
  bool literal(const char* word) {
    const size_t n = std::strlen(word);
    if (s_.compare(i_, n, word) != 0) return false;
    i_ += n;
    return true;
  }
  Json value(int depth) {
    if (depth > kMaxJsonDepth) fail("arrays or objects nested more than " + std::to_string(kMaxJsonDepth) + " deep");
    Json v;
    const char c = peek();
    if (c == '{') {
      v.kind = Json::Obj;
      ++i_;
      if (peek() == '}') return ++i_, v;
      std::set<std::string> keys;
      for (;;) {
        const size_t at = (ws(), i_);
        std::string k = string();
        if (!keys.insert(k).second) i_ = at, fail("duplicate key '" + shown(k) + "'");
        expect(':');
        v.obj.emplace_back(std::move(k), value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Json::Arr;
      ++i_;
      if (peek() == ']') return ++i_, v;
      for (;;) {
        v.arr.push_back(value(depth + 1));
        if (peek() == ',') {
          ++i_;
          continue;
        }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Json::Str;
      v.text = string();
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Json::Num;
      v.text = number();
      return v;
    }
    if (literal("true") || literal("false")) return v.kind = Json::Bool, v;
    if (literal("null")) return v;
    fail("unexpected character '" + shown(std::string(1, c)) + "'");
  }
  const std::string& s_;
  const std::string& path_;
  size_t i_ = 0;
};

// --- file I/O with every call checked ------------------------------------------------------------
void write_all(int fd, const void* p, size_t n, const std::string& path, const std::string& tmp) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    const ssize_t w = ::write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      CUDL_FAIL("checkpoint ", path, ": write to ", tmp, " failed: ", std::strerror(errno));
    }
    if (w == 0) CUDL_FAIL("checkpoint ", path, ": write to ", tmp, " wrote nothing");
    c += w;
    n -= static_cast<size_t>(w);
  }
}

// Reads exactly n bytes at offset; fails naming what was being read.
void read_exact(int fd, void* p, size_t n, uint64_t offset, const std::string& path, const std::string& what) {
  char* c = static_cast<char*>(p);
  while (n) {
    const ssize_t r = ::pread(fd, c, std::min<size_t>(n, size_t{1} << 30), static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      CUDL_FAIL("checkpoint ", path, ": reading ", what, " failed: ", std::strerror(errno));
    }
    if (r == 0) CUDL_FAIL("checkpoint ", path, ": truncated while reading ", what, " (the file shrank?)");
    c += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// One validated tensor entry of a header.
struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;  // [begin, end) in the data section
};

// Checks one header entry completely: field set, dtype, shape (non-negative integers whose element
// count and byte size fit), offsets (integers, the size the shape needs, inside the data section).
Entry check_entry(const std::string& path, const std::string& name, const Json& v, uint64_t data_size) {
  const std::string where = "checkpoint " + path + ": tensor '" + shown(name) + "'";
  if (name.empty()) CUDL_FAIL("checkpoint ", path, ": a tensor has an empty name");
  if (v.kind != Json::Obj) CUDL_FAIL(where, ": entry is ", kind_name(v.kind), ", expected an object");
  for (const auto& [k, x] : v.obj)
    if (k != "dtype" && k != "shape" && k != "data_offsets")
      CUDL_FAIL(where, ": unexpected field '", shown(k), "' (expected dtype, shape, data_offsets)");
  const Json *dt = v.get("dtype"), *sh = v.get("shape"), *off = v.get("data_offsets");
  if (!dt || !sh || !off)
    CUDL_FAIL(where, ": malformed entry: missing ",
              !dt   ? "dtype"
              : !sh ? "shape"
                    : "data_offsets",
              " (needs dtype, shape, data_offsets)");
  if (dt->kind != Json::Str) CUDL_FAIL(where, ": dtype is ", kind_name(dt->kind), ", expected a string");
  Entry e;
  e.name = name;
  if (!st_dtype_from_name(dt->text, &e.dtype))
    CUDL_FAIL(where, ": dtype '", shown(dt->text), "' is not supported (F32, F16, BF16, I32, I64, U8)");
  if (sh->kind != Json::Arr) CUDL_FAIL(where, ": shape is ", kind_name(sh->kind), ", expected an array");
  if (sh->arr.size() > static_cast<size_t>(Shape::kMaxDims))
    CUDL_FAIL(where, ": shape has ", sh->arr.size(), " dimensions; at most ", Shape::kMaxDims, " are supported");
  std::vector<int64_t> dims;
  std::string dims_text;
  for (const Json& d : sh->arr) {
    uint64_t u = 0;
    if (d.kind != Json::Num || !parse_u64(d.text, &u) || u > uint64_t(std::numeric_limits<int64_t>::max()))
      CUDL_FAIL(where, ": shape value '",
                shown(d.kind == Json::Num || d.kind == Json::Str ? d.text : kind_name(d.kind)),
                "' is not an integer in [0, 2^63)");
    dims.push_back(static_cast<int64_t>(u));
    dims_text += (dims_text.empty() ? "" : ", ") + d.text;
  }
  uint64_t nbytes = dtype_size(e.dtype);
  bool zero = false;
  for (int64_t d : dims) zero = zero || d == 0;
  for (int64_t d : dims)
    if (!zero && (__builtin_mul_overflow(nbytes, static_cast<uint64_t>(d), &nbytes) ||
                  nbytes > uint64_t(std::numeric_limits<int64_t>::max())))
      CUDL_FAIL(where, ": shape [", dims_text, "] of ", dt->text, " overflows 2^63 bytes");
  if (zero) nbytes = 0;
  e.shape = Shape(dims);
  if (off->kind != Json::Arr || off->arr.size() != 2)
    CUDL_FAIL(where, ": data_offsets must be an array of two integers");
  uint64_t be[2];
  for (int k = 0; k < 2; ++k) {
    const Json& o = off->arr[k];
    if (o.kind != Json::Num || !parse_u64(o.text, &be[k]))
      CUDL_FAIL(where, ": data_offsets value '",
                shown(o.kind == Json::Num || o.kind == Json::Str ? o.text : kind_name(o.kind)),
                "' is not an integer in [0, 2^64)");
  }
  e.begin = be[0], e.end = be[1];
  if (e.end < e.begin || e.end - e.begin != nbytes)
    CUDL_FAIL(where, ": offsets [", e.begin, ", ", e.end, ") do not fit ", e.shape, " ", e.dtype, " (", nbytes,
              " bytes)");
  if (e.end > data_size)
    CUDL_FAIL("checkpoint ", path, ": truncated: tensor '", shown(name), "' ends at byte ", e.end,
              " of the data section but only ", data_size, " bytes remain");
  return e;
}

// The tensors of a checkpoint must tile its data section exactly: no overlaps (one tensor's bytes
// read as another's) and no unused bytes (holes or trailing data), as the format requires.
void check_layout(const std::string& path, std::vector<Entry> entries, uint64_t data_size) {
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t at = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < at)
      CUDL_FAIL("checkpoint ", path, ": tensors '", shown(prev->name), "' [", prev->begin, ", ", prev->end, ") and '",
                shown(e.name), "' [", e.begin, ", ", e.end, ") overlap");
    if (e.begin > at)
      CUDL_FAIL("checkpoint ", path, ": bytes [", at, ", ", e.begin,
                ") of the data section are not covered by any tensor");
    at = e.end;
    prev = &e;
  }
  if (at != data_size)
    CUDL_FAIL("checkpoint ", path, ": too long: the data section has ", data_size - at,
              " bytes after the last tensor (", "bytes [", at, ", ", data_size, ") are not covered by any tensor)");
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  std::ostringstream h;
  h << "{";
  bool first = true;
  if (!metadata.empty()) {
    h << "\"__metadata__\":{";
    for (auto it = metadata.begin(); it != metadata.end(); ++it)
      h << (it == metadata.begin() ? "" : ",") << "\"" << json_escape(it->first) << "\":\"" << json_escape(it->second)
        << "\"";
    h << "}";
    first = false;
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__" || !names.insert(name).second)
      CUDL_FAIL("checkpoint ", path, ": cannot save a tensor named '", shown(name), "' (empty, reserved or repeated)");
    if (!t.defined()) CUDL_FAIL("checkpoint ", path, ": tensor '", shown(name), "' is undefined");
    h << (first ? "" : ",") << "\"" << json_escape(name) << "\":{\"dtype\":\"" << st_dtype(t.dtype())
      << "\",\"shape\":[";
    for (int i = 0; i < t.shape().rank(); ++i) h << (i ? "," : "") << t.shape()[i];
    h << "],\"data_offsets\":[" << offset << "," << offset + t.nbytes() << "]}";
    offset += t.nbytes();
    first = false;
  }
  h << "}";
  std::string header = h.str();
  while (header.size() % 8) header += ' ';  // the format pads the header with spaces to 8 bytes
  if (header.size() > kMaxHeaderBytes)
    CUDL_FAIL("checkpoint ", path, ": header of ", header.size(), " bytes exceeds the format's ", kMaxHeaderBytes);

  // A name no other save (another thread, another process) uses at the same time.
  static std::atomic<uint64_t> counter{0};
  const uint64_t n = counter++;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + (n ? "." + std::to_string(n) : "");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) CUDL_FAIL("checkpoint ", path, ": cannot create ", tmp, ": ", std::strerror(errno));
  try {
    const uint64_t len = header.size();
    unsigned char le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(len >> (8 * i));
    write_all(fd, le, 8, path, tmp);
    write_all(fd, header.data(), header.size(), path, tmp);
    for (const auto& [name, t] : tensors) {
      Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
      write_all(fd, host.data(), host.nbytes(), path, tmp);
    }
    if (::fsync(fd) != 0) CUDL_FAIL("checkpoint ", path, ": fsync of ", tmp, " failed: ", std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // close can report a deferred write error (NFS, quota): then the data is not safely there.
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    CUDL_FAIL("checkpoint ", path, ": close of ", tmp, " failed: ", std::strerror(err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    CUDL_FAIL("checkpoint ", path, ": rename from ", tmp, " failed: ", std::strerror(err));
  }
  // The rename is durable once the directory is synced.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    CUDL_FAIL("checkpoint ", path, ": written, but its directory ", dir,
              " cannot be opened to sync the rename: ", std::strerror(errno));
  const int synced = ::fsync(dfd), err = errno;
  const int closed = ::close(dfd);
  if (synced != 0 || closed != 0)
    CUDL_FAIL("checkpoint ", path, ": written, but syncing its directory ", dir,
              " failed: ", std::strerror(synced != 0 ? err : errno));
}

std::vector<std::pair<std::string, Tensor>> load_safetensors(const std::string& path,
                                                             std::map<std::string, std::string>* metadata) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) CUDL_FAIL("checkpoint ", path, ": cannot open: ", std::strerror(errno));
  struct stat st;
  if (::fstat(f.fd, &st) != 0) CUDL_FAIL("checkpoint ", path, ": cannot stat: ", std::strerror(errno));
  if (S_ISDIR(st.st_mode)) CUDL_FAIL("checkpoint ", path, ": is a directory");
  if (!S_ISREG(st.st_mode)) CUDL_FAIL("checkpoint ", path, ": not a regular file");
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) CUDL_FAIL("checkpoint ", path, ": truncated: ", size, " bytes, the 8-byte header length is missing");
  unsigned char le[8];
  read_exact(f.fd, le, 8, 0, path, "the header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(le[i]) << (8 * i);
  if (n > size - 8)
    CUDL_FAIL("checkpoint ", path, ": truncated or corrupt: header of ", n, " bytes in a ", size, "-byte file");
  if (n > kMaxHeaderBytes)
    CUDL_FAIL("checkpoint ", path, ": corrupt: header of ", n, " bytes exceeds the format's limit of ",
              kMaxHeaderBytes);
  std::string header(n, '\0');
  read_exact(f.fd, header.data(), n, 8, path, "the header");
  const Json root = Parser(header, path).parse();
  if (root.kind != Json::Obj) CUDL_FAIL("checkpoint ", path, ": corrupt header: not a JSON object");

  // Validate everything before reading any tensor data.
  const uint64_t data_start = 8 + n, data_size = size - data_start;
  std::map<std::string, std::string> meta;
  std::vector<Entry> entries;
  for (const auto& [name, v] : root.obj) {
    if (name == "__metadata__") {
      if (v.kind != Json::Obj)
        CUDL_FAIL("checkpoint ", path, ": __metadata__ is ", kind_name(v.kind), ", expected an object of strings");
      for (const auto& [k, s] : v.obj) {
        if (s.kind != Json::Str)
          CUDL_FAIL("checkpoint ", path, ": metadata field '", shown(k), "' is ", kind_name(s.kind),
                    ", expected a string");
        meta[k] = s.text;
      }
      continue;
    }
    entries.push_back(check_entry(path, name, v, data_size));
  }
  check_layout(path, entries, data_size);

  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(entries.size());
  for (const Entry& e : entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    read_exact(f.fd, t.data(), e.end - e.begin, data_start + e.begin, path, "tensor '" + shown(e.name) + "'");
    out.emplace_back(e.name, std::move(t));
  }
  if (metadata)
    for (auto& [k, s] : meta) (*metadata)[k] = std::move(s);
  return out;
}

}  // namespace cudl
