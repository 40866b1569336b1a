// cpu/parallel.hpp — threads of the CPU backend: how many an op may use, a statically partitioned
// parallel_for on a persistent worker pool, and a scope that keeps OpenBLAS single-threaded.
#pragma once

#include <cstdint>
#include <functional>

namespace cudl {

/// Threads a CPU op may use: the calling thread's innermost ScopedCpuThreads, else OpenBLAS's
/// own thread count (OPENBLAS_NUM_THREADS, default nproc), so that ops which split their work
/// over threads use as many as the GEMM-only ops give OpenBLAS. Always >= 1.
int cpu_thread_count();

/// Sets cpu_thread_count() for the calling thread while it lives (tests and benchmarks compare
/// thread counts with it). Other threads are not affected.
class ScopedCpuThreads {
 public:
  explicit ScopedCpuThreads(int threads);
  ~ScopedCpuThreads();
  ScopedCpuThreads(const ScopedCpuThreads&) = delete;
  ScopedCpuThreads& operator=(const ScopedCpuThreads&) = delete;

 private:
  int previous_;
};

/// Splits [0, n) into chunks = clamp(threads, 1, n) contiguous ranges, chunk i being
/// [i*n/chunks, (i+1)*n/chunks), and calls fn(begin, end, i) once per chunk: chunk 0 on the
/// calling thread, the others on pool workers; returns when every chunk is done and rethrows
/// the first exception a chunk threw. The chunks depend only on n and the chunk count. A call
/// made from inside a chunk, or while another thread's call holds the pool, runs its chunks one
/// after another on the calling thread (the same chunks, in order).
void parallel_for(int64_t n, int threads, const std::function<void(int64_t begin, int64_t end, int chunk)>& fn);

/// Chunks for an elementwise loop over n elements: cpu_thread_count() from 32,768 elements up (where
/// waking a worker costs less than it saves), else 1.
int elementwise_chunks(int64_t n);

/// While one of these lives anywhere in the process, OpenBLAS runs each call on the calling
/// thread alone (openblas_set_num_threads(1); the previous count comes back when the last
/// scope ends), so that GEMMs issued from parallel_for chunks neither oversubscribe the cores
/// nor queue for OpenBLAS's own workers. It is process-wide: OpenBLAS 0.3.21 has no per-thread
/// setting. A no-op when the BLAS is not OpenBLAS.
class SingleThreadedBlas {
 public:
  SingleThreadedBlas();
  ~SingleThreadedBlas();
  SingleThreadedBlas(const SingleThreadedBlas&) = delete;
  SingleThreadedBlas& operator=(const SingleThreadedBlas&) = delete;
};

}  // namespace cudl
