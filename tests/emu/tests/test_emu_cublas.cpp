// tests/emu/tests/test_emu_cublas.cpp — the emulated cuBLAS / cuBLASLt subsets against naive
// column-major loops written here: transposes, padded leading dimensions, batches, every epilogue, errors.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "emu/emu.hpp"
#include "src/core/half.hpp"

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers: device buffers and the reference.

template <typename T>
struct DevBuf {
  T* ptr = nullptr;
  size_t n = 0;
  explicit DevBuf(const std::vector<T>& host) : n(host.size()) {
    EXPECT_EQ(cudaMalloc(&ptr, std::max<size_t>(1, n) * sizeof(T)), cudaSuccess);
    if (n) EXPECT_EQ(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  explicit DevBuf(size_t count, T fill = T()) : DevBuf(std::vector<T>(count, fill)) {}
  ~DevBuf() { cudaFree(ptr); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  std::vector<T> host() const {  // blocking copy: waits for the queued work
    std::vector<T> h(n);
    if (n) EXPECT_EQ(cudaMemcpy(h.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

std::vector<float> random_vec(size_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

/// op(X)(r, c) for a column-major X with leading dimension ld.
double at(const std::vector<float>& x, int64_t off, int64_t ld, bool trans, int64_t r, int64_t c) {
  return trans ? x[off + c + r * ld] : x[off + r + c * ld];
}

/// Naive D = alpha*op(A)op(B) + beta*C (column-major), returned as doubles with ldd = m.
std::vector<double> ref_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                             const std::vector<float>& A, int64_t lda, int64_t oa, const std::vector<float>& B,
                             int64_t ldb, int64_t ob, double beta, const std::vector<float>& C, int64_t ldc,
                             int64_t oc) {
  std::vector<double> d(m * n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += at(A, oa, lda, ta, i, p) * at(B, ob, ldb, tb, p, j);
      d[i + j * m] = alpha * s + (beta != 0 ? beta * C[oc + i + j * ldc] : 0.0);
    }
  return d;
}

double gelu_ref(double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }
double gelu_grad_ref(double x) {  // derivative by central differences of the formula above
  const double h = 1e-5;
  return (gelu_ref(x + h) - gelu_ref(x - h)) / (2 * h);
}

::testing::AssertionResult near_all(const std::vector<float>& got, int64_t ld, int64_t off,
                                    const std::vector<double>& want, int64_t m, int64_t n, double tol = 1e-4) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      const double g = got[off + i + j * ld], w = want[i + j * m];
      if (!(std::fabs(g - w) <= tol * (1 + std::fabs(w))))
        return ::testing::AssertionFailure() << "(" << i << ", " << j << "): got " << g << ", want " << w;
    }
  return ::testing::AssertionSuccess();
}

class Cublas : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasSetStream(handle, stream), CUBLAS_STATUS_SUCCESS);
  }
  void TearDown() override {
    EXPECT_EQ(cublasDestroy(handle), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  }
  cudaStream_t stream = nullptr;
  cublasHandle_t handle = nullptr;
};

// ---------------------------------------------------------------------------------------------
// cuBLAS

TEST_F(Cublas, HandleAndStream) {
  cudaStream_t s = nullptr;
  EXPECT_EQ(cublasGetStream(handle, &s), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(s, stream);
  EXPECT_EQ(cublasSetMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
  cublasMath_t mode;
  EXPECT_EQ(cublasGetMathMode(handle, &mode), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(mode, CUBLAS_TF32_TENSOR_OP_MATH);
  EXPECT_EQ(cublasSetWorkspace(handle, nullptr, 0), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cublasSetStream(nullptr, stream), CUBLAS_STATUS_NOT_INITIALIZED);
  EXPECT_STREQ(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE");
  EXPECT_NE(std::string(cublasGetStatusString(CUBLAS_STATUS_NOT_SUPPORTED)), "");
}

TEST_F(Cublas, SgemmAllTransposesPaddedLeadingDims) {
  const int m = 5, n = 7, k = 3;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      SCOPED_TRACE(testing::Message() << "ta " << ta << " tb " << tb);
      const int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
      const int lda = a_rows + 2, ldb = b_rows + 3, ldc = m + 1;
      auto A = random_vec(lda * a_cols, 1), B = random_vec(ldb * b_cols, 2), C = random_vec(ldc * n, 3);
      DevBuf<float> dA(A), dB(B), dC(C);
      const float alpha = 1.5f, beta = -0.5f;
      ASSERT_EQ(cublasSgemm(handle, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha,
                            dA.ptr, lda, dB.ptr, ldb, &beta, dC.ptr, ldc),
                CUBLAS_STATUS_SUCCESS);
      auto want = ref_gemm(ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0);
      auto got = dC.host();
      EXPECT_TRUE(near_all(got, ldc, 0, want, m, n));
      for (int j = 0; j < n; ++j) EXPECT_EQ(got[m + j * ldc], C[m + j * ldc]) << "padding row written";
    }
}

TEST_F(Cublas, BetaZeroDoesNotReadC) {
  const int m = 3, n = 4, k = 2;
  auto A = random_vec(m * k, 4), B = random_vec(k * n, 5);
  DevBuf<float> dA(A), dB(B), dC(std::vector<float>(m * n, NAN));
  const float alpha = 1, beta = 0;
  ASSERT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, dA.ptr, m, dB.ptr, k, &beta, dC.ptr, m),
            CUBLAS_STATUS_SUCCESS);
  auto want = ref_gemm(false, false, m, n, k, 1, A, m, 0, B, k, 0, 0, {}, m, 0);
  EXPECT_TRUE(near_all(dC.host(), m, 0, want, m, n));
}

TEST_F(Cublas, KZeroScalesC) {
  const int m = 2, n = 3;
  auto C = random_vec(m * n, 6);
  DevBuf<float> dA(1), dB(1), dC(C);
  const float alpha = 1, beta = 2;
  ASSERT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, 0, &alpha, dA.ptr, m, dB.ptr, 1, &beta, dC.ptr, m),
            CUBLAS_STATUS_SUCCESS);
  auto got = dC.host();
  for (int i = 0; i < m * n; ++i) EXPECT_FLOAT_EQ(got[i], 2 * C[i]);
}

TEST_F(Cublas, StridedBatchedWithBroadcastB) {
  const int m = 4, n = 3, k = 5, batch = 3, lda = m + 1, ldb = n, ldc = m;
  const long long sa = lda * k + 2, sc = ldc * n + 1;
  auto A = random_vec(sa * batch, 7), B = random_vec(ldb * k, 8), C = random_vec(sc * batch, 9);
  DevBuf<float> dA(A), dB(B), dC(C);
  const float alpha = 0.5f, beta = 1.0f;
  // op(B) = B^T with B stored n x k; stride 0 repeats it for every batch.
  ASSERT_EQ(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_T, m, n, k, &alpha, dA.ptr, lda, sa, dB.ptr, ldb,
                                      0, &beta, dC.ptr, ldc, sc, batch),
            CUBLAS_STATUS_SUCCESS);
  auto got = dC.host();
  for (int b = 0; b < batch; ++b) {
    auto want = ref_gemm(false, true, m, n, k, alpha, A, lda, b * sa, B, ldb, 0, beta, C, ldc, b * sc);
    EXPECT_TRUE(near_all(got, ldc, b * sc, want, m, n)) << "batch " << b;
    EXPECT_EQ(got[b * sc + ldc * n], C[b * sc + ldc * n]) << "gap between batches written";
  }
}

TEST_F(Cublas, GemmExHalfAndBf16Inputs) {
  const int m = 6, n = 5, k = 7;
  auto Af = random_vec(m * k, 10), Bf = random_vec(k * n, 11);
  for (cudaDataType t : {CUDA_R_16F, CUDA_R_16BF}) {
    std::vector<uint16_t> A(Af.size()), B(Bf.size());
    std::vector<float> Ar(Af.size()), Br(Bf.size());  // the rounded values the GEMM sees
    for (size_t i = 0; i < A.size(); ++i) {
      A[i] = t == CUDA_R_16F ? cudl::float_to_half_bits(Af[i]) : cudl::float_to_bf16_bits(Af[i]);
      Ar[i] = t == CUDA_R_16F ? cudl::half_bits_to_float(A[i]) : cudl::bf16_bits_to_float(A[i]);
    }
    for (size_t i = 0; i < B.size(); ++i) {
      B[i] = t == CUDA_R_16F ? cudl::float_to_half_bits(Bf[i]) : cudl::float_to_bf16_bits(Bf[i]);
      Br[i] = t == CUDA_R_16F ? cudl::half_bits_to_float(B[i]) : cudl::bf16_bits_to_float(B[i]);
    }
    DevBuf<uint16_t> dA(A), dB(B);
    DevBuf<float> dC(std::vector<float>(m * n, NAN));
    const float alpha = 1, beta = 0;
    ASSERT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, dA.ptr, t, m, dB.ptr, t, k, &beta, dC.ptr,
                           CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
    auto want = ref_gemm(false, false, m, n, k, 1, Ar, m, 0, Br, k, 0, 0, {}, m, 0);
    EXPECT_TRUE(near_all(dC.host(), m, 0, want, m, n, 1e-5)) << (t == CUDA_R_16F ? "f16" : "bf16");
  }
}

TEST_F(Cublas, GemmStridedBatchedExF32) {
  const int m = 3, n = 2, k = 4, batch = 2;
  auto A = random_vec(k * m * batch, 12), B = random_vec(k * n * batch, 13);
  DevBuf<float> dA(A), dB(B), dC(m * n * batch);
  const float alpha = 1, beta = 0;
  ASSERT_EQ(cublasGemmStridedBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, dA.ptr, CUDA_R_32F, k, k * m,
                                       dB.ptr, CUDA_R_32F, k, k * n, &beta, dC.ptr, CUDA_R_32F, m, m * n, batch,
                                       CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  auto got = dC.host();
  for (int b = 0; b < batch; ++b)
    EXPECT_TRUE(near_all(got, m, b * m * n,
                         ref_gemm(true, false, m, n, k, 1, A, k, b * k * m, B, k, b * k * n, 0, {}, m, 0), m, n, 1e-6));
}

TEST(Tf32, RoundingIsToNearestTiesAwayWith10MantissaBits) {
  // Against frexp/round: 11 significant bits, halfway cases away from zero.
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  auto by_frexp = [](float x) {
    int e = 0;
    const float m = std::frexp(x, &e);
    return std::ldexp(std::round(m * 2048.f), e - 11);
  };
  for (int i = 0; i < 100000; ++i) {
    const float x = u(rng);
    ASSERT_EQ(cudl_emu::round_tf32(x), by_frexp(x)) << x;
  }
  EXPECT_EQ(cudl_emu::round_tf32(1.f + std::ldexp(1.f, -11)), 1.f + std::ldexp(1.f, -10)) << "tie: away from zero";
  EXPECT_EQ(cudl_emu::round_tf32(-1.f - std::ldexp(1.f, -11)), -1.f - std::ldexp(1.f, -10));
  EXPECT_EQ(cudl_emu::round_tf32(1.f + std::ldexp(1.f, -12)), 1.f);
  EXPECT_TRUE(std::isnan(cudl_emu::round_tf32(NAN)));
  EXPECT_EQ(cudl_emu::round_tf32(INFINITY), INFINITY);
}

TEST_F(Cublas, Tf32ComputeTypeAndMathModeRoundTheInputs) {
  // Inputs 1 + j·2^-13: exact in f32, off the TF32 grid, so TF32 and fp32 products differ by ~1e-3.
  const int m = 3, n = 2, k = 8;
  std::vector<float> A(m * k), B(k * n);
  for (size_t i = 0; i < A.size(); ++i) A[i] = 1.f + static_cast<float>(i + 1) * std::ldexp(1.f, -13);
  for (size_t i = 0; i < B.size(); ++i) B[i] = -1.f - static_cast<float>(2 * i + 1) * std::ldexp(1.f, -13);
  std::vector<float> Ar(A), Br(B);
  for (float& v : Ar) v = cudl_emu::round_tf32(v);
  for (float& v : Br) v = cudl_emu::round_tf32(v);
  const auto exact = ref_gemm(false, false, m, n, k, 1, A, m, 0, B, k, 0, 0, {}, m, 0);
  const auto tf32 = ref_gemm(false, false, m, n, k, 1, Ar, m, 0, Br, k, 0, 0, {}, m, 0);
  ASSERT_FALSE(near_all(std::vector<float>(exact.begin(), exact.end()), m, 0, tf32, m, n, 1e-6));
  DevBuf<float> dA(A), dB(B), dC(m * n);
  const float alpha = 1, beta = 0;
  auto gemm_ex = [&](cublasComputeType_t compute) {
    EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, dA.ptr, CUDA_R_32F, m, dB.ptr, CUDA_R_32F,
                           k, &beta, dC.ptr, CUDA_R_32F, m, compute, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
    return dC.host();
  };
  EXPECT_TRUE(near_all(gemm_ex(CUBLAS_COMPUTE_32F), m, 0, exact, m, n, 1e-6)) << "32F";
  EXPECT_TRUE(near_all(gemm_ex(CUBLAS_COMPUTE_32F_PEDANTIC), m, 0, exact, m, n, 1e-6)) << "32F_PEDANTIC";
  EXPECT_TRUE(near_all(gemm_ex(CUBLAS_COMPUTE_32F_FAST_TF32), m, 0, tf32, m, n, 1e-6)) << "FAST_TF32";
  // The handle's TF32 math mode: CUBLAS_COMPUTE_32F and the Sgemm family use TF32; PEDANTIC does not.
  ASSERT_EQ(cublasSetMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
  EXPECT_TRUE(near_all(gemm_ex(CUBLAS_COMPUTE_32F), m, 0, tf32, m, n, 1e-6)) << "32F in TF32 math mode";
  EXPECT_TRUE(near_all(gemm_ex(CUBLAS_COMPUTE_32F_PEDANTIC), m, 0, exact, m, n, 1e-6)) << "PEDANTIC";
  ASSERT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, dA.ptr, m, dB.ptr, k, &beta, dC.ptr, m),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_TRUE(near_all(dC.host(), m, 0, tf32, m, n, 1e-6)) << "Sgemm in TF32 math mode";
  ASSERT_EQ(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_SUCCESS);
}

TEST_F(Cublas, DevicePointerModeReadsScalarsWhenRun) {
  const int m = 2, n = 2, k = 2;
  auto A = random_vec(4, 14), B = random_vec(4, 15);
  DevBuf<float> dA(A), dB(B), dC(4), scal(std::vector<float>{3.0f, 0.0f});
  ASSERT_EQ(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_DEVICE), CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(
      cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, scal.ptr, dA.ptr, m, dB.ptr, k, scal.ptr + 1, dC.ptr, m),
      CUBLAS_STATUS_SUCCESS);
  EXPECT_TRUE(near_all(dC.host(), m, 0, ref_gemm(false, false, m, n, k, 3, A, m, 0, B, k, 0, 0, {}, m, 0), m, n));
  ASSERT_EQ(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST), CUBLAS_STATUS_SUCCESS);
}

