// tests/test_checkpoint.cpp — safetensors round trip, exact resume, atomic writes, and errors that
// name the tensor or file for missing, mis-shaped, truncated and corrupt checkpoints.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>

#include "cudl/checkpoint.hpp"
#include "testing.hpp"

using namespace cudl;
using cudl::testing::error_message;

namespace {

Dataset blobs(int64_t n) { return cudl::testing::separable_blobs(n, 4, 2, 1.f, 0.5f, 3); }

/// `adjust` (optional) changes the compile options first.
std::unique_ptr<Sequential> make(const std::string& tag, int units = 8,
                                 const std::function<void(CompileOptions&)>& adjust = nullptr) {
  auto m = std::make_unique<Sequential>(
      Shape{4}, std::vector<LayerPtr>{layers::Dense(DenseOptions(units).activation("relu").name(tag + "1")), layers::Dense(DenseOptions(2).name(tag + "2"))},
      tag);
  CompileOptions o;
  o.optimizer = optim::Adam(0.01);
  o.seed = 4;
  if (adjust) adjust(o);
  m->compile(o);
  return m;
}

std::string tmp(const std::string& name) { return "/tmp/cudl-ckpt-" + std::to_string(::getpid()) + "-" + name; }

FitOptions fit(int epochs) {
  FitOptions f;
  f.epochs = epochs;
  f.batch_size = 8;
  f.verbose = 0;
  f.shuffle = true;  // the epoch's shuffle comes from the epoch number stored in the checkpoint
  return f;
}

}  // namespace

TEST(Safetensors, RoundTripAndHeaderLayout) {
  std::string p = tmp("rt.safetensors");
  Tensor a = Tensor::from_vector<float>({1, 2, 3, 4, 5, 6}, Shape{2, 3});
  Tensor b = Tensor::from_vector<int64_t>({7, -8}, Shape{2});
  save_safetensors(p, {{"a", a}, {"b", b}}, {{"k", "v"}});
  std::map<std::string, std::string> meta;
  auto t = load_safetensors(p, &meta);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].first, "a");
  EXPECT_EQ(t[0].second.to_vector<float>(), a.to_vector<float>());
  EXPECT_EQ(t[1].second.to_vector<int64_t>(), b.to_vector<int64_t>());
  EXPECT_EQ(meta["k"], "v");
  // Header: 8-byte little-endian length, then JSON with F32/I64 dtypes and data offsets.
  std::ifstream f(p, std::ios::binary);
  unsigned char le[8];
  f.read(reinterpret_cast<char*>(le), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(le[i]) << (8 * i);
  std::string header(n, '\0');
  f.read(header.data(), n);
  EXPECT_NE(header.find("\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"), std::string::npos) << header;
  EXPECT_NE(header.find("\"dtype\":\"I64\""), std::string::npos) << header;
  EXPECT_EQ(n % 8, 0u);
  std::remove(p.c_str());
}

TEST(Checkpoint, ResumeContinuesExactly) {
  Dataset d = blobs(64);
  auto full = make("ra");
  full->fit(d, fit(2));
  auto half = make("ra");  // same names and seed: same initial weights
  half->fit(d, fit(1));
  std::string p = tmp("resume.safetensors");
  save_checkpoint(*half, p);
  auto resumed = make("ra");
  load_checkpoint(*resumed, p);
  EXPECT_EQ(resumed->step(), half->step());
  EXPECT_EQ(resumed->epoch(), 1);
  resumed->fit(d, fit(1));
  auto sa = full->state_tensors(), sb = resumed->state_tensors();
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    ASSERT_EQ(sa[i].first, sb[i].first);
    if (sa[i].second.dtype() == DType::f32)
      EXPECT_EQ(sa[i].second.to_vector<float>(), sb[i].second.to_vector<float>()) << sa[i].first;
  }
  std::remove(p.c_str());
}

