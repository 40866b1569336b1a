// cuda/conv.cpp — CUDA backend entries of the conv op family: cuDNN 9 graph (backend) API plans,
// built once per shape and cached, with an im2col + cuBLAS engine when cuDNN has no plan.
//
// Engines, in order of preference (CUDL_CONV_ENGINE=im2col forces the last one):
//   forward:  cuDNN conv + bias + ReLU fused in one graph  ->  cuDNN conv, then the bias/ReLU
//             kernel  ->  im2col + cuBLAS GEMM + bias/ReLU kernel
//   backward: cuDNN backward-data / backward-filter plan  ->  im2col (col2im) + cuBLAS GEMM
//   bias gradient: always the deterministic per-channel reduction kernel.
// Engines whose numerical notes say NONDETERMINISTIC are never used; neither are engines that
// down-convert fp32 to TF32 (notes TENSOR_CORE / DOWN_CONVERT_INPUTS) unless the call's MathMode is
// TF32 (CompileOptions::precision = tf32, or CUDL_ALLOW_TF32=1), which also makes the im2col GEMMs
// use CUBLAS_COMPUTE_32F_FAST_TF32. The math mode is part of the plan key.
#include "cuda/conv.hpp"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.hpp"
#include "ops/conv.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "kernels/conv.cuh"

namespace cudl {
namespace {

// ---------------------------------------------------------------------------------------------
// engine choice
// ---------------------------------------------------------------------------------------------

/// True when CUDL_CONV_ENGINE=im2col; throws for a value that is neither im2col, cudnn nor auto.
bool im2col_forced() {
  const char* e = std::getenv("CUDL_CONV_ENGINE");
  if (!e || !*e || std::strcmp(e, "auto") == 0 || std::strcmp(e, "cudnn") == 0) return false;
  if (std::strcmp(e, "im2col") == 0) {
    static std::once_flag logged;
    std::call_once(logged,
                   [] { std::fprintf(stderr, "cudl: CUDL_CONV_ENGINE=im2col: conv ops use the im2col engine\n"); });
    return true;
  }
  CUDL_FAIL("CUDL_CONV_ENGINE=", e, " is not an engine (use auto, cudnn or im2col)");
}

const char* engine_op_name(OpKind op) {
  switch (op) {
    case OpKind::Conv2d:
      return "conv2d";
    case OpKind::Conv2dBackwardData:
      return "conv2d backward-data";
    case OpKind::Conv2dBackwardFilter:
      return "conv2d backward-filter";
    default:
      return op_name(op);
  }
}

// ---------------------------------------------------------------------------------------------
// cuDNN backend descriptors
// ---------------------------------------------------------------------------------------------

/// Thrown while building a plan when cuDNN answers NOT_SUPPORTED: the caller falls back.
struct Unsupported {
  std::string reason;
};

std::string status_text(cudnnStatus_t s) { return cudnnGetErrorString(s); }

/// A backend descriptor owned by RAII (move-only).
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t type) { CUDL_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_)); }
  ~Desc() {
    if (d_ && cudnnBackendDestroyDescriptor(d_) != CUDNN_STATUS_SUCCESS)
      std::fprintf(stderr, "cudl: cudnnBackendDestroyDescriptor failed\n");
  }
  Desc(Desc&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  Desc& operator=(Desc&& o) noexcept {
    std::swap(d_, o.d_);
    return *this;
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;

  cudnnBackendDescriptor_t get() const { return d_; }

  /// Sets an attribute; a failure is a bug in this file, so it throws naming the attribute.
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values,
           const char* what) {
    cudnnStatus_t s = cudnnBackendSetAttribute(d_, name, type, count, values);
    if (s != CUDNN_STATUS_SUCCESS) CUDL_FAIL("cuDNN error: setting ", what, ": ", status_text(s));
  }
  void set_desc(cudnnBackendAttributeName_t name, const Desc& d, const char* what) {
    cudnnBackendDescriptor_t v = d.get();
    set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v, what);
  }
  /// Finalizes; NOT_SUPPORTED-category answers throw Unsupported (the caller falls back), any
  /// other failure throws cudl::Error.
  void finalize(const char* what) {
    cudnnStatus_t s = cudnnBackendFinalize(d_);
    if (s == CUDNN_STATUS_SUCCESS) return;
    if (CUDNN_STATUS_CATEGORY(s) == CUDNN_STATUS_NOT_SUPPORTED)
      throw Unsupported{std::string(what) + " finalize: " + status_text(s)};
    CUDL_FAIL("cuDNN error: finalizing ", what, ": ", status_text(s));
  }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

