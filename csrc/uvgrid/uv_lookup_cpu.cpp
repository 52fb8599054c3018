// OpenMP kernels of the UV-grid lookup (see uv_lookup.h for shapes and maths).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "uvgrid/uv_lookup.h"

namespace smplfast {
namespace {

using uvgrid::Stencil;

template <typename T>
struct View {
  const T* grid;
  const T* uv;
  const T* go;
  int64_t R, C, RR, RRC;
  explicit View(const UvLookupArgs& a)
      : grid(static_cast<const T*>(a.grid)),
        uv(static_cast<const T*>(a.uv)),
        go(static_cast<const T*>(a.grad_out)),
        R(a.res),
        C(a.channels),
        RR(a.res * a.res),
        RRC(a.res * a.res * a.channels) {}

  const uint8_t* valid_of(const UvLookupArgs& a, int64_t n) const {
    return a.valid ? a.valid + a.part[n] * RR : nullptr;
  }
  template <bool kGrad>
  void stencil(const UvLookupArgs& a, int64_t n, Stencil<T>& s) const {
    uvgrid::make_stencil<kGrad>(uv[2 * n], uv[2 * n + 1], R, valid_of(a, n), s);
  }
};

// CC: channel count fixed at compile time (3 for surface points), 0 = any.
template <typename T, int CC>
void forward_impl(const UvLookupArgs& a) {
  const View<T> v(a);
  T* out = static_cast<T*>(a.out);
#pragma omp parallel for schedule(static) if (a.points > 2048)
  for (int64_t n = 0; n < a.points; ++n) {
    Stencil<T> s;
    v.template stencil<false>(a, n, s);
    uvgrid::lookup_point<CC>(s, v.grid + uvgrid::slice_of(a, n) * v.RRC, v.C, out + n * v.C);
  }
}

// Adds one point's weighted grad_out row into its slice of grad_grid.
template <int CC, typename T>
inline void scatter_point(const Stencil<T>& s, const T* go, int64_t C_runtime, T* dst) {
  const int64_t C = CC > 0 ? CC : C_runtime;
  if (s.nearest >= 0) {
    for (int64_t c = 0; c < C; ++c) dst[s.nearest * C + c] += go[c];
    return;
  }
  for (int k = 0; k < 4; ++k) {
    if (!s.use[k]) continue;
    T* d = dst + s.cell[k] * C;
    for (int64_t c = 0; c < C; ++c) d[c] += s.w[k] * go[c];
  }
}

template <typename T, int CC>
void backward_impl(const UvLookupArgs& a) {
  const View<T> v(a);
  const int64_t N = a.points, S = a.groups * a.parts, C = v.C;
  T* gg = static_cast<T*>(a.grad_grid);
  T* guv = static_cast<T*>(a.grad_uv);
  if (gg == nullptr) {
    if (guv == nullptr) return;
#pragma omp parallel for schedule(static) if (N > 2048)
    for (int64_t n = 0; n < N; ++n) {
      Stencil<T> s;
      v.template stencil<true>(a, n, s);
      uvgrid::uv_grad_point<CC>(s, v.grid + uvgrid::slice_of(a, n) * v.RRC, C, v.go + n * C, guv + 2 * n);
    }
    return;
  }
  // Stable counting sort of the points by the (g, p) slice they touch, so that each slice of
  // grad_grid is written by exactly one thread, in increasing point order. The sort copies what
  // the reduction reads (u, v, grad_out) into slice order: the reduction then streams through
  // memory instead of jumping between points.
  std::vector<int64_t> start(S + 1, 0), key(N), src(N);
  const int64_t stride = 2 + C;
  std::vector<T> rec(N * stride);
  for (int64_t n = 0; n < N; ++n) {
    key[n] = uvgrid::slice_of(a, n);
    ++start[key[n] + 1];
  }
  for (int64_t s = 0; s < S; ++s) start[s + 1] += start[s];
  {
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t n = 0; n < N; ++n) {
      const int64_t q = next[key[n]]++;
      src[q] = n;
      T* r = rec.data() + q * stride;
      r[0] = v.uv[2 * n];
      r[1] = v.uv[2 * n + 1];
      for (int64_t c = 0; c < C; ++c) r[2 + c] = v.go[n * C + c];
    }
  }
  // Each slice is zeroed by the thread that fills it, while it is in that thread's cache.
#pragma omp parallel for schedule(dynamic, 4) if (N > 2048 || S * v.RRC > 65536)
  for (int64_t sl = 0; sl < S; ++sl) {
    T* dst = gg + sl * v.RRC;
    std::fill(dst, dst + v.RRC, T(0));
    const T* slice = v.grid + sl * v.RRC;
    const uint8_t* valid_p = a.valid ? a.valid + (sl % a.parts) * v.RR : nullptr;
    for (int64_t q = start[sl]; q < start[sl + 1]; ++q) {
      const T* r = rec.data() + q * stride;
      Stencil<T> s;
      if (guv) {
        uvgrid::make_stencil<true>(r[0], r[1], v.R, valid_p, s);
        uvgrid::uv_grad_point<CC>(s, slice, C, r + 2, guv + 2 * src[q]);
      } else {
        uvgrid::make_stencil<false>(r[0], r[1], v.R, valid_p, s);
      }
      scatter_point<CC>(s, r + 2, C, dst);
    }
  }
}

template <typename T>
void contributions_impl(const UvLookupArgs& a) {
  const View<T> v(a);
  const int64_t sentinel = a.groups * a.parts * v.RR;
  T* guv = static_cast<T*>(a.grad_uv);
  T* w = static_cast<T*>(a.weights);
#pragma omp parallel for schedule(static) if (a.points > 2048)
  for (int64_t n = 0; n < a.points; ++n) {
    Stencil<T> s;
    v.template stencil<true>(a, n, s);
    const int64_t sl = uvgrid::slice_of(a, n);
    if (guv) uvgrid::uv_grad_point<0>(s, v.grid + sl * v.RRC, v.C, v.go + n * v.C, guv + 2 * n);
    uvgrid::write_contributions(s, sl * v.RR, sentinel, a.cells + 4 * n, w + 4 * n);
  }
}

template <typename T>
void segment_sum_impl(const UvLookupArgs& a) {
  const int64_t M = 4 * a.points, C = a.channels;
  const int64_t sentinel = a.groups * a.parts * a.res * a.res;
  const T* w = static_cast<const T*>(a.weights);
  const T* go = static_cast<const T*>(a.grad_out);
  T* gg = static_cast<T*>(a.grad_grid);
#pragma omp parallel for schedule(static) if (M > 8192)
  for (int64_t q = 0; q < M; ++q)
    uvgrid::segment_sum_at(q, M, a.cells, a.order, w, go, C, sentinel, gg);
}

template <int CC>
struct Forward {
  template <typename T>
  static void run(const UvLookupArgs& a) { forward_impl<T, CC>(a); }
};
template <int CC>
struct Backward {
  template <typename T>
  static void run(const UvLookupArgs& a) { backward_impl<T, CC>(a); }
};
struct Contributions {
  template <typename T>
  static void run(const UvLookupArgs& a) { contributions_impl<T>(a); }
};
struct SegmentSum {
  template <typename T>
  static void run(const UvLookupArgs& a) { segment_sum_impl<T>(a); }
};

template <typename Op>
void dispatch(DType dtype, const UvLookupArgs& a) {
  if (dtype == DType::Float64)
    Op::template run<double>(a);
  else
    Op::template run<float>(a);
}

}  // namespace

void uv_lookup_forward_cpu(DType dtype, const UvLookupArgs& a) {
  if (a.channels == 3)
    dispatch<Forward<3>>(dtype, a);
  else
    dispatch<Forward<0>>(dtype, a);
}
void uv_lookup_backward_cpu(DType dtype, const UvLookupArgs& a) {
  if (a.channels == 3)
    dispatch<Backward<3>>(dtype, a);
  else
    dispatch<Backward<0>>(dtype, a);
}
void uv_lookup_contributions_cpu(DType dtype, const UvLookupArgs& a) { dispatch<Contributions>(dtype, a); }
void uv_lookup_segment_sum_cpu(DType dtype, const UvLookupArgs& a) { dispatch<SegmentSum>(dtype, a); }

}  // namespace smplfast
