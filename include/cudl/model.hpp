// cudl/model.hpp — Keras-style training: compile(optimizer, loss, metrics), fit, evaluate,
// predict, summary. Training runs forward, backward and the optimizer step on the model's device.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cudl/nn.hpp"
#include "cudl/tensor.hpp"

namespace cudl {

namespace distributed {
class Communicator;  // cudl/distributed.hpp
}

/// Training data held on the host: x (N, ...) f32 or u8 images, y (N,) i32 labels or (N, ...) f32
/// targets. u8 images are normalised as (x/255 - mean) / std when batches are gathered.
/// A model with several inputs takes one tensor per input in `xs` (the order of the model's
/// inputs, each (N, ...), e.g. token ids and their key-padding mask) and leaves x undefined.
struct CUDL_API Dataset {
  Tensor x, y;
  float mean = 0.f, std = 1.f;
  std::vector<Tensor> xs;  // multi-input models: every input's rows (x undefined)
  /// The input tensors: xs, or {x} when xs is empty.
  std::vector<Tensor> inputs() const { return xs.empty() ? std::vector<Tensor>{x} : xs; }
  int64_t size() const {
    const Tensor& t = xs.empty() ? x : xs[0];
    return t.defined() && t.shape().rank() > 0 ? t.shape()[0] : 0;
  }
  /// Rows [begin, end) as a new dataset (copies).
  Dataset slice(int64_t begin, int64_t end) const;
};

/// An optimizer and its hyper-parameters (torch.optim's rules). Build one with the optim::
/// functions, or from a name: "sgd", "adam", "adamw", "rmsprop", "adagrad" (their defaults below).
struct CUDL_API Optimizer {
  enum Kind { SGD, Adam, AdamW, RMSprop, Adagrad } kind = Adam;
  double lr = 1e-3;
  double momentum = 0, dampening = 0;  // SGD
  bool nesterov = false;               // SGD
  double beta1 = 0.9, beta2 = 0.999;   // Adam, AdamW
  double alpha = 0.99;                 // RMSprop smoothing
  double eps = 1e-8;                   // Adam, AdamW, RMSprop, Adagrad (Adagrad uses 1e-10 in torch)
  /// Keras's (and TensorFlow's) place for eps instead of torch's: Adam/AdamW add it to sqrt(v)
  /// before the bias correction (the paper's epsilon-hat: p -= lr*sqrt(1-b2^t)/(1-b1^t) *
  /// m/(sqrt(v)+eps)); RMSprop adds it under the square root (p -= lr*g/sqrt(sq+eps)).
  bool keras_epsilon = false;
  double weight_decay = 0;             // L2 (SGD, Adam, RMSprop, Adagrad) or decoupled (AdamW)
  double clip_norm = 0;                // > 0: clip gradients by global norm

  Optimizer() = default;
  /// By name, with the defaults of the optim:: function of that name; throws for an unknown name.
  Optimizer(const std::string& name);                            // NOLINT: implicit, so `opts.optimizer = "adam"` works
  Optimizer(const char* name) : Optimizer(std::string(name)) {}  // NOLINT
  const char* name() const;
};

namespace optim {
CUDL_API Optimizer SGD(double lr = 1e-2, double momentum = 0, bool nesterov = false, double weight_decay = 0);
CUDL_API Optimizer Adam(double lr = 1e-3, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);
CUDL_API Optimizer AdamW(double lr = 1e-3, double weight_decay = 1e-2);
CUDL_API Optimizer RMSprop(double lr = 1e-2, double alpha = 0.99, double eps = 1e-8);
CUDL_API Optimizer Adagrad(double lr = 1e-2, double eps = 1e-10);
}  // namespace optim

/// A loss. Build one with the losses:: functions, or from a name (Keras's and a few short ones):
/// "sparse_categorical_crossentropy" (logits + i32 labels), "categorical_crossentropy" (logits +
/// one-hot/probabilities), "mse", "mae" (L1), "huber", "binary_crossentropy" (probabilities),
/// "bce_with_logits", "nll" (log-probabilities + labels). An unknown name throws.
/// The label losses take outputs (..., C) with labels (...): a model whose output is a sequence of
/// logits (T, V) per sample trains on i32 label rows (N, T), the loss averaged over the positions.
struct CUDL_API Loss {
  enum Kind {
    SparseCategoricalCrossentropy,
    CategoricalCrossentropy,
    MeanSquaredError,
    MeanAbsoluteError,
    Huber,
    BinaryCrossentropy,
    BinaryCrossentropyWithLogits,
    NegativeLogLikelihood
  } kind = SparseCategoricalCrossentropy;
  double label_smoothing = 0;  // sparse_categorical_crossentropy
  /// sparse_categorical_crossentropy (Keras's ignore_class): positions labelled with it add no loss
  /// and no gradient; the loss is the mean over the other positions, and accuracy counts only them.
  std::optional<int32_t> ignore_class;
  double huber_delta = 1.0;    // huber

