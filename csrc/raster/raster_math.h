// Per-vertex, per-face and per-pixel maths of the rasterizer, shared by the CPU and CUDA kernels
// (see raster.h for the rule). All arithmetic goes through the *_rn helpers of common/exact_math.h
// (never fused into FMAs; the CPU file is compiled with -ffp-contract=off). That keeps
// E(a, b, p) == -E(b, a, p) exactly and the results reproducible.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "common/exact_math.h"
#include "common/macros.h"

namespace smplfast {
namespace raster {

constexpr uint64_t kEmptyKey = ~uint64_t(0);

using std::isfinite;

// (u, v, Z, 1/Z) of one camera-space vertex.
SF_HD void project_vertex(double X, double Y, double Z, double fx, double fy, double cx, double cy, double* out) {
  out[0] = add_rn(mul_rn(fx, div_rn(X, Z)), cx);
  out[1] = add_rn(mul_rn(fy, div_rn(Y, Z)), cy);
  out[2] = Z;
  out[3] = div_rn(1.0, Z);
}

// A face ready to scan: projected corners, 1/Z, tie signs of its edges and its pixel bounding box.
struct Face {
  double u[3], v[3], iz[3];
  double tie[3];        // sign of E(v_{k+1}, v_{k+2}, p + (eps, eps^2)) when E(...) == 0
  int64_t x0, x1, y0, y1;  // inclusive pixel ranges whose centres lie in the closed bounding box
};

SF_HD double sign_of(double x) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0); }

