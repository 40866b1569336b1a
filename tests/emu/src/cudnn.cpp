// tests/emu/src/cudnn.cpp — the emulated cuDNN 9: handle/stream calls and the graph (backend) API
// subset cudl's conv ops use, implemented on emulated device memory from the documented semantics.
//
// Descriptors keep the attributes set on them, checked against a table of (descriptor type,
// attribute) -> allowed types and element counts; cudnnBackendFinalize validates them and derives an
// immutable description (tensor, convolution, operation, graph, engine, plan) so later calls never
// depend on descriptors the caller has destroyed. Supported graphs: one convolution (forward,
// backward-data, backward-filter), and a forward convolution followed by a chain of pointwise
// ADD (broadcast bias) / RELU_FWD through virtual tensors; one SDPA forward operation (cuDNN 9.13+:
// q, k, v, o HALF or BFLOAT16, the log-sum-exp statistics FLOAT, the scale a by-value FLOAT; no
// masks, which 9.19's operation does not have). Tensors in memory are FLOAT, BFLOAT16 or HALF (one
// type per convolution, fp32 compute type; virtual tensors FLOAT or that type). Execution enqueues
// naive loops on the handle's stream on widened inputs with double accumulation (float with
// CUDL_EMU_ACCUMULATE=fp32, emu/runtime.hpp), rounding a 16-bit output once, to nearest even, at the
// store. The SDPA also rounds its softmax weights to the storage type before their product with v,
// as flash-attention kernels feed that product's tensor-core GEMM.
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "emu/cudnn_emu.hpp"
#include "emu/runtime.hpp"
#include "src/core/half.hpp"

struct cudnnContext {
  cudaStream_t stream = nullptr;
};

