// CPUID dispatch: which kernel table this machine runs.
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels.h"

#if defined(LL_HAVE_NEON_KERNELS) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace ll::cpu {

bool isa_supported(Isa isa) {
    switch (isa) {
        case Isa::Scalar: return true;
#if defined(LL_HAVE_X86_KERNELS)
        // libgcc's __builtin_cpu_supports also checks XCR0, i.e. that the OS saves the registers.
        case Isa::AVX2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                   __builtin_cpu_supports("f16c");
        case Isa::AVX512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                   __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("fma") &&
                   __builtin_cpu_supports("f16c");
        case Isa::AVX512_BF16:
            return isa_supported(Isa::AVX512) && __builtin_cpu_supports("avx512bf16");
#endif
#if defined(LL_HAVE_NEON_KERNELS)
        case Isa::NEON:
#if defined(__linux__)
            return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
            return true;  // macOS on Apple silicon: every such CPU has the dot product
#endif
#endif
        default: return false;
    }
}

Isa best_isa() {
    if (isa_supported(Isa::NEON)) return Isa::NEON;
    if (isa_supported(Isa::AVX512_BF16)) return Isa::AVX512_BF16;
    if (isa_supported(Isa::AVX512)) return Isa::AVX512;
    if (isa_supported(Isa::AVX2)) return Isa::AVX2;
    return Isa::Scalar;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::Scalar: return "scalar";
        case Isa::AVX2: return "avx2";
        case Isa::AVX512: return "avx512";
        case Isa::AVX512_BF16: return "avx512bf16";
        case Isa::NEON: return "neon";
    }
    return "?";
}

Isa parse_isa(const char* name) {
    for (int i = 0; i < kNumIsas; ++i)
        if (std::strcmp(name, isa_name(Isa(i))) == 0) return Isa(i);
    throw std::invalid_argument(std::string("unknown ISA '") + name +
                                "' (expected scalar, avx2, avx512, avx512bf16 or neon)");
}

const Kernels& kernels_for(Isa isa) {
    if (!isa_supported(isa))
        throw std::invalid_argument(std::string("ISA '") + isa_name(isa) +
                                    "' is not supported by this CPU or build");
    switch (isa) {
#if defined(LL_HAVE_X86_KERNELS)
        case Isa::AVX2: return kernels_avx2();
        case Isa::AVX512: return kernels_avx512();
        case Isa::AVX512_BF16: return kernels_avx512_bf16();
#endif
#if defined(LL_HAVE_NEON_KERNELS)
        case Isa::NEON: return kernels_neon();
#endif
        default: return kernels_scalar();
    }
}

Isa default_isa() {
    const char* env = std::getenv("LLAMA_LOCAL_ISA");
    if (env && *env) {
        Isa isa = parse_isa(env);
        if (!isa_supported(isa))
            throw std::invalid_argument(std::string("LLAMA_LOCAL_ISA=") + env +
                                        ": this CPU or build does not support it");
        return isa;
    }
    return best_isa();
}

}  // namespace ll::cpu
