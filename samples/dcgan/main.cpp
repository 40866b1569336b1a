// samples/dcgan — cudl-dcgan: a DCGAN that learns to draw MNIST digits (per batch one discriminator
// step on a real and a generated batch, then one generator step, each a single program run on the
// device), saves an 8x8 grid of samples per epoch, and rates its digits with a cudl classifier.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../common/png.hpp"
#include "../common/sample_util.hpp"
#include "../mnist/models.hpp"
#include "cudl/checkpoint.hpp"
#include "cudl/cudl.hpp"
#include "models.hpp"

namespace {

struct Args {
  std::string device = "auto", data = "data/mnist", save, resume;
  std::string csv = "dcgan-losses.csv", plot = "dcgan-losses.png", grids = ".";
  std::string classifier = "dcgan-classifier.safetensors";
  std::string precision;  // "": cudl::default_precision()
  int epochs = 12;
  int64_t batch = 32, limit = 0, log_every = 50;
  int64_t latent = 100, width = 32, d_width = 64;
  int64_t score_samples = 10000;
  double lr = 2e-4, smooth = 0.9;
  uint64_t seed = 1;
  bool score = false;
};

constexpr const char* kProgram = "cudl-dcgan";

[[noreturn]] void usage_error(const std::string& msg) { sample::usage_error(kProgram, msg); }

const char* kHelp =
    "usage: cudl-dcgan [options]\n"
    "  --epochs N               training epochs (default 12); with --resume, the total\n"
    "  --batch-size B           batch size (default 32; the DCGAN paper's is 128)\n"
    "  --lr X                   Adam learning rate, beta1 0.5 (default 2e-4)\n"
    "  --width W                G's channels: dense and stride-1 conv-transpose 2W, then\n"
    "                           conv-transpose W (default 32)\n"
    "  --d-width W              D's channels: convs W and 2W (default 64)\n"
    "  --latent N               noise dimension (default 100)\n"
    "  --smooth X               target of real images for D (one-sided label smoothing; default 0.9)\n"
    "  --device auto|cuda|cpu   auto: the GPU when one works, else the CPU backend (default auto)\n"
    "  --precision f32|tf32|bf16|f16  the GAN's precision: fp32, TF32 GPU GEMMs/convolutions, or\n"
    "                           16-bit activations with fp32 masters (f16 with loss scaling);\n"
    "                           the classifier of --score stays at the default (default f32, or\n"
    "                           tf32 when CUDL_ALLOW_TF32=1)\n"
    "  --data DIR               MNIST directory (default data/mnist)\n"
    "  --limit N                use only the first N training images\n"
    "  --seed S                 seed for initialisation, noise and shuffling (default 1)\n"
    "  --save PREFIX            after training write PREFIX.disc and PREFIX.gan (.safetensors):\n"
    "                           the two training models' complete state\n"
    "  --resume PREFIX          load those two checkpoints before training\n"
    "  --grids DIR              where dcgan-epoch-N.png go (default .; '' disables)\n"
    "  --csv FILE / --plot FILE per-epoch mean D and G losses (and their sum) as CSV / PNG plot\n"
    "                           (gnuplot); '' disables\n"
    "  --log-every N            read the losses every N steps for the progress line (default 50)\n"
    "  --score                  rate generated digits with a cudl MNIST classifier (the cnn\n"
    "                           of cudl-mnist): Inception Score exp(E[KL(p(y|x) || p(y))]) and the\n"
    "                           classes that get at least 5% of the digits\n"
    "  --score-samples N        digits --score rates (default 10000), and the first N real test\n"
    "                           images for the ceiling\n"
    "  --classifier FILE        the classifier's checkpoint: loaded when it exists, else trained\n"
    "                           (10 epochs) and saved there (default dcgan-classifier.safetensors)\n";

int64_t parse_int(const std::string& flag, const std::string& v, int64_t lo, int64_t hi) {
  return sample::parse_int(kProgram, flag, v, lo, hi);
}

Args parse(int argc, char** argv) {
  Args a;
  sample::for_each_flag(kProgram, argc, argv, kHelp, {"--score"}, [&](const std::string& k, const std::string& v) {
    if (k == "--score")
      a.score = true;
    else if (k == "--epochs")
      a.epochs = static_cast<int>(parse_int(k, v, 0, 1000000));
    else if (k == "--batch-size")
      a.batch = parse_int(k, v, 2, 1 << 16);
    else if (k == "--limit")
      a.limit = parse_int(k, v, 1, 1LL << 31);
    else if (k == "--log-every")
      a.log_every = parse_int(k, v, 1, 1LL << 31);
    else if (k == "--width")
      a.width = parse_int(k, v, 1, 4096);
    else if (k == "--d-width")
      a.d_width = parse_int(k, v, 1, 4096);
    else if (k == "--latent")
      a.latent = parse_int(k, v, 1, 1 << 16);
    else if (k == "--seed")
      a.seed = static_cast<uint64_t>(parse_int(k, v, 0, std::numeric_limits<int64_t>::max() - 2));
    else if (k == "--lr")
      a.lr = sample::parse_positive(kProgram, k, v, 1e6);
    else if (k == "--smooth")
      a.smooth = sample::parse_positive(kProgram, k, v, 1.0);
    else if (k == "--device")
      a.device = v;
    else if (k == "--precision")
      a.precision = v;
    else if (k == "--data")
      a.data = v;
    else if (k == "--save")
      a.save = v;
    else if (k == "--resume")
      a.resume = v;
    else if (k == "--grids")
      a.grids = v;
    else if (k == "--csv")
      a.csv = v;
    else if (k == "--plot")
      a.plot = v;
    else if (k == "--score-samples")
      a.score_samples = parse_int(k, v, 1, 1000000);
    else if (k == "--classifier")
      a.classifier = v;
    else
      usage_error("unknown option '" + k + "'");
  });
  if (a.device != "auto" && a.device != "cpu" && a.device.rfind("cuda", 0) != 0)
    usage_error("--device must be auto, cuda or cpu, got '" + a.device + "'");
  sample::check_precision(kProgram, a.precision);
  return a;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// u8 images (N, 1, 28, 28) as f32 in [-1, 1] (the generator's tanh range), rows in `order`.
cudl::Tensor to_tanh_range(const std::vector<uint8_t>& u8, const std::vector<int64_t>& order, int64_t rows) {
  std::vector<float> f(static_cast<size_t>(rows) * 784);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < 784; ++i) f[r * 784 + i] = u8[order[r] * 784 + i] / 127.5f - 1.f;
  return cudl::Tensor::from_vector(f, cudl::Shape{rows, 1, 28, 28});
}

/// Generator outputs in [-1, 1] as u8 images (what the classifier and the PNG grids read).
std::vector<uint8_t> to_u8(const cudl::Tensor& images) {
  const std::vector<float> v = images.to(cudl::Device::cpu()).to_vector<float>();
  std::vector<uint8_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out[i] = static_cast<uint8_t>(std::lround(std::clamp((v[i] + 1.f) * 127.5f, 0.f, 255.f)));
  return out;
}

/// N(0, 1) noise (rows, latent) from a host generator (fixed batches: the grids, the score).
cudl::Tensor host_noise(int64_t rows, int64_t latent, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> z(static_cast<size_t>(rows * latent));
  for (float& v : z) v = n(rng);
  return cudl::Tensor::from_vector(z, cudl::Shape{rows, latent});
}

/// 8x8 digits (the first 64 of `digits`) with 2-pixel gaps as one grayscale PNG (white on black).
void write_grid(const std::string& path, const std::vector<uint8_t>& digits) {
  constexpr int kCells = 8, kGap = 2, kSide = kCells * (28 + kGap) + kGap;
  std::vector<uint8_t> px(kSide * kSide, 0);
  for (int k = 0; k < kCells * kCells; ++k) {
    const int top = kGap + (k / kCells) * (28 + kGap), left = kGap + (k % kCells) * (28 + kGap);
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c) px[(top + r) * kSide + left + c] = digits[k * 784 + r * 28 + c];
  }
  if (!sample::write_gray_png(path, px, kSide, kSide))
    throw cudl::Error("cannot write " + path + ": " + std::strerror(errno));
}

