// tests/test_mnist_sample.cpp — short cudl-mnist and cudl-seq-mnist runs on real MNIST (the first
// training images, one epoch, the samples' own mlp, cnn, lstm and gru): the CPU and the (emulated)
// CUDA backend give the same losses, and the models learn (test accuracy far above chance). Skips
// when data/mnist is absent.
#include <sys/stat.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "../samples/mnist/models.hpp"
#include "../samples/seq_mnist/models.hpp"
#include "testing.hpp"

using namespace cudl;

namespace {

// The MNIST directory: $CUDL_MNIST_DIR, else <source>/data/mnist (scripts/fetch-mnist.sh puts it there).
std::string mnist_dir() {
  if (const char* env = std::getenv("CUDL_MNIST_DIR"); env && *env) return env;
#ifdef CUDL_SOURCE_DIR
  return std::string(CUDL_SOURCE_DIR) + "/data/mnist";
#else
  return "data/mnist";
#endif
}

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// The names load_mnist accepts (raw or .gz) of the files this test reads, or "" when all exist.
std::string missing_file(const std::string& dir) {
  for (const char* f :
       {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}) {
    const std::string p = dir + "/" + f;
    if (!exists(p) && !exists(p + ".gz")) return p;
  }
  return "";
}

#define REQUIRE_MNIST()                                                                 \
  do {                                                                                  \
    const std::string missing = missing_file(mnist_dir());                              \
    if (!missing.empty())                                                               \
      GTEST_SKIP() << "real MNIST not found (" << missing                               \
                   << " is missing); run scripts/fetch-mnist.sh or set CUDL_MNIST_DIR"; \
  } while (0)

struct Run {
  double loss = 0, accuracy = 0;            // the training epoch's
  double test_loss = 0, test_accuracy = 0;  // on the test subset
};

// "mlp", "cnn" (cudl-mnist) or "seq_lstm", "seq_gru" (cudl-seq-mnist).
Sequential build_model(const std::string& kind) {
  return kind.rfind("seq_", 0) == 0 ? seq_mnist::build(kind.substr(4)) : mnist::build(kind);
}

// What the samples do (Adam 1e-3, sparse categorical cross-entropy, seed 1), on a subset.
Run train_one_epoch(const std::string& kind, Device device, const Dataset& train, const Dataset& test, int64_t batch) {
  Sequential model = build_model(kind);
  CompileOptions opt;
  opt.optimizer = optim::Adam(1e-3);
  opt.loss = "sparse_categorical_crossentropy";
  opt.metrics = {"accuracy"};
  opt.device = device;
  opt.seed = 1;
  model.compile(opt);
  FitOptions fit;
  fit.epochs = 1;
  fit.batch_size = batch;
  fit.seed = 1;
  fit.verbose = 0;
  History h = model.fit(train, fit);
  EvalResult r = model.evaluate(test, 500);
  Run out;
  out.loss = h.metrics["loss"].at(0);
  out.accuracy = h.metrics["accuracy"].at(0);
  out.test_loss = r.metrics["loss"];
  out.test_accuracy = r.metrics["accuracy"];
  return out;
}

void expect_same_run(const Run& cpu, const Run& cuda) {
  EXPECT_NEAR(cuda.loss, cpu.loss, 2e-3 * cpu.loss) << "training loss";
  EXPECT_NEAR(cuda.accuracy, cpu.accuracy, 0.005) << "training accuracy";
  EXPECT_NEAR(cuda.test_loss, cpu.test_loss, 5e-3 * cpu.test_loss) << "test loss";
  EXPECT_NEAR(cuda.test_accuracy, cpu.test_accuracy, 0.005) << "test accuracy";
}

void check_sample(const std::string& kind, int64_t n_train, int64_t batch, double min_accuracy,
                  double max_test_loss = 1.0) {
  const std::string dir = mnist_dir();
  Dataset train = load_mnist(dir, true, n_train), test = load_mnist(dir, false, 1000);
  ASSERT_EQ(train.size(), n_train);
  ASSERT_EQ(test.size(), 1000);
  const Run cpu = train_one_epoch(kind, Device::cpu(), train, test, batch);
  std::printf("%s cpu : loss %.5f accuracy %.4f test loss %.5f test accuracy %.4f\n", kind.c_str(), cpu.loss,
              cpu.accuracy, cpu.test_loss, cpu.test_accuracy);
  // Learns: chance is 10%.
  EXPECT_GT(cpu.test_accuracy, min_accuracy);
  EXPECT_LT(cpu.test_loss, max_test_loss);
  if (!cudl::testing::cuda_available()) {
    GTEST_SKIP() << "CPU run checked; no CUDA device for the comparison (" << cuda_unavailable_reason() << ")";
  }
  const Run cuda = train_one_epoch(kind, Device::cuda(0), train, test, batch);
  std::printf("%s cuda: loss %.5f accuracy %.4f test loss %.5f test accuracy %.4f\n", kind.c_str(), cuda.loss,
              cuda.accuracy, cuda.test_loss, cuda.test_accuracy);
  expect_same_run(cpu, cuda);
}

}  // namespace

TEST(MnistSample, MlpLearnsTheSameOnCpuAndCuda) {
  REQUIRE_MNIST();
  check_sample("mlp", 2000, 32, 0.80);
}

TEST(MnistSample, CnnLearnsTheSameOnCpuAndCuda) {
  REQUIRE_MNIST();
  check_sample("cnn", 2000, 32, 0.80);
}

TEST(SeqMnistSample, LstmLearnsTheSameOnCpuAndCuda) {
  REQUIRE_MNIST();
  check_sample("seq_lstm", 1000, 25, 0.30, 2.0);  // 40 steps: chance is 10%, loss ln 10 = 2.30
}

TEST(SeqMnistSample, GruLearnsTheSameOnCpuAndCuda) {
  REQUIRE_MNIST();
  check_sample("seq_gru", 1000, 25, 0.30, 2.0);
}

TEST(MnistSample, MissingDataGivesAClearError) {
  try {
    load_mnist("/nonexistent/cudl-mnist", true);
    ADD_FAILURE() << "no error for a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/cudl-mnist"), std::string::npos) << e.what();
  }
}
