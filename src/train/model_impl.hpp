// train/model_impl.hpp — Model::Impl: the model's layer graph and training state, and the program
// builders shared by compile (programs.cpp), the fit loop (fit.cpp) and the per-batch calls.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cudl/model.hpp"
#include "graph/executor.hpp"
#include "nn/build_context.hpp"

namespace cudl {

struct Model::Impl {
  // -- the layer graph (model.cpp) ---------------------------------------------------------------
  /// Every application reachable from the output, each after its inputs; the model holds them.
  std::vector<std::shared_ptr<const detail::VarNode>> nodes;
  std::vector<const detail::VarNode*> inputs;  // the model's inputs, in the order given
  const detail::VarNode* output = nullptr;
  std::vector<LayerPtr> layer_list;           // distinct layers, in application order
  std::map<const Layer*, std::string> names;  // each layer's name in this model
  std::map<const Layer*, int> positions;      // index in layer_list: seeds the initial weights
  std::string name;

  // -- training state (model.cpp: compile) -----------------------------------------------------
  bool compiled = false;
  CompileOptions opts;
  std::set<const Layer*> frozen;                     // layers not trainable when compiled
  std::map<std::string, Precision> layer_precision;  // Layer::precision() overrides when compiled, by name
  Tensor hyper;                                      // f32[2] on the device: {lr, t} (+ skip flag: loss scaling)
  Tensor amp;                                        // f16 loss scaling: f32[4] {scale, clean, skipped, overflowed}
  Tensor rng;                                        // i64[2] on the device: {seed, offset}
  Tensor cursor;                                     // i64[1] on the device: position in the epoch's permutation
  std::map<std::string, std::vector<Tensor>> slots;  // optimizer state per "layer.param"
  /// bf16/f16 training: the persistent 16-bit copy of a trained parameter that the step's forward
  /// reads, written by the optimizer step with the f32 master (ops/optim.hpp weight_copies).
  struct WeightCopy {
    Layer* layer = nullptr;
    Tensor master;  // the f32 parameter
    Tensor copy;    // bf16 or f16, the master's shape
  };
  std::map<std::string, WeightCopy> weight_copies;  // by "layer.param"
  /// Each layer's weights_version when this model's copies of its parameters were last equal to
  /// round(master); a layer whose version moved since (a host write, another model's step) has
  /// its copies refreshed before this model's next training step (sync_weight_copies).
  std::map<const Layer*, uint64_t> copies_version;
  /// Training programs read the persistent copies (true) or cast every weight at the start of each
  /// step (false: the program before the copies existed; kept for comparison tests and benchmarks).
  bool fused_weight_copies = true;
  std::map<std::string, Tensor> accumulators;        // "loss", "correct", "mae" (f32[1], on the device)
  std::map<std::string, Tensor> test_accumulators;   // test_on_batch's own: its cached programs write them
  int64_t step = 0;
  int64_t epoch_rows = 0;   // rows of the current epoch trained so far (fit; for batch_logs)
  int64_t epochs_done = 0;  // over every fit() call: picks each epoch's shuffle
  double lr = 0;
  PlanReport report;
  bool profiling = false;
  std::map<std::string, graph::OpProfile> profile;

  /// A runnable program: the executor and the values the host feeds or reads.
  struct Program {
    std::unique_ptr<graph::Executor> exec;
    graph::ValueId out = graph::kNone;
    std::vector<graph::ValueId> x;  // fed inputs, one per model input (per-batch programs)
    graph::ValueId y = graph::kNone;
  };
  /// Per-batch programs of train_on_batch, test_on_batch and predict (predict_on_batch), by batch
  /// size; dropped by compile.
  std::map<int64_t, Program> train_batch, test_batch, predict_batch;
  int64_t last_batch_rows = 0;  // rows of the last train_on_batch (its logs divide by them)

  /// Where a program's batches come from. Gather: rows of device tables x (one per model input), y
  /// picked by perm at the device cursor (fit and evaluate; tensors may be absent when only
  /// planning). Feed: x and y are input buffers of (batch, ...) that the host fills before each run.
  struct DataSpec {
    bool gather = true;
    std::vector<Shape> x;  // gather: the tables' shapes (R, ...), one per input; feed: ignored
    Shape y;
    std::vector<DType> x_dtype;
    DType y_dtype = DType::i32;
    std::vector<Tensor> tx;  // gather: the input tables (empty when planning only)
    Tensor ty, perm;
    float mean = 0.f, std = 1.f;
    const FitOptions* augment = nullptr;  // training: FitOptions with augment on, or null
    /// Gathers from these tables: tx, and their shapes and dtypes; then y's from ty.
    void set_tables(std::vector<Tensor> inputs, Tensor targets) {
      x.clear(), x_dtype.clear();
      for (const Tensor& t : inputs) x.push_back(t.shape()), x_dtype.push_back(t.dtype());
      tx = std::move(inputs);
      ty = std::move(targets);
      y = ty.shape();
      y_dtype = ty.dtype();
    }
  };
  /// A graph under construction with its build context (the bound tensors).
  struct Build {
    graph::Graph g;
    detail::BuildContext c;
    graph::ValueId out = graph::kNone, y = graph::kNone;
    std::vector<graph::ValueId> x;
  };

