// cuda/matmul.cpp — CUDA backend of the matmul family: Matmul, Linear and LinearBackward through
// cuBLASLt (fused bias / ReLU / GELU epilogues forward, BGRADB bias gradient backward), plans cached per shape.
//
// Row-major tensors go to cuBLASLt without copies: a row-major C (m, n) = op(A)·op(B) is the
// column-major Cᵀ (n, m) = op(B)ᵀ·op(A)ᵀ, so the call swaps the operands and reads each buffer as its
// own transpose. Bias vectors then run along cuBLASLt's rows, i.e. along the row-major columns.
// Backward: dpre = dy ⊙ act'(·) is one kernel (the DRELU/DGELU epilogues apply act' to a GEMM's own
// output, and no GEMM of this op produces dy), dw = dpreᵀ·x carries db = Σ_rows dpre in its BGRADB
// epilogue, dx = dpre·w is a plain GEMM. When cuBLASLt has no algo for a fused epilogue (or the GELU
// aux leading dimension cannot be a multiple of 8), the GEMM runs plain and the matmul kernels finish
// the job; when it has none for a plain GEMM, cublasGemmStridedBatchedEx runs it. Both choices are
// logged once per shape. Compute: CUBLAS_COMPUTE_32F, or CUBLAS_COMPUTE_32F_FAST_TF32 when the call's
// MathMode is TF32 (CompileOptions::precision, CUDL_ALLOW_TF32=1) and the storage is f32; part of the
// plan key.
//
// 16-bit storage (bf16 / f16, ops/precision.hpp): A, B, C and D in CUDA_R_16BF / CUDA_R_16F with
// CUBLAS_COMPUTE_32F and fp32 scale (cuBLASLt's table for these types), the bias, the bias gradients
// and GELU's pre-activation aux in the storage type (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE set to it:
// cuBLASLt's bias type is D's for these types). So every product accumulates in fp32 and each output
// is rounded once, as the CPU reference does. Where a fused epilogue is not used, the GEMM writes fp32
// (16-bit A/B, fp32 D) into scratch and the matmul kernels add the bias, apply the activation, mask,
// sum and round once. The one extra rounding: GELU's dpre = dy ⊙ gelu'(pre) is stored in the storage
// type, because it is the operand of the backward GEMMs (A and B share one type); ReLU's dpre is exact.
#include "cuda/matmul.hpp"

#include <array>
#include <climits>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend/backend.hpp"
#include "core/half.hpp"
#include "cuda/check.hpp"
#include "cuda/context.hpp"
#include "cuda/storage_type.hpp"
#include "kernels/data.cuh"
#include "kernels/matmul.cuh"
#include "ops/common.hpp"
#include "ops/matmul.hpp"

namespace cudl {

namespace chk = op_checks;

namespace {

/// cuBLASLt workspace offered to every GEMM (cuBLAS suggests 32 MiB on Hopper).
constexpr size_t kLtWorkspace = size_t{32} << 20;
constexpr size_t kMaxPlans = 1024;

/// A column-major cuBLASLt problem: D (m, n) = op(A) (m, k) · op(B) (k, n), strided over `batch`.
struct GemmSpec {
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool ta = false, tb = false;
  int64_t lda = 1, ldb = 1, ldd = 1;
  int64_t stride_a = 0, stride_b = 0, stride_d = 0;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  int64_t aux_ld = 0;
  cudaDataType_t ab_type = CUDA_R_32F;  // A and B
  cudaDataType_t d_type = CUDA_R_32F;   // C, D, the bias / bias gradient and GELU's aux
  bool tf32 = false;  // CUBLAS_COMPUTE_32F_FAST_TF32 (set from the call's MathMode by lt_gemm; f32 only)
};

struct GemmPtrs {
  const void* a = nullptr;
  const void* b = nullptr;
  void* d = nullptr;
  const void* bias = nullptr;  // bias (forward) or bias gradient (BGRADB, DRELU_BGRAD)
  void* aux = nullptr;         // GELU pre-activation or relu bit-mask
};

/// Row-major C (m, n) = op(A)·op(B) with A stored (m, k) [(k, m) when ta] and B stored (k, n) [(n, k)
/// when tb], as the column-major problem Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLASLt's A is our B and vice versa.
GemmSpec row_major(int64_t m, int64_t n, int64_t k, bool ta, bool tb) {
  GemmSpec s;
  s.m = n;
  s.n = m;
  s.k = k;
  s.ta = tb;
  s.tb = ta;
  s.lda = std::max<int64_t>(1, tb ? k : n);
  s.ldb = std::max<int64_t>(1, ta ? m : k);
  s.ldd = std::max<int64_t>(1, n);
  return s;
}

/// The storage type's cuBLAS data type.
template <typename T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same<T, __nv_bfloat16>::value)
    return CUDA_R_16BF;
  else if constexpr (std::is_same<T, __half>::value)
    return CUDA_R_16F;
  else
    return CUDA_R_32F;
}

/// The storage type's DType.
template <typename T>
constexpr DType dtype_of_storage() {
  if constexpr (std::is_same<T, __nv_bfloat16>::value)
    return DType::bf16;
  else if constexpr (std::is_same<T, __half>::value)
    return DType::f16;
  else
    return DType::f32;
}

/// The storage-typed problem: A, B and D of type T.
template <typename T>
GemmSpec typed(GemmSpec s) {
  s.ab_type = s.d_type = cuda_type<T>();
  return s;
}

uint32_t alignment_of(const void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  if (u == 0) return 256;
  uint32_t a = 256;
  while (a > 1 && u % a != 0) a >>= 1;  // 16-bit elements may sit at 2-byte boundaries
  return a;
}

