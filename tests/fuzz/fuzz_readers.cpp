// tests/fuzz/fuzz_readers.cpp — deterministic mutation fuzzer for the file readers: the IDX reader
// (raw and gzip) and the checkpoint reader, and for cudl-mnist's command-line parser (target cli:
// each input is an argument vector, NUL-separated). Seeded PRNG, saved corpus, bounded run; fails on
// any exception other than cudl::Error (or a usage error), a checkpoint load that fails yet changes
// the model, an accepted command line outside the flags' ranges, or a hang.
//
//   cudl_fuzz <idx|idx_gz|checkpoint|cli> <corpus-dir> [--runs N] [--seed S] [--timeout S] [--findings DIR]
//   cudl_fuzz <idx|idx_gz|checkpoint> --replay FILE...      (one input each, reports the outcome)
//   cudl_fuzz --make-corpus <corpus-root>                   (writes the seed corpus)
// A crash is reported by the sanitizer or the signal handler with the iteration and the input's
// file, which stays on disk; rerun with the same seed and --runs to reproduce.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../../samples/mnist/args.hpp"
#include "cudl/checkpoint.hpp"
#include "cudl/cudl.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#include <sanitizer/common_interface_defs.h>
#define CUDL_FUZZ_SANITIZED 1
#endif

namespace fs = std::filesystem;
using Bytes = std::string;

namespace {

// --- what the crash and hang reports name ---------------------------------------------------------
char g_input_path[4096];
long long g_iteration = -1;

void write_str(const char* s) { (void)!::write(2, s, std::strlen(s)); }
void write_num(long long v) {
  char buf[32];
  int n = 0;
  if (v < 0) write_str("-"), v = -v;
  do buf[n++] = static_cast<char>('0' + v % 10), v /= 10;
  while (v);
  while (n) (void)!::write(2, &buf[--n], 1);
}
void report_input(const char* what) {
  write_str("\ncudl_fuzz: ");
  write_str(what);
  write_str(" at iteration ");
  write_num(g_iteration);
  write_str("; the input is ");
  write_str(g_input_path);
  write_str("\n");
}
void on_alarm(int) {
  report_input("HANG (no result within the time limit)");
  ::_exit(3);
}
#ifdef CUDL_FUZZ_SANITIZED
void on_sanitizer_death() { report_input("sanitizer report"); }
#else
void on_fatal(int sig) {
  report_input("CRASH (fatal signal)");
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}
#endif

// --- bytes, files, gzip ---------------------------------------------------------------------------
Bytes read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& p, const Bytes& b) {
  ::unlink(p.c_str());  // a new file rather than a truncated one: no flush-on-truncate
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(b.data(), static_cast<std::streamsize>(b.size()));
  if (!out) throw std::runtime_error("cannot write " + p.string());
}

Bytes gzip(const Bytes& b, int level) {
  z_stream z{};
  if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::runtime_error("deflateInit2");
  Bytes out(deflateBound(&z, b.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(b.data()));
  z.avail_in = static_cast<uInt>(b.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int r = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (r != Z_STREAM_END) throw std::runtime_error("deflate");
  return out;
}

Bytes gunzip(const Bytes& b) {
  z_stream z{};
  if (inflateInit2(&z, 15 + 32) != Z_OK) throw std::runtime_error("inflateInit2");
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(b.data()));
  z.avail_in = static_cast<uInt>(b.size());
  Bytes out;
  char buf[1 << 14];
  int r;
  do {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof(buf);
    r = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof(buf) - z.avail_out);
  } while (r == Z_OK);
  inflateEnd(&z);
  if (r != Z_STREAM_END) throw std::runtime_error("a corpus .gz file does not inflate");
  return out;
}

// --- mutations ------------------------------------------------------------------------------------
constexpr size_t kMaxInput = 1 << 20;

struct Mutator {
  std::mt19937_64 rng;
  explicit Mutator(uint64_t seed) : rng(seed) {}
  uint64_t below(uint64_t n) { return n ? rng() % n : 0; }
  bool coin(int one_in) { return below(static_cast<uint64_t>(one_in)) == 0; }