  Loss() = default;
  Loss(const std::string& name);                       // NOLINT: implicit, so `opts.loss = "mse"` works
  Loss(const char* name) : Loss(std::string(name)) {}  // NOLINT
  /// The canonical name ("sparse_categorical_crossentropy", "mse", ...).
  const char* name() const;
  /// True when the targets are i32 class labels ((N,), or (N, ...) for outputs (..., C)).
  bool takes_labels() const { return kind == SparseCategoricalCrossentropy || kind == NegativeLogLikelihood; }
};

namespace losses {
CUDL_API Loss SparseCategoricalCrossentropy(double label_smoothing = 0);  // logits + labels
/// Logits + labels, positions labelled `ignore_class` ignored (padding of sequences).
CUDL_API Loss SparseCategoricalCrossentropy(double label_smoothing, int32_t ignore_class);
CUDL_API Loss CategoricalCrossentropy();                                  // logits + probabilities
CUDL_API Loss MeanSquaredError();
CUDL_API Loss MeanAbsoluteError();
CUDL_API Loss Huber(double delta = 1.0);
/// from_logits = false: predictions are probabilities (BCE); true: logits (BCE with logits).
CUDL_API Loss BinaryCrossentropy(bool from_logits = false);
CUDL_API Loss NegativeLogLikelihood();  // log-probabilities + labels
}  // namespace losses

/// Dynamic loss scaling of f16 training (torch.cuda.amp.GradScaler's rules and defaults), all on the
/// device: the loss gradient is multiplied by the scale; before the optimizer the parameter
/// gradients are divided by it, and a step whose gradients hold Inf or NaN is skipped (parameters,
/// optimizer state and its step count untouched) and halves the scale; after growth_interval clean
/// steps in a row the scale doubles.
struct CUDL_API LossScaleOptions {
  double initial_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;      // >= 1
  double backoff_factor = 0.5;     // in (0, 1]
  int64_t growth_interval = 2000;  // >= 1
};

struct CUDL_API CompileOptions {
  Optimizer optimizer;
  Loss loss;
  std::vector<std::string> metrics;  // "accuracy", "mae"
  Device device = Device::cpu();
  uint64_t seed = 0;        // parameter initialisation and dropout
  bool cuda_graphs = true;  // capture each step into a CUDA graph (CUDA only)
  bool verbose = false;     // print the plan report at compile
  Precision precision = default_precision();  // f32 GEMMs/convolutions on CUDA: fp32 or TF32
  /// Used when the model trains in f16 (precision f16, or a layer set to f16): see LossScaleOptions.
  LossScaleOptions loss_scale;
  /// false (the default): a Dense with activation "relu" applies the relu in the GEMM's epilogue,
  /// which computes max(v, 0) as cuBLASLt's does, so a NaN pre-activation becomes 0 there; fit's
  /// checks (data before the first step, loss and parameters at each epoch's end) still find NaN.
  /// true: that relu runs as its own op, so relu(NaN) = NaN everywhere, at one more kernel per such
  /// layer and step on CUDA (docs/models.md). Conv2d's fused relu passes NaN on in both modes.
  bool propagate_nan = false;
  /// Data-parallel training (cudl/distributed.hpp, docs/distributed.md): this rank's communicator.
  /// `device` must be its device. compile broadcasts the parameters and buffers from rank 0; every
  /// training step averages the gradients across the ranks before the optimizer (inside the step,
  /// so a captured step stays one graph launch); fit trains each rank on its shard of every epoch
  /// (FitOptions::batch_size is the global batch) and reports metrics over all ranks; checkpoints
  /// are written by rank 0 only. The model keeps the communicator alive.
  std::shared_ptr<distributed::Communicator> communicator;
};

struct CUDL_API History {
  std::map<std::string, std::vector<double>> metrics;  // "loss", "accuracy", "val_loss", ...
  int epochs() const;
};

class Model;

namespace detail {
struct ModelInternals;  // src/train/model_internals.hpp: the training program, for benchmarks
}  // namespace detail

/// Hooks called by fit. Set model.stop_training() to end after the current epoch. `epoch` is the
/// model's global epoch index (0-based, counting the epochs of every earlier fit and of a resumed
/// checkpoint), so schedules and checkpoints continue across runs.
class CUDL_API Callback {
 public:
  virtual ~Callback() = default;
  virtual void on_train_begin(Model&) {}
  virtual void on_epoch_begin(Model&, int /*epoch*/) {}
  virtual void on_epoch_end(Model&, int /*epoch*/, const std::map<std::string, double>& /*logs*/) {}
  virtual void on_batch_end(Model&, int64_t /*step*/) {}
  virtual void on_train_end(Model&) {}
};
using CallbackPtr = std::shared_ptr<Callback>;

/// Where fit and evaluate keep the rows of a dataset while they run.
enum class DataPlacement {
  Auto,    ///< Device when x and y take at most half of the device's memory (always on the CPU), else Stream
  Device,  ///< uploaded once; every batch is gathered on the device (no host work per step)
  Stream,  ///< each batch is gathered on the host into one of two pinned buffers and copied to the
           ///< device on a copy stream while the previous step runs
};

struct CUDL_API FitOptions {
  int epochs = 1;
  int64_t batch_size = 32;
  bool shuffle = true;
  const Dataset* validation_data = nullptr;
  double validation_split = 0;  // fraction of the training rows (taken from the end) held out
  std::vector<CallbackPtr> callbacks;
  uint64_t seed = 0;
  int verbose = 1;        // 0 silent, 1 progress bar / per-epoch lines
  /// At each epoch's end the training loss (already on the device) is checked: a NaN or infinite
  /// loss stops fit with an error naming the epoch. false: train on and report it in the logs.
  bool terminate_on_nan = true;
  /// Debugging a NaN: run every step eagerly and check each node's f32 outputs on the host after
  /// it runs; the first node that writes NaN or Inf stops fit with an error naming it and saying
  /// whether its inputs were already non-finite. Slow (a host copy per node output).
  bool debug_nonfinite = false;
  int64_t log_every = 0;  // > 0: read the running loss every N steps for the progress bar
  /// On-device augmentation of the training batches (never of validation or evaluate): each image
  /// of x (N, C, H, W) is shifted by an integer uniform in [-augment_shift, augment_shift] pixels
  /// along each axis and rotated about its centre by an angle uniform in [-augment_rotation,
  /// augment_rotation) degrees (bilinear sampling; outside the image, a 0 pixel of u8 data, or 0
  /// for f32 data). The randomness is Philox keyed by the model's RNG state (compile's seed and a
  /// per-step offset), so the CPU and CUDA backends see the same images.
  bool augment = false;
  int augment_shift = 2;
  double augment_rotation = 10.0;
  /// Placement of the training rows (validation rows use Auto).
  DataPlacement data_placement = DataPlacement::Auto;
};

struct CUDL_API EvalResult {
  std::map<std::string, double> metrics;  // "loss", "accuracy", ...
};

/// Metrics of one batch ("loss", "accuracy", ...), as train_on_batch and test_on_batch return them.
using Logs = std::map<std::string, double>;

/// Description of one training program's memory plan, reported before step 1.
struct CUDL_API PlanReport {
  int64_t batch_size = 0;
  size_t arena_bytes = 0;         // exact peak of the planned intermediate arena
  size_t intermediate_bytes = 0;  // what the intermediates would need without reuse
  size_t param_bytes = 0, grad_bytes = 0, state_bytes = 0, input_bytes = 0;
  /// Of intermediate_bytes: the activations and their gradients (what the batch flows through), and
  /// the 16-bit copies of weights and their gradients that bf16/f16 make in the step (the weights'
  /// copies only where a weight is not trained, or a second 16-bit type of one is needed).
  size_t activation_bytes = 0, weight_copy_bytes = 0;
  /// bf16/f16 training: the persistent 16-bit copies of the trained weights, written by the optimizer
  /// step with their f32 masters and read by the next step's forward (not in the arena, not in state_bytes).
  size_t persistent_copy_bytes = 0;
  int kernels_per_step = 0;
  Precision precision = Precision::f32;  // the compile option; on the CPU backend it changes nothing
  std::map<std::string, Precision> layer_precision;  // layers compiled with Layer::set_precision
  Device device = Device::cpu();
  std::string str() const;
};

/// A model owns the graph of layer applications it was built from (its Vars hold them): dropping
/// the model (and the Vars and layers the caller kept) frees its layers, parameters and memory.
/// Layer names are unique within a model; unnamed layers are named "<kind><n>" by the model.
class CUDL_API Model {
 public:
  /// Functional model from inputs to outputs (one output). Several inputs (e.g. token ids and a
  /// key-padding mask) take their data as Dataset::xs, or a vector of tensors in the per-batch
  /// calls, in the order given here; fit gathers every input's rows of a batch on the device.
  Model(const std::vector<Var>& inputs, const std::vector<Var>& outputs, const std::string& name = "model");
  Model(const Var& input, const Var& output, const std::string& name = "model");
  virtual ~Model();
  Model(Model&&) noexcept;
  Model& operator=(Model&&) noexcept;