// Tensor unique ids inside one graph.
constexpr int64_t kUidX = 1, kUidW = 2, kUidY = 3, kUidBias = 4, kUidConvOut = 5, kUidBiasOut = 6;

Desc make_tensor(int64_t uid, const std::vector<int64_t>& dims, const std::vector<int64_t>& strides, int64_t alignment,
                 bool is_virtual) {
  Desc t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dtype, "TENSOR_DATA_TYPE");
  t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, static_cast<int64_t>(dims.size()), dims.data(),
        "TENSOR_DIMENSIONS");
  t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, static_cast<int64_t>(strides.size()), strides.data(),
        "TENSOR_STRIDES");
  t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "TENSOR_UNIQUE_ID");
  t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "TENSOR_BYTE_ALIGNMENT");
  bool v = is_virtual;
  t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v, "TENSOR_IS_VIRTUAL");
  t.finalize("tensor");
  return t;
}

/// A packed NCHW tensor.
Desc make_nchw(int64_t uid, int64_t n, int64_t c, int64_t h, int64_t w, int64_t alignment, bool is_virtual = false) {
  return make_tensor(uid, {n, c, h, w}, {c * h * w, h * w, w, 1}, alignment, is_virtual);
}

Desc make_conv_desc(const ops::Conv2dGeometry& g) {
  Desc c(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  int64_t spatial = 2;
  cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t pad[2] = {g.pad_h, g.pad_w}, stride[2] = {g.stride_h, g.stride_w}, dil[2] = {g.dil_h, g.dil_w};
  c.set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial, "CONVOLUTION_SPATIAL_DIMS");
  c.set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "CONVOLUTION_COMP_TYPE");
  c.set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode, "CONVOLUTION_CONV_MODE");
  c.set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad, "CONVOLUTION_PRE_PADDINGS");
  c.set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad, "CONVOLUTION_POST_PADDINGS");
  c.set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil, "CONVOLUTION_DILATIONS");
  c.set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride, "CONVOLUTION_FILTER_STRIDES");
  c.finalize("convolution");
  return c;
}

/// One pointwise operation y = mode(x[, b]) with fp32 math.
Desc make_pointwise_op(cudnnPointwiseMode_t mode, const Desc& x, const Desc* b, const Desc& y,
                       std::vector<Desc>& keep) {
  Desc pw(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "POINTWISE_MODE");
  pw.set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec, "POINTWISE_MATH_PREC");
  pw.finalize("pointwise");
  Desc op(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw, "OPERATION_POINTWISE_PW_DESCRIPTOR");
  op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x, "OPERATION_POINTWISE_XDESC");
  if (b) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, *b, "OPERATION_POINTWISE_BDESC");
  op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y, "OPERATION_POINTWISE_YDESC");
  op.finalize("pointwise operation");
  keep.push_back(std::move(pw));
  return op;
}

/// The operation graph of one conv op: descriptors it references are kept alive in `keep`.
struct Graph {
  std::vector<Desc> keep;
  std::vector<Desc> ops;
  std::vector<int64_t> uids;  // non-virtual tensors, in variant-pack order
};

