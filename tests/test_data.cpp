// tests/test_data.cpp — the IDX reader on good, gzip, truncated, wrong-magic and wrong-count files
// (generated here), and the MNIST loader's checks.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>

#include "cudl/data.hpp"
#include "testing.hpp"

using namespace cudl;
using cudl::testing::error_message;

namespace {

std::string tmpdir() {
  static std::string d = [] {
    char tmpl[] = "/tmp/cudl-idx-XXXXXX";
    return std::string(mkdtemp(tmpl));
  }();
  return d;
}

std::vector<unsigned char> idx_bytes(const std::vector<uint32_t>& dims, int fill_count = -1, unsigned char type = 8) {
  std::vector<unsigned char> b{0, 0, type, static_cast<unsigned char>(dims.size())};
  size_t n = 1;
  for (uint32_t d : dims) {
    b.push_back(d >> 24), b.push_back(d >> 16), b.push_back(d >> 8), b.push_back(d);
    n *= d;
  }
  if (fill_count >= 0) n = fill_count;
  for (size_t i = 0; i < n; ++i) b.push_back(static_cast<unsigned char>(i % 10));
  return b;
}

std::string write(const std::string& name, const std::vector<unsigned char>& b, bool gz = false) {
  std::string p = tmpdir() + "/" + name;
  if (gz) {
    gzFile f = gzopen(p.c_str(), "wb");
    gzwrite(f, b.data(), static_cast<unsigned>(b.size()));
    gzclose(f);
  } else {
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), b.size());
  }
  return p;
}

}  // namespace

TEST(Idx, ReadsRawAndGzip) {
  Tensor a = read_idx(write("ok", idx_bytes({3, 2, 2})));
  EXPECT_EQ(a.shape(), (Shape{3, 2, 2}));
  EXPECT_EQ(a.dtype(), DType::u8);
  EXPECT_EQ(a.to_vector<uint8_t>()[11], 1);
  Tensor b = read_idx(write("ok.gz", idx_bytes({3, 2, 2}), true));
  EXPECT_EQ(a.to_vector<uint8_t>(), b.to_vector<uint8_t>());
}

TEST(Idx, TruncatedWrongMagicWrongTypeAndTooLongFilesNameTheFile) {
  std::string p = write("short", idx_bytes({4, 5}, 19));
  std::string m = error_message([&] { read_idx(p); });
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  EXPECT_NE(m.find("need 32 bytes"), std::string::npos) << m;  // 12-byte header + 20
  EXPECT_NE(m.find("found 31"), std::string::npos) << m;
  auto bad = idx_bytes({2});
  bad[0] = 0x12;
  m = error_message([&] { read_idx(write("magic", bad)); });
  EXPECT_NE(m.find("bad magic"), std::string::npos) << m;
  m = error_message([&] { read_idx(write("type", idx_bytes({2}, -1, 0x0D))); });
  EXPECT_NE(m.find("0xd"), std::string::npos) << m;
  m = error_message([&] { read_idx(write("long", idx_bytes({2}, 3))); });
  EXPECT_NE(m.find("too long"), std::string::npos) << m;
  m = error_message([&] { read_idx(tmpdir() + "/missing"); });
  EXPECT_NE(m.find("not found"), std::string::npos) << m;
  auto gz = idx_bytes({50});
  std::string zp = write("corrupt.gz", gz, true);
  {  // flip bytes in the middle of the compressed stream
    std::fstream f(zp, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(12);
    f.write("\xff\xff\xff\xff", 4);
  }
  m = error_message([&] { read_idx(zp); });
  EXPECT_NE(m.find(zp), std::string::npos) << m;
}

TEST(Mnist, CountMismatchAndMissingFilesAreReported) {
  std::string dir = tmpdir() + "/mn";
  mkdir(dir.c_str(), 0755);
  auto imgs = idx_bytes({5, 28, 28});
  auto labels = idx_bytes({4});
  std::ofstream(dir + "/train-images-idx3-ubyte", std::ios::binary).write((const char*)imgs.data(), imgs.size());
  std::ofstream(dir + "/train-labels-idx1-ubyte", std::ios::binary).write((const char*)labels.data(), labels.size());
  std::string m = error_message([&] { load_mnist(dir, true); });
  EXPECT_NE(m.find("5 images"), std::string::npos) << m;
  EXPECT_NE(m.find("4 labels"), std::string::npos) << m;
  m = error_message([&] { load_mnist(dir, false); });
  EXPECT_NE(m.find("fetch-mnist"), std::string::npos) << m;
  labels = idx_bytes({5});
  std::ofstream(dir + "/train-labels-idx1-ubyte", std::ios::binary).write((const char*)labels.data(), labels.size());
  Dataset d = load_mnist(dir, true, 3);
  EXPECT_EQ(d.x.shape(), (Shape{3, 1, 28, 28}));
  EXPECT_EQ(d.y.to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 2}));
}