  /// Creates the parameters (on first use of each layer) and optimizer state on the device and
  /// plans the training step for the default batch of 32 (plan_report); nothing else is allocated.
  /// Layers frozen now (set_trainable(false)) stay frozen in this model until the next compile.
  void compile(const CompileOptions& options);
  History fit(const Dataset& train, const FitOptions& options = {});
  EvalResult evaluate(const Dataset& data, int64_t batch_size = 256, DataPlacement placement = DataPlacement::Auto);
  /// Model outputs for the rows of `data` (u8 images normalised with data.mean and data.std) as a
  /// host tensor (N, ...).
  Tensor predict(const Dataset& data, int64_t batch_size = 256);
  /// Model outputs for x (N, ...): f32, or u8 read as x / 255.
  Tensor predict(const Tensor& x, int64_t batch_size = 256);
  /// Multi-input models: one tensor per input, in the model's input order.
  Tensor predict(const std::vector<Tensor>& xs, int64_t batch_size = 256);

  /// One training step on the batch (x, y) (host or device tensors; x f32 or u8 read as x / 255):
  /// copies it into the step program's input buffers and runs forward, backward and the optimizer
  /// (one CUDA-graph launch on a GPU). Returns the batch's loss and metrics, or nothing when
  /// read_logs is false (no host synchronisation then; read them later with last_batch_logs()).
  Logs train_on_batch(const Tensor& x, const Tensor& y, bool read_logs = true);
  /// Multi-input models: one tensor per input, in the model's input order.
  Logs train_on_batch(const std::vector<Tensor>& xs, const Tensor& y, bool read_logs = true);
  /// The loss and metrics of one batch, without training.
  Logs test_on_batch(const Tensor& x, const Tensor& y);
  Logs test_on_batch(const std::vector<Tensor>& xs, const Tensor& y);
  /// Model outputs for one batch, as a host tensor.
  Tensor predict_on_batch(const Tensor& x);
  Tensor predict_on_batch(const std::vector<Tensor>& xs);
  /// The logs of the last train_on_batch (synchronises with the device).
  Logs last_batch_logs() const;

