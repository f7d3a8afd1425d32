// A persistent pool of worker threads for the forward pass.
//
// run(fn) calls fn(thread_index, n_threads) on every thread (the caller is thread 0) and returns
// when all have finished. Workers spin briefly on a generation counter before sleeping, because a
// decode step dispatches a few hundred short jobs and a condition-variable wake-up per job would
// cost more than the job.
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
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int size() const { return n_threads_; }
    void run(const std::function<void(int, int)>& fn);

    // Split [0, n) into n_threads contiguous ranges whose starts are multiples of `align`.
    static void split(int64_t n, int tid, int nth, int64_t align, int64_t& begin, int64_t& end);

private:
    void worker(int tid);

    int n_threads_;
    std::vector<std::thread> threads_;
    const std::function<void(int, int)>* job_ = nullptr;
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable wake_;
    std::atomic<int> sleepers_{0};
};

// Number of physical cores (not SMT siblings) this process may run on; at least 1.
int physical_cores();

}  // namespace ll::cpu