TEST(Checkpoint, MissingMisshapedTruncatedAndCorruptFilesAreNamed) {
  auto m = make("ce");
  std::string p = tmp("bad.safetensors");
  auto wide = make("ce_w", 9);  // different layer names: tensors missing
  save_checkpoint(*wide, p);
  std::string e = error_message([&] { load_checkpoint(*m, p); });
  EXPECT_NE(e.find("ce1.kernel"), std::string::npos) << e;
  EXPECT_NE(e.find("missing"), std::string::npos) << e;
  // Same names, other shape.
  auto shaped = std::make_unique<Sequential>(
      Shape{4}, std::vector<LayerPtr>{layers::Dense(DenseOptions(9).activation("relu").name("ce1")), layers::Dense(DenseOptions(2).name("ce2"))}, "ce");
  CompileOptions o;
  shaped->compile(o);
  save_checkpoint(*shaped, p);
  e = error_message([&] { load_checkpoint(*m, p); });
  EXPECT_NE(e.find("ce1.kernel"), std::string::npos) << e;
  EXPECT_NE(e.find("(9, 4)"), std::string::npos) << e;
  EXPECT_NE(e.find("(8, 4)"), std::string::npos) << e;
  // Truncated: cut the file short.
  save_checkpoint(*m, p);
  std::ifstream in(p, std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(all.data(), all.size() - 10);
  e = error_message([&] { load_checkpoint(*m, p); });
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;
  // Corrupt header.
  std::string bad = all;
  bad[9] = '#';
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(bad.data(), bad.size());
  e = error_message([&] { load_checkpoint(*m, p); });
  EXPECT_NE(e.find("corrupt"), std::string::npos) << e;
  EXPECT_NE(e.find(p), std::string::npos) << e;
  std::remove(p.c_str());
}

TEST(Checkpoint, WriteIsAtomic) {
  auto m = make("at");
  std::string p = tmp("atomic.safetensors");
  save_checkpoint(*m, p);
  // A failing write (directory that does not exist) leaves no file and no temporary behind.
  EXPECT_THROW(save_checkpoint(*m, "/nonexistent-dir/x.safetensors"), Error);
  // The temporary name is gone after a successful save.
  std::ifstream t(p + ".tmp." + std::to_string(::getpid()));
  EXPECT_FALSE(t.good());
  std::remove(p.c_str());
}

namespace {

std::string read_file(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A safetensors file from a header text (padded to 8 bytes as the format does) and data bytes.
std::string safetensors_bytes(std::string header, const std::string& data) {
  while (header.size() % 8) header += ' ';
  return le64(header.size()) + header + data;
}

// The header text and the data section of a safetensors file.
std::pair<std::string, std::string> split_safetensors(const std::string& file) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<unsigned char>(file[i])) << (8 * i);
  return {file.substr(8, n), file.substr(8 + n)};
}

// Replaces the one occurrence of `from` in the file's header by `to` (the test fails when there is none).
std::string edit_header(const std::string& file, const std::string& from, const std::string& to) {
  auto [header, data] = split_safetensors(file);
  const size_t at = header.find(from);
  EXPECT_NE(at, std::string::npos) << "'" << from << "' not in " << header;
  if (at != std::string::npos) header.replace(at, from.size(), to);
  while (!header.empty() && header.back() == ' ') header.pop_back();
  return safetensors_bytes(header, data);
}

// Every state tensor's bytes (on the host), to compare a model before and after a failed load.
std::vector<std::pair<std::string, std::string>> state_bytes(Model& m) {
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& [name, t] : m.state_tensors()) {
    Tensor h = t.to(Device::cpu());
    out.emplace_back(name, std::string(static_cast<const char*>(h.data()), h.nbytes()));
  }
  return out;
}

}  // namespace

TEST(Checkpoint, BadMetadataNumbersAreErrorsNamingFileFieldAndValue) {
  Dataset d = blobs(32);
  auto m = make("cm");
  m->fit(d, fit(1));
  std::string p = tmp("meta.safetensors");
  save_checkpoint(*m, p);
  const std::string good = read_file(p);
  const std::string step = "\"step\":\"" + std::to_string(m->step()) + "\"";
  for (const std::string& v : {"3a8", "99999999999999999999", "-5", "", " 4", "1e3", "0x10", "4.0"}) {
    write_file(p, edit_header(good, step, "\"step\":\"" + v + "\""));
    std::string e = error_message([&] { load_checkpoint(*m, p); });
    EXPECT_NE(e.find(p), std::string::npos) << v << ": " << e;
    EXPECT_NE(e.find("step"), std::string::npos) << v << ": " << e;
    EXPECT_NE(e.find("'" + v + "'"), std::string::npos) << v << ": " << e;
  }
  write_file(p, edit_header(good, "\"epoch\":\"1\"", "\"epoch\":\"18446744073709551617\""));
  std::string e = error_message([&] { load_checkpoint(*m, p); });
  EXPECT_NE(e.find("epoch"), std::string::npos) << e;
  EXPECT_NE(e.find("18446744073709551617"), std::string::npos) << e;
  // Metadata values are strings in the format; a number there is an error, not an empty string.
  write_file(p, edit_header(good, "\"epoch\":\"1\"", "\"epoch\":1"));
  e = error_message([&] { load_checkpoint(*m, p); });
  EXPECT_NE(e.find("epoch"), std::string::npos) << e;
  EXPECT_NE(e.find("string"), std::string::npos) << e;
  std::remove(p.c_str());
}

