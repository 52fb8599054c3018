// Python entry points of the batched_solve kernels.
#include "common/binding_utils.h"

namespace smplfast {
void bind_batched_solve(pybind11::module_& m) { (void)m; }
}  // namespace smplfast
