// samples/common/sample_util.hpp — what every sample program shares: range-checked flag values,
// output paths checked before training, the history as CSV (atomic, every write checked), and a
// PNG plot drawn by gnuplot run with an argument vector (no shell, file names never parsed).
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "cudl/checkpoint.hpp"
#include "cudl/data.hpp"
#include "cudl/device.hpp"
#include "cudl/distributed.hpp"
#include "cudl/error.hpp"
#include "cudl/model.hpp"

namespace sample {

/// A usage error, thrown instead of exiting while `usage_errors_throw()` is set (the command-line
/// fuzz target parses millions of argument vectors in one process).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
/// --help, thrown instead of printing the help and exiting while `usage_errors_throw()` is set.
struct HelpRequested {};
inline bool& usage_errors_throw() {
  static bool on = false;
  return on;
}

/// Prints "<program>: <msg> (see --help)" and exits with status 2 (or throws UsageError).
[[noreturn]] inline void usage_error(const char* program, const std::string& msg) {
  if (usage_errors_throw()) throw UsageError(std::string(program) + ": " + msg);
  std::fprintf(stderr, "%s: %s (see --help)\n", program, msg.c_str());
  std::exit(2);
}

/// Prints the help text and exits with status 0 (or throws HelpRequested).
[[noreturn]] inline void help_exit(const char* text) {
  if (usage_errors_throw()) throw HelpRequested{};
  std::printf("%s", text);
  std::exit(0);
}

/// Walks the command line: --help/-h prints `help` and exits 0 (help_exit); a flag in `switches`
/// calls on_flag(flag, ""); any other flag takes the next argument as its value (a usage error when
/// there is none) and calls on_flag(flag, value), which rejects the flags it does not know.
inline void for_each_flag(const char* program, int argc, char** argv, const char* help,
                          const std::vector<std::string>& switches,
                          const std::function<void(const std::string&, const std::string&)>& on_flag) {
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") help_exit(help);
    bool is_switch = false;
    for (const std::string& sw : switches) is_switch |= k == sw;
    if (is_switch) {
      on_flag(k, "");
      continue;
    }
    if (k.size() < 2 || k[0] != '-') usage_error(program, "unexpected argument '" + k + "' (options start with --)");
    if (i + 1 >= argc) usage_error(program, "option " + k + " needs a value");
    on_flag(k, argv[++i]);
  }
}

/// A decimal integer in [lo, hi]; anything else (trailing text, overflow) is a usage error naming
/// the flag, the value and the range.
inline int64_t parse_int(const char* program, const std::string& flag, const std::string& v, int64_t lo, int64_t hi) {
  errno = 0;
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end || errno == ERANGE || x < lo || x > hi)
    usage_error(program, flag + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" +
                             v + "'");
  return x;
}

/// A finite number in (lo, hi] that is also finite as a float (what the device stores).
inline double parse_positive(const char* program, const std::string& flag, const std::string& v, double hi) {
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || errno == ERANGE || !(x > 0) || !(x <= hi) || !std::isfinite(static_cast<float>(x))) {
    char limit[32];
    std::snprintf(limit, sizeof limit, "%g", hi);
    usage_error(program, flag + " needs a positive number up to " + limit + ", got '" + v + "'");
  }
  return x;
}

/// Exits with a clear message unless `path` can be written (its folder exists and is writable, and
/// an existing file is writable). Called before training, so a bad path costs no training time.
inline void require_writable(const char* program, const std::string& flag, const std::string& path) {
  if (path.empty()) return;
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  if (access(dir.c_str(), W_OK) != 0 || (access(path.c_str(), F_OK) == 0 && access(path.c_str(), W_OK) != 0)) {
    std::fprintf(stderr, "%s: %s %s: cannot write there (%s)\n", program, flag.c_str(), path.c_str(),
                 std::strerror(errno));
    std::exit(1);
  }
}

/// Writes `text` to `path` through a temporary file and a rename; false (errno set) on any failure.
inline bool write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return false;
  const bool wrote = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  const bool closed = std::fclose(f) == 0;
  if (!wrote || !closed || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(tmp.c_str());
    errno = e;
    return false;
  }
  return true;
}

/// --devices N's checks for the samples that train data-parallel: N > 1 ranks as threads need CUDA
/// devices and a global batch that N ranks split evenly (usage errors naming both values).
inline void check_devices(const char* program, int devices, const std::string& device, int64_t batch) {
  if (devices > 1 && device == "cpu")
    usage_error(program, "--devices " + std::to_string(devices) + " needs CUDA devices, not --device cpu");
  if (devices > 1 && batch % devices != 0)
    usage_error(program, "--batch-size " + std::to_string(batch) + " must be a multiple of --devices " +
                             std::to_string(devices));
}

