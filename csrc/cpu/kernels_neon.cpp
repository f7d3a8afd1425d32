// The neon kernel table (AArch64, ARMv8.2-A + dotprod). Built with its own -march flags
// (CMakeLists.txt); reached only through kernels_for() after the OS says the CPU has the
// dot-product instructions.
#include "vec_neon.h"
#include "kernels_impl.h"

namespace ll::cpu {

const Kernels& kernels_neon() {
    static const Kernels table = make_kernels<VecNeon>(Isa::NEON, "neon");
    return table;
}

}  // namespace ll::cpu
