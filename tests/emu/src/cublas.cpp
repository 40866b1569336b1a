// tests/emu/src/cublas.cpp — emulated cuBLAS and cuBLASLt subsets on emulated device memory: handles,
// (strided-batched) GEMM, and cublasLtMatmul with its epilogues, from the documented semantics.
//
// Conventions (as the cuBLAS documentation states them):
// - Column-major: element (r, c) of a matrix with leading dimension ld is at r + c*ld; op(A) is m x k,
//   op(B) is k x n, C and D are m x n; D = alpha*op(A)*op(B) + beta*C. When beta == 0, C is not read;
//   when alpha == 0, A and B are not read (so uninitialised memory does not turn into NaN).
// - Arguments are validated when the call is made and the documented status is returned; the work
//   itself is queued on the stream (cudl_emu::enqueue) and runs when the stream is flushed. Pointers
//   are checked when the work runs: memory outside every device allocation is recorded as the sticky
//   cudaErrorIllegalAddress, a pointer less aligned than the one the algo was chosen for as the sticky
//   cudaErrorMisalignedAddress, both naming the call, as a faulting kernel would be on a GPU.
// - Products accumulate in double (CUDL_EMU_ACCUMULATE=fp32: in float, as the hardware does; see
//   emu/runtime.hpp); inputs and outputs may be f32, f64, f16 or bf16. f16/bf16 A and B accumulate in
//   float (fused multiply-add, the tensor cores' fp32 accumulator) under CUBLAS_COMPUTE_32F, and in
//   half (every partial sum rounded to f16) under CUBLAS_COMPUTE_16F. Each result is rounded to D's
//   type once, when it is stored (after the epilogue). TF32 (compute type
//   CUBLAS_COMPUTE_32F_FAST_TF32, or CUBLAS_TF32_TENSOR_OP_MATH with CUBLAS_COMPUTE_32F) rounds f32 A
//   and B to TF32 before the products (cudl_emu::round_tf32).
// - CUDL_EMU_REFUSE_ENGINES=<seed>/<p> makes the heuristic find no algorithm for a fraction p of the
//   problems (emu/runtime.hpp), so callers' fallbacks run (unfused epilogues, the legacy API).
// - cuBLASLt epilogues: the bias vector has m elements (rows of D), broadcast along the columns, added
//   before the activation. RELU is max(x, 0) and turns NaN into 0, as the real library does. GELU is
//   the tanh approximation 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))). RELU_AUX writes a bit-mask
//   (bit r + c*aux_ld of the byte array, LSB first, set where the pre-activation was > 0; aux_ld in
//   bits, a multiple of 128); GELU_AUX writes the pre-activation (aux_ld in elements, multiple of 8).
//   DRELU / DGELU multiply alpha*op(A)op(B) + beta*C by the activation's derivative read from aux;
//   their _BGRAD forms also store the sum of each row of the result over the columns (m values) in the
//   bias pointer. BGRADA stores sum_k op(A)(i, k) (m values), BGRADB sum_k op(B)(k, j) (n values),
//   both unscaled by alpha. Only CUBLASLT_ORDER_COL and strided batches are emulated; anything else is
//   CUBLAS_STATUS_NOT_SUPPORTED. Types, as cublasLt.h documents them for the non-fp8 kernels: the bias
//   and bias gradient vectors have D's type (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE may only restate
//   it), GELU's aux has D's type (CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE likewise); other
//   settings are CUBLAS_STATUS_NOT_SUPPORTED.
// - The emulated algo asks for min(preference limit, 256 KiB) of workspace and fills the workspace it
//   is given with a NaN byte pattern each call, so a caller that keeps live data in it finds out.
#include <cublasLt.h>
#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>
#include <atomic>
#include <set>
#include <string>
#include <vector>

#include "emu/emu.hpp"
#include "emu/runtime.hpp"
#include "internal.hpp"
#include "src/core/half.hpp"

// The handle types are incomplete in the headers; the emulation defines them.
struct cublasContext {
  uint32_t magic;
  cudaStream_t stream;
  void* workspace;
  size_t workspace_bytes;
  cublasPointerMode_t pointer_mode;
  cublasMath_t math_mode;
  bool default_workspace;  // cuBLAS's own workspace (no cublasSetWorkspace) was allocated
};

struct cublasLtContext {
  uint32_t magic;
};

namespace cudl_emu {

namespace {
struct RefuseMode {
  uint64_t seed = 0;
  double probability = 0;
};
RefuseMode parse_refuse_mode() {
  RefuseMode m;
  const char* env = std::getenv("CUDL_EMU_REFUSE_ENGINES");
  if (!env || !*env) return m;
  char* end = nullptr;
  m.seed = std::strtoull(env, &end, 10);
  if (end == env || *end != '/' || !(m.probability = std::strtod(end + 1, &end), *end == '\0') ||
      !(m.probability >= 0 && m.probability <= 1)) {
    std::fprintf(stderr, "cudl-emu: CUDL_EMU_REFUSE_ENGINES='%s' is not <seed>/<probability in [0, 1]>\n", env);
    std::abort();
  }
  return m;
}
bool parse_accumulate_fp32() {
  const char* env = std::getenv("CUDL_EMU_ACCUMULATE");
  if (!env || !*env || std::strcmp(env, "fp64") == 0) return false;
  if (std::strcmp(env, "fp32") == 0) return true;
  std::fprintf(stderr, "cudl-emu: CUDL_EMU_ACCUMULATE='%s' is neither fp32 nor fp64\n", env);
  std::abort();
}
}  // namespace

bool refuse_engine(uint64_t problem_key) {
  static const RefuseMode mode = parse_refuse_mode();
  if (mode.probability <= 0) return false;
  const uint64_t h = hash_mix(hash_mix(1469598103934665603ull, mode.seed), problem_key);
  return (double)(h >> 11) * 0x1.0p-53 < mode.probability;
}
bool accumulate_fp32() {
  static const bool fp32 = parse_accumulate_fp32();
  return fp32;
}

}  // namespace cudl_emu