  uint32_t interesting32(size_t len) {
    static const uint32_t v[] = {0, 1, 2, 3, 7, 8, 255, 256, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000u,
                                 0xfffffffeu, 0xffffffffu};
    if (coin(4)) return static_cast<uint32_t>(len + below(9) - 4);
    return v[below(sizeof(v) / sizeof(v[0]))];
  }

  // Generic byte-level edits: bit flip, byte set, insert, delete, duplicate a range, truncate.
  void bytes(Bytes& b) {
    const int kind = static_cast<int>(below(7));
    const size_t n = b.size();
    switch (kind) {
      case 0:
        if (n) b[below(n)] ^= static_cast<char>(1u << below(8));
        break;
      case 1:
        if (n) {
          static const unsigned char v[] = {0, 1, 0x7f, 0x80, 0xff, '0', '9', '"', '{', '['};
          b[below(n)] = static_cast<char>(coin(2) ? v[below(sizeof(v))] : below(256));
        }
        break;
      case 2: {
        Bytes ins(1 + below(8), '\0');
        for (char& c : ins) c = static_cast<char>(below(256));
        b.insert(below(n + 1), ins);
        break;
      }
      case 3:
        if (n) {
          const size_t at = below(n);
          b.erase(at, 1 + below(std::min<size_t>(16, n - at)));
        }
        break;
      case 4:
        if (n) {
          const size_t from = below(n), len = 1 + below(std::min<size_t>(64, n - from));
          b.insert(below(n + 1), b.substr(from, len));
        }
        break;
      case 5:
        b.resize(below(n + 1));
        break;
      default:
        if (n) b[below(n)] = static_cast<char>(b[below(n)]);  // copy one byte over another
        break;
    }
    if (b.size() > kMaxInput) b.resize(kMaxInput);
  }

  // IDX: the rank byte and the 32-bit big-endian dimension fields.
  void idx_fields(Bytes& b) {
    if (b.size() < 4) return bytes(b);
    if (coin(4)) {
      static const unsigned char ranks[] = {0, 1, 2, 3, 4, 8, 9, 255};
      b[3] = static_cast<char>(ranks[below(sizeof(ranks))]);
      return;
    }
    const size_t fields = std::max<size_t>(1, std::min<size_t>(static_cast<unsigned char>(b[3]), 8));
    const size_t at = 4 + 4 * below(fields);
    if (at + 4 > b.size()) return bytes(b);
    const uint32_t v = interesting32(b.size());
    for (int k = 0; k < 4; ++k) b[at + k] = static_cast<char>(v >> (24 - 8 * k));
  }

  // Checkpoint header text: numbers replaced by hostile ones, JSON tokens inserted or removed.
  void header_text(Bytes& h) {
    static const char* numbers[] = {"0", "1", "-1", "-0", "2.5", "1e400", "1e30", "3a8", "00", "4294967296",
                                    "9223372036854775807", "9223372036854775808", "18446744073709551615",
                                    "18446744073709551616", "99999999999999999999999999", ""};
    static const char* tokens[] = {"{", "}", "[", "]", "\"", ",", ":", "\\", "\\u", "\\ud800", "\\u00e9", "null",
                                   "true", "\"__metadata__\":{}", "\"data_offsets\":[0,0]", "\"shape\":[]",
                                   "\"dtype\":\"F64\"", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", " ", "\n"};
    if (h.empty() || coin(3)) {
      const char* t = tokens[below(sizeof(tokens) / sizeof(tokens[0]))];
      if (coin(2) || h.empty()) h.insert(below(h.size() + 1), t);
      else h.erase(below(h.size()), 1 + below(8));
      return;
    }
    // Replace the run of digits around a random position (or the next one after it).
    size_t at = below(h.size());
    while (at < h.size() && !(h[at] >= '0' && h[at] <= '9')) ++at;
    if (at == h.size()) return bytes(h);
    size_t begin = at, end = at;
    while (begin > 0 && h[begin - 1] >= '0' && h[begin - 1] <= '9') --begin;
    while (end < h.size() && h[end] >= '0' && h[end] <= '9') ++end;
    h.replace(begin, end - begin, numbers[below(sizeof(numbers) / sizeof(numbers[0]))]);
  }
};

// Splits a safetensors file into (header, data); a file too short to have a valid length is all data.
std::pair<Bytes, Bytes> split_safetensors(const Bytes& f) {
  if (f.size() < 8) return {Bytes(), f};
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<unsigned char>(f[i])) << (8 * i);
  if (n > f.size() - 8) return {Bytes(), f.substr(8)};
  return {f.substr(8, n), f.substr(8 + n)};
}

