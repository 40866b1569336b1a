// python/src/module.cpp — cudl._cudl: pybind11 bindings of the public C++ API (include/cudl/*.hpp)
// that the pure-Python package (python/cudl/) builds its Keras-compatible front on.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "cudl/cudl.hpp"

namespace py = pybind11;
using namespace cudl;

namespace {

// --- tensors <-> numpy (copies; a fit converts its data once) ----------------------------------

DType dtype_of_array(const py::array& a) {
  const char k = a.dtype().kind();
  const auto size = a.dtype().itemsize();
  if (k == 'f' && size == 4) return DType::f32;
  if (k == 'i' && size == 4) return DType::i32;
  if (k == 'i' && size == 8) return DType::i64;
  if (k == 'u' && size == 1) return DType::u8;
  throw py::value_error("cudl: unsupported numpy dtype " + std::string(py::str(a.dtype())) +
                        " (float32, int32, int64 or uint8)");
}

Tensor tensor_from_numpy(const py::array& in) {
  py::array a = py::array::ensure(in, py::array::c_style);
  if (!a) throw py::value_error("cudl: cannot make a C-contiguous array of the input");
  const DType dt = dtype_of_array(a);
  std::vector<int64_t> dims(a.shape(), a.shape() + a.ndim());
  Tensor t = Tensor::empty(Shape(dims), dt);
  if (t.nbytes()) std::memcpy(t.data(), a.data(), t.nbytes());
  return t;
}

py::dtype numpy_dtype(DType dt) {
  switch (dt) {
    case DType::f32: return py::dtype::of<float>();
    case DType::i32: return py::dtype::of<int32_t>();
    case DType::i64: return py::dtype::of<int64_t>();
    case DType::u8: return py::dtype::of<uint8_t>();
    case DType::f16: return py::dtype("float16");
    case DType::bf16: break;
  }
  throw py::type_error(std::string("cudl: no numpy dtype for ") + dtype_name(dt));
}

py::array tensor_to_numpy(const Tensor& t) {
  if (!t.defined()) throw py::value_error("cudl: the tensor is undefined");
  Tensor host = t.device().is_cpu() ? t : t.to(Device::cpu());
  std::vector<py::ssize_t> dims(host.shape().dims().begin(), host.shape().dims().end());
  py::array out(numpy_dtype(host.dtype()), dims);
  if (host.nbytes()) std::memcpy(out.mutable_data(), host.data(), host.nbytes());
  return out;
}

// --- DLPack (the stable v0.8 ABI, declared here: Debian ships no dlpack.h) ---------------------

struct DLDevice {
  int32_t device_type;  // kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;  // kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // null: compact row-major
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor*);
};

DLDataType dl_dtype(DType dt) {
  switch (dt) {
    case DType::f32: return {2, 32, 1};
    case DType::f16: return {2, 16, 1};
    case DType::bf16: return {4, 16, 1};
    case DType::i32: return {0, 32, 1};
    case DType::i64: return {0, 64, 1};
    case DType::u8: return {1, 8, 1};
  }
  throw py::type_error("cudl: no DLPack type for this dtype");
}

DType dtype_of_dl(DLDataType t) {
  for (DType d : {DType::f32, DType::f16, DType::bf16, DType::i32, DType::i64, DType::u8}) {
    const DLDataType e = dl_dtype(d);
    if (e.code == t.code && e.bits == t.bits && t.lanes == 1) return d;
  }
  throw py::value_error("cudl.from_dlpack: unsupported DLPack dtype (code " + std::to_string(t.code) + ", " +
                        std::to_string(t.bits) + " bits, " + std::to_string(t.lanes) +
                        " lanes); cudl has float32/16, bfloat16, int32/64, uint8");
}

/// What an exported capsule keeps alive: the tensor (its storage) and the shape array.
struct DLExport {
  Tensor tensor;
  std::vector<int64_t> shape;
  DLManagedTensor managed;
};