namespace {

constexpr uint32_t kCublasMagic = 0xC0B1A5u;
constexpr uint32_t kLtMagic = 0xC0B1A517u;
constexpr uint32_t kDescMagic = 0xDE5C0001u;
constexpr uint32_t kLayoutMagic = 0x1A70u;
constexpr uint32_t kPrefMagic = 0x9BEFu;
constexpr uint64_t kAlgoMagic = 0xA160E4u;
constexpr size_t kAlgoWorkspace = 256 * 1024;

// --- element access ----------------------------------------------------------------------------

size_t type_size(cudaDataType t) {
  switch (t) {
    case CUDA_R_32F:
      return 4;
    case CUDA_R_64F:
      return 8;
    case CUDA_R_16F:
      return 2;
    case CUDA_R_16BF:
      return 2;
    default:
      return 0;
  }
}

bool is_float_type(int t) { return t == CUDA_R_32F || t == CUDA_R_64F || t == CUDA_R_16F || t == CUDA_R_16BF; }

double load(cudaDataType t, const void* base, int64_t i) {
  switch (t) {
    case CUDA_R_32F:
      return static_cast<const float*>(base)[i];
    case CUDA_R_64F:
      return static_cast<const double*>(base)[i];
    case CUDA_R_16F:
      return cudl::half_bits_to_float(static_cast<const uint16_t*>(base)[i]);
    case CUDA_R_16BF:
      return cudl::bf16_bits_to_float(static_cast<const uint16_t*>(base)[i]);
    default:
      return 0;
  }
}

void store(cudaDataType t, void* base, int64_t i, double v) {
  switch (t) {
    case CUDA_R_32F:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      break;
    case CUDA_R_64F:
      static_cast<double*>(base)[i] = v;
      break;
    case CUDA_R_16F:
      static_cast<uint16_t*>(base)[i] = cudl::float_to_half_bits(static_cast<float>(v));
      break;
    case CUDA_R_16BF:
      static_cast<uint16_t*>(base)[i] = cudl::float_to_bf16_bits(static_cast<float>(v));
      break;
    default:
      break;
  }
}

const char* type_name(int t) {
  switch (t) {
    case CUDA_R_32F:
      return "CUDA_R_32F";
    case CUDA_R_64F:
      return "CUDA_R_64F";
    case CUDA_R_16F:
      return "CUDA_R_16F";
    case CUDA_R_16BF:
      return "CUDA_R_16BF";
    default:
      return "unsupported type";
  }
}

// --- the problem every entry point reduces to -----------------------------------------------------

/// A column-major matrix in device memory: element (r, c) of batch b at b*stride + r + c*ld.
struct Mat {
  const void* ptr = nullptr;
  cudaDataType type = CUDA_R_32F;
  int64_t rows = 0, cols = 0, ld = 0, stride = 0;
  uint32_t align = 1;  // alignment the algo was chosen for (bytes)
};

/// What an epilogue does, decoded from cublasLtEpilogue_t.
struct Epi {
  bool bias_add = false, relu = false, gelu = false, aux_out = false;
  bool drelu = false, dgelu = false, bgrad_rows = false, bgrada = false, bgradb = false;
  bool needs_bias() const { return bias_add || bgrad_rows || bgrada || bgradb; }
  bool needs_aux() const { return aux_out || drelu || dgelu; }
  bool relu_mask() const { return (aux_out && relu) || drelu; }  // aux is a bit-mask
};

bool decode_epilogue(uint32_t e, Epi* out) {
  Epi d;
  switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT:
      break;
    case CUBLASLT_EPILOGUE_RELU:
      d.relu = true;
      break;
    case CUBLASLT_EPILOGUE_RELU_AUX:
      d.relu = d.aux_out = true;
      break;
    case CUBLASLT_EPILOGUE_BIAS:
      d.bias_add = true;
      break;
    case CUBLASLT_EPILOGUE_RELU_BIAS:
      d.relu = d.bias_add = true;
      break;
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS:
      d.relu = d.aux_out = d.bias_add = true;
      break;
    case CUBLASLT_EPILOGUE_DRELU:
      d.drelu = true;
      break;
    case CUBLASLT_EPILOGUE_DRELU_BGRAD:
      d.drelu = d.bgrad_rows = true;
      break;
    case CUBLASLT_EPILOGUE_GELU:
      d.gelu = true;
      break;
    case CUBLASLT_EPILOGUE_GELU_AUX:
      d.gelu = d.aux_out = true;
      break;
    case CUBLASLT_EPILOGUE_GELU_BIAS:
      d.gelu = d.bias_add = true;
      break;
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
      d.gelu = d.aux_out = d.bias_add = true;
      break;
    case CUBLASLT_EPILOGUE_DGELU:
      d.dgelu = true;
      break;
    case CUBLASLT_EPILOGUE_DGELU_BGRAD:
      d.dgelu = d.bgrad_rows = true;
      break;
    case CUBLASLT_EPILOGUE_BGRADA:
      d.bgrada = true;
      break;
    case CUBLASLT_EPILOGUE_BGRADB:
      d.bgradb = true;
      break;
    default:
      return false;
  }
  *out = d;
  return true;
}

struct Problem {
  const char* name = "";
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool ta = false, tb = false;
  Mat a, b, c, d;  // d.ptr is written
  // Scalars: by value (host pointer mode, read at call time) or read from device memory when run.
  cudaDataType scale_type = CUDA_R_32F;
  bool device_scalars = false;
  const void* alpha_ptr = nullptr;
  const void* beta_ptr = nullptr;
  double alpha = 1, beta = 0;
  // Epilogue.
  Epi epi;
  void* bias = nullptr;
  cudaDataType bias_type = CUDA_R_32F;
  int64_t bias_stride = 0;
  void* aux = nullptr;
  cudaDataType aux_type = CUDA_R_32F;
  int64_t aux_ld = 0, aux_stride = 0;
  // Workspace the algo uses (scribbled).
  void* workspace = nullptr;
  size_t workspace_used = 0;
  // f32 A and B are read as TF32 (cudl_emu::round_tf32) by the tensor cores.
  bool tf32 = false;
  // CUBLAS_COMPUTE_16F(_PEDANTIC): the accumulator is f16 (every partial sum rounded to half).
  bool acc_f16 = false;
};

constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)

double gelu_tanh(double x) { return 0.5 * x * (1.0 + std::tanh(kGeluC * (x + 0.044715 * x * x * x))); }

