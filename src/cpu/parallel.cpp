// cpu/parallel.cpp — the CPU backend's worker pool and thread counts (see parallel.hpp).
// Workers sleep on a condition variable between calls: no spinning on a machine shared with other work.
#include "cpu/parallel.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(CUDL_HAVE_OPENBLAS)
// Declared here rather than through <cblas.h>, which only OpenBLAS's copy declares them in.
extern "C" {
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
}
#endif

namespace cudl {

namespace {

thread_local int tls_thread_override = 0;  // 0: follow the BLAS
thread_local bool tls_in_parallel_for = false;

// ---------------------------------------------------------------------------------------------
// OpenBLAS thread count, shared by SingleThreadedBlas scopes

std::mutex blas_mutex;
int blas_scopes = 0;         // live SingleThreadedBlas objects
int blas_saved_threads = 0;  // OpenBLAS's count before the first of them

int blas_thread_count() {
#if defined(CUDL_HAVE_OPENBLAS)
  std::lock_guard<std::mutex> lock(blas_mutex);
  return blas_scopes > 0 ? blas_saved_threads : openblas_get_num_threads();
#else
  // What OpenBLAS itself would read.
  for (const char* var : {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"})
    if (const char* v = std::getenv(var))
      if (int n = std::atoi(v); n > 0) return n;
  return static_cast<int>(std::thread::hardware_concurrency());
#endif
}

// ---------------------------------------------------------------------------------------------
// worker pool: worker w (1-based) runs chunk w of the current call

class WorkerPool {
 public:
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    start_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

  /// Runs task(0) here and task(1..chunks-1) on workers; rethrows the first exception.
  void run(int chunks, const std::function<void(int)>& task) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (static_cast<int>(workers_.size()) < chunks - 1) {
      const int index = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, index] { worker_loop(index); });
    }
    task_ = &task;
    chunks_ = chunks;
    pending_ = chunks - 1;
    error_ = nullptr;
    ++generation_;
    lock.unlock();
    start_.notify_all();

    std::exception_ptr mine;
    try {
      task(0);
    } catch (...) {
      mine = std::current_exception();
    }
    lock.lock();
    done_.wait(lock, [this] { return pending_ == 0; });
    task_ = nullptr;
    std::exception_ptr first = mine ? mine : error_;
    lock.unlock();
    if (first) std::rethrow_exception(first);
  }

 private:
  void worker_loop(int index) {
    tls_in_parallel_for = true;
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      start_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (index >= chunks_) continue;  // this call needs fewer workers
      const std::function<void(int)>* task = task_;
      lock.unlock();
      std::exception_ptr err;
      try {
        (*task)(index);
      } catch (...) {
        err = std::current_exception();
      }
      lock.lock();
      if (err && !error_) error_ = err;
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable start_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* task_ = nullptr;
  int chunks_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

std::mutex pool_owner;  // held by the thread whose call is using the pool

WorkerPool& pool() {
  static WorkerPool p;
  return p;
}

}  // namespace

int cpu_thread_count() {
  if (tls_thread_override > 0) return tls_thread_override;
  return std::max(1, blas_thread_count());
}

int elementwise_chunks(int64_t n) { return n >= 32768 ? cpu_thread_count() : 1; }

ScopedCpuThreads::ScopedCpuThreads(int threads) : previous_(tls_thread_override) {
  tls_thread_override = std::max(1, threads);
}
ScopedCpuThreads::~ScopedCpuThreads() { tls_thread_override = previous_; }

void parallel_for(int64_t n, int threads, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  const int chunks = static_cast<int>(std::clamp<int64_t>(threads, 1, n));
  auto chunk = [&](int i) { fn(i * n / chunks, (i + 1) * n / chunks, i); };
  auto serial = [&] {
    for (int i = 0; i < chunks; ++i) chunk(i);
  };
  if (chunks == 1 || tls_in_parallel_for) return serial();
  std::unique_lock<std::mutex> owner(pool_owner, std::try_to_lock);
  if (!owner.owns_lock()) return serial();
  tls_in_parallel_for = true;
  try {
    pool().run(chunks, chunk);
  } catch (...) {
    tls_in_parallel_for = false;
    throw;
  }
  tls_in_parallel_for = false;
}

SingleThreadedBlas::SingleThreadedBlas() {
#if defined(CUDL_HAVE_OPENBLAS)
  std::lock_guard<std::mutex> lock(blas_mutex);
  if (blas_scopes++ == 0) {
    blas_saved_threads = openblas_get_num_threads();
    if (blas_saved_threads != 1) openblas_set_num_threads(1);
  }
#endif
}

SingleThreadedBlas::~SingleThreadedBlas() {
#if defined(CUDL_HAVE_OPENBLAS)
  std::lock_guard<std::mutex> lock(blas_mutex);
  if (--blas_scopes == 0 && blas_saved_threads != 1) openblas_set_num_threads(blas_saved_threads);
#endif
}

}  // namespace cudl