bool epilogue_has_bias(uint32_t e) {
  return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_RELU_BIAS || e == CUBLASLT_EPILOGUE_RELU_AUX_BIAS ||
         e == CUBLASLT_EPILOGUE_GELU_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_BGRADB ||
         e == CUBLASLT_EPILOGUE_DRELU_BGRAD;
}
bool epilogue_has_aux(uint32_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_RELU_AUX ||
         e == CUBLASLT_EPILOGUE_RELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DRELU || e == CUBLASLT_EPILOGUE_DRELU_BGRAD;
}

const char* epilogue_name(uint32_t e) {
  switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT:
      return "DEFAULT";
    case CUBLASLT_EPILOGUE_BIAS:
      return "BIAS";
    case CUBLASLT_EPILOGUE_RELU:
      return "RELU";
    case CUBLASLT_EPILOGUE_RELU_BIAS:
      return "RELU_BIAS";
    case CUBLASLT_EPILOGUE_GELU:
      return "GELU";
    case CUBLASLT_EPILOGUE_GELU_BIAS:
      return "GELU_BIAS";
    case CUBLASLT_EPILOGUE_GELU_AUX:
      return "GELU_AUX";
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
      return "GELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_BGRADB:
      return "BGRADB";
    case CUBLASLT_EPILOGUE_RELU_AUX:
      return "RELU_AUX";
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS:
      return "RELU_AUX_BIAS";
    case CUBLASLT_EPILOGUE_DRELU:
      return "DRELU";
    case CUBLASLT_EPILOGUE_DRELU_BGRAD:
      return "DRELU_BGRAD";
    default:
      return "?";
  }
}

/// Descriptors, layouts and the heuristic's algo for one GEMM shape, created once.
struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
  bool supported = false;  // the heuristic returned an algo
  cublasStatus_t status = CUBLAS_STATUS_SUCCESS;

  GemmPlan() = default;
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;
  ~GemmPlan() {  // destructors only log
    if (d && cublasLtMatrixLayoutDestroy(d) != CUBLAS_STATUS_SUCCESS)
      std::fprintf(stderr, "cudl: layout destroy failed\n");
    if (b && cublasLtMatrixLayoutDestroy(b) != CUBLAS_STATUS_SUCCESS)
      std::fprintf(stderr, "cudl: layout destroy failed\n");
    if (a && cublasLtMatrixLayoutDestroy(a) != CUBLAS_STATUS_SUCCESS)
      std::fprintf(stderr, "cudl: layout destroy failed\n");
    if (desc && cublasLtMatmulDescDestroy(desc) != CUBLAS_STATUS_SUCCESS)
      std::fprintf(stderr, "cudl: matmul desc destroy failed\n");
  }
};

using PlanKey = std::array<int64_t, 23>;

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the fields
    for (int64_t v : k) {
      h ^= static_cast<uint64_t>(v);
      h *= 1099511628211ull;
    }
    return static_cast<size_t>(h);
  }
};

/// The shape, data types, epilogue and pointer alignments a plan depends on (cuBLASLt's heuristic
/// picks kernels for the alignment it is told, so the alignment of A, B, D, bias and aux is part of
/// the key).
PlanKey plan_key(int device, const GemmSpec& s, const GemmPtrs& p) {
  return {device,
          s.m,
          s.n,
          s.k,
          s.batch,
          s.ta,
          s.tb,
          s.lda,
          s.ldb,
          s.ldd,
          s.stride_a,
          s.stride_b,
          s.stride_d,
          s.epilogue,
          s.aux_ld,
          alignment_of(p.a),
          alignment_of(p.b),
          alignment_of(p.d),
          alignment_of(p.bias),
          alignment_of(p.aux),
          s.ab_type,
          s.d_type,
          s.tf32};
}

struct PlanCache {
  std::mutex mu;
  std::unordered_map<PlanKey, std::unique_ptr<GemmPlan>, PlanKeyHash> plans;
  MatmulPlanStats stats;
  std::set<std::string> logged;
};

PlanCache& plan_cache() {
  static PlanCache* cache = new PlanCache;  // lives for the process (no destruction-order hazards)
  return *cache;
}

cublasComputeType_t compute_type(const GemmSpec& s) {
  return detail::cublas_compute_type(s.tf32 ? MathMode::TF32 : MathMode::F32);
}

const char* type_name(cudaDataType_t t) {
  return t == CUDA_R_16BF ? "bf16" : t == CUDA_R_16F ? "f16" : t == CUDA_R_32F ? "f32" : "?";
}

[[noreturn]] void lt_fail(const OpCall& call, const char* what, cublasStatus_t st, const GemmSpec& s) {
  CUDL_FAIL(chk::who(call), ": ", what, " failed: ", detail::cublas_status_string(st), " (cuBLASLt m ", s.m, ", n ",
            s.n, ", k ", s.k, ", batch ", s.batch, ", epilogue ", epilogue_name(s.epilogue), ", A/B ",
            type_name(s.ab_type), ", D ", type_name(s.d_type), ")");
}

#define CUDL_LT(call, what, expr, spec)                                     \
  do {                                                                      \
    cublasStatus_t lt_st_ = (expr);                                         \
    if (lt_st_ != CUBLAS_STATUS_SUCCESS) lt_fail(call, what, lt_st_, spec); \
  } while (0)

template <typename T>
void set_desc(const OpCall& call, const GemmSpec& s, cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
              const T& v) {
  CUDL_LT(call, "cublasLtMatmulDescSetAttribute", cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof v), s);
}

