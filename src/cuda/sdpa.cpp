// cuda/sdpa.cpp — the Attention op's forward on cuDNN's fused attention (cuda/sdpa.hpp): one
// SDPA forward operation (cuDNN >= 9.13) in a graph of its own, q, k, v and o in their (B, T, H*D)
// layout declared as (B, H, T, D) with strides (T*H*D, D, H*D, 1) (cuDNN's BSHD), the log-sum-exp
// statistics as (B, H, Tq, 1) f32 (cudl's lse, what the backward kernel reads), the scale a by-value
// f32 scalar. The tensors are 16-bit and the compute type fp32 (cuDNN's default), so the plan runs on
// the tensor cores; like every flash-attention kernel it rounds the softmax weights to the storage
// type before their product with v (the emulator does the same), where the CPU reference keeps them
// in fp32 — the parity tests' tolerance says so.
#include "cuda/sdpa.hpp"

#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cuda/cudnn_graph.hpp"
#include "ops/common.hpp"

namespace cudl {
namespace {

using dnn::Desc;
using dnn::Unsupported;

constexpr int64_t kUidQ = 1, kUidK = 2, kUidV = 3, kUidO = 4, kUidStats = 5, kUidScale = 6;

/// (B, T, H*W) in memory as cuDNN's (B, H, T, W): heads interleaved in the features.
Desc make_bshd(int64_t uid, int64_t b, int64_t h, int64_t t, int64_t w, int64_t alignment, cudnnDataType_t dtype) {
  return dnn::make_tensor(uid, {b, h, t, w}, {t * h * w, w, h * w, 1}, alignment, false, dtype);
}

dnn::Graph build_graph(const ops::AttentionArgs& a, int64_t alignment) {
  dnn::Graph g;
  const cudnnDataType_t dt = dnn::cudnn_dtype(a.storage);
  Desc q = make_bshd(kUidQ, a.batch, a.heads, a.tq, a.d, alignment, dt);
  Desc k = make_bshd(kUidK, a.batch, a.heads, a.tk, a.d, alignment, dt);
  Desc v = make_bshd(kUidV, a.batch, a.heads, a.tk, a.dv_dim, alignment, dt);
  Desc o = make_bshd(kUidO, a.batch, a.heads, a.tq, a.dv_dim, alignment, dt);
  Desc stats = dnn::make_tensor(kUidStats, {a.batch, a.heads, a.tq, 1}, {a.heads * a.tq, a.tq, 1, 1}, 4, false,
                                CUDNN_DATA_FLOAT);
  Desc scale = dnn::make_tensor(kUidScale, {1, 1, 1, 1}, {1, 1, 1, 1}, 4, false, CUDNN_DATA_FLOAT, /*by_value=*/true);
  Desc op(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
  op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, q, "OPERATION_SDPA_FWD_QDESC");
  op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, k, "OPERATION_SDPA_FWD_KDESC");
  op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, v, "OPERATION_SDPA_FWD_VDESC");
  op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, o, "OPERATION_SDPA_FWD_ODESC");
  op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, stats, "OPERATION_SDPA_FWD_STATSDESC");
  op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, scale, "OPERATION_SDPA_FWD_SCALEDESC");
  op.finalize("SDPA forward operation");
  g.ops.push_back(std::move(op));
  g.uids = {kUidQ, kUidK, kUidV, kUidO, kUidStats, kUidScale};
  for (Desc* d : {&q, &k, &v, &o, &stats, &scale}) g.keep.push_back(std::move(*d));
  return g;
}

struct CacheEntry {
  std::unique_ptr<dnn::Plan> plan;  // null: cuDNN has no plan (why says so)
  std::string why;
};

std::mutex g_mutex;
// Never destroyed: at process exit cuDNN may already be torn down (as conv.cpp's cache).
auto& g_cache = *new std::map<std::vector<int64_t>, CacheEntry>;
std::atomic<int64_t> g_plans_built{0};