namespace cudl_emu {
namespace {

// ---------------------------------------------------------------------------------------------
// global state
// ---------------------------------------------------------------------------------------------

// Never destroyed: callers may destroy handles and descriptors from their own static destructors.
std::recursive_mutex& mu() {
  static auto* m = new std::recursive_mutex;
  return *m;
}
std::set<cudnnContext*>& live_handles() {
  static auto* s = new std::set<cudnnContext*>;
  return *s;
}
bool g_no_engines = false;
bool g_fusion_supported = true;
CudnnCounters g_counters;
thread_local std::string g_last_error;

cudnnStatus_t fail(cudnnStatus_t st, const std::string& what);

// ---------------------------------------------------------------------------------------------
// derived (finalized) descriptions
// ---------------------------------------------------------------------------------------------

struct TensorInfo {
  int64_t uid = 0;
  cudnnDataType_t dtype = CUDNN_DATA_FLOAT;
  std::vector<int64_t> dims, strides;
  int64_t alignment = 0;
  bool is_virtual = false;
  bool by_value = false;
  int64_t extent() const {  // elements spanned: max offset + 1 (0 for an empty tensor)
    int64_t e = 1;
    for (size_t i = 0; i < dims.size(); ++i) {
      if (dims[i] == 0) return 0;
      e += (dims[i] - 1) * strides[i];
    }
    return e;
  }
  bool same_as(const TensorInfo& o) const {
    return dtype == o.dtype && dims == o.dims && strides == o.strides && is_virtual == o.is_virtual;
  }
};

struct ConvInfo {
  int64_t spatial = 0;
  cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  std::vector<int64_t> pre, post, stride, dil;
};

struct PointwiseInfo {
  cudnnPointwiseMode_t mode = CUDNN_POINTWISE_ADD;
  cudnnDataType_t prec = CUDNN_DATA_FLOAT;
  double relu_lower = 0, relu_upper = std::numeric_limits<double>::infinity(), relu_slope = 0;
};

enum class OpType { ConvFwd, ConvBwdData, ConvBwdFilter, Pointwise, SdpaFwd };

/// One operation. Convolutions: x/dx, w/dw, y/dy in x, w, y. Pointwise: x, [b], y. SDPA forward:
/// q, k, v, o in x, w, b, y; [stats]; [scale] (by value; 1 when absent).
struct OpInfo {
  OpType type = OpType::ConvFwd;
  ConvInfo conv;
  PointwiseInfo pw;
  TensorInfo x, w, y, b, stats, scale;
  bool has_b = false, has_stats = false, has_scale = false;
  double alpha = 1, beta = 0;  // convolutions; pointwise: alpha1, alpha2
  int64_t groups = 1;
};

enum class Pattern { ConvFwd, ConvBwdData, ConvBwdFilter, ConvFwdFused, SdpaFwd, Unsupported };

struct GraphInfo {
  std::vector<OpInfo> ops;  // convolution first, then the pointwise chain in execution order
  cudnnHandle_t handle = nullptr;
  Pattern pattern = Pattern::Unsupported;
  std::map<int64_t, TensorInfo> tensors;  // by uid
};

struct EngineInfo {
  std::shared_ptr<const GraphInfo> graph;
  int64_t index = 0;
  std::vector<cudnnBackendNumericalNote_t> notes;
  int64_t workspace = 0;
};

/// Engines the emulated library offers for a graph (the hooks apply here).
std::vector<std::shared_ptr<const EngineInfo>> engines_for(const std::shared_ptr<const GraphInfo>& g) {
  std::vector<std::shared_ptr<const EngineInfo>> out;
  if (g_no_engines || g->pattern == Pattern::Unsupported) return out;
  if (g->pattern == Pattern::ConvFwdFused && !g_fusion_supported) return out;
  if (g->pattern == Pattern::SdpaFwd) {
    // One tensor-core engine (16-bit products exact in fp32 sums), with a workspace as the real
    // flash-attention engines have; CUDL_EMU_REFUSE_ENGINES marks it nondeterministic.
    const OpInfo& op = g->ops.front();
    auto e = std::make_shared<EngineInfo>();
    e->graph = g;
    e->notes = {CUDNN_NUMERICAL_NOTE_TENSOR_CORE};
    e->workspace = 1024;
    uint64_t key = cudl_emu::hash_mix(0x73647061, (uint64_t)g->pattern);
    for (const TensorInfo* t : {&op.x, &op.w, &op.b})
      for (int64_t d : t->dims) key = cudl_emu::hash_mix(key, (uint64_t)d);
    key = cudl_emu::hash_mix(key, (uint64_t)op.x.dtype);
    if (cudl_emu::refuse_engine(key)) e->notes.push_back(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC);
    out.push_back(e);
    return out;
  }
  const OpInfo& conv = g->ops.front();
  auto make = [&](int64_t index, std::vector<cudnnBackendNumericalNote_t> notes, int64_t ws) {
    auto e = std::make_shared<EngineInfo>();
    e->graph = g;
    e->index = index;
    e->notes = std::move(notes);
    e->workspace = ws;
    out.push_back(e);
  };
  switch (g->pattern) {
    case Pattern::ConvFwd:
      make(0, {}, 256);
      break;
    case Pattern::ConvFwdFused:
      make(0, {}, 512);
      break;
    case Pattern::ConvBwdData:
      // Like real cuDNN: the first engine accumulates with atomics (nondeterministic).
      make(0, {CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC}, 0);
      make(1, {}, 1024);
      break;
    case Pattern::ConvBwdFilter: {
      int64_t dw_bytes = 4;
      for (int64_t d : conv.w.dims) dw_bytes *= d;
      make(0, {CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC}, 0);
      make(1, {}, dw_bytes);
      break;
    }
    default:
      break;
  }
  // Like cuDNN on sm80+, a tensor-core engine: last by global index, first in the heuristics'
  // ranking (heuristic_order). It reads fp32 operands as TF32 (notes TENSOR_CORE and
  // DOWN_CONVERT_INPUTS); BFLOAT16/HALF operands it multiplies exactly into fp32 sums (TENSOR_CORE only).
  // It takes NCHW tensors as the others do (real cuDNN's 16-bit tensor-core kernels prefer NHWC).
  if (!out.empty()) {
    if (conv.x.dtype == CUDNN_DATA_FLOAT)
      make(static_cast<int64_t>(out.size()),
           {CUDNN_NUMERICAL_NOTE_TENSOR_CORE, CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS}, 256);
    else
      make(static_cast<int64_t>(out.size()), {CUDNN_NUMERICAL_NOTE_TENSOR_CORE}, 256);
  }
  // CUDL_EMU_REFUSE_ENGINES (emu/runtime.hpp): for some problems no engine is note-free, so the
  // caller's fallback (another engine with a note, or its own implementation) runs.
  uint64_t key = cudl_emu::hash_mix(0x646e6e, (uint64_t)g->pattern);
  for (const TensorInfo* t : {&conv.x, &conv.w, &conv.y})
    for (int64_t d : t->dims) key = cudl_emu::hash_mix(key, (uint64_t)d);
  for (const std::vector<int64_t>* v : {&conv.conv.stride, &conv.conv.pre, &conv.conv.post, &conv.conv.dil})
    for (int64_t x : *v) key = cudl_emu::hash_mix(key, (uint64_t)x);
  key = cudl_emu::hash_mix(key, (uint64_t)conv.groups);
  key = cudl_emu::hash_mix(key, (uint64_t)conv.x.dtype);
  if (cudl_emu::refuse_engine(key)) {
    std::vector<std::shared_ptr<const EngineInfo>> noted;
    for (const auto& e : out) {
      auto n = std::make_shared<EngineInfo>(*e);
      if (std::find(n->notes.begin(), n->notes.end(), CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) == n->notes.end())
        n->notes.push_back(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC);
      noted.push_back(std::move(n));
    }
    out = std::move(noted);
  }
  return out;
}

bool has_note(const EngineInfo& e, cudnnBackendNumericalNote_t note) {
  return std::find(e.notes.begin(), e.notes.end(), note) != e.notes.end();
}

/// The heuristics' ranking: tensor-core engines first (as cuDNN ranks them for fp32 convolutions on
/// sm80+), then the others in global-index order.
std::vector<std::shared_ptr<const EngineInfo>> heuristic_order(std::vector<std::shared_ptr<const EngineInfo>> v) {
  std::stable_partition(v.begin(), v.end(),
                        [](const auto& e) { return has_note(*e, CUDNN_NUMERICAL_NOTE_TENSOR_CORE); });
  return v;
}

struct VariantPackInfo {
  std::vector<int64_t> uids;
  std::vector<void*> ptrs;
  void* workspace = nullptr;
};

// ---------------------------------------------------------------------------------------------
// descriptors and the attribute table
// ---------------------------------------------------------------------------------------------

struct Desc;

struct Attr {
  cudnnBackendAttributeType_t type = CUDNN_TYPE_INT64;
  int64_t count = 0;
  std::vector<unsigned char> bytes;
};

struct Desc {
  cudnnBackendDescriptorType_t type;
  bool finalized = false;
  std::map<int, Attr> attrs;
  // derived at finalize
  std::shared_ptr<const TensorInfo> tensor;
  std::shared_ptr<const ConvInfo> conv;
  std::shared_ptr<const PointwiseInfo> pw;
  std::shared_ptr<const OpInfo> op;
  std::shared_ptr<const GraphInfo> graph;
  std::shared_ptr<const EngineInfo> engine;                // ENGINE, ENGINECFG, EXECUTION_PLAN
  std::vector<std::shared_ptr<const EngineInfo>> results;  // ENGINEHEUR
  VariantPackInfo pack;
  cudnnHandle_t plan_handle = nullptr;
};

std::set<Desc*>& live_descs() {
  static auto* s = new std::set<Desc*>;  // never destroyed, like mu()
  return *s;
}

Desc* as_desc(void* p) {
  if (!p) return nullptr;
  auto* d = static_cast<Desc*>(p);
  return live_descs().count(d) ? d : nullptr;
}

size_t element_size(cudnnBackendAttributeType_t t) {
  switch (t) {
    case CUDNN_TYPE_HANDLE:
      return sizeof(cudnnHandle_t);
    case CUDNN_TYPE_DATA_TYPE:
      return sizeof(cudnnDataType_t);
    case CUDNN_TYPE_BOOLEAN:
      return sizeof(bool);
    case CUDNN_TYPE_INT64:
      return sizeof(int64_t);
    case CUDNN_TYPE_FLOAT:
      return sizeof(float);
    case CUDNN_TYPE_DOUBLE:
      return sizeof(double);
    case CUDNN_TYPE_VOID_PTR:
      return sizeof(void*);
    case CUDNN_TYPE_CONVOLUTION_MODE:
      return sizeof(cudnnConvolutionMode_t);
    case CUDNN_TYPE_HEUR_MODE:
      return sizeof(cudnnBackendHeurMode_t);
    case CUDNN_TYPE_KNOB_TYPE:
      return sizeof(cudnnBackendKnobType_t);
    case CUDNN_TYPE_NUMERICAL_NOTE:
      return sizeof(cudnnBackendNumericalNote_t);
    case CUDNN_TYPE_LAYOUT_TYPE:
      return sizeof(cudnnBackendLayoutType_t);
    case CUDNN_TYPE_ATTRIB_NAME:
      return sizeof(cudnnBackendAttributeName_t);
    case CUDNN_TYPE_POINTWISE_MODE:
      return sizeof(cudnnPointwiseMode_t);
    case CUDNN_TYPE_BACKEND_DESCRIPTOR:
      return sizeof(cudnnBackendDescriptor_t);
    case CUDNN_TYPE_BEHAVIOR_NOTE:
      return sizeof(cudnnBackendBehaviorNote_t);
    case CUDNN_TYPE_TENSOR_REORDERING_MODE:
      return sizeof(cudnnBackendTensorReordering_t);
    case CUDNN_TYPE_INT32:
      return sizeof(int32_t);
    case CUDNN_TYPE_CHAR:
      return sizeof(char);
    default:
      return sizeof(int);
  }
}

constexpr int kAnyOp = -2;  // a BACKEND_DESCRIPTOR attribute holding operation descriptors
constexpr int kNoRef = -1;  // not a descriptor attribute
constexpr int64_t kMany = 1 << 20;

enum Access { kSet = 1, kGet = 2, kBoth = 3 };

struct Spec {
  cudnnBackendDescriptorType_t desc;
  cudnnBackendAttributeName_t name;
  std::vector<cudnnBackendAttributeType_t> types;
  int64_t min_count, max_count;
  int access;
  int ref;  // descriptor type of BACKEND_DESCRIPTOR elements, kAnyOp, or kNoRef
};

const std::vector<Spec>& specs() {
  using D = cudnnBackendDescriptorType_t;
  static const std::vector<Spec> table = [] {
    std::vector<Spec> t;
    auto add = [&](D d, cudnnBackendAttributeName_t n, std::vector<cudnnBackendAttributeType_t> ty, int64_t lo,
                   int64_t hi, int access = kBoth, int ref = kNoRef) {
      t.push_back({d, n, ty, lo, hi, access, ref});
    };
    const auto FD = std::vector<cudnnBackendAttributeType_t>{CUDNN_TYPE_FLOAT, CUDNN_TYPE_DOUBLE};
    const auto DESC = std::vector<cudnnBackendAttributeType_t>{CUDNN_TYPE_BACKEND_DESCRIPTOR};
    const auto I64 = std::vector<cudnnBackendAttributeType_t>{CUDNN_TYPE_INT64};
    // tensor
    D T = CUDNN_BACKEND_TENSOR_DESCRIPTOR;
    add(T, CUDNN_ATTR_TENSOR_UNIQUE_ID, I64, 1, 1);
    add(T, CUDNN_ATTR_TENSOR_DATA_TYPE, {CUDNN_TYPE_DATA_TYPE}, 1, 1);
    add(T, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, I64, 1, 1);
    add(T, CUDNN_ATTR_TENSOR_DIMENSIONS, I64, 1, CUDNN_DIM_MAX);
    add(T, CUDNN_ATTR_TENSOR_STRIDES, I64, 1, CUDNN_DIM_MAX);
    add(T, CUDNN_ATTR_TENSOR_VECTOR_COUNT, I64, 1, 1);
    add(T, CUDNN_ATTR_TENSOR_VECTORIZED_DIMENSION, I64, 1, 1);
    add(T, CUDNN_ATTR_TENSOR_IS_VIRTUAL, {CUDNN_TYPE_BOOLEAN}, 1, 1);
    add(T, CUDNN_ATTR_TENSOR_IS_BY_VALUE, {CUDNN_TYPE_BOOLEAN}, 1, 1);
    add(T, CUDNN_ATTR_TENSOR_REORDERING_MODE, {CUDNN_TYPE_TENSOR_REORDERING_MODE}, 1, 1);
    // convolution
    D C = CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR;
    add(C, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, {CUDNN_TYPE_DATA_TYPE}, 1, 1);
    add(C, CUDNN_ATTR_CONVOLUTION_CONV_MODE, {CUDNN_TYPE_CONVOLUTION_MODE}, 1, 1);
    add(C, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, I64, 1, 1);
    add(C, CUDNN_ATTR_CONVOLUTION_DILATIONS, I64, 1, CUDNN_DIM_MAX - 2);
    add(C, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, I64, 1, CUDNN_DIM_MAX - 2);
    add(C, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, I64, 1, CUDNN_DIM_MAX - 2);
    add(C, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, I64, 1, CUDNN_DIM_MAX - 2);
    // pointwise
    D PW = CUDNN_BACKEND_POINTWISE_DESCRIPTOR;
    add(PW, CUDNN_ATTR_POINTWISE_MODE, {CUDNN_TYPE_POINTWISE_MODE}, 1, 1);
    add(PW, CUDNN_ATTR_POINTWISE_MATH_PREC, {CUDNN_TYPE_DATA_TYPE}, 1, 1);
    add(PW, CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP, FD, 1, 1);
    add(PW, CUDNN_ATTR_POINTWISE_RELU_UPPER_CLIP, FD, 1, 1);
    add(PW, CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP_SLOPE, FD, 1, 1);
    // convolution operations
    D F = CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR;
    add(F, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, FD, 1, 1);
    add(F, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, FD, 1, 1);
    add(F, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC, DESC, 1, 1, kBoth, C);
    add(F, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, DESC, 1, 1, kBoth, T);
    add(F, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, DESC, 1, 1, kBoth, T);
    add(F, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, DESC, 1, 1, kBoth, T);
    D BD = CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR;
    add(BD, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, FD, 1, 1);
    add(BD, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA, FD, 1, 1);
    add(BD, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC, DESC, 1, 1, kBoth, C);
    add(BD, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W, DESC, 1, 1, kBoth, T);
    add(BD, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, DESC, 1, 1, kBoth, T);
    add(BD, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, DESC, 1, 1, kBoth, T);
    D BF = CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR;
    add(BF, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, FD, 1, 1);
    add(BF, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA, FD, 1, 1);
    add(BF, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC, DESC, 1, 1, kBoth, C);
    add(BF, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW, DESC, 1, 1, kBoth, T);
    add(BF, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, DESC, 1, 1, kBoth, T);
    add(BF, CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, DESC, 1, 1, kBoth, T);
    // pointwise operation
    D OP = CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR;
    add(OP, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, DESC, 1, 1, kBoth, PW);
    add(OP, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, DESC, 1, 1, kBoth, T);
    add(OP, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, DESC, 1, 1, kBoth, T);
    add(OP, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, DESC, 1, 1, kBoth, T);
    add(OP, CUDNN_ATTR_OPERATION_POINTWISE_DXDESC, DESC, 1, 1, kBoth, T);
    add(OP, CUDNN_ATTR_OPERATION_POINTWISE_DYDESC, DESC, 1, 1, kBoth, T);
    add(OP, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, DESC, 1, 1, kBoth, T);
    add(OP, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, FD, 1, 1);
    add(OP, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, FD, 1, 1);
    // SDPA forward operation (cuDNN 9.13+)
    D SF = CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR;
    for (cudnnBackendAttributeName_t n :
         {CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC,
          CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC,
          CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_BLOCK_MASK_DESC,
          CUDNN_ATTR_OPERATION_SDPA_FWD_PAGE_TABLE_KDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_PAGE_TABLE_VDESC,
          CUDNN_ATTR_OPERATION_SDPA_FWD_SEQ_LEN_QDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_SEQ_LEN_KVDESC})
      add(SF, n, DESC, 1, 1, kBoth, T);
    // operation graph
    D G = CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR;
    add(G, CUDNN_ATTR_OPERATIONGRAPH_OPS, DESC, 1, kMany, kBoth, kAnyOp);
    add(G, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, {CUDNN_TYPE_HANDLE}, 1, 1);
    add(G, CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT, I64, 1, 1, kGet);
    // heuristics
    D H = CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR;
    add(H, CUDNN_ATTR_ENGINEHEUR_MODE, {CUDNN_TYPE_HEUR_MODE}, 1, 1);
    add(H, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, DESC, 1, 1, kBoth, G);
    add(H, CUDNN_ATTR_ENGINEHEUR_SM_COUNT_TARGET, {CUDNN_TYPE_INT32}, 1, 1);
    add(H, CUDNN_ATTR_ENGINEHEUR_RESULTS, DESC, 0, kMany, kGet, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    // engine
    D E = CUDNN_BACKEND_ENGINE_DESCRIPTOR;
    add(E, CUDNN_ATTR_ENGINE_OPERATION_GRAPH, DESC, 1, 1, kBoth, G);
    add(E, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, I64, 1, 1);
    add(E, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, {CUDNN_TYPE_NUMERICAL_NOTE}, 0, kMany, kGet);
    add(E, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, {CUDNN_TYPE_BEHAVIOR_NOTE}, 0, kMany, kGet);
    add(E, CUDNN_ATTR_ENGINE_KNOB_INFO, DESC, 0, kMany, kGet, CUDNN_BACKEND_KNOB_INFO_DESCRIPTOR);
    add(E, CUDNN_ATTR_ENGINE_LAYOUT_INFO, DESC, 0, kMany, kGet, CUDNN_BACKEND_LAYOUT_INFO_DESCRIPTOR);
    // engine config
    D EC = CUDNN_BACKEND_ENGINECFG_DESCRIPTOR;
    add(EC, CUDNN_ATTR_ENGINECFG_ENGINE, DESC, 1, 1, kBoth, E);
    add(EC, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, DESC, 0, kMany, kBoth, CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
    add(EC, CUDNN_ATTR_ENGINECFG_WORKSPACE_SIZE, I64, 1, 1, kGet);
    // execution plan
    D P = CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR;
    add(P, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, {CUDNN_TYPE_HANDLE}, 1, 1);
    add(P, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, DESC, 1, 1, kBoth, EC);
    add(P, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, I64, 1, 1, kGet);
    // variant pack
    D V = CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR;
    add(V, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, I64, 0, kMany);
    add(V, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, {CUDNN_TYPE_VOID_PTR}, 0, kMany);
    add(V, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, {CUDNN_TYPE_VOID_PTR}, 1, 1);
    return t;
  }();
  return table;
}

const Spec* spec_of(cudnnBackendDescriptorType_t d, cudnnBackendAttributeName_t n) {
  for (const Spec& s : specs())
    if (s.desc == d && s.name == n) return &s;
  return nullptr;
}

bool is_operation_type(cudnnBackendDescriptorType_t t) {
  return t == CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR ||
         t == CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR ||
         t == CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR ||
         t == CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR || t == CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR ||
         t == CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR || t == CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR;
}

// Typed access to stored attributes (only after the spec check, so the type is known).
bool has(const Desc& d, cudnnBackendAttributeName_t n) { return d.attrs.count(n) != 0; }
const Attr& attr(const Desc& d, cudnnBackendAttributeName_t n) { return d.attrs.at(n); }
template <typename T>
T scalar(const Desc& d, cudnnBackendAttributeName_t n) {
  T v;
  std::memcpy(&v, attr(d, n).bytes.data(), sizeof(T));
  return v;
}
template <typename T>
std::vector<T> array(const Desc& d, cudnnBackendAttributeName_t n) {
  const Attr& a = attr(d, n);
  std::vector<T> v(static_cast<size_t>(a.count));
  if (a.count) std::memcpy(v.data(), a.bytes.data(), sizeof(T) * v.size());
  return v;
}
double real(const Desc& d, cudnnBackendAttributeName_t n, double fallback) {
  if (!has(d, n)) return fallback;
  return attr(d, n).type == CUDNN_TYPE_FLOAT ? scalar<float>(d, n) : scalar<double>(d, n);
}
/// The descriptor referenced by a one-element descriptor attribute (live, or null).
Desc* ref(const Desc& d, cudnnBackendAttributeName_t n) {
  if (!has(d, n)) return nullptr;
  return as_desc(scalar<void*>(d, n));
}

// ---------------------------------------------------------------------------------------------
// finalize, per descriptor type
// ---------------------------------------------------------------------------------------------

const char* kTypeNames[] = {"POINTWISE",
                            "CONVOLUTION",
                            "ENGINE",
                            "ENGINECFG",
                            "ENGINEHEUR",
                            "EXECUTION_PLAN",
                            "INTERMEDIATE_INFO",
                            "KNOB_CHOICE",
                            "KNOB_INFO",
                            "LAYOUT_INFO",
                            "OPERATION_CONVOLUTION_FORWARD",
                            "OPERATION_CONVOLUTION_BACKWARD_FILTER",
                            "OPERATION_CONVOLUTION_BACKWARD_DATA",
                            "OPERATION_POINTWISE",
                            "OPERATION_GEN_STATS",
                            "OPERATIONGRAPH",
                            "VARIANT_PACK",
                            "TENSOR"};
std::string type_name(cudnnBackendDescriptorType_t t) {
  const int k = static_cast<int>(t);
  return k >= 0 && k < static_cast<int>(sizeof(kTypeNames) / sizeof(kTypeNames[0]))
             ? std::string("CUDNN_BACKEND_") + kTypeNames[k] + "_DESCRIPTOR"
             : "descriptor type " + std::to_string(k);
}

/// Missing-required-attribute check: returns the first absent attribute or -1.
int missing(const Desc& d, std::initializer_list<cudnnBackendAttributeName_t> required) {
  for (auto n : required)
    if (!has(d, n)) return n;
  return -1;
}

/// A referenced descriptor must be live and finalized.
cudnnStatus_t referenced(const Desc& d, cudnnBackendAttributeName_t n, Desc** out) {
  Desc* r = ref(d, n);
  if (!r) return fail(CUDNN_STATUS_BAD_PARAM, "attribute " + std::to_string(n) + " refers to a destroyed descriptor");
  if (!r->finalized)
    return fail(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED,
                "attribute " + std::to_string(n) + " refers to a " + type_name(r->type) + " that is not finalized");
  *out = r;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t finalize_tensor(Desc& d) {
  int m = missing(d, {CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT,
                      CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_ATTR_TENSOR_STRIDES});
  if (m >= 0) return fail(CUDNN_STATUS_BAD_PARAM, "tensor: required attribute " + std::to_string(m) + " not set");
  auto t = std::make_shared<TensorInfo>();
  t->uid = scalar<int64_t>(d, CUDNN_ATTR_TENSOR_UNIQUE_ID);
  t->dtype = scalar<cudnnDataType_t>(d, CUDNN_ATTR_TENSOR_DATA_TYPE);
  t->alignment = scalar<int64_t>(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT);
  t->dims = array<int64_t>(d, CUDNN_ATTR_TENSOR_DIMENSIONS);
  t->strides = array<int64_t>(d, CUDNN_ATTR_TENSOR_STRIDES);
  t->is_virtual = has(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL) && scalar<bool>(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL);
  t->by_value = has(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE) && scalar<bool>(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE);
  if (t->dims.size() != t->strides.size())
    return fail(CUDNN_STATUS_BAD_PARAM, "tensor: " + std::to_string(t->dims.size()) + " dimensions but " +
                                            std::to_string(t->strides.size()) + " strides");
  // cuDNN 9.19 accepts empty dimensions and does not check strides for overlap.
  for (size_t i = 0; i < t->dims.size(); ++i)
    if (t->dims[i] < 0 || t->strides[i] <= 0)
      return fail(CUDNN_STATUS_BAD_PARAM,
                  "tensor: dimension " + std::to_string(i) + " must be >= 0 and its stride positive");
  if (t->alignment <= 0 || (t->alignment & (t->alignment - 1)) != 0)
    return fail(CUDNN_STATUS_BAD_PARAM,
                "tensor: byte alignment " + std::to_string(t->alignment) + " is not a positive power of two");
  if (t->is_virtual && t->by_value) return fail(CUDNN_STATUS_BAD_PARAM, "tensor: virtual and by-value");
  if (has(d, CUDNN_ATTR_TENSOR_VECTOR_COUNT) && scalar<int64_t>(d, CUDNN_ATTR_TENSOR_VECTOR_COUNT) != 1)
    return fail(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT, "tensor: vectorized layouts are not emulated");
  d.tensor = t;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t finalize_convolution(Desc& d) {
  int m = missing(
      d, {CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS,
          CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS,
          CUDNN_ATTR_CONVOLUTION_POST_PADDINGS});
  if (m >= 0) return fail(CUDNN_STATUS_BAD_PARAM, "convolution: required attribute " + std::to_string(m) + " not set");
  auto c = std::make_shared<ConvInfo>();
  c->spatial = scalar<int64_t>(d, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS);
  c->comp = scalar<cudnnDataType_t>(d, CUDNN_ATTR_CONVOLUTION_COMP_TYPE);
  c->mode = scalar<cudnnConvolutionMode_t>(d, CUDNN_ATTR_CONVOLUTION_CONV_MODE);
  c->pre = array<int64_t>(d, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS);
  c->post = array<int64_t>(d, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS);
  c->stride = array<int64_t>(d, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES);
  c->dil = array<int64_t>(d, CUDNN_ATTR_CONVOLUTION_DILATIONS);
  if (c->spatial < 1 || c->spatial > CUDNN_DIM_MAX - 2)
    return fail(CUDNN_STATUS_BAD_PARAM, "convolution: spatial dims " + std::to_string(c->spatial));
  const size_t n = static_cast<size_t>(c->spatial);
  if (c->pre.size() != n || c->post.size() != n || c->stride.size() != n || c->dil.size() != n)
    return fail(CUDNN_STATUS_BAD_PARAM,
                "convolution: paddings, strides and dilations need CONVOLUTION_SPATIAL_DIMS = " + std::to_string(n) +
                    " elements each");
  if (c->mode != CUDNN_CONVOLUTION && c->mode != CUDNN_CROSS_CORRELATION)
    return fail(CUDNN_STATUS_BAD_PARAM, "convolution: invalid mode");
  for (size_t i = 0; i < n; ++i)
    if (c->stride[i] < 1 || c->dil[i] < 1 || c->pre[i] < 0 || c->post[i] < 0)
      return fail(CUDNN_STATUS_BAD_PARAM, "convolution: strides and dilations must be >= 1, paddings >= 0");
  d.conv = c;
  return CUDNN_STATUS_SUCCESS;
}

bool binary_mode(cudnnPointwiseMode_t m) {
  return m == CUDNN_POINTWISE_ADD || m == CUDNN_POINTWISE_SUB || m == CUDNN_POINTWISE_MUL || m == CUDNN_POINTWISE_DIV ||
         m == CUDNN_POINTWISE_MAX || m == CUDNN_POINTWISE_MIN || m == CUDNN_POINTWISE_ADD_SQUARE ||
         m == CUDNN_POINTWISE_MOD || m == CUDNN_POINTWISE_POW;
}

cudnnStatus_t finalize_pointwise(Desc& d) {
  int m = missing(d, {CUDNN_ATTR_POINTWISE_MODE, CUDNN_ATTR_POINTWISE_MATH_PREC});
  if (m >= 0) return fail(CUDNN_STATUS_BAD_PARAM, "pointwise: required attribute " + std::to_string(m) + " not set");
  auto p = std::make_shared<PointwiseInfo>();
  p->mode = scalar<cudnnPointwiseMode_t>(d, CUDNN_ATTR_POINTWISE_MODE);
  p->prec = scalar<cudnnDataType_t>(d, CUDNN_ATTR_POINTWISE_MATH_PREC);
  p->relu_lower = real(d, CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP, 0.0);
  p->relu_upper = real(d, CUDNN_ATTR_POINTWISE_RELU_UPPER_CLIP, std::numeric_limits<double>::infinity());
  p->relu_slope = real(d, CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP_SLOPE, 0.0);
  d.pw = p;
  return CUDNN_STATUS_SUCCESS;
}

bool is_storage_type(cudnnDataType_t t) {
  return t == CUDNN_DATA_FLOAT || t == CUDNN_DATA_HALF || t == CUDNN_DATA_BFLOAT16;
}

std::string dtype_text(cudnnDataType_t t) {
  switch (t) {
    case CUDNN_DATA_FLOAT:
      return "FLOAT";
    case CUDNN_DATA_HALF:
      return "HALF";
    case CUDNN_DATA_BFLOAT16:
      return "BFLOAT16";
    case CUDNN_DATA_DOUBLE:
      return "DOUBLE";
    default:
      return "data type " + std::to_string(static_cast<int>(t));
  }
}

size_t dtype_bytes(cudnnDataType_t t) { return t == CUDNN_DATA_HALF || t == CUDNN_DATA_BFLOAT16 ? 2 : 4; }

/// Output size of one spatial dimension (0 when the filter does not fit).
int64_t conv_out(int64_t in, int64_t pre, int64_t post, int64_t k, int64_t dil, int64_t stride) {
  const int64_t span = in + pre + post - dil * (k - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

cudnnStatus_t finalize_conv_op(Desc& d, OpType type) {
  cudnnBackendAttributeName_t ax, aw, ay, ac, aa, ab;
  const char* what;
  if (type == OpType::ConvFwd) {
    ax = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, aw = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W;
    ay = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, ac = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC;
    aa = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, ab = CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA;
    what = "convolution forward";
  } else if (type == OpType::ConvBwdData) {
    ax = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX, aw = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W;
    ay = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY, ac = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC;
    aa = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA, ab = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA;
    what = "convolution backward-data";
  } else {
    ax = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X, aw = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW;
    ay = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY, ac = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC;
    aa = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA, ab = CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA;
    what = "convolution backward-filter";
  }
  int m = missing(d, {ax, aw, ay, ac});  // alpha and beta are optional (1 and 0)
  if (m >= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, std::string(what) + ": required attribute " + std::to_string(m) + " not set");
  Desc *x, *w, *y, *c;
  for (auto [n, out] : {std::pair{ax, &x}, std::pair{aw, &w}, std::pair{ay, &y}, std::pair{ac, &c}}) {
    cudnnStatus_t s = referenced(d, n, out);
    if (s != CUDNN_STATUS_SUCCESS) return s;
  }
  auto op = std::make_shared<OpInfo>();
  op->type = type;
  op->conv = *c->conv;
  op->x = *x->tensor, op->w = *w->tensor, op->y = *y->tensor;
  op->alpha = real(d, aa, 1.0);
  op->beta = real(d, ab, 0.0);
  const size_t sd = static_cast<size_t>(op->conv.spatial);
  const TensorInfo &X = op->x, &W = op->w, &Y = op->y;
  if (X.dims.size() != sd + 2 || W.dims.size() != sd + 2 || Y.dims.size() != sd + 2)
    return fail(CUDNN_STATUS_BAD_PARAM,
                std::string(what) + ": tensors need spatial dims + 2 = " + std::to_string(sd + 2) + " dimensions");
  for (const TensorInfo* t : {&X, &W, &Y})
    for (int64_t v : t->dims)
      if (v == 0) return fail(CUDNN_STATUS_NOT_SUPPORTED_SHAPE, std::string(what) + ": empty tensors are not emulated");
  if (X.dims[1] % W.dims[1] != 0)
    return fail(CUDNN_STATUS_BAD_PARAM, std::string(what) + ": input channels " + std::to_string(X.dims[1]) +
                                            " not a multiple of filter channels " + std::to_string(W.dims[1]));
  op->groups = X.dims[1] / W.dims[1];
  if (W.dims[0] % op->groups != 0 || Y.dims[1] != W.dims[0] || Y.dims[0] != X.dims[0])
    return fail(CUDNN_STATUS_BAD_PARAM, std::string(what) + ": batch or channel counts disagree");
  for (size_t i = 0; i < sd; ++i) {
    const int64_t o =
        conv_out(X.dims[2 + i], op->conv.pre[i], op->conv.post[i], W.dims[2 + i], op->conv.dil[i], op->conv.stride[i]);
    if (o <= 0 || o != Y.dims[2 + i])
      return fail(CUDNN_STATUS_BAD_PARAM, std::string(what) + ": output spatial dimension " + std::to_string(i) +
                                              " is " + std::to_string(Y.dims[2 + i]) + ", the convolution gives " +
                                              std::to_string(o));
  }
  // cuDNN's convolution type configurations: x, w and y of one type (FLOAT, or HALF/BFLOAT16 with a
  // FLOAT compute type: "pseudo" half/bfloat16); a virtual y (the input of a fused pointwise chain)
  // may be FLOAT. A HALF compute type ("true half") is real but not emulated.
  if (!is_storage_type(X.dtype))
    return fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE,
                std::string(what) + ": x has data type " + dtype_text(X.dtype) + " (FLOAT, HALF or BFLOAT16)");
  if (W.dtype != X.dtype || (Y.dtype != X.dtype && !(Y.is_virtual && Y.dtype == CUDNN_DATA_FLOAT)))
    return fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, std::string(what) + ": mixed tensor types: x " +
                                                          dtype_text(X.dtype) + ", w " + dtype_text(W.dtype) + ", y " +
                                                          dtype_text(Y.dtype) + (Y.is_virtual ? " (virtual)" : ""));
  if (op->conv.comp != CUDNN_DATA_FLOAT)
    return fail(
        CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE,
        std::string(what) + ": compute type " + dtype_text(op->conv.comp) + ": the emulator computes fp32 only");
  d.op = op;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t finalize_pointwise_op(Desc& d) {
  int m = missing(d, {CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_ATTR_OPERATION_POINTWISE_XDESC,
                      CUDNN_ATTR_OPERATION_POINTWISE_YDESC});
  if (m >= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, "pointwise operation: required attribute " + std::to_string(m) + " not set");
  Desc *pw, *x, *y, *b = nullptr;
  cudnnStatus_t s;
  if ((s = referenced(d, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, &pw)) != CUDNN_STATUS_SUCCESS) return s;
  if ((s = referenced(d, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, &x)) != CUDNN_STATUS_SUCCESS) return s;
  if ((s = referenced(d, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, &y)) != CUDNN_STATUS_SUCCESS) return s;
  const bool binary = binary_mode(pw->pw->mode);
  if (binary && !has(d, CUDNN_ATTR_OPERATION_POINTWISE_BDESC))
    return fail(CUDNN_STATUS_BAD_PARAM, "pointwise operation: a binary mode needs OPERATION_POINTWISE_BDESC");
  if (has(d, CUDNN_ATTR_OPERATION_POINTWISE_BDESC) &&
      (s = referenced(d, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, &b)) != CUDNN_STATUS_SUCCESS)
    return s;
  auto op = std::make_shared<OpInfo>();
  op->type = OpType::Pointwise;
  op->pw = *pw->pw;
  op->x = *x->tensor;
  op->y = *y->tensor;
  if (b) op->b = *b->tensor, op->has_b = true;
  op->alpha = real(d, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, 1.0);
  op->beta = real(d, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, 1.0);
  if (op->x.dims != op->y.dims)
    return fail(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH, "pointwise operation: x and y dimensions differ");
  for (const TensorInfo* t : {&op->x, &op->y, op->has_b ? &op->b : &op->x})
    if (!is_storage_type(t->dtype))
      return fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE,
                  "pointwise operation: data type " + dtype_text(t->dtype) + " is not emulated");
  if (op->pw.prec != CUDNN_DATA_FLOAT)
    return fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE,
                "pointwise operation: math precision " + dtype_text(op->pw.prec) + ": the emulator computes fp32 only");
  if (op->has_b) {
    if (op->b.dims.size() != op->y.dims.size())
      return fail(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH, "pointwise operation: b has another rank than y");
    for (size_t i = 0; i < op->b.dims.size(); ++i)
      if (op->b.dims[i] != 1 && op->b.dims[i] != op->y.dims[i])
        return fail(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH,
                    "pointwise operation: b dimension " + std::to_string(i) + " neither 1 nor y's");
  }
  d.op = op;
  return CUDNN_STATUS_SUCCESS;
}

/// SDPA forward: q (B, H, Sq, D), k (B, H, Skv, D), v (B, H, Skv, Dv), o (B, H, Sq, Dv) of one 16-bit
/// type, any strides; stats (B, H, Sq, 1) FLOAT; scale a by-value FLOAT of one element.
cudnnStatus_t finalize_sdpa_op(Desc& d) {
  int m = missing(d, {CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC,
                      CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC});
  if (m >= 0) return fail(CUDNN_STATUS_BAD_PARAM, "SDPA forward: required attribute " + std::to_string(m) + " not set");
  for (cudnnBackendAttributeName_t n :
       {CUDNN_ATTR_OPERATION_SDPA_FWD_BLOCK_MASK_DESC, CUDNN_ATTR_OPERATION_SDPA_FWD_PAGE_TABLE_KDESC,
        CUDNN_ATTR_OPERATION_SDPA_FWD_PAGE_TABLE_VDESC, CUDNN_ATTR_OPERATION_SDPA_FWD_SEQ_LEN_QDESC,
        CUDNN_ATTR_OPERATION_SDPA_FWD_SEQ_LEN_KVDESC})
    if (has(d, n))
      return fail(CUDNN_STATUS_NOT_SUPPORTED,
                  "SDPA forward: block masks, paged and variable-length sequences are not emulated");
  Desc *q, *k, *v, *o, *stats = nullptr, *scale = nullptr;
  cudnnStatus_t s;
  for (auto [n, out] :
       {std::pair{CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, &q}, std::pair{CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, &k},
        std::pair{CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, &v}, std::pair{CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, &o}})
    if ((s = referenced(d, n, out)) != CUDNN_STATUS_SUCCESS) return s;
  if (has(d, CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC) &&
      (s = referenced(d, CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, &stats)) != CUDNN_STATUS_SUCCESS)
    return s;
  if (has(d, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC) &&
      (s = referenced(d, CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, &scale)) != CUDNN_STATUS_SUCCESS)
    return s;
  auto op = std::make_shared<OpInfo>();
  op->type = OpType::SdpaFwd;
  op->x = *q->tensor, op->w = *k->tensor, op->b = *v->tensor, op->y = *o->tensor;
  if (stats) op->stats = *stats->tensor, op->has_stats = true;
  if (scale) op->scale = *scale->tensor, op->has_scale = true;
  const TensorInfo &Q = op->x, &K = op->w, &V = op->b, &O = op->y;
  for (const TensorInfo* t : {&Q, &K, &V, &O})
    if (t->dims.size() != 4) return fail(CUDNN_STATUS_BAD_PARAM, "SDPA forward: q, k, v and o need 4 dimensions");
  for (const TensorInfo* t : {&Q, &K, &V, &O})
    if (t->is_virtual)
      return fail(CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN, "SDPA forward: virtual tensors are not emulated");
  if (K.dims[0] != Q.dims[0] || V.dims[0] != Q.dims[0] || O.dims[0] != Q.dims[0] || K.dims[1] != Q.dims[1] ||
      V.dims[1] != Q.dims[1] || O.dims[1] != Q.dims[1] || O.dims[2] != Q.dims[2] || V.dims[2] != K.dims[2] ||
      K.dims[3] != Q.dims[3] || O.dims[3] != V.dims[3])
    return fail(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH,
                "SDPA forward: q (B, H, Sq, D), k (B, H, Skv, D), v (B, H, Skv, Dv), o (B, H, Sq, Dv) disagree "
                "(grouped heads are not emulated)");
  for (const TensorInfo* t : {&Q, &K, &V, &O})
    for (int64_t x : t->dims)
      if (x == 0) return fail(CUDNN_STATUS_NOT_SUPPORTED_SHAPE, "SDPA forward: empty tensors are not emulated");
  if (Q.dtype != CUDNN_DATA_HALF && Q.dtype != CUDNN_DATA_BFLOAT16)
    return fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE,
                "SDPA forward: q has data type " + dtype_text(Q.dtype) + " (HALF or BFLOAT16)");
  if (K.dtype != Q.dtype || V.dtype != Q.dtype || O.dtype != Q.dtype)
    return fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, "SDPA forward: q, k, v and o must have one data type");
  if (Q.dims[3] % 8 != 0 || V.dims[3] % 8 != 0 || Q.dims[3] > 256 || V.dims[3] > 256)
    return fail(CUDNN_STATUS_NOT_SUPPORTED_SHAPE, "SDPA forward: head sizes " + std::to_string(Q.dims[3]) + " and " +
                                                      std::to_string(V.dims[3]) + " (multiples of 8 up to 256)");
  if (op->has_stats) {
    const TensorInfo& S = op->stats;
    if (S.dtype != CUDNN_DATA_FLOAT || S.is_virtual ||
        S.dims != std::vector<int64_t>{Q.dims[0], Q.dims[1], Q.dims[2], 1})
      return fail(CUDNN_STATUS_BAD_PARAM, "SDPA forward: stats must be a FLOAT (B, H, Sq, 1) tensor in memory");
  }
  if (op->has_scale) {
    const TensorInfo& S = op->scale;
    if (S.dtype != CUDNN_DATA_FLOAT || !S.by_value || S.extent() != 1)
      return fail(CUDNN_STATUS_BAD_PARAM, "SDPA forward: the scale must be one by-value FLOAT");
  }
  d.op = op;
  return CUDNN_STATUS_SUCCESS;
}

bool valid_handle(cudnnHandle_t h) { return h && live_handles().count(h) != 0; }

/// Recognises the supported patterns; also checks uid consistency and virtual-tensor wiring.
cudnnStatus_t finalize_graph(Desc& d) {
  // The handle is optional since cuDNN 9.8 (device properties may stand in); checked when given.
  if (!has(d, CUDNN_ATTR_OPERATIONGRAPH_OPS))
    return fail(CUDNN_STATUS_BAD_PARAM, "operation graph: required attribute OPERATIONGRAPH_OPS not set");
  auto g = std::make_shared<GraphInfo>();
  if (has(d, CUDNN_ATTR_OPERATIONGRAPH_HANDLE)) {
    g->handle = scalar<cudnnHandle_t>(d, CUDNN_ATTR_OPERATIONGRAPH_HANDLE);
    if (!valid_handle(g->handle)) return fail(CUDNN_STATUS_BAD_PARAM, "operation graph: invalid cuDNN handle");
  }
  std::vector<OpInfo> ops;
  for (void* p : array<void*>(d, CUDNN_ATTR_OPERATIONGRAPH_OPS)) {
    Desc* o = as_desc(p);
    if (!o) return fail(CUDNN_STATUS_BAD_PARAM, "operation graph: an operation descriptor was destroyed");
    if (!o->finalized || !o->op)
      return fail(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "operation graph: an operation is not finalized");
    ops.push_back(*o->op);
  }
  // uid consistency and producers/consumers
  std::map<int64_t, int> produced, consumed;
  auto note = [&](const TensorInfo& t, bool output) -> cudnnStatus_t {
    auto it = g->tensors.find(t.uid);
    if (it != g->tensors.end() && !it->second.same_as(t))
      return fail(CUDNN_STATUS_BAD_PARAM,
                  "operation graph: two different tensors share unique id " + std::to_string(t.uid));
    g->tensors[t.uid] = t;
    (output ? produced : consumed)[t.uid]++;
    return CUDNN_STATUS_SUCCESS;
  };
  for (const OpInfo& o : ops) {
    cudnnStatus_t s = CUDNN_STATUS_SUCCESS;
    switch (o.type) {
      case OpType::ConvFwd:
        if ((s = note(o.x, false)) || (s = note(o.w, false)) || (s = note(o.y, true))) return s;
        break;
      case OpType::ConvBwdData:
        if ((s = note(o.y, false)) || (s = note(o.w, false)) || (s = note(o.x, true))) return s;
        break;
      case OpType::ConvBwdFilter:
        if ((s = note(o.x, false)) || (s = note(o.y, false)) || (s = note(o.w, true))) return s;
        break;
      case OpType::Pointwise:
        if ((s = note(o.x, false)) || (o.has_b && (s = note(o.b, false))) || (s = note(o.y, true))) return s;
        break;
      case OpType::SdpaFwd:
        if ((s = note(o.x, false)) || (s = note(o.w, false)) || (s = note(o.b, false)) ||
            (o.has_scale && (s = note(o.scale, false))) || (s = note(o.y, true)) ||
            (o.has_stats && (s = note(o.stats, true))))
          return s;
        break;
    }
  }
  for (const auto& [uid, t] : g->tensors) {
    if (produced[uid] > 1)
      return fail(CUDNN_STATUS_BAD_PARAM,
                  "operation graph: tensor " + std::to_string(uid) + " written by two operations");
    // A virtual tensor nobody reads finalizes (as in cuDNN 9.19); such a graph has no engine.
  }
  // pattern: exactly one convolution; pointwise ops form a chain from its output
  int n_conv = 0, n_sdpa = 0;
  for (const OpInfo& o : ops) n_conv += o.type != OpType::Pointwise && o.type != OpType::SdpaFwd;
  for (const OpInfo& o : ops) n_sdpa += o.type == OpType::SdpaFwd;
  g->pattern = Pattern::Unsupported;
  if (n_sdpa == 1 && ops.size() == 1) {  // the SDPA operation alone
    g->ops = ops;
    g->pattern = Pattern::SdpaFwd;
  } else if (n_conv == 1 && n_sdpa == 0) {
    const OpInfo* conv = nullptr;
    for (const OpInfo& o : ops)
      if (o.type != OpType::Pointwise) conv = &o;
    g->ops.push_back(*conv);
    if (conv->conv.spatial == 2) {
      if (ops.size() == 1) {
        bool any_virtual = conv->x.is_virtual || conv->w.is_virtual || conv->y.is_virtual;
        if (!any_virtual)
          g->pattern = conv->type == OpType::ConvFwd       ? Pattern::ConvFwd
                       : conv->type == OpType::ConvBwdData ? Pattern::ConvBwdData
                                                           : Pattern::ConvBwdFilter;
      } else if (conv->type == OpType::ConvFwd && conv->y.is_virtual && !conv->x.is_virtual && !conv->w.is_virtual) {
        int64_t cur = conv->y.uid;
        bool ok = true;
        std::vector<bool> used(ops.size(), false);
        for (size_t step = 1; step < ops.size() && ok; ++step) {
          const OpInfo* next = nullptr;
          for (size_t i = 0; i < ops.size(); ++i)
            if (!used[i] && ops[i].type == OpType::Pointwise && ops[i].x.uid == cur) next = &ops[i], used[i] = true;
          ok = next && (next->pw.mode == CUDNN_POINTWISE_ADD || next->pw.mode == CUDNN_POINTWISE_RELU_FWD) &&
               (!next->has_b || !next->b.is_virtual);
          if (ok) {
            g->ops.push_back(*next);
            cur = next->y.uid;
          }
        }
        if (ok && !g->tensors[cur].is_virtual) g->pattern = Pattern::ConvFwdFused;
      }
    }
  }
  if (g->pattern == Pattern::Unsupported) g->ops = ops;
  d.graph = g;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t finalize_heuristics(Desc& d) {
  int m = missing(d, {CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH});
  if (m >= 0)
    return fail(CUDNN_STATUS_BAD_PARAM, "engine heuristics: required attribute " + std::to_string(m) + " not set");
  const auto mode = scalar<cudnnBackendHeurMode_t>(d, CUDNN_ATTR_ENGINEHEUR_MODE);
  if (mode < CUDNN_HEUR_MODE_INSTANT || mode >= CUDNN_HEUR_MODES_COUNT)
    return fail(CUDNN_STATUS_BAD_PARAM, "engine heuristics: invalid mode");
  Desc* g;
  cudnnStatus_t s = referenced(d, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, &g);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  d.results = heuristic_order(engines_for(g->graph));
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t finalize_engine(Desc& d) {
  int m = missing(d, {CUDNN_ATTR_ENGINE_OPERATION_GRAPH, CUDNN_ATTR_ENGINE_GLOBAL_INDEX});
  if (m >= 0) return fail(CUDNN_STATUS_BAD_PARAM, "engine: required attribute " + std::to_string(m) + " not set");
  Desc* g;
  cudnnStatus_t s = referenced(d, CUDNN_ATTR_ENGINE_OPERATION_GRAPH, &g);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  const int64_t index = scalar<int64_t>(d, CUDNN_ATTR_ENGINE_GLOBAL_INDEX);
  auto all = engines_for(g->graph);
  if (index < 0 || index >= static_cast<int64_t>(all.size()))
    return fail(CUDNN_STATUS_BAD_PARAM, "engine: global index " + std::to_string(index) + " out of range (" +
                                            std::to_string(all.size()) + " engines)");
  d.engine = all[static_cast<size_t>(index)];
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t finalize_engine_config(Desc& d) {
  if (!has(d, CUDNN_ATTR_ENGINECFG_ENGINE))
    return fail(CUDNN_STATUS_BAD_PARAM, "engine config: required attribute ENGINECFG_ENGINE not set");
  Desc* e;
  cudnnStatus_t s = referenced(d, CUDNN_ATTR_ENGINECFG_ENGINE, &e);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  d.engine = e->engine;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t finalize_plan(Desc& d) {
  // Like libcudnn 9.19: a plan without an (finalized) engine config is BAD_PARAM_NOT_FINALIZED; the
  // handle is optional (device properties may stand in) but checked when given.
  if (!has(d, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG))
    return fail(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "execution plan: EXECUTION_PLAN_ENGINE_CONFIG not set");
  if (has(d, CUDNN_ATTR_EXECUTION_PLAN_HANDLE)) {
    d.plan_handle = scalar<cudnnHandle_t>(d, CUDNN_ATTR_EXECUTION_PLAN_HANDLE);
    if (!valid_handle(d.plan_handle)) return fail(CUDNN_STATUS_BAD_PARAM, "execution plan: invalid cuDNN handle");
  }
  Desc* cfg;
  cudnnStatus_t s = referenced(d, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, &cfg);
  if (s != CUDNN_STATUS_SUCCESS) return s;
  d.engine = cfg->engine;
  g_counters.plans_finalized++;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t finalize_variant_pack(Desc& d) {
  VariantPackInfo v;
  if (has(d, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS)) v.uids = array<int64_t>(d, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS);
  if (has(d, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS)) v.ptrs = array<void*>(d, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS);
  if (has(d, CUDNN_ATTR_VARIANT_PACK_WORKSPACE)) v.workspace = scalar<void*>(d, CUDNN_ATTR_VARIANT_PACK_WORKSPACE);
  if (v.uids.size() != v.ptrs.size())
    return fail(CUDNN_STATUS_BAD_PARAM, "variant pack: " + std::to_string(v.uids.size()) + " unique ids but " +
                                            std::to_string(v.ptrs.size()) + " data pointers");
  d.pack = v;
  return CUDNN_STATUS_SUCCESS;
}

// ---------------------------------------------------------------------------------------------
// execution: naive loops, double accumulation, on host views of emulated device memory
// ---------------------------------------------------------------------------------------------

/// A 4-D tensor: device memory (FLOAT, HALF or BFLOAT16: reads widen, writes round to nearest even)
/// or a virtual tensor's host buffer (double).
struct View {
  TensorInfo t;
  void* f = nullptr;
  std::shared_ptr<std::vector<double>> v;
  int64_t off(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return a * t.strides[0] + b * t.strides[1] + c * t.strides[2] + d * t.strides[3];
  }
  double get(int64_t a, int64_t b, int64_t c, int64_t d) const {
    const int64_t o = off(a, b, c, d);
    if (!f) return (*v)[static_cast<size_t>(o)];
    switch (t.dtype) {
      case CUDNN_DATA_HALF:
        return cudl::half_bits_to_float(static_cast<const uint16_t*>(f)[o]);
      case CUDNN_DATA_BFLOAT16:
        return cudl::bf16_bits_to_float(static_cast<const uint16_t*>(f)[o]);
      default:
        return static_cast<const float*>(f)[o];
    }
  }
  void set(int64_t a, int64_t b, int64_t c, int64_t d, double x) const {
    const int64_t o = off(a, b, c, d);
    if (!f) {
      (*v)[static_cast<size_t>(o)] = x;
      return;
    }
    const float x32 = static_cast<float>(x);  // the fp32 result, then one rounding to the storage type
    switch (t.dtype) {
      case CUDNN_DATA_HALF:
        static_cast<uint16_t*>(f)[o] = cudl::float_to_half_bits(x32);
        break;
      case CUDNN_DATA_BFLOAT16:
        static_cast<uint16_t*>(f)[o] = cudl::float_to_bf16_bits(x32);
        break;
      default:
        static_cast<float*>(f)[o] = x32;
    }
  }
  /// Broadcast read: dimensions of size 1 are repeated.
  double get_bcast(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return get(t.dims[0] == 1 ? 0 : a, t.dims[1] == 1 ? 0 : b, t.dims[2] == 1 ? 0 : c, t.dims[3] == 1 ? 0 : d);
  }
};

/// out = alpha * acc + beta * out (beta ignored for virtual outputs, which have no prior value).
/// A convolution's sum of products: double, or float with fused multiply-adds in loop order
/// (CUDL_EMU_ACCUMULATE=fp32, as the hardware's FP32 accumulators).
struct Accumulator {
  bool tf32 = false;  // a DOWN_CONVERT_INPUTS engine: operands read as TF32 (cudl_emu::round_tf32)
  bool f32 = cudl_emu::accumulate_fp32();
  double d = 0;
  float f = 0;
  void add(double a, double b) {
    if (tf32) {
      a = cudl_emu::round_tf32(static_cast<float>(a));
      b = cudl_emu::round_tf32(static_cast<float>(b));
    }
    if (f32)
      f = std::fmaf((float)a, (float)b, f);
    else
      d += a * b;
  }
  double value() const { return f32 ? (double)f : d; }
};

void store(const View& out, const OpInfo& op, int64_t a, int64_t b, int64_t c, int64_t d, double acc) {
  double v = op.alpha * acc;
  if (op.beta != 0 && out.f) v += op.beta * out.get(a, b, c, d);
  out.set(a, b, c, d, v);
}

void run_conv(const OpInfo& op, const View& x, const View& w, const View& y, bool tf32) {
  const auto& X = op.x.dims;
  const auto& Wd = op.w.dims;
  const auto& Y = op.y.dims;
  const int64_t N = X[0], C = X[1], H = X[2], Wi = X[3], K = Wd[0], Cg = Wd[1], R = Wd[2], S = Wd[3], P = Y[2],
                Q = Y[3];
  const int64_t Kg = K / op.groups;
  const int64_t sh = op.conv.stride[0], sw = op.conv.stride[1], ph = op.conv.pre[0], pw = op.conv.pre[1],
                dh = op.conv.dil[0], dw = op.conv.dil[1];
  const bool flip = op.conv.mode == CUDNN_CONVOLUTION;
  auto fr = [&](int64_t r) { return flip ? R - 1 - r : r; };
  auto fs = [&](int64_t s) { return flip ? S - 1 - s : s; };
  switch (op.type) {
    case OpType::ConvFwd:
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
          const int64_t g = k / Kg;
          for (int64_t p = 0; p < P; ++p)
            for (int64_t q = 0; q < Q; ++q) {
              Accumulator acc;
              acc.tf32 = tf32;
              for (int64_t c = 0; c < Cg; ++c)
                for (int64_t r = 0; r < R; ++r) {
                  const int64_t ih = p * sh - ph + r * dh;
                  if (ih < 0 || ih >= H) continue;
                  for (int64_t s = 0; s < S; ++s) {
                    const int64_t iw = q * sw - pw + s * dw;
                    if (iw < 0 || iw >= Wi) continue;
                    acc.add(x.get(n, g * Cg + c, ih, iw), w.get(k, c, fr(r), fs(s)));
                  }
                }
              store(y, op, n, k, p, q, acc.value());
            }
        }
      break;
    case OpType::ConvBwdData:  // x is dx, y is dy
      for (int64_t n = 0; n < N; ++n)
        for (int64_t ci = 0; ci < C; ++ci) {
          const int64_t g = ci / Cg, c = ci % Cg;
          for (int64_t h = 0; h < H; ++h)
            for (int64_t wi = 0; wi < Wi; ++wi) {
              Accumulator acc;
              acc.tf32 = tf32;
              for (int64_t kk = 0; kk < Kg; ++kk) {
                const int64_t k = g * Kg + kk;
                for (int64_t r = 0; r < R; ++r) {
                  const int64_t hh = h + ph - r * dh;
                  if (hh < 0 || hh % sh != 0 || hh / sh >= P) continue;
                  for (int64_t s = 0; s < S; ++s) {
                    const int64_t ww = wi + pw - s * dw;
                    if (ww < 0 || ww % sw != 0 || ww / sw >= Q) continue;
                    acc.add(y.get(n, k, hh / sh, ww / sw), w.get(k, c, fr(r), fs(s)));
                  }
                }
              }
              store(x, op, n, ci, h, wi, acc.value());
            }
        }
      break;
    case OpType::ConvBwdFilter:  // w is dw, y is dy
      for (int64_t k = 0; k < K; ++k) {
        const int64_t g = k / Kg;
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t r = 0; r < R; ++r)
            for (int64_t s = 0; s < S; ++s) {
              Accumulator acc;
              acc.tf32 = tf32;
              for (int64_t n = 0; n < N; ++n)
                for (int64_t p = 0; p < P; ++p) {
                  const int64_t ih = p * sh - ph + r * dh;
                  if (ih < 0 || ih >= H) continue;
                  for (int64_t q = 0; q < Q; ++q) {
                    const int64_t iw = q * sw - pw + s * dw;
                    if (iw < 0 || iw >= Wi) continue;
                    acc.add(y.get(n, k, p, q), x.get(n, g * Cg + c, ih, iw));
                  }
                }
              store(w, op, k, c, fr(r), fs(s), acc.value());
            }
      }
      break;
    default:
      break;
  }
}

void run_pointwise(const OpInfo& op, const View& x, const View* b, const View& y) {
  const auto& D = op.y.dims;
  for (int64_t i0 = 0; i0 < D[0]; ++i0)
    for (int64_t i1 = 0; i1 < D[1]; ++i1)
      for (int64_t i2 = 0; i2 < D[2]; ++i2)
        for (int64_t i3 = 0; i3 < D[3]; ++i3) {
          const double v = x.get(i0, i1, i2, i3);
          double out = v;
          if (op.pw.mode == CUDNN_POINTWISE_ADD) {
            out = op.alpha * v + op.beta * b->get_bcast(i0, i1, i2, i3);
          } else if (op.pw.mode == CUDNN_POINTWISE_RELU_FWD) {
            const double a = op.alpha * v;
            if (std::isnan(a))
              out = a;
            else if (a <= op.pw.relu_lower)
              out = op.pw.relu_lower + op.pw.relu_slope * (a - op.pw.relu_lower);
            else
              out = std::min(a, op.pw.relu_upper);
          }
          y.set(i0, i1, i2, i3, out);
        }
}

/// SDPA forward per (b, h, i): s_j = scale * q_i.k_j, lse = log sum_j exp(s_j) (the stats),
/// o_i = sum_j p_j v_j with p_j = exp(s_j - lse) rounded to the storage type (the tensor-core GEMM's
/// operand), each o element rounded once at the store.
void run_sdpa(const OpInfo& op, const View& q, const View& k, const View& v, const View& o, const View* stats,
              double scale) {
  const auto& Q = op.x.dims;
  const int64_t B = Q[0], H = Q[1], Sq = Q[2], D = Q[3], Skv = op.w.dims[2], Dv = op.b.dims[3];
  const bool half = op.x.dtype == CUDNN_DATA_HALF;
  std::vector<double> s(static_cast<size_t>(Skv)), p(static_cast<size_t>(Skv));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < Sq; ++i) {
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Skv; ++j) {
          Accumulator acc;
          for (int64_t c = 0; c < D; ++c) acc.add(q.get(b, h, i, c), k.get(b, h, j, c));
          s[j] = static_cast<float>(scale * acc.value());  // the fp32 score
          mx = std::max(mx, s[j]);
        }
        double z = 0;
        for (int64_t j = 0; j < Skv; ++j) z += std::exp(s[j] - mx);
        const double lse = mx + std::log(z);
        for (int64_t j = 0; j < Skv; ++j) {
          const float pj = static_cast<float>(std::exp(s[j] - lse));
          p[j] = half ? cudl::half_bits_to_float(cudl::float_to_half_bits(pj))
                      : cudl::bf16_bits_to_float(cudl::float_to_bf16_bits(pj));
        }
        if (stats) stats->set(b, h, i, 0, lse);
        for (int64_t c = 0; c < Dv; ++c) {
          Accumulator acc;
          for (int64_t j = 0; j < Skv; ++j) acc.add(p[j], v.get(b, h, j, c));
          o.set(b, h, i, c, acc.value());
        }
      }
}

/// Runs a finalized graph with the variant pack's pointers (called on the stream); `by_value` holds
/// the by-value tensors' values, copied when the graph was executed.
void run_graph(const GraphInfo& g, const std::map<int64_t, void*>& ptrs, const std::map<int64_t, double>& by_value,
               void* workspace, int64_t workspace_bytes, bool tf32) {
  std::map<int64_t, View> views;
  for (const auto& [uid, t] : g.tensors) {
    if (t.by_value) continue;
    View v;
    v.t = t;
    if (t.is_virtual)
      v.v = std::make_shared<std::vector<double>>(static_cast<size_t>(t.extent()), 0.0);
    else
      v.f = ptrs.at(uid);
    views.emplace(uid, v);
  }
  // The engine uses its workspace: scribble over it, so a caller that aliases it with live data
  // sees garbage.
  if (workspace && workspace_bytes > 0) std::memset(workspace, 0xff, static_cast<size_t>(workspace_bytes));
  for (const OpInfo& op : g.ops) {
    if (op.type == OpType::SdpaFwd)
      run_sdpa(op, views.at(op.x.uid), views.at(op.w.uid), views.at(op.b.uid), views.at(op.y.uid),
               op.has_stats ? &views.at(op.stats.uid) : nullptr, op.has_scale ? by_value.at(op.scale.uid) : 1.0);
    else if (op.type == OpType::Pointwise)
      run_pointwise(op, views.at(op.x.uid), op.has_b ? &views.at(op.b.uid) : nullptr, views.at(op.y.uid));
    else
      run_conv(op, views.at(op.x.uid), views.at(op.w.uid), views.at(op.y.uid), tf32);
  }
}

// ---------------------------------------------------------------------------------------------
// attribute set/get
// ---------------------------------------------------------------------------------------------

cudnnStatus_t fail(cudnnStatus_t st, const std::string& what) {
  g_last_error = std::string(cudnnGetErrorString(st)) + ": " + what;
  return st;
}

/// Copies a finalized engine description into a caller-created ENGINE descriptor.
void fill_engine(Desc& out, const std::shared_ptr<const EngineInfo>& e) {
  out.attrs.clear();
  Attr idx{CUDNN_TYPE_INT64, 1, std::vector<unsigned char>(sizeof(int64_t))};
  std::memcpy(idx.bytes.data(), &e->index, sizeof(int64_t));
  out.attrs[CUDNN_ATTR_ENGINE_GLOBAL_INDEX] = idx;
  out.engine = e;
  out.finalized = true;
}

void fill_engine_config(Desc& out, const std::shared_ptr<const EngineInfo>& e) {
  out.attrs.clear();
  out.engine = e;
  out.finalized = true;
}

template <typename T>
cudnnStatus_t give(const std::vector<T>& values, int64_t requested, int64_t* count, void* array) {
  *count = static_cast<int64_t>(values.size());
  if (array) std::memcpy(array, values.data(), sizeof(T) * static_cast<size_t>(std::min<int64_t>(requested, *count)));
  return CUDNN_STATUS_SUCCESS;
}

}  // namespace

void cudnn_set_no_engines(bool none) {
  std::lock_guard<std::recursive_mutex> lock(mu());
  g_no_engines = none;
}
void cudnn_set_fusion_supported(bool supported) {
  std::lock_guard<std::recursive_mutex> lock(mu());
  g_fusion_supported = supported;
}
CudnnCounters cudnn_counters() {
  std::lock_guard<std::recursive_mutex> lock(mu());
  return g_counters;
}
void cudnn_reset_counters() {
  std::lock_guard<std::recursive_mutex> lock(mu());
  g_counters = CudnnCounters{};
}

}  // namespace cudl_emu

using namespace cudl_emu;

// -------------------------------------------------------------------------------------------------
// the C API
// -------------------------------------------------------------------------------------------------

extern "C" {

size_t cudnnGetVersion(void) { return CUDNN_VERSION; }
size_t cudnnGetMaxDeviceVersion(void) { return CUDNN_MAX_DEVICE_VERSION; }
size_t cudnnGetCudartVersion(void) { return CUDART_VERSION; }

cudnnStatus_t cudnnGetProperty(libraryPropertyType type, int* value) {
  if (!value) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnGetProperty: value is null");
  switch (type) {
    case MAJOR_VERSION:
      *value = CUDNN_MAJOR;
      return CUDNN_STATUS_SUCCESS;
    case MINOR_VERSION:
      *value = CUDNN_MINOR;
      return CUDNN_STATUS_SUCCESS;
    case PATCH_LEVEL:
      *value = CUDNN_PATCHLEVEL;
      return CUDNN_STATUS_SUCCESS;
  }
  return fail(CUDNN_STATUS_BAD_PARAM, "cudnnGetProperty: invalid property type");
}

cudnnStatus_t cudnnGraphVersionCheck(void) { return CUDNN_STATUS_SUCCESS; }

const char* cudnnGetErrorString(cudnnStatus_t s) {
  switch (s) {
#define CUDL_EMU_STATUS(x) \
  case x:                  \
    return #x;
    CUDL_EMU_STATUS(CUDNN_STATUS_SUCCESS)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_INITIALIZED)
    CUDL_EMU_STATUS(CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH)
    CUDL_EMU_STATUS(CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH)
    CUDL_EMU_STATUS(CUDNN_STATUS_DEPRECATED)
    CUDL_EMU_STATUS(CUDNN_STATUS_LICENSE_ERROR)
    CUDL_EMU_STATUS(CUDNN_STATUS_RUNTIME_IN_PROGRESS)
    CUDL_EMU_STATUS(CUDNN_STATUS_RUNTIME_FP_OVERFLOW)
    CUDL_EMU_STATUS(CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_NULL_POINTER)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_CUDA_GRAPH_MISMATCH)
    CUDL_EMU_STATUS(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_SHAPE)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_LAYOUT)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_PADDING)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_CUDA_GRAPH_NATIVE_API)
    CUDL_EMU_STATUS(CUDNN_STATUS_NOT_SUPPORTED_INVALID_DYNAMIC_SHAPE)
    CUDL_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR)
    CUDL_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED)
    CUDL_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE)
    CUDL_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED)
    CUDL_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
    CUDL_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM)
    CUDL_EMU_STATUS(CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED)
    CUDL_EMU_STATUS(CUDNN_STATUS_EXECUTION_FAILED)
    CUDL_EMU_STATUS(CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER)
    CUDL_EMU_STATUS(CUDNN_STATUS_EXECUTION_FAILED_CUBLAS)
    CUDL_EMU_STATUS(CUDNN_STATUS_EXECUTION_FAILED_CUDART)
    CUDL_EMU_STATUS(CUDNN_STATUS_EXECUTION_FAILED_CURAND)
    case 2001:
      return "CUDNN_STATUS_INVALID_VALUE";
