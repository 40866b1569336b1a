// train/checkpoint.cpp — safetensors writer/reader (atomic write: temp file, fsync, rename) and
// model checkpoints on top of it.
#include "cudl/checkpoint.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cudl/error.hpp"

namespace cudl {
namespace {

const char* st_dtype(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f16: return "F16";
    case DType::bf16: return "BF16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
  }
  return "?";
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

// --- a small JSON reader for the safetensors header --------------------------------------------
struct Json {
  enum Kind { Null, Num, Str, Arr, Obj } kind = Null;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::vector<std::pair<std::string, Json>> obj;
  const Json* get(const std::string& k) const {
    for (const auto& [key, v] : obj)
      if (key == k) return &v;
    return nullptr;
  }
};

class Parser {
 public:
  Parser(const std::string& s, const std::string& path) : s_(s), path_(path) {}
  Json parse() {
    Json v = value();
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    CUDL_FAIL("checkpoint ", path_, ": corrupt header: ", what, " at byte ", i_);
  }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  char peek() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string() {
    expect('"');
    std::string o;
    while (i_ < s_.size() && s_[i_] != '"') {
      if (s_[i_] == '\\' && i_ + 1 < s_.size()) ++i_;
      o += s_[i_++];
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return o;
  }
  Json value() {
    Json v;
    char c = peek();
    if (c == '{') {
      v.kind = Json::Obj;
      ++i_;
      if (peek() == '}') return ++i_, v;
      for (;;) {
        std::string k = string();
        expect(':');
        v.obj.emplace_back(k, value());
        if (peek() == ',') { ++i_; continue; }
        expect('}');
        return v;
      }
    }
    if (c == '[') {
      v.kind = Json::Arr;
      ++i_;
      if (peek() == ']') return ++i_, v;
      for (;;) {
        v.arr.push_back(value());
        if (peek() == ',') { ++i_; continue; }
        expect(']');
        return v;
      }
    }
    if (c == '"') {
      v.kind = Json::Str;
      v.str = string();
      return v;
    }
    size_t start = i_;
    while (i_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' || s_[i_] == '.' ||
                              s_[i_] == 'e' || s_[i_] == 'E' || s_[i_] == '+'))
      ++i_;
    if (start == i_) fail("unexpected character");
    v.kind = Json::Num;
    v.num = std::stod(s_.substr(start, i_ - start));
    return v;
  }
  const std::string& s_;
  const std::string& path_;
  size_t i_ = 0;
};

void write_all(int fd, const void* p, size_t n, const std::string& path) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      CUDL_FAIL("checkpoint ", path, ": write failed: ", std::strerror(errno));
    }
    c += w;
    n -= static_cast<size_t>(w);
  }
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
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
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
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) CUDL_FAIL("checkpoint ", path, ": cannot create ", tmp, ": ", std::strerror(errno));
  try {
    uint64_t n = header.size();
    unsigned char le[8];
    for (int i = 0; i < 8; ++i) le[i] = static_cast<unsigned char>(n >> (8 * i));
    write_all(fd, le, 8, path);
    write_all(fd, header.data(), header.size(), path);
    for (const auto& [name, t] : tensors) {
      Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
      write_all(fd, host.data(), host.nbytes(), path);
    }
    if (::fsync(fd) != 0) CUDL_FAIL("checkpoint ", path, ": fsync failed: ", std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    CUDL_FAIL("checkpoint ", path, ": rename from ", tmp, " failed: ", std::strerror(errno));
  }
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::vector<std::pair<std::string, Tensor>> load_safetensors(const std::string& path,
                                                             std::map<std::string, std::string>* metadata) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) CUDL_FAIL("checkpoint ", path, ": cannot open");
  const size_t size = static_cast<size_t>(f.tellg());
  f.seekg(0);
  if (size < 8) CUDL_FAIL("checkpoint ", path, ": truncated: ", size, " bytes, the 8-byte header length is missing");
  unsigned char le[8];
  f.read(reinterpret_cast<char*>(le), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(le[i]) << (8 * i);
  if (n > size - 8) CUDL_FAIL("checkpoint ", path, ": truncated or corrupt: header of ", n, " bytes in a ", size, "-byte file");
  std::string header(n, '\0');
  f.read(header.data(), static_cast<std::streamsize>(n));
  Json root = Parser(header, path).parse();
  if (root.kind != Json::Obj) CUDL_FAIL("checkpoint ", path, ": corrupt header: not a JSON object");
  const size_t data_start = 8 + n, data_size = size - data_start;
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& [name, v] : root.obj) {
    if (name == "__metadata__") {
      if (metadata)
        for (const auto& [k, s] : v.obj) (*metadata)[k] = s.str;
      continue;
    }
    const Json *dt = v.get("dtype"), *sh = v.get("shape"), *off = v.get("data_offsets");
    if (!dt || !sh || !off || dt->kind != Json::Str || sh->kind != Json::Arr || off->kind != Json::Arr ||
        off->arr.size() != 2)
      CUDL_FAIL("checkpoint ", path, ": tensor ", name, ": malformed entry (needs dtype, shape, data_offsets)");
    DType dtype = dtype_from_name(dt->str);
    std::vector<int64_t> dims;
    for (const Json& d : sh->arr) dims.push_back(static_cast<int64_t>(d.num));
    Shape shape(dims);
    const size_t b = static_cast<size_t>(off->arr[0].num), e = static_cast<size_t>(off->arr[1].num);
    if (e < b || e - b != static_cast<size_t>(shape.numel()) * dtype_size(dtype))
      CUDL_FAIL("checkpoint ", path, ": tensor ", name, ": offsets [", b, ", ", e, ") do not fit ", shape, " ", dtype);
    if (e > data_size)
      CUDL_FAIL("checkpoint ", path, ": truncated: tensor ", name, " ends at byte ", e, " of the data section but only ",
                data_size, " bytes remain");
    Tensor t = Tensor::empty(shape, dtype);
    f.seekg(static_cast<std::streamoff>(data_start + b));
    f.read(static_cast<char*>(t.data()), static_cast<std::streamsize>(e - b));
    if (!f) CUDL_FAIL("checkpoint ", path, ": read of tensor ", name, " failed");
    out.emplace_back(name, t);
  }
  return out;
}

void save_checkpoint(Model& model, const std::string& path) {
  std::map<std::string, std::string> meta{{"format", "cudl-checkpoint"}, {"version", "1"},
                                          {"step", std::to_string(model.step())},
                                          {"epoch", std::to_string(model.epoch())}};
  save_safetensors(path, model.state_tensors(), meta);
}

void load_checkpoint(Model& model, const std::string& path) {
  std::map<std::string, std::string> meta;
  auto loaded = load_safetensors(path, &meta);
  std::map<std::string, Tensor> by_name(loaded.begin(), loaded.end());
  auto state = model.state_tensors();
  // Check everything first, then copy: a bad file leaves the model untouched.
  for (const auto& [name, t] : state) {
    auto it = by_name.find(name);
    if (it == by_name.end()) CUDL_FAIL("checkpoint ", path, ": tensor ", name, " is missing");
    if (it->second.shape() != t.shape() || it->second.dtype() != t.dtype())
      CUDL_FAIL("checkpoint ", path, ": tensor ", name, " is ", it->second.shape(), " ", it->second.dtype(),
                " but the model has ", t.shape(), " ", t.dtype());
  }
  for (auto& [name, t] : state) t.copy_from(by_name[name]);
  if (meta.count("step")) model.set_step(std::stoll(meta["step"]));
  if (meta.count("epoch")) model.set_epoch(std::stoll(meta["epoch"]));
}

}  // namespace cudl
