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

  /// ab: the type of A and B, cd: of C and D (CUBLAS_COMPUTE_32F, fp32 scale).
  LtCase(bool ta, bool tb, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc, int batch = 1,
         int64_t sa = 0, int64_t sb = 0, int64_t sc = 0, cudaDataType ab = CUDA_R_32F, cudaDataType cd = CUDA_R_32F) {
    EXPECT_EQ(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
    cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&a, ab, ta ? k : m, ta ? m : k, lda), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&b, ab, tb ? n : k, tb ? k : n, ldb), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&c, cd, m, n, ldc), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatrixLayoutCreate(&d, cd, m, n, ldc), CUBLAS_STATUS_SUCCESS);
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
  cublasStatus_t run(const void* A, const void* B, const void* C, void* D, float alpha, float beta, void* ws,
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

// --- 16-bit storage: bf16 / f16 A, B, C, D with CUBLAS_COMPUTE_32F ---------------------------------

/// Host values rounded to a 16-bit type: the bits, and the values the GEMM sees.
struct Host16 {
  std::vector<uint16_t> bits;
  std::vector<float> vals;
};
Host16 to16(cudaDataType t, const std::vector<float>& v) {
  Host16 h{std::vector<uint16_t>(v.size()), std::vector<float>(v.size())};
  for (size_t i = 0; i < v.size(); ++i) {
    h.bits[i] = t == CUDA_R_16F ? cudl::float_to_half_bits(v[i]) : cudl::float_to_bf16_bits(v[i]);
    h.vals[i] = t == CUDA_R_16F ? cudl::half_bits_to_float(h.bits[i]) : cudl::bf16_bits_to_float(h.bits[i]);
  }
  return h;
}
std::vector<float> from16(cudaDataType t, const std::vector<uint16_t>& bits) {
  std::vector<float> v(bits.size());
  for (size_t i = 0; i < bits.size(); ++i)
    v[i] = t == CUDA_R_16F ? cudl::half_bits_to_float(bits[i]) : cudl::bf16_bits_to_float(bits[i]);
  return v;
}
/// The spacing of the 16-bit type's values around x (its subnormal spacing below the normal range).
double ulp16(cudaDataType t, double x) {
  const int mant = t == CUDA_R_16F ? 10 : 7, min_exp = t == CUDA_R_16F ? -14 : -126;
  const int e = x == 0 ? min_exp : std::max(static_cast<int>(std::floor(std::log2(std::fabs(x)))), min_exp);
  return std::ldexp(1.0, e - mant);
}
/// Each got[i] is want[i] (exact) rounded once to the 16-bit type, up to `slack[i]` for fp32
/// summation: |got - want| <= ulp/2 + slack. A second rounding (of an intermediate) breaks it.
::testing::AssertionResult rounded_once(cudaDataType t, const std::vector<float>& got, const std::vector<double>& want,
                                        const std::vector<double>& slack) {
  for (size_t i = 0; i < want.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= 0.5 * ulp16(t, want[i]) + slack[i]))
      return ::testing::AssertionFailure()
             << "[" << i << "] got " << got[i] << ", want " << want[i] << " (ulp " << ulp16(t, want[i]) << ")";
  return ::testing::AssertionSuccess();
}

