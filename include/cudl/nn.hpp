// cudl/nn.hpp — layers and symbolic variables for describing models (Sequential or functional).
// Shapes here are per sample: the batch dimension is added when the model is compiled.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cudl/tensor.hpp"

/// Declares a builder-style option: `opts.stride(2)` sets it (and returns the options), `opts.stride()`
/// reads it. `CUDL_ARG(int, stride) = 1;` gives the default.
#define CUDL_ARG(T, name)                   \
 public:                                    \
  auto& name(const T& value) {              \
    name##_ = value;                        \
    return *this;                           \
  }                                         \
  const T& name() const { return name##_; } \
                                            \
 private:                                   \
  T name##_

namespace cudl {

namespace detail {
struct VarNode;      // one layer application (or an Input), holding its inputs (src/nn/var_node.hpp)
struct LayerAccess;  // what models see of a layer beyond the public API (src/nn/layer_impl.hpp)
}  // namespace detail

class Layer;

/// A symbolic tensor: an input or the output of a layer applied to other Vars. A Var holds the
/// layer that produced it and that layer's input Vars (Keras functional semantics); nothing is
/// recorded anywhere else, so a model built from Vars owns exactly what it reaches.
class CUDL_API Var {
 public:
  Var() = default;
  const Shape& shape() const;  // per-sample shape
  DType dtype() const;
  bool defined() const { return node_ != nullptr; }

 private:
  friend class Layer;
  friend class Model;
  friend CUDL_API Var Input(const Shape&, DType, const std::string&);
  std::shared_ptr<const detail::VarNode> node_;
};

/// A model input with per-sample shape `shape` (f32 features, or i32 labels/indices).
CUDL_API Var Input(const Shape& shape, DType dtype = DType::f32, const std::string& name = "input");
/// Elementwise sum of two Vars of the same shape (residual connections: add(x, f(x))).
CUDL_API Var add(const Var& a, const Var& b);

/// How a layer's parameters start: zeros, ones, normal(0, 0.05), uniform(-0.05, 0.05),
/// glorot_uniform, glorot_normal, he_uniform, he_normal, orthogonal (Keras's: the (rows, cols) matrix,
/// rows = the first dim, with orthonormal columns when rows >= cols, else orthonormal rows; QR of a
/// normal matrix drawn and factorised on the host, so every device gets the same bits). Drawn from
/// Philox; the stream is a function of the model's seed, the layer's position in the model and the
/// parameter's name only.
enum class Init { Zeros, Ones, Normal, Uniform, GlorotUniform, GlorotNormal, HeUniform, HeNormal, Orthogonal };
CUDL_API Init init_from_name(const std::string& name);

/// How a model stores and computes (CompileOptions::precision; docs/performance.md "Mixed precision").
/// - f32: fp32 storage, fp32 products and sums.
/// - tf32: fp32 storage; on a CUDA device the GEMMs and convolutions (Dense, matmul, the conv
///   family, the recurrent layers' GEMMs, the unfused attention's GEMMs) read each input rounded to
///   TF32 (10 mantissa bits, about 5e-4 relative error per input) and accumulate in fp32, at several
///   times the fp32 peak (H100: 495 vs 67 TFLOP/s dense). cudl's own kernels compute in fp32.
/// - bf16 / f16: mixed precision. Activations, their gradients and the GEMM inputs of the ops that
///   support it (ops/precision.hpp lists them) are stored in 16 bits; every op computes in fp32
///   (each load widens, each store rounds to nearest even). Parameters, their gradients, optimizer
///   state, losses, softmax and normalisation statistics stay fp32; the optimizer step writes each
///   trained weight's 16-bit copy with its fp32 master, and the next step's GEMMs read that copy
///   (refreshed first when the weights were written since). f16 adds dynamic loss scaling on the device.
///   The CPU backend emulates the 16-bit storage exactly, so it trains in every mode.
/// default_precision() is f32 unless the environment has CUDL_ALLOW_TF32=1 (0 or unset: f32;
/// anything else is an error naming it).
enum class Precision { f32, tf32, bf16, f16 };
CUDL_API Precision default_precision();
CUDL_API const char* precision_name(Precision p);
/// "f32" (or "fp32", "float32"), "tf32", "bf16" (or "bfloat16"), "f16" (or "fp16", "float16");
/// anything else throws naming the value.
CUDL_API Precision parse_precision(const std::string& name);
/// The storage type of activations in precision `p`: f32 for f32 and tf32.
CUDL_API DType precision_storage(Precision p);

/// Base of every layer. A layer object may be used in several models: they then share its
/// parameters (created when the first model that uses it is compiled).
class CUDL_API Layer : public std::enable_shared_from_this<Layer> {
 public:
  virtual ~Layer();
  Layer(const Layer&) = delete;
  Layer& operator=(const Layer&) = delete;

  /// Functional use: y = layer(x). Throws for a layer with several outputs (use apply).
  Var operator()(const Var& x);
  Var operator()(const std::vector<Var>& xs);
  /// Functional use returning every output of the layer: {y} for most layers; a recurrent layer
  /// with return_state gives {output, h} ({output, h, c} for an LSTM), as Keras's list.
  std::vector<Var> apply(const Var& x);
  std::vector<Var> apply(const std::vector<Var>& xs);

  /// The name given at construction, or the one the first model using the layer gave it
  /// ("dense1", "dense2", ... numbered per model and per kind); the kind until then.
  const std::string& name() const { return name_.empty() ? kind_ : name_; }
  const std::string& kind() const { return kind_; }
  /// Per-sample output shape for these per-sample input shapes; throws naming the layer and shapes.
  virtual Shape output_shape(const std::vector<Shape>& inputs) const = 0;
  /// Per-sample shapes of every output (apply); {output_shape(inputs)} for one-output layers.
  virtual std::vector<Shape> output_shapes(const std::vector<Shape>& inputs) const { return {output_shape(inputs)}; }

  /// Parameters by name ("kernel", "bias", "gamma", ...), created when a model using the layer is compiled.
  /// The mutable access counts as a write: models training in bf16/f16 refresh their 16-bit copies of
  /// these weights before their next step (write through the returned tensors before that step).
  std::vector<std::pair<std::string, Tensor>>& params() {
    ++weights_version_;
    return params_;
  }
  const std::vector<std::pair<std::string, Tensor>>& params() const { return params_; }
  /// Non-trainable state (running statistics), saved in checkpoints.
  std::vector<std::pair<std::string, Tensor>>& buffers() { return buffers_; }
  const std::vector<std::pair<std::string, Tensor>>& buffers() const { return buffers_; }
  /// Host copies of the parameters then the buffers, in the order of params() and buffers() (Keras).
  std::vector<Tensor> get_weights() const;
  /// Copies `weights` (the order and shapes of get_weights()) into the layer's tensors; checks
  /// every count and shape first, so a mismatch changes nothing.
  void set_weights(const std::vector<Tensor>& weights);

  bool trainable() const { return trainable_; }
  /// Frozen layers keep their parameters fixed (no gradient, no update) in models compiled while
  /// they are frozen; a model compiled earlier keeps the setting it was compiled with.
  void set_trainable(bool t) { trainable_ = t; }
  /// L1/L2 penalty on this layer's weights ("kernel"), added to their gradients.
  void set_regularizer(float l1, float l2) {
    l1_ = l1;
    l2_ = l2;
  }
  float l1() const { return l1_; }
  float l2() const { return l2_; }
  /// This layer's GEMMs/convolutions (forward and backward) in `p` whatever the model's
  /// CompileOptions::precision, in models compiled afterwards: e.g. a classifier kept in f32 while
  /// the rest runs on TF32 tensor cores. std::nullopt: the model's precision (the default).
  void set_precision(std::optional<Precision> p) { precision_ = p; }
  std::optional<Precision> precision() const { return precision_; }

 protected:
  Layer(std::string kind, std::string name);
  /// "layer dense1 (dense)" or "layer (dense)" before a name is given: for error messages.
  std::string who() const;

  std::string kind_, name_;
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, Tensor>> buffers_;
  bool trainable_ = true;
  float l1_ = 0, l2_ = 0;
  std::optional<Precision> precision_;

 private:
  friend struct detail::LayerAccess;
  bool auto_named_ = false;
  uint64_t weights_version_ = 0;  // advanced by every write of the parameters (host or training step)
};

using LayerPtr = std::shared_ptr<Layer>;

/// Options of a Dense layer: `DenseOptions(128).activation("relu").name("fc1")`.
struct CUDL_API DenseOptions {
  explicit DenseOptions(int64_t units) : units_(units) {}
  CUDL_ARG(int64_t, units);
  /// "", relu or gelu_tanh (fused into the GEMM), or any activation name (a separate op).
  CUDL_ARG(std::string, activation);
  CUDL_ARG(bool, use_bias) = true;
  CUDL_ARG(Init, kernel_initializer) = Init::GlorotUniform;
  CUDL_ARG(std::string, name);
};

/// Options of a Conv2d layer: `Conv2dOptions(16, 3).padding(1).use_bias(false)`.
struct CUDL_API Conv2dOptions {
  Conv2dOptions(int64_t filters, int kernel_size) : filters_(filters), kernel_size_(kernel_size) {}
  CUDL_ARG(int64_t, filters);
  CUDL_ARG(int, kernel_size);
  CUDL_ARG(int, stride) = 1;
  CUDL_ARG(int, padding) = 0;
  CUDL_ARG(int, dilation) = 1;
  CUDL_ARG(int, groups) = 1;
  /// "" or relu (fused), or any activation name (a separate op).
  CUDL_ARG(std::string, activation);
  CUDL_ARG(bool, use_bias) = true;
  CUDL_ARG(Init, kernel_initializer) = Init::HeUniform;
  CUDL_ARG(std::string, name);
};

namespace layers {
/// Fully connected: y = act(x·Wᵀ + b); x (..., in) → (..., units).
CUDL_API LayerPtr Dense(const DenseOptions& options);
CUDL_API LayerPtr Dense(int64_t units, const std::string& activation = "");
/// 2-D convolution over (C, H, W) samples.
CUDL_API LayerPtr Conv2d(const Conv2dOptions& options);
CUDL_API LayerPtr Conv2d(int64_t filters, int kernel_size, const std::string& activation = "");
/// Pooling windows of kernel x kernel; stride 0 means the kernel size.
CUDL_API LayerPtr MaxPool2d(int kernel, int stride = 0, int padding = 0, const std::string& name = "");
CUDL_API LayerPtr AvgPool2d(int kernel, int stride = 0, int padding = 0, const std::string& name = "");
CUDL_API LayerPtr GlobalAvgPool(const std::string& name = "");
/// Batch normalisation over the channel dim 1: batch statistics while training (running averages
/// updated with `momentum`), running statistics for evaluation and prediction. Frozen
/// (set_trainable(false) before compile, as Keras's trainable=False) it runs in inference mode in
/// training too: running statistics, not updated, and gradients still pass to the layers below.
/// `synchronized` (Keras's SyncBatchNormalization): in data-parallel training the batch statistics
/// are those of the global batch, every rank's rows (the per-rank sums all-reduced inside the step,
/// and the backward pass's sums too), so N ranks normalise as one device would; on one device it
/// is plain batch norm. f32 activations only (docs/distributed.md).
CUDL_API LayerPtr BatchNorm(float momentum = 0.1f, float eps = 1e-5f, const std::string& name = "",
                            bool synchronized = false);
CUDL_API LayerPtr LayerNorm(float eps = 1e-5f, const std::string& name = "");
CUDL_API LayerPtr Dropout(float rate, const std::string& name = "");
CUDL_API LayerPtr Flatten(const std::string& name = "");
CUDL_API LayerPtr Reshape(const Shape& shape, const std::string& name = "");
/// relu, leaky_relu (alpha), elu (alpha), gelu, gelu_tanh, silu, sigmoid, tanh, softplus, softmax,
/// log_softmax.
CUDL_API LayerPtr Activation(const std::string& name, float alpha = 0.01f, const std::string& layer_name = "");
}  // namespace layers

// --- sequence layers (src/nn/sequence.cpp) ---
namespace layers {
/// Embedding: i32 indices (..., ) in [0, vocab) -> their rows of a learned (vocab, dim) table,
/// (...) -> (..., dim) (Keras Embedding; initialised uniform(-0.05, 0.05)). The gradient is a
/// deterministic scatter-add (GatherBackward): the same bits on every run and on CPU and CUDA.
/// An index outside [0, vocab) throws on the CPU and gives NaN rows on CUDA.
CUDL_API LayerPtr Embedding(int64_t vocab, int64_t dim, const std::string& name = "");
/// Keras's Embedding(mask_zero=True) mask as a layer: i32 token ids (...) -> f32 (...), 1 where the
/// id is not 0 (padding), else 0: e.g. the key-padding mask of a MultiHeadAttention with key_mask,
/// computed on the device from the tokens themselves.
CUDL_API LayerPtr PaddingMask(const std::string& name = "");
/// Learned positional embedding: x (time, dim) per sample -> x + table[:time], with a learned
/// (max_len, dim) table (time <= max_len; initialised uniform(-0.05, 0.05)), broadcast over the batch.
CUDL_API LayerPtr PositionalEmbedding(int64_t max_len, int64_t dim, const std::string& name = "");
/// Joins its inputs along `axis` (Keras: an axis of the batched tensor, negative from the back;
/// not the batch axis 0); every other dim must agree.
CUDL_API LayerPtr Concatenate(int axis = -1, const std::string& name = "");
/// The part [start, start + length) of its input along `axis` (an axis of the batched tensor as in
/// Concatenate).
CUDL_API LayerPtr Slice(int axis, int64_t start, int64_t length, const std::string& name = "");
}  // namespace layers

/// Splits x along `axis` (of the batched tensor, as layers::Concatenate) into consecutive parts of
/// the given sizes, which must add up to that dim: one layers::Slice per part.
CUDL_API std::vector<Var> split(const Var& x, const std::vector<int64_t>& sizes, int axis = -1);

/// Options of a MultiHeadAttention layer (Keras semantics): `MultiHeadAttentionOptions(4, 16).causal(true)`.
/// Inputs: query (Tq, Eq), then optionally value (Tk, Ev) and key (Tk, Ek) (self-attention with one
/// input; key defaults to value), then, with key_mask(true), a (Tk) f32 mask: keys where it is 0 are
/// padding and get no weight (a query with no key left gets 0). Output (Tq, output_dim).
struct CUDL_API MultiHeadAttentionOptions {
  MultiHeadAttentionOptions(int64_t heads, int64_t key_dim) : heads_(heads), key_dim_(key_dim) {}
  CUDL_ARG(int64_t, heads);
  CUDL_ARG(int64_t, key_dim);
  /// Per-head size of the values; 0: key_dim.
  CUDL_ARG(int64_t, value_dim) = 0;
  /// Features of the output projection; 0: the query's feature size (Keras).
  CUDL_ARG(int64_t, output_dim) = 0;
  /// Dropout on the attention weights while training.
  CUDL_ARG(float, dropout) = 0.f;
  CUDL_ARG(bool, use_bias) = true;
  /// Query i attends to keys j <= i only (Keras's use_causal_mask).
  CUDL_ARG(bool, causal) = false;
  /// The last input is a (Tk) key-padding mask.
  CUDL_ARG(bool, key_mask) = false;
  /// CUDA engine: "auto" (cuDNN's fused attention for the 16-bit calls it takes, else the fused
  /// kernel when heads are at most 128 wide, else unfused), "fused", "unfused" or "cudnn" (forward
  /// on cuDNN's SDPA, an error for a call it cannot take; backward on the fused kernel).
  CUDL_ARG(std::string, engine) = "auto";
  /// Kernels of the four projections (glorot_uniform over each (out, in) matrix); biases start at 0.
  CUDL_ARG(Init, kernel_initializer) = Init::GlorotUniform;
  CUDL_ARG(std::string, name);
};

/// Options of the recurrent layers: `RecurrentOptions(128).return_sequences(true)`. Input (T, F)
/// samples, i.e. (batch, time, features); zero initial state; tanh / sigmoid (Keras's defaults).
/// Parameters: kernel (G*H, F) glorot_uniform, recurrent_kernel (G*H, H) orthogonal, bias (G*H)
/// zeros (the LSTM's forget-gate quarter ones), and for a GRU recurrent_bias (G*H) zeros; G*H rows in
/// Keras's gate order (LSTM i, f, c, o; GRU z, r, h), each matrix the transpose of Keras's.
struct CUDL_API RecurrentOptions {
  explicit RecurrentOptions(int64_t units) : units_(units) {}
  CUDL_ARG(int64_t, units);
  /// Output every step's state (T, units) instead of the last one (units).
  CUDL_ARG(bool, return_sequences) = false;
  /// Keras's return_state: Layer::apply gives {output, h_T} ({output, h_T, c_T} for an LSTM), the
  /// final states (units) each; gradients flow back through them (e.g. an encoder's states feeding
  /// a decoder). Such a layer has several outputs: apply it with Layer::apply, not operator().
  CUDL_ARG(bool, return_state) = false;
  CUDL_ARG(std::string, name);
};

namespace layers {
/// Multi-head scaled dot-product attention with query/key/value and output projections.
CUDL_API LayerPtr MultiHeadAttention(const MultiHeadAttentionOptions& options);
CUDL_API LayerPtr MultiHeadAttention(int64_t heads, int64_t key_dim, bool causal = false);
/// h_t = tanh(x_t·W + h_{t-1}·U + b).
CUDL_API LayerPtr SimpleRNN(const RecurrentOptions& options);
CUDL_API LayerPtr SimpleRNN(int64_t units, bool return_sequences = false);
/// Keras's LSTM (gates i, f, c, o; unit forget bias).
CUDL_API LayerPtr LSTM(const RecurrentOptions& options);
CUDL_API LayerPtr LSTM(int64_t units, bool return_sequences = false);
/// Keras's GRU with reset_after = true (gates z, r, h; input and recurrent biases).
CUDL_API LayerPtr GRU(const RecurrentOptions& options);
CUDL_API LayerPtr GRU(int64_t units, bool return_sequences = false);
}  // namespace layers

// --- generative models (src/nn/generative.cpp) ---

/// Options of a Conv2dTranspose layer: `Conv2dTransposeOptions(64, 4).stride(2).padding(1)`.
/// Output size per axis: (in - 1)*stride - 2*padding + dilation*(kernel - 1) + 1 + output_padding,
/// output_padding in [0, stride). Kernel (C_in, filters/groups, k, k), as PyTorch's.
struct CUDL_API Conv2dTransposeOptions {
  Conv2dTransposeOptions(int64_t filters, int kernel_size) : filters_(filters), kernel_size_(kernel_size) {}
  CUDL_ARG(int64_t, filters);
  CUDL_ARG(int, kernel_size);
  CUDL_ARG(int, stride) = 1;
  CUDL_ARG(int, padding) = 0;
  CUDL_ARG(int, output_padding) = 0;
  CUDL_ARG(int, dilation) = 1;
  CUDL_ARG(int, groups) = 1;
  /// "" or any activation name (a separate op).
  CUDL_ARG(std::string, activation);
  CUDL_ARG(bool, use_bias) = true;
  CUDL_ARG(Init, kernel_initializer) = Init::GlorotUniform;
  CUDL_ARG(std::string, name);
};

namespace layers {
/// Transposed 2-D convolution over (C, H, W) samples: the data gradient of a Conv2d (cuDNN's
/// backward-data operation on CUDA, with the im2col/col2im engine as fallback).
CUDL_API LayerPtr Conv2dTranspose(const Conv2dTransposeOptions& options);
CUDL_API LayerPtr Conv2dTranspose(int64_t filters, int kernel_size, int stride = 1, int padding = 0,
                                  int output_padding = 0, const std::string& activation = "");
/// Repeats (nearest) or interpolates (bilinear, half-pixel centres as Keras and PyTorch) (C, H, W)
/// samples to (C, H*size, W*size).
CUDL_API LayerPtr UpSampling2d(int size = 2, const std::string& interpolation = "nearest",
                               const std::string& name = "");
/// A noise source: outputs (batch, ...shape) samples of N(mean, stddev^2) drawn on the device from
/// the model's RNG state (Philox: the same values on CPU and CUDA), fresh at every run of every
/// program of the model (training, evaluation, prediction): the step advances the state, so a
/// captured step needs no host copy for its noise. Only its input's batch size is used (e.g. a
/// (1)-feature placeholder input).
CUDL_API LayerPtr RandomNormal(const Shape& shape, float mean = 0.f, float stddev = 1.f, const std::string& name = "");
}  // namespace layers

}  // namespace cudl