Bytes join_safetensors(const Bytes& header, const Bytes& data, uint64_t length) {
  Bytes out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(length >> (8 * i));
  return out + header + data;
}

// --- targets --------------------------------------------------------------------------------------
// A reader that answered, but wrongly: accepted a file it should not have, or changed what a failed
// load must leave alone.
struct WrongResult : std::logic_error {
  using std::logic_error::logic_error;
};

struct Target {
  virtual ~Target() = default;
  // One mutated input from a seed.
  virtual Bytes mutate(Mutator& m, const Bytes& seed) = 0;
  // Runs the reader on the file; throws on a finding (anything but a clean cudl::Error).
  virtual bool run(const std::string& path) = 0;  // true: accepted, false: rejected with cudl::Error
  virtual void summary() {}
};

struct IdxTarget : Target {
  bool gz;
  explicit IdxTarget(bool gz_) : gz(gz_) {}
  Bytes mutate(Mutator& m, const Bytes& seed) override {
    if (!gz) {
      Bytes b = seed;
      for (int k = 1 + static_cast<int>(m.below(3)); k > 0; --k) m.coin(2) ? m.idx_fields(b) : m.bytes(b);
      return b;
    }
    // Mostly: edit the IDX bytes, then compress (the reader gets a valid gzip stream of hostile
    // content, bombs included); sometimes: edit the compressed bytes themselves.
    Bytes plain = gunzip(seed);
    if (m.coin(32)) {  // a bomb: inflates far past what the header promises
      plain.append(static_cast<size_t>(m.below(256u << 10)), '\0');  // 16 times zlib's output buffer
      return gzip(plain, 1);
    }
    if (m.coin(3)) {
      Bytes z = gzip(plain, 1 + static_cast<int>(m.below(9)));
      for (int k = 1 + static_cast<int>(m.below(3)); k > 0; --k) m.bytes(z);
      return z;
    }
    for (int k = 1 + static_cast<int>(m.below(3)); k > 0; --k) m.coin(2) ? m.idx_fields(plain) : m.bytes(plain);
    Bytes z = gzip(plain, 1 + static_cast<int>(m.below(9)));
    if (m.coin(6)) z += gzip(Bytes(1 + m.below(64), '\x07'), 6);  // a second gzip member
    return z;
  }
  bool run(const std::string& path) override {
    cudl::Tensor t = cudl::read_idx(path);
    // An accepted file is exactly its header's promise: u8 data of the header's dimensions, the
    // file's bytes after the header (checked against the file itself when it is not gzip).
    if (t.dtype() != cudl::DType::u8) throw WrongResult("read_idx returned a non-u8 tensor");
    const std::vector<uint8_t> v = t.to_vector<uint8_t>();
    unsigned __int128 product = 1;  // the dimensions' product without wrapping (each < 2^32, rank <= 8)
    for (int64_t d : t.shape().dims()) product = product > (unsigned __int128)1 << 64 ? product : product * uint64_t(d);
    if (product != v.size())
      throw WrongResult("read_idx returned " + std::to_string(v.size()) + " bytes for the dimensions " +
                             t.shape().str());
    const Bytes f = read_file(path);
    const bool gzip_file = f.size() >= 2 && f[0] == '\x1f' && f[1] == '\x8b';
    if (!gzip_file) {
      const size_t header = 4 + 4 * static_cast<size_t>(t.shape().rank());
      if (f.size() < 4 || static_cast<unsigned char>(f[3]) != t.shape().rank() || f.size() != header + v.size() ||
          std::memcmp(f.data() + header, v.data(), v.size()) != 0)
        throw WrongResult("read_idx accepted a file whose header and data disagree with the tensor " +
                               t.shape().str());
    }
    return true;
  }
};


