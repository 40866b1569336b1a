// train/checkpoint.cpp — model checkpoints on top of safetensors (src/data/safetensors.cpp): the
// model's whole training state, restored only after the whole checkpoint has been checked.
#include "cudl/checkpoint.hpp"
#include "cudl/distributed.hpp"

#include <limits>
#include <map>
#include <set>

#include "cudl/error.hpp"
#include "data/safetensors.hpp"
#include "train/model_internals.hpp"

namespace cudl {
namespace {

using safetensors::parse_u64;
using safetensors::shown;

// A metadata value that must be a non-negative decimal integer.
int64_t metadata_int(const std::string& path, const std::map<std::string, std::string>& meta, const char* key) {
  auto it = meta.find(key);
  if (it == meta.end())
    CUDL_FAIL("checkpoint ", path, ": metadata field '", key, "' is missing (not a cudl checkpoint?)");
  uint64_t v = 0;
  if (!parse_u64(it->second, &v) || v > uint64_t(std::numeric_limits<int64_t>::max()))
    CUDL_FAIL("checkpoint ", path, ": metadata field '", key, "' is '", shown(it->second),
              "', expected a decimal integer in [0, 2^63)");
  return static_cast<int64_t>(v);
}

// Names joined for an error message, the first few of them.
std::string name_list(const std::vector<std::string>& names) {
  std::string o;
  for (size_t i = 0; i < names.size() && i < 4; ++i) o += (i ? ", " : "") + shown(names[i]);
  if (names.size() > 4) o += " and " + std::to_string(names.size() - 4) + " more";
  return o;
}

}  // namespace

void save_checkpoint(Model& model, const std::string& path) {
  // Data-parallel: every rank holds the same state; rank 0 writes it, the others write nothing.
  if (model.communicator() && model.communicator()->rank() != 0) return;
  const auto state = model.state_tensors();  // throws before compile
  std::map<std::string, std::string> meta{{"format", "cudl-checkpoint"},
                                          {"version", "1"},
                                          {"step", std::to_string(model.step())},
                                          {"epoch", std::to_string(model.epoch())}};
  // SGD with momentum, RMSprop and Adagrad keep the same slots: the name tells them apart.
  meta["optimizer"] = model.optimizer().name();
  save_safetensors(path, state, meta);
}

void load_checkpoint(Model& model, const std::string& path) {
  // Everything is read and checked first, then copied: a bad file leaves the model untouched.
  std::map<std::string, std::string> meta;
  auto loaded = load_safetensors(path, &meta);
  auto it = meta.find("format");
  if (it != meta.end() && it->second != "cudl-checkpoint")
    CUDL_FAIL("checkpoint ", path, ": metadata format is '", shown(it->second), "', expected 'cudl-checkpoint'");
  it = meta.find("version");
  if (it != meta.end() && it->second != "1")
    CUDL_FAIL("checkpoint ", path, ": metadata version is '", shown(it->second), "'; this cudl reads version 1");
  const int64_t step = metadata_int(path, meta, "step");
  const int64_t epoch = metadata_int(path, meta, "epoch");

  std::map<std::string, Tensor> by_name(loaded.begin(), loaded.end());
  auto state = model.state_tensors();
  std::set<std::string> wanted;
  std::vector<std::string> missing_optim, extra_optim, extra;
  // The loss scaler's state ("amp." names, f16 training) crosses precisions: a checkpoint without it
  // starts the scaler afresh, one with it resumes in a model without loss scaling by ignoring it.
  auto is_amp = [](const std::string& name) { return name.rfind("amp.", 0) == 0; };
  bool reset_amp = false;
  for (const auto& [name, t] : state) {
    wanted.insert(name);
    auto f = by_name.find(name);
    if (f == by_name.end() && is_amp(name)) {
      reset_amp = true;
      continue;
    }
    if (f == by_name.end()) {
      if (name.rfind("optim.", 0) == 0) {
        missing_optim.push_back(name);
        continue;
      }
      CUDL_FAIL("checkpoint ", path, ": tensor ", name, " is missing");
    }
    if (f->second.shape() != t.shape() || f->second.dtype() != t.dtype())
      CUDL_FAIL("checkpoint ", path, ": tensor ", name, " is ", f->second.shape(), " ", f->second.dtype(),
                " but the model has ", t.shape(), " ", t.dtype());
  }
  for (const auto& [name, t] : loaded)
    if (!wanted.count(name) && !is_amp(name)) (name.rfind("optim.", 0) == 0 ? extra_optim : extra).push_back(name);
  if (!extra.empty())
    CUDL_FAIL("checkpoint ", path, ": the model has no tensor ", name_list(extra), " (", extra.size(),
              " tensor(s) of another architecture)");
  if (!missing_optim.empty() || !extra_optim.empty())
    CUDL_FAIL(
        "checkpoint ", path, ": optimizer state does not match the compiled optimizer: ",
        missing_optim.empty() ? ""
                              : "the model's optimizer needs " + name_list(missing_optim) + ", missing from the file",
        !missing_optim.empty() && !extra_optim.empty() ? "; " : "",
        extra_optim.empty() ? ""
                            : "the file has " + name_list(extra_optim) + ", which the model's optimizer does not use",
        " (saved with another optimizer?)");
  // Same slots, another optimizer (SGD with momentum, RMSprop and Adagrad keep one slot each).
  it = meta.find("optimizer");  // absent in checkpoints written before it was recorded
  if (it != meta.end() && it->second != model.optimizer().name())
    CUDL_FAIL("checkpoint ", path, ": optimizer state of '", shown(it->second), "' but the model is compiled with '",
              model.optimizer().name(), "'");

  for (auto& [name, t] : state)
    if (by_name.count(name)) t.copy_from(by_name.at(name));
  if (reset_amp) detail::ModelInternals::reset_loss_scale(model);
  model.set_step(step);
  model.set_epoch(epoch);
}

}  // namespace cudl
