// cpu/blas.cpp — the CPU backend's GEMM over the worker pool (see blas.hpp).
#include "cpu/blas.hpp"

#include <cblas.h>

#include <algorithm>

#include "cpu/parallel.hpp"

namespace cudl {

namespace {

constexpr int64_t kBlock = 16;               // rows (or columns) of C per block
constexpr double kFlopsPerThread = 4.0e6;    // less than this per thread: not worth a wake-up

void cblas(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
           int64_t ldb, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), 1.f, a, static_cast<int>(lda), b, static_cast<int>(ldb), 0.f,
              c, static_cast<int>(ldc));
}

}  // namespace

void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
           int64_t ldb, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t r = 0; r < m; ++r) std::fill(c + r * ldc, c + r * ldc + n, 0.f);
    return;
  }
  lda = std::max<int64_t>(1, lda), ldb = std::max<int64_t>(1, ldb);
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const int by_size = static_cast<int>(std::clamp(flops / kFlopsPerThread, 1.0, 1024.0));
  const int threads = std::min(cpu_thread_count(), by_size);
  SingleThreadedBlas single;
  const bool split_rows = m >= n || m >= threads * kBlock;
  const int64_t extent = split_rows ? m : n;
  const int64_t blocks = (extent + kBlock - 1) / kBlock;
  parallel_for(blocks, threads, [&](int64_t b0, int64_t b1, int) {
    const int64_t lo = b0 * kBlock, hi = std::min(extent, b1 * kBlock);
    if (split_rows)  // rows lo..hi of op(A) and C
      cblas(ta, tb, hi - lo, n, k, ta ? a + lo : a + lo * lda, lda, b, ldb, c + lo * ldc, ldc);
    else  // columns lo..hi of op(B) and C
      cblas(ta, tb, m, hi - lo, k, a, lda, tb ? b + lo * ldb : b + lo, ldb, c + lo, ldc);
  });
}

void sgemm_packed(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
  sgemm(ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, c, n);
}

}  // namespace cudl