double gelu_tanh_grad(double x) {
  const double t = std::tanh(kGeluC * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kGeluC * (1.0 + 3.0 * 0.044715 * x * x);
}

/// Elements spanned by a matrix over all batches (0 for an empty one).
int64_t span_elems(int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t batch) {
  if (rows == 0 || cols == 0 || batch == 0) return 0;
  return (batch - 1) * stride + (cols - 1) * ld + rows;
}

std::string fmt_ptr(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

/// Records an illegal address naming the call and the operand; returns false when the range is bad.
bool check_range(const Problem& p, const char* what, const void* ptr, size_t bytes) {
  if (bytes == 0) return true;
  if (ptr && cudl_emu::is_device_range(ptr, bytes)) return true;
  cudl_emu::record_error(cudaErrorIllegalAddress,
                         std::string(p.name) + ": " + what + " [" + fmt_ptr(ptr) + ", +" + std::to_string(bytes) +
                             " bytes) is not inside one device allocation",
                         true);
  return false;
}

bool check_align(const Problem& p, const char* what, const void* ptr, uint32_t align) {
  if (!ptr || align <= 1 || reinterpret_cast<uintptr_t>(ptr) % align == 0) return true;
  cudl_emu::record_error(cudaErrorMisalignedAddress,
                         std::string(p.name) + ": " + what + " pointer " + fmt_ptr(ptr) + " is not aligned to the " +
                             std::to_string(align) +
                             " bytes the algo was selected for (set CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES)",
                         true);
  return false;
}

double read_scalar(cudaDataType t, const void* p) { return load(t, p, 0); }

/// Runs a validated problem (on the stream, when it is flushed).
std::atomic<bool> g_mask_msb_first{false};
/// The bit of its byte that a relu mask element lands in: LSB first, or MSB first in the test mode.
int mask_bit(int64_t aux_index) {
  const int b = static_cast<int>(aux_index % 8);
  return g_mask_msb_first.load() ? 7 - b : b;
}

void execute(const Problem& p) {
  cudl_emu::WorkScope scope(p.name);
  const bool empty_product = p.m == 0 || p.n == 0 || p.batch == 0;
  if (empty_product) return;
  // Scalars.
  double alpha = p.alpha, beta = p.beta;
  if (p.device_scalars) {
    const size_t ss = type_size(p.scale_type);
    if (!check_range(p, "alpha", p.alpha_ptr, ss) || !check_range(p, "beta", p.beta_ptr, ss)) return;
    alpha = read_scalar(p.scale_type, p.alpha_ptr);
    beta = read_scalar(p.scale_type, p.beta_ptr);
  }
  const bool read_ab = alpha != 0 && p.k > 0;
  const bool read_c = beta != 0;
  auto bytes_of = [&](const Mat& x) {
    return static_cast<size_t>(span_elems(x.rows, x.cols, x.ld, x.stride, p.batch)) * type_size(x.type);
  };
  if (read_ab || p.epi.bgrada || p.epi.bgradb) {
    if (!check_range(p, "A", p.a.ptr, bytes_of(p.a)) || !check_range(p, "B", p.b.ptr, bytes_of(p.b))) return;
  }
  if (read_c && !check_range(p, "C", p.c.ptr, bytes_of(p.c))) return;
  if (!check_range(p, "D", p.d.ptr, bytes_of(p.d))) return;
  if (!check_align(p, "A", p.a.ptr, p.a.align) || !check_align(p, "B", p.b.ptr, p.b.align) ||
      !check_align(p, "C", p.c.ptr, p.c.align) || !check_align(p, "D", p.d.ptr, p.d.align))
    return;
  const int64_t m = p.m, n = p.n, k = p.k;
  int64_t bias_len = 0;
  if (p.epi.bias_add || p.epi.bgrad_rows || p.epi.bgrada) bias_len = m;
  if (p.epi.bgradb) bias_len = n;
  if (bias_len > 0 &&
      !check_range(p, "bias", p.bias,
                   static_cast<size_t>((p.batch - 1) * p.bias_stride + bias_len) * type_size(p.bias_type)))
    return;
  if (p.epi.needs_aux()) {
    size_t aux_bytes;
    if (p.epi.relu_mask()) {
      aux_bytes = static_cast<size_t>(((p.batch - 1) * p.aux_stride + (n - 1) * p.aux_ld + m + 7) / 8);
    } else {
      aux_bytes = static_cast<size_t>(span_elems(m, n, p.aux_ld, p.aux_stride, p.batch)) * type_size(p.aux_type);
    }
    if (!check_range(p, "epilogue aux", p.aux, aux_bytes)) return;
  }
  if (p.workspace && p.workspace_used > 0) {
    if (!check_range(p, "workspace", p.workspace, p.workspace_used)) return;
    std::memset(p.workspace, 0xFF, p.workspace_used);  // the algo's scratch: NaN pattern
  }

  std::vector<double> a(static_cast<size_t>(m * k)), bt(static_cast<size_t>(n * k));
  std::vector<double> rowsum;
  const bool ab_16bit = p.a.type == CUDA_R_16F || p.a.type == CUDA_R_16BF;
  const bool acc_f32 = (cudl_emu::accumulate_fp32() || ab_16bit) && p.a.type != CUDA_R_64F && p.b.type != CUDA_R_64F;
  for (int64_t bi = 0; bi < p.batch; ++bi) {
    const int64_t oa = bi * p.a.stride, ob = bi * p.b.stride, oc = bi * p.c.stride, od = bi * p.d.stride;
    // op(A) packed as m rows of k; op(B) packed as n columns of k.
    if (read_ab || p.epi.bgrada || p.epi.bgradb) {
      for (int64_t i = 0; i < m; ++i)
        for (int64_t kk = 0; kk < k; ++kk)
          a[i * k + kk] = load(p.a.type, p.a.ptr, oa + (p.ta ? kk + i * p.a.ld : i + kk * p.a.ld));
      for (int64_t j = 0; j < n; ++j)
        for (int64_t kk = 0; kk < k; ++kk)
          bt[j * k + kk] = load(p.b.type, p.b.ptr, ob + (p.tb ? j + kk * p.b.ld : kk + j * p.b.ld));
      if (p.tf32) {
        for (double& v : a) v = cudl_emu::round_tf32(static_cast<float>(v));
        for (double& v : bt) v = cudl_emu::round_tf32(static_cast<float>(v));
      }
    }
    void* bias_b = p.bias ? static_cast<char*>(p.bias) + bi * p.bias_stride * type_size(p.bias_type) : nullptr;
    if (p.epi.bgrad_rows) rowsum.assign(static_cast<size_t>(m), 0.0);
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t i = 0; i < m; ++i) {
        double acc = 0;
        if (read_ab) {
          const double* ai = &a[i * k];
          const double* bj = &bt[j * k];
          if (p.acc_f16) {
            float f = 0;  // a half accumulator: each partial sum rounded to f16
            for (int64_t kk = 0; kk < k; ++kk)
              f = cudl::half_bits_to_float(cudl::float_to_half_bits(std::fmaf((float)ai[kk], (float)bj[kk], f)));
            acc = f;
          } else if (acc_f32) {
            float f = 0;  // the operands are f32/f16/bf16 values: exact in float
            for (int64_t kk = 0; kk < k; ++kk) f = std::fmaf((float)ai[kk], (float)bj[kk], f);
            acc = f;
          } else {
            for (int64_t kk = 0; kk < k; ++kk) acc += ai[kk] * bj[kk];
          }
        }
        double v = alpha * acc;
        if (read_c) v += beta * load(p.c.type, p.c.ptr, oc + i + j * p.c.ld);
        if (p.epi.bias_add) v += load(p.bias_type, bias_b, i);
        const int64_t aux_index = bi * p.aux_stride + i + j * p.aux_ld;
        if (p.epi.aux_out) {
          if (p.epi.relu) {
            uint8_t* byte = static_cast<uint8_t*>(p.aux) + aux_index / 8;
            const uint8_t bit = static_cast<uint8_t>(1u << mask_bit(aux_index));
            *byte = v > 0 ? static_cast<uint8_t>(*byte | bit) : static_cast<uint8_t>(*byte & ~bit);
          } else {
            store(p.aux_type, p.aux, aux_index, v);
          }
        }
        if (p.epi.relu) v = v > 0 ? v : 0.0;  // NaN -> 0, as max(x, 0) on the GPU
        if (p.epi.gelu) v = gelu_tanh(v);
        if (p.epi.drelu) {
          const uint8_t byte = static_cast<const uint8_t*>(p.aux)[aux_index / 8];
          if (!((byte >> mask_bit(aux_index)) & 1u)) v = 0;
        }
        if (p.epi.dgelu) v *= gelu_tanh_grad(load(p.aux_type, p.aux, aux_index));
        store(p.d.type, const_cast<void*>(p.d.ptr), od + i + j * p.d.ld, v);
        if (p.epi.bgrad_rows) rowsum[i] += v;
      }
    }
    if (p.epi.bgrad_rows)
      for (int64_t i = 0; i < m; ++i) store(p.bias_type, bias_b, i, rowsum[i]);
    if (p.epi.bgrada) {
      for (int64_t i = 0; i < m; ++i) {
        double s = 0;
        for (int64_t kk = 0; kk < k; ++kk) s += a[i * k + kk];
        store(p.bias_type, bias_b, i, s);
      }
    }
    if (p.epi.bgradb) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t kk = 0; kk < k; ++kk) s += bt[j * k + kk];
        store(p.bias_type, bias_b, j, s);
      }
    }
  }
}

