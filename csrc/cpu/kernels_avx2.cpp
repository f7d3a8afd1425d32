// The avx2 kernel table. Built with its own -m flags (CMakeLists.txt); reached only
// through kernels_for() after CPUID says the CPU has it.
#include "vec_avx2.h"
#include "kernels_impl.h"

namespace ll::cpu {

const Kernels& kernels_avx2() {
    static const Kernels table = make_kernels<VecAvx2>(Isa::AVX2, "avx2");
    return table;
}

}  // namespace ll::cpu
