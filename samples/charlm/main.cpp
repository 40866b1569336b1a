// samples/charlm/main.cpp — cudl-charlm: a character-level decoder-only Transformer trained on
// Debian's wamerican word list; prints the test loss in nats per character and 20 sampled words.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../common/sample_util.hpp"
#include "charlm.hpp"
#include "cudl/checkpoint.hpp"
#include "cudl/cudl.hpp"

namespace {

constexpr const char* kProgram = "cudl-charlm";

struct Args {
  std::string device = "auto", data = "/usr/share/dict/american-english";
  std::string csv = "charlm-history.csv", plot = "charlm-history.png", save;
  std::string precision;  // "": cudl::default_precision()
  int64_t steps = 3000, batch = 64, log_every = 100, samples = 20, limit = 0;
  double lr = 3e-3, weight_decay = 0.01;
  uint64_t seed = 1;
  int devices = 1;  // > 1: data-parallel over CUDA devices 0 .. devices-1 (ranks as threads)
  charlm::Config model;
};

const char* kHelp =
    "usage: cudl-charlm [options]\n"
    "Trains a character-level decoder-only Transformer on a word list (default Debian's wamerican;\n"
    "scripts/fetch-words.sh installs it). Words are lower-cased, kept when made of a-z only, framed\n"
    "by a boundary token and split 90/10 by a seeded shuffle. Each step trains on random windows of\n"
    "the training token stream (the next character at every position).\n"
    "  --steps N                training steps (default 3000)\n"
    "  --batch-size B           windows per step (default 64); data-parallel, the global batch\n"
    "  --lr X                   AdamW learning rate, cosine-decayed to 0 over the steps (default 3e-3)\n"
    "  --weight-decay X         AdamW decoupled weight decay (default 0.01)\n"
    "  --context T              window length (default 16)\n"
    "  --dim E                  embedding size (default 64)\n"
    "  --heads H                attention heads (default 4; must divide --dim)\n"
    "  --blocks N               pre-LayerNorm Transformer blocks (default 2)\n"
    "  --device auto|cuda|cpu   auto: the GPU when one works, else the CPU backend (default auto)\n"
    "  --devices N              data-parallel training on CUDA devices 0..N-1 (default 1): every\n"
    "                           rank draws the same global batch and trains on its 1/N of it\n"
    "  (ranks as processes: under scripts/cudlrun -n N, torchrun or a cluster launcher the program\n"
    "   joins the job from RANK/WORLD_SIZE/...; each trains on cuda:LOCAL_RANK, rank 0 prints)\n"
    "  --data FILE              word list, one word per line (default /usr/share/dict/american-english)\n"
    "  --limit N                use only N words (after the shuffle; for quick runs)\n"
    "  --seed S                 seed for initialisation, training windows and sampling (default 1)\n"
    "  --precision f32|tf32|bf16|f16  fp32, TF32 tensor-core GEMMs on a GPU, or mixed precision with\n"
    "                           16-bit activations (default f32, or tf32 when CUDL_ALLOW_TF32=1)\n"
    "  --log-every N            steps per progress line and history row (default 100)\n"
    "  --samples N              words to sample at the end (default 20)\n"
    "  --save FILE              write a checkpoint after training\n"
    "  --csv FILE / --plot FILE history as CSV / PNG plot (gnuplot); '' disables\n";

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") {
      std::printf("%s", kHelp);
      std::exit(0);
    }
    if (i + 1 >= argc) sample::usage_error(kProgram, k + " needs a value");
    const std::string v = argv[++i];
    if (k == "--steps") a.steps = sample::parse_int(kProgram, k, v, 1, 100000000);
    else if (k == "--batch-size") a.batch = sample::parse_int(kProgram, k, v, 1, 1 << 20);
    else if (k == "--lr") a.lr = sample::parse_positive(kProgram, k, v, 1e6);
    else if (k == "--weight-decay") a.weight_decay = v == "0" ? 0.0 : sample::parse_positive(kProgram, k, v, 1e3);
    else if (k == "--context") a.model.context = sample::parse_int(kProgram, k, v, 1, 4096);
    else if (k == "--dim") a.model.dim = sample::parse_int(kProgram, k, v, 1, 8192);
    else if (k == "--heads") a.model.heads = sample::parse_int(kProgram, k, v, 1, 1024);
    else if (k == "--blocks") a.model.blocks = sample::parse_int(kProgram, k, v, 0, 1024);
    else if (k == "--device") a.device = v;
    else if (k == "--devices") a.devices = static_cast<int>(sample::parse_int(kProgram, k, v, 1, 64));
    else if (k == "--save") a.save = v;
    else if (k == "--data") a.data = v;
    else if (k == "--limit") a.limit = sample::parse_int(kProgram, k, v, 20, int64_t{1} << 40);
    else if (k == "--seed") a.seed = static_cast<uint64_t>(sample::parse_int(kProgram, k, v, 0, INT64_MAX));
    else if (k == "--precision") a.precision = v;
    else if (k == "--log-every") a.log_every = sample::parse_int(kProgram, k, v, 1, 100000000);
    else if (k == "--samples") a.samples = sample::parse_int(kProgram, k, v, 0, 10000);
    else if (k == "--csv") a.csv = v;
    else if (k == "--plot") a.plot = v;
    else sample::usage_error(kProgram, "unknown option '" + k + "'");
  }
  sample::check_precision(kProgram, a.precision);
  if (a.model.dim % a.model.heads != 0)
    sample::usage_error(kProgram, "--heads " + std::to_string(a.model.heads) + " must divide --dim " +
                                      std::to_string(a.model.dim));
  if (a.device != "auto" && a.device != "cpu" && a.device.rfind("cuda", 0) != 0)
    sample::usage_error(kProgram, "--device must be auto, cuda or cpu, got '" + a.device + "'");
  sample::check_devices(kProgram, a.devices, a.device, a.batch);
  return a;
}