Desc make_conv_op(OpKind op, const ops::Conv2dGeometry& g, const Desc& conv, const Desc& x, const Desc& w,
                  const Desc& y) {
  const float alpha = 1.f, beta = 0.f;
  switch (op) {
    case OpKind::Conv2d: {
      Desc d(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR);
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, x, "CONVOLUTION_FORWARD_X");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, w, "CONVOLUTION_FORWARD_W");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, y, "CONVOLUTION_FORWARD_Y");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, conv, "CONVOLUTION_FORWARD_CONV_DESC");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha, "CONVOLUTION_FORWARD_ALPHA");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta, "CONVOLUTION_FORWARD_BETA");
      d.finalize("convolution forward operation");
      return d;
    }
    case OpKind::Conv2dBackwardData: {
      Desc d(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR);
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, x, "CONVOLUTION_BWD_DATA_DX");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, w, "CONVOLUTION_BWD_DATA_W");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, y, "CONVOLUTION_BWD_DATA_DY");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, conv, "CONVOLUTION_BWD_DATA_CONV_DESC");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha, "CONVOLUTION_BWD_DATA_ALPHA");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, CUDNN_TYPE_FLOAT, 1, &beta, "CONVOLUTION_BWD_DATA_BETA");
      d.finalize("convolution backward-data operation");
      return d;
    }
    case OpKind::Conv2dBackwardFilter: {
      Desc d(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR);
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, x, "CONVOLUTION_BWD_FILTER_X");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, w, "CONVOLUTION_BWD_FILTER_DW");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, y, "CONVOLUTION_BWD_FILTER_DY");
      d.set_desc(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, conv, "CONVOLUTION_BWD_FILTER_CONV_DESC");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha,
            "CONVOLUTION_BWD_FILTER_ALPHA");
      d.set(CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, CUDNN_TYPE_FLOAT, 1, &beta,
            "CONVOLUTION_BWD_FILTER_BETA");
      d.finalize("convolution backward-filter operation");
      return d;
    }
    default:
      CUDL_FAIL("make_conv_op: ", op_name(op), " is not a cuDNN conv op");
  }
}

/// Builds the graph's operations: the conv op alone, or (forward, fused) conv -> [+bias] -> [ReLU]
/// through virtual intermediate tensors. x/dx is uid 1, w/dw 2, y/dy 3, bias 4.
Graph build_graph(OpKind op, const ops::Conv2dGeometry& g, bool fused, int64_t alignment) {
  Graph gr;
  Desc x = make_nchw(kUidX, g.N, g.C, g.H, g.W, alignment);
  Desc w = make_nchw(kUidW, g.K, g.Cg(), g.R, g.S, alignment);
  Desc conv = make_conv_desc(g);
  const bool bias = fused && g.has_bias, relu = fused && g.relu;
  // The conv writes y directly unless an epilogue follows, then a virtual tensor.
  Desc conv_out = make_nchw(bias || relu ? kUidConvOut : kUidY, g.N, g.K, g.P, g.Q, alignment, bias || relu);
  gr.ops.push_back(make_conv_op(op, g, conv, x, w, conv_out));
  gr.uids = {kUidX, kUidW, kUidY};
  if (bias) {
    Desc b = make_tensor(kUidBias, {1, g.K, 1, 1}, {g.K, 1, 1, 1}, alignment, false);  // broadcast over N, P, Q
    Desc add_out = make_nchw(relu ? kUidBiasOut : kUidY, g.N, g.K, g.P, g.Q, alignment, relu);
    gr.ops.push_back(make_pointwise_op(CUDNN_POINTWISE_ADD, conv_out, &b, add_out, gr.keep));
    gr.uids.push_back(kUidBias);
    gr.keep.push_back(std::move(b));
    if (relu) {
      Desc y = make_nchw(kUidY, g.N, g.K, g.P, g.Q, alignment);
      gr.ops.push_back(make_pointwise_op(CUDNN_POINTWISE_RELU_FWD, add_out, nullptr, y, gr.keep));
      gr.keep.push_back(std::move(y));
    }
    gr.keep.push_back(std::move(add_out));
  } else if (relu) {
    Desc y = make_nchw(kUidY, g.N, g.K, g.P, g.Q, alignment);
    gr.ops.push_back(make_pointwise_op(CUDNN_POINTWISE_RELU_FWD, conv_out, nullptr, y, gr.keep));
    gr.keep.push_back(std::move(y));
  }
  gr.keep.push_back(std::move(x));
  gr.keep.push_back(std::move(w));
  gr.keep.push_back(std::move(conv));
  gr.keep.push_back(std::move(conv_out));
  return gr;
}

