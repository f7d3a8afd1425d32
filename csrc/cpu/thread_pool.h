// A persistent pool of worker threads for the forward pass.
//
// run(n_chunks, fn) calls fn(chunk, n_chunks) once for every chunk in [0, n_chunks); the caller
// works too, and chunks are claimed from a shared counter. Claiming dynamically matters on a
// shared machine: if the OS deschedules a worker, the others take its chunks instead of waiting
// for it. Workers spin briefly before sleeping, because a decode step dispatches a few hundred
// short jobs and a sleep/wake per job would cost more than the job.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ll::cpu {

class ThreadPool {
public:
    using Job = std::function<void(int chunk, int n_chunks)>;

    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }
    // Returns when every chunk has run. fn must not throw.
    void run(int n_chunks, const Job& fn);

    // Split [0, n) into nth contiguous ranges whose starts are multiples of `align`.
    static void split(int64_t n, int part, int nparts, int64_t align, int64_t& begin, int64_t& end);

private:
    void worker();
    void work_on_chunks();

    static constexpr uint64_t kClosed = 1ull << 31;
    static constexpr uint64_t kActiveMask = kClosed - 1;

    int n_threads_;
    std::vector<std::thread> threads_;
    const Job* job_ = nullptr;
    int n_chunks_ = 0;
    std::atomic<int> next_chunk_{0};
    std::atomic<int> chunks_done_{0};
    // generation << 32 | closed bit | number of workers inside the current job. A worker enters
    // only while the job is open, and run() returns only after closing it and seeing no one
    // inside, so no worker can touch a job that has returned.
    std::atomic<uint64_t> state_{0};
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable wake_;
    std::atomic<int> sleepers_{0};
};

// Number of physical cores (not SMT siblings) this process may run on; at least 1.
int physical_cores();

}  // namespace ll::cpu