struct Score {
  double inception = 0;  // exp(E_x[KL(p(y|x) || p(y))])
  int covered = 0;       // classes predicted for at least 5% of the images
};

/// Rates u8 images (N, 1, 28, 28) with the classifier (normalised as its training data).
Score rate(cudl::Model& classifier, const cudl::Tensor& images, float mean, float stdv) {
  cudl::Dataset d;
  d.x = images;
  d.mean = mean;
  d.std = stdv;
  const std::vector<float> logits = classifier.predict(d, 500).to_vector<float>();
  const int64_t n = images.shape()[0];
  std::vector<double> p(static_cast<size_t>(n) * 10), py(10, 0.0);
  std::vector<int64_t> votes(10, 0);
  for (int64_t i = 0; i < n; ++i) {
    const float* l = logits.data() + i * 10;
    const float top = *std::max_element(l, l + 10);
    double z = 0;
    for (int k = 0; k < 10; ++k) z += std::exp(double(l[k]) - top);
    for (int k = 0; k < 10; ++k) {
      p[i * 10 + k] = std::exp(double(l[k]) - top) / z;
      py[k] += p[i * 10 + k] / n;
    }
    ++votes[std::max_element(l, l + 10) - l];
  }
  double kl = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 10; ++k)
      if (p[i * 10 + k] > 0) kl += p[i * 10 + k] * std::log(p[i * 10 + k] / py[k]) / n;
  Score s;
  s.inception = std::exp(kl);
  for (int k = 0; k < 10; ++k) s.covered += votes[k] * 20 >= n ? 1 : 0;
  return s;
}