TEST_F(CublasLt, SixteenBitEpiloguesAccumulateInFp32AndRoundOnce) {
  // Forward GELU_AUX_BIAS (y and its pre-activation aux in the 16-bit type, a 16-bit bias), then
  // the backward epilogues BGRADB, DRELU_BGRAD and DGELU_BGRAD (16-bit aux) with 16-bit bias
  // gradients. k = 96 products.
  const int64_t m = 16, n = 5, k = 96;
  const double fp32_sum = k * std::ldexp(1.0, -24);  // fp32 accumulation error per unit of sum |products|
  for (cudaDataType t : {CUDA_R_16BF, CUDA_R_16F}) {
    SCOPED_TRACE(t == CUDA_R_16F ? "f16" : "bf16");
    const Host16 A = to16(t, random_vec(m * k, 50)), B = to16(t, random_vec(k * n, 51)),
                 bias = to16(t, random_vec(m, 52));
    DevBuf<uint16_t> dA(A.bits), dB(B.bits), dBias(bias.bits);
    std::vector<double> pre(m * n), sum_abs(m * n);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < m; ++i) {
        double s = 0, a = 0;
        for (int64_t p = 0; p < k; ++p) {
          s += double(A.vals[i + p * m]) * B.vals[p + j * k];
          a += std::fabs(double(A.vals[i + p * m]) * B.vals[p + j * k]);
        }
        pre[i + j * m] = s + bias.vals[i];
        sum_abs[i + j * m] = a + std::fabs(bias.vals[i]);
      }
    {  // accepted: everything in the storage type, the bias type said explicitly
      LtCase lc(false, false, m, n, k, m, k, m, 1, 0, 0, 0, t, t);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_GELU_AUX_BIAS));
      lc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(t));
      lc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(dBias.ptr));
      DevBuf<uint16_t> aux(m * n, 0xFFFF), dD(m * n, 0xFFFF);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(aux.ptr));
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, m);
      ASSERT_EQ(lc.run(dA.ptr, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
      std::vector<double> y(m * n), slack(m * n), slack_y(m * n);
      for (int64_t i = 0; i < m * n; ++i) {
        y[i] = gelu_ref(pre[i]);
        slack[i] = fp32_sum * sum_abs[i] + 1e-6 * std::fabs(pre[i]);
        slack_y[i] = 1.2 * slack[i];  // |gelu'| < 1.13
      }
      EXPECT_TRUE(rounded_once(t, from16(t, read(aux)), pre, slack)) << "pre (aux)";
      EXPECT_TRUE(rounded_once(t, from16(t, read(dD)), y, slack_y)) << "y = gelu(pre), from the unrounded pre";
    }
    {  // BGRADB: D = A·B, bias gradient (n) = Σ_k B(k, j), both 16-bit
      LtCase lc(false, false, m, n, k, m, k, m, 1, 0, 0, 0, t, t);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_BGRADB));
      lc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(t));
      DevBuf<uint16_t> db(n, 0xFFFF), dD(m * n);
      lc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(db.ptr));
      ASSERT_EQ(lc.run(dA.ptr, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
      std::vector<double> sums(n, 0.0), slack(n), prod(m * n), pslack(m * n);
      for (int64_t j = 0; j < n; ++j) {
        double a = 0;
        for (int64_t p = 0; p < k; ++p) sums[j] += B.vals[p + j * k], a += std::fabs(B.vals[p + j * k]);
        slack[j] = fp32_sum * a;
      }
      for (int64_t i = 0; i < m * n; ++i)
        prod[i] = pre[i] - bias.vals[i % m], pslack[i] = fp32_sum * sum_abs[i] + 1e-6 * std::fabs(prod[i]);
      EXPECT_TRUE(rounded_once(t, from16(t, read(db)), sums, slack)) << "bias gradient of B";
      EXPECT_TRUE(rounded_once(t, from16(t, read(dD)), prod, pslack)) << "D";
    }
    {  // DRELU_BGRAD: D = (A·B) ⊙ mask, bias gradient (m) = Σ_j D(i, j) of the unrounded D
      std::vector<uint8_t> mask(128 * n / 8);
      for (size_t i = 0; i < mask.size(); ++i) mask[i] = static_cast<uint8_t>((i * 151 + 29) & 0xFF);
      auto bit = [&](int64_t i, int64_t j) { return (mask[(i + j * 128) / 8] >> ((i + j * 128) % 8)) & 1; };
      DevBuf<uint8_t> dMask(mask);
      LtCase lc(false, false, m, n, k, m, k, m, 1, 0, 0, 0, t, t);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_DRELU_BGRAD));
      lc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(t));
      DevBuf<uint16_t> db(m, 0xFFFF), dD(m * n);
      lc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(db.ptr));
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(dMask.ptr));
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t{128});
      ASSERT_EQ(lc.run(dA.ptr, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
      std::vector<double> d(m * n), dslack(m * n), rows(m, 0.0), rslack(m, 0.0);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < m; ++i) {
          const double v = bit(i, j) ? pre[i + j * m] - bias.vals[i] : 0.0;
          d[i + j * m] = v;
          dslack[i + j * m] = bit(i, j) ? fp32_sum * sum_abs[i + j * m] + 1e-6 * std::fabs(v) : 0.0;
          rows[i] += v;
          rslack[i] += dslack[i + j * m] + 1e-6 * std::fabs(v);
        }
      EXPECT_TRUE(rounded_once(t, from16(t, read(dD)), d, dslack)) << "D through the mask";
      EXPECT_TRUE(rounded_once(t, from16(t, read(db)), rows, rslack)) << "bias gradient of the unrounded D";
    }
    {  // DGELU_BGRAD: D = (A·B) ⊙ gelu'(aux), aux the 16-bit pre-activation; bias gradient of the unrounded D
      std::vector<float> pre16f(m * n);
      for (int64_t i = 0; i < m * n; ++i) pre16f[i] = static_cast<float>(pre[i]);
      const Host16 aux = to16(t, pre16f);
      DevBuf<uint16_t> dAux(aux.bits);
      LtCase lc(false, false, m, n, k, m, k, m, 1, 0, 0, 0, t, t);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_DGELU_BGRAD));
      lc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(t));
      DevBuf<uint16_t> db(m, 0xFFFF), dD(m * n);
      lc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(db.ptr));
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(dAux.ptr));
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, m);
      ASSERT_EQ(lc.run(dA.ptr, dB.ptr, nullptr, dD.ptr, 1, 0, ws.ptr, ws.n, stream), CUBLAS_STATUS_SUCCESS);
      std::vector<double> d(m * n), dslack(m * n), rows(m, 0.0), rslack(m, 0.0);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < m; ++i) {
          const double g = gelu_grad_ref(aux.vals[i + j * m]);  // the derivative at the stored aux
          const double v = (pre[i + j * m] - bias.vals[i]) * g;
          d[i + j * m] = v;
          dslack[i + j * m] = 1.2 * fp32_sum * sum_abs[i + j * m] + 1e-6 * std::fabs(v);
          rows[i] += v;
          rslack[i] += dslack[i + j * m] + 1e-6 * std::fabs(v);
        }
      EXPECT_TRUE(rounded_once(t, from16(t, read(dD)), d, dslack)) << "D times gelu'(aux)";
      EXPECT_TRUE(rounded_once(t, from16(t, read(db)), rows, rslack)) << "bias gradient of the unrounded D";
    }
  }
}

