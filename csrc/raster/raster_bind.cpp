// Python entry point of the rasterizer (raw pointers from smplfast/ops/rasterize.py, which validates
// shapes, dtypes, devices and index values and allocates every buffer).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/binding_utils.h"
#include "raster/raster.h"

namespace smplfast {

void bind_rasterize(pybind11::module_& m) {
  using namespace smplfast::bind;
  m.def("rasterize", [](const Target& t, int dtype, int64_t B, int64_t V, int64_t F, int64_t H, int64_t W,
                        double near, uintptr_t vertices, uintptr_t faces, uintptr_t focal, uintptr_t center,
                        uintptr_t proj, uintptr_t big, uintptr_t face_index, uintptr_t bary,
                        uintptr_t depth) {
    // The wrapper validates; this only guards the kernels' own assumptions.
    if (B < 0 || V < 0 || F < 0 || F > INT32_MAX - 1 || H < 0 || W < 0 || !(near > 0))
      throw std::invalid_argument("rasterize: need B, V, H, W >= 0, 0 <= F < 2^31 - 1 and near > 0; got B " +
                                  std::to_string(B) + ", V " + std::to_string(V) + ", F " + std::to_string(F) +
                                  ", H " + std::to_string(H) + ", W " + std::to_string(W));
    RasterArgs a{};
    a.batch = B;
    a.num_vertices = V;
    a.num_faces = F;
    a.height = H;
    a.width = W;
    a.near = near;
    a.vertices = vptr(vertices);
    a.faces = cptr<int64_t>(faces);
    a.focal = cptr<double>(focal);
    a.center = cptr<double>(center);
    a.proj = reinterpret_cast<double*>(proj);
    a.big = reinterpret_cast<int64_t*>(big);
    a.face_index = reinterpret_cast<int64_t*>(face_index);
    a.bary = mptr(bary);
    a.depth = mptr(depth);
    run(t, dtype, a, rasterize_cpu, SF_CUDA_FN(rasterize), "rasterize");
  });
}

}  // namespace smplfast
