// cpu/blas.hpp — the CPU backend's GEMM: CBLAS with OpenBLAS kept on the calling thread, the
// product's rows (or columns) split over the backend's own worker pool (cpu/parallel.hpp).
#pragma once

#include <cstdint>

namespace cudl {

/// Row-major C (m, n) = op(A) · op(B), op(A) (m, k) and op(B) (k, n); A is (k, m) when ta, B is
/// (n, k) when tb; leading dimensions as CBLAS takes them. C is overwritten (k = 0: zeros).
///
/// OpenBLAS runs single-threaded (SingleThreadedBlas) and the product is split into blocks of 16
/// rows of C (of 16 columns when C has too few rows for the threads), contiguous runs of blocks
/// going to cpu_thread_count() threads, when it has at least 4 MFLOP a thread. So every thread
/// the backend uses is a pool worker that sleeps between calls: OpenBLAS's own workers, which
/// spin after each call they share (OPENBLAS_THREAD_TIMEOUT, 2^28 cycles by default), never
/// wake to compete with the pool for the cores. Called from inside a parallel_for chunk it runs
/// on that thread alone. Deterministic: for a given thread count the split is fixed by the shape
/// (each thread's part is one GEMM call, so another thread count may round differently).
void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
           int64_t ldb, float* c, int64_t ldc);

/// sgemm with packed operands: lda, ldb, ldc are the row lengths of A, B and C as stored.
void sgemm_packed(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c);

}  // namespace cudl