// --- cudl-mnist's command line --------------------------------------------------------------------
// An input is the arguments after the program name, separated by NUL bytes. The parser runs with
// usage errors thrown (not exiting); a usage error must name what was wrong (an argument of the
// input, or '' for an empty one), and an accepted command line must hold only in-range values.
struct CliTarget : Target {
  static std::vector<std::string> split(const Bytes& b) {
    std::vector<std::string> out;
    size_t start = 0;
    for (size_t i = 0; i <= b.size(); ++i)
      if (i == b.size() || b[i] == '\0') {
        if (i > start || i < b.size()) out.push_back(b.substr(start, i - start));
        start = i + 1;
      }
    return out;
  }
  static Bytes join(const std::vector<std::string>& args) {
    Bytes b;
    for (size_t i = 0; i < args.size(); ++i) b += (i ? Bytes(1, '\0') : Bytes()) + args[i];
    return b;
  }
  Bytes mutate(Mutator& m, const Bytes& seed) override {
    static const char* flags[] = {"--model", "--epochs", "--batch-size", "--lr", "--optimizer", "--schedule",
                                  "--device", "--data", "--dataset", "--limit", "--placement", "--augment",
                                  "--seed", "--save", "--resume", "--csv", "--plot", "--profile", "--help", "-h",
                                  "--", "-", "--epochs=3", "--Model"};
    static const char* values[] = {"0", "1", "-1", "-0", "4294967297", "2147483648", "1048577", "1000001",
                                   "9223372036854775807", "9223372036854775808", "99999999999999999999", "1e39",
                                   "1e-400", "nan", "inf", "-inf", "0x10", " 5", "5 ", "", "3a8", "1e6", "1e-3",
                                   "cnn", "mlp", "cuda", "cuda:7", "cuda:-1", "cuda:99999999999", "cpu", "auto",
                                   "fashion", "stream", "sgd", "constant", "%s%n", "\xff\xfe"};
    if (m.coin(8)) {  // raw byte edits (may split or join arguments)
      Bytes b = seed;
      for (int k = 1 + static_cast<int>(m.below(3)); k > 0; --k) m.bytes(b);
      return b;
    }
    std::vector<std::string> a = split(seed);
    for (int k = 1 + static_cast<int>(m.below(3)); k > 0; --k) {
      const size_t at = static_cast<size_t>(m.below(a.size() + 1));
      switch (m.below(5)) {
        case 0:  // a value replaced
          if (at < a.size()) a[at] = values[m.below(sizeof(values) / sizeof(values[0]))];
          break;
        case 1:  // a flag inserted
          a.insert(a.begin() + static_cast<long>(at), flags[m.below(sizeof(flags) / sizeof(flags[0]))]);
          break;
        case 2:  // a flag and a value inserted
          a.insert(a.begin() + static_cast<long>(at), values[m.below(sizeof(values) / sizeof(values[0]))]);
          a.insert(a.begin() + static_cast<long>(at), flags[m.below(sizeof(flags) / sizeof(flags[0]))]);
          break;
        case 3:  // an argument dropped
          if (at < a.size()) a.erase(a.begin() + static_cast<long>(at));
          break;
        default:  // an argument's bytes edited
          if (at < a.size()) m.bytes(a[at]);
          break;
      }
    }
    return join(a);
  }
  bool run(const std::string& path) override {
    const std::vector<std::string> args = split(read_file(path));
    std::vector<const char*> argv{mnist::kProgram};
    for (const auto& s : args) argv.push_back(s.c_str());
    sample::usage_errors_throw() = true;
    mnist::Args a;
    try {
      a = mnist::parse(static_cast<int>(argv.size()), argv.data());
    } catch (const sample::HelpRequested&) {
      return true;
    } catch (const sample::UsageError& e) {
      const std::string msg = e.what();
      const bool prefixed = msg.rfind(std::string(mnist::kProgram) + ": ", 0) == 0;
      bool names = msg.find("''") != std::string::npos;
      for (const auto& s : args) names = names || (!s.empty() && msg.find(s) != std::string::npos);
      names = names && prefixed;
      if (!names) throw WrongResult("the usage error names no argument of the input: " + msg);
      throw cudl::Error("arguments in " + path + ": " + msg.substr(std::strlen(mnist::kProgram) + 2));
    }
    auto in = [](const std::string& v, std::initializer_list<const char*> ok) {
      for (const char* o : ok)
        if (v == o) return true;
      return false;
    };
    if (a.epochs < 0 || a.epochs > 1000000 || a.batch < 1 || a.batch > (1 << 20) || a.limit < 0 ||
        a.limit > (1LL << 31) || !(a.lr > 0) || !(a.lr <= 1e6) || !std::isfinite(static_cast<float>(a.lr)) ||
        !in(a.model, {"mlp", "cnn"}) || !in(a.optimizer, {"adam", "sgd"}) ||
        !in(a.placement, {"auto", "device", "stream"}) || !in(a.schedule, {"cosine", "constant"}) ||
        !in(a.dataset, {"mnist", "fashion"}) || a.data.empty() ||
        !(in(a.device, {"auto", "cpu"}) || a.device.rfind("cuda", 0) == 0))
      throw WrongResult("accepted a command line outside the flags' ranges");
    return true;
  }
};