// First integer >= x and last integer <= x, clamped to [lo, hi] (an empty range when x lies beyond
// it); x finite, lo >= 0. Integer conversions instead of ceil/floor/fmin: no libm calls on the CPU.
SF_HD int64_t ceil_clamped(double x, int64_t lo, int64_t hi) {
  if (x <= static_cast<double>(lo)) return lo;
  if (x > static_cast<double>(hi)) return hi + 1;
  const int64_t i = static_cast<int64_t>(x);  // x > lo >= 0: truncation is floor
  return static_cast<double>(i) < x ? i + 1 : i;
}
SF_HD int64_t floor_clamped(double x, int64_t lo, int64_t hi) {
  if (x >= static_cast<double>(hi)) return hi;
  if (x < static_cast<double>(lo)) return lo - 1;
  return static_cast<int64_t>(x);  // x >= lo >= 0
}
SF_HD double min3(double a, double b, double c) { return a < b ? (a < c ? a : c) : (b < c ? b : c); }
SF_HD double max3(double a, double b, double c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

// Loads face (i0, i1, i2) from one image's projected vertices (4 doubles each). Returns false when the
// face is culled (a vertex at Z < near, a non-finite projection, zero area) or has no pixel centre
// of rows [row_begin, row_end) x [0, width) in its bounding box.
SF_HD bool setup_face(const double* proj, int64_t i0, int64_t i1, int64_t i2, int64_t width, int64_t row_begin,
                      int64_t row_end, double near, Face& f) {
  const double* p0 = proj + 4 * i0;
  const double* p1 = proj + 4 * i1;
  const double* p2 = proj + 4 * i2;
  if (!(p0[2] >= near && p1[2] >= near && p2[2] >= near)) return false;
  f.v[0] = p0[1];
  f.v[1] = p1[1];
  f.v[2] = p2[1];
  if (!isfinite(f.v[0]) || !isfinite(f.v[1]) || !isfinite(f.v[2])) return false;
  // Rows i with i + 0.5 in [vmin, vmax]: i in [ceil(vmin - 0.5), floor(vmax - 0.5)] (the subtraction is
  // exact while |v| < 2^52; beyond that the clamp to the image decides the same way).
  f.y0 = ceil_clamped(sub_rn(min3(f.v[0], f.v[1], f.v[2]), 0.5), row_begin, row_end - 1);
  f.y1 = floor_clamped(sub_rn(max3(f.v[0], f.v[1], f.v[2]), 0.5), row_begin, row_end - 1);
  if (f.y0 > f.y1) return false;
  f.u[0] = p0[0];
  f.u[1] = p1[0];
  f.u[2] = p2[0];
  if (!isfinite(f.u[0]) || !isfinite(f.u[1]) || !isfinite(f.u[2])) return false;
  f.x0 = ceil_clamped(sub_rn(min3(f.u[0], f.u[1], f.u[2]), 0.5), 0, width - 1);
  f.x1 = floor_clamped(sub_rn(max3(f.u[0], f.u[1], f.u[2]), 0.5), 0, width - 1);
  if (f.x0 > f.x1) return false;
  const double area = sub_rn(mul_rn(sub_rn(f.u[0], f.u[2]), sub_rn(f.v[1], f.v[2])),
                             mul_rn(sub_rn(f.v[0], f.v[2]), sub_rn(f.u[1], f.u[2])));
  if (area == 0.0 || !isfinite(area)) return false;
  f.iz[0] = p0[3];
  f.iz[1] = p1[3];
  f.iz[2] = p2[3];
  for (int k = 0; k < 3; ++k) {
    const int a = (k + 1) % 3, b = (k + 2) % 3;
    // E is linear in p with gradient (a_v - b_v, b_u - a_u).
    const double s = sign_of(sub_rn(f.v[a], f.v[b]));
    f.tie[k] = s != 0.0 ? s : sign_of(sub_rn(f.u[b], f.u[a]));
  }
  return true;
}

// Edge values w_k = E(v_{k+1}, v_{k+2}, p) at pixel centre (pu, pv).
SF_HD void edge_values(const Face& f, double pu, double pv, double* w) {
  double dx[3], dy[3];
  for (int k = 0; k < 3; ++k) {
    dx[k] = sub_rn(f.u[k], pu);
    dy[k] = sub_rn(f.v[k], pv);
  }
  for (int k = 0; k < 3; ++k) {
    const int a = (k + 1) % 3, b = (k + 2) % 3;
    w[k] = sub_rn(mul_rn(dx[a], dy[b]), mul_rn(dy[a], dx[b]));
  }
}

// True when the face covers the pixel centre whose edge values are w (tie-resolved signs all equal
// and a finite, non-zero sum); *total receives w0 + w1 + w2.
SF_HD bool covers(const Face& f, const double* w, double* total) {
  double s[3];
  for (int k = 0; k < 3; ++k) s[k] = w[k] > 0 ? 1.0 : (w[k] < 0 ? -1.0 : f.tie[k]);
  if (s[0] != s[1] || s[1] != s[2]) return false;
  *total = add_rn(add_rn(w[0], w[1]), w[2]);
  return *total != 0.0 && isfinite(*total);
}

// sum_k w_k / Z_k, the denominator of the perspective-correct weights.
SF_HD double inverse_depth_sum(const Face& f, const double* w) {
  return add_rn(add_rn(mul_rn(w[0], f.iz[0]), mul_rn(w[1], f.iz[1])), mul_rn(w[2], f.iz[2]));
}

// The z-buffer word: float32 depth bits (depth > 0, so they order like the values) above the face.
SF_HD uint64_t depth_key(double z, int64_t face) {
  const float zf = to_float_rn(z);
  uint32_t bits;
#ifdef __CUDA_ARCH__
  bits = static_cast<uint32_t>(__float_as_uint(zf));
#else
  std::memcpy(&bits, &zf, sizeof(bits));
#endif
  return (static_cast<uint64_t>(bits) << 32) | static_cast<uint64_t>(static_cast<uint32_t>(face));
}

// Perspective-correct barycentrics and depth of the winning face at a pixel centre.
template <typename T>
SF_HD void resolve_pixel(const Face& f, double pu, double pv, T* bary, T* depth) {
  double w[3];
  edge_values(f, pu, pv, w);
  const double total = add_rn(add_rn(w[0], w[1]), w[2]);
  const double a0 = mul_rn(w[0], f.iz[0]), a1 = mul_rn(w[1], f.iz[1]), a2 = mul_rn(w[2], f.iz[2]);
  const double den = add_rn(add_rn(a0, a1), a2);
  bary[0] = static_cast<T>(div_rn(a0, den));
  bary[1] = static_cast<T>(div_rn(a1, den));
  bary[2] = static_cast<T>(div_rn(a2, den));
  *depth = static_cast<T>(div_rn(total, den));
}

// Loads the corners of a face already known to be drawn (for the resolve pass: no culling tests).
SF_HD void load_face(const double* proj, int64_t i0, int64_t i1, int64_t i2, Face& f) {
  const int64_t idx[3] = {i0, i1, i2};
  for (int k = 0; k < 3; ++k) {
    const double* p = proj + 4 * idx[k];
    f.u[k] = p[0];
    f.v[k] = p[1];
    f.iz[k] = p[3];
  }
}

}  // namespace raster
}  // namespace smplfast