TEST_F(Cublas, ArgumentErrors) {
  DevBuf<float> d(64);
  const float one = 1, zero = 0;
  // Documented: NOT_INITIALIZED for a null handle.
  EXPECT_EQ(cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d.ptr, 2, d.ptr, 2, &zero, d.ptr, 2),
            CUBLAS_STATUS_NOT_INITIALIZED);
  // INVALID_VALUE: negative sizes, lda < max(1, rows of A), ldb, ldc, bad op, null scalars.
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 2, &one, d.ptr, 2, d.ptr, 2, &zero, d.ptr, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, d.ptr, 3, d.ptr, 3, &zero, d.ptr, 4),
            CUBLAS_STATUS_INVALID_VALUE);  // lda 3 < m 4
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, 4, 2, 3, &one, d.ptr, 2, d.ptr, 3, &zero, d.ptr, 4),
            CUBLAS_STATUS_INVALID_VALUE);  // transa: lda 2 < k 3
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, 4, 2, 3, &one, d.ptr, 4, d.ptr, 1, &zero, d.ptr, 4),
            CUBLAS_STATUS_INVALID_VALUE);  // transb: ldb 1 < n 2
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, d.ptr, 4, d.ptr, 3, &zero, d.ptr, 3),
            CUBLAS_STATUS_INVALID_VALUE);  // ldc 3 < m 4
  EXPECT_EQ(cublasSgemm(handle, static_cast<cublasOperation_t>(7), CUBLAS_OP_N, 2, 2, 2, &one, d.ptr, 2, d.ptr, 2,
                        &zero, d.ptr, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, nullptr, d.ptr, 2, d.ptr, 2, &zero, d.ptr, 2),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasSgemmStridedBatched(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d.ptr, 2, 4, d.ptr, 2, 4, &zero,
                                      d.ptr, 2, 4, -1),
            CUBLAS_STATUS_INVALID_VALUE);
  // Type combinations outside the table.
  EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d.ptr, CUDA_R_32F, 2, d.ptr, CUDA_R_16F, 2,
                         &zero, d.ptr, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d.ptr, CUDA_R_32F, 2, d.ptr, CUDA_R_32F, 2,
                         &zero, d.ptr, CUDA_R_32F, 2, CUBLAS_COMPUTE_16F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_NOT_SUPPORTED);
  // m == 0: quick return, nothing queued and nothing checked beyond the arguments.
  EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 0, 2, 2, &one, nullptr, 1, nullptr, 2, &zero, nullptr, 1),
            CUBLAS_STATUS_SUCCESS);
}

