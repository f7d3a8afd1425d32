#include "thread_pool.h"

#include <sched.h>

#include <fstream>
#include <set>
#include <string>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LL_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define LL_CPU_RELAX() asm volatile("yield")
#else
#define LL_CPU_RELAX() ((void)0)
#endif

namespace ll::cpu {

namespace {
constexpr int kSpinIterations = 200000;  // roughly 1-5 ms of spinning before a worker sleeps
}

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    for (int t = 1; t < n_threads_; ++t) threads_.emplace_back([this, t] { worker(t); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true);
        generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& th : threads_) th.join();
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
    if (n_threads_ == 1) {
        fn(0, 1);
        return;
    }
    job_ = &fn;
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    {
        // The lock orders the publication against a worker that is about to sleep.
        std::lock_guard<std::mutex> lock(mutex_);
        generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    fn(0, n_threads_);
    while (pending_.load(std::memory_order_acquire) != 0) LL_CPU_RELAX();
    job_ = nullptr;
}

void ThreadPool::worker(int tid) {
    uint64_t seen = 0;
    for (;;) {
        uint64_t gen = generation_.load(std::memory_order_acquire);
        for (int spin = 0; gen == seen && spin < kSpinIterations; ++spin) {
            LL_CPU_RELAX();
            gen = generation_.load(std::memory_order_acquire);
        }
        if (gen == seen) {
            std::unique_lock<std::mutex> lock(mutex_);
            sleepers_.fetch_add(1);
            wake_.wait(lock, [&] { return generation_.load() != seen; });
            sleepers_.fetch_sub(1);
            gen = generation_.load();
        }
        seen = gen;
        if (stop_.load()) return;
        (*job_)(tid, n_threads_);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

void ThreadPool::split(int64_t n, int tid, int nth, int64_t align, int64_t& begin, int64_t& end) {
    const int64_t units = (n + align - 1) / align;
    const int64_t per = units / nth, extra = units % nth;
    const int64_t ub = tid * per + (tid < extra ? tid : extra);
    const int64_t ue = ub + per + (tid < extra ? 1 : 0);
    begin = ub * align < n ? ub * align : n;
    end = ue * align < n ? ue * align : n;
}

int physical_cores() {
    cpu_set_t set;
    int allowed = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) allowed = CPU_COUNT(&set);
    // Count distinct (package, core) pairs among the CPUs we may use: SMT siblings share a core.
    std::set<std::pair<int, int>> cores;
    for (int cpu = 0; cpu < CPU_SETSIZE && allowed > 0; ++cpu) {
        if (!CPU_ISSET(cpu, &set)) continue;
        std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
        std::ifstream c(base + "core_id"), p(base + "physical_package_id");
        int core = -1, pkg = -1;
        if (!(c >> core) || !(p >> pkg)) return allowed;  // no topology: trust the affinity count
        cores.insert({pkg, core});
    }
    if (!cores.empty()) return int(cores.size());
    unsigned hw = std::thread::hardware_concurrency();
    return allowed > 0 ? allowed : (hw > 0 ? int(hw) : 1);
}

}  // namespace ll::cpu