TEST(Checkpoint, ACorruptFileLeavesATrainedModelBitwiseUnchanged) {
  Dataset d = blobs(32);
  auto m = make("cu");
  m->fit(d, fit(1));
  std::string p = tmp("unchanged.safetensors");
  auto other = make("cu");  // same architecture, other state: a load that went through would change m
  other->fit(d, fit(3));
  save_checkpoint(*other, p);
  const std::string good = read_file(p);
  const auto before = state_bytes(*m);
  const int64_t step = m->step(), epoch = m->epoch();
  const std::string kernel = "\"cu1.kernel\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[0,128]}";
  struct Case {
    std::string what, file, expect;
  };
  const std::vector<Case> cases{
      {"bad step", edit_header(good, "\"step\":\"" + std::to_string(other->step()) + "\"", "\"step\":\"3a8\""), "3a8"},
      {"huge dim", edit_header(good, kernel, "\"cu1.kernel\":{\"dtype\":\"F32\",\"shape\":[8,1e400],\"data_offsets\":[0,128]}"),
       "1e400"},
      {"fractional dim",
       edit_header(good, kernel, "\"cu1.kernel\":{\"dtype\":\"F32\",\"shape\":[8,2.5],\"data_offsets\":[0,128]}"), "2.5"},
      {"negative dim", edit_header(good, kernel, "\"cu1.kernel\":{\"dtype\":\"F32\",\"shape\":[-8,4],\"data_offsets\":[0,128]}"),
       "-8"},
      {"numel overflow",
       edit_header(good, kernel,
                   "\"cu1.kernel\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,128]}"),
       "overflow"},
      {"unknown dtype", edit_header(good, kernel, "\"cu1.kernel\":{\"dtype\":\"F64\",\"shape\":[8,4],\"data_offsets\":[0,128]}"),
       "F64"},
      {"offsets past the data",
       edit_header(good, kernel, "\"cu1.kernel\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[0,99999999999]}"),
       "99999999999"},
      {"overlapping offsets", edit_header(good, "\"data_offsets\":[128,160]", "\"data_offsets\":[96,128]"), "overlap"},
      {"duplicate name", edit_header(good, "\"cu2.bias\"", "\"cu1.bias\""), "cu1.bias"},
      {"trailing bytes", good + std::string(16, '\0'), "16"},
      {"truncated data", good.substr(0, good.size() - 4), "truncated"},
      {"metadata not an object", edit_header(good, "\"__metadata__\":{", "\"__metadata__\":7,\"x\":{"), "__metadata__"},
  };
  for (const Case& c : cases) {
    write_file(p, c.file);
    std::string e = error_message([&] { load_checkpoint(*m, p); });
    EXPECT_NE(e.find(p), std::string::npos) << c.what << ": " << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.what << ": " << e;
    EXPECT_EQ(m->step(), step) << c.what;
    EXPECT_EQ(m->epoch(), epoch) << c.what;
    const auto after = state_bytes(*m);
    ASSERT_EQ(after.size(), before.size());
    for (size_t i = 0; i < before.size(); ++i)
      EXPECT_TRUE(after[i] == before[i]) << c.what << ": tensor " << before[i].first << " changed";
  }
  // The good file still loads and then does change the model.
  write_file(p, good);
  load_checkpoint(*m, p);
  EXPECT_EQ(m->step(), other->step());
  EXPECT_TRUE(state_bytes(*m) == state_bytes(*other));
  std::remove(p.c_str());
}

