// Owned, zero-initialised, 64-byte aligned memory for repacked weights.
//
// Large buffers come straight from the OS (zero pages, 2 MiB aligned) and ask for transparent huge
// pages: a decode step streams every weight byte, and 2 MiB pages spare the TLB misses of 4 KiB
// ones on that stream.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define LL_HAVE_MMAP 1
#endif

namespace ll {

class AlignedBuffer {
public:
    AlignedBuffer() = default;
    explicit AlignedBuffer(size_t bytes) : size_(bytes) {
        if (bytes == 0) return;
#if defined(LL_HAVE_MMAP)
        if (bytes >= kMmapThreshold) {
            const size_t huge = size_t(2) << 20;
            // Over-allocate by one huge page and trim, so the buffer starts on a 2 MiB boundary.
            size_t len = bytes + huge;
            void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED) throw std::bad_alloc();
            uintptr_t a = reinterpret_cast<uintptr_t>(p);
            uintptr_t start = (a + huge - 1) & ~uintptr_t(huge - 1);
            if (start > a) munmap(p, start - a);
            const size_t keep = (bytes + 4095) & ~size_t(4095);
            const uintptr_t end = a + len;
            if (start + keep < end) munmap(reinterpret_cast<void*>(start + keep), end - start - keep);
#if defined(MADV_HUGEPAGE)
            madvise(reinterpret_cast<void*>(start), keep, MADV_HUGEPAGE);
#endif
            p_ = reinterpret_cast<uint8_t*>(start);
            mapped_ = keep;
            return;
        }
#endif
        void* p = nullptr;
        if (posix_memalign(&p, 64, (bytes + 63) & ~size_t(63)) != 0) throw std::bad_alloc();
        std::memset(p, 0, bytes);
        p_ = static_cast<uint8_t*>(p);
    }
    ~AlignedBuffer() { reset(); }
    AlignedBuffer(AlignedBuffer&& o) noexcept { swap(o); }
    AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
        if (this != &o) {
            reset();
            swap(o);
        }
        return *this;
    }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;

    uint8_t* get() { return p_; }
    const uint8_t* get() const { return p_; }
    size_t size() const { return size_; }

private:
    static constexpr size_t kMmapThreshold = size_t(1) << 20;
    void reset() {
        if (!p_) return;
#if defined(LL_HAVE_MMAP)
        if (mapped_) munmap(p_, mapped_);
        else std::free(p_);
#else
        std::free(p_);
#endif
        p_ = nullptr;
        size_ = mapped_ = 0;
    }
    void swap(AlignedBuffer& o) noexcept {
        std::swap(p_, o.p_);
        std::swap(size_, o.size_);
        std::swap(mapped_, o.mapped_);
    }
    uint8_t* p_ = nullptr;
    size_t size_ = 0;
    size_t mapped_ = 0;
};

}  // namespace ll
