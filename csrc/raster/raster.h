// Batched z-buffer triangle rasterizer: for B images of one triangle mesh seen by pinhole cameras,
// the visible face per pixel, its perspective-correct barycentric weights and the camera depth.
//
// Inputs (contiguous, allocated by the caller):
//   vertices[B,V,3] (T = float or double) in camera coordinates (x right, y down, z forward)
//   faces[F,3] int64 in [0, V) (shared by the batch; validated by the caller)
//   focal[B,2], center[B,2] float64, pixels; near > 0
// CUDA workspace (allocated by the caller with torch; nullptr on the CPU, which keeps its own):
//   proj[B,V,4] float64: per vertex (u, v, Z, 1/Z), u = f_x (X/Z) + c_x, v = f_y (Y/Z) + c_y
//   big[1 + B*F] int64: a counter, then the (b*F + f) of faces whose bounding box is too large for
//     one thread
// Outputs:
//   face_index[B,H,W] int64 (-1: background), bary[B,H,W,3] T, depth[B,H,W] T (zeros on background).
//   face_index first serves as the z-buffer: (float32 bits of depth) << 32 | face as uint64, all
//   ones when empty; the resolve pass overwrites each word with the face it names.
//
// Maths (raster_math.h; smplfast/ops/rasterize.py documents the rule and holds its reference):
// pixel (i, j) is sampled at p = (j + 0.5, i + 0.5); edge functions relative to p,
//   E(a, b, p) = (a_u - p_u)(b_v - p_v) - (a_v - p_v)(b_u - p_u),  w_k = E(v_{k+1}, v_{k+2}, p),
// are exactly antisymmetric in (a, b) in IEEE double (the same two products, subtracted in the other
// order), so faces sharing an edge decide a pixel on it consistently; E = 0 is resolved as if p were
// moved by (eps, eps^2). Faces with a vertex at Z < near, a non-finite projection or zero projected
// area are skipped. The depth z = sum_k w_k / sum_k (w_k / Z_k); the z-buffer keeps the smallest
// (float32(z), face). Every floating-point operation of the coverage and depth maths is a correctly
// rounded IEEE double operation in a fixed order (no contraction into FMAs), so the CPU, CUDA and
// the PyTorch reference agree bit for bit on coverage and on the z-buffer keys.
#pragma once

#include <cstdint>

#include "common/macros.h"

namespace smplfast {

struct RasterArgs {
  int64_t batch;
  int64_t num_vertices;
  int64_t num_faces;
  int64_t height;
  int64_t width;
  double near;
  const void* vertices;
  const int64_t* faces;
  const double* focal;
  const double* center;
  double* proj;
  int64_t* big;
  int64_t* face_index;
  void* bary;
  void* depth;
};

void rasterize_cpu(DType dtype, const RasterArgs& a);

#ifdef SMPLFAST_WITH_CUDA
void rasterize_cuda(DType dtype, const RasterArgs& a, int device, void* stream);
#endif

}  // namespace smplfast