TEST(Checkpoint, OptimizerStateThatDoesNotMatchTheCompiledOptimizerIsAnError) {
  Dataset d = blobs(32);
  auto adam = make("co");  // Adam: two slots per parameter
  adam->fit(d, fit(1));
  auto sgd = std::make_unique<Sequential>(
      Shape{4}, std::vector<LayerPtr>{layers::Dense(DenseOptions(8).activation("relu").name("co1")), layers::Dense(DenseOptions(2).name("co2"))}, "co");
  CompileOptions o;
  o.optimizer = optim::SGD(0.1);  // no momentum: no slots
  sgd->compile(o);
  std::string p = tmp("optim.safetensors");
  save_checkpoint(*adam, p);
  const auto before = state_bytes(*sgd);
  std::string e = error_message([&] { load_checkpoint(*sgd, p); });
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("optimizer"), std::string::npos) << e;
  EXPECT_NE(e.find("optim.co1.kernel.0"), std::string::npos) << e;
  EXPECT_TRUE(state_bytes(*sgd) == before);
  // The other way: the Adam model's slots are missing from the SGD checkpoint.
  save_checkpoint(*sgd, p);
  e = error_message([&] { load_checkpoint(*adam, p); });
  EXPECT_NE(e.find("optimizer"), std::string::npos) << e;
  EXPECT_NE(e.find("optim.co1."), std::string::npos) << e;
  // A tensor the model does not have at all is an error too, not silently skipped.
  auto three = std::make_unique<Sequential>(
      Shape{4},
      std::vector<LayerPtr>{layers::Dense(DenseOptions(8).activation("relu").name("co1")), layers::Dense(DenseOptions(2).name("co2")),
                            layers::Dense(DenseOptions(2).name("co3"))},
      "co");
  CompileOptions o3;
  o3.optimizer = optim::SGD(0.1);
  three->compile(o3);
  save_checkpoint(*three, p);
  e = error_message([&] { load_checkpoint(*sgd, p); });
  EXPECT_NE(e.find("co3.kernel"), std::string::npos) << e;
  std::remove(p.c_str());
}

TEST(Checkpoint, OptimizersWithTheSameSlotsAreToldApartByName) {
  // SGD with momentum, RMSprop and Adagrad each keep one slot per parameter: same tensors.
  Dataset d = blobs(32);
  auto build = [](const Optimizer& opt) {
    auto m = std::make_unique<Sequential>(
        Shape{4}, std::vector<LayerPtr>{layers::Dense(DenseOptions(8).activation("relu").name("os1")), layers::Dense(DenseOptions(2).name("os2"))}, "os");
    CompileOptions o;
    o.optimizer = opt;
    m->compile(o);
    return m;
  };
  auto rms = build(optim::RMSprop(0.01));
  rms->fit(d, fit(1));
  auto sgd = build(optim::SGD(0.1, 0.9));
  std::string p = tmp("same-slots.safetensors");
  save_checkpoint(*rms, p);
  const auto before = state_bytes(*sgd);
  const std::string e = error_message([&] { load_checkpoint(*sgd, p); });
  EXPECT_NE(e.find("optimizer state of 'rmsprop' but the model is compiled with 'sgd'"), std::string::npos) << e;
  EXPECT_TRUE(state_bytes(*sgd) == before);
  auto rms2 = build(optim::RMSprop(0.01));
  load_checkpoint(*rms2, p);  // the same optimizer loads
  EXPECT_TRUE(state_bytes(*rms2) == state_bytes(*rms));
  std::remove(p.c_str());
}