/// A DLPack capsule viewing t's memory (no copy); the capsule shares t's storage until the consumer
/// (or, unconsumed, the capsule) calls the deleter.
py::capsule to_dlpack(const Tensor& t) {
  if (!t.defined()) throw py::value_error("cudl: __dlpack__ of an undefined tensor");
  auto* ex = new DLExport{t, t.shape().dims(), {}};
  DLTensor& d = ex->managed.dl_tensor;
  d.data = t.data();
  d.device = t.device().is_cuda() ? DLDevice{2, t.device().index()} : DLDevice{1, 0};
  d.ndim = static_cast<int32_t>(ex->shape.size());
  d.dtype = dl_dtype(t.dtype());
  d.shape = ex->shape.data();
  d.strides = nullptr;
  d.byte_offset = 0;
  ex->managed.manager_ctx = ex;
  ex->managed.deleter = [](DLManagedTensor* m) { delete static_cast<DLExport*>(m->manager_ctx); };
  return py::capsule(&ex->managed, "dltensor", [](PyObject* cap) {
    // Unconsumed capsules still own the tensor; consumers rename theirs to "used_dltensor".
    if (PyCapsule_IsValid(cap, "dltensor")) {
      auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, "dltensor"));
      if (m && m->deleter) m->deleter(m);
    }
  });
}

/// A cudl tensor with a copy of a DLPack producer's data (an object with __dlpack__, or a capsule), on
/// the producer's device: CPU (and pinned host) memory to a CPU tensor, CUDA memory to a tensor on
/// the same CUDA device (tensor_copy_of waits for the device's queued work first). cudl tensors own
/// their storage, so the data is copied, once.
Tensor from_dlpack(const py::object& obj) {
  py::object cap = obj;
  if (py::hasattr(obj, "__dlpack__")) cap = obj.attr("__dlpack__")();
  if (!PyCapsule_IsValid(cap.ptr(), "dltensor"))
    throw py::type_error("cudl.from_dlpack: expected an object with __dlpack__ or an unused DLPack capsule");
  auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
  const DLTensor& d = m->dl_tensor;
  struct Release {  // the producer's memory is released whatever happens below
    DLManagedTensor* m;
    ~Release() {
      if (m->deleter) m->deleter(m);
    }
  } release{m};
  PyCapsule_SetName(cap.ptr(), "used_dltensor");
  const int32_t type = d.device.device_type;
  if (type != 1 && type != 2 && type != 3)
    throw py::value_error("cudl.from_dlpack: the tensor is on DLPack device type " + std::to_string(type) +
                          "; cudl imports CPU (1), CUDA (2) and CUDA host (3) tensors");
  Device device = Device::cpu();
  if (type == 2) {
    const int count = cuda_device_count();
    if (d.device.device_id < 0 || d.device.device_id >= count)
      throw py::value_error("cudl.from_dlpack: the tensor is on CUDA device " + std::to_string(d.device.device_id) +
                            " but cudl sees " + std::to_string(count) + " CUDA device(s)" +
                            (count == 0 ? " (" + cuda_unavailable_reason() + ")" : std::string()));
    device = Device::cuda(d.device.device_id);
  }
  const DType dt = dtype_of_dl(d.dtype);
  std::vector<int64_t> dims(d.shape, d.shape + d.ndim);
  Shape shape(dims);
  if (d.strides) {
    int64_t expect = 1;
    for (int i = d.ndim - 1; i >= 0; --i) {
      if (dims[i] != 1 && d.strides[i] != expect)
        throw py::value_error("cudl.from_dlpack: the tensor is not contiguous (shape " + shape.str() +
                              "); make it contiguous first");
      expect *= dims[i];
    }
  }
  return tensor_copy_of(static_cast<const char*>(d.data) + d.byte_offset, shape, dt, device);
}

Shape shape_of(const std::vector<int64_t>& dims) { return Shape(dims); }
std::vector<int64_t> dims_of(const Shape& s) { return s.dims(); }

// --- callbacks ---------------------------------------------------------------------------------

/// Base of Python callbacks: fit calls the Python methods on_train_begin(), on_epoch_begin(epoch),
/// on_epoch_end(epoch, logs), on_train_batch_end(batch) and on_train_end() when a subclass defines them
/// (on_train_batch_end reads the batch logs through Model.batch_logs only when the Keras callback it
/// adapts wants them: each read synchronises with the device).
class PyCallback : public Callback {
 public:
  void on_train_begin(Model&) override { call("on_train_begin"); }
  void on_epoch_begin(Model& m, int epoch) override {
    epoch_first_step_ = m.step();
    call("on_epoch_begin", epoch);
  }
  void on_epoch_end(Model&, int epoch, const std::map<std::string, double>& logs) override {
    call("on_epoch_end", epoch, logs);
  }
  void on_batch_end(Model&, int64_t step) override { call("on_train_batch_end", step - epoch_first_step_ - 1); }
  void on_train_end(Model&) override { call("on_train_end"); }