/// Runs train_rank once per rank of this process: as one rank of a job a launcher started (RANK
/// and WORLD_SIZE set: scripts/cudlrun, torchrun, srun, mpirun), on cuda:LOCAL_RANK; as `devices`
/// ranks on host threads of this process (devices > 1), on CUDA devices 0 .. devices-1; or alone
/// (train_rank(nullptr), the sample picks its device from --device). `batch` is the global batch
/// and must split evenly over the ranks; the line saying how the job runs is printed by rank 0.
inline void run_ranks(const char* program, int devices, const std::string& device, int64_t batch,
                      const std::function<void(const std::shared_ptr<cudl::distributed::Communicator>&)>& train_rank) {
  if (cudl::distributed::launched()) {
    if (devices > 1)
      usage_error(program, "--devices " + std::to_string(devices) +
                               " (ranks as threads) cannot be combined with a launcher's RANK/WORLD_SIZE (ranks as "
                               "processes)");
    if (device == "cpu")
      usage_error(program, "ranks as processes (RANK/WORLD_SIZE set) need CUDA devices, not --device cpu");
    const cudl::distributed::LaunchEnv env = cudl::distributed::launch_env();
    if (batch % env.world_size != 0)
      usage_error(program, "--batch-size " + std::to_string(batch) +
                               " must be a multiple of WORLD_SIZE=" + std::to_string(env.world_size));
    std::shared_ptr<cudl::distributed::Communicator> comm = cudl::distributed::init(env);
    if (comm->rank() == 0)
      std::printf("data-parallel over %d processes (ranks as processes, rank 0 on %s), global batch %lld\n",
                  comm->size(), comm->device().str().c_str(), static_cast<long long>(batch));
    train_rank(comm);
  } else if (devices > 1) {
    std::printf("data-parallel on %d CUDA devices (ranks as threads), global batch %lld\n", devices,
                static_cast<long long>(batch));
    cudl::distributed::World(devices).run(train_rank);
  } else {
    train_rank(nullptr);
  }
}

/// The rows [r * B/N, (r + 1) * B/N) of a global batch of B rows that rank r of N trains on (the
/// sharded sampler's rule, for samples that draw their own batches); the whole batch without comm.
inline cudl::Tensor rank_rows(const cudl::Tensor& global,
                              const std::shared_ptr<cudl::distributed::Communicator>& comm) {
  if (!comm) return global;
  std::vector<int64_t> dims = global.shape().dims();
  const int64_t b = dims[0] / comm->size();
  const size_t row_bytes = global.nbytes() / static_cast<size_t>(dims[0]);
  dims[0] = b;
  return global.view_bytes(static_cast<size_t>(comm->rank() * b) * row_bytes, cudl::Shape(dims), global.dtype());
}

/// The device named by --device (auto|cpu|cuda[:N]), saying on stdout which one runs and why; a
/// CUDA device that is absent ends the program with a message naming the reason.
inline cudl::Device pick_device(const char* program, const std::string& want) {
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
    std::fprintf(stderr, "%s: --device %s: %s\n", program, want.c_str(),
                 n == 0 ? cudl::cuda_unavailable_reason().c_str() : "no such CUDA device");
    std::exit(1);
  }
  std::printf("device: %s (%s)\n", d.str().c_str(), cudl::cuda_device_info(d.index()).name.c_str());
  return d;
}

/// The history as CSV: `x_name` ("epoch") then each metric in name order, one row per entry; row r
/// is labelled (r + 1) * x_every.
inline std::string history_csv(const cudl::History& h, const std::string& x_name = "epoch", int64_t x_every = 1) {
  std::string s = x_name;
  for (const auto& [k, v] : h.metrics) s += "," + k;
  s += "\n";
  char buf[64];
  for (int e = 0; e < h.epochs(); ++e) {
    s += std::to_string((e + 1) * x_every);
    for (const auto& [k, v] : h.metrics) {
      std::snprintf(buf, sizeof buf, ",%.9g", e < static_cast<int>(v.size()) ? v[e] : std::nan(""));
      s += buf;
    }
    s += "\n";
  }
  return s;
}