TEST_F(CublasLt, SixteenBitTypeCombinationsCuBlasLtRejects) {
  // cublasLt.h: the bias vector has D's type (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE), GELU's aux has D's
  // type; A and B share a type; C/D are A's 16-bit type or f32; TF32 compute takes f32 only.
  const int64_t m = 8, n = 4, k = 8;
  for (cudaDataType t : {CUDA_R_16BF, CUDA_R_16F}) {
    SCOPED_TRACE(t == CUDA_R_16F ? "f16" : "bf16");
    const cudaDataType other = t == CUDA_R_16F ? CUDA_R_16BF : CUDA_R_16F;
    {  // a 16-bit bias with 16-bit D: accepted; an f32 bias: not
      LtCase lc(false, false, m, n, k, m, k, m, 1, 0, 0, 0, t, t);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_BIAS));
      lc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(t));
      EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_SUCCESS);
      lc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(CUDA_R_32F));
      EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_NOT_SUPPORTED) << "f32 bias with 16-bit D";
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_BGRADB));
      EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_NOT_SUPPORTED) << "f32 bias gradient with 16-bit C";
    }
    {  // GELU aux in D's type: accepted; in f32: not
      LtCase lc(false, false, m, n, k, m, k, m, 1, 0, 0, 0, t, t);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, static_cast<uint32_t>(CUBLASLT_EPILOGUE_GELU_AUX));
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, m);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, static_cast<int32_t>(t));
      EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_SUCCESS);
      lc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, static_cast<int32_t>(CUDA_R_32F));
      EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_NOT_SUPPORTED) << "f32 GELU aux with 16-bit D";
    }
    {  // 16-bit A/B with f32 C/D: accepted (the unfused paths' fp32 result); the other 16-bit type: not
      LtCase f32d(false, false, m, n, k, m, k, m, 1, 0, 0, 0, t, CUDA_R_32F);
      EXPECT_EQ(f32d.heuristic(), CUBLAS_STATUS_SUCCESS);
      LtCase mixed(false, false, m, n, k, m, k, m, 1, 0, 0, 0, t, other);
      EXPECT_EQ(mixed.heuristic(), CUBLAS_STATUS_NOT_SUPPORTED);
    }
    {  // TF32 compute with 16-bit inputs: not
      LtCase lc(false, false, m, n, k, m, k, m, 1, 0, 0, 0, t, t);
      lc.set(CUBLASLT_MATMUL_DESC_COMPUTE_TYPE, static_cast<int32_t>(CUBLAS_COMPUTE_32F_FAST_TF32));
      EXPECT_EQ(lc.heuristic(), CUBLAS_STATUS_NOT_SUPPORTED);
    }
  }
}

TEST_F(Cublas, Compute16FAccumulatesInHalf) {
  // 3000 products of 1·1 in f16: an fp32 accumulator gives 3000 (exact in f16), a half accumulator
  // stops at 2048 (2048 + 1 rounds back to 2048).
  const int m = 1, n = 1, k = 3000;
  const uint16_t one = cudl::float_to_half_bits(1.f), zero = cudl::float_to_half_bits(0.f);
  DevBuf<uint16_t> dA(std::vector<uint16_t>(k, one)), dB(std::vector<uint16_t>(k, one));
  for (bool half_acc : {false, true}) {
    DevBuf<uint16_t> dC(1, 0xFFFF);
    cublasStatus_t st;
    if (half_acc) {
      st = cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.ptr, CUDA_R_16F, m, dB.ptr, CUDA_R_16F, k,
                        &zero, dC.ptr, CUDA_R_16F, m, CUBLAS_COMPUTE_16F, CUBLAS_GEMM_DEFAULT);
    } else {
      const float a = 1, b = 0;
      st = cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &a, dA.ptr, CUDA_R_16F, m, dB.ptr, CUDA_R_16F, k, &b,
                        dC.ptr, CUDA_R_16F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    ASSERT_EQ(st, CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cudl::half_bits_to_float(dC.host()[0]), half_acc ? 2048.f : 3000.f);
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
