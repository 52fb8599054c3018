// Python entry points of the soft silhouette (raw pointers from smplfast/ops/soft_silhouette.py, which
// validates shapes, dtypes, devices and index values and allocates every buffer).
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/binding_utils.h"
#include "softras/soft_silhouette.h"

namespace smplfast {

namespace {

using namespace smplfast::bind;

// The wrapper validates; this only guards the kernels' own assumptions.
SoftSilhouetteArgs soft_args(const char* op, int64_t B, int64_t V, int64_t F, int64_t H, int64_t W, double sigma,
                             double cutoff_d2, uintptr_t verts, uintptr_t faces) {
  if (B < 0 || V < 0 || F < 0 || H < 0 || W < 0 || !(sigma > 0) || !std::isfinite(sigma) || !(cutoff_d2 >= 0))
    throw std::invalid_argument(std::string(op) +
                                ": need B, V, F, H, W >= 0, finite sigma > 0 and cutoff_d2 >= 0; got B " +
                                std::to_string(B) + ", V " + std::to_string(V) + ", F " + std::to_string(F) + ", H " +
                                std::to_string(H) + ", W " + std::to_string(W) + ", sigma " + std::to_string(sigma) +
                                ", cutoff_d2 " + std::to_string(cutoff_d2));
  SoftSilhouetteArgs a{};
  a.batch = B;
  a.num_vertices = V;
  a.num_faces = F;
  a.height = H;
  a.width = W;
  a.sigma = sigma;
  a.cutoff_d2 = cutoff_d2;
  a.verts = vptr(verts);
  a.faces = cptr<int64_t>(faces);
  return a;
}

}  // namespace

void bind_soft_silhouette(pybind11::module_& m) {
  m.def("soft_silhouette_forward", [](const Target& t, int dtype, int64_t B, int64_t V, int64_t F, int64_t H,
                                      int64_t W, double sigma, double cutoff_d2, uintptr_t verts, uintptr_t faces,
                                      uintptr_t big, uintptr_t alpha, uintptr_t transmittance) {
    SoftSilhouetteArgs a = soft_args("soft_silhouette_forward", B, V, F, H, W, sigma, cutoff_d2, verts, faces);
    a.big = reinterpret_cast<int64_t*>(big);
    a.alpha = mptr(alpha);
    a.transmittance = mptr(transmittance);
    run(t, dtype, a, soft_silhouette_forward_cpu, SF_CUDA_FN(soft_silhouette_forward), "soft_silhouette");
  });
  // grad_verts is fully written. grad_faces: the CPU workspace (0 on CUDA); big: the CUDA one (0 on CPU).
  m.def("soft_silhouette_backward", [](const Target& t, int dtype, int64_t B, int64_t V, int64_t F, int64_t H,
                                       int64_t W, double sigma, double cutoff_d2, uintptr_t verts, uintptr_t faces,
                                       uintptr_t transmittance, uintptr_t grad_alpha, uintptr_t big,
                                       uintptr_t grad_faces, uintptr_t grad_verts) {
    SoftSilhouetteArgs a = soft_args("soft_silhouette_backward", B, V, F, H, W, sigma, cutoff_d2, verts, faces);
    a.transmittance = mptr(transmittance);
    a.grad_alpha = vptr(grad_alpha);
    a.big = reinterpret_cast<int64_t*>(big);
    a.grad_faces = mptr(grad_faces);
    a.grad_verts = mptr(grad_verts);
    run(t, dtype, a, soft_silhouette_backward_cpu, SF_CUDA_FN(soft_silhouette_backward), "soft_silhouette_backward");
  });
}

}  // namespace smplfast