/// A finalized execution plan and what executing it needs. Every descriptor the plan was built
/// from stays alive with it (declared first, destroyed last).
struct CudnnPlan {
  Graph graph_ops;
  Desc graph{CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR};
  std::vector<Desc> heuristics;
  std::vector<Desc> configs;
  Desc plan{CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR};
  int64_t workspace = 0;
  std::vector<int64_t> uids;
};

std::atomic<int64_t> g_plans_built{0};

/// Why an engine config is not acceptable (empty when it is).
std::string rejection(cudnnBackendDescriptor_t cfg, bool allow_tf32) {
  Desc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t e = engine.get();
  int64_t n = 0;
  CUDL_CUDNN_CHECK(
      cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &e));
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  CUDL_CUDNN_CHECK(cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                            CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, notes));
  n = std::min<int64_t>(n, CUDNN_NUMERICAL_NOTE_TYPE_COUNT);
  for (int64_t i = 0; i < n; ++i) {
    if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) return "nondeterministic";
    if (!allow_tf32 &&
        (notes[i] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE || notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS))
      return "tf32 tensor cores";
  }
  return {};
}

/// Heuristics (INSTANT mode) for the graph, then the first acceptable engine config that
/// finalizes into a plan. Throws Unsupported with the reason when there is none.
std::unique_ptr<CudnnPlan> build_plan(cudnnHandle_t handle, OpKind op, const ops::Conv2dGeometry& g, bool fused,
                                      int64_t alignment, bool allow_tf32) {
  auto p = std::make_unique<CudnnPlan>();
  p->graph_ops = build_graph(op, g, fused, alignment);
  std::vector<cudnnBackendDescriptor_t> ops;
  for (const Desc& d : p->graph_ops.ops) ops.push_back(d.get());
  p->graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops.size()),
               ops.data(), "OPERATIONGRAPH_OPS");
  p->graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "OPERATIONGRAPH_HANDLE");
  p->graph.finalize("operation graph");

  // INSTANT heuristics first; FALLBACK mode lists the generic engines, which matter when every
  // INSTANT choice is filtered out (TF32 or nondeterministic).
  std::string reasons;
  int64_t total = 0;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_INSTANT, CUDNN_HEUR_MODE_FALLBACK}) {
    const char* mode_name = mode == CUDNN_HEUR_MODE_INSTANT ? "instant" : "fallback";
    p->heuristics.emplace_back(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    Desc& heur = p->heuristics.back();
    heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, p->graph, "ENGINEHEUR_OPERATION_GRAPH");
    heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "ENGINEHEUR_MODE");
    try {
      heur.finalize("engine heuristics");
    } catch (const Unsupported& u) {
      reasons += (reasons.empty() ? "" : "; ") + std::string(mode_name) + " " + u.reason;
      continue;
    }
    int64_t count = 0;
    CUDL_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                              0, &count, nullptr));
    if (count <= 0) continue;
    const size_t first = p->configs.size();
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      p->configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(p->configs.back().get());
    }
    int64_t got = 0;
    CUDL_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                              count, &got, raw.data()));
    got = std::min(got, count);
    total += got;
    for (int64_t i = 0; i < got; ++i) {
      std::string why = rejection(raw[i], allow_tf32);
      if (why.empty()) {
        Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "EXECUTION_PLAN_HANDLE");
        plan.set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, p->configs[first + i], "EXECUTION_PLAN_ENGINE_CONFIG");
        cudnnStatus_t s = cudnnBackendFinalize(plan.get());
        if (s == CUDNN_STATUS_SUCCESS) {
          int64_t n = 0;
          CUDL_CUDNN_CHECK(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                    CUDNN_TYPE_INT64, 1, &n, &p->workspace));
          p->plan = std::move(plan);
          p->uids = p->graph_ops.uids;
          ++g_plans_built;
          return p;
        }
        why = "plan finalize: " + status_text(s);
      }
      reasons += (reasons.empty() ? "" : ", ") + (std::string(mode_name) + " config " + std::to_string(i) + ": " + why);
    }
  }
  if (total == 0 && reasons.empty()) throw Unsupported{"heuristics returned no engine config"};
  throw Unsupported{std::to_string(total) + " engine config(s), none usable: " + reasons};
}