TEST_F(Cublas, HostPointerFaultsWhenRun) {
  std::vector<float> host(16, 1.0f);
  DevBuf<float> d(16);
  const float one = 1, zero = 0;
  // Arguments are valid, so the call succeeds; the fault surfaces as a sticky error when it runs.
  ASSERT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, host.data(), 4, d.ptr, 4, &zero, d.ptr, 4),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaErrorIllegalAddress);
  EXPECT_NE(cudl_emu::last_error_detail().find("cublasSgemm"), std::string::npos) << cudl_emu::last_error_detail();
  cudl_emu::reset_device_state();
  (void)cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------
// cuBLASLt

/// One matmul configuration: descriptor, layouts, preference, heuristic algo.
struct LtCase {
  cublasLtHandle_t lt = nullptr;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  cublasLtMatmulHeuristicResult_t heur{};

  LtCase(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, int batch = 1,
         int64_t sa = 0, int64_t sb = 0, int64_t sc = 0) {
    EXPECT_EQ(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&a, CUDA_R_32F, ta ? k : m, ta ? m : k, lda), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&b, CUDA_R_32F, tb ? n : k, tb ? k : n, ldb), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&c, CUDA_R_32F, m, n, ldc), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&d, CUDA_R_32F, m, n, ldc), CUBLAS_STATUS_SUCCESS);
    if (batch > 1) {
      int32_t bc = batch;
      const int64_t strides[4] = {sa, sb, sc, sc};
      cublasLtMatrixLayout_t ls[4] = {a, b, c, d};
      for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc),
                  CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                                   sizeof strides[i]),
                  CUBLAS_STATUS_SUCCESS);
      }
    }
    EXPECT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
    uint64_t ws = 1 << 20;
    EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws),
              CUBLAS_STATUS_SUCCESS);
    // The emulator's cudaMalloc aligns to 16 bytes (so small overruns hit the guard page); the
    // default preference assumes 256, so say what the pointers really have.
    set_alignment(16);
  }
  void set_alignment(uint32_t bytes) {
    for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
      EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, attr, &bytes, sizeof bytes), CUBLAS_STATUS_SUCCESS);
  }
  ~LtCase() {
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(a);
    cublasLtMatrixLayoutDestroy(b);
    cublasLtMatrixLayoutDestroy(c);
    cublasLtMatrixLayoutDestroy(d);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(lt);
  }
  template <typename T>
  void set(cublasLtMatmulDescAttributes_t attr, T v) {
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, attr, &v, sizeof v), CUBLAS_STATUS_SUCCESS);
  }
  cublasStatus_t heuristic() {
    int count = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, desc, a, b, c, d, pref, 1, &heur, &count);
    if (st == CUBLAS_STATUS_SUCCESS) EXPECT_EQ(count, 1);
    return st;
  }
  cublasStatus_t run(const float* A, const float* B, const float* C, float* D, float alpha, float beta, void* ws,
                     size_t ws_bytes, cudaStream_t stream) {
    cublasStatus_t st = heuristic();
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    return cublasLtMatmul(lt, desc, &alpha, A, a, B, b, &beta, C, c, D, d, &heur.algo, ws, ws_bytes, stream);
  }
};