std::unique_ptr<cudl::Sequential> fuzz_model() {
  auto m = std::make_unique<cudl::Sequential>(
      cudl::Shape{4},
      std::vector<cudl::LayerPtr>{cudl::layers::Dense(cudl::DenseOptions(3).activation("relu").name("fz1")), cudl::layers::Dense(cudl::DenseOptions(2).name("fz2"))},
      "fz");
  cudl::CompileOptions o;
  o.optimizer = cudl::optim::Adam(0.01);
  o.seed = 7;
  m->compile(o);
  return m;
}

std::vector<std::pair<std::string, Bytes>> state_bytes(cudl::Model& m) {
  std::vector<std::pair<std::string, Bytes>> out;
  for (auto& [name, t] : m.state_tensors()) {
    cudl::Tensor h = t.to(cudl::Device::cpu());
    out.emplace_back(name, Bytes(static_cast<const char*>(h.data()), h.nbytes()));
  }
  return out;
}

struct CheckpointTarget : Target {
  std::unique_ptr<cudl::Sequential> model = fuzz_model();
  std::vector<std::pair<std::string, Bytes>> baseline;
  int64_t step = 0, epoch = 0;
  std::vector<cudl::Tensor> baseline_tensors;

  explicit CheckpointTarget(const fs::path& reference) {
    if (!reference.empty()) {
      try {
        cudl::load_checkpoint(*model, reference.string());
      } catch (const cudl::Error& e) {
        throw std::runtime_error(std::string("the corpus checkpoint does not fit the fuzz model (regenerate the corpus "
                                             "with --make-corpus): ") + e.what());
      }
    }
    baseline = state_bytes(*model);
    for (auto& [name, t] : model->state_tensors()) baseline_tensors.push_back(t.to(cudl::Device::cpu()).clone());
    step = model->step(), epoch = model->epoch();
  }
  Bytes mutate(Mutator& m, const Bytes& seed) override {
    auto [header, data] = split_safetensors(seed);
    for (int k = 1 + static_cast<int>(m.below(3)); k > 0; --k) {
      const int where = static_cast<int>(m.below(10));
      if (where < 6) m.header_text(header);
      else if (where < 8) m.bytes(header);
      else m.bytes(data);
    }
    uint64_t length = header.size();  // mostly a consistent length field, so the header gets parsed
    if (m.coin(5)) {
      static const uint64_t v[] = {0, 1, 7, 8, 0x7fffffffffffffffull, 0x8000000000000000ull, ~0ull};
      length = m.coin(2) ? v[m.below(sizeof(v) / sizeof(v[0]))] : header.size() + m.below(17) - 8;
    }
    Bytes out = join_safetensors(header, data, length);
    if (m.coin(10)) out.resize(m.below(out.size() + 1));
    return out;
  }
  bool run(const std::string& path) override {
    try {
      cudl::load_checkpoint(*model, path);
    } catch (const cudl::Error&) {
      // The promise: a file that is refused changes nothing.
      if (model->step() != step || model->epoch() != epoch || state_bytes(*model) != baseline)
        throw WrongResult("load_checkpoint failed but changed the model");
      throw;
    }
    // Accepted: put the baseline back so every input starts from the same model.
    auto state = model->state_tensors();
    for (size_t i = 0; i < state.size(); ++i) state[i].second.copy_from(baseline_tensors[i]);
    model->set_step(step);
    model->set_epoch(epoch);
    return true;
  }
};