 private:
  template <typename... Args>
  void call(const char* name, Args&&... args) {
    py::gil_scoped_acquire gil;
    py::function f = py::get_override(static_cast<const Callback*>(this), name);
    if (f) f(std::forward<Args>(args)...);
  }
  int64_t epoch_first_step_ = 0;
};

/// Checks for Ctrl-C (and any other pending signal handler) between batches: a raised
/// KeyboardInterrupt unwinds fit as an exception and reaches Python as itself.
class SignalCheck : public Callback {
 public:
  void on_batch_end(Model&, int64_t) override { check(); }
  void on_epoch_end(Model&, int, const std::map<std::string, double>&) override { check(); }

 private:
  static void check() {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  }
};

/// x: one array, or a list of arrays (one per input of a multi-input model).
Dataset make_dataset(const py::object& x, const py::object& y, float mean, float std) {
  Dataset d;
  if (py::isinstance<py::list>(x) || py::isinstance<py::tuple>(x)) {
    for (const py::handle& a : x) d.xs.push_back(tensor_from_numpy(a.cast<py::array>()));
  } else {
    d.x = tensor_from_numpy(x.cast<py::array>());
  }
  if (!y.is_none()) d.y = tensor_from_numpy(y.cast<py::array>());
  d.mean = mean;
  d.std = std;
  return d;
}

/// The model's training state beyond its weights: optimizer slots and hyper-parameters ("optim.*",
/// holding the step count Adam's bias correction reads) and the RNG state ("rng").
bool is_training_state(const std::string& name) { return name.rfind("optim.", 0) == 0 || name == "rng"; }

std::vector<std::pair<std::string, py::array>> training_state(Model& m) {
  std::vector<std::pair<std::string, py::array>> out;
  for (const auto& [name, t] : m.state_tensors())
    if (is_training_state(name)) out.emplace_back(name, tensor_to_numpy(t));
  return out;
}

/// Restores what training_state returned (read back from `source`): every tensor is checked against
/// the compiled model (names, shapes, dtypes, the optimizer's name) before anything is copied.
void load_training_state(Model& m, const std::vector<std::pair<std::string, py::array>>& named,
                         const std::string& optimizer, int64_t step, int64_t epoch, const std::string& source) {
  if (optimizer != m.optimizer().name())
    throw py::value_error(source + ": optimizer state of '" + optimizer + "' but the model is compiled with '" +
                          m.optimizer().name() + "'");
  if (step < 0 || epoch < 0)
    throw py::value_error(source + ": step " + std::to_string(step) + " and epoch " + std::to_string(epoch) +
                          " must be non-negative");
  std::map<std::string, Tensor> given;
  for (const auto& [name, a] : named) given.emplace(name, tensor_from_numpy(a));
  std::vector<std::pair<Tensor, Tensor>> copies;  // (model's tensor, saved tensor)
  for (auto& [name, t] : m.state_tensors()) {
    if (!is_training_state(name)) continue;
    auto it = given.find(name);
    if (it == given.end())
      throw py::value_error(source + ": optimizer state " + name + " of optimizer '" + optimizer +
                            "' is missing from the file");
    if (it->second.shape() != t.shape() || it->second.dtype() != t.dtype())
      throw py::value_error(source + ": optimizer state " + name + " has shape " + it->second.shape().str() + " " +
                            dtype_name(it->second.dtype()) + " but the model expects " + t.shape().str() + " " +
                            dtype_name(t.dtype()));
    copies.emplace_back(t, it->second);
    given.erase(it);
  }
  if (!given.empty())
    throw py::value_error(source + ": the file has optimizer state " + given.begin()->first +
                          " that the compiled model does not use (another architecture?)");
  for (auto& [dst, src] : copies) dst.copy_from(src);
  m.set_step(step);
  m.set_epoch(epoch);
}

/// The options Conv2d and Conv2dTranspose share, set on either's options object.
template <typename Options>
Options conv_options(Options o, int stride, int padding, int dilation, int groups, const std::string& act,
                     bool use_bias, Init init, const std::string& name) {
  o.stride(stride).padding(padding).dilation(dilation).groups(groups).activation(act).use_bias(use_bias);
  o.kernel_initializer(init).name(name);
  return o;
}

