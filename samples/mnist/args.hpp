// samples/mnist/args.hpp — cudl-mnist's command line: every flag range-checked, every error a
// usage error naming the flag and the value. A header so the command-line fuzz target
// (tests/fuzz, target `cli`) parses with exactly the program's code.
#pragma once

#include <cstdint>
#include <limits>
#include <string>

#include "../common/sample_util.hpp"

namespace mnist {

struct Args {
  std::string model = "mlp", optimizer = "adam", device = "auto", data, dataset = "mnist", schedule = "cosine";
  std::string placement = "auto";
  std::string precision;  // "": cudl::default_precision() (f32 unless CUDL_ALLOW_TF32=1)
  std::string save, resume, csv = "mnist-history.csv", plot = "mnist-history.png";
  int epochs = 5;
  int devices = 1;  // > 1: data-parallel over CUDA devices 0 .. devices-1 (ranks as threads)
  int64_t batch = 32, limit = 0;
  double lr = 0;  // 0: the model's default (mlp 1e-3, cnn 2e-3)
  uint64_t seed = 1;
  bool profile = false;
  bool augment = false;
};

inline constexpr const char* kProgram = "cudl-mnist";

[[noreturn]] inline void usage_error(const std::string& msg) { sample::usage_error(kProgram, msg); }

inline const char* const kHelp =
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
    "  --devices N              data-parallel training on CUDA devices 0..N-1 (default 1); the\n"
    "                           batch size is the global batch (a multiple of N)\n"
    "  (ranks as processes: started by scripts/cudlrun -n N, torchrun or a cluster launcher, the\n"
    "   program joins the job from RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; each\n"
    "   process trains on cuda:LOCAL_RANK, --batch-size is the global batch, rank 0 prints/writes)\n"
    "  --data DIR               data directory (default data/mnist or data/fashion)\n"
    "  --dataset mnist|fashion  MNIST (default) or Fashion-MNIST\n"
    "  --limit N                use only the first N training images\n"
    "  --placement auto|device|stream  training images on the device (auto: when they fit in half\n"
    "                           its memory) or streamed per batch through pinned double buffers\n"
    "  --augment                random shifts (up to 2 px) and rotations (up to 10 degrees) of the\n"
    "                           training images, on the training device (cnn: train ~10 epochs)\n"
    "  --precision f32|tf32|bf16|f16  fp32; TF32 tensor-core GEMMs/convolutions on a GPU (fp32 on\n"
    "                           the CPU); or mixed precision: 16-bit activations, fp32 math and\n"
    "                           weights, f16 with dynamic loss scaling (default f32, or tf32 when\n"
    "                           CUDL_ALLOW_TF32=1)\n"
    "  --seed S                 seed for initialisation, shuffling and dropout (default 1)\n"
    "  --save FILE              write a checkpoint after training\n"
    "  --resume FILE            load a checkpoint before training\n"
    "  --csv FILE / --plot FILE history as CSV / PNG plot (gnuplot); '' disables\n"
    "  --profile                print a per-op timing table at the end\n";

inline int64_t parse_int(const std::string& flag, const std::string& v, int64_t lo, int64_t hi) {
  return sample::parse_int(kProgram, flag, v, lo, hi);
}

inline Args parse(int argc, const char* const* argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k == "--help" || k == "-h") sample::help_exit(kHelp);
    if (k == "--profile") {
      a.profile = true;
      continue;
    }
    if (k == "--augment") {
      a.augment = true;
      continue;
    }
    if (k.size() < 2 || k[0] != '-') usage_error("unexpected argument '" + k + "' (options start with --)");
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
    else if (k == "--precision")
      a.precision = v;
    else if (k == "--device")
      a.device = v;
    else if (k == "--devices")
      a.devices = static_cast<int>(parse_int(k, v, 1, 64));
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
  sample::check_precision(kProgram, a.precision);
  if (a.dataset != "mnist" && a.dataset != "fashion")
    usage_error("--dataset must be mnist or fashion, got '" + a.dataset + "'");
  if (a.device != "auto" && a.device != "cpu" && a.device.rfind("cuda", 0) != 0)
    usage_error("--device must be auto, cuda or cpu, got '" + a.device + "'");
  sample::check_devices(kProgram, a.devices, a.device, a.batch);
  if (a.data.empty()) a.data = "data/" + a.dataset;
  if (a.lr == 0) a.lr = a.model == "cnn" ? 2e-3 : 1e-3;
  return a;
}

}  // namespace mnist