void set_pointers(const OpCall& call, const GemmSpec& s, GemmPlan& plan, const GemmPtrs& p) {
  if (epilogue_has_bias(s.epilogue)) set_desc(call, s, plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, p.bias);
  if (epilogue_has_aux(s.epilogue)) set_desc(call, s, plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, p.aux);
}

std::unique_ptr<GemmPlan> build_plan(const OpCall& call, CudaContext& ctx, const GemmSpec& s, const GemmPtrs& p) {
  auto plan = std::make_unique<GemmPlan>();
  CUDL_LT(call, "cublasLtMatmulDescCreate", cublasLtMatmulDescCreate(&plan->desc, compute_type(s), CUDA_R_32F), s);
  const int32_t opa = s.ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = s.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  set_desc(call, s, plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, opa);
  set_desc(call, s, plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, opb);
  set_desc(call, s, plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, s.epilogue);
  if (epilogue_has_aux(s.epilogue)) set_desc(call, s, plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, s.aux_ld);
  if (epilogue_has_bias(s.epilogue)) {  // bias and bias gradients in D's type, said explicitly
    const int32_t bias_type = s.d_type;
    set_desc(call, s, plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, bias_type);
  }
  set_pointers(call, s, *plan, p);  // the heuristic reads their alignment
  CUDL_LT(call, "cublasLtMatrixLayoutCreate",
          cublasLtMatrixLayoutCreate(&plan->a, s.ab_type, s.ta ? s.k : s.m, s.ta ? s.m : s.k, s.lda), s);
  CUDL_LT(call, "cublasLtMatrixLayoutCreate",
          cublasLtMatrixLayoutCreate(&plan->b, s.ab_type, s.tb ? s.n : s.k, s.tb ? s.k : s.n, s.ldb), s);
  CUDL_LT(call, "cublasLtMatrixLayoutCreate", cublasLtMatrixLayoutCreate(&plan->d, s.d_type, s.m, s.n, s.ldd), s);
  if (s.batch > 1) {
    const int32_t count = static_cast<int32_t>(s.batch);
    const int64_t strides[3] = {s.stride_a, s.stride_b, s.stride_d};
    cublasLtMatrixLayout_t layouts[3] = {plan->a, plan->b, plan->d};
    for (int i = 0; i < 3; ++i) {
      CUDL_LT(call, "cublasLtMatrixLayoutSetAttribute",
              cublasLtMatrixLayoutSetAttribute(layouts[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof count),
              s);
      CUDL_LT(call, "cublasLtMatrixLayoutSetAttribute",
              cublasLtMatrixLayoutSetAttribute(layouts[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                               sizeof strides[i]),
              s);
    }
  }
  cublasLtMatmulPreference_t pref = nullptr;
  CUDL_LT(call, "cublasLtMatmulPreferenceCreate", cublasLtMatmulPreferenceCreate(&pref), s);
  const uint64_t ws = kLtWorkspace;
  const uint32_t align[4] = {alignment_of(p.a), alignment_of(p.b), alignment_of(p.d), alignment_of(p.d)};
  const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  cublasStatus_t st =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  for (int i = 0; i < 4 && st == CUBLAS_STATUS_SUCCESS; ++i)
    st = cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &align[i], sizeof align[i]);
  if (st != CUBLAS_STATUS_SUCCESS) {
    cublasLtMatmulPreferenceDestroy(pref);
    lt_fail(call, "cublasLtMatmulPreferenceSetAttribute", st, s);
  }
  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  st = cublasLtMatmulAlgoGetHeuristic(ctx.cublaslt(), plan->desc, plan->a, plan->b, plan->d, plan->d, pref, 1, &result,
                                      &count);
  cublasLtMatmulPreferenceDestroy(pref);
  plan->status = st;
  if (st == CUBLAS_STATUS_SUCCESS && count > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
    plan->supported = true;
    plan->algo = result.algo;
    plan->workspace = result.workspaceSize;
  } else if (st == CUBLAS_STATUS_SUCCESS) {
    plan->status = CUBLAS_STATUS_NOT_SUPPORTED;  // no algo
  }
  return plan;
}

/// Scratch of one op call: [dpre (optional) | fp32 GEMM result (optional) | cuBLASLt workspace],
/// carved from one context workspace.
struct Scratch {
  void* dpre = nullptr;  // in the storage type
  float* f32 = nullptr;  // an unfused 16-bit GEMM's fp32 result
  void* lt = nullptr;
  size_t lt_bytes = 0;
};

size_t round256(size_t bytes) { return (bytes + 255) / 256 * 256; }

Scratch scratch(CudaContext& ctx, size_t dpre_bytes, size_t f32_elems = 0) {
  const size_t a = round256(dpre_bytes), b = round256(f32_elems * sizeof(float));
  char* base = static_cast<char*>(ctx.workspace(a + b + kLtWorkspace));
  return Scratch{dpre_bytes ? base : nullptr, f32_elems ? reinterpret_cast<float*>(base + a) : nullptr, base + a + b,
                 kLtWorkspace};
}

int to_int(const OpCall& call, int64_t v, const GemmSpec& s) {
  if (v > INT_MAX) lt_fail(call, "cublasGemmStridedBatchedEx (int dimension)", CUBLAS_STATUS_NOT_SUPPORTED, s);
  return static_cast<int>(v);
}

/// A plain GEMM for which cuBLASLt's heuristic returned no algo: the same problem through the legacy
/// API (cublasGemmStridedBatchedEx, same compute type, the context's handle and workspace), logged once
/// per shape. The caller holds the plan cache's lock.
void legacy_gemm(const OpCall& call, CudaContext& ctx, const GemmSpec& s, const GemmPtrs& p, cublasStatus_t lt_status,
                 PlanCache& cache) {
  const std::string msg = std::string(op_name(call.op)) + ": cuBLASLt has no algo for m " + std::to_string(s.m) +
                          ", n " + std::to_string(s.n) + ", k " + std::to_string(s.k) + ", batch " +
                          std::to_string(s.batch) + " (" + detail::cublas_status_string(lt_status) + ")";
  if (cache.logged.insert(msg).second)
    std::fprintf(stderr, "cudl: %s (%s); running it through cublasGemmStridedBatchedEx\n", msg.c_str(), call.label);
  const float alpha = 1.f, beta = 0.f;
  const cublasStatus_t st = cublasGemmStridedBatchedEx(
      ctx.cublas(), s.ta ? CUBLAS_OP_T : CUBLAS_OP_N, s.tb ? CUBLAS_OP_T : CUBLAS_OP_N, to_int(call, s.m, s),
      to_int(call, s.n, s), to_int(call, s.k, s), &alpha, p.a, s.ab_type, to_int(call, s.lda, s), s.stride_a, p.b,
      s.ab_type, to_int(call, s.ldb, s), s.stride_b, &beta, p.d, s.d_type, to_int(call, s.ldd, s), s.stride_d,
      to_int(call, s.batch, s), compute_type(s), CUBLAS_GEMM_DEFAULT);
  if (st != CUBLAS_STATUS_SUCCESS) lt_fail(call, "cublasGemmStridedBatchedEx", st, s);
}

/// The spec with the call's MathMode: fp32 or TF32 compute for f32 data (TF32 does not apply to
/// 16-bit inputs: they always compute in CUBLAS_COMPUTE_32F).
GemmSpec with_math(const OpCall& call, GemmSpec s) {
  s.tf32 = call.math == MathMode::TF32 && s.ab_type == CUDA_R_32F;
  return s;
}

/// The cached plan of `s` (built on first use); the caller holds the cache's lock.
GemmPlan& find_plan(const OpCall& call, CudaContext& ctx, const GemmSpec& s, const GemmPtrs& p, PlanCache& cache,
                    bool count_reuse) {
  const PlanKey key = plan_key(ctx.device().index(), s, p);
  auto it = cache.plans.find(key);
  if (it == cache.plans.end()) {
    if (cache.plans.size() >= kMaxPlans) cache.plans.clear();  // shapes churn: start over
    it = cache.plans.emplace(key, build_plan(call, ctx, s, p)).first;
    cache.stats.built++;
  } else if (count_reuse) {
    cache.stats.reused++;
  }
  return *it->second;
}

/// Whether lt_gemm would run `spec` (an algo, or a plain GEMM for the legacy API), without queueing
/// it: an unfused 16-bit path needs fp32 scratch, sized before the call.
bool lt_runs(const OpCall& call, CudaContext& ctx, const GemmSpec& spec, const GemmPtrs& p) {
  if (spec.m == 0 || spec.n == 0 || spec.batch == 0 || spec.epilogue == CUBLASLT_EPILOGUE_DEFAULT) return true;
  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  return find_plan(call, ctx, with_math(call, spec), p, cache, false).supported;
}

/// Queues D = op(A)·op(B) with the spec's epilogue. Returns false, queueing nothing, when cuBLASLt has
/// no algo for a fused epilogue (the caller runs the unfused path); a plain GEMM without an algo runs
/// through the legacy API (legacy_gemm).
bool lt_gemm(const OpCall& call, CudaContext& ctx, const GemmSpec& spec, const GemmPtrs& p, const Scratch& ws) {
  if (spec.m == 0 || spec.n == 0 || spec.batch == 0) return true;
  const GemmSpec s = with_math(call, spec);
  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mu);  // plans are shared: attributes are set per call
  GemmPlan& plan = find_plan(call, ctx, s, p, cache, true);
  if (!plan.supported) {
    if (s.epilogue == CUBLASLT_EPILOGUE_DEFAULT) {
      cache.stats.legacy++;
      legacy_gemm(call, ctx, s, p, plan.status, cache);
      return true;
    }
    cache.stats.unfused++;
    return false;
  }
  if (plan.workspace > ws.lt_bytes) lt_fail(call, "workspace sizing", CUBLAS_STATUS_INTERNAL_ERROR, s);
  set_pointers(call, s, plan, p);
  const float alpha = 1.f, beta = 0.f;
  CUDL_LT(call, "cublasLtMatmul",
          cublasLtMatmul(ctx.cublaslt(), plan.desc, &alpha, p.a, plan.a, p.b, plan.b, &beta, p.d, plan.d, p.d, plan.d,
                         &plan.algo, plan.workspace ? ws.lt : nullptr, plan.workspace, ctx.stream()),
          s);
  return true;
}