/// Samples `n` words: each starts from the boundary token and draws the next character from the
/// model's softmax at the last position (the last `context` tokens when longer) until the boundary.
std::vector<std::string> sample_words(cudl::Model& model, int64_t n, int64_t context, uint64_t seed) {
  constexpr int kMaxLetters = 30;
  charlm::SplitMix64 rng(seed ^ 0x5eed5eedull);
  std::vector<std::vector<int32_t>> seq(static_cast<size_t>(n), std::vector<int32_t>{charlm::kBoundary});
  std::vector<bool> done(static_cast<size_t>(n), false);
  for (int step = 0; step < kMaxLetters && n > 0; ++step) {
    std::vector<int32_t> x(static_cast<size_t>(n * context), charlm::kBoundary);
    std::vector<int64_t> last(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const auto& s = seq[i];
      const int64_t len = std::min<int64_t>(static_cast<int64_t>(s.size()), context);
      std::copy(s.end() - len, s.end(), x.begin() + i * context);  // left-aligned: causal, so the rest is unseen
      last[i] = len - 1;
    }
    const std::vector<float> logits =
        model.predict_on_batch(cudl::Tensor::from_vector(x, cudl::Shape{n, context})).to_vector<float>();
    bool all_done = true;
    for (int64_t i = 0; i < n; ++i) {
      if (done[i]) continue;
      const float* l = logits.data() + (i * context + last[i]) * charlm::kVocab;
      const float m = *std::max_element(l, l + charlm::kVocab);
      double total = 0;
      std::vector<double> p(charlm::kVocab);
      for (int64_t v = 0; v < charlm::kVocab; ++v) total += p[v] = std::exp(static_cast<double>(l[v]) - m);
      double u = static_cast<double>(rng.next() >> 11) * 0x1.0p-53 * total;
      int32_t tok = charlm::kVocab - 1;
      for (int64_t v = 0; v < charlm::kVocab; ++v)
        if ((u -= p[v]) < 0) {
          tok = static_cast<int32_t>(v);
          break;
        }
      if (tok == charlm::kBoundary) done[i] = true;
      else seq[i].push_back(tok);
      all_done = all_done && done[i];
    }
    if (all_done) break;
  }
  std::vector<std::string> words;
  for (const auto& s : seq) {
    std::string w;
    for (size_t k = 1; k < s.size(); ++k) w += static_cast<char>('a' + s[k] - 1);
    words.push_back(w);
  }
  return words;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  sample::require_writable(kProgram, "--save", a.save);
  sample::require_writable(kProgram, "--csv", a.csv);
  if (!a.csv.empty()) sample::require_writable(kProgram, "--plot", a.plot);
  try {
    std::vector<std::string> all;
    try {
      all = charlm::load_words(a.data);
    } catch (const cudl::Error& e) {
      std::fprintf(stderr, "%s: %s (install it with: scripts/fetch-words.sh)\n", kProgram, e.what());
      return 1;
    }
    charlm::Split split = charlm::split_words(all);
    if (a.limit > 0) {  // a tenth of the limit from the test words, the rest from the training words
      split.test.resize(std::min<size_t>(split.test.size(), static_cast<size_t>(a.limit / 10)));
      split.train.resize(std::min<size_t>(split.train.size(), static_cast<size_t>(a.limit - a.limit / 10)));
    }
    const std::vector<int32_t> train = charlm::token_stream(split.train), test = charlm::token_stream(split.test);
    if (static_cast<int64_t>(train.size()) <= a.model.context || static_cast<int64_t>(test.size()) <= a.model.context)
      throw cudl::Error("too few words for windows of " + std::to_string(a.model.context) + " tokens");
    // One rank (comm null: the single device) or rank comm->rank() of a data-parallel run: every
    // rank draws the same global batch (the same seeded windows) and trains on its rows of it, so
    // the averaged gradient is the global batch's; only rank 0 prints and writes.
    auto train_rank = [&](const std::shared_ptr<cudl::distributed::Communicator>& comm) {
      const bool lead = !comm || comm->rank() == 0;
      if (lead)
        std::printf("words: %zu train, %zu test; tokens: %zu train, %zu test\n", split.train.size(),
                    split.test.size(), train.size(), test.size());
      const cudl::Device device = comm ? comm->device() : sample::pick_device(kProgram, a.device);
      cudl::Model model = charlm::build(a.model);
      cudl::CompileOptions opt;
      opt.optimizer = cudl::optim::AdamW(a.lr, a.weight_decay);
      opt.loss = "sparse_categorical_crossentropy";
      opt.device = device;
      opt.seed = a.seed;
      opt.communicator = comm;
      opt.precision = sample::precision_of(a.precision);
      model.compile(opt);
      if (lead) std::printf("%s", model.summary().c_str());

      charlm::SplitMix64 rng(a.seed);
      cudl::History history;
      double interval_loss = 0;
      // The ranks' interval losses are averaged through this (one all-reduce per log line).
      cudl::Tensor loss_sum = comm ? cudl::Tensor::zeros(cudl::Shape{1}, cudl::DType::f32, device) : cudl::Tensor();
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t step = 0; step < a.steps; ++step) {
        model.set_learning_rate(charlm::learning_rate(a.lr, a.steps, step));
        const auto [x, y] = charlm::training_batch(train, a.model.context, a.batch, rng);
        const bool log = (step + 1) % a.log_every == 0 || step + 1 == a.steps;
        const cudl::Tensor xr = sample::rank_rows(x, comm), yr = sample::rank_rows(y, comm);
        if (comm && lead && step == 0)
          std::printf("each rank trains on %lld of the %lld windows of a step\n",
                      static_cast<long long>(xr.shape()[0]), static_cast<long long>(a.batch));
        model.train_on_batch(xr, yr, false);
        interval_loss += model.last_batch_logs().at("loss");
        if (log) {
          if (comm) {
            loss_sum.fill(interval_loss);
            comm->all_reduce(loss_sum, /*average=*/true);
            interval_loss = loss_sum.item();
          }
          const int64_t n = (step % a.log_every) + 1;
          history.metrics["loss"].push_back(interval_loss / n);
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          if (lead) {
            std::printf("\rstep %lld/%lld  loss %.4f  lr %.2e  %.1f s  %.2f ms/step", static_cast<long long>(step + 1),
                        static_cast<long long>(a.steps), interval_loss / n, model.learning_rate(), s,
                        1000 * s / static_cast<double>(step + 1));
            std::fflush(stdout);
          }
          interval_loss = 0;
        }
      }
      const double train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (lead) std::printf("\ntraining: %.1f s (%.2f ms/step)\n", train_s, 1000 * train_s / static_cast<double>(a.steps));
      if (lead && !a.csv.empty()) {
        if (!sample::write_file_atomically(a.csv, sample::history_csv(history, "step", a.log_every)))
          throw cudl::Error(std::string("cannot write ") + a.csv + ": " + std::strerror(errno));
        std::printf("history: %s\n", a.csv.c_str());
        if (!a.plot.empty()) std::printf("%s\n", sample::plot_history(a.csv, a.plot, {{"loss"}}, "step").c_str());
      }
      if (!a.save.empty()) {
        cudl::save_checkpoint(model, a.save);  // rank 0 writes
        if (lead) std::printf("checkpoint: %s\n", a.save.c_str());
      }
      const cudl::EvalResult r = model.evaluate(charlm::windows(test, a.model.context), 256);
      const std::vector<std::string> words = sample_words(model, a.samples, a.model.context, a.seed);
      if (lead) {
        std::printf("test loss %.4f nats/char\n", r.metrics.at("loss"));
        for (const std::string& w : words) std::printf("%s\n", w.c_str());
      }
    };
    sample::run_ranks(kProgram, a.devices, a.device, a.batch, train_rank);
    return 0;
  } catch (const cudl::Error& e) {
    std::fprintf(stderr, "%s: %s\n", kProgram, e.what());
    return 1;
  }
}
