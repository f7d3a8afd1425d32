// The avx512 kernel table. Built with its own -m flags (CMakeLists.txt); reached only
// through kernels_for() after CPUID says the CPU has it.
#include "vec_avx512.h"
#include "kernels_impl.h"

namespace ll::cpu {

const Kernels& kernels_avx512() {
    static const Kernels table = make_kernels<VecAvx512>(Isa::AVX512, "avx512");
    return table;
}

}  // namespace ll::cpu