// --- corpus ---------------------------------------------------------------------------------------
Bytes idx_file(const std::vector<uint32_t>& dims, uint64_t seed) {
  Bytes b{0, 0, 8, static_cast<char>(dims.size())};
  size_t n = 1;
  for (uint32_t d : dims) {
    for (int k = 0; k < 4; ++k) b += static_cast<char>(d >> (24 - 8 * k));
    n *= d;
  }
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; ++i) b += static_cast<char>(rng() % 256);
  return b;
}

void make_corpus(const fs::path& root) {
  fs::create_directories(root / "idx");
  fs::create_directories(root / "idx_gz");
  fs::create_directories(root / "checkpoint");
  fs::create_directories(root / "cli");
  const std::vector<std::pair<std::string, std::vector<std::string>>> cli{
      {"cnn-epochs", {"--model", "cnn", "--epochs", "3", "--batch-size", "64"}},
      {"lr-seed", {"--lr", "1e-3", "--seed", "7", "--schedule", "constant", "--optimizer", "sgd"}},
      {"outputs", {"--device", "cpu", "--csv", "", "--plot", "x.png", "--save", "m.safetensors"}},
      {"flags", {"--augment", "--profile", "--dataset", "fashion", "--limit", "100", "--placement", "stream"}},
      {"empty", {}},
  };
  for (const auto& [name, args] : cli) write_file(root / "cli" / (name + ".args"), CliTarget::join(args));
  const std::vector<std::pair<std::string, Bytes>> idx{
      {"labels-10", idx_file({10}, 1)},
      {"images-2x4x4", idx_file({2, 4, 4}, 2)},
      {"matrix-3x5", idx_file({3, 5}, 3)},
      {"rank4-1x2x1x3", idx_file({1, 2, 1, 3}, 4)},
      {"rank8-1x1x1x1x1x1x1x2", idx_file({1, 1, 1, 1, 1, 1, 1, 2}, 5)},
  };
  for (const auto& [name, b] : idx) {
    write_file(root / "idx" / (name + ".idx"), b);
    write_file(root / "idx_gz" / (name + ".idx.gz"), gzip(b, 9));
  }
  // The fuzz model after one epoch of Adam (nonzero slots), and other safetensors shapes.
  auto m = fuzz_model();
  cudl::Dataset d;
  std::vector<float> x(32);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) / 7.f - 0.4f;
  d.x = cudl::Tensor::from_vector(x, cudl::Shape{8, 4});
  d.y = cudl::Tensor::from_vector(std::vector<int32_t>{0, 1, 1, 0, 1, 0, 0, 1}, cudl::Shape{8});
  cudl::FitOptions f;
  f.epochs = 1;
  f.batch_size = 4;
  f.verbose = 0;
  m->fit(d, f);
  cudl::save_checkpoint(*m, (root / "checkpoint" / "model.safetensors").string());
  cudl::save_safetensors((root / "checkpoint" / "dtypes.safetensors").string(),
                         {{"f32", cudl::Tensor::from_vector<float>({1.5f, -2.f}, cudl::Shape{2})},
                          {"i64", cudl::Tensor::from_vector<int64_t>({-7}, cudl::Shape{1, 1})},
                          {"i32", cudl::Tensor::from_vector<int32_t>({3, 4, 5}, cudl::Shape{3})},
                          {"u8", cudl::Tensor::from_vector<uint8_t>({9}, cudl::Shape{1})},
                          {"empty", cudl::Tensor::empty(cudl::Shape{0, 3})},
                          {"name \"quoted\"\n\\", cudl::Tensor::from_vector<float>({0.f}, cudl::Shape{})}},
                         {{"format", "cudl-checkpoint"}, {"step", "5"}, {"epoch", "1"}, {"note", "caf\u00e9"}});
  cudl::save_safetensors((root / "checkpoint" / "no-metadata.safetensors").string(),
                         {{"a", cudl::Tensor::from_vector<float>({1, 2, 3, 4}, cudl::Shape{2, 2})}});
}

