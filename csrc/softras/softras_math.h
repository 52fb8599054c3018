// Per-face and per-pixel maths of the soft silhouette, shared by the CPU and CUDA kernels (see
// soft_silhouette.h for the rule; smplfast/ops/soft_silhouette.py holds the PyTorch reference, which
// runs the same operations in the same order in the vertices' dtype).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/exact_math.h"
#include "common/macros.h"
#include "raster/raster_math.h"

#if defined(__CUDACC__)
#define SF_UNROLL3 _Pragma("unroll")
#else
#define SF_UNROLL3 _Pragma("GCC unroll 3")
#endif

namespace smplfast {
namespace softras {

using std::isfinite;

SF_HD float exp_(float x) { return expf(x); }
SF_HD double exp_(double x) { return exp(x); }
SF_HD float log1p_(float x) { return log1pf(x); }
SF_HD double log1p_(double x) { return log1p(x); }
SF_HD float expm1_(float x) { return expm1f(x); }
SF_HD double expm1_(double x) { return expm1(x); }

// softplus(s) = log(1 + e^s) = -log(1 - sigmoid(s)), without overflow.
template <typename T>
SF_HD T softplus(T s) {
  const T m = s > T(0) ? s : T(0);
  return m + log1p_(exp_(s > T(0) ? -s : s));
}

template <typename T>
SF_HD T min_(T a, T b) { return b < a ? b : a; }
template <typename T>
SF_HD T max_(T a, T b) { return a < b ? b : a; }

// 1 / (1 + e^-s) without overflow (one exp, no branch).
template <typename T>
SF_HD T sigmoid(T s) {
  const T e = exp_(s > T(0) ? -s : s);
  return (s >= T(0) ? T(1) : e) / (T(1) + e);
}

// A face ready to scan. Edge k runs from corner a = (k + 1) % 3 to corner b = (k + 2) % 3 (opposite
// corner k).
template <typename T>
struct Face {
  T u[3], v[3];
  T ex[3], ey[3];   // b - a
  T inv_len2[3];    // 1 / |b - a|^2 (0 for a zero-length edge)
  T box[4];         // umin, umax, vmin, vmax
  T margin2;        // squared window margin (pixels^2; +inf without cutoff)
  int64_t x0, x1, y0, y1;  // inclusive pixel window
};

template <typename T>
SF_HD double epsilon_of();
template <>
SF_HD double epsilon_of<float>() { return 1.1920928955078125e-07; }
template <>
SF_HD double epsilon_of<double>() { return 2.220446049250313e-16; }

// Loads face (i0, i1, i2) from one image's vertices ((u, v) pairs) of a height x width image.
// Returns false when the face has zero or non-finite signed area, or when its window has no pixel in
// rows [row_begin, row_end) x [0, width). The window holds the pixel centres within `reach` =
// sqrt(cutoff_d2) (+inf: every pixel) of the face's bounding box, plus a slack that covers the
// rounding of d^2 in T, so every pixel whose computed d^2 passes the cutoff test is in it (the
// per-pixel test then decides exactly).
template <typename T>
SF_HD bool setup_face(const T* verts, int64_t i0, int64_t i1, int64_t i2, int64_t width, int64_t height,
                      int64_t row_begin, int64_t row_end, double reach, Face<T>& f) {
  const int64_t idx[3] = {i0, i1, i2};
  for (int k = 0; k < 3; ++k) {
    f.u[k] = verts[2 * idx[k]];
    f.v[k] = verts[2 * idx[k] + 1];
  }
  // Signed area (times 2) as the reference forms it: no FMA contraction, so == 0 is decided alike.
  const T area = sub_rn(mul_rn(sub_rn(f.u[0], f.u[2]), sub_rn(f.v[1], f.v[2])),
                        mul_rn(sub_rn(f.v[0], f.v[2]), sub_rn(f.u[1], f.u[2])));
  if (area == T(0) || !isfinite(area)) return false;
  const double vmin = raster::min3(f.v[0], f.v[1], f.v[2]), vmax = raster::max3(f.v[0], f.v[1], f.v[2]);
  const double umin = raster::min3(f.u[0], f.u[1], f.u[2]), umax = raster::max3(f.u[0], f.u[1], f.u[2]);
  const double scale = raster::max3(raster::max3(fabs(umin), fabs(umax), fabs(vmin)), fabs(vmax),
                                    static_cast<double>(width > height ? width : height));
  const double margin = reach + 1e-3 + 64.0 * epsilon_of<T>() * (scale + reach);
  f.margin2 = static_cast<T>(margin * margin);
  f.box[0] = static_cast<T>(umin);
  f.box[1] = static_cast<T>(umax);
  f.box[2] = static_cast<T>(vmin);
  f.box[3] = static_cast<T>(vmax);
  f.y0 = raster::ceil_clamped(vmin - margin - 0.5, row_begin, row_end - 1);
  f.y1 = raster::floor_clamped(vmax + margin - 0.5, row_begin, row_end - 1);
  if (f.y0 > f.y1) return false;
  f.x0 = raster::ceil_clamped(umin - margin - 0.5, 0, width - 1);
  f.x1 = raster::floor_clamped(umax + margin - 0.5, 0, width - 1);
  if (f.x0 > f.x1) return false;
  for (int k = 0; k < 3; ++k) {
    const int a = (k + 1) % 3, b = (k + 2) % 3;
    f.ex[k] = f.u[b] - f.u[a];
    f.ey[k] = f.v[b] - f.v[a];
    const T len2 = f.ex[k] * f.ex[k] + f.ey[k] * f.ey[k];
    f.inv_len2[k] = len2 > T(0) ? T(1) / len2 : T(0);
  }
  return true;
}

// False when pixel centre p lies farther than the window margin from the face's bounding box, where
// d^2 > cutoff_d2 for sure (the margin covers rounding): a cheap test before distance2().
template <typename T>
SF_HD bool near_box(const Face<T>& f, T pu, T pv) {
  const T dx = max_(max_(f.box[0] - pu, pu - f.box[1]), T(0));
  const T dy = max_(max_(f.box[2] - pv, pv - f.box[3]), T(0));
  return dx * dx + dy * dy <= f.margin2;
}

// Where the pixel centre p lies relative to a face: the squared distance to the closed triangle's
// boundary (d2), the edge holding the nearest boundary point (first edge on ties), its parameter t on
// that edge and q = p - nearest point, and whether p is inside (the three edge cross products share a
// sign, zeros counting as either).
template <typename T>
struct PixelHit {
  T d2, t, qx, qy;
  int edge;
  bool inside;
};

template <typename T>
SF_HD void locate(const Face<T>& f, T pu, T pv, PixelHit<T>& h) {
  T cmin = T(0), cmax = T(0);
SF_UNROLL3
  for (int k = 0; k < 3; ++k) {
    const int a = (k + 1) % 3;
    const T dx = pu - f.u[a], dy = pv - f.v[a];
    const T cross = f.ex[k] * dy - f.ey[k] * dx;
    cmin = k == 0 ? cross : min_(cmin, cross);
    cmax = k == 0 ? cross : max_(cmax, cross);
    const T t = min_(max_((dx * f.ex[k] + dy * f.ey[k]) * f.inv_len2[k], T(0)), T(1));
    const T qx = dx - t * f.ex[k], qy = dy - t * f.ey[k];
    const T d2 = qx * qx + qy * qy;
    if (k == 0 || d2 < h.d2) {
      h.d2 = d2;
      h.t = t;
      h.qx = qx;
      h.qy = qy;
      h.edge = k;
    }
  }
  h.inside = cmin >= T(0) || cmax <= T(0);
}

// The d2 and inside of locate() alone (what the forward needs), branch-free.
template <typename T>
SF_HD T distance2(const Face<T>& f, T pu, T pv, bool* inside) {
  T d2 = T(0), cmin = T(0), cmax = T(0);
SF_UNROLL3
  for (int k = 0; k < 3; ++k) {
    const int a = (k + 1) % 3;
    const T dx = pu - f.u[a], dy = pv - f.v[a];
    const T cross = f.ex[k] * dy - f.ey[k] * dx;
    const T t = min_(max_((dx * f.ex[k] + dy * f.ey[k]) * f.inv_len2[k], T(0)), T(1));
    const T qx = dx - t * f.ex[k], qy = dy - t * f.ey[k];
    const T d = qx * qx + qy * qy;
    d2 = k == 0 ? d : min_(d2, d);
    cmin = k == 0 ? cross : min_(cmin, cross);
    cmax = k == 0 ? cross : max_(cmax, cross);
  }
  *inside = (cmin >= T(0)) | (cmax <= T(0));
  return d2;
}

// s = +-d^2 / sigma when the face takes part at p (inside, or d^2 <= cutoff), else false.
template <typename T>
SF_HD bool scaled_distance(T d2, bool inside, T inv_sigma, T cutoff_d2, T* s) {
  if (!inside && !(d2 <= cutoff_d2)) return false;
  const T x = d2 * inv_sigma;
  *s = inside ? x : -x;
  return true;
}

// Adds c * d(d^2)/d(corners) to g[3][2] for the nearest edge of h: with the nearest point
// n = a + t (b - a) and q = p - n, d(d^2)/da = -2 (1 - t) q and d(d^2)/db = -2 t q (t's own derivative
// drops out: q is orthogonal to the edge when 0 < t < 1, and t is constant where it is clamped).
template <typename T>
SF_HD void add_distance_grad(const PixelHit<T>& h, T c, T* g) {
  const int a = (h.edge + 1) % 3, b = (h.edge + 2) % 3;
  const T ca = T(-2) * c * (T(1) - h.t), cb = T(-2) * c * h.t;
  // Fixed indices (the edge only selects weights), so g stays in registers on the GPU.
  for (int k = 0; k < 3; ++k) {
    const T wk = k == a ? ca : (k == b ? cb : T(0));
    g[2 * k] += wk * h.qx;
    g[2 * k + 1] += wk * h.qy;
  }
}

// How far (pixels) a face reaches outside itself: sqrt(cutoff_d2), +inf for no cutoff.
inline double window_reach(double cutoff_d2) { return std::isinf(cutoff_d2) ? cutoff_d2 : std::sqrt(cutoff_d2); }

}  // namespace softras
}  // namespace smplfast