cublasStatus_t submit(cudaStream_t stream, const Problem& p) {
  cudaError_t err = cudl_emu::enqueue(stream, cudl_emu::WorkKind::Library, p.name, [p] { execute(p); });
  return err == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

bool valid_op(int op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

cublasContext* live(cublasHandle_t h) { return h && h->magic == kCublasMagic ? h : nullptr; }

/// cuBLAS (legacy API) GEMM family: validation as the documentation lists it, then the queue.
cublasStatus_t blas_gemm(const char* name, cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                         int64_t m, int64_t n, int64_t k, const void* alpha, const void* A, cudaDataType atype,
                         int64_t lda, long long stride_a, const void* B, cudaDataType btype, int64_t ldb,
                         long long stride_b, const void* beta, void* C, cudaDataType ctype, int64_t ldc,
                         long long stride_c, int64_t batch, cudaDataType scale_type,
                         cublasComputeType_t compute) {
  cublasContext* h = live(handle);
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || !valid_op(transa) || !valid_op(transb))
    return CUBLAS_STATUS_INVALID_VALUE;
  const bool ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N;
  const int64_t a_rows = ta ? k : m, b_rows = tb ? n : k;
  if (lda < std::max<int64_t>(1, a_rows) || ldb < std::max<int64_t>(1, b_rows) || ldc < std::max<int64_t>(1, m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;  // quick return
  if (!C) return CUBLAS_STATUS_INVALID_VALUE;
  Problem p;
  p.name = name;
  p.m = m, p.n = n, p.k = k, p.batch = batch, p.ta = ta, p.tb = tb;
  p.a = Mat{A, atype, a_rows, ta ? m : k, lda, stride_a, 1};
  p.b = Mat{B, btype, b_rows, tb ? k : n, ldb, stride_b, 1};
  p.c = Mat{C, ctype, m, n, ldc, stride_c, 1};
  p.d = p.c;
  p.scale_type = scale_type;
  p.acc_f16 = compute == CUBLAS_COMPUTE_16F || compute == CUBLAS_COMPUTE_16F_PEDANTIC;
  // TF32 tensor cores: asked for by the compute type, or by the handle's math mode for f32 data
  // computed in CUBLAS_COMPUTE_32F (the legacy Sgemm family and GemmEx), as the cuBLAS docs state.
  p.tf32 = atype == CUDA_R_32F &&
           (compute == CUBLAS_COMPUTE_32F_FAST_TF32 ||
            (compute == CUBLAS_COMPUTE_32F && (static_cast<int>(h->math_mode) & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH));
  if (!h->workspace) {
    // No workspace set with cublasSetWorkspace: cuBLAS allocates its own, once per handle, and
    // inside a stream capture with cudaMallocAsync (CUDA 12.2+), i.e. an allocation in every
    // captured graph (before 12.2: a new workspace per capture). Counted as device allocations.
    if (cudl_emu::is_capturing(h->stream)) {
      cudl_emu::detail::count_malloc(true);
    } else if (!h->default_workspace) {
      cudl_emu::detail::count_malloc(true);
      h->default_workspace = true;
    }
  }
  if (h->pointer_mode == CUBLAS_POINTER_MODE_DEVICE) {
    p.device_scalars = true;
    p.alpha_ptr = alpha;
    p.beta_ptr = beta;
  } else {
    p.alpha = read_scalar(scale_type, alpha);
    p.beta = read_scalar(scale_type, beta);
  }
  return submit(h->stream, p);
}

/// Scale type of a compute type and whether the A/B/C types go with it (cuBLAS's GemmEx table, the
/// float subset). Returns false for combinations the emulation does not provide.
bool gemm_ex_types(cublasComputeType_t compute, cudaDataType atype, cudaDataType btype, cudaDataType ctype,
                   cudaDataType* scale) {
  if (atype != btype || !is_float_type(atype) || !is_float_type(ctype)) return false;
  switch (compute) {
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
      *scale = CUDA_R_16F;
      return atype == CUDA_R_16F && ctype == CUDA_R_16F;
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
      *scale = CUDA_R_32F;
      if (atype == CUDA_R_32F) return ctype == CUDA_R_32F;
      if (atype == CUDA_R_16F || atype == CUDA_R_16BF) return ctype == atype || ctype == CUDA_R_32F;
      return false;
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
      *scale = CUDA_R_32F;
      return atype == CUDA_R_32F && ctype == CUDA_R_32F;
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC:
      *scale = CUDA_R_64F;
      return atype == CUDA_R_64F && ctype == CUDA_R_64F;
    default:
      return false;
  }
}

bool valid_gemm_algo(cublasGemmAlgo_t algo) {
  const int a = static_cast<int>(algo);
  return (a >= -1 && a <= 23) || (a >= 99 && a <= 115);
}

// --- cuBLASLt descriptors (they fit in the semi-opaque structs, so *Init_internal works too) ---------

struct LayoutData {
  uint32_t magic;
  int32_t type;
  int32_t order;
  int32_t batch_count;
  uint32_t batch_mode;
  int32_t pad;
  uint64_t rows, cols;
  int64_t ld;
  int64_t stride;
};
static_assert(sizeof(LayoutData) <= sizeof(cublasLtMatrixLayoutOpaque_t), "layout does not fit");

struct DescData {
  uint32_t magic;
  int32_t compute_type;
  int32_t scale_type;
  int32_t pointer_mode;
  int32_t transa, transb, transc;
  int32_t fill_mode;
  uint32_t epilogue;
  int32_t bias_type;  // -1: default
  int32_t aux_type;   // -1: default
  int32_t sm_count;
  int8_t fast_accum;
  const void* bias;
  void* aux;
  int64_t aux_ld;
  int64_t aux_stride;
  int64_t bias_stride;
  int64_t alpha_vec_stride;
};
static_assert(sizeof(DescData) <= sizeof(cublasLtMatmulDescOpaque_t), "desc does not fit");

struct PrefData {
  uint32_t magic;
  uint32_t search_mode;
  uint64_t max_workspace;
  uint32_t reduction_mask;
  uint32_t align_a, align_b, align_c, align_d;
  float max_waves;
  uint64_t impl_mask;
};
static_assert(sizeof(PrefData) <= sizeof(cublasLtMatmulPreferenceOpaque_t), "preference does not fit");

LayoutData* layout_of(cublasLtMatrixLayout_t l) {
  auto* d = reinterpret_cast<LayoutData*>(l);
  return d && d->magic == kLayoutMagic ? d : nullptr;
}
DescData* desc_of(cublasLtMatmulDesc_t m) {
  auto* d = reinterpret_cast<DescData*>(m);
  return d && d->magic == kDescMagic ? d : nullptr;
}
PrefData* pref_of(cublasLtMatmulPreference_t p) {
  auto* d = reinterpret_cast<PrefData*>(p);
  return d && d->magic == kPrefMagic ? d : nullptr;
}

/// Shared Set/GetAttribute plumbing: copies `size` bytes between the attribute and the caller.
cublasStatus_t set_bytes(void* field, size_t field_size, const void* buf, size_t size) {
  if (!buf || size != field_size) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(field, buf, size);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t get_bytes(const void* field, size_t field_size, void* buf, size_t size, size_t* written) {
  if (size == 0) {
    if (!written) return CUBLAS_STATUS_INVALID_VALUE;
    *written = field_size;
    return CUBLAS_STATUS_SUCCESS;
  }
  if (!buf || size != field_size) return CUBLAS_STATUS_INVALID_VALUE;
  std::memcpy(buf, field, size);
  if (written) *written = size;
  return CUBLAS_STATUS_SUCCESS;
}

/// Where a layout attribute lives and its documented size.
bool layout_field(LayoutData* d, cublasLtMatrixLayoutAttribute_t attr, void** field, size_t* size) {
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE:
      *field = &d->type, *size = 4;
      return true;
    case CUBLASLT_MATRIX_LAYOUT_ORDER:
      *field = &d->order, *size = 4;
      return true;
    case CUBLASLT_MATRIX_LAYOUT_ROWS:
      *field = &d->rows, *size = 8;
      return true;
    case CUBLASLT_MATRIX_LAYOUT_COLS:
      *field = &d->cols, *size = 8;
      return true;
    case CUBLASLT_MATRIX_LAYOUT_LD:
      *field = &d->ld, *size = 8;
      return true;
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
      *field = &d->batch_count, *size = 4;
      return true;
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
      *field = &d->stride, *size = 8;
      return true;
    case CUBLASLT_MATRIX_LAYOUT_BATCH_MODE:
      *field = &d->batch_mode, *size = 4;
      return true;
    default:
      return false;
  }
}

bool desc_field(DescData* d, cublasLtMatmulDescAttributes_t attr, void** field, size_t* size) {
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE:
      *field = &d->compute_type, *size = 4;
      return true;
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE:
      *field = &d->scale_type, *size = 4;
      return true;
    case CUBLASLT_MATMUL_DESC_POINTER_MODE:
      *field = &d->pointer_mode, *size = 4;
      return true;
    case CUBLASLT_MATMUL_DESC_TRANSA:
      *field = &d->transa, *size = 4;
      return true;
    case CUBLASLT_MATMUL_DESC_TRANSB:
      *field = &d->transb, *size = 4;
      return true;
    case CUBLASLT_MATMUL_DESC_TRANSC:
      *field = &d->transc, *size = 4;
      return true;
    case CUBLASLT_MATMUL_DESC_FILL_MODE:
      *field = &d->fill_mode, *size = 4;
      return true;
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      *field = &d->epilogue, *size = 4;
      return true;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      *field = &d->bias, *size = sizeof(void*);
      return true;
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE:
      *field = &d->bias_stride, *size = 8;
      return true;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
      *field = &d->aux, *size = sizeof(void*);
      return true;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
      *field = &d->aux_ld, *size = 8;
      return true;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE:
      *field = &d->aux_stride, *size = 8;
      return true;
    case CUBLASLT_MATMUL_DESC_ALPHA_VECTOR_BATCH_STRIDE:
      *field = &d->alpha_vec_stride, *size = 8;
      return true;
    case CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET:
      *field = &d->sm_count, *size = 4;
      return true;
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE:
      *field = &d->aux_type, *size = 4;
      return true;
    case CUBLASLT_MATMUL_DESC_FAST_ACCUM:
      *field = &d->fast_accum, *size = 1;
      return true;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      *field = &d->bias_type, *size = 4;
      return true;
    default:
      return false;
  }
}

bool pref_field(PrefData* d, cublasLtMatmulPreferenceAttributes_t attr, void** field, size_t* size) {
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE:
      *field = &d->search_mode, *size = 4;
      return true;
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      *field = &d->max_workspace, *size = 8;
      return true;
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
      *field = &d->reduction_mask, *size = 4;
      return true;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
      *field = &d->align_a, *size = 4;
      return true;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
      *field = &d->align_b, *size = 4;
      return true;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
      *field = &d->align_c, *size = 4;
      return true;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      *field = &d->align_d, *size = 4;
      return true;
    case CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT:
      *field = &d->max_waves, *size = 4;
      return true;
    case CUBLASLT_MATMUL_PREF_IMPL_MASK:
      *field = &d->impl_mask, *size = 8;
      return true;
    default:
      return false;
  }
}

void init_layout(LayoutData* d, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld) {
  std::memset(d, 0, sizeof(*d));
  d->magic = kLayoutMagic;
  d->type = type;
  d->order = CUBLASLT_ORDER_COL;
  d->batch_count = 1;
  d->rows = rows;
  d->cols = cols;
  d->ld = ld;
}

void init_desc(DescData* d, cublasComputeType_t compute, cudaDataType_t scale) {
  std::memset(d, 0, sizeof(*d));
  d->magic = kDescMagic;
  d->compute_type = compute;
  d->scale_type = scale;
  d->pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  d->transa = d->transb = d->transc = CUBLAS_OP_N;
  d->fill_mode = CUBLAS_FILL_MODE_FULL;
  d->epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  d->bias_type = -1;
  d->aux_type = -1;
}

void init_pref(PrefData* d) {
  std::memset(d, 0, sizeof(*d));
  d->magic = kPrefMagic;
  d->search_mode = CUBLASLT_SEARCH_BEST_FIT;
  d->reduction_mask = CUBLASLT_REDUCTION_SCHEME_MASK;
  d->align_a = d->align_b = d->align_c = d->align_d = 256;
  d->impl_mask = ~0ull;
}

bool valid_compute(int c) {
  switch (c) {
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC:
      return true;
    default:
      return false;
  }
}

/// Checks a cublasLtMatmul configuration (everything but the data pointers) and fills `p`'s shape,
/// types and epilogue. Used by the heuristic query and by cublasLtMatmul.
cublasStatus_t check_config(const DescData* op, const LayoutData* la, const LayoutData* lb, const LayoutData* lc,
                            const LayoutData* ld, Problem* p) {
  if (!op || !la || !lb || !lc || !ld) return CUBLAS_STATUS_INVALID_VALUE;
  for (const LayoutData* l : {la, lb, lc, ld}) {
    if (l->order != CUBLASLT_ORDER_COL) return CUBLAS_STATUS_NOT_SUPPORTED;  // emulation: column-major only
    if (l->batch_mode != CUBLASLT_BATCH_MODE_STRIDED) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (!is_float_type(l->type)) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (l->ld < 0 || l->batch_count < 1 || l->stride < 0) return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (!valid_op(op->transa) || !valid_op(op->transb)) return CUBLAS_STATUS_INVALID_VALUE;
  if (op->transc != CUBLAS_OP_N) return CUBLAS_STATUS_NOT_SUPPORTED;  // documented: only N
  // Types: A and B alike, C and D alike, and the compute/scale types that go with them.
  cudaDataType scale;
  if (la->type != lb->type || lc->type != ld->type) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!gemm_ex_types(static_cast<cublasComputeType_t>(op->compute_type), static_cast<cudaDataType>(la->type),
                     static_cast<cudaDataType>(lb->type), static_cast<cudaDataType>(lc->type), &scale))
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (op->scale_type != scale) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (op->pointer_mode != CUBLASLT_POINTER_MODE_HOST && op->pointer_mode != CUBLASLT_POINTER_MODE_DEVICE)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  // Shapes: op(A) m x k, op(B) k x n, C and D m x n.
  const bool ta = op->transa != CUBLAS_OP_N, tb = op->transb != CUBLAS_OP_N;
  const int64_t m = static_cast<int64_t>(ld->rows), n = static_cast<int64_t>(ld->cols);
  const int64_t k = static_cast<int64_t>(ta ? la->rows : la->cols);
  if (static_cast<int64_t>(ta ? la->cols : la->rows) != m) return CUBLAS_STATUS_INVALID_VALUE;
  if (static_cast<int64_t>(tb ? lb->cols : lb->rows) != k || static_cast<int64_t>(tb ? lb->rows : lb->cols) != n)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (static_cast<int64_t>(lc->rows) != m || static_cast<int64_t>(lc->cols) != n) return CUBLAS_STATUS_INVALID_VALUE;
  for (const LayoutData* l : {la, lb, lc, ld})
    if (l->ld < std::max<int64_t>(1, static_cast<int64_t>(l->rows))) return CUBLAS_STATUS_INVALID_VALUE;
  const int64_t batch = ld->batch_count;
  if (la->batch_count != batch || lb->batch_count != batch || lc->batch_count != batch)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (batch > 1 && m > 0 && n > 0 && ld->stride < (n - 1) * ld->ld + m)
    return CUBLAS_STATUS_INVALID_VALUE;  // output batches would overlap
  Epi epi;
  if (!decode_epilogue(op->epilogue, &epi)) return CUBLAS_STATUS_INVALID_VALUE;
  if (op->bias_type != -1 && !is_float_type(op->bias_type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (op->aux_type != -1 && !is_float_type(op->aux_type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  // Bias (Dtype) and bias gradient (Ctype, == Dtype here) vectors, and GELU's aux, are D's type.
  if (epi.needs_bias() && op->bias_type != -1 && op->bias_type != ld->type) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (epi.needs_aux() && !epi.relu_mask() && op->aux_type != -1 && op->aux_type != ld->type)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (epi.needs_aux()) {
    if (op->aux_ld < std::max<int64_t>(1, m)) return CUBLAS_STATUS_INVALID_VALUE;
    const int64_t multiple = epi.relu_mask() ? 128 : 8;
    if (op->aux_ld % multiple != 0) return CUBLAS_STATUS_INVALID_VALUE;
    if (batch > 1 && op->aux_stride % multiple != 0) return CUBLAS_STATUS_INVALID_VALUE;
  }
  p->m = m, p->n = n, p->k = k, p->batch = batch, p->ta = ta, p->tb = tb;
  p->tf32 = la->type == CUDA_R_32F && op->compute_type == CUBLAS_COMPUTE_32F_FAST_TF32;
  p->acc_f16 = op->compute_type == CUBLAS_COMPUTE_16F || op->compute_type == CUBLAS_COMPUTE_16F_PEDANTIC;
  p->a = Mat{nullptr,
             static_cast<cudaDataType>(la->type),
             static_cast<int64_t>(la->rows),
             static_cast<int64_t>(la->cols),
             la->ld,
             la->stride,
             1};
  p->b = Mat{nullptr,
             static_cast<cudaDataType>(lb->type),
             static_cast<int64_t>(lb->rows),
             static_cast<int64_t>(lb->cols),
             lb->ld,
             lb->stride,
             1};
  p->c = Mat{nullptr, static_cast<cudaDataType>(lc->type), m, n, lc->ld, lc->stride, 1};
  p->d = Mat{nullptr, static_cast<cudaDataType>(ld->type), m, n, ld->ld, ld->stride, 1};
  p->scale_type = scale;
  p->epi = epi;
  p->bias_type = op->bias_type == -1 ? static_cast<cudaDataType>(ld->type) : static_cast<cudaDataType>(op->bias_type);
  p->aux_type = op->aux_type == -1 ? static_cast<cudaDataType>(ld->type) : static_cast<cudaDataType>(op->aux_type);
  p->bias_stride = op->bias_stride;
  p->aux_ld = op->aux_ld;
  p->aux_stride = op->aux_stride;
  return CUBLAS_STATUS_SUCCESS;
}

const char* status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

const char* status_string(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "an absent device architectural feature is required";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "an access to GPU memory space failed";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "the GPU program failed to execute";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "an internal operation failed";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "the functionality requested is not supported";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "error detected trying to check the license";
  }
  return "unknown error";
}

}  // namespace

namespace {
std::mutex refused_mu;
std::set<uint32_t>& refused_epilogues() {
  static std::set<uint32_t> s;
  return s;
}
}  // namespace

void cudl_emu::set_lt_relu_mask_msb_first(bool on) { g_mask_msb_first = on; }

void cudl_emu::set_lt_epilogue_refused(uint32_t epilogue, bool refuse) {
  std::lock_guard<std::mutex> lock(refused_mu);
  if (refuse)
    refused_epilogues().insert(epilogue);
  else
    refused_epilogues().erase(epilogue);
}

extern "C" {

// ================================ cuBLAS ========================================================

cublasStatus_t CUBLASWINAPI cublasCreate_v2(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  auto* h = new (std::nothrow)
      cublasContext{kCublasMagic, nullptr, nullptr, 0, CUBLAS_POINTER_MODE_HOST, CUBLAS_DEFAULT_MATH, false};
  if (!h) return CUBLAS_STATUS_ALLOC_FAILED;
  *handle = h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasDestroy_v2(cublasHandle_t handle) {
  cublasContext* h = live(handle);
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->magic = 0;
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
  cublasContext* h = live(handle);
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetStream_v2(cublasHandle_t handle, cudaStream_t* stream) {
  cublasContext* h = live(handle);
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
  *stream = h->stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetWorkspace_v2(cublasHandle_t handle, void* workspace, size_t bytes) {
  cublasContext* h = live(handle);
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && !workspace) return CUBLAS_STATUS_INVALID_VALUE;
  if (workspace && reinterpret_cast<uintptr_t>(workspace) % 256 != 0) return CUBLAS_STATUS_INVALID_VALUE;
  h->workspace = workspace;
  h->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t* mode) {
  cublasContext* h = live(handle);
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = h->pointer_mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetPointerMode_v2(cublasHandle_t handle, cublasPointerMode_t mode) {
  cublasContext* h = live(handle);
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE) return CUBLAS_STATUS_INVALID_VALUE;
  h->pointer_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
  cublasContext* h = live(handle);
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!mode) return CUBLAS_STATUS_INVALID_VALUE;
  *mode = h->math_mode;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  cublasContext* h = live(handle);
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  const int base = static_cast<int>(mode) & 0xf, flags = static_cast<int>(mode) & ~0xf;
  if (base > CUBLAS_TF32_TENSOR_OP_MATH || (flags & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION) != 0)
    return CUBLAS_STATUS_INVALID_VALUE;
  h->math_mode = mode;
  return CUBLAS_STATUS_SUCCESS;
}

const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) { return status_name(status); }
const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) { return status_string(status); }

cublasStatus_t CUBLASWINAPI cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                           int m, int n, int k, const float* alpha, const float* A, int lda,
                                           const float* B, int ldb, const float* beta, float* C, int ldc) {
  return blas_gemm("cublasSgemm", handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, 0, B, CUDA_R_32F, ldb, 0,
                   beta, C, CUDA_R_32F, ldc, 0, 1, CUDA_R_32F, CUBLAS_COMPUTE_32F);
}

cublasStatus_t CUBLASWINAPI cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                                      cublasOperation_t transb, int m, int n, int k, const float* alpha,
                                                      const float* A, int lda, long long int strideA, const float* B,
                                                      int ldb, long long int strideB, const float* beta, float* C,
                                                      int ldc, long long int strideC, int batchCount) {
  return blas_gemm("cublasSgemmStridedBatched", handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, strideA, B,
                   CUDA_R_32F, ldb, strideB, beta, C, CUDA_R_32F, ldc, strideC, batchCount, CUDA_R_32F,
                   CUBLAS_COMPUTE_32F);
}

cublasStatus_t CUBLASWINAPI cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const void* alpha, const void* A, cudaDataType Atype,
                                         int lda, const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                                         cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                                         cublasGemmAlgo_t algo) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  cudaDataType scale;
  if (!valid_gemm_algo(algo)) return CUBLAS_STATUS_INVALID_VALUE;
  if (!gemm_ex_types(computeType, Atype, Btype, Ctype, &scale)) return CUBLAS_STATUS_NOT_SUPPORTED;
  return blas_gemm("cublasGemmEx", handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B, Btype, ldb, 0, beta, C,
                   Ctype, ldc, 0, 1, scale, computeType);
}

