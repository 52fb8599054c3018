// Soft silhouette (SoftRas-style coverage with gradients to the 2D vertex positions) of B images of
// one triangle mesh whose vertices are already projected to pixel coordinates.
//
// Inputs (contiguous, allocated and validated by the caller, smplfast/ops/soft_silhouette.py):
//   verts[B,V,2] (T = float or double): (u, v) pixel coordinates, pixel (i, j) has its centre at
//     (j + 0.5, i + 0.5); finite.
//   faces[F,3] int64 in [0, V) (shared by the batch).
//   sigma > 0 (pixels^2); cutoff_d2 >= 0 (pixels^2, +inf for none).
// Forward outputs:
//   alpha[B,H,W] T: A(p) = 1 - prod_f (1 - D_f(p)), D_f(p) = sigmoid(s_f(p)), s_f = +-d^2 / sigma
//     (+ inside the face, - outside), d the distance from the pixel centre to the triangle's boundary.
//   transmittance[B,H,W] T: prod_f (1 - D_f) = 1 - A, kept for the backward.
//   The CPU multiplies the factors 1 - D_f = sigmoid(-s_f) into each pixel's transmittance (one exp
//   per term; products that underflow to 0 mean A = 1 and a zero gradient, their true limits);
//   CUDA, which has no atomic product, sums L = sum_f softplus(s_f) = -sum_f log(1 - D_f) with
//   atomicAdd and sets A = -expm1(-L), exp(-L). Both equal the reference up to rounding.
// A face takes part at a pixel when the pixel centre is inside it or d^2 <= cutoff_d2; faces with
// zero (or non-finite) signed area take part nowhere.
// Backward (dA/ds_f = (1 - A) D_f, so no division by 1 - D_f is ever needed):
//   grad_alpha[B,H,W] T in, grad_verts[B,V,2] T out (fully written).
//   CPU workspace grad_faces[B,F,3,2] T (the per-face sums, scattered to the vertices in face order:
//   deterministic); nullptr on CUDA, which adds per-face sums into grad_verts with atomics.
//   CUDA workspace big[1 + B*F] int64: a counter, then the (b*F + f) of faces whose pixel window is too
//   large for one thread (scanned by a whole block instead); nullptr on the CPU.
// Maths shared by both kernels: softras_math.h.
#pragma once

#include <cstdint>

#include "common/macros.h"

namespace smplfast {

struct SoftSilhouetteArgs {
  int64_t batch;
  int64_t num_vertices;
  int64_t num_faces;
  int64_t height;
  int64_t width;
  double sigma;
  double cutoff_d2;
  const void* verts;
  const int64_t* faces;
  void* alpha;
  void* transmittance;
  const void* grad_alpha;
  void* grad_verts;
  void* grad_faces;
  int64_t* big;
};

void soft_silhouette_forward_cpu(DType dtype, const SoftSilhouetteArgs& a);
void soft_silhouette_backward_cpu(DType dtype, const SoftSilhouetteArgs& a);

#ifdef SMPLFAST_WITH_CUDA
void soft_silhouette_forward_cuda(DType dtype, const SoftSilhouetteArgs& a, int device, void* stream);
void soft_silhouette_backward_cuda(DType dtype, const SoftSilhouetteArgs& a, int device, void* stream);
#endif

}  // namespace smplfast