/// Runs argv[0] with `argv` (no shell) and its output discarded; true when it exits with 0.
inline bool run_program(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    const int null = open("/dev/null", O_WRONLY);
    if (null >= 0) {
      dup2(null, STDOUT_FILENO);
      dup2(null, STDERR_FILENO);
    }
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return false;
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/// Plots columns of a history CSV into a PNG: one panel per group of column names (e.g. {"loss",
/// "val_loss"}), epochs on the x axis. The file names reach gnuplot as ARG1/ARG2 of `gnuplot -c`,
/// never as script text. Returns a line to print ("plot: FILE" or why it was skipped). `x_label`
/// names the first column ("epoch": one tick per epoch).
inline std::string plot_history(const std::string& csv, const std::string& png,
                                const std::vector<std::vector<std::string>>& panels,
                                const std::string& x_label = "epoch") {
  if (!run_program({"gnuplot", "--version"}))
    return "plot: skipped (gnuplot not installed; apt-get install gnuplot-nox)";
  std::string script =
      "set terminal png noenhanced size " + std::to_string(450 * std::max<size_t>(panels.size(), 1)) +
      ",400\nset output ARG2\nset datafile separator ','\nset key autotitle columnhead\nset xlabel '" + x_label +
      "'\n" + (x_label == "epoch" ? "set xtics 1\n" : "") + "set multiplot layout 1," +
      std::to_string(panels.size()) + "\n";
  for (const auto& cols : panels) {
    std::string list;
    for (const std::string& c : cols) list += (list.empty() ? "" : " ") + c;  // metric names: [a-z_] only
    script += "set title '" + cols.front() + "'\nplot for [c in '" + list +
              "'] ARG1 using 1:(column(c)) with linespoints title c\n";
  }
  script += "unset multiplot\n";
  char tmpl[] = "/tmp/cudl-plot-XXXXXX";
  const int fd = mkstemp(tmpl);
  if (fd < 0) return std::string("plot: skipped (no temporary file: ") + std::strerror(errno) + ")";
  const bool ok = write(fd, script.data(), script.size()) == static_cast<ssize_t>(script.size()) && close(fd) == 0;
  const bool drawn = ok && run_program({"gnuplot", "-c", tmpl, csv, png});
  unlink(tmpl);
  return drawn ? "plot: " + png : "plot: gnuplot failed; see " + csv + " for the numbers";
}

/// Writes the history CSV (when `csv` is not empty) and its loss / accuracy plot (when `png` is not
/// empty), printing where; a CSV that cannot be written throws cudl::Error.
inline void write_history(const std::string& csv, const std::string& png, const cudl::History& h) {
  if (csv.empty()) return;
  if (!write_file_atomically(csv, history_csv(h)))
    throw cudl::Error(std::string("cannot write ") + csv + ": " + std::strerror(errno));
  std::printf("history: %s\n", csv.c_str());
  if (!png.empty() && h.epochs() > 0)
    std::printf("%s\n", plot_history(csv, png, {{"loss", "val_loss"}, {"accuracy", "val_accuracy"}}).c_str());
}

/// Compiles a classifier of integer labels (sparse categorical cross-entropy, accuracy) with
/// `optimizer` on `device`, prints its summary, and loads the checkpoint `resume` when one is given.
/// The MNIST (or Fashion-MNIST) training set (its first `limit` images; 0: all) and test set from
/// `dir`. On a read error prints "<program>: <error> (fetch the data with: ...)" and returns false.
inline bool load_mnist_sets(const char* program, const std::string& dir, int64_t limit, bool fashion,
                            cudl::Dataset* train, cudl::Dataset* test) {
  try {
    *train = cudl::load_mnist(dir, true, limit, fashion);
    *test = cudl::load_mnist(dir, false, 0, fashion);
    return true;
  } catch (const cudl::Error& e) {
    std::fprintf(stderr, "%s: %s (fetch the data with: scripts/fetch-mnist.sh%s)\n", program, e.what(),
                 fashion ? " --dataset fashion" : "");
    return false;
  }
}

/// A --precision value: "" (the default) or a name cudl::parse_precision takes; else a usage error.
inline void check_precision(const char* program, const std::string& v) {
  if (v.empty()) return;
  try {
    cudl::parse_precision(v);
  } catch (const cudl::Error&) {
    usage_error(program, "--precision must be f32, tf32, bf16 or f16, got '" + v + "'");
  }
}

/// A checked --precision value as a cudl::Precision: "" is cudl::default_precision().
inline cudl::Precision precision_of(const std::string& v) {
  return v.empty() ? cudl::default_precision() : cudl::parse_precision(v);
}

/// `precision`: "f32", "tf32", "bf16", "f16" or "" (cudl::default_precision()).
inline void compile_classifier(cudl::Model& model, const cudl::Optimizer& optimizer, cudl::Device device,
                               uint64_t seed, const std::string& resume, bool print_summary = true,
                               const std::string& precision = "",
                               const std::shared_ptr<cudl::distributed::Communicator>& communicator = nullptr) {
  cudl::CompileOptions opt;
  opt.precision = precision_of(precision);
  opt.optimizer = optimizer;
  opt.loss = "sparse_categorical_crossentropy";
  opt.metrics = {"accuracy"};
  opt.device = device;
  opt.seed = seed;
  opt.communicator = communicator;  // data-parallel: this rank's (the device must be its)
  model.compile(opt);
  if (print_summary) std::printf("%s", model.summary().c_str());
  if (resume.empty()) return;
  cudl::load_checkpoint(model, resume);
  std::printf("resumed from %s at epoch %lld, step %lld\n", resume.c_str(), static_cast<long long>(model.epoch()),
              static_cast<long long>(model.step()));
}

}  // namespace sample
