// tests/test_charlm_sample.cpp — cudl-charlm's data pipeline (cleaning, split, stream, windows) and a
// short training run of its model (small: 2 heads, 1 block) on real words: the CPU and the
// (emulated) CUDA backend give the same losses and the model learns. Skips without the word list.
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "../samples/charlm/charlm.hpp"
#include "testing.hpp"

using namespace cudl;

namespace {

std::string words_file() {
  if (const char* env = std::getenv("CUDL_WORDS_FILE"); env && *env) return env;
  return "/usr/share/dict/american-english";
}

#define REQUIRE_WORDS()                                                                                      \
  do {                                                                                                       \
    struct stat st;                                                                                          \
    if (::stat(words_file().c_str(), &st) != 0)                                                              \
      GTEST_SKIP() << "word list " << words_file() << " not found; run scripts/fetch-words.sh (wamerican)"; \
  } while (0)

struct TrainRun {
  std::vector<double> losses;
  double test_loss = 0;
};

TrainRun train(Device device, const charlm::Split& split, int steps) {
  const charlm::Config cfg{8, 16, 2, 1};
  const std::vector<int32_t> train = charlm::token_stream(split.train), test = charlm::token_stream(split.test);
  Model model = charlm::build(cfg);
  CompileOptions opt;
  opt.optimizer = optim::AdamW(3e-3, 0.01);
  opt.loss = "sparse_categorical_crossentropy";
  opt.device = device;
  opt.seed = 1;
  model.compile(opt);
  charlm::SplitMix64 rng(1);
  TrainRun r;
  for (int s = 0; s < steps; ++s) {
    model.set_learning_rate(charlm::learning_rate(3e-3, steps, s));
    const auto [x, y] = charlm::training_batch(train, cfg.context, 16, rng);
    r.losses.push_back(model.train_on_batch(x, y).at("loss"));
  }
  r.test_loss = model.evaluate(charlm::windows(test, cfg.context), 64).metrics.at("loss");
  return r;
}

}  // namespace

TEST(CharlmSample, DataPipeline) {
  const std::string path = ::testing::TempDir() + "charlm-words.txt";
  {
    std::ofstream f(path);
    f << "Apple\nbanana\nit's\nCaf\xc3\xa9\napple\n\nzebra\r\nx2\n";
  }
  const auto words = charlm::load_words(path);
  EXPECT_EQ(words, (std::vector<std::string>{"apple", "banana", "zebra"}));  // lower-cased, a-z only, unique
  EXPECT_EQ(charlm::token_stream({"ab", "c"}), (std::vector<int32_t>{0, 1, 2, 0, 3, 0}));
  std::vector<std::string> many;
  for (int i = 0; i < 25; ++i) many.push_back(std::string(1, static_cast<char>('a' + i)));
  const charlm::Split s = charlm::split_words(many, 7);
  EXPECT_EQ(s.test.size(), 2u);
  EXPECT_EQ(s.train.size(), 23u);
  EXPECT_EQ(charlm::split_words(many, 7).test, s.test);  // seeded
  EXPECT_NE(charlm::split_words(many, 8).train, s.train);
  const Dataset w = charlm::windows({0, 1, 2, 3, 4, 5, 6}, 3);  // windows [0,1,2]->[1,2,3], [3,4,5]->[4,5,6]
  EXPECT_EQ(w.x.to_vector<int32_t>(), (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(w.y.to_vector<int32_t>(), (std::vector<int32_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_NE(cudl::testing::error_message([] { charlm::load_words("/nonexistent/words"); }).find("/nonexistent/words"),
            std::string::npos);
}

TEST(CharlmSample, LearnsTheSameOnCpuAndCuda) {
  REQUIRE_WORDS();
  charlm::Split split = charlm::split_words(charlm::load_words(words_file()));
  split.train.resize(2000);
  split.test.resize(200);
  const int steps = 30;
  const TrainRun cpu = train(Device::cpu(), split, steps);
  std::printf("cpu : first loss %.5f last %.5f test %.5f\n", cpu.losses.front(), cpu.losses.back(), cpu.test_loss);
  // Starts near uniform over 27 tokens (ln 27 = 3.30, plus half the logits' initial variance) and learns.
  EXPECT_GT(cpu.losses.front(), std::log(27.0) - 0.1);
  EXPECT_LT(cpu.losses.front(), std::log(27.0) + 1.0);
  EXPECT_LT(cpu.test_loss, cpu.losses.front() - 0.5);
  if (!cudl::testing::cuda_available())
    GTEST_SKIP() << "CPU run checked; no CUDA device for the comparison (" << cuda_unavailable_reason() << ")";
  const TrainRun cuda = train(Device::cuda(0), split, steps);
  std::printf("cuda: first loss %.5f last %.5f test %.5f\n", cuda.losses.front(), cuda.losses.back(), cuda.test_loss);
  for (int s = 0; s < steps; ++s) EXPECT_NEAR(cuda.losses[s], cpu.losses[s], 1e-3 * cpu.losses[s]) << "step " << s;
  EXPECT_NEAR(cuda.test_loss, cpu.test_loss, 1e-3 * cpu.test_loss);
}