// ---------------------------------------------------------------------------------------------
// plan cache
// ---------------------------------------------------------------------------------------------

struct CacheEntry {
  std::unique_ptr<CudnnPlan> plan;  // null: cuDNN has no plan for this key (the im2col engine runs)
  bool fused = false;               // forward: the plan applies bias and ReLU itself
};

std::mutex g_cache_mutex;
// Deliberately never destroyed: at process exit cuDNN (and the CUDA context) may already be torn
// down, so the cached plans are not handed back to it from a static destructor.
auto& g_cache = *new std::map<std::vector<int64_t>, CacheEntry>;

/// Largest power of two <= 16 dividing every pointer: part of the plan key, so a plan declared
/// for 16-byte alignment never sees a 4-byte-aligned view.
int64_t alignment_of(std::initializer_list<const void*> ptrs) {
  int64_t a = 16;
  for (const void* p : ptrs)
    if (p)
      while (a > 4 && reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(a) != 0) a /= 2;
  return a;
}

/// The cached entry for (op, geometry, alignment, handle), building (and logging) it on first use.
/// `op` is the cuDNN operation (Conv2dTranspose runs as Conv2dBackwardData).
const CacheEntry& plan_for(cudnnHandle_t handle, const OpCall& call, OpKind op, const ops::Conv2dGeometry& g,
                           int64_t alignment) {
  const bool wants_fusion = op == OpKind::Conv2d && (g.has_bias || g.relu);
  std::vector<int64_t> key = {static_cast<int64_t>(op), g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.groups};
  for (int64_t v : {g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w, alignment}) key.push_back(v);
  key.push_back(wants_fusion && g.has_bias);
  key.push_back(wants_fusion && g.relu);
  key.push_back(static_cast<int64_t>(reinterpret_cast<uintptr_t>(handle)));
  const bool tf32 = call.math == MathMode::TF32;
  key.push_back(tf32);
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  auto it = g_cache.find(key);
  if (it != g_cache.end()) return it->second;

  CacheEntry entry;
  std::string fused_reason;
  if (wants_fusion) {
    try {
      entry.plan = build_plan(handle, op, g, true, alignment, tf32);
      entry.fused = true;
    } catch (const Unsupported& u) {
      fused_reason = u.reason;
    } catch (const Error& e) {  // fusion is optional: any refusal of the fused graph falls back
      fused_reason = e.what();
    }
  }
  if (!entry.plan) {
    try {
      entry.plan = build_plan(handle, op, g, false, alignment, tf32);
      if (wants_fusion)
        std::fprintf(stderr,
                     "cudl: %s %s x %s: cuDNN has no fused bias/ReLU plan (%s); bias/ReLU run as a separate kernel\n",
                     engine_op_name(op), call.label, g.x_shape().str().c_str(), fused_reason.c_str());
    } catch (const Unsupported& u) {
      std::fprintf(stderr, "cudl: %s %s x %s: cuDNN has no plan (%s); using the im2col engine\n",
                   engine_op_name(op), call.label, g.x_shape().str().c_str(), u.reason.c_str());
    }
  }
  return g_cache.emplace(std::move(key), std::move(entry)).first->second;
}