// --- the loop -------------------------------------------------------------------------------------
struct Options {
  std::string target;
  fs::path corpus, findings;
  long long runs = 100000;
  uint64_t seed = 1;
  unsigned timeout_s = 20;
  std::vector<std::string> replay;
};

std::unique_ptr<Target> make_target(const Options& o) {
  if (o.target == "idx") return std::make_unique<IdxTarget>(false);
  if (o.target == "idx_gz") return std::make_unique<IdxTarget>(true);
  if (o.target == "checkpoint") {
    fs::path ref;
    if (!o.corpus.empty() && fs::exists(o.corpus / "model.safetensors")) ref = o.corpus / "model.safetensors";
    return std::make_unique<CheckpointTarget>(ref);
  }
  if (o.target == "cli") return std::make_unique<CliTarget>();
  throw std::runtime_error("unknown target '" + o.target + "' (idx, idx_gz, checkpoint, cli)");
}

// Runs one input; returns "" when the reader answered cleanly, else what went wrong.
std::string run_one(Target& t, const std::string& path, bool* accepted, std::string* error) {
  try {
    *accepted = t.run(path);
    return "";
  } catch (const cudl::Error& e) {
    *accepted = false;
    *error = e.what();
    return "";
  } catch (const WrongResult& e) {
    return std::string("wrong result: ") + e.what();
  } catch (const std::exception& e) {
    return std::string("exception other than cudl::Error: ") + e.what();
  } catch (...) {
    return "non-standard exception";
  }
}