/// Epochs the score's classifier trains. 10 (99.33% test) rates real test digits 9.86, the ~9.9 the
/// score is defined against; a 4-epoch one (99.04%) is less sure of every digit (real 9.71) and
/// rates the same generator about 0.5 lower (docs/performance.md section 9).
constexpr int kClassifierEpochs = 10;

/// The cnn of cudl-mnist, loaded from `path` or trained (kClassifierEpochs, Adam 2e-3 cosine,
/// batch 64) and saved there; prints its test accuracy.
cudl::Sequential classifier(const Args& a, cudl::Device device, const cudl::Dataset& train,
                            const cudl::Dataset& test) {
  cudl::Sequential m = mnist::build("cnn");
  sample::compile_classifier(m, cudl::optim::Adam(2e-3), device, 1, "", /*print_summary=*/false);
  if (access(a.classifier.c_str(), F_OK) == 0) {
    cudl::load_checkpoint(m, a.classifier);
    std::printf("classifier: %s (loaded)\n", a.classifier.c_str());
    if (m.epoch() != kClassifierEpochs)
      std::printf(
          "classifier: it was trained %d epochs, not %d: its scores are not comparable with the "
          "documented ones (delete the file to train the reference classifier)\n",
          static_cast<int>(m.epoch()), kClassifierEpochs);
  } else {
    std::printf("classifier: training the cnn of cudl-mnist for %d epochs (saved to %s for later runs)\n",
                kClassifierEpochs, a.classifier.c_str());
    cudl::FitOptions f;
    f.epochs = kClassifierEpochs;
    f.batch_size = 64;
    f.seed = 1;
    f.callbacks.push_back(
        std::make_shared<cudl::LearningRateScheduler>(cudl::schedules::cosine(2e-3, kClassifierEpochs)));
    const auto t0 = std::chrono::steady_clock::now();
    m.fit(train, f);
    std::printf("classifier: trained in %.0f s\n", seconds_since(t0));
    cudl::save_checkpoint(m, a.classifier);
  }
  const double acc = m.evaluate(test, 1000).metrics["accuracy"];
  std::printf("classifier: test accuracy %.2f%%%s\n", 100 * acc,
              acc < 0.99 ? " (below 99%: the score is less trustworthy)" : "");
  return m;
}

