// samples/seq_mnist — cudl-seq-mnist: MNIST read as sequences of 28 rows of 28 pixels, classified
// by an LSTM (or GRU / SimpleRNN) and a dense layer, on the GPU when one works, else on the CPU.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <map>
#include <string>

#include "../common/sample_util.hpp"
#include "cudl/checkpoint.hpp"
#include "cudl/cudl.hpp"
#include "models.hpp"

namespace {

struct Args {
  std::string cell = "lstm", device = "auto", data = "data/mnist", schedule = "constant";
  std::string save, resume, csv = "seq-mnist-history.csv", plot = "seq-mnist-history.png";
  std::string precision;  // "": cudl::default_precision()
  int epochs = 5;
  int devices = 1;  // > 1: data-parallel over CUDA devices 0 .. devices-1 (ranks as threads)
  int64_t batch = 128, limit = 0, units = 128;
  double lr = 1e-3;
  uint64_t seed = 1;
  bool profile = false;
};

constexpr const char* kProgram = "cudl-seq-mnist";

const char* kHelp =
    "usage: cudl-seq-mnist [options]\n"
    "  --cell lstm|gru|rnn      the recurrent layer (default lstm), Keras semantics and initialisers\n"
    "  --units N                its state size (default 128)\n"
    "  --epochs N               training epochs (default 5); with --resume, the total\n"
    "  --batch-size B           batch size (default 128); data-parallel, the global batch\n"
    "  --lr X                   Adam learning rate (default 1e-3)\n"
    "  --schedule constant|cosine  --lr throughout (default) or cosine decay over the epochs\n"
    "  --device auto|cuda|cpu   auto: the GPU when one works, else the CPU backend (default auto)\n"
    "  --devices N              data-parallel training on CUDA devices 0..N-1 (default 1)\n"
    "  (ranks as processes: under scripts/cudlrun -n N, torchrun or a cluster launcher the program\n"
    "   joins the job from RANK/WORLD_SIZE/...; each trains on cuda:LOCAL_RANK, rank 0 prints)\n"
    "  --data DIR               MNIST directory (default data/mnist; scripts/fetch-mnist.sh)\n"
    "  --limit N                use only the first N training images\n"
    "  --precision f32|tf32|bf16|f16  GPU GEMMs in fp32 or on TF32 tensor cores, or mixed\n"
    "                           precision with 16-bit activations (default f32, or tf32 when\n"
    "                           CUDL_ALLOW_TF32=1)\n"
    "  --seed S                 seed for initialisation and shuffling (default 1)\n"
    "  --save FILE              write a checkpoint after training\n"
    "  --resume FILE            load a checkpoint before training\n"
    "  --csv FILE / --plot FILE history as CSV / PNG plot (gnuplot); '' disables\n"
    "  --profile                print a per-op timing table at the end\n"
    "The last line printed is 'test accuracy NN.NN%'.\n";

Args parse(int argc, char** argv) {
  Args a;
  using Setter = std::function<void(const std::string&)>;
  auto integer = [](int64_t& dst, const char* flag, int64_t lo, int64_t hi) -> Setter {
    return [&dst, flag, lo, hi](const std::string& v) { dst = sample::parse_int(kProgram, flag, v, lo, hi); };
  };
  auto text = [](std::string& dst) -> Setter { return [&dst](const std::string& v) { dst = v; }; };
  int64_t epochs = a.epochs, seed = static_cast<int64_t>(a.seed), devices = a.devices;
  const std::map<std::string, Setter> flags = {
      {"--cell", text(a.cell)},
      {"--units", integer(a.units, "--units", 1, 1 << 16)},
      {"--epochs", integer(epochs, "--epochs", 0, 1000000)},
      {"--devices", integer(devices, "--devices", 1, 64)},
      {"--batch-size", integer(a.batch, "--batch-size", 1, 1 << 20)},
      {"--limit", integer(a.limit, "--limit", 1, 1LL << 31)},
      {"--seed", integer(seed, "--seed", 0, std::numeric_limits<int64_t>::max())},
      {"--lr", [&a](const std::string& v) { a.lr = sample::parse_positive(kProgram, "--lr", v, 1e6); }},
      {"--schedule", text(a.schedule)},
      {"--device", text(a.device)},
      {"--precision", text(a.precision)},
      {"--data", text(a.data)},
      {"--save", text(a.save)},
      {"--resume", text(a.resume)},
      {"--csv", text(a.csv)},
      {"--plot", text(a.plot)}};
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") std::printf("%s", kHelp), std::exit(0);
    if (k == "--profile") {
      a.profile = true;
    } else if (auto f = flags.find(k); f == flags.end()) {
      sample::usage_error(kProgram, "unknown option '" + k + "'");
    } else if (i + 1 >= argc) {
      sample::usage_error(kProgram, "option " + k + " needs a value");
    } else {
      f->second(argv[++i]);
    }
  }
  a.epochs = static_cast<int>(epochs);
  a.seed = static_cast<uint64_t>(seed);
  a.devices = static_cast<int>(devices);
  sample::check_precision(kProgram, a.precision);
  if (a.cell != "lstm" && a.cell != "gru" && a.cell != "rnn")
    sample::usage_error(kProgram, "--cell must be lstm, gru or rnn, got '" + a.cell + "'");
  if (a.schedule != "cosine" && a.schedule != "constant")
    sample::usage_error(kProgram, "--schedule must be constant or cosine, got '" + a.schedule + "'");
  if (a.device != "auto" && a.device != "cpu" && a.device.rfind("cuda", 0) != 0)
    sample::usage_error(kProgram, "--device must be auto, cuda or cpu, got '" + a.device + "'");
  sample::check_devices(kProgram, a.devices, a.device, a.batch);
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  sample::require_writable(kProgram, "--save", a.save);
  sample::require_writable(kProgram, "--csv", a.csv);
  if (!a.csv.empty()) sample::require_writable(kProgram, "--plot", a.plot);
  try {
    cudl::Dataset train, test;
    if (!sample::load_mnist_sets(kProgram, a.data, a.limit, false, &train, &test)) return 1;
    // One rank (comm null: the single device) or rank comm->rank() of a data-parallel run (the
    // global batch split over the ranks, fit's sharded sampler); only rank 0 prints and writes.
    auto train_rank = [&](const std::shared_ptr<cudl::distributed::Communicator>& comm) {
      const bool lead = !comm || comm->rank() == 0;
      const cudl::Device device = comm ? comm->device() : sample::pick_device(kProgram, a.device);
      cudl::Sequential model = seq_mnist::build(a.cell, a.units);
      sample::compile_classifier(model, cudl::optim::Adam(a.lr), device, a.seed, a.resume, lead, a.precision, comm);
      model.set_profiling(a.profile);
      cudl::FitOptions fit;
      fit.epochs = static_cast<int>(std::max<int64_t>(0, a.epochs - model.epoch()));
      fit.batch_size = a.batch;
      fit.seed = a.seed;
      if (a.schedule == "cosine")
        fit.callbacks.push_back(
            std::make_shared<cudl::LearningRateScheduler>(cudl::schedules::cosine(a.lr, a.epochs)));
      fit.validation_split = train.size() >= 12000 ? 5000.0 / train.size() : 0.1;
      if (lead)
        std::printf("training on %lld sequences of 28 rows x 28 pixels, testing on %lld\n",
                    static_cast<long long>(train.size() - static_cast<int64_t>(train.size() * fit.validation_split)),
                    static_cast<long long>(test.size()));
      const cudl::History h = model.fit(train, fit);
      cudl::EvalResult r = model.evaluate(test, 1000);
      if (lead) sample::write_history(a.csv, a.plot, h);
      if (!a.save.empty()) {
        cudl::save_checkpoint(model, a.save);  // rank 0 writes
        if (lead) std::printf("checkpoint: %s\n", a.save.c_str());
      }
      if (a.profile && lead)
        std::printf("\nper-op profile (%s):\n%s", device.str().c_str(), model.profile_table().c_str());
      if (lead) std::printf("test loss %.4f\ntest accuracy %.2f%%\n", r.metrics["loss"], 100.0 * r.metrics["accuracy"]);
    };
    sample::run_ranks(kProgram, a.devices, a.device, a.batch, train_rank);
    return 0;
  } catch (const cudl::Error& e) {
    std::fprintf(stderr, "%s: %s\n", kProgram, e.what());
    return 1;
  }
}