/// Executes a cached plan on the context's stream with the tensors' pointers.
void execute(CudaContext& ctx, const CudnnPlan& plan, std::initializer_list<std::pair<int64_t, void*>> tensors) {
  std::vector<int64_t> uids;
  std::vector<void*> ptrs;
  for (int64_t uid : plan.uids)
    for (const auto& t : tensors)
      if (t.first == uid) {
        uids.push_back(uid);
        ptrs.push_back(t.second);
      }
  if (uids.size() != plan.uids.size()) CUDL_FAIL("conv: a tensor of the cuDNN plan has no data pointer");
  void* workspace = plan.workspace > 0 ? ctx.workspace(static_cast<size_t>(plan.workspace)) : nullptr;
  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()), uids.data(),
           "VARIANT_PACK_UNIQUE_IDS");
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(ptrs.size()), ptrs.data(),
           "VARIANT_PACK_DATA_POINTERS");
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace, "VARIANT_PACK_WORKSPACE");
  pack.finalize("variant pack");
  CUDL_CUDNN_CHECK(cudnnBackendExecute(ctx.cudnn(), plan.plan.get(), pack.get()));
}

// ---------------------------------------------------------------------------------------------
// the im2col engine: im2col / col2im kernels + cuBLAS strided-batched GEMM (fp32 or TF32 compute)
// ---------------------------------------------------------------------------------------------

constexpr int64_t kIm2colWorkspaceLimit = int64_t(256) << 20;  // bytes of column buffer per chunk of images

kernels::ConvKernelGeometry kernel_geometry(const ops::Conv2dGeometry& g) {
  return {g.C, g.H, g.W, g.R, g.S, g.P, g.Q, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dil_h, g.dil_w};
}

int to_int(const OpCall& call, int64_t v, const ops::Conv2dGeometry& g) {
  if (v > INT_MAX)
    CUDL_FAIL(op_name(call.op), " (", call.label, "): GEMM dimension ", v, " exceeds int for x ", g.x_shape(), ", w ",
              g.w_shape());
  return static_cast<int>(v);
}

/// Column-major C = op(A)·op(B) for `batch` matrices at the given element strides.
void gemm(CudaContext& ctx, const OpCall& call, const ops::Conv2dGeometry& g, cublasOperation_t ta,
          cublasOperation_t tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, int64_t stride_a,
          const float* b, int64_t ldb, int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c,
          int64_t batch) {
  const float alpha = 1.f;
  CUDL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      ctx.cublas(), ta, tb, to_int(call, m, g), to_int(call, n, g), to_int(call, k, g), &alpha, a, CUDA_R_32F,
      to_int(call, lda, g), stride_a, b, CUDA_R_32F, to_int(call, ldb, g), stride_b, &beta, c, CUDA_R_32F,
      to_int(call, ldc, g), stride_c, to_int(call, batch, g), detail::cublas_compute_type(call.math), CUBLAS_GEMM_DEFAULT));
}

/// Images per chunk and the column buffer (chunk, C*R*S, P*Q) from the context's workspace.
std::pair<int64_t, float*> column_buffer(CudaContext& ctx, const ops::Conv2dGeometry& g) {
  const int64_t per_image = g.C * g.R * g.S * g.P * g.Q * static_cast<int64_t>(sizeof(float));
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(g.N, kIm2colWorkspaceLimit / per_image));
  return {chunk, static_cast<float*>(ctx.workspace(static_cast<size_t>(chunk * per_image)))};
}

void im2col_forward(CudaContext& ctx, const OpCall& call, const ops::Conv2dGeometry& g, const float* x, const float* w,
                    const float* bias, float* y) {
  const auto kg = kernel_geometry(g);
  const int64_t PQ = g.P * g.Q, CRS = g.Cg() * g.R * g.S, Kg = g.Kg(), col_image = g.C * g.R * g.S * PQ;
  auto [chunk, col] = column_buffer(ctx, g);
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nc = std::min(chunk, g.N - n0);
    kernels::conv2d_im2col_cuda(x + n0 * g.C * g.H * g.W, col, kg, nc, ctx.stream());
    if (g.groups == 1) {
      // y[n] (K, PQ) = w (K, CRS) · col[n] (CRS, PQ), batched over the chunk's images
      gemm(ctx, call, g, CUBLAS_OP_N, CUBLAS_OP_N, PQ, g.K, CRS, col, PQ, col_image, w, CRS, 0, 0.f, y + n0 * g.K * PQ,
           PQ, g.K * PQ, nc);
    } else {
      for (int64_t i = 0; i < nc; ++i)  // batched over groups
        gemm(ctx, call, g, CUBLAS_OP_N, CUBLAS_OP_N, PQ, Kg, CRS, col + i * col_image, PQ, CRS * PQ, w, CRS, Kg * CRS,
             0.f, y + (n0 + i) * g.K * PQ, PQ, Kg * PQ, g.groups);
    }
  }
  if (bias || g.relu) kernels::conv2d_bias_act_cuda(y, bias, g.N, g.K, PQ, g.relu ? 1 : 0, ctx.stream());
}

