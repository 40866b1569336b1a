// cuda/attention.cpp — CUDA backend of the attention op family: checks (src/ops), then the fused
// kernels, or the unfused path (strided-batched cuBLASLt GEMMs per head around masked-softmax
// kernels, the weights in the context's workspace) when asked or when a head is too large to fuse.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cuda/matmul.hpp"
#include "kernels/attention.cuh"
#include "kernels/data.cuh"
#include "ops/attention.hpp"
#include "ops/common.hpp"

namespace cudl {

namespace chk = op_checks;

namespace {

ops::AttentionArgs check_for_cuda(const OpCall& call) {
  const ops::AttentionArgs a = ops::check_attention_call(call);
  const int64_t biggest = std::max({a.batch, a.tq, a.tk, a.heads * std::max(a.d, a.dv_dim)});
  if (biggest > INT_MAX || a.batch * a.heads > 65535 * int64_t{65535})
    CUDL_FAIL(chk::who(call), ": q ", a.q.shape, " and k ", a.k.shape, " exceed the CUDA kernels' 32-bit index range");
  return a;
}

kernels::AttentionProblem problem_of(const ops::AttentionArgs& a) {
  kernels::AttentionProblem p;
  p.q = a.q.data, p.k = a.k.data, p.v = a.v.data;
  p.type = kernels::storage_of(a.storage);
  p.key_mask = a.has_mask ? a.key_mask.as<float>() : nullptr;
  p.rng = a.has_dropout ? a.rng.as<int64_t>() : nullptr;
  p.batch = static_cast<int>(a.batch), p.tq = static_cast<int>(a.tq), p.tk = static_cast<int>(a.tk);
  p.heads = static_cast<int>(a.heads), p.d = static_cast<int>(a.d), p.dv = static_cast<int>(a.dv_dim);
  p.scale = a.scale, p.keep_scale = a.keep_scale, p.threshold = a.threshold, p.stream = a.stream;
  p.causal = a.causal, p.dropout = a.has_dropout;
  return p;
}

/// Fused unless the call asks for the unfused engine or a head is larger than the fused kernel takes
/// (then logged once per shape: the same device, another engine).
bool use_fused(const OpCall& call, const ops::AttentionArgs& a) {
  if (a.engine == AttentionEngine::Unfused) return false;
  const bool fits = a.d <= kAttentionMaxFusedHeadDim && a.dv_dim <= kAttentionMaxFusedHeadDim;
  if (fits) return true;
  if (a.engine == AttentionEngine::Fused)
    CUDL_FAIL(chk::who(call), ": the fused engine takes head sizes up to ", kAttentionMaxFusedHeadDim, ", got D ", a.d,
              " and Dv ", a.dv_dim, " (q ", a.q.shape, ", v ", a.v.shape, ")");
  static std::mutex mu;
  static std::set<std::string> logged;
  const std::string msg = "head sizes D " + std::to_string(a.d) + ", Dv " + std::to_string(a.dv_dim);
  std::lock_guard<std::mutex> lock(mu);
  if (logged.insert(msg).second)
    std::fprintf(stderr, "cudl: Attention (%s): %s exceed the fused kernel's %lld; running the unfused engine\n",
                 call.label, msg.c_str(), static_cast<long long>(kAttentionMaxFusedHeadDim));
  return false;
}

/// Bytes of `n` f32 values, rounded up to 256 (a workspace slot).
size_t f32_slot(int64_t n) { return (static_cast<size_t>(n) * sizeof(float) + 255) / 256 * 256; }

/// Workspace of the unfused path: [cuBLASLt workspace | `matrices` (B, H, Tq, Tk) f32 buffers].
struct UnfusedScratch {
  void* lt = nullptr;
  float* m0 = nullptr;
  float* m1 = nullptr;
};
size_t unfused_scratch_bytes(const ops::AttentionArgs& a, int matrices) {
  return cuda_gemm_workspace_bytes() + matrices * f32_slot(a.batch * a.heads * a.tq * a.tk);
}
UnfusedScratch unfused_scratch(CudaContext& ctx, const ops::AttentionArgs& a, int matrices) {
  const size_t lt = cuda_gemm_workspace_bytes();
  const size_t bytes = f32_slot(a.batch * a.heads * a.tq * a.tk);
  char* base = static_cast<char*>(ctx.workspace(unfused_scratch_bytes(a, matrices)));
  UnfusedScratch s{base, reinterpret_cast<float*>(base + lt), nullptr};
  if (matrices > 1) s.m1 = reinterpret_cast<float*>(base + lt + bytes);
  return s;
}

/// One head's GEMM, batched over the batch rows: operands are head-interleaved (B, T, H*width)
/// tensors or the (B, H, Tq, Tk) weight matrices, given as {pointer to head h of batch row 0, row
/// stride, batch-row stride}. (Batching over heads instead would interleave the outputs' batches,
/// which cuBLASLt does not allow.)
struct Operand {
  const float* data;
  int64_t ld, batch_stride;
};
void batch_gemm(const OpCall& call, CudaContext& ctx, void* lt, int64_t batch, int64_t m, int64_t n, int64_t k,
                bool ta, bool tb, Operand a, Operand b, Operand c) {
  StridedGemm g;
  g.m = m, g.n = n, g.k = k, g.batch = batch, g.ta = ta, g.tb = tb;
  g.a = a.data, g.lda = a.ld, g.stride_a = a.batch_stride;
  g.b = b.data, g.ldb = b.ld, g.stride_b = b.batch_stride;
  g.c = const_cast<float*>(c.data), g.ldc = c.ld, g.stride_c = c.batch_stride;
  cuda_strided_gemm(call, ctx, g, lt);
}

/// Head h of a (B, T, H*width) tensor as a GEMM operand.
Operand head(const TensorView& t, int64_t h, int64_t width) {
  const int64_t row = t.shape[2];
  return {t.as<float>() + h * width, row, t.shape[1] * row};
}

void zero(CudaContext& ctx, const TensorView& v) {
  if (v.defined() && v.numel() > 0)
    CUDL_CUDA_CHECK(cudaMemsetAsync(v.data, 0, static_cast<size_t>(v.numel()) * dtype_size(v.dtype), ctx.stream()));
}

void unfused_forward(const OpCall& call, CudaContext& ctx, const ops::AttentionArgs& a) {
  const kernels::AttentionProblem p = problem_of(a);
  if (a.tk == 0) {  // no keys: every row has lse -inf and o = 0
    zero(ctx, a.o);
    kernels::attention_softmax_cuda(p, nullptr, a.lse.as<float>(), ctx.stream());
    return;
  }
  const UnfusedScratch ws = unfused_scratch(ctx, a, 1);
  const int64_t B = a.batch, H = a.heads, st = a.tq * a.tk;
  auto w = [&](int64_t h) { return Operand{ws.m0 + h * st, a.tk, H * st}; };
  for (int64_t h = 0; h < H; ++h)  // s = q·kᵀ
    batch_gemm(call, ctx, ws.lt, B, a.tq, a.tk, a.d, false, true, head(a.q, h, a.d), head(a.k, h, a.d), w(h));
  kernels::attention_softmax_cuda(p, ws.m0, a.lse.as<float>(), ctx.stream());
  for (int64_t h = 0; h < H; ++h)  // o = w·v
    batch_gemm(call, ctx, ws.lt, B, a.tq, a.dv_dim, a.tk, false, false, w(h), head(a.v, h, a.dv_dim),
               head(a.o, h, a.dv_dim));
}

void unfused_backward(const OpCall& call, CudaContext& ctx, const ops::AttentionArgs& a) {
  const kernels::AttentionProblem p = problem_of(a);
  if (a.tk == 0 || a.tq == 0) {
    zero(ctx, a.dq), zero(ctx, a.dk), zero(ctx, a.dv);
    return;
  }
  const UnfusedScratch ws = unfused_scratch(ctx, a, 2);
  const int64_t B = a.batch, H = a.heads, D = a.d, Dv = a.dv_dim, st = a.tq * a.tk;
  auto w = [&](int64_t h) { return Operand{ws.m0 + h * st, a.tk, H * st}; };
  auto ds = [&](int64_t h) { return Operand{ws.m1 + h * st, a.tk, H * st}; };
  for (int64_t h = 0; h < H; ++h) {
    batch_gemm(call, ctx, ws.lt, B, a.tq, a.tk, D, false, true, head(a.q, h, D), head(a.k, h, D), w(h));  // q·kᵀ
    batch_gemm(call, ctx, ws.lt, B, a.tq, a.tk, Dv, false, true, head(a.d_o, h, Dv), head(a.v, h, Dv), ds(h));  // do·vᵀ
  }
  kernels::attention_softmax_backward_cuda(p, ws.m0, ws.m1, a.lse.as<float>(), a.o.as<float>(), a.d_o.as<float>(),
                                           ctx.stream());
  for (int64_t h = 0; h < H; ++h) {
    if (a.has_dv)  // dv = wᵀ·do
      batch_gemm(call, ctx, ws.lt, B, a.tk, Dv, a.tq, true, false, w(h), head(a.d_o, h, Dv), head(a.dv, h, Dv));
    if (a.has_dq)  // dq = ds·k
      batch_gemm(call, ctx, ws.lt, B, a.tq, D, a.tk, false, false, ds(h), head(a.k, h, D), head(a.dq, h, D));
    if (a.has_dk)  // dk = dsᵀ·q
      batch_gemm(call, ctx, ws.lt, B, a.tk, D, a.tq, true, false, ds(h), head(a.q, h, D), head(a.dk, h, D));
  }
}

/// The unfused engine computes in f32 (its GEMMs write the f32 weight matrices): a bf16 / f16 call
/// runs it on f32 copies of q, k, v (and o, do) widened in the workspace, past the engine's own
/// scratch, and rounds its f32 outputs (o, or dq, dk, dv) into the call's tensors once at the end.
void unfused_16bit(const OpCall& call, CudaContext& ctx, const ops::AttentionArgs& a,
                   void (*run)(const OpCall&, CudaContext&, const ops::AttentionArgs&)) {
  const int code = a.storage == DType::bf16 ? kernels::kCastBf16 : kernels::kCastF16;
  ops::AttentionArgs w = a;
  w.storage = DType::f32;
  TensorView* ins[] = {&w.q, &w.k, &w.v, &w.o, &w.d_o};
  TensorView* outs[] = {&w.o, &w.dq, &w.dk, &w.dv};
  size_t bytes = unfused_scratch_bytes(a, a.backward ? 2 : 1);  // the engine's own scratch comes first
  auto place = [&](TensorView* v) {
    const size_t at = bytes;
    bytes += f32_slot(v->numel());
    return at;
  };
  std::vector<std::pair<TensorView*, size_t>> widened, rounded;
  for (TensorView* v : ins)
    if (v->defined() && (a.backward || (v != &w.o && v != &w.d_o))) widened.emplace_back(v, place(v));
  for (TensorView* v : outs)
    if (v->defined() && (a.backward ? v != &w.o : v == &w.o)) rounded.emplace_back(v, place(v));
  char* base = static_cast<char*>(ctx.workspace(bytes));  // the engine's unfused_scratch is its start
  for (auto& [v, at] : widened) {
    kernels::cast_cuda(v->data, code, base + at, kernels::kCastF32, v->numel(), ctx.stream());
    v->data = base + at, v->dtype = DType::f32;
  }
  std::vector<TensorView> targets;
  for (auto& [v, at] : rounded) {
    targets.push_back(*v);
    v->data = base + at, v->dtype = DType::f32;
  }
  run(call, ctx, w);
  for (size_t i = 0; i < rounded.size(); ++i)
    kernels::cast_cuda(rounded[i].first->data, kernels::kCastF32, targets[i].data, code, targets[i].numel(),
                       ctx.stream());
}

void cuda_attention(const OpCall& call) {
  const ops::AttentionArgs a = check_for_cuda(call);
  CudaContext& ctx = cuda_context(call);
  if (!use_fused(call, a))
    return a.storage == DType::f32 ? unfused_forward(call, ctx, a) : unfused_16bit(call, ctx, a, unfused_forward);
  kernels::attention_forward_cuda(problem_of(a), a.o.data, a.lse.as<float>(), ctx.stream());
}

void cuda_attention_backward(const OpCall& call) {
  const ops::AttentionArgs a = check_for_cuda(call);
  CudaContext& ctx = cuda_context(call);
  if (!use_fused(call, a))
    return a.storage == DType::f32 ? unfused_backward(call, ctx, a) : unfused_16bit(call, ctx, a, unfused_backward);
  if (a.tq == 0) {
    zero(ctx, a.dk), zero(ctx, a.dv);
    return;
  }
  float* delta = static_cast<float*>(ctx.workspace(static_cast<size_t>(a.batch * a.heads * a.tq) * sizeof(float)));
  kernels::attention_backward_cuda(problem_of(a), a.o.data, a.lse.as<float>(), a.d_o.data, delta,
                                   a.has_dq ? a.dq.data : nullptr, a.has_dk ? a.dk.data : nullptr,
                                   a.has_dv ? a.dv.data : nullptr, ctx.stream());
}

}  // namespace

void register_cuda_attention_ops(OpTable& t) {
  t.add(OpKind::Attention, cuda_attention);
  t.add(OpKind::AttentionBackward, cuda_attention_backward);
}

}  // namespace cudl