  // -- graph building (programs.cpp) -------------------------------------------------------------
  detail::BuildContext context(graph::Graph& g, int64_t batch, bool training);
  /// The forward nodes from the batched inputs (one per model input) to the model's output.
  graph::ValueId forward(detail::BuildContext& c, const std::vector<graph::ValueId>& xs);
  /// (batch, <input k's per-sample shape>).
  Shape batched_input(int64_t batch, size_t k = 0) const;
  /// "input 1 ('mask')" for multi-input models, "x" for single-input ones: for error messages.
  std::string input_label(size_t k) const;
  /// Whether input k takes data of dtype t: i32 token ids for an i32 input, else f32 or u8 images.
  bool input_accepts(size_t k, DType t) const {
    return inputs[k]->dtype == DType::i32 ? t == DType::i32 : t == DType::f32 || t == DType::u8;
  }
  /// The target shape and dtype of a batch of `batch` rows for the compiled loss.
  std::pair<Shape, DType> target_spec(int64_t batch) const;
  /// Forward (+ loss, metrics; + backward and optimizer when training) for batches of `batch` rows.
  /// Per-batch programs (feed) first zero the metric accumulators, so each run reports its batch.
  std::unique_ptr<Build> build(int64_t batch, const DataSpec& data, bool training, bool with_loss);
  Program make_program(std::unique_ptr<Build> b, const graph::ExecutorOptions& options);
  Program train_program(int64_t batch, const DataSpec& data, const graph::ExecutorOptions* options = nullptr);
  Program eval_program(int64_t batch, const DataSpec& data);
  Program predict_program(int64_t batch);
  /// The training step's plan for batches of `batch` rows, from the graph alone (nothing allocated).
  PlanReport plan(int64_t batch);
  /// The report of a planned training graph (what plan() and the programs fit builds tell).
  PlanReport report_of(const graph::Graph& g, const graph::Plan& plan, int64_t batch) const;
  graph::ExecutorOptions exec_options(const std::set<graph::ValueId>& keep = {}) const;

  // -- losses, metrics and optimizers (optimizers.cpp) -------------------------------------------
  void check_targets(const Tensor& y, int64_t rows) const;
  /// The loss op reads the model's output in the storage type (bf16/f16) itself, so no Cast to f32
  /// stands between them (ops::storage_slots lists its prediction).
  bool loss_reads_storage() const;
  /// Loss node (+ metric accumulation). Returns {loss, dpred}; dpred has pred's dtype.
  /// `dloss` (f32[1], or kNone): the loss gradient's seed (the loss scale).
  std::pair<graph::ValueId, graph::ValueId> loss_nodes(detail::BuildContext& c, graph::ValueId pred,
                                                       graph::ValueId target, bool with_grad,
                                                       graph::ValueId dloss = graph::kNone);
  /// `amp` (the bound loss-scaler state, or kNone): unscale first, and the step skips on overflow.
  void optimizer_nodes(detail::BuildContext& c, graph::ValueId amp = graph::kNone);
  /// True when the compiled model trains with dynamic loss scaling (any f16 layer).
  bool scales_loss() const;
  /// The loss scaler's state at compile: {initial scale, 0, 0, 0} (a host tensor).
  Tensor initial_amp_state() const;
  /// Data-parallel: the gradient buckets' all-reduce nodes (started during backward, finished
  /// before the optimizer).
  void gradient_all_reduce_nodes(detail::BuildContext& c);
  bool wants(const std::string& metric) const;
  Tensor& acc(const std::string& key);
  graph::ValueId bind_state(detail::BuildContext& c, const std::string& name, const Tensor& t,
                            graph::Role role = graph::Role::State);
  /// The metrics accumulated since they were last zeroed, divided by `rows`.
  Logs read_metrics(double rows);

  // -- misc --------------------------------------------------------------------------------------
  void require_compiled(const char* what) const;
  /// Throws unless lr is >= 0 and finite as the f32 the device keeps.
  void check_learning_rate(double lr) const;
  /// Throws unless xs holds one tensor per model input, each (N, <that input's shape>) of a dtype
  /// it takes, all with the same N; names the input, both shapes and `what` (fit.cpp).
  void check_inputs(const std::vector<Tensor>& xs, const char* what) const;
  /// check_inputs on d.inputs(), after checking that d gives x or xs, not both.
  void check_inputs(const Dataset& d, const char* what) const;
  /// terminate_on_nan (fit.cpp): throws naming the tensor, sample and element when an f32 x or y
  /// of `d` holds NaN/Inf; and, at an epoch's end, naming the layer and parameter holding one.
  void check_finite_data(const Dataset& d, const char* what) const;
  void check_finite_weights(int epoch) const;
  void collect_profile(const graph::Executor& e);
  void write_hyper();  // hyper[0] only: the step count in hyper[1] lives on the device
  /// Before every training step (ExecutorOptions::before_run of the training programs): casts the
  /// masters of every layer whose weights were written since its copies were made (queued on the
  /// step's stream, no synchronisation), then records that this step writes the layer's weights.
  void sync_weight_copies();
  /// The optimizer step's 16-bit copies: for each trained parameter whose forward Cast to 16 bits
  /// can become a persistent copy, removes that Cast, binds its output to the model's copy tensor and
  /// returns param value -> copy value.
  std::map<graph::ValueId, graph::ValueId> fuse_weight_casts(detail::BuildContext& c,
                                                             const std::vector<const detail::ParamBinding*>& train);
  // -- data-parallel training (opts.communicator set) --------------------------------------------
  int world_size() const;
  int world_rank() const;
  void broadcast_state();       // compile: parameters and buffers from rank 0
  void all_reduce_metrics();    // fit: sums the accumulators over the ranks (at an epoch's end)
  const std::string& layer_name(const Layer* l) const { return names.at(l); }
};

/// s in ASCII lower case (optimizer and loss names are matched case-insensitively).
std::string ascii_lower(std::string s);

}  // namespace cudl