/// Logs, once per distinct message, that a GEMM runs without its fused epilogue.
void note_unfused(const OpCall& call, const std::string& why) {
  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  const std::string msg = std::string(op_name(call.op)) + ": " + why;
  if (cache.logged.insert(msg).second)
    std::fprintf(stderr, "cudl: %s (%s); running a plain GEMM and the matmul kernels\n", msg.c_str(), call.label);
}

void zero(CudaContext& ctx, const TensorView& v) {
  if (v.defined() && v.numel() > 0)
    CUDL_CUDA_CHECK(cudaMemsetAsync(v.data, 0, static_cast<size_t>(v.numel()) * dtype_size(v.dtype), ctx.stream()));
}

// ---------------------------------------------------------------------------------------------
// Ops

template <typename T>
void matmul_t(const OpCall& call, const ops::MatmulArgs& p) {
  CudaContext& ctx = cuda_context(call);
  const TensorView& c = p.c;
  if (p.batch == 0 || p.m == 0 || p.n == 0) return;
  if (p.k == 0) return zero(ctx, c);
  GemmSpec s;
  if (p.broadcast_b && !p.trans_a) {
    s = row_major(p.batch * p.m, p.n, p.k, false, p.trans_b);  // the batch folds into M
  } else {
    s = row_major(p.m, p.n, p.k, p.trans_a, p.trans_b);
    s.batch = p.batch;
    s.stride_a = p.broadcast_b ? 0 : p.k * p.n;  // cuBLASLt's A is our b
    s.stride_b = p.m * p.k;
    s.stride_d = p.m * p.n;
  }
  lt_gemm(call, ctx, typed<T>(s), GemmPtrs{p.b.as<T>(), p.a.as<T>(), c.as<T>()}, scratch(ctx, 0));
}