#undef CUDL_EMU_STATUS
  }
  return "CUDNN_STATUS_UNKNOWN";
}

void cudnnGetLastErrorString(char* message, size_t max_size) {
  if (!message || max_size == 0) return;
  std::strncpy(message, g_last_error.c_str(), max_size - 1);
  message[max_size - 1] = '\0';
  g_last_error.clear();
}

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) {
  if (!handle) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnCreate: handle is null");
  std::lock_guard<std::recursive_mutex> lock(mu());
  *handle = new cudnnContext();
  live_handles().insert(*handle);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
  std::lock_guard<std::recursive_mutex> lock(mu());
  if (!valid_handle(handle)) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnDestroy: invalid handle");
  live_handles().erase(handle);
  delete handle;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(mu());
  if (!valid_handle(handle)) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream: invalid handle");
  handle->stream = stream;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetStream(cudnnHandle_t handle, cudaStream_t* stream) {
  std::lock_guard<std::recursive_mutex> lock(mu());
  if (!valid_handle(handle)) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnGetStream: invalid handle");
  if (!stream) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnGetStream: stream is null");
  *stream = handle->stream;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendCreateDescriptor(cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t* descriptor) {
  if (!descriptor) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnBackendCreateDescriptor: descriptor is null");
  if (type < CUDNN_BACKEND_POINTWISE_DESCRIPTOR || type > CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendCreateDescriptor: invalid descriptor type");
  std::lock_guard<std::recursive_mutex> lock(mu());
  auto* d = new Desc();
  d->type = type;
  live_descs().insert(d);
  *descriptor = d;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendDestroyDescriptor(cudnnBackendDescriptor_t descriptor) {
  std::lock_guard<std::recursive_mutex> lock(mu());
  Desc* d = as_desc(descriptor);
  if (!d) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendDestroyDescriptor: not a live descriptor");
  live_descs().erase(d);
  delete d;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendSetAttribute(cudnnBackendDescriptor_t descriptor, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t count, const void* values) {
  // Status codes follow what libcudnn 9.19 returns (checked against the real library): a null
  // descriptor is BAD_PARAM_NULL_POINTER, a null array or a finalized descriptor plain BAD_PARAM.
  std::lock_guard<std::recursive_mutex> lock(mu());
  if (!descriptor) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnBackendSetAttribute: descriptor is null");
  Desc* d = as_desc(descriptor);
  if (!d) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendSetAttribute: not a live descriptor");
  if (d->finalized)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendSetAttribute: " + type_name(d->type) + " is already finalized");
  const Spec* s = spec_of(d->type, name);
  if (!s || !(s->access & kSet))
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendSetAttribute: attribute " + std::to_string(name) +
                                            " cannot be set on a " + type_name(d->type));
  // A wrong type is BAD_PARAM_ATTRIBUTE_TYPE for single-type attributes, plain BAD_PARAM for the
  // FLOAT-or-DOUBLE ones (alpha, beta, clips), as the real library answers.
  if (std::find(s->types.begin(), s->types.end(), type) == s->types.end())
    return fail(s->types.size() == 1 ? CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE : CUDNN_STATUS_BAD_PARAM,
                "cudnnBackendSetAttribute: attribute " + std::to_string(name) + " of " + type_name(d->type) +
                    " does not take type " + std::to_string(type));
  if (count < s->min_count || count > s->max_count)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendSetAttribute: attribute " + std::to_string(name) + " of " +
                                            type_name(d->type) + " takes " + std::to_string(s->min_count) + ".." +
                                            std::to_string(s->max_count) + " elements, got " + std::to_string(count));
  if (count > 0 && !values) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendSetAttribute: arrayOfElements is null");
  if (type == CUDNN_TYPE_BACKEND_DESCRIPTOR) {
    auto* elems = static_cast<void* const*>(values);
    for (int64_t i = 0; i < count; ++i) {
      Desc* e = as_desc(elems[i]);
      if (!e)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnBackendSetAttribute: element " + std::to_string(i) + " is not a live descriptor");
      const bool ok = s->ref == kAnyOp ? is_operation_type(e->type) : static_cast<int>(e->type) == s->ref;
      if (!ok)
        return fail(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE, "cudnnBackendSetAttribute: attribute " +
                                                                std::to_string(name) + " of " + type_name(d->type) +
                                                                " got a " + type_name(e->type));
    }
  }
  Attr a;
  a.type = type;
  a.count = count;
  a.bytes.resize(element_size(type) * static_cast<size_t>(count));
  if (count) std::memcpy(a.bytes.data(), values, a.bytes.size());
  d->attrs[name] = std::move(a);
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendFinalize(cudnnBackendDescriptor_t descriptor) {
  std::lock_guard<std::recursive_mutex> lock(mu());
  Desc* d = as_desc(descriptor);
  if (!d) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendFinalize: not a live descriptor");
  if (d->finalized) return CUDNN_STATUS_SUCCESS;
  cudnnStatus_t s;
  switch (d->type) {
    case CUDNN_BACKEND_TENSOR_DESCRIPTOR:
      s = finalize_tensor(*d);
      break;
    case CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR:
      s = finalize_convolution(*d);
      break;
    case CUDNN_BACKEND_POINTWISE_DESCRIPTOR:
      s = finalize_pointwise(*d);
      break;
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR:
      s = finalize_conv_op(*d, OpType::ConvFwd);
      break;
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR:
      s = finalize_conv_op(*d, OpType::ConvBwdData);
      break;
    case CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR:
      s = finalize_conv_op(*d, OpType::ConvBwdFilter);
      break;
    case CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR:
      s = finalize_pointwise_op(*d);
      break;
    case CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR:
      s = finalize_sdpa_op(*d);
      break;
    case CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR:
      s = finalize_graph(*d);
      break;
    case CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR:
      s = finalize_heuristics(*d);
      break;
    case CUDNN_BACKEND_ENGINE_DESCRIPTOR:
      s = finalize_engine(*d);
      break;
    case CUDNN_BACKEND_ENGINECFG_DESCRIPTOR:
      s = finalize_engine_config(*d);
      break;
    case CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR:
      s = finalize_plan(*d);
      break;
    case CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR:
      s = finalize_variant_pack(*d);
      break;
    case CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR:
      s = CUDNN_STATUS_SUCCESS;
      break;
    default:
      s = fail(CUDNN_STATUS_NOT_SUPPORTED, "cudnnBackendFinalize: " + type_name(d->type) + " is not emulated");
  }
  if (s == CUDNN_STATUS_SUCCESS) d->finalized = true;
  return s;
}

cudnnStatus_t cudnnBackendGetAttribute(cudnnBackendDescriptor_t const descriptor, cudnnBackendAttributeName_t name,
                                       cudnnBackendAttributeType_t type, int64_t requested, int64_t* count,
                                       void* values) {
  std::lock_guard<std::recursive_mutex> lock(mu());
  Desc* d = as_desc(descriptor);
  if (!d) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendGetAttribute: not a live descriptor");
  const Spec* s = spec_of(d->type, name);
  if (!s)
    return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendGetAttribute: attribute " + std::to_string(name) +
                                            " does not exist on a " + type_name(d->type));
  if (std::find(s->types.begin(), s->types.end(), type) == s->types.end())
    return fail(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE, "cudnnBackendGetAttribute: attribute " + std::to_string(name) +
                                                           " of " + type_name(d->type) + " is not of type " +
                                                           std::to_string(type));
  if (!d->finalized)
    return fail(CUDNN_STATUS_NOT_INITIALIZED, "cudnnBackendGetAttribute: " + type_name(d->type) + " is not finalized");
  if (!count) return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER, "cudnnBackendGetAttribute: elementCount is null");
  if (requested < 0) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendGetAttribute: negative requestedElementCount");

  // Descriptor-valued results are written into caller-created descriptors of the right type.
  auto fill_targets = [&](int64_t n, cudnnBackendDescriptorType_t want,
                          const std::function<void(Desc&, int64_t)>& fill) -> cudnnStatus_t {
    *count = n;
    if (!values) return CUDNN_STATUS_SUCCESS;
    auto* out = static_cast<void**>(values);
    for (int64_t i = 0; i < std::min(requested, n); ++i) {
      Desc* t = as_desc(out[i]);
      if (!t)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnBackendGetAttribute: output element " + std::to_string(i) + " is not a live descriptor");
      if (t->type != want)
        return fail(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE,
                    "cudnnBackendGetAttribute: output element " + std::to_string(i) + " must be a " + type_name(want));
      fill(*t, i);
    }
    return CUDNN_STATUS_SUCCESS;
  };

  switch (name) {
    case CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT:
      return give(std::vector<int64_t>{static_cast<int64_t>(engines_for(d->graph).size())}, requested, count, values);
    case CUDNN_ATTR_ENGINEHEUR_RESULTS:
      return fill_targets(static_cast<int64_t>(d->results.size()), CUDNN_BACKEND_ENGINECFG_DESCRIPTOR,
                          [&](Desc& t, int64_t i) { fill_engine_config(t, d->results[static_cast<size_t>(i)]); });
    case CUDNN_ATTR_ENGINECFG_ENGINE:
      return fill_targets(1, CUDNN_BACKEND_ENGINE_DESCRIPTOR, [&](Desc& t, int64_t) { fill_engine(t, d->engine); });
    case CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG:
      return fill_targets(1, CUDNN_BACKEND_ENGINECFG_DESCRIPTOR,
                          [&](Desc& t, int64_t) { fill_engine_config(t, d->engine); });
    case CUDNN_ATTR_ENGINE_NUMERICAL_NOTE:
      return give(d->engine->notes, requested, count, values);
    case CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE:
      return give(std::vector<cudnnBackendBehaviorNote_t>{}, requested, count, values);
    case CUDNN_ATTR_ENGINE_KNOB_INFO:
    case CUDNN_ATTR_ENGINE_LAYOUT_INFO:
      *count = 0;
      return CUDNN_STATUS_SUCCESS;
    case CUDNN_ATTR_ENGINECFG_WORKSPACE_SIZE:
    case CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE:
      return give(std::vector<int64_t>{d->engine->workspace}, requested, count, values);
    default:
      break;
  }
  // Anything else returns what was set (descriptor-valued ones copy the referenced descriptor).
  auto it = d->attrs.find(name);
  if (it == d->attrs.end()) {
    *count = 0;
    return CUDNN_STATUS_SUCCESS;
  }
  const Attr& a = it->second;
  if (a.type != type)
    return fail(CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE, "cudnnBackendGetAttribute: attribute " + std::to_string(name) +
                                                           " was set with type " + std::to_string(a.type));
  if (type == CUDNN_TYPE_BACKEND_DESCRIPTOR) {  // copies of the referenced descriptors
    auto* src = reinterpret_cast<void* const*>(a.bytes.data());
    *count = a.count;
    if (!values) return CUDNN_STATUS_SUCCESS;
    auto* out = static_cast<void**>(values);
    for (int64_t i = 0; i < std::min(requested, a.count); ++i) {
      Desc* from = as_desc(src[i]);
      Desc* t = as_desc(out[i]);
      if (!from)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendGetAttribute: the referenced descriptor was destroyed");
      if (!t)
        return fail(CUDNN_STATUS_BAD_PARAM,
                    "cudnnBackendGetAttribute: output element " + std::to_string(i) + " is not a live descriptor");
      if (t->type != from->type)
        return fail(
            CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE,
            "cudnnBackendGetAttribute: output element " + std::to_string(i) + " must be a " + type_name(from->type));
      if (t != from) *t = *from;
    }
    return CUDNN_STATUS_SUCCESS;
  }
  *count = a.count;
  if (values)
    std::memcpy(values, a.bytes.data(), element_size(type) * static_cast<size_t>(std::min(requested, a.count)));
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnBackendExecute(cudnnHandle_t handle, cudnnBackendDescriptor_t plan_desc,
                                  cudnnBackendDescriptor_t pack_desc) {
  std::lock_guard<std::recursive_mutex> lock(mu());
  if (!valid_handle(handle)) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendExecute: invalid handle");
  Desc* plan = as_desc(plan_desc);
  Desc* pack = as_desc(pack_desc);
  if (!plan || !pack) return fail(CUDNN_STATUS_BAD_PARAM, "cudnnBackendExecute: not a live descriptor");
  if (plan->type != CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR || pack->type != CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)
    return fail(CUDNN_STATUS_BAD_PARAM_DESCRIPTOR_TYPE,
                "cudnnBackendExecute: needs an execution plan and a variant pack");
  if (!plan->finalized || !pack->finalized)
    return fail(CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED, "cudnnBackendExecute: plan or variant pack not finalized");
  const auto engine = plan->engine;
  const auto graph = engine->graph;
  std::map<int64_t, void*> ptrs;
  for (size_t i = 0; i < pack->pack.uids.size(); ++i)
    if (!ptrs.emplace(pack->pack.uids[i], pack->pack.ptrs[i]).second)
      return fail(CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES,
                  "cudnnBackendExecute: the variant pack repeats unique id " + std::to_string(pack->pack.uids[i]));
  std::map<int64_t, double> by_value;  // copied now: the caller's host value may not outlive the call
  for (const auto& [uid, t] : graph->tensors) {
    if (t.is_virtual) continue;
    auto it = ptrs.find(uid);
    if (t.by_value && it != ptrs.end() && it->second) {
      if (t.dtype != CUDNN_DATA_FLOAT)
        return fail(CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE, "cudnnBackendExecute: by-value tensors are FLOAT here");
      by_value[uid] = *static_cast<const float*>(it->second);
      continue;
    }
    if (it == ptrs.end())
      return fail(CUDNN_STATUS_BAD_PARAM,
                  "cudnnBackendExecute: the variant pack has no pointer for tensor " + std::to_string(uid));
    if (!it->second)
      return fail(CUDNN_STATUS_BAD_PARAM_NULL_POINTER,
                  "cudnnBackendExecute: tensor " + std::to_string(uid) + " is null");
    if (reinterpret_cast<uintptr_t>(it->second) % static_cast<uintptr_t>(t.alignment) != 0)
      return fail(CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER, "cudnnBackendExecute: tensor " + std::to_string(uid) +
                                                                 " is not aligned to " + std::to_string(t.alignment) +
                                                                 " bytes");
    if (!is_device_range(it->second, static_cast<size_t>(t.extent()) * dtype_bytes(t.dtype)))
      return fail(CUDNN_STATUS_BAD_PARAM,
                  "cudnnBackendExecute: tensor " + std::to_string(uid) + " does not lie inside one device allocation");
  }
  const int64_t ws = engine->workspace;
  const bool tf32 = has_note(*engine, CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS);
  void* workspace = pack->pack.workspace;
  if (ws > 0 && (!workspace || !is_device_range(workspace, static_cast<size_t>(ws))))
    return fail(CUDNN_STATUS_BAD_PARAM,
                "cudnnBackendExecute: the plan needs " + std::to_string(ws) + " bytes of device workspace");
  cudaError_t err =
      enqueue(handle->stream, WorkKind::Library, "cudnnBackendExecute",
              [graph, ptrs, by_value, workspace, ws, tf32] { run_graph(*graph, ptrs, by_value, workspace, ws, tf32); });
  if (err != cudaSuccess)
    return fail(CUDNN_STATUS_EXECUTION_FAILED, std::string("cudnnBackendExecute: ") + cudaGetErrorString(err));
  g_counters.executions++;
  g_counters.last_engine = engine->index;
  g_counters.last_fused = graph->pattern == Pattern::ConvFwdFused;
  return CUDNN_STATUS_SUCCESS;
}

}  // extern "C"
