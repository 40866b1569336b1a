// tests/test_checkpoint.cpp — safetensors round trip, exact resume, atomic writes, and errors that
// name the tensor or file for missing, mis-shaped, truncated and corrupt checkpoints.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <random>

#include "cudl/checkpoint.hpp"
#include "testing.hpp"

using namespace cudl;
using cudl::testing::error_message;

namespace {

Dataset blobs(int64_t n) { return cudl::testing::separable_blobs(n, 4, 2, 1.f, 0.5f, 3); }

std::unique_ptr<Sequential> make(const std::string& tag, int units = 8) {
  auto m = std::make_unique<Sequential>(
      Shape{4}, std::vector<LayerPtr>{layers::Dense(DenseOptions(units).activation("relu").name(tag + "1")), layers::Dense(DenseOptions(2).name(tag + "2"))},
      tag);
  CompileOptions o;
  o.optimizer = optim::Adam(0.01);
  o.seed = 4;
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