int fuzz(const Options& o) {
  std::vector<Bytes> seeds;
  std::vector<std::string> seed_names;
  for (const auto& e : fs::directory_iterator(o.corpus))
    if (e.is_regular_file()) seed_names.push_back(e.path().filename().string());
  std::sort(seed_names.begin(), seed_names.end());  // directory order is not deterministic
  for (const auto& n : seed_names) seeds.push_back(read_file(o.corpus / n));
  if (seeds.empty()) throw std::runtime_error("empty corpus " + o.corpus.string());
  auto target = make_target(o);

  // In memory when /dev/shm exists: rewriting a file 100,000 times on a disk file system can cost
  // a flush each time (ext4 flushes a truncated-and-rewritten file), 50 times slower.
  std::error_code ec;
  const fs::path tmp_root = ::access("/dev/shm", W_OK) == 0 ? fs::path("/dev/shm") : fs::temp_directory_path(ec);
  const fs::path work = tmp_root / ("cudl-fuzz-" + o.target + "-" + std::to_string(::getpid()));
  fs::create_directories(work);
  const fs::path input = work / "input";
  std::snprintf(g_input_path, sizeof(g_input_path), "%s", input.c_str());
  ::signal(SIGALRM, on_alarm);
#ifdef CUDL_FUZZ_SANITIZED
  __sanitizer_set_death_callback(on_sanitizer_death);
#else
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::signal(sig, on_fatal);
#endif

  Mutator m(o.seed);
  long long accepted = 0, rejected = 0, findings = 0;
  std::map<std::string, long long> first_words;  // a rough histogram of the errors
  const auto start = std::chrono::steady_clock::now();
  for (g_iteration = 0; g_iteration < o.runs; ++g_iteration) {
    // Every 16th input is a corpus file as it is, so the accept path keeps being exercised.
    const size_t pick = static_cast<size_t>(m.below(seeds.size()));
    const Bytes b = g_iteration % 16 == 0 ? seeds[pick] : target->mutate(m, seeds[pick]);
    write_file(input, b);
    bool ok = false;
    std::string error;
    ::alarm(o.timeout_s);
    const std::string finding = run_one(*target, input.string(), &ok, &error);
    ::alarm(0);
    if (!finding.empty()) {
      ++findings;
      std::cerr << "cudl_fuzz: FINDING at iteration " << g_iteration << " (seed " << seed_names[pick]
                << "): " << finding << "\n";
      if (!o.findings.empty()) {
        fs::create_directories(o.findings);
        const fs::path keep = o.findings / (o.target + "-" + std::to_string(g_iteration));
        write_file(keep, b);
        std::cerr << "  saved as " << keep << "\n";
      }
      continue;
    }
    if (!ok && error.find(g_input_path) == std::string::npos) {
      ++findings;
      std::cerr << "cudl_fuzz: FINDING at iteration " << g_iteration << ": the error does not name the file: " << error
                << "\n";
    } else if (ok) {
      ++accepted;
    } else {
      ++rejected;
      // "IDX file <path>: truncated: ..." -> "truncated"
      const size_t colon = error.find(": ", error.find(g_input_path) + std::strlen(g_input_path));
      std::string kind = colon == std::string::npos ? error : error.substr(colon + 2);
      kind = kind.substr(0, std::min(kind.find_first_of(":(['0123456789"), size_t{40}));
      ++first_words[kind];
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fs::remove_all(work);
  std::cout << "cudl_fuzz " << o.target << ": " << o.runs << " inputs (seed " << o.seed << ", " << seeds.size()
            << " corpus files) in " << secs << " s (" << static_cast<long long>(o.runs / std::max(secs, 1e-9))
            << "/s): " << accepted << " accepted, " << rejected << " rejected with cudl::Error, " << findings
            << " findings, 0 crashes, 0 hangs\n";
  std::vector<std::pair<long long, std::string>> kinds;
  for (const auto& [k, n] : first_words) kinds.emplace_back(n, k);
  std::sort(kinds.rbegin(), kinds.rend());
  std::cout << "  most frequent errors:";
  for (size_t i = 0; i < kinds.size() && i < 8; ++i) std::cout << (i ? "; " : " ") << kinds[i].second << " x" << kinds[i].first;
  std::cout << "\n";
  return findings ? 1 : 0;
}

int replay(const Options& o) {
  auto target = make_target(o);
  int bad = 0;
  for (const auto& p : o.replay) {
    std::snprintf(g_input_path, sizeof(g_input_path), "%s", p.c_str());
    bool ok = false;
    std::string error;
    const std::string finding = run_one(*target, p, &ok, &error);
    if (!finding.empty()) ++bad;
    std::cout << p << ": " << (!finding.empty() ? "FINDING: " + finding : ok ? "accepted" : "error: " + error) << "\n";
  }
  return bad ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 2 && args[0] == "--make-corpus") {
      make_corpus(args[1]);
      return 0;
    }
    if (args.size() < 2) {
      std::cerr << "usage: cudl_fuzz <idx|idx_gz|checkpoint|cli> <corpus-dir> [--runs N] [--seed S] [--timeout S] "
                   "[--findings DIR]\n       cudl_fuzz <target> [--corpus DIR] --replay FILE...\n"
                   "       cudl_fuzz --make-corpus <corpus-root>\n";
      return 2;
    }
    Options o;
    o.target = args[0];
    size_t i = 1;
    if (args[1].rfind("--", 0) != 0) o.corpus = args[i++];
    for (; i < args.size(); ++i) {
      auto value = [&]() -> const std::string& {
        if (i + 1 >= args.size()) throw std::runtime_error(args[i] + " needs a value");
        return args[++i];
      };
      if (args[i] == "--runs") o.runs = std::stoll(value());
      else if (args[i] == "--seed") o.seed = std::stoull(value());
      else if (args[i] == "--timeout") o.timeout_s = static_cast<unsigned>(std::stoul(value()));
      else if (args[i] == "--findings") o.findings = value();
      else if (args[i] == "--corpus") o.corpus = value();
      else if (args[i] == "--replay") o.replay.assign(args.begin() + static_cast<long>(i) + 1, args.end()), i = args.size();
      else throw std::runtime_error("unknown option " + args[i]);
    }
    return o.replay.empty() ? fuzz(o) : replay(o);
  } catch (const std::exception& e) {
    std::cerr << "cudl_fuzz: " << e.what() << "\n";
    return 2;
  }
}