TEST(Safetensors, HostileHeadersGiveErrorsNamingTheFile) {
  std::string p = tmp("hostile.safetensors");
  const std::string data(8, '\0');
  struct Case {
    std::string what, file, expect;
  };
  const std::vector<Case> cases{
      {"header length past the end", le64(1000) + "{}", "header of 1000 bytes"},
      {"header length 2^64-1", le64(~uint64_t(0)) + "{}", "18446744073709551615"},
      {"empty header", safetensors_bytes("", ""), "corrupt"},
      {"not an object", safetensors_bytes("[1,2]", ""), "not a JSON object"},
      {"deep nesting", safetensors_bytes("{\"a\":" + std::string(100000, '['), ""), "nested"},
      {"bad number", safetensors_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,3a8]}}", data),
       "corrupt"},
      {"huge offset", safetensors_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,1e30]}}", data),
       "1e30"},
      {"offset size mismatch", safetensors_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,8]}}", data),
       "[0, 8)"},
      {"empty name", safetensors_bytes("{\"\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", data), "name"},
      {"hole", safetensors_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", data), "not covered"},
      {"missing field", safetensors_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[8]}}", data), "data_offsets"},
      {"bad escape", safetensors_bytes("{\"a\\q\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", data),
       "escape"},
      {"unterminated string", safetensors_bytes("{\"a", ""), "unterminated"},
  };
  for (const Case& c : cases) {
    write_file(p, c.file);
    std::string e = error_message([&] { load_safetensors(p); });
    EXPECT_NE(e.find(p), std::string::npos) << c.what << ": " << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.what << ": " << e;
  }
  // Escapes round-trip, including control characters and \u escapes another writer may use.
  save_safetensors(p, {{"a\"b\\c\nd\x01", Tensor::from_vector<uint8_t>({1}, Shape{1})}}, {{"k\t", "v\u00e9"}});
  std::map<std::string, std::string> meta;
  auto t = load_safetensors(p, &meta);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].first, "a\"b\\c\nd\x01");
  EXPECT_EQ(meta["k\t"], "v\u00e9");
  write_file(p, safetensors_bytes("{\"\\u00e9\\ud83d\\ude00\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", data));
  t = load_safetensors(p);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].first, "\u00e9\U0001F600");
  std::remove(p.c_str());
}

TEST(Checkpoint, AFailedWriteKeepsTheOldFileAndLeavesNoTemporary) {
  auto m = make("cw");
  std::string p = tmp("full.safetensors");
  save_checkpoint(*m, p);
  const std::string old = read_file(p);
  // A file-size limit below the checkpoint's size makes a write fail part-way (EFBIG), as a full
  // disk would; the save must report it, keep the previous checkpoint and remove its temporary.
  struct rlimit saved;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  void (*old_handler)(int) = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 100;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string e = error_message([&] { save_checkpoint(*m, p); });
  setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(e.find(p), std::string::npos) << e;
  EXPECT_NE(e.find("write"), std::string::npos) << e;
  EXPECT_EQ(read_file(p), old);
  const std::string dir = p.substr(0, p.find_last_of('/'));
  const std::string base = p.substr(p.find_last_of('/') + 1);
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename().string().rfind(base + ".tmp", 0), std::string::npos) << entry.path();
  std::remove(p.c_str());
}

// The loss scaler's state ("amp.scale", f16 training) resumes exactly, and checkpoints cross
// precisions: an f32 checkpoint starts an f16 model's scaler afresh, an f16 one loads into f32.
TEST(Checkpoint, LossScaleResumesAndCrossesPrecisions) {
  Dataset d = blobs(64);
  auto build = [](const std::string& tag, Precision p) {
    return make(tag, 8, [&](CompileOptions& o) {
      o.precision = p;
      o.loss_scale.initial_scale = std::ldexp(1.0, 30);  // overflows f16 at first: some steps skip
    });
  };
  auto f16 = build("ls", Precision::f16);
  f16->fit(d, fit(1));
  ASSERT_GT(f16->skipped_steps(), 0);
  std::string p16 = tmp("ls16.safetensors"), p32 = tmp("ls32.safetensors");
  save_checkpoint(*f16, p16);
  auto back = build("ls", Precision::f16);
  load_checkpoint(*back, p16);
  EXPECT_EQ(back->loss_scale(), f16->loss_scale());
  EXPECT_EQ(back->skipped_steps(), f16->skipped_steps());
  auto f32 = build("ls", Precision::f32);
  load_checkpoint(*f32, p16);  // the scaler's state is ignored, the rest loads
  EXPECT_EQ(cudl::testing::flat_weights(*f32), cudl::testing::flat_weights(*f16));
  EXPECT_EQ(f32->loss_scale(), 1.0);
  f32->fit(d, fit(1));
  save_checkpoint(*f32, p32);
  load_checkpoint(*back, p32);  // no amp.scale in the file: the scaler starts at its initial state
  EXPECT_EQ(back->loss_scale(), std::ldexp(1.0, 30));
  EXPECT_EQ(back->skipped_steps(), 0);
  EXPECT_EQ(cudl::testing::flat_weights(*back), cudl::testing::flat_weights(*f32));
  back->fit(d, fit(1));
  EXPECT_GT(back->skipped_steps(), 0) << "the fresh scale overflows again, as at compile";
  std::remove(p16.c_str());
  std::remove(p32.c_str());
}