void matmul_cuda(const OpCall& call) {
  const ops::MatmulArgs p = ops::check_matmul_call(call);
  with_storage_type(p.dtype, op_name(call.op), [&](auto tag) { matmul_t<typename decltype(tag)::type>(call, p); });
}

// The relu bit-mask is cudl's layout (ops/matmul.hpp: bit j % 8 of byte j / 8 of row r); cuBLASLt
// documents its RELU_AUX/DRELU aux only as a column-major bit-mask, not the bit order in a byte. A
// mask written by one side and read by the other (RELU_AUX forward, cudl's kernel backward, or the
// reverse, when only one epilogue has an algo) must agree, so once per device and storage type a
// small GEMM checks that RELU_AUX writes cudl's layout and that DRELU reads it; an epilogue that does
// not is not used (its cudl-kernel path runs instead). Inside a stream capture nothing can be read
// back: the check waits for an eager call and the mask epilogues are not used until then.
struct MaskLayout {
  bool known = false;
  bool aux_writes_ours = false;   // RELU_AUX(_BIAS) may write masks cudl's kernels read
  bool drelu_reads_ours = false;  // DRELU(_BGRAD) may read masks cudl's kernels wrote
};

std::mutex& mask_layout_mu() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}
std::map<std::pair<int, DType>, MaskLayout>& mask_layouts() {  // by (device, storage type)
  static auto* m = new std::map<std::pair<int, DType>, MaskLayout>;
  return *m;
}

/// A device tensor of storage type T holding `v` rounded to T.
template <typename T>
Tensor storage_tensor(const std::vector<float>& v, const Shape& shape, Device dev) {
  if constexpr (std::is_same<T, float>::value) {
    return Tensor::from_vector(v, shape, dev);
  } else {
    const DType dt = std::is_same<T, __nv_bfloat16>::value ? DType::bf16 : DType::f16;
    Tensor h = Tensor::empty(shape, dt);
    uint16_t* bits = static_cast<uint16_t*>(h.data());
    for (size_t i = 0; i < v.size(); ++i)
      bits[i] = dt == DType::bf16 ? float_to_bf16_bits(v[i]) : float_to_half_bits(v[i]);
    return h.to(dev);
  }
}

/// The storage elements of a device tensor, as raw bits (zero tests and equality only).
std::vector<uint8_t> raw_bytes(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  const uint8_t* b = static_cast<const uint8_t*>(h.data());
  return std::vector<uint8_t>(b, b + h.nbytes());
}