/// What one epoch reports: mean losses over the steps read.
struct Means {
  double d = 0, g = 0;
  int64_t n = 0;
};

void progress(int epoch, int epochs, int64_t step, int64_t steps, const Means& m, double secs, bool tty) {
  const int width = 24, done = static_cast<int>(width * step / std::max<int64_t>(steps, 1));
  std::printf("%sepoch %d/%d [%s%s] %lld/%lld  d_loss %.3f  g_loss %.3f  %.0f s%s", tty ? "\r" : "", epoch, epochs,
              std::string(done, '=').c_str(), std::string(width - done, ' ').c_str(), static_cast<long long>(step),
              static_cast<long long>(steps), m.d / std::max<int64_t>(m.n, 1), m.g / std::max<int64_t>(m.n, 1), secs,
              tty ? "" : "\n");
  std::fflush(stdout);
}

const char* kCheckpointParts[] = {"disc", "gan"};

std::vector<cudl::Model*> training_models(dcgan::Gan& gan) { return {gan.disc.get(), gan.combined.get()}; }

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  for (const char* part : kCheckpointParts)
    if (!a.save.empty()) sample::require_writable(kProgram, "--save", a.save + "." + part + ".safetensors");
  sample::require_writable(kProgram, "--csv", a.csv);
  if (!a.csv.empty()) sample::require_writable(kProgram, "--plot", a.plot);
  if (!a.grids.empty()) sample::require_writable(kProgram, "--grids", a.grids + "/dcgan-epoch-1.png");
  if (a.score) sample::require_writable(kProgram, "--classifier", a.classifier);
  try {
    cudl::Dataset train, test;
    if (!sample::load_mnist_sets(kProgram, a.data, a.limit, false, &train, &test)) return 1;
    const int64_t n = train.size(), B = a.batch, steps = n / B;
    if (steps < 1)
      usage_error("--batch-size " + std::to_string(B) + " is larger than the " + std::to_string(n) + " training images");
    cudl::Device device = sample::pick_device(kProgram, a.device);
    dcgan::Gan gan(dcgan::Sizes{a.latent, a.width, a.d_width}, a.lr, device, a.seed, sample::precision_of(a.precision));
    std::printf("%s%s", gan.gen->summary().c_str(), gan.disc->summary().c_str());
    if (!a.resume.empty()) {
      auto models = training_models(gan);
      for (size_t i = 0; i < models.size(); ++i)
        cudl::load_checkpoint(*models[i], a.resume + "." + kCheckpointParts[i] + ".safetensors");
      std::printf("resumed from %s.* at epoch %lld\n", a.resume.c_str(), static_cast<long long>(gan.combined->epoch()));
    }

    // Device-resident per-step inputs: D's targets (real label, 0) per row, G's targets and the
    // noise model's placeholder. Real images go to the device once per epoch (in that epoch's
    // shuffled order); a step takes a view of its rows.
    std::vector<float> dy(static_cast<size_t>(2 * B), 0.f);
    for (int64_t r = 0; r < B; ++r) dy[2 * r] = static_cast<float>(a.smooth);
    const cudl::Tensor d_targets = cudl::Tensor::from_vector(dy, cudl::Shape{B, 2}).to(device);
    const cudl::Tensor ones = cudl::Tensor::full(cudl::Shape{B, 1}, 1.0, cudl::DType::f32, device);
    const cudl::Tensor placeholder = cudl::Tensor::zeros(cudl::Shape{B, 1}, cudl::DType::f32, device);
    const std::vector<uint8_t> images = train.x.to(cudl::Device::cpu()).to_vector<uint8_t>();
    const cudl::Tensor grid_z = host_noise(64, a.latent, a.seed ^ 0x5eedULL);
    std::printf("training on %lld images, %lld steps of %lld per epoch (D on real + generated, then G)\n",
                static_cast<long long>(n), static_cast<long long>(steps), static_cast<long long>(B));

    cudl::History history;
    const bool tty = isatty(STDOUT_FILENO);
    const auto t_train = std::chrono::steady_clock::now();
    for (int64_t epoch = gan.combined->epoch(); epoch < a.epochs; ++epoch) {
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), std::mt19937_64(a.seed * 1000003ULL + static_cast<uint64_t>(epoch)));
      const cudl::Tensor real = to_tanh_range(images, order, steps * B).to(device);
      Means m;
      for (int64_t s = 0; s < steps; ++s) {
        const cudl::Tensor xb = real.view_bytes(static_cast<size_t>(s * B * 784) * sizeof(float),
                                                cudl::Shape{B, 1, 28, 28}, cudl::DType::f32);
        gan.disc->train_on_batch(xb, d_targets, false);
        gan.combined->train_on_batch(placeholder, ones, false);
        if ((s + 1) % a.log_every == 0 || s + 1 == steps) {  // the only reads from the device
          m.d += gan.disc->last_batch_logs().at("loss");
          m.g += gan.combined->last_batch_logs().at("loss");
          ++m.n;
          progress(static_cast<int>(epoch + 1), a.epochs, s + 1, steps, m, seconds_since(t0), tty);
        }
      }
      if (tty) std::printf("\n");
      for (cudl::Model* model : training_models(gan)) model->set_epoch(epoch + 1);
      history.metrics["d_loss"].push_back(m.d / m.n);
      history.metrics["g_loss"].push_back(m.g / m.n);
      history.metrics["loss"].push_back((m.d + m.g) / m.n);  // their sum: History counts epochs by "loss"
      if (!a.grids.empty()) {
        const std::string path = a.grids + "/dcgan-epoch-" + std::to_string(epoch + 1) + ".png";
        write_grid(path, to_u8(gan.gen->predict(grid_z, 64)));
        std::printf("samples: %s\n", path.c_str());
      }
    }
    std::printf("training: %.0f s\n", seconds_since(t_train));
    if (!a.csv.empty() && history.epochs() > 0) {
      if (!sample::write_file_atomically(a.csv, sample::history_csv(history)))
        throw cudl::Error("cannot write " + a.csv + ": " + std::strerror(errno));
      std::printf("losses: %s\n", a.csv.c_str());
      if (!a.plot.empty())
        std::printf("%s\n",
                    sample::plot_history(a.csv, a.plot, {{"d_loss", "g_loss"}}).c_str());
    }
    if (!a.save.empty()) {
      auto models = training_models(gan);
      for (size_t i = 0; i < models.size(); ++i)
        cudl::save_checkpoint(*models[i], a.save + "." + kCheckpointParts[i] + ".safetensors");
      std::printf("checkpoint: %s.{disc,gan}.safetensors\n", a.save.c_str());
    }
    if (a.score) {
      const auto t0 = std::chrono::steady_clock::now();
      cudl::Sequential clf = classifier(a, device, train, test);
      const int64_t n_real = std::min<int64_t>(a.score_samples, test.size());
      const Score real = rate(clf, n_real < test.size() ? test.slice(0, n_real).x : test.x, test.mean, test.std);
      std::printf("real MNIST test images (the ceiling): score %.2f (classes covered %d/10)\n", real.inception,
                  real.covered);
      const std::vector<uint8_t> digits =
          to_u8(gan.gen->predict(host_noise(a.score_samples, a.latent, a.seed + 12345), 500));
      const cudl::Tensor gen_x = cudl::Tensor::from_vector(digits, cudl::Shape{a.score_samples, 1, 28, 28});
      const Score s = rate(clf, gen_x, test.mean, test.std);
      std::printf("scoring: %.0f s\n", seconds_since(t0));
      std::printf("mnist score %.2f (classes covered %d/10)\n", s.inception, s.covered);
    }
    return 0;
  } catch (const cudl::Error& e) {
    std::fprintf(stderr, "cudl-dcgan: %s\n", e.what());
    return 1;
  }
}