TEST(Idx, DimensionsWhoseProductOverflowsAreAnErrorNotAnEmptyTensor) {
  // 65536^4 = 2^64 wraps to 0: the old reader then found "0 data bytes, as promised".
  auto b = idx_bytes({65536, 65536, 65536, 65536}, 0);
  std::string p = write("overflow", b);
  std::string m = error_message([&] { read_idx(p); });
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("65536, 65536, 65536, 65536"), std::string::npos) << m;
  EXPECT_NE(m.find("overflow"), std::string::npos) << m;
  m = error_message([&] { read_idx(write("overflow.gz", b, true)); });
  EXPECT_NE(m.find("overflow"), std::string::npos) << m;
  // (2^32-1)(2^31-1) fits in int64: a plain "truncated" naming the promised size, and nothing of
  // that size is allocated before the data is there.
  m = error_message([&] { read_idx(write("huge", idx_bytes({0xffffffffu, 0x7fffffffu}, 5))); });
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  EXPECT_NE(m.find("need 9223372030412324877 bytes"), std::string::npos) << m;  // 12-byte header + product
  m = error_message([&] { read_idx(write("huge.gz", idx_bytes({0xffffffffu, 0x7fffffffu}, 5), true)); });
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
}

TEST(Idx, GzipThatInflatesPastThePromisedSizeStopsThere) {
  // Header promises 10 bytes; the stream holds 8 MiB of zeros after them and a broken CRC at the
  // end. Reading stops after the promised size: "too long", never reaching the broken trailer
  // (which a reader that inflated everything reports instead, after inflating all 8 MiB).
  auto b = idx_bytes({10});
  b.resize(b.size() + (8u << 20), 0);
  std::string p = write("bomb.gz", b, true);
  {
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-8, std::ios::end);  // the CRC32 of the gzip trailer
    f.write("\x01\x02\x03\x04", 4);
  }
  std::string m = error_message([&] { read_idx(p); });
  EXPECT_NE(m.find(p), std::string::npos) << m;
  EXPECT_NE(m.find("too long"), std::string::npos) << m;
  EXPECT_NE(m.find("more than the 18 bytes"), std::string::npos) << m;  // 8-byte header + 10
  EXPECT_EQ(m.find("corrupt"), std::string::npos) << m;
  // A gzip stream shorter than promised, and one cut off mid-stream, are errors naming both sizes.
  m = error_message([&] { read_idx(write("short.gz", idx_bytes({4, 5}, 19), true)); });
  EXPECT_NE(m.find("truncated"), std::string::npos) << m;
  EXPECT_NE(m.find("need 32 bytes"), std::string::npos) << m;
  EXPECT_NE(m.find("found 31"), std::string::npos) << m;
  auto big = idx_bytes({100, 100});
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<unsigned char>(i * 7919 % 251);  // incompressible
  big[0] = big[1] = 0, big[2] = 8, big[3] = 2;
  std::string zp = write("cut2.gz", big, true);
  std::ifstream in(zp, std::ios::binary);
  std::string z((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(zp, std::ios::binary | std::ios::trunc).write(z.data(), static_cast<std::streamsize>(z.size() / 2));
  m = error_message([&] { read_idx(zp); });
  EXPECT_NE(m.find(zp), std::string::npos) << m;
  EXPECT_TRUE(m.find("truncated") != std::string::npos || m.find("corrupt") != std::string::npos) << m;
}

TEST(Idx, ADirectoryIsNamedAsOne) {
  std::string m = error_message([&] { read_idx(tmpdir()); });
  EXPECT_NE(m.find("is a directory"), std::string::npos) << m;
}