template <typename T>
MaskLayout check_mask_layout(const OpCall& call, CudaContext& ctx) {
  constexpr int64_t rows = 4, width = 128, k = 8, ld = relu_mask_row_bytes(width);  // 16 bytes
  const Device dev = ctx.device();
  const DType dt = dtype_of_storage<T>();
  std::vector<float> xh(rows * k), wh(width * k), w2h(k * width), dyh(rows * k);
  for (int64_t i = 0; i < rows * k; ++i) xh[i] = 0.37f * static_cast<float>((i * 7) % 11) - 1.7f;
  for (int64_t i = 0; i < width * k; ++i) wh[i] = 0.29f * static_cast<float>((i * 5) % 13) - 1.6f;
  for (int64_t i = 0; i < k * width; ++i) w2h[i] = 0.31f * static_cast<float>((i * 3) % 7) + 0.11f;
  for (int64_t i = 0; i < rows * k; ++i) dyh[i] = 0.23f * static_cast<float>(i % 5) + 0.13f;
  Tensor x = storage_tensor<T>(xh, Shape{rows, k}, dev), w = storage_tensor<T>(wh, Shape{width, k}, dev);
  Tensor w2 = storage_tensor<T>(w2h, Shape{k, width}, dev), dy = storage_tensor<T>(dyh, Shape{rows, k}, dev);
  Tensor y = Tensor::zeros(Shape{rows, width}, dt, dev);
  Tensor lt_mask = Tensor::zeros(Shape{rows, ld}, DType::u8, dev), our_mask = Tensor::zeros(Shape{rows, ld}, DType::u8, dev);
  Tensor dx_fused = Tensor::zeros(Shape{rows, width}, dt, dev), dx_plain = Tensor::zeros(Shape{rows, width}, dt, dev);
  const Scratch ws = scratch(ctx, 0);
  T* yp = static_cast<T*>(y.data());
  uint8_t* our = our_mask.data_as<uint8_t>();
  MaskLayout r;
  r.known = true;
  // Forward: y = relu(x · wᵀ) with RELU_AUX, against cudl's kernel's mask of the same y.
  GemmSpec f = typed<T>(row_major(rows, width, k, false, true));
  f.epilogue = CUBLASLT_EPILOGUE_RELU_AUX;
  f.aux_ld = ld * 8;
  if (lt_gemm(call, ctx, f, GemmPtrs{w.data(), x.data(), yp, nullptr, lt_mask.data()}, ws)) {
    kernels::relu_mask_from_output_cuda(static_cast<const T*>(yp), our, rows, width, ld, ctx.stream());
    r.aux_writes_ours = lt_mask.to_vector<uint8_t>() == our_mask.to_vector<uint8_t>();
  } else {
    kernels::relu_mask_from_output_cuda(static_cast<const T*>(yp), our, rows, width, ld, ctx.stream());
  }
  // Backward: dx = dy · w2 ⊙ mask with DRELU reading cudl's mask, against the GEMM + cudl's kernel.
  // The GEMM values are all nonzero, so where the two zero out must agree exactly.
  GemmSpec b = typed<T>(row_major(rows, width, k, false, false));
  b.epilogue = CUBLASLT_EPILOGUE_DRELU;
  b.aux_ld = ld * 8;
  if (lt_gemm(call, ctx, b, GemmPtrs{w2.data(), dy.data(), dx_fused.data(), nullptr, our_mask.data()}, ws)) {
    GemmSpec plain = typed<T>(row_major(rows, width, k, false, false));
    lt_gemm(call, ctx, plain, GemmPtrs{w2.data(), dy.data(), dx_plain.data()}, ws);
    kernels::relu_mask_apply_cuda(static_cast<T*>(dx_plain.data()), static_cast<const uint8_t*>(our), rows, width, ld,
                                  ctx.stream());
    const std::vector<uint8_t> a = raw_bytes(dx_fused), c = raw_bytes(dx_plain);
    const size_t es = sizeof(T);
    auto is_zero = [&](const std::vector<uint8_t>& v, size_t i) {  // +0 or -0 in any storage type
      for (size_t k2 = 0; k2 < es; ++k2)
        if ((v[i * es + k2] & (k2 + 1 == es ? 0x7F : 0xFF)) != 0) return false;
      return true;
    };
    r.drelu_reads_ours = true;
    for (size_t i = 0; i < a.size() / es; ++i)
      r.drelu_reads_ours = r.drelu_reads_ours && (is_zero(a, i) == is_zero(c, i));
  }
  if (!r.aux_writes_ours || !r.drelu_reads_ours) {
    std::fprintf(stderr,
                 "cudl: cuBLASLt relu mask on %s (%s): RELU_AUX %s, DRELU %s; those epilogues run as cudl's kernels\n",
                 dev.str().c_str(), dtype_name(dt),
                 r.aux_writes_ours ? "writes cudl's layout" : "not used (no algo or another layout)",
                 r.drelu_reads_ours ? "reads cudl's layout" : "not used (no algo or another layout)");
  }
  return r;
}

/// The device's relu mask layout check for storage type T (run on the first eager call; see MaskLayout).
template <typename T>
MaskLayout mask_layout(const OpCall& call, CudaContext& ctx) {
  const std::pair<int, DType> key{ctx.device().index(), dtype_of_storage<T>()};
  {
    std::lock_guard<std::mutex> lock(mask_layout_mu());
    auto it = mask_layouts().find(key);
    if (it != mask_layouts().end()) return it->second;
  }
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  CUDL_CUDA_CHECK(cudaStreamIsCapturing(ctx.stream(), &st));
  if (st != cudaStreamCaptureStatusNone) return MaskLayout{};  // unknown: the mask epilogues wait
  const MaskLayout r = check_mask_layout<T>(call, ctx);
  std::lock_guard<std::mutex> lock(mask_layout_mu());
  mask_layouts()[key] = r;
  return r;
}

template <typename T>
void linear_t(const OpCall& call, const ops::LinearArgs& p) {
  constexpr bool kWide = !std::is_same<T, float>::value;  // 16-bit storage
  CudaContext& ctx = cuda_context(call);
  if (p.rows == 0 || p.out == 0) return;
  const T* x = p.x.as<T>();
  const T* w = p.w.as<T>();
  const T* bias = p.bias.as<T>();
  T* y = p.y.as<T>();
  T* pre = p.pre.as<T>();
  uint8_t* mask = p.mask.as<uint8_t>();
  const int64_t mask_ld = relu_mask_row_bytes(p.out);
  const MaskLayout layout = mask && p.epilogue == Epilogue::Relu ? mask_layout<T>(call, ctx) : MaskLayout{};
  GemmSpec s = typed<T>(row_major(p.rows, p.out, p.in, false, true));  // y = x · wᵀ
  GemmPtrs ptrs{w, x, y, bias, nullptr};
  // The fused epilogue, if one fits.
  uint32_t e = 0;
  std::string why;
  switch (p.epilogue) {
    case Epilogue::None:
      e = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
      break;
    case Epilogue::Relu:
      if (mask && !layout.aux_writes_ours) {
        why = layout.known ? "cuBLASLt's RELU_AUX mask is not cudl's layout (checked once per device and storage type)"
                           : "the relu mask layout is checked on the first call outside a stream capture";
      } else if (mask) {  // the bit-mask for a DRELU epilogue in the backward of the layer above
        e = bias ? CUBLASLT_EPILOGUE_RELU_AUX_BIAS : CUBLASLT_EPILOGUE_RELU_AUX;
        s.aux_ld = mask_ld * 8;  // in bits
        ptrs.aux = mask;
      } else {
        e = bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
      }
      break;
    case Epilogue::Gelu:
      if (!pre) {
        e = bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
      } else if (p.out % 8 == 0) {
        e = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
        s.aux_ld = p.out;
        ptrs.aux = pre;
      } else {
        why = "GELU aux needs out % 8 == 0, got out " + std::to_string(p.out);
      }
      break;
  }
  const bool try_fused = p.in > 0 && why.empty();
  s.epilogue = e;
  // 16-bit: an unfused path needs the GEMM's fp32 result (rounded once, by the epilogue kernel).
  const bool need_f32 = kWide && !(try_fused && lt_runs(call, ctx, s, ptrs));
  const Scratch ws = scratch(ctx, 0, need_f32 ? static_cast<size_t>(p.rows * p.out) : 0);
  if (try_fused) {
    if (lt_gemm(call, ctx, s, ptrs, ws)) return;
    why = std::string("cuBLASLt has no algo for epilogue ") + epilogue_name(e);
  }
  if (!why.empty()) note_unfused(call, why);
  // Unfused: z = x · wᵀ (f32: into pre or y; 16-bit: into fp32 scratch), then pre = z + b, y = act(pre)
  // in one kernel, and the mask from pre (> 0 exactly where y > 0).
  float* z = kWide ? ws.f32 : reinterpret_cast<float*>(pre ? pre : y);
  if (p.in == 0) {
    CUDL_CUDA_CHECK(cudaMemsetAsync(z, 0, static_cast<size_t>(p.rows * p.out) * sizeof(float), ctx.stream()));
  } else {
    GemmSpec plain = typed<T>(row_major(p.rows, p.out, p.in, false, true));
    plain.d_type = CUDA_R_32F;  // 16-bit A/B, fp32 D (a documented cuBLASLt combination)
    lt_gemm(call, ctx, plain, GemmPtrs{w, x, z}, ws);
  }
  float* pre_f32 = kWide && mask ? z : nullptr;  // in place: each element is read before it is written
  kernels::linear_epilogue_cuda<T>(z, bias, pre, y, pre_f32, p.rows, p.out, static_cast<int>(p.epilogue), ctx.stream());
  if (mask) {
    if (kWide)
      kernels::relu_mask_from_output_cuda<float>(z, mask, p.rows, p.out, mask_ld, ctx.stream());
    else
      kernels::relu_mask_from_output_cuda<T>(y, mask, p.rows, p.out, mask_ld, ctx.stream());
  }
}

