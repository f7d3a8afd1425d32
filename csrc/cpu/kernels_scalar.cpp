// The scalar kernel table.
#include "vec_scalar.h"
#include "kernels_impl.h"

namespace ll::cpu {

const Kernels& kernels_scalar() {
    static const Kernels table = make_kernels<VecScalar>(Isa::Scalar, "scalar");
    return table;
}

}  // namespace ll::cpu