class CublasLt : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess); }
  void TearDown() override { EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess); }
  /// The stream is non-blocking (like the context's), so blocking copies do not wait for it.
  template <typename T>
  std::vector<T> read(const DevBuf<T>& b) {
    EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    return b.host();
  }
  cudaStream_t stream = nullptr;
  DevBuf<uint8_t> ws{1 << 20};
};

TEST_F(CublasLt, MatmulTransposesPaddedAlphaBeta) {
  const int64_t m = 6, n = 5, k = 9;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      SCOPED_TRACE(testing::Message() << "ta " << ta << " tb " << tb);
      const int64_t lda = (ta ? k : m) + 1, ldb = (tb ? n : k) + 2, ldc = m + 3;
      auto A = random_vec(lda * (ta ? m : k), 20), B = random_vec(ldb * (tb ? k : n), 21), C = random_vec(ldc * n, 22);
      DevBuf<float> dA(A), dB(B), dC(C), dD(std::vector<float>(ldc * n, -7.0f));
      LtCase lc(ta, tb, m, n, k, lda, ldb, ldc);
      ASSERT_EQ(lc.run(dA.ptr, dB.ptr, dC.ptr, dD.ptr, 0.75f, 0.25f, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
      auto want = ref_gemm(ta, tb, m, n, k, 0.75, A, lda, 0, B, ldb, 0, 0.25, C, ldc, 0);
      auto got = read(dD);
      EXPECT_TRUE(near_all(got, ldc, 0, want, m, n));
      EXPECT_EQ(got[m], -7.0f) << "padding of D written";
    }
}

TEST_F(CublasLt, StridedBatchAndBroadcastB) {
  const int64_t m = 3, n = 4, k = 5, batch = 3;
  const int64_t sa = m * k + 3, sc = m * n + 2;
  auto A = random_vec(sa * batch, 23), B = random_vec(k * n, 24);
  DevBuf<float> dA(A), dB(B), dD(sc * batch);
  LtCase lc(false, false, m, n, k, m, k, m, batch, sa, 0, sc);
  ASSERT_EQ(lc.run(dA.ptr, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
  auto got = read(dD);
  for (int64_t b = 0; b < batch; ++b)
    EXPECT_TRUE(near_all(got, m, b * sc, ref_gemm(false, false, m, n, k, 1, A, m, b * sa, B, k, 0, 0, {}, m, 0), m, n))
        << "batch " << b;
}

/// Forward epilogues: bias (length m, broadcast over columns), ReLU, GELU, and their aux outputs.
TEST_F(CublasLt, ForwardEpilogues) {
  const int64_t m = 10, n = 7, k = 4, ldc = m;
  auto A = random_vec(m * k, 30), B = random_vec(k * n, 31), bias = random_vec(m, 32);
  DevBuf<float> dA(A), dB(B), dBias(bias);
  const auto prod = ref_gemm(false, false, m, n, k, 1, A, m, 0, B, k, 0, 0, {}, m, 0);
  struct Case {
    cublasLtEpilogue_t e;
    bool bias, relu, gelu, aux;
  };
  const Case cases[] = {
      {CUBLASLT_EPILOGUE_DEFAULT, false, false, false, false},
      {CUBLASLT_EPILOGUE_BIAS, true, false, false, false},
      {CUBLASLT_EPILOGUE_RELU, false, true, false, false},
      {CUBLASLT_EPILOGUE_RELU_BIAS, true, true, false, false},
      {CUBLASLT_EPILOGUE_RELU_AUX, false, true, false, true},
      {CUBLASLT_EPILOGUE_RELU_AUX_BIAS, true, true, false, true},
      {CUBLASLT_EPILOGUE_GELU, false, false, true, false},
      {CUBLASLT_EPILOGUE_GELU_BIAS, true, false, true, false},
      {CUBLASLT_EPILOGUE_GELU_AUX, false, false, true, true},
      {CUBLASLT_EPILOGUE_GELU_AUX_BIAS, true, false, true, true},
  };
  for (const Case& cs : cases) {
    SCOPED_TRACE(testing::Message() << "epilogue " << cs.e);
    LtCase lc(false, false, m, n, k, m, k, ldc);
    lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(cs.e));
    if (cs.bias) lc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(dBias.ptr));
    const int64_t aux_ld = cs.relu ? 128 : 16;  // bits for the ReLU mask, elements for GELU
    DevBuf<uint8_t> mask(aux_ld * n / 8, 0xA5);
    DevBuf<float> pre(aux_ld * n, -3.0f);
    if (cs.aux) {
      void* aux = cs.relu ? static_cast<void*>(mask.ptr) : static_cast<void*>(pre.ptr);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld);
    }
    DevBuf<float> dD(m * n);
    ASSERT_EQ(lc.run(dA.ptr, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
    std::vector<double> want(m * n), want_pre(m * n);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < m; ++i) {
        double v = prod[i + j * m] + (cs.bias ? bias[i] : 0.0);
        want_pre[i + j * m] = v;
        if (cs.relu) v = std::max(v, 0.0);
        if (cs.gelu) v = gelu_ref(v);
        want[i + j * m] = v;
      }
    EXPECT_TRUE(near_all(read(dD), m, 0, want, m, n));
    if (cs.aux && cs.gelu) {
      auto got_pre = read(pre);
      EXPECT_TRUE(near_all(got_pre, aux_ld, 0, want_pre, m, n));
      EXPECT_EQ(got_pre[m], -3.0f) << "aux padding written";
    }
    if (cs.aux && cs.relu) {
      auto bits = read(mask);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < aux_ld; ++i) {
          const int64_t bit = i + j * aux_ld;
          const bool set = (bits[bit / 8] >> (bit % 8)) & 1;
          if (i < m)
            EXPECT_EQ(set, want_pre[i + j * m] > 0) << "mask bit (" << i << ", " << j << ")";
          else
            EXPECT_EQ(set, ((0xA5 >> (bit % 8)) & 1) != 0) << "mask padding bit " << i << " written";
        }
    }
  }
}

