// samples/mnist — cudl-mnist: trains an MLP or a small CNN on MNIST / Fashion-MNIST on the GPU
// when one works, else on the CPU reference backend (and says why), and reports test accuracy.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>

#include "../common/sample_util.hpp"
#include "cudl/checkpoint.hpp"
#include "cudl/cudl.hpp"
#include "models.hpp"

namespace {

struct Args {
  std::string model = "mlp", optimizer = "adam", device = "auto", data, dataset = "mnist", schedule = "cosine";
  std::string placement = "auto";
  std::string save, resume, csv = "mnist-history.csv", plot = "mnist-history.png";
  int epochs = 5;
  int64_t batch = 32, limit = 0;
  double lr = 0;  // 0: the model's default (mlp 1e-3, cnn 2e-3)
  uint64_t seed = 1;
  bool profile = false;
  bool augment = false;
};

constexpr const char* kProgram = "cudl-mnist";

[[noreturn]] void usage_error(const std::string& msg) { sample::usage_error(kProgram, msg); }

const char* kHelp =
    "usage: cudl-mnist [options]\n"
    "  --model mlp|cnn          784-128-10 MLP (default) or a small convnet\n"
    "  --epochs N               training epochs (default 5); with --resume, the total: training\n"
    "                           continues from the checkpoint's epoch up to epoch N\n"
    "  --batch-size B           batch size (default 32)\n"
    "  --lr X                   learning rate (default 1e-3 for mlp, 2e-3 for cnn)\n"
    "  --optimizer adam|sgd     optimizer (default adam; sgd uses momentum 0.9)\n"
    "  --schedule cosine|constant  learning rate per epoch: cosine decay from --lr towards 0 over\n"
    "                           the epochs (default), or --lr throughout\n"
    "  --device auto|cuda|cpu   auto: the GPU when one works, else the CPU backend (default auto)\n"
    "  --data DIR               data directory (default data/mnist or data/fashion)\n"
    "  --dataset mnist|fashion  MNIST (default) or Fashion-MNIST\n"
    "  --limit N                use only the first N training images\n"
    "  --placement auto|device|stream  training images on the device (auto: when they fit in half\n"
    "                           its memory) or streamed per batch through pinned double buffers\n"
    "  --augment                random shifts (up to 2 px) and rotations (up to 10 degrees) of the\n"
    "                           training images, on the training device (cnn: train ~10 epochs)\n"
    "  --seed S                 seed for initialisation, shuffling and dropout (default 1)\n"
    "  --save FILE              write a checkpoint after training\n"
    "  --resume FILE            load a checkpoint before training\n"
    "  --csv FILE / --plot FILE history as CSV / PNG plot (gnuplot); '' disables\n"
    "  --profile                print a per-op timing table at the end\n";

int64_t parse_int(const std::string& flag, const std::string& v, int64_t lo, int64_t hi) {
  return sample::parse_int(kProgram, flag, v, lo, hi);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--help" || k == "-h") {
      std::printf("%s", kHelp);
      std::exit(0);
    }
    if (k == "--profile") {
      a.profile = true;
      continue;
    }
    if (k == "--augment") {
      a.augment = true;
      continue;
    }
    if (i + 1 >= argc) usage_error("option " + k + " needs a value");
    std::string v = argv[++i];
    if (k == "--model")
      a.model = v;
    else if (k == "--epochs")
      a.epochs = static_cast<int>(parse_int(k, v, 0, 1000000));
    else if (k == "--batch-size")
      a.batch = parse_int(k, v, 1, 1 << 20);
    else if (k == "--limit")
      a.limit = parse_int(k, v, 1, 1LL << 31);
    else if (k == "--seed")
      a.seed = static_cast<uint64_t>(parse_int(k, v, 0, std::numeric_limits<int64_t>::max()));
    else if (k == "--lr")
      a.lr = sample::parse_positive(kProgram, k, v, 1e6);
    else if (k == "--optimizer")
      a.optimizer = v;
    else if (k == "--schedule")
      a.schedule = v;
    else if (k == "--placement")
      a.placement = v;
    else if (k == "--device")
      a.device = v;
    else if (k == "--data")
      a.data = v;
    else if (k == "--dataset")
      a.dataset = v;
    else if (k == "--save")
      a.save = v;
    else if (k == "--resume")
      a.resume = v;
    else if (k == "--csv")
      a.csv = v;
    else if (k == "--plot")
      a.plot = v;
    else
      usage_error("unknown option '" + k + "'");
  }
  if (a.model != "mlp" && a.model != "cnn") usage_error("--model must be mlp or cnn, got '" + a.model + "'");
  if (a.optimizer != "adam" && a.optimizer != "sgd")
    usage_error("--optimizer must be adam or sgd, got '" + a.optimizer + "'");
  if (a.placement != "auto" && a.placement != "device" && a.placement != "stream")
    usage_error("--placement must be auto, device or stream, got '" + a.placement + "'");
  if (a.schedule != "cosine" && a.schedule != "constant")
    usage_error("--schedule must be cosine or constant, got '" + a.schedule + "'");
  if (a.dataset != "mnist" && a.dataset != "fashion")
    usage_error("--dataset must be mnist or fashion, got '" + a.dataset + "'");
  if (a.device != "auto" && a.device != "cpu" && a.device.rfind("cuda", 0) != 0)
    usage_error("--device must be auto, cuda or cpu, got '" + a.device + "'");
  if (a.data.empty()) a.data = "data/" + a.dataset;
  if (a.lr == 0) a.lr = a.model == "cnn" ? 2e-3 : 1e-3;
  return a;
}