void im2col_backward_data(CudaContext& ctx, const OpCall& call, const ops::Conv2dGeometry& g, const float* dy,
                          const float* w, float* dx) {
  const auto kg = kernel_geometry(g);
  const int64_t PQ = g.P * g.Q, CRS = g.Cg() * g.R * g.S, Kg = g.Kg(), col_image = g.C * g.R * g.S * PQ;
  auto [chunk, col] = column_buffer(ctx, g);
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nc = std::min(chunk, g.N - n0);
    if (g.groups == 1) {
      // dcol[n] (CRS, PQ) = wᵀ (CRS, K) · dy[n] (K, PQ)
      gemm(ctx, call, g, CUBLAS_OP_N, CUBLAS_OP_T, PQ, CRS, g.K, dy + n0 * g.K * PQ, PQ, g.K * PQ, w, CRS, 0, 0.f, col,
           PQ, col_image, nc);
    } else {
      for (int64_t i = 0; i < nc; ++i)
        gemm(ctx, call, g, CUBLAS_OP_N, CUBLAS_OP_T, PQ, CRS, Kg, dy + (n0 + i) * g.K * PQ, PQ, Kg * PQ, w, CRS,
             Kg * CRS, 0.f, col + i * col_image, PQ, CRS * PQ, g.groups);
    }
    kernels::conv2d_col2im_cuda(col, dx + n0 * g.C * g.H * g.W, kg, nc, ctx.stream());
  }
}

void im2col_backward_filter(CudaContext& ctx, const OpCall& call, const ops::Conv2dGeometry& g, const float* x,
                            const float* dy, float* dw) {
  const auto kg = kernel_geometry(g);
  const int64_t PQ = g.P * g.Q, CRS = g.Cg() * g.R * g.S, Kg = g.Kg(), col_image = g.C * g.R * g.S * PQ;
  auto [chunk, col] = column_buffer(ctx, g);
  for (int64_t n0 = 0; n0 < g.N; n0 += chunk) {
    const int64_t nc = std::min(chunk, g.N - n0);
    kernels::conv2d_im2col_cuda(x + n0 * g.C * g.H * g.W, col, kg, nc, ctx.stream());
    // dw_g (Kg, CRS) (+)= dy[n, group] (Kg, PQ) · col[n, group]ᵀ (PQ, CRS), one image after the
    // other (a fixed summation order), batched over groups.
    for (int64_t i = 0; i < nc; ++i)
      gemm(ctx, call, g, CUBLAS_OP_T, CUBLAS_OP_N, CRS, Kg, PQ, col + i * col_image, PQ, CRS * PQ,
           dy + (n0 + i) * g.K * PQ, PQ, Kg * PQ, n0 + i == 0 ? 0.f : 1.f, dw, CRS, Kg * CRS, g.groups);
  }
}

// ---------------------------------------------------------------------------------------------
// op entries
// ---------------------------------------------------------------------------------------------