  /// Layers, output shapes, parameter counts, planned memory.
  std::string summary() const;
  /// The plan of the last training program built (compile: batch 32; fit and train_on_batch: theirs).
  const PlanReport& plan_report() const;
  /// The plan of the training step for batches of `batch` rows (builds the graph and plans it;
  /// allocates nothing).
  PlanReport plan(int64_t batch) const;

  /// Current learning rate (written to device memory; a replayed CUDA graph sees the change).
  double learning_rate() const;
  /// f16 training: the current dynamic loss scale (CompileOptions::loss_scale), read from the
  /// device (a host synchronisation: read it after an epoch, not per step); 1 when the model does
  /// not scale its loss (no f16 layer).
  double loss_scale() const;
  /// f16 training: the optimizer steps skipped because the gradients overflowed, since compile (or
  /// as restored from a checkpoint); read from the device like loss_scale(); 0 without f16.
  int64_t skipped_steps() const;
  void set_learning_rate(double lr);
  void stop_training() { stop_ = true; }
  bool stop_requested() const { return stop_; }
  /// Inside fit (from Callback::on_batch_end): the running means of the loss and metrics over the rows
  /// of the current epoch trained so far, as Keras passes to on_train_batch_end. Each call reads the
  /// device accumulators (a synchronisation); nothing reads them per batch unless a callback asks.
  /// Throws when no batch of the current epoch has run.
  Logs batch_logs();
  Device device() const;
  /// The communicator of the last compile (data-parallel training), or null.
  const std::shared_ptr<distributed::Communicator>& communicator() const;
  /// The optimizer of the last compile (throws when the model is not compiled).
  const Optimizer& optimizer() const;
  int64_t step() const;
  /// Sets the step counter shown in logs (the optimizer's own step lives in its state tensors).
  void set_step(int64_t step);
  /// Epochs completed over every fit() call; each epoch's shuffle is derived from it.
  int64_t epoch() const;
  void set_epoch(int64_t epoch);
  int64_t parameter_count() const;
  /// The model's layers in application order (a layer applied twice appears once).
  std::vector<LayerPtr> layers() const;
  /// The layer named `name`; throws listing the model's layer names when there is none.
  LayerPtr layer(const std::string& name) const;
  /// Sets trainable on every layer of the model (takes effect for models compiled afterwards).
  void set_trainable(bool trainable);
  const std::string& name() const;