void linear_cuda(const OpCall& call) {
  const ops::LinearArgs p = ops::check_linear_call(call);
  with_storage_type(p.dtype, op_name(call.op), [&](auto tag) { linear_t<typename decltype(tag)::type>(call, p); });
}

/// db = Σ_rows dpre, into T or (f32 masters' gradient) float.
template <typename T>
void bias_grad(const T* dpre, void* db, bool f32, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (f32)
    kernels::bias_grad_cuda<T, float>(dpre, static_cast<float*>(db), rows, cols, stream);
  else
    kernels::bias_grad_cuda<T, T>(dpre, static_cast<T*>(db), rows, cols, stream);
}

template <typename T>
void linear_backward_t(const OpCall& call, const ops::LinearBackwardArgs& p) {
  constexpr bool kWide = !std::is_same<T, float>::value;  // 16-bit storage
  CudaContext& ctx = cuda_context(call);
  const TensorView& dx_v = p.dx;
  // dw and db in T, or (16-bit storage) both f32: the masters' gradients straight from the GEMM.
  const bool grads_f32 = kWide && ((p.has_dw && p.dw.dtype == DType::f32) || (p.has_db && p.db.dtype == DType::f32));
  void* dw = p.dw.data;
  void* db = p.db.data;
  if (p.rows == 0 || p.out == 0) {  // empty sums
    if (p.has_dw) zero(ctx, p.dw);
    if (p.has_db) zero(ctx, p.db);
    if (p.has_dx) zero(ctx, dx_v);
    if (p.has_db_below) zero(ctx, p.db_below);
    return;
  }
  const int64_t n = p.rows * p.out;
  const T* dy = p.dy.as<T>();
  const bool through_relu = p.has_dx && p.in > 0 && p.dx_relu;
  const MaskLayout layout = through_relu ? mask_layout<T>(call, ctx) : MaskLayout{};
  const size_t dpre_bytes = p.epilogue == Epilogue::None ? 0 : static_cast<size_t>(n) * sizeof(T);
  Scratch ws = scratch(ctx, dpre_bytes);
  // 16-bit dx through the relu below without DRELU: the GEMM's fp32 result is masked, summed for db
  // below and rounded from it, in scratch asked for only then. The probe sees dpre at the start of
  // the workspace (a pool block: 256-byte aligned on a GPU wherever the workspace moves), so its plan
  // is the one that runs; the unfused path checks that it got the scratch.
  if (kWide && through_relu) {
    GemmSpec drelu = typed<T>(row_major(p.rows, p.in, p.out, false, false));
    drelu.epilogue = p.db_below.defined() ? CUBLASLT_EPILOGUE_DRELU_BGRAD : CUBLASLT_EPILOGUE_DRELU;
    drelu.aux_ld = relu_mask_row_bytes(p.in) * 8;
    const void* probe_dpre = p.epilogue == Epilogue::None ? static_cast<const void*>(dy) : ws.dpre;
    if (!layout.drelu_reads_ours ||
        !lt_runs(call, ctx, drelu, GemmPtrs{p.w.data, probe_dpre, p.dx.data, p.db_below.data, p.mask.data}))
      ws = scratch(ctx, dpre_bytes, static_cast<size_t>(p.rows * p.in));
  }
  const T* dpre = dy;
  if (p.epilogue != Epilogue::None) {
    T* d = static_cast<T*>(ws.dpre);
    kernels::linear_act_backward_cuda<T>(dy, p.act.as<T>(), d, n, static_cast<int>(p.epilogue), ctx.stream());
    dpre = d;
  }
  if (p.has_dw && p.in > 0) {  // dw (out, in) = dpreᵀ · x, db through BGRADB
    const T* x = p.x.as<T>();
    GemmSpec s = typed<T>(row_major(p.out, p.in, p.rows, true, false));
    if (grads_f32) s.d_type = CUDA_R_32F;  // 16-bit A/B, fp32 D and bias gradient
    bool fused_db = false;
    if (db) {
      s.epilogue = CUBLASLT_EPILOGUE_BGRADB;
      fused_db = lt_gemm(call, ctx, s, GemmPtrs{x, dpre, dw, db, nullptr}, ws);
      if (!fused_db) note_unfused(call, "cuBLASLt has no algo for epilogue BGRADB");
      s.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    }
    if (!fused_db) lt_gemm(call, ctx, s, GemmPtrs{x, dpre, dw}, ws);
    if (db && !fused_db) bias_grad(dpre, db, grads_f32, p.rows, p.out, ctx.stream());
  } else if (db) {
    bias_grad(dpre, db, grads_f32, p.rows, p.out, ctx.stream());
  }
  if (p.has_dx && p.in > 0) {  // dx (rows, in) = dpre · w [⊙ the relu mask below, db below through BGRAD]
    GemmSpec s = typed<T>(row_major(p.rows, p.in, p.out, false, false));
    T* dx = dx_v.as<T>();
    const T* w = p.w.as<T>();
    if (p.dx_relu) {
      uint8_t* mask = const_cast<uint8_t*>(p.mask.as<uint8_t>());  // read only (DRELU's aux is an input)
      const int64_t mask_ld = relu_mask_row_bytes(p.in);
      T* db_below = p.db_below.as<T>();
      s.epilogue = db_below ? CUBLASLT_EPILOGUE_DRELU_BGRAD : CUBLASLT_EPILOGUE_DRELU;
      s.aux_ld = mask_ld * 8;
      if (!layout.drelu_reads_ours)
        note_unfused(
            call,
            layout.known
                ? "cuBLASLt's DRELU does not read cudl's relu mask layout (checked once per device and storage type)"
                : "the relu mask layout is checked on the first call outside a stream capture");
      else if (lt_gemm(call, ctx, s, GemmPtrs{w, dpre, dx, db_below, mask}, ws))
        return;
      else
        note_unfused(call, std::string("cuBLASLt has no algo for epilogue ") + epilogue_name(s.epilogue));
      s = typed<T>(row_major(p.rows, p.in, p.out, false, false));
      if constexpr (kWide) {  // fp32 dx: masked and summed before its one rounding
        if (!ws.f32) lt_fail(call, "fp32 scratch for the unfused DRELU", CUBLAS_STATUS_INTERNAL_ERROR, s);
        s.d_type = CUDA_R_32F;
        lt_gemm(call, ctx, s, GemmPtrs{w, dpre, ws.f32}, ws);
        kernels::relu_mask_apply_cuda<float>(ws.f32, mask, p.rows, p.in, mask_ld, ctx.stream());
        if (db_below) kernels::bias_grad_cuda<float, T>(ws.f32, db_below, p.rows, p.in, ctx.stream());
        kernels::cast_cuda(ws.f32, kernels::kCastF32, dx,
                           std::is_same<T, __nv_bfloat16>::value ? kernels::kCastBf16 : kernels::kCastF16,
                           p.rows * p.in, ctx.stream());
      } else {
        lt_gemm(call, ctx, s, GemmPtrs{w, dpre, dx}, ws);
        kernels::relu_mask_apply_cuda<T>(dx, mask, p.rows, p.in, mask_ld, ctx.stream());
        if (db_below) kernels::bias_grad_cuda<T, T>(dx, db_below, p.rows, p.in, ctx.stream());
      }
      return;
    }
    lt_gemm(call, ctx, s, GemmPtrs{w, dpre, dx}, ws);
  }
}