TEST_F(CublasLt, ReluEpilogueTurnsNanIntoZero) {
  const int64_t m = 2, n = 2, k = 1;
  DevBuf<float> dA(std::vector<float>{NAN, 1.0f}), dB(std::vector<float>{1.0f, -2.0f}), dD(4);
  LtCase lc(false, false, m, n, k, m, k, m);
  lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_RELU));
  ASSERT_EQ(lc.run(dA.ptr, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
  auto got = read(dD);
  EXPECT_EQ(got[0], 0.0f);  // relu(NaN) on the GPU epilogue
  EXPECT_EQ(got[1], 1.0f);
  EXPECT_EQ(got[3], 0.0f);
}

/// Backward epilogues: DRELU / DGELU (with and without the bias gradient) read aux written by the
/// forward epilogue of a separate matmul; BGRADA / BGRADB reduce A / B over k.
TEST_F(CublasLt, BackwardEpilogues) {
  const int64_t m = 9, n = 6, k = 5;
  // The forward pass: pre = P (m x n) + bias, written through RELU_AUX_BIAS / GELU_AUX_BIAS.
  auto P1 = random_vec(m * 3, 40), P2 = random_vec(3 * n, 41), fbias = random_vec(m, 42);
  auto A = random_vec(m * k, 43), B = random_vec(k * n, 44);
  DevBuf<float> dP1(P1), dP2(P2), dFBias(fbias), dA(A), dB(B);
  const auto pre = ref_gemm(false, false, m, n, 3, 1, P1, m, 0, P2, 3, 0, 0, {}, m, 0);
  const auto prod = ref_gemm(false, false, m, n, k, 1, A, m, 0, B, k, 0, 0, {}, m, 0);
  for (bool relu : {true, false}) {
    SCOPED_TRACE(relu ? "relu" : "gelu");
    const int64_t aux_ld = relu ? 128 : 16;
    DevBuf<uint8_t> mask(aux_ld * n / 8);
    DevBuf<float> auxf(aux_ld * n);
    void* aux = relu ? static_cast<void*>(mask.ptr) : static_cast<void*>(auxf.ptr);
    {
      LtCase fw(false, false, m, n, 3, m, 3, m);
      fw.set(CUBLASLT_MATMUL_DESC_EPILOGUE,
             static_cast<uint32_t>(relu ? CUBLASLT_EPILOGUE_RELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX_BIAS));
      fw.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(dFBias.ptr));
      fw.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);
      fw.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld);
      DevBuf<float> y(m * n);
      ASSERT_EQ(fw.run(dP1.ptr, dP2.ptr, nullptr, y.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
    }
    for (bool bgrad : {false, true}) {
      SCOPED_TRACE(bgrad ? "with bgrad" : "no bgrad");
      LtCase bw(false, false, m, n, k, m, k, m);
      cublasLtEpilogue_t e = relu ? (bgrad ? CUBLASLT_EPILOGUE_DRELU_BGRAD : CUBLASLT_EPILOGUE_DRELU)
                                  : (bgrad ? CUBLASLT_EPILOGUE_DGELU_BGRAD : CUBLASLT_EPILOGUE_DGELU);
      bw.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(e));
      bw.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, aux);
      bw.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld);
      DevBuf<float> db(std::vector<float>(m, NAN));
      if (bgrad) bw.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(db.ptr));
      DevBuf<float> dD(m * n);
      ASSERT_EQ(bw.run(dA.ptr, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
      std::vector<double> want(m * n), rows(m, 0.0);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < m; ++i) {
          const double z = pre[i + j * m] + fbias[i];
          const double g = relu ? (z > 0 ? 1.0 : 0.0) : gelu_grad_ref(z);
          want[i + j * m] = prod[i + j * m] * g;
          rows[i] += want[i + j * m];
        }
      EXPECT_TRUE(near_all(read(dD), m, 0, want, m, n, 1e-4));
      if (bgrad) EXPECT_TRUE(near_all(read(db), m, 0, rows, m, 1, 1e-4)) << "bias gradient: sum over columns";
    }
  }
  // BGRADA: m sums over k of op(A); BGRADB: n sums over k of op(B). Use transposed operands.
  for (bool grad_a : {true, false}) {
    SCOPED_TRACE(grad_a ? "BGRADA" : "BGRADB");
    auto At = random_vec(k * m, 45), Bt = random_vec(n * k, 46);  // A stored k x m, B stored n x k
    DevBuf<float> dAt(At), dBt(Bt), dD(m * n), db(std::vector<float>(grad_a ? m : n, NAN));
    LtCase lc(true, true, m, n, k, k, n, m);
    lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE,
           static_cast<uint32_t>(grad_a ? CUBLASLT_EPILOGUE_BGRADA : CUBLASLT_EPILOGUE_BGRADB));
    lc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(db.ptr));
    ASSERT_EQ(lc.run(dAt.ptr, dBt.ptr, nullptr, dD.ptr, 2, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
    EXPECT_TRUE(near_all(read(dD), m, 0, ref_gemm(true, true, m, n, k, 2, At, k, 0, Bt, n, 0, 0, {}, m, 0), m, n));
    std::vector<double> sums(grad_a ? m : n, 0.0);
    if (grad_a) {
      for (int64_t i = 0; i < m; ++i)
        for (int64_t p = 0; p < k; ++p) sums[i] += At[p + i * k];  // op(A)(i, p) = At(p, i)
    } else {
      for (int64_t j = 0; j < n; ++j)
        for (int64_t p = 0; p < k; ++p) sums[j] += Bt[j + p * n];  // op(B)(p, j) = Bt(j, p)
    }
    EXPECT_TRUE(near_all(read(db), 1, 0, sums, 1, grad_a ? m : n));
  }
}