cudl::Device pick_device(const std::string& want) {
  if (want == "cpu") {
    std::printf("device: cpu (CPU reference backend, as requested)\n");
    return cudl::Device::cpu();
  }
  const int n = cudl::cuda_device_count();
  if (want == "auto") {
    if (n > 0) {
      cudl::DeviceInfo d = cudl::cuda_device_info(0);
      std::printf("device: cuda:0 (%s, compute capability %d.%d)\n", d.name.c_str(), d.cc_major, d.cc_minor);
      return cudl::Device::cuda(0);
    }
    std::printf("device: cpu — training on the CPU reference backend because %s\n",
                cudl::cuda_unavailable_reason().c_str());
    return cudl::Device::cpu();
  }
  cudl::Device d = cudl::Device::parse(want);
  if (d.index() >= n) {
    std::fprintf(stderr, "cudl-mnist: --device %s: %s\n", want.c_str(),
                 n == 0 ? cudl::cuda_unavailable_reason().c_str() : "no such CUDA device");
    std::exit(1);
  }
  std::printf("device: %s (%s)\n", d.str().c_str(), cudl::cuda_device_info(d.index()).name.c_str());
  return d;
}

void write_outputs(const Args& a, const cudl::History& h) {
  if (a.csv.empty()) return;
  if (!sample::write_file_atomically(a.csv, sample::history_csv(h)))
    throw cudl::Error(std::string("cannot write ") + a.csv + ": " + std::strerror(errno));
  std::printf("history: %s\n", a.csv.c_str());
  if (!a.plot.empty() && h.epochs() > 0)
    std::printf("%s\n",
                sample::plot_history(a.csv, a.plot, {{"loss", "val_loss"}, {"accuracy", "val_accuracy"}}).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  // Output paths are checked before any data is read or any step runs.
  sample::require_writable(kProgram, "--save", a.save);
  sample::require_writable(kProgram, "--csv", a.csv);
  if (!a.csv.empty()) sample::require_writable(kProgram, "--plot", a.plot);
  try {
    const bool fashion = a.dataset == "fashion";
    cudl::Dataset train, test;
    try {
      train = cudl::load_mnist(a.data, true, a.limit, fashion);
      test = cudl::load_mnist(a.data, false, 0, fashion);
    } catch (const cudl::Error& e) {
      std::fprintf(stderr, "cudl-mnist: %s (fetch the data with: scripts/fetch-mnist.sh --dataset %s)\n", e.what(),
                   a.dataset.c_str());
      return 1;
    }
    // A test set that the trained model could not read is found now, not after training.
    auto sample_shape = [](const cudl::Tensor& x) {
      return cudl::Shape(std::vector<int64_t>(x.shape().dims().begin() + 1, x.shape().dims().end()));
    };
    if (sample_shape(test.x) != sample_shape(train.x) || test.x.dtype() != train.x.dtype())
      throw cudl::Error("the test images are " + test.x.shape().str() + " " + cudl::dtype_name(test.x.dtype()) +
                        " but the training images are " + train.x.shape().str() + " " +
                        cudl::dtype_name(train.x.dtype()) + " (" + a.data + ")");
    cudl::Device device = pick_device(a.device);
    cudl::Sequential model = mnist::build(a.model);
    cudl::CompileOptions opt;
    opt.optimizer = a.optimizer == "adam" ? cudl::optim::Adam(a.lr) : cudl::optim::SGD(a.lr, 0.9);
    opt.loss = "sparse_categorical_crossentropy";
    opt.metrics = {"accuracy"};
    opt.device = device;
    opt.seed = a.seed;
    model.compile(opt);
    std::printf("%s", model.summary().c_str());
    if (!a.resume.empty()) {
      cudl::load_checkpoint(model, a.resume);
      std::printf("resumed from %s at epoch %lld, step %lld\n", a.resume.c_str(), static_cast<long long>(model.epoch()),
                  static_cast<long long>(model.step()));
    }
    model.set_profiling(a.profile);
    cudl::FitOptions fit;
    // --epochs is the total: a resumed run trains the epochs the checkpoint had not reached, and the
    // schedule (over all of them, read at the model's global epoch) continues where it stopped.
    fit.epochs = static_cast<int>(std::max<int64_t>(0, a.epochs - model.epoch()));
    fit.batch_size = a.batch;
    fit.seed = a.seed;
    fit.augment = a.augment;
    fit.data_placement = a.placement == "device"   ? cudl::DataPlacement::Device
                         : a.placement == "stream" ? cudl::DataPlacement::Stream
                                                   : cudl::DataPlacement::Auto;
    if (a.schedule == "cosine")
      fit.callbacks.push_back(std::make_shared<cudl::LearningRateScheduler>(cudl::schedules::cosine(a.lr, a.epochs)));
    fit.validation_split = train.size() >= 12000 ? 5000.0 / train.size() : 0.1;
    std::printf("training on %lld images (%lld held out for validation), testing on %lld\n",
                static_cast<long long>(train.size() - static_cast<int64_t>(train.size() * fit.validation_split)),
                static_cast<long long>(train.size() * fit.validation_split), static_cast<long long>(test.size()));
    cudl::History h = model.fit(train, fit);
    cudl::EvalResult r = model.evaluate(test, 1000);
    std::printf("test loss %.4f, test accuracy %.2f%%\n", r.metrics["loss"], 100.0 * r.metrics["accuracy"]);
    write_outputs(a, h);
    if (!a.save.empty()) {
      cudl::save_checkpoint(model, a.save);
      std::printf("checkpoint: %s\n", a.save.c_str());
    }
    if (a.profile) std::printf("\nper-op profile (%s):\n%s", device.str().c_str(), model.profile_table().c_str());
    return 0;
  } catch (const cudl::Error& e) {
    std::fprintf(stderr, "cudl-mnist: %s\n", e.what());
    return 1;
  }
}