void linear_backward_cuda(const OpCall& call) {
  const ops::LinearBackwardArgs p = ops::check_linear_backward_call(call);
  with_storage_type(p.dtype, op_name(call.op),
                    [&](auto tag) { linear_backward_t<typename decltype(tag)::type>(call, p); });
}

}  // namespace

size_t cuda_gemm_workspace_bytes() { return kLtWorkspace; }

void cuda_strided_gemm(const OpCall& call, CudaContext& ctx, const StridedGemm& g, void* lt_workspace) {
  if (g.batch == 0 || g.m == 0 || g.n == 0) return;
  if (g.k == 0) CUDL_FAIL(chk::who(call), ": strided GEMM with k = 0 (m ", g.m, ", n ", g.n, ")");
  // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLASLt's A is our B.
  GemmSpec s = row_major(g.m, g.n, g.k, g.ta, g.tb);
  s.lda = g.ldb, s.ldb = g.lda, s.ldd = g.ldc;
  s.batch = g.batch;
  s.stride_a = g.stride_b, s.stride_b = g.stride_a, s.stride_d = g.stride_c;
  lt_gemm(call, ctx, s, GemmPtrs{g.b, g.a, g.c}, Scratch{nullptr, nullptr, lt_workspace, kLtWorkspace});
}

void cuda_matmul_forget_mask_layout() {
  std::lock_guard<std::mutex> lock(mask_layout_mu());
  mask_layouts().clear();
}

MatmulPlanStats cuda_matmul_plan_stats() {
  PlanCache& cache = plan_cache();
  std::lock_guard<std::mutex> lock(cache.mu);
  return cache.stats;
}

void register_cuda_matmul_ops(OpTable& t) {
  t.add(OpKind::Matmul, matmul_cuda);
  t.add(OpKind::Linear, linear_cuda);
  t.add(OpKind::LinearBackward, linear_backward_cuda);
}

}  // namespace cudl
