// cuda/cudnn_graph.cpp — RAII backend descriptors, tensor descriptors, the plan search and the
// execution that conv.cpp and sdpa.cpp share (cuda/cudnn_graph.hpp).
#include "cuda/cudnn_graph.hpp"

#include <algorithm>
#include <cstdio>

#include "backend/backend.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"

namespace cudl::dnn {

std::string status_text(cudnnStatus_t s) { return cudnnGetErrorString(s); }

Desc::Desc(cudnnBackendDescriptorType_t type) { CUDL_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_)); }

Desc::~Desc() {
  if (d_ && cudnnBackendDestroyDescriptor(d_) != CUDNN_STATUS_SUCCESS)
    std::fprintf(stderr, "cudl: cudnnBackendDestroyDescriptor failed\n");
}

void Desc::set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count, const void* values,
               const char* what) {
  cudnnStatus_t s = cudnnBackendSetAttribute(d_, name, type, count, values);
  if (s != CUDNN_STATUS_SUCCESS) CUDL_FAIL("cuDNN error: setting ", what, ": ", status_text(s));
}

void Desc::set_desc(cudnnBackendAttributeName_t name, const Desc& d, const char* what) {
  cudnnBackendDescriptor_t v = d.get();
  set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &v, what);
}

void Desc::finalize(const char* what) {
  cudnnStatus_t s = cudnnBackendFinalize(d_);
  if (s == CUDNN_STATUS_SUCCESS) return;
  if (CUDNN_STATUS_CATEGORY(s) == CUDNN_STATUS_NOT_SUPPORTED)
    throw Unsupported{std::string(what) + " finalize: " + status_text(s)};
  CUDL_FAIL("cuDNN error: finalizing ", what, ": ", status_text(s));
}

int64_t alignment_of(DType storage, std::initializer_list<const void*> ptrs) {
  const int64_t element = static_cast<int64_t>(dtype_size(storage));
  int64_t a = 16;
  for (const void* p : ptrs)
    if (p)
      while (a > element && reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(a) != 0) a /= 2;
  return a;
}

cudnnDataType_t cudnn_dtype(DType t) {
  switch (t) {
    case DType::bf16:
      return CUDNN_DATA_BFLOAT16;
    case DType::f16:
      return CUDNN_DATA_HALF;
    default:
      return CUDNN_DATA_FLOAT;
  }
}

Desc make_tensor(int64_t uid, const std::vector<int64_t>& dims, const std::vector<int64_t>& strides, int64_t alignment,
                 bool is_virtual, cudnnDataType_t dtype, bool by_value) {
  Desc t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dtype, "TENSOR_DATA_TYPE");
  t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, static_cast<int64_t>(dims.size()), dims.data(),
        "TENSOR_DIMENSIONS");
  t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, static_cast<int64_t>(strides.size()), strides.data(),
        "TENSOR_STRIDES");
  t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "TENSOR_UNIQUE_ID");
  t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "TENSOR_BYTE_ALIGNMENT");
  bool v = is_virtual;
  t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v, "TENSOR_IS_VIRTUAL");
  if (by_value) {
    bool b = true;
    t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &b, "TENSOR_IS_BY_VALUE");
  }
  t.finalize("tensor");
  return t;
}

namespace {

/// Why an engine config is not acceptable (empty when it is). Tensor-core engines are what 16-bit
/// storage wants (16-bit products are exact in fp32 accumulators); for fp32 tensors they read TF32,
/// allowed only in the TF32 math mode. DOWN_CONVERT_INPUTS means reading below the storage precision.
std::string rejection(cudnnBackendDescriptor_t cfg, bool allow_tf32, bool storage16) {
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
    if (!allow_tf32 && notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS)
      return storage16 ? "down-converts its inputs" : "tf32 tensor cores";
    if (!allow_tf32 && !storage16 && notes[i] == CUDNN_NUMERICAL_NOTE_TENSOR_CORE) return "tf32 tensor cores";
  }
  return {};
}

}  // namespace

void find_plan(cudnnHandle_t handle, Plan& p, bool allow_tf32, bool storage16) {
  std::vector<cudnnBackendDescriptor_t> ops;
  for (const Desc& d : p.graph_ops.ops) ops.push_back(d.get());
  p.graph.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops.size()),
              ops.data(), "OPERATIONGRAPH_OPS");
  p.graph.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "OPERATIONGRAPH_HANDLE");
  p.graph.finalize("operation graph");

  // INSTANT heuristics first; FALLBACK mode lists the generic engines, which matter when every
  // INSTANT choice is filtered out (TF32 or nondeterministic).
  std::string reasons;
  int64_t total = 0;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_INSTANT, CUDNN_HEUR_MODE_FALLBACK}) {
    const char* mode_name = mode == CUDNN_HEUR_MODE_INSTANT ? "instant" : "fallback";
    p.heuristics.emplace_back(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    Desc& heur = p.heuristics.back();
    heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, p.graph, "ENGINEHEUR_OPERATION_GRAPH");
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
    const size_t first = p.configs.size();
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      p.configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(p.configs.back().get());
    }
    int64_t got = 0;
    CUDL_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                              count, &got, raw.data()));
    got = std::min(got, count);
    total += got;
    for (int64_t i = 0; i < got; ++i) {
      std::string why = rejection(raw[i], allow_tf32, storage16);
      if (why.empty()) {
        Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
        plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "EXECUTION_PLAN_HANDLE");
        plan.set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, p.configs[first + i], "EXECUTION_PLAN_ENGINE_CONFIG");
        cudnnStatus_t s = cudnnBackendFinalize(plan.get());
        if (s == CUDNN_STATUS_SUCCESS) {
          int64_t n = 0;
          CUDL_CUDNN_CHECK(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                    CUDNN_TYPE_INT64, 1, &n, &p.workspace));
          p.plan = std::move(plan);
          p.uids = p.graph_ops.uids;
          return;
        }
        why = "plan finalize: " + status_text(s);
      }
      reasons += (reasons.empty() ? "" : ", ") + (std::string(mode_name) + " config " + std::to_string(i) + ": " + why);
    }
  }
  if (total == 0 && reasons.empty()) throw Unsupported{"heuristics returned no engine config"};
  throw Unsupported{std::to_string(total) + " engine config(s), none usable: " + reasons};
}

void execute(CudaContext& ctx, const Plan& plan, std::initializer_list<std::pair<int64_t, void*>> tensors,
             const char* who) {
  std::vector<int64_t> uids;
  std::vector<void*> ptrs;
  for (int64_t uid : plan.uids)
    for (const auto& t : tensors)
      if (t.first == uid) {
        uids.push_back(uid);
        ptrs.push_back(t.second);
      }
  if (uids.size() != plan.uids.size()) CUDL_FAIL(who, ": a tensor of the cuDNN plan has no data pointer");
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

}  // namespace cudl::dnn