void cuda_conv2d(const OpCall& call) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(call);
  CudaContext& ctx = cuda_context(call);
  const float* x = g.x.as<float>();
  const float* w = g.w.as<float>();
  const float* bias = g.bias.as<float>();
  float* y = g.y.as<float>();
  if (!im2col_forced()) {
    const CacheEntry& e = plan_for(ctx.cudnn(), call, call.op, g, alignment_of({x, w, bias, y}));
    if (e.plan) {
      execute(ctx, *e.plan,
              {{kUidX, const_cast<float*>(x)},
               {kUidW, const_cast<float*>(w)},
               {kUidY, y},
               {kUidBias, const_cast<float*>(bias)}});
      if (!e.fused && (bias || g.relu))
        kernels::conv2d_bias_act_cuda(y, bias, g.N, g.K, g.P * g.Q, g.relu ? 1 : 0, ctx.stream());
      return;
    }
  }
  im2col_forward(ctx, call, g, x, w, bias, y);
}

/// dx = the data gradient of the convolution g for dy: a cuDNN backward-data plan, else the im2col
/// engine (Conv2dBackwardData, and Conv2dTranspose before its bias).
void backward_data(CudaContext& ctx, const OpCall& call, const ops::Conv2dGeometry& g, const float* dy,
                   const float* w, float* dx) {
  if (!im2col_forced()) {
    const CacheEntry& e = plan_for(ctx.cudnn(), call, OpKind::Conv2dBackwardData, g, alignment_of({dy, w, dx}));
    if (e.plan) {
      execute(ctx, *e.plan, {{kUidX, dx}, {kUidW, const_cast<float*>(w)}, {kUidY, const_cast<float*>(dy)}});
      return;
    }
  }
  im2col_backward_data(ctx, call, g, dy, w, dx);
}

void cuda_conv2d_backward_data(const OpCall& call) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(call);
  backward_data(cuda_context(call), call, g, g.dy.as<float>(), g.w.as<float>(), g.dx.as<float>());
}

// The transposed convolution is the data gradient of the convolution whose geometry its check
// returns (cuDNN's backward-data operation), then its bias per output channel.
void cuda_conv2d_transpose(const OpCall& call) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(call);
  CudaContext& ctx = cuda_context(call);
  float* y = g.dx.as<float>();
  backward_data(ctx, call, g, g.dy.as<float>(), g.w.as<float>(), y);
  if (g.has_bias) kernels::conv2d_bias_act_cuda(y, g.bias.as<float>(), g.N, g.C, g.H * g.W, 0, ctx.stream());
}

void cuda_conv2d_backward_filter(const OpCall& call) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(call);
  CudaContext& ctx = cuda_context(call);
  const float* x = g.x.as<float>();
  const float* dy = g.dy.as<float>();
  float* dw = g.dw.as<float>();
  if (!im2col_forced()) {
    const CacheEntry& e = plan_for(ctx.cudnn(), call, call.op, g, alignment_of({x, dy, dw}));
    if (e.plan) {
      execute(ctx, *e.plan, {{kUidX, const_cast<float*>(x)}, {kUidW, dw}, {kUidY, const_cast<float*>(dy)}});
      return;
    }
  }
  im2col_backward_filter(ctx, call, g, x, dy, dw);
}

void cuda_conv2d_backward_bias(const OpCall& call) {
  const ops::Conv2dArgs g = ops::check_conv2d_call(call);
  CudaContext& ctx = cuda_context(call);
  kernels::conv2d_bias_grad_cuda(g.dy.as<float>(), g.db.as<float>(), g.N, g.K, g.P * g.Q, ctx.stream());
}

}  // namespace

int64_t conv_plans_built() { return g_plans_built.load(); }

void conv_clear_plan_cache() {
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  g_cache.clear();
  g_plans_built = 0;
}

void register_cuda_conv_ops(OpTable& t) {
  t.add(OpKind::Conv2d, cuda_conv2d);
  t.add(OpKind::Conv2dBackwardData, cuda_conv2d_backward_data);
  t.add(OpKind::Conv2dBackwardFilter, cuda_conv2d_backward_filter);
  t.add(OpKind::Conv2dBackwardBias, cuda_conv2d_backward_bias);
  t.add(OpKind::Conv2dTranspose, cuda_conv2d_transpose);
}

}  // namespace cudl
