#include "thread_pool.h"

#include <sched.h>

#include <cstdio>
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
constexpr int kWorkerSpins = 20000;  // ~0.2-1 ms of polling before a worker sleeps
constexpr int kWaitSpins = 2000;     // then the waiting caller yields its core between polls

// Spin, then yield: a waiter on an oversubscribed machine must give the core back to the
// thread it is waiting for.
template <class Done>
void wait_until(Done done) {
    for (int i = 0; !done(); ++i) {
        if (i < kWaitSpins)
            LL_CPU_RELAX();
        else
            sched_yield();
    }
}
}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(n_threads < 1 ? 1 : n_threads) {
    for (int t = 1; t < n_threads_; ++t) threads_.emplace_back([this] { worker(); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true);
        state_.fetch_add(1ull << 32);
    }
    wake_.notify_all();
    for (auto& th : threads_) th.join();
}

void ThreadPool::work_on_chunks() {
    for (int c = next_chunk_.fetch_add(1, std::memory_order_relaxed); c < n_chunks_;
         c = next_chunk_.fetch_add(1, std::memory_order_relaxed)) {
        (*job_)(c, n_chunks_);
        chunks_done_.fetch_add(1, std::memory_order_release);
    }
}

void ThreadPool::run(int n_chunks, const Job& fn) {
    if (n_chunks <= 0) return;
    if (n_threads_ == 1 || n_chunks == 1) {
        for (int c = 0; c < n_chunks; ++c) fn(c, n_chunks);
        return;
    }
    job_ = &fn;
    n_chunks_ = n_chunks;
    next_chunk_.store(0, std::memory_order_relaxed);
    chunks_done_.store(0, std::memory_order_relaxed);
    {
        // The lock orders the new generation against a worker deciding to sleep.
        std::lock_guard<std::mutex> lock(mutex_);
        const uint64_t gen = (state_.load(std::memory_order_relaxed) >> 32) + 1;
        state_.store(gen << 32, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    work_on_chunks();
    wait_until([&] { return chunks_done_.load(std::memory_order_acquire) == n_chunks; });
    state_.fetch_or(kClosed, std::memory_order_acq_rel);
    wait_until([&] { return (state_.load(std::memory_order_acquire) & kActiveMask) == 0; });
    job_ = nullptr;
}

void ThreadPool::worker() {
    uint64_t seen_gen = 0;
    for (;;) {
        uint64_t s = state_.load(std::memory_order_acquire);
        for (int spin = 0; (s >> 32) == seen_gen && spin < kWorkerSpins; ++spin) {
            LL_CPU_RELAX();
            s = state_.load(std::memory_order_acquire);
        }
        if ((s >> 32) == seen_gen) {
            std::unique_lock<std::mutex> lock(mutex_);
            sleepers_.fetch_add(1);
            wake_.wait(lock, [&] { return (state_.load() >> 32) != seen_gen; });
            sleepers_.fetch_sub(1);
            s = state_.load();
        }
        seen_gen = s >> 32;
        if (stop_.load()) return;
        // Enter the job only while it is still open (the caller may have finished it alone).
        bool entered = false;
        while ((s >> 32) == seen_gen && !(s & kClosed)) {
            if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
                entered = true;
                break;
            }
        }
        if (!entered) continue;
        work_on_chunks();
        state_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

void ThreadPool::split(int64_t n, int part, int nparts, int64_t align, int64_t& begin, int64_t& end) {
    const int64_t units = (n + align - 1) / align;
    const int64_t per = units / nparts, extra = units % nparts;
    const int64_t ub = part * per + (part < extra ? part : extra);
    const int64_t ue = ub + per + (part < extra ? 1 : 0);
    begin = ub * align < n ? ub * align : n;
    end = ue * align < n ? ue * align : n;
}

namespace {
// C stdio rather than <fstream>: iostreams go through libstdc++'s locale facets, which crashed
// in operator>> when a toolchain linked libstdc++ into _core statically and exported it (see
// CMakeLists.txt, --exclude-libs). Reading one integer from sysfs needs none of that machinery.
bool read_int(const std::string& path, int* value) {
    std::FILE* f = std::fopen(path.c_str(), "r");
    if (!f) return false;
    bool ok = std::fscanf(f, "%d", value) == 1;
    std::fclose(f);
    return ok;
}
}  // namespace

int physical_cores() {
    cpu_set_t set;
    int allowed = 0;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) allowed = CPU_COUNT(&set);
    // Count distinct (package, core) pairs among the CPUs we may use: SMT siblings share a core.
    std::set<std::pair<int, int>> cores;
    for (int cpu = 0; cpu < CPU_SETSIZE && allowed > 0; ++cpu) {
        if (!CPU_ISSET(cpu, &set)) continue;
        std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
        int core = -1, pkg = -1;
        if (!read_int(base + "core_id", &core) || !read_int(base + "physical_package_id", &pkg))
            return allowed;  // no topology: trust the affinity count
        cores.insert({pkg, core});
    }
    if (!cores.empty()) return int(cores.size());
    unsigned hw = std::thread::hardware_concurrency();
    return allowed > 0 ? allowed : (hw > 0 ? int(hw) : 1);
}

}  // namespace ll::cpu