TEST_F(CublasLt, HeuristicHonoursWorkspaceLimitAndScribbles) {
  const int64_t m = 4, n = 4, k = 4;
  LtCase lc(false, false, m, n, k, m, k, m);
  uint64_t limit = 0;
  ASSERT_EQ(
      cublasLtMatmulPreferenceSetAttribute(lc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &limit, sizeof limit),
      CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(lc.heuristic(), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(lc.heur.workspaceSize, 0u);
  limit = 4096;
  ASSERT_EQ(
      cublasLtMatmulPreferenceSetAttribute(lc.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &limit, sizeof limit),
      CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(lc.heuristic(), CUBLAS_STATUS_SUCCESS);
  EXPECT_GT(lc.heur.workspaceSize, 0u);
  EXPECT_LE(lc.heur.workspaceSize, 4096u);
  DevBuf<float> dA(random_vec(16, 50)), dB(random_vec(16, 51)), dD(16);
  DevBuf<uint8_t> small(4096, 0);
  const float one = 1, zero = 0;
  // Less workspace than the algo needs: INVALID_VALUE (documented).
  EXPECT_EQ(cublasLtMatmul(lc.lt, lc.desc, &one, dA.ptr, lc.a, dB.ptr, lc.b, &zero, nullptr, lc.c, dD.ptr, lc.d,
                           &lc.heur.algo, small.ptr, lc.heur.workspaceSize - 1, stream),
            CUBLAS_STATUS_INVALID_VALUE);
  ASSERT_EQ(cublasLtMatmul(lc.lt, lc.desc, &one, dA.ptr, lc.a, dB.ptr, lc.b, &zero, nullptr, lc.c, dD.ptr, lc.d,
                           &lc.heur.algo, small.ptr, small.n, stream),
            CUBLAS_STATUS_SUCCESS);
  auto scratch = read(small);
  EXPECT_EQ(scratch[0], 0xFF) << "the workspace is the algo's: its contents are not preserved";
  // A null algo needs no workspace.
  EXPECT_EQ(cublasLtMatmul(lc.lt, lc.desc, &one, dA.ptr, lc.a, dB.ptr, lc.b, &zero, nullptr, lc.c, dD.ptr, lc.d,
                           nullptr, nullptr, 0, stream),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
}

TEST_F(CublasLt, MisalignedPointerFaultsUnlessPreferenceSaysSo) {
  const int64_t m = 4, n = 4, k = 4;
  DevBuf<float> dA(random_vec(17, 52)), dB(random_vec(16, 53)), dD(16);
  LtCase lc(false, false, m, n, k, m, k, m);
  ASSERT_EQ(lc.run(dA.ptr + 1, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaErrorMisalignedAddress);
  cudl_emu::reset_device_state();
  (void)cudaGetLastError();
  uint32_t align = 4;
  ASSERT_EQ(
      cublasLtMatmulPreferenceSetAttribute(lc.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align, sizeof align),
      CUBLAS_STATUS_SUCCESS);
  ASSERT_EQ(lc.run(dA.ptr + 1, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
}

TEST_F(CublasLt, WorkIsStreamOrdered) {
  const int64_t m = 2, n = 2, k = 2;
  DevBuf<float> dA(random_vec(4, 54)), dB(random_vec(4, 55)), dD(std::vector<float>(4, 5.0f));
  cudl_emu::reset_counters();
  LtCase lc(false, false, m, n, k, m, k, m);
  ASSERT_EQ(lc.run(dA.ptr, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(cudl_emu::counters().library_calls, 0u) << "queued, not run, until the stream is synchronised";
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(cudl_emu::counters().library_calls, 1u);
}

TEST_F(CublasLt, ArgumentErrors) {
  const int64_t m = 4, n = 3, k = 2;
  DevBuf<float> d(64);
  const float one = 1, zero = 0;
  {  // null handle
    LtCase lc(false, false, m, n, k, m, k, m);
    EXPECT_EQ(cublasLtMatmul(nullptr, lc.desc, &one, d.ptr, lc.a, d.ptr, lc.b, &zero, nullptr, lc.c, d.ptr, lc.d,
                             nullptr, nullptr, 0, stream),
              CUBLAS_STATUS_NOT_INITIALIZED);
    int count = 0;
    EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(lc.lt, lc.desc, lc.a, lc.b, lc.c, lc.d, lc.pref, 0, &lc.heur, &count),
              CUBLAS_STATUS_INVALID_VALUE);
  }
  {  // row-major order is not emulated
    LtCase lc(false, false, m, n, k, m, k, m);
    int32_t order = CUBLASLT_ORDER_ROW;
    ASSERT_EQ(cublasLtMatrixLayoutSetAttribute(lc.a, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof order),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(cublasLtMatmul(lc.lt, lc.desc, &one, d.ptr, lc.a, d.ptr, lc.b, &zero, nullptr, lc.c, d.ptr, lc.d, nullptr,
                             nullptr, 0, stream),
              CUBLAS_STATUS_NOT_SUPPORTED);
  }
  {  // ld smaller than the rows
    LtCase lc(false, false, m, n, k, m - 1, k, m);
    EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_INVALID_VALUE);
  }
  {  // inner dimensions differ: A is m x k, B is (k+1) x n
    LtCase lc(false, false, m, n, k, m, k + 1, m);
    cublasLtMatrixLayoutDestroy(lc.b);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&lc.b, CUDA_R_32F, k + 1, n, k + 1), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_INVALID_VALUE);
  }
  {  // bias epilogue without a bias pointer; aux epilogue with a bad aux ld
    LtCase lc(false, false, m, n, k, m, k, m);
    lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_BIAS));
    EXPECT_EQ(cublasLtMatmul(lc.lt, lc.desc, &one, d.ptr, lc.a, d.ptr, lc.b, &zero, nullptr, lc.c, d.ptr, lc.d, nullptr,
                             nullptr, 0, stream),
              CUBLAS_STATUS_INVALID_VALUE);
    lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_RELU_AUX));
    lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(d.ptr));
    lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t{64});  // bits: must be a multiple of 128
    EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_INVALID_VALUE);
    lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_GELU_AUX));
    lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t{6});  // elements: a multiple of 8, >= m
    EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_INVALID_VALUE);
    lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t{8});
    EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_SUCCESS);
  }
  {  // attribute plumbing: size checks, size queries, bad epilogue value
    LtCase lc(false, false, m, n, k, m, k, m);
    int32_t small = 0;
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(lc.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &small, sizeof small),
              CUBLAS_STATUS_INVALID_VALUE);
    uint32_t bad = 3;
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(lc.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &bad, sizeof bad),
              CUBLAS_STATUS_INVALID_VALUE);
    size_t need = 0;
    EXPECT_EQ(cublasLtMatmulDescGetAttribute(lc.desc, CUBLASLT_MATMUL_DESC_TRANSA, nullptr, 0, &need),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(need, sizeof(int32_t));
    uint64_t rows = 0;
    size_t written = 0;
    EXPECT_EQ(cublasLtMatrixLayoutGetAttribute(lc.a, CUBLASLT_MATRIX_LAYOUT_ROWS, &rows, sizeof rows, &written),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(rows, static_cast<uint64_t>(m));
    EXPECT_EQ(written, sizeof rows);
    EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(lc.a, CUBLASLT_MATRIX_LAYOUT_LD, nullptr, 8),
              CUBLAS_STATUS_INVALID_VALUE);
  }
  {  // descriptors initialised in caller-provided space work like created ones
    cublasLtMatmulDescOpaque_t desc_space;
    cublasLtMatrixLayoutOpaque_t la, lb, lcd;
    ASSERT_EQ(cublasLtMatmulDescInit(&desc_space, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutInit(&la, CUDA_R_32F, 2, 2, 2), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutInit(&lb, CUDA_R_32F, 2, 2, 2), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutInit(&lcd, CUDA_R_32F, 2, 2, 2), CUBLAS_STATUS_SUCCESS);
    cublasLtHandle_t lt;
    ASSERT_EQ(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
    std::vector<float> A = {1, 2, 3, 4}, B = {1, 0, 0, 1};
    DevBuf<float> dA(A), dB(B), dD(4);
    ASSERT_EQ(cublasLtMatmul(lt, &desc_space, &one, dA.ptr, &la, dB.ptr, &lb, &zero, nullptr, &lcd, dD.ptr, &lcd,
                             nullptr, nullptr, 0, stream),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(read(dD), A);
    EXPECT_EQ(cublasLtDestroy(lt), CUBLAS_STATUS_SUCCESS);
  }
}

}  // namespace