/// ValueError for cudl errors about arguments and shapes, RuntimeError for the rest. The rule, on
/// cudl's message: it names a shape or an argument value ("shape", "got", "expected", "must",
/// "unknown", "invalid", "mismatch", "empty") -> ValueError.
bool is_argument_error(const std::string& what) {
  static const char* const kWords[] = {"shape", " got ", "expected", "must ", "unknown", "invalid", "mismatch",
                                       "empty"};
  for (const char* w : kWords)
    if (what.find(w) != std::string::npos) return true;
  return false;
}

}  // namespace

PYBIND11_MODULE(_cudl, m) {
  m.doc() = "cudl C++ runtime bindings (use the cudl and cudl.keras packages)";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      const std::string what = e.what();
      if (is_argument_error(what))
        PyErr_SetString(PyExc_ValueError, what.c_str());
      else
        PyErr_SetString(PyExc_RuntimeError, what.c_str());
    }
  });
  m.def("_is_argument_error", &is_argument_error, "The rule that maps a cudl error message to ValueError");

  m.attr("__version__") = std::to_string(CUDL_VERSION_MAJOR) + "." + std::to_string(CUDL_VERSION_MINOR) + "." +
                          std::to_string(CUDL_VERSION_PATCH);
  m.def("built_with_cuda", &built_with_cuda);
  m.def("cuda_device_count", &cuda_device_count);
  m.def("cuda_unavailable_reason", &cuda_unavailable_reason);
  m.def("describe_devices", &describe_devices);

  // Tensor: a host or device array; numpy() and from_numpy() copy.
  py::class_<Tensor>(m, "Tensor")
      .def_static("from_numpy", &tensor_from_numpy, py::arg("array"))
      .def("numpy", &tensor_to_numpy)
      .def_property_readonly("shape", [](const Tensor& t) { return dims_of(t.shape()); })
      .def_property_readonly("dtype", [](const Tensor& t) { return std::string(dtype_name(t.dtype())); })
      .def_property_readonly("device", [](const Tensor& t) { return t.device().str(); })
      .def("to", [](const Tensor& t, const std::string& dev) { return t.to(Device::parse(dev)); })
      .def("__repr__", [](const Tensor& t) { return t.str(); })
      .def(
          "__dlpack__", [](const Tensor& t, const py::object& /*stream*/) { return to_dlpack(t); },
          py::arg("stream") = py::none(), "A DLPack capsule viewing this tensor's memory (no copy)")
      .def("__dlpack_device__", [](const Tensor& t) {
        return t.device().is_cuda() ? py::make_tuple(2, t.device().index()) : py::make_tuple(1, 0);
      });
  m.def("from_dlpack", &from_dlpack, py::arg("tensor"),
        "A cudl tensor with a copy of a DLPack tensor (torch, numpy, ...) on the producer's device (CPU or CUDA)");

  // Symbolic graph.
  py::class_<Var>(m, "Var")
      .def_property_readonly("shape", [](const Var& v) { return dims_of(v.shape()); })
      .def_property_readonly("dtype", [](const Var& v) { return std::string(dtype_name(v.dtype())); });
  m.def(
      "Input",
      [](const std::vector<int64_t>& shape, const std::string& dtype, const std::string& name) {
        return Input(shape_of(shape), dtype_from_name(dtype), name);
      },
      py::arg("shape"), py::arg("dtype") = "f32", py::arg("name") = "input");
  m.def("add", &add);

  py::enum_<Init>(m, "Init")
      .value("Zeros", Init::Zeros)
      .value("Ones", Init::Ones)
      .value("Normal", Init::Normal)
      .value("Uniform", Init::Uniform)
      .value("GlorotUniform", Init::GlorotUniform)
      .value("GlorotNormal", Init::GlorotNormal)
      .value("HeUniform", Init::HeUniform)
      .value("HeNormal", Init::HeNormal)
      .value("Orthogonal", Init::Orthogonal);
  m.def("init_from_name", &init_from_name);

  py::class_<Layer, LayerPtr>(m, "Layer")
      .def("__call__", [](Layer& l, const Var& x) { return l(x); })
      .def("__call__", [](Layer& l, const std::vector<Var>& xs) { return l(xs); })
      .def("apply", [](Layer& l, const std::vector<Var>& xs) { return l.apply(xs); },
           "Every output of the layer applied to xs ([output, h(, c)] for return_state)")
      .def_property_readonly("name", &Layer::name)
      .def_property_readonly("kind", &Layer::kind)
      .def("output_shape",
           [](const Layer& l, const std::vector<std::vector<int64_t>>& in) {
             std::vector<Shape> s;
             for (const auto& d : in) s.push_back(shape_of(d));
             return dims_of(l.output_shape(s));
           })
      .def("get_weights", &Layer::get_weights)
      .def("set_weights", &Layer::set_weights)
      .def("param_names",
           [](const Layer& l) {
             std::vector<std::string> n;
             for (const auto& p : l.params()) n.push_back(p.first);
             for (const auto& b : l.buffers()) n.push_back(b.first);
             return n;
           })
      .def_property("trainable", &Layer::trainable, &Layer::set_trainable)
      .def("set_regularizer", &Layer::set_regularizer);

  m.def(
      "dense",
      [](int64_t units, const std::string& act, bool use_bias, Init init, const std::string& name) {
        return layers::Dense(
            DenseOptions(units).activation(act).use_bias(use_bias).kernel_initializer(init).name(name));
      },
      py::arg("units"), py::arg("activation") = "", py::arg("use_bias") = true,
      py::arg("kernel_initializer") = Init::GlorotUniform, py::arg("name") = "");
  m.def(
      "conv2d",
      [](int64_t filters, int kernel, int stride, int padding, int dilation, int groups, const std::string& act,
         bool use_bias, Init init, const std::string& name) {
        return layers::Conv2d(
            conv_options(Conv2dOptions(filters, kernel), stride, padding, dilation, groups, act, use_bias, init, name));
      },
      py::arg("filters"), py::arg("kernel_size"), py::arg("stride") = 1, py::arg("padding") = 0,
      py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("activation") = "", py::arg("use_bias") = true,
      py::arg("kernel_initializer") = Init::HeUniform, py::arg("name") = "");
  m.def("max_pool2d", &layers::MaxPool2d, py::arg("kernel"), py::arg("stride") = 0, py::arg("padding") = 0,
        py::arg("name") = "");
  m.def("avg_pool2d", &layers::AvgPool2d, py::arg("kernel"), py::arg("stride") = 0, py::arg("padding") = 0,
        py::arg("name") = "");
  m.def("global_avg_pool", &layers::GlobalAvgPool, py::arg("name") = "");
  m.def("batch_norm", &layers::BatchNorm, py::arg("momentum") = 0.1f, py::arg("eps") = 1e-5f, py::arg("name") = "",
        py::arg("synchronized") = false);
  m.def("layer_norm", &layers::LayerNorm, py::arg("eps") = 1e-5f, py::arg("name") = "");
  m.def("dropout", &layers::Dropout, py::arg("rate"), py::arg("name") = "");
  m.def("flatten", &layers::Flatten, py::arg("name") = "");
  m.def(
      "reshape", [](const std::vector<int64_t>& s, const std::string& name) { return layers::Reshape(shape_of(s), name); },
      py::arg("shape"), py::arg("name") = "");
  m.def("activation", &layers::Activation, py::arg("name"), py::arg("alpha") = 0.01f, py::arg("layer_name") = "");

  // Sequence layers (include/cudl/nn.hpp, src/nn/sequence.cpp, recurrent.cpp, attention.cpp).
  m.def("embedding", &layers::Embedding, py::arg("vocab"), py::arg("dim"), py::arg("name") = "");
  m.def("padding_mask", &layers::PaddingMask, py::arg("name") = "");
  m.def("positional_embedding", &layers::PositionalEmbedding, py::arg("max_len"), py::arg("dim"),
        py::arg("name") = "");
  m.def("concatenate", &layers::Concatenate, py::arg("axis") = -1, py::arg("name") = "");
  m.def("slice", &layers::Slice, py::arg("axis"), py::arg("start"), py::arg("length"), py::arg("name") = "");
  m.def("split", &split, py::arg("x"), py::arg("sizes"), py::arg("axis") = -1);
  m.def(
      "recurrent",
      [](const std::string& cell, int64_t units, bool return_sequences, const std::string& name, bool return_state) {
        const RecurrentOptions o =
            RecurrentOptions(units).return_sequences(return_sequences).return_state(return_state).name(name);
        if (cell == "simple") return layers::SimpleRNN(o);
        if (cell == "lstm") return layers::LSTM(o);
        if (cell == "gru") return layers::GRU(o);
        throw py::value_error("cudl.recurrent: cell must be simple, lstm or gru, got '" + cell + "'");
      },
      py::arg("cell"), py::arg("units"), py::arg("return_sequences") = false, py::arg("name") = "",
      py::arg("return_state") = false);
  m.def(
      "multi_head_attention",
      [](int64_t heads, int64_t key_dim, int64_t value_dim, int64_t output_dim, float dropout, bool use_bias,
         bool causal, bool key_mask, Init init, const std::string& name) {
        return layers::MultiHeadAttention(MultiHeadAttentionOptions(heads, key_dim)
                                              .value_dim(value_dim)
                                              .output_dim(output_dim)
                                              .dropout(dropout)
                                              .use_bias(use_bias)
                                              .causal(causal)
                                              .key_mask(key_mask)
                                              .kernel_initializer(init)
                                              .name(name));
      },
      py::arg("heads"), py::arg("key_dim"), py::arg("value_dim") = 0, py::arg("output_dim") = 0,
      py::arg("dropout") = 0.f, py::arg("use_bias") = true, py::arg("causal") = false, py::arg("key_mask") = false,
      py::arg("kernel_initializer") = Init::GlorotUniform, py::arg("name") = "");

  // Generative layers (src/nn/generative.cpp).
  m.def(
      "conv2d_transpose",
      [](int64_t filters, int kernel, int stride, int padding, int output_padding, int dilation, int groups,
         const std::string& act, bool use_bias, Init init, const std::string& name) {
        return layers::Conv2dTranspose(conv_options(Conv2dTransposeOptions(filters, kernel), stride, padding, dilation,
                                                    groups, act, use_bias, init, name)
                                           .output_padding(output_padding));
      },
      py::arg("filters"), py::arg("kernel_size"), py::arg("stride") = 1, py::arg("padding") = 0,
      py::arg("output_padding") = 0, py::arg("dilation") = 1, py::arg("groups") = 1, py::arg("activation") = "",
      py::arg("use_bias") = true, py::arg("kernel_initializer") = Init::GlorotUniform, py::arg("name") = "");
  m.def("upsampling2d", &layers::UpSampling2d, py::arg("size") = 2, py::arg("interpolation") = "nearest",
        py::arg("name") = "");
  m.def(
      "random_normal",
      [](const std::vector<int64_t>& shape, float mean, float stddev, const std::string& name) {
        return layers::RandomNormal(shape_of(shape), mean, stddev, name);
      },
      py::arg("shape"), py::arg("mean") = 0.f, py::arg("stddev") = 1.f, py::arg("name") = "");

  // Optimizer and loss values.
  py::class_<Optimizer>(m, "Optimizer")
      .def(py::init<const std::string&>(), py::arg("name"))
      .def_property_readonly("name", [](const Optimizer& o) { return std::string(o.name()); })
      .def_readwrite("lr", &Optimizer::lr)
      .def_readwrite("momentum", &Optimizer::momentum)
      .def_readwrite("nesterov", &Optimizer::nesterov)
      .def_readwrite("beta1", &Optimizer::beta1)
      .def_readwrite("beta2", &Optimizer::beta2)
      .def_readwrite("alpha", &Optimizer::alpha)
      .def_readwrite("eps", &Optimizer::eps)
      .def_readwrite("keras_epsilon", &Optimizer::keras_epsilon)
      .def_readwrite("weight_decay", &Optimizer::weight_decay)
      .def_readwrite("clip_norm", &Optimizer::clip_norm);
  py::class_<Loss>(m, "Loss")
      .def(py::init<const std::string&>(), py::arg("name"))
      .def_property_readonly("name", [](const Loss& l) { return std::string(l.name()); })
      .def_property_readonly("takes_labels", &Loss::takes_labels)
      .def_readwrite("label_smoothing", &Loss::label_smoothing)
      .def_readwrite("ignore_class", &Loss::ignore_class)
      .def_readwrite("huber_delta", &Loss::huber_delta);

  // Callbacks: the C++ ones, and the base Python callbacks derive from.
  py::class_<Callback, PyCallback, CallbackPtr>(m, "Callback").def(py::init<>());
  py::class_<SignalCheck, Callback, std::shared_ptr<SignalCheck>>(m, "SignalCheck").def(py::init<>());
  py::enum_<Mode>(m, "Mode").value("auto", Mode::Auto).value("min", Mode::Min).value("max", Mode::Max);
  py::class_<EarlyStopping, Callback, std::shared_ptr<EarlyStopping>>(m, "EarlyStopping")
      .def(py::init<std::string, int, double, bool, Mode>(), py::arg("monitor"), py::arg("patience"),
           py::arg("min_delta"), py::arg("restore_best_weights"), py::arg("mode"))
      .def_property_readonly("stopped_epoch", &EarlyStopping::stopped_epoch)
      .def_property_readonly("best_epoch", &EarlyStopping::best_epoch);
  py::class_<ModelCheckpoint, Callback, std::shared_ptr<ModelCheckpoint>>(m, "ModelCheckpoint")
      .def(py::init<std::string, std::string, bool, int, Mode>(), py::arg("path"), py::arg("monitor"),
           py::arg("save_best_only"), py::arg("every_n_epochs"), py::arg("mode"))
      .def_property_readonly("saves", &ModelCheckpoint::saves);
  py::class_<CSVLogger, Callback, std::shared_ptr<CSVLogger>>(m, "CSVLogger")
      .def(py::init<std::string>(), py::arg("path"));
  py::class_<LearningRateScheduler, Callback, std::shared_ptr<LearningRateScheduler>>(m, "LearningRateScheduler")
      .def(py::init<Schedule>(), py::arg("schedule"));
  py::class_<ReduceLROnPlateau, Callback, std::shared_ptr<ReduceLROnPlateau>>(m, "ReduceLROnPlateau")
      .def(py::init<std::string, double, int, double, double, Mode>(), py::arg("monitor"), py::arg("factor"),
           py::arg("patience"), py::arg("min_lr"), py::arg("min_delta"), py::arg("mode"));

  // Model: built from Vars; numpy arrays are converted into one Dataset per call.
  py::class_<Model>(m, "Model")
      .def(py::init<const std::vector<Var>&, const std::vector<Var>&, const std::string&>(), py::arg("inputs"),
           py::arg("outputs"), py::arg("name") = "model")
      .def(
          "compile",
          [](Model& self, const Optimizer& opt, const Loss& loss, const std::vector<std::string>& metrics,
             const std::string& device, uint64_t seed, const std::string& precision) {
            CompileOptions o;
            o.optimizer = opt;
            o.loss = loss;
            o.metrics = metrics;
            o.device = Device::parse(device);
            o.seed = seed;
            if (!precision.empty()) o.precision = parse_precision(precision);
            self.compile(o);
          },
          py::arg("optimizer"), py::arg("loss"), py::arg("metrics"), py::arg("device") = "cpu", py::arg("seed") = 0,
          py::arg("precision") = "")
      .def(
          "fit",
          [](Model& self, const py::object& x, const py::array& y, float mean, float std, int epochs,
             int64_t batch_size, bool shuffle, const py::object& val_x, const py::object& val_y,
             double validation_split, const std::vector<CallbackPtr>& callbacks, uint64_t seed, int verbose) {
            Dataset train = make_dataset(x, y, mean, std);
            Dataset val;
            FitOptions fo;
            if (!val_x.is_none()) {
              val = make_dataset(val_x, val_y, mean, std);
              fo.validation_data = &val;
            }
            fo.epochs = epochs;
            fo.batch_size = batch_size;
            fo.shuffle = shuffle;
            fo.validation_split = validation_split;
            fo.callbacks = callbacks;
            fo.callbacks.insert(fo.callbacks.begin(), std::make_shared<SignalCheck>());
            fo.seed = seed;
            fo.verbose = verbose;
            History h;
            {
              py::gil_scoped_release nogil;
              h = self.fit(train, fo);
            }
            return h.metrics;
          },
          py::arg("x"), py::arg("y"), py::arg("mean") = 0.f, py::arg("std") = 1.f, py::arg("epochs") = 1,
          py::arg("batch_size") = 32, py::arg("shuffle") = true, py::arg("val_x") = py::none(),
          py::arg("val_y") = py::none(), py::arg("validation_split") = 0.0,
          py::arg("callbacks") = std::vector<CallbackPtr>{}, py::arg("seed") = 0, py::arg("verbose") = 0)
      .def(
          "evaluate",
          [](Model& self, const py::object& x, const py::array& y, float mean, float std, int64_t batch_size) {
            Dataset d = make_dataset(x, y, mean, std);
            py::gil_scoped_release nogil;
            return self.evaluate(d, batch_size).metrics;
          },
          py::arg("x"), py::arg("y"), py::arg("mean") = 0.f, py::arg("std") = 1.f, py::arg("batch_size") = 256)
      .def(
          "predict",
          [](Model& self, const py::object& x, float mean, float std, int64_t batch_size) {
            Dataset d = make_dataset(x, py::none(), mean, std);
            Tensor out;
            {
              py::gil_scoped_release nogil;
              out = self.predict(d, batch_size);
            }
            return tensor_to_numpy(out);
          },
          py::arg("x"), py::arg("mean") = 0.f, py::arg("std") = 1.f, py::arg("batch_size") = 256)
      .def(
          "train_on_batch",
          [](Model& self, const py::object& x, const py::array& y) {
            return self.train_on_batch(make_dataset(x, py::none(), 0.f, 1.f).inputs(), tensor_from_numpy(y));
          },
          py::arg("x"), py::arg("y"))
      .def(
          "test_on_batch",
          [](Model& self, const py::object& x, const py::array& y) {
            return self.test_on_batch(make_dataset(x, py::none(), 0.f, 1.f).inputs(), tensor_from_numpy(y));
          },
          py::arg("x"), py::arg("y"))
      .def(
          "predict_on_batch",
          [](Model& self, const py::object& x) {
            return tensor_to_numpy(self.predict_on_batch(make_dataset(x, py::none(), 0.f, 1.f).inputs()));
          },
          py::arg("x"))
      .def("summary", &Model::summary)
      .def_property("learning_rate", &Model::learning_rate, &Model::set_learning_rate)
      .def_property_readonly("loss_scale", &Model::loss_scale,
                             "f16: the current dynamic loss scale (a device read; 1 when the loss is not scaled)")
      .def_property_readonly("skipped_steps", &Model::skipped_steps,
                             "f16: optimizer steps skipped because the gradients overflowed (a device read)")
      .def("batch_logs", &Model::batch_logs,
           "Running means of the epoch's loss and metrics so far (inside fit; one device read per call)")
      .def("stop_training", &Model::stop_training)
      .def_property_readonly("stop_requested", &Model::stop_requested)
      .def_property("epoch", &Model::epoch, &Model::set_epoch)
      .def_property_readonly("step", &Model::step)
      .def_property_readonly("device", [](const Model& m) { return m.device().str(); })
      .def("parameter_count", &Model::parameter_count)
      .def("layers", &Model::layers)
      .def_property_readonly("name", &Model::name)
      .def("get_weights",
           [](const Model& m) {
             std::vector<py::array> out;
             for (const Tensor& t : m.get_weights()) out.push_back(tensor_to_numpy(t));
             return out;
           })
      .def("set_weights",
           [](Model& m, const std::vector<py::array>& ws) {
             std::vector<Tensor> ts;
             for (const auto& a : ws) ts.push_back(tensor_from_numpy(a));
             m.set_weights(ts);
           })
      .def("save_checkpoint", [](Model& m, const std::string& path) { save_checkpoint(m, path); })
      .def("load_checkpoint", [](Model& m, const std::string& path) { load_checkpoint(m, path); })
      .def("training_state", &training_state,
           "The optimizer slots and hyper-parameters and the RNG state, as (name, numpy array) pairs")
      .def("load_training_state", &load_training_state, py::arg("tensors"), py::arg("optimizer"), py::arg("step"),
           py::arg("epoch"), py::arg("source"))
      .def_property_readonly("optimizer_name", [](const Model& m) { return std::string(m.optimizer().name()); })
      .def("state_names", [](Model& m) {
        std::vector<std::string> n;
        for (const auto& p : m.state_tensors()) n.push_back(p.first);
        return n;
      });

  m.def(
      "save_safetensors",
      [](const std::string& path, const std::vector<std::pair<std::string, py::array>>& named,
         const std::map<std::string, std::string>& meta) {
        std::vector<std::pair<std::string, Tensor>> ts;
        for (const auto& [n, a] : named) ts.emplace_back(n, tensor_from_numpy(a));
        save_safetensors(path, ts, meta);
      },
      py::arg("path"), py::arg("tensors"), py::arg("metadata") = std::map<std::string, std::string>{});
  m.def(
      "load_safetensors",
      [](const std::string& path) {
        std::map<std::string, std::string> meta;
        std::vector<std::pair<std::string, py::array>> out;
        for (const auto& [n, t] : load_safetensors(path, &meta)) out.emplace_back(n, tensor_to_numpy(t));
        return py::make_tuple(out, meta);
      },
      py::arg("path"));

  m.def(
      "load_mnist",
      [](const std::string& dir, bool train, int64_t limit, bool fashion) {
        Dataset d = load_mnist(dir, train, limit, fashion);
        return py::make_tuple(tensor_to_numpy(d.x), tensor_to_numpy(d.y));
      },
      py::arg("dir"), py::arg("train"), py::arg("limit") = 0, py::arg("fashion") = false);
}