cublasStatus_t CUBLASWINAPI cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, const void* alpha,
    const void* A, cudaDataType Atype, int lda, long long int strideA, const void* B, cudaDataType Btype, int ldb,
    long long int strideB, const void* beta, void* C, cudaDataType Ctype, int ldc, long long int strideC,
    int batchCount, cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
  if (!live(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  cudaDataType scale;
  if (!valid_gemm_algo(algo)) return CUBLAS_STATUS_INVALID_VALUE;
  if (!gemm_ex_types(computeType, Atype, Btype, Ctype, &scale)) return CUBLAS_STATUS_NOT_SUPPORTED;
  return blas_gemm("cublasGemmStridedBatchedEx", handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B,
                   Btype, ldb, strideB, beta, C, Ctype, ldc, strideC, batchCount, scale, computeType);
}

// ================================ cuBLASLt ======================================================

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  auto* h = new (std::nothrow) cublasLtContext{kLtMagic};
  if (!h) return CUBLAS_STATUS_ALLOC_FAILED;
  *handle = h;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t handle) {
  if (!handle || handle->magic != kLtMagic) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->magic = 0;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

const char* CUBLASWINAPI cublasLtGetStatusName(cublasStatus_t status) { return status_name(status); }
const char* CUBLASWINAPI cublasLtGetStatusString(cublasStatus_t status) { return status_string(status); }

// --- matrix layouts ---

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutInit_internal(cublasLtMatrixLayout_t layout, size_t size,
                                                              cudaDataType type, uint64_t rows, uint64_t cols,
                                                              int64_t ld) {
  if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
  if (size < sizeof(LayoutData)) return CUBLAS_STATUS_ALLOC_FAILED;
  init_layout(reinterpret_cast<LayoutData*>(layout), type, rows, cols, ld);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                                       uint64_t cols, int64_t ld) {
  if (!layout) return CUBLAS_STATUS_INVALID_VALUE;
  auto* l = new (std::nothrow) cublasLtMatrixLayoutOpaque_t{};
  if (!l) return CUBLAS_STATUS_ALLOC_FAILED;
  init_layout(reinterpret_cast<LayoutData*>(l), type, rows, cols, ld);
  *layout = l;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  if (!layout) return CUBLAS_STATUS_SUCCESS;
  if (!layout_of(layout)) return CUBLAS_STATUS_INVALID_VALUE;
  reinterpret_cast<LayoutData*>(layout)->magic = 0;
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout,
                                                             cublasLtMatrixLayoutAttribute_t attr, const void* buf,
                                                             size_t size) {
  LayoutData* d = layout_of(layout);
  if (!d) return CUBLAS_STATUS_INVALID_VALUE;
  void* field;
  size_t field_size;
  if (!layout_field(d, attr, &field, &field_size)) {
    // Planar complex layouts are not emulated; a zero offset (the default) is accepted.
    if (attr == CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET && buf && size == 8) {
      int64_t v;
      std::memcpy(&v, buf, 8);
      return v == 0 ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
    }
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (attr == CUBLASLT_MATRIX_LAYOUT_ORDER && buf && size == 4) {
    int32_t v;
    std::memcpy(&v, buf, 4);
    if (v < CUBLASLT_ORDER_COL || v > CUBLASLT_ORDER_COL32_2R_4R4) return CUBLAS_STATUS_INVALID_VALUE;
  }
  return set_bytes(field, field_size, buf, size);
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutGetAttribute(cublasLtMatrixLayout_t layout,
                                                             cublasLtMatrixLayoutAttribute_t attr, void* buf,
                                                             size_t size, size_t* written) {
  LayoutData* d = layout_of(layout);
  if (!d) return CUBLAS_STATUS_INVALID_VALUE;
  void* field;
  size_t field_size;
  if (!layout_field(d, attr, &field, &field_size)) return CUBLAS_STATUS_INVALID_VALUE;
  return get_bytes(field, field_size, buf, size, written);
}

// --- matmul descriptors ---

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescInit_internal(cublasLtMatmulDesc_t desc, size_t size,
                                                            cublasComputeType_t compute, cudaDataType_t scale) {
  if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
  if (size < sizeof(DescData)) return CUBLAS_STATUS_ALLOC_FAILED;
  if (!valid_compute(compute)) return CUBLAS_STATUS_INVALID_VALUE;
  init_desc(reinterpret_cast<DescData*>(desc), compute, scale);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute,
                                                     cudaDataType_t scale) {
  if (!desc) return CUBLAS_STATUS_INVALID_VALUE;
  if (!valid_compute(compute)) return CUBLAS_STATUS_INVALID_VALUE;
  auto* d = new (std::nothrow) cublasLtMatmulDescOpaque_t{};
  if (!d) return CUBLAS_STATUS_ALLOC_FAILED;
  init_desc(reinterpret_cast<DescData*>(d), compute, scale);
  *desc = d;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  if (!desc) return CUBLAS_STATUS_SUCCESS;
  if (!desc_of(desc)) return CUBLAS_STATUS_INVALID_VALUE;
  reinterpret_cast<DescData*>(desc)->magic = 0;
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                                           cublasLtMatmulDescAttributes_t attr, const void* buf,
                                                           size_t size) {
  DescData* d = desc_of(desc);
  if (!d) return CUBLAS_STATUS_INVALID_VALUE;
  void* field;
  size_t field_size;
  if (!desc_field(d, attr, &field, &field_size)) {
    // Scale/amax pointers of the fp8 paths are not emulated: NULL (their default) is accepted.
    if (buf && size == sizeof(void*)) {
      void* v;
      std::memcpy(&v, buf, sizeof v);
      if (!v && attr >= CUBLASLT_MATMUL_DESC_A_SCALE_POINTER && attr <= CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_AMAX_POINTER)
        return CUBLAS_STATUS_SUCCESS;
    }
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (attr == CUBLASLT_MATMUL_DESC_EPILOGUE && buf && size == 4) {
    uint32_t e;
    std::memcpy(&e, buf, 4);
    Epi unused;
    if (!decode_epilogue(e, &unused)) return CUBLAS_STATUS_INVALID_VALUE;
  }
  return set_bytes(field, field_size, buf, size);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t desc,
                                                           cublasLtMatmulDescAttributes_t attr, void* buf, size_t size,
                                                           size_t* written) {
  DescData* d = desc_of(desc);
  if (!d) return CUBLAS_STATUS_INVALID_VALUE;
  void* field;
  size_t field_size;
  if (!desc_field(d, attr, &field, &field_size)) return CUBLAS_STATUS_NOT_SUPPORTED;
  return get_bytes(field, field_size, buf, size, written);
}

// --- preferences and the heuristic ---

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceInit_internal(cublasLtMatmulPreference_t pref, size_t size) {
  if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
  if (size < sizeof(PrefData)) return CUBLAS_STATUS_ALLOC_FAILED;
  init_pref(reinterpret_cast<PrefData*>(pref));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
  auto* p = new (std::nothrow) cublasLtMatmulPreferenceOpaque_t{};
  if (!p) return CUBLAS_STATUS_ALLOC_FAILED;
  init_pref(reinterpret_cast<PrefData*>(p));
  *pref = p;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  if (!pref) return CUBLAS_STATUS_SUCCESS;
  if (!pref_of(pref)) return CUBLAS_STATUS_INVALID_VALUE;
  reinterpret_cast<PrefData*>(pref)->magic = 0;
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                                 cublasLtMatmulPreferenceAttributes_t attr,
                                                                 const void* buf, size_t size) {
  PrefData* d = pref_of(pref);
  if (!d) return CUBLAS_STATUS_INVALID_VALUE;
  void* field;
  size_t field_size;
  if (!pref_field(d, attr, &field, &field_size)) return CUBLAS_STATUS_INVALID_VALUE;
  return set_bytes(field, field_size, buf, size);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceGetAttribute(cublasLtMatmulPreference_t pref,
                                                                 cublasLtMatmulPreferenceAttributes_t attr, void* buf,
                                                                 size_t size, size_t* written) {
  PrefData* d = pref_of(pref);
  if (!d) return CUBLAS_STATUS_INVALID_VALUE;
  void* field;
  size_t field_size;
  if (!pref_field(d, attr, &field, &field_size)) return CUBLAS_STATUS_INVALID_VALUE;
  return get_bytes(field, field_size, buf, size, written);
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t Adesc, cublasLtMatrixLayout_t Bdesc,
    cublasLtMatrixLayout_t Cdesc, cublasLtMatrixLayout_t Ddesc, cublasLtMatmulPreference_t preference,
    int requestedAlgoCount, cublasLtMatmulHeuristicResult_t results[], int* returnAlgoCount) {
  if (!handle || handle->magic != kLtMagic) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (requestedAlgoCount <= 0 || !results || !returnAlgoCount) return CUBLAS_STATUS_INVALID_VALUE;
  *returnAlgoCount = 0;
  const PrefData* pref = pref_of(preference);
  if (!pref) return CUBLAS_STATUS_INVALID_VALUE;
  Problem p;
  cublasStatus_t st =
      check_config(desc_of(desc), layout_of(Adesc), layout_of(Bdesc), layout_of(Cdesc), layout_of(Ddesc), &p);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  {
    std::lock_guard<std::mutex> lock(refused_mu);
    if (refused_epilogues().count(desc_of(desc)->epilogue)) return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  // Refusal test mode: any problem, fused epilogue or plain. A caller's fallback for a fused epilogue
  // is a plain GEMM plus its own kernels; for a plain GEMM, the legacy cuBLAS API.
  {
    uint64_t key = 0x6c74;  // "lt"
    for (int64_t v : {p.m, p.n, p.k, p.batch, (int64_t)p.ta, (int64_t)p.tb, (int64_t)desc_of(desc)->epilogue,
                      (int64_t)p.a.type, (int64_t)p.d.type, (int64_t)p.tf32})
      key = cudl_emu::hash_mix(key, (uint64_t)v);
    if (cudl_emu::refuse_engine(key)) return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  for (uint32_t a : {pref->align_a, pref->align_b, pref->align_c, pref->align_d})
    if (a == 0 || (a & (a - 1)) != 0) return CUBLAS_STATUS_INVALID_VALUE;
  cublasLtMatmulHeuristicResult_t& r = results[0];
  std::memset(&r, 0, sizeof r);
  r.algo.data[0] = kAlgoMagic;
  r.algo.data[1] = std::min<uint64_t>(pref->max_workspace, kAlgoWorkspace);
  r.algo.data[2] = pref->align_a;
  r.algo.data[3] = pref->align_b;
  r.algo.data[4] = pref->align_c;
  r.algo.data[5] = pref->align_d;
  r.workspaceSize = static_cast<size_t>(r.algo.data[1]);
  r.state = CUBLAS_STATUS_SUCCESS;
  r.wavesCount = 1.0f;
  *returnAlgoCount = 1;
  return CUBLAS_STATUS_SUCCESS;
}

// --- the matmul ---

cublasStatus_t CUBLASWINAPI cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t computeDesc, const void* alpha,
                                           const void* A, cublasLtMatrixLayout_t Adesc, const void* B,
                                           cublasLtMatrixLayout_t Bdesc, const void* beta, const void* C,
                                           cublasLtMatrixLayout_t Cdesc, void* D, cublasLtMatrixLayout_t Ddesc,
                                           const cublasLtMatmulAlgo_t* algo, void* workspace,
                                           size_t workspaceSizeInBytes, cudaStream_t stream) {
  if (!handle || handle->magic != kLtMagic) return CUBLAS_STATUS_NOT_INITIALIZED;
  const DescData* op = desc_of(computeDesc);
  const LayoutData* lc = layout_of(Cdesc);
  const LayoutData* ld = layout_of(Ddesc);
  Problem p;
  p.name = "cublasLtMatmul";
  cublasStatus_t st = check_config(op, layout_of(Adesc), layout_of(Bdesc), lc, ld, &p);
  if (st != CUBLAS_STATUS_SUCCESS) return st;
  if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
  if (op->pointer_mode == CUBLASLT_POINTER_MODE_DEVICE) {
    p.device_scalars = true;
    p.alpha_ptr = alpha;
    p.beta_ptr = beta;
  } else {
    p.alpha = read_scalar(p.scale_type, alpha);
    p.beta = read_scalar(p.scale_type, beta);
  }
  const bool empty = p.m == 0 || p.n == 0;
  if (!empty) {
    if (!D) return CUBLAS_STATUS_INVALID_VALUE;
    if (p.k > 0 && (!A || !B)) return CUBLAS_STATUS_INVALID_VALUE;
    if ((p.device_scalars || p.beta != 0) && !C) return CUBLAS_STATUS_INVALID_VALUE;
    if (p.epi.needs_bias() && !op->bias) return CUBLAS_STATUS_INVALID_VALUE;
    if (p.epi.needs_aux() && !op->aux) return CUBLAS_STATUS_INVALID_VALUE;
  }
  // In place (C == D) needs the same layout for both.
  if (C && C == D && (lc->ld != ld->ld || lc->type != ld->type || lc->stride != ld->stride))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (algo) {
    if (algo->data[0] != kAlgoMagic) return CUBLAS_STATUS_INVALID_VALUE;
    const size_t needed = static_cast<size_t>(algo->data[1]);
    if (workspaceSizeInBytes < needed || (needed > 0 && !workspace)) return CUBLAS_STATUS_INVALID_VALUE;
    p.workspace = workspace;
    p.workspace_used = needed;
    p.a.align = static_cast<uint32_t>(algo->data[2]);
    p.b.align = static_cast<uint32_t>(algo->data[3]);
    p.c.align = static_cast<uint32_t>(algo->data[4]);
    p.d.align = static_cast<uint32_t>(algo->data[5]);
  }
  p.a.ptr = A;
  p.b.ptr = B;
  p.c.ptr = C;
  p.d.ptr = D;
  p.bias = const_cast<void*>(op->bias);
  p.aux = op->aux;
  if (empty) return CUBLAS_STATUS_SUCCESS;
  return submit(stream, p);
}

}  // extern "C"