  /// Every layer's get_weights(), concatenated in layers() order.
  std::vector<Tensor> get_weights() const;
  /// The reverse of get_weights(); checks every count and shape before copying anything.
  void set_weights(const std::vector<Tensor>& weights);

  /// Named tensors of the complete training state: parameters ("layer.param"), buffers,
  /// optimizer slots ("optim.layer.param.m"), counters ("optim.hyper": lr and the step t, "rng"),
  /// and in f16 the loss scaler's state ("amp.scale": scale, clean steps, skipped steps, last
  /// step overflowed). Used by checkpoints.
  std::vector<std::pair<std::string, Tensor>> state_tensors();
  /// Per-op timing table of the last fit/evaluate with profiling on (set_profiling(true)).
  void set_profiling(bool on);
  std::string profile_table() const;

  struct Impl;

 protected:
  friend struct detail::ModelInternals;
  Model();
  Impl& impl() const;  // throws when the model was moved from
  std::unique_ptr<Impl> impl_;
  bool stop_ = false;
};

/// A stack of layers; the input shape is given once.
class CUDL_API Sequential : public Model {
 public:
  Sequential(const Shape& input_shape, const std::vector<LayerPtr>& layers, const std::string& name = "sequential",
             DType input_dtype = DType::f32);
};

/// Averages the predictions of several compiled models (an ensemble) on `data`.
CUDL_API Tensor ensemble_predict(const std::vector<Model*>& models, const Dataset& data, int64_t batch_size = 256);

}  // namespace cudl
