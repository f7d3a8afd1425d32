// The avx512bf16 kernel table: the avx512 table, with prefill on bf16 and FP8 weights through
// vdpbf16ps.
// Built with its own -m flags (CMakeLists.txt); reached only through kernels_for() after CPUID
// says the CPU has AVX512-BF16.
#include "vec_avx512_bf16.h"
#include "kernels_impl.h"

namespace ll::cpu {

const Kernels& kernels_avx512_bf16() {
    static const Kernels table = [] {
        Kernels k = kernels_avx512();
        k.isa = Isa::AVX512_BF16;
        k.name = "avx512bf16";
        k.bf16_matmul = bf16_matmul<VecAvx512Bf16>;
        k.fp8_matmul = fp8_matmul<VecAvx512Bf16>;
        return k;
    }();
    return table;
}

}  // namespace ll::cpu
