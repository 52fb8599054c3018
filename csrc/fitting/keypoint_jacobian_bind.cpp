// Python entry points of the keypoint_jacobian kernels.
#include "common/binding_utils.h"

namespace smplfast {
void bind_keypoint_jacobian(pybind11::module_& m) { (void)m; }
}  // namespace smplfast