std::string shape_text(const ops::AttentionArgs& a) {
  return "q " + a.q.shape.str() + ", k " + a.k.shape.str() + ", v " + a.v.shape.str() + ", " + std::to_string(a.heads) +
         " heads, " + dtype_name(a.storage);
}

/// Logs "not on cuDNN's SDPA" once per reason and shape.
void log_once(const OpCall& call, const std::string& msg) {
  static std::mutex mu;
  static std::set<std::string> logged;
  std::lock_guard<std::mutex> lock(mu);
  if (logged.insert(msg).second) std::fprintf(stderr, "cudl: Attention (%s): %s\n", call.label, msg.c_str());
}

}  // namespace

std::string sdpa_ineligible(const ops::AttentionArgs& a) {
  if (a.storage == DType::f32) return "f32 storage (cuDNN's SDPA takes bf16 and f16)";
  if (a.causal) return "a causal mask (cuDNN 9.19's SDPA operation has none)";
  if (a.has_mask) return "a key mask (cuDNN 9.19's SDPA operation has none)";
  if (a.has_dropout) return "dropout (cuDNN 9.19's SDPA operation has none)";
  if (a.d != a.dv_dim) return "D " + std::to_string(a.d) + " != Dv " + std::to_string(a.dv_dim);
  if (a.d % 8 != 0 || a.d > 128)
    return "head size " + std::to_string(a.d) + " (cuDNN's SDPA: a multiple of 8 up to 128)";
  if (a.tq == 0 || a.tk == 0 || a.batch == 0) return "an empty sequence";
  return {};
}

bool sdpa_forward(CudaContext& ctx, const OpCall& call, const ops::AttentionArgs& a, bool required) {
  const std::string why_not = sdpa_ineligible(a);
  if (!why_not.empty()) {
    if (required) CUDL_FAIL(op_checks::who(call), ": engine cudnn cannot take ", shape_text(a), ": ", why_not);
    if (a.storage != DType::f32)  // f32 calls never ask for cuDNN's SDPA: nothing to report
      log_once(call, "not on cuDNN's SDPA (" + why_not + "): the fused kernel runs");
    return false;
  }
  const int64_t alignment = dnn::alignment_of(a.storage, {a.q.data, a.k.data, a.v.data, a.o.data});
  cudnnHandle_t handle = ctx.cudnn();
  std::vector<int64_t> key = {a.batch,
                              a.tq,
                              a.tk,
                              a.heads,
                              a.d,
                              a.dv_dim,
                              static_cast<int64_t>(a.storage),
                              alignment,
                              static_cast<int64_t>(reinterpret_cast<uintptr_t>(handle))};
  const CacheEntry* entry = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_cache.find(key);
    if (it == g_cache.end()) {
      CacheEntry e;
      try {
        auto p = std::make_unique<dnn::Plan>();
        p->graph_ops = build_graph(a, alignment);
        dnn::find_plan(handle, *p, /*allow_tf32=*/false, /*storage16=*/true);
        e.plan = std::move(p);
        ++g_plans_built;
      } catch (const Unsupported& u) {
        e.why = u.reason;
      }
      it = g_cache.emplace(std::move(key), std::move(e)).first;
    }
    entry = &it->second;
  }
  if (!entry->plan) {
    if (required) CUDL_FAIL(op_checks::who(call), ": cuDNN has no SDPA plan for ", shape_text(a), ": ", entry->why);
    log_once(call, "cuDNN has no SDPA plan for " + shape_text(a) + " (" + entry->why + "): the fused kernel runs");
    return false;
  }
  float scale = a.scale;  // by value: cuDNN reads it during the call (and bakes it into a captured graph)
  dnn::execute(ctx, *entry->plan,
               {{kUidQ, a.q.data},
                {kUidK, a.k.data},
                {kUidV, a.v.data},
                {kUidO, a.o.data},
                {kUidStats, a.lse.data},
                {kUidScale, &scale}},
               "Attention (cuDNN SDPA)");
  return true;
}

int64_t sdpa_plans_built() { return g_plans_built.load(); }

void sdpa_clear_plan_cache() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_cache.clear();
  g_plans_built = 0;
}

}  // namespace cudl
