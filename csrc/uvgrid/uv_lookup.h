// Bilinear (part, u, v) lookup on per-part cartesian UV grids (HoloPose), forward and backward.
//
// Buffers are contiguous, owned and allocated by the caller (torch); indices are int64:
//   grid[G,P,R,R,C], part[N] in [0,P), uv[N,2] = (u, v), batch_index[N] in [0,G) (nullptr = all 0),
//   valid[P,R,R] (bool as uint8, nullptr = every cell valid)  ->  out[N,C]
// The wrappers (smplfast/ops/uv_lookup.py) have checked every index and uv in [-1e-6, 1 + 1e-6].
//
// Maths of one point (g = batch_index[n], p = part[n]):
//   x = clamp(u, 0, 1) (R-1) (column), y = clamp(v, 0, 1) (R-1) (row);
//   j0 = floor(x), j1 = min(j0+1, R-1), fx = x - j0 (i0, i1, fy likewise), so a point on a grid
//   line uses the cell to its right / below and the last line uses a degenerate cell (fx = 0).
//   Corner k = (a, b) (row offset a, column offset b) has weight w_k = wy_a wx_b with
//   wx_0 = 1 - fx, wx_1 = fx. Without a mask: out = sum_k w_k grid[k].
//   With a mask m_k = valid[p, corner k]: den = sum_k m_k w_k; if den > 0 the renormalised weights
//   W_k = m_k w_k / den give out = sum_k W_k grid[k] (invalid corners are never read); else out =
//   grid at the valid cell of part p nearest to (y, x) (squared distance to (i, j), ties to the
//   smallest i R + j), with zero derivative w.r.t. uv.
//   d out / d u = sum_k dW_k/du grid[k], dW_k/du = m_k (dw_k/du - W_k sum_l m_l dw_l/du) / den,
//   dw_k/du = wy_a (b ? 1 : -1) while 0 <= u <= 1 (0 where u is clamped); v likewise.
//
// Backward (grad_out[N,C] contiguous): grad_uv[N,2] = (sum_c grad_out_c d out_c/du, ... d/dv) and
// grad_grid[g,p,cell_k,c] += W_k grad_out[n,c] (nullptr outputs are skipped).
//   * CPU (uv_lookup_backward_cpu): points are bucketed by (g, p) with a stable counting sort and
//     each bucket is reduced by one thread in increasing point order into its own R x R x C slice:
//     no atomics, no per-thread copies of the grid, the same bits for any thread count.
//   * CUDA (uv_lookup_backward_cuda): one thread per point, float atomics into grad_grid.
//   * Deterministic (both devices): uv_lookup_contributions writes grad_uv and, per point, four
//     (destination cell, weight) pairs: cells[n,k] = (g P + p) R R + i R + j, or `sentinel`
//     (= G P R R) for an invalid or unused corner; weights[n,k] = W_k (1 for a nearest-cell point).
//     The caller sorts cells stably (torch.sort) and uv_lookup_segment_sum adds every run of equal
//     cells in sorted order: grad_grid[cell, c] = sum weights[q] grad_out[q / 4, c]. This is the
//     same sequence of additions, per cell, as the CPU bucket path (on the CPU both give identical
//     bits; CUDA may fuse multiply-adds, so its bits are its own, but the same from run to run).
#pragma once

#include <cstdint>

#include "common/exact_math.h"
#include "common/macros.h"

namespace smplfast {

struct UvLookupArgs {
  int64_t points;    // N
  int64_t groups;    // G
  int64_t parts;     // P
  int64_t res;       // R
  int64_t channels;  // C
  const void* grid;
  const int64_t* part;
  const void* uv;
  const int64_t* batch_index;  // nullptr: every point reads grid[0]
  const uint8_t* valid;        // nullptr: every cell is valid
  void* out;                   // forward output [N,C]
  // backward
  const void* grad_out;  // [N,C]
  void* grad_grid;       // [G,P,R,R,C] or nullptr
  void* grad_uv;         // [N,2] or nullptr
  // deterministic path: contributions [N,4] and their segment sum
  int64_t* cells;             // contributions: output; segment sum: the sorted cells [4N]
  void* weights;              // contributions: output; segment sum: input (unsorted) [4N]
  const int64_t* order;       // segment sum: the sorting permutation [4N]
};

void uv_lookup_forward_cpu(DType dtype, const UvLookupArgs& a);
void uv_lookup_backward_cpu(DType dtype, const UvLookupArgs& a);
void uv_lookup_contributions_cpu(DType dtype, const UvLookupArgs& a);
void uv_lookup_segment_sum_cpu(DType dtype, const UvLookupArgs& a);

#ifdef SMPLFAST_WITH_CUDA
void uv_lookup_forward_cuda(DType dtype, const UvLookupArgs& a, int device, void* stream);
void uv_lookup_backward_cuda(DType dtype, const UvLookupArgs& a, int device, void* stream);
void uv_lookup_contributions_cuda(DType dtype, const UvLookupArgs& a, int device, void* stream);
void uv_lookup_segment_sum_cuda(DType dtype, const UvLookupArgs& a, int device, void* stream);
#endif

namespace uvgrid {

// Nearest-cell distances use the *_rn helpers (common/exact_math.h), so that they and their ties
// round as in the PyTorch reference on every device.

// The interpolation stencil of one point: four corner cells (flat i R + j within the part) with
// their (renormalised) weights and the weights' derivatives w.r.t. u and v. `use[k]` is false for
// an invalid corner (never read). When `nearest >= 0` the point takes that cell's value alone.
template <typename T>
struct Stencil {
  int64_t cell[4];
  T w[4];
  T dwdu[4];
  T dwdv[4];
  bool use[4];
  int64_t nearest;
};

// Flat index of the valid cell nearest to (y, x), ties to the smallest index; -1 if none.
template <typename T>
SF_HD int64_t nearest_valid_cell(const uint8_t* valid_p, int64_t R, T y, T x) {
  int64_t best = -1;
  T best_d = T(0);
  for (int64_t i = 0; i < R; ++i) {
    const T dy = T(i) - y;
    const T dy2 = mul_rn(dy, dy);
    for (int64_t j = 0; j < R; ++j) {
      if (!valid_p[i * R + j]) continue;
      const T dx = T(j) - x;
      const T d = add_rn(dy2, mul_rn(dx, dx));
      if (best < 0 || d < best_d) {
        best = i * R + j;
        best_d = d;
      }
    }
  }
  return best;
}

// Grid position (in cells) of a chart coordinate, its lower cell index and d position / d coord.
template <typename T>
SF_HD void axis(T c, int64_t R, T& pos, int64_t& lo, int64_t& hi, T& frac, T& scale) {
  const T cc = c < T(0) ? T(0) : (c > T(1) ? T(1) : c);
  pos = cc * T(R - 1);
  lo = static_cast<int64_t>(pos);  // pos >= 0: truncation is floor
  if (lo > R - 1) lo = R - 1;
  hi = lo + 1 < R ? lo + 1 : R - 1;
  frac = pos - T(lo);
  // clamp's derivative: 1 inside [0, 1] (bounds included, as torch.clamp), 0 outside.
  scale = (c >= T(0) && c <= T(1)) ? T(R - 1) : T(0);
}

// kGrad = false leaves dwdu / dwdv unset (the forward does not need them).
template <bool kGrad, typename T>
SF_HD void make_stencil(T u, T v, int64_t R, const uint8_t* valid_p, Stencil<T>& s) {
  T x, y, fx, fy, sx, sy;
  int64_t j0, j1, i0, i1;
  axis(u, R, x, j0, j1, fx, sx);
  axis(v, R, y, i0, i1, fy, sy);
  const T wy[2] = {T(1) - fy, fy};
  const T wx[2] = {T(1) - fx, fx};
  const int64_t ii[2] = {i0, i1};
  const int64_t jj[2] = {j0, j1};
  s.nearest = -1;
  for (int k = 0; k < 4; ++k) {
    const int a = k >> 1, b = k & 1;
    s.cell[k] = ii[a] * R + jj[b];
    s.w[k] = wy[a] * wx[b];
    if (kGrad) {
      s.dwdu[k] = b ? wy[a] * sx : -wy[a] * sx;
      s.dwdv[k] = a ? wx[b] * sy : -wx[b] * sy;
    }
    s.use[k] = true;
  }
  if (valid_p == nullptr) return;
  T den = T(0), dden_u = T(0), dden_v = T(0);
  for (int k = 0; k < 4; ++k) {
    s.use[k] = valid_p[s.cell[k]] != 0;
    if (!s.use[k]) {
      s.w[k] = s.dwdu[k] = s.dwdv[k] = T(0);
      continue;
    }
    den += s.w[k];
    if (kGrad) {
      dden_u += s.dwdu[k];
      dden_v += s.dwdv[k];
    }
  }
  if (!(den > T(0))) {
    s.nearest = nearest_valid_cell(valid_p, R, y, x);
    for (int k = 0; k < 4; ++k) {
      s.use[k] = false;
      s.w[k] = s.dwdu[k] = s.dwdv[k] = T(0);
    }
    return;
  }
  const T inv = T(1) / den;
  for (int k = 0; k < 4; ++k) {
    if (!s.use[k]) continue;
    const T W = s.w[k] * inv;
    if (kGrad) {
      s.dwdu[k] = (s.dwdu[k] - W * dden_u) * inv;
      s.dwdv[k] = (s.dwdv[k] - W * dden_v) * inv;
    }
    s.w[k] = W;
  }
}

// Offset (in cells) of the (g, p) slice a point reads.
SF_HD int64_t slice_of(const UvLookupArgs& a, int64_t n) {
  const int64_t g = a.batch_index ? a.batch_index[n] : 0;
  return g * a.parts + a.part[n];
}

// out[c] for one point; `slice` points at grid[g, p] (R R C values). CC > 0 fixes the channel
// count at compile time (fully unrolled loops), CC = 0 reads it from C.
template <int CC, typename T>
SF_HD void lookup_point(const Stencil<T>& s, const T* slice, int64_t C_runtime, T* out) {
  const int64_t C = CC > 0 ? CC : C_runtime;
  if (s.nearest >= 0) {
    for (int64_t c = 0; c < C; ++c) out[c] = slice[s.nearest * C + c];
    return;
  }
  for (int64_t c = 0; c < C; ++c) {
    T acc = T(0);
    for (int k = 0; k < 4; ++k)
      if (s.use[k]) acc += s.w[k] * slice[s.cell[k] * C + c];
    out[c] = acc;
  }
}

// (d loss/du, d loss/dv) of one point given grad_out row `go`.
template <int CC, typename T>
SF_HD void uv_grad_point(const Stencil<T>& s, const T* slice, int64_t C_runtime, const T* go, T* guv) {
  const int64_t C = CC > 0 ? CC : C_runtime;
  T gu = T(0), gv = T(0);
  if (s.nearest < 0) {
    for (int k = 0; k < 4; ++k) {
      if (!s.use[k]) continue;
      const T* val = slice + s.cell[k] * C;
      T dot = T(0);
      for (int64_t c = 0; c < C; ++c) dot += go[c] * val[c];
      gu += s.dwdu[k] * dot;
      gv += s.dwdv[k] * dot;
    }
  }
  guv[0] = gu;
  guv[1] = gv;
}

// The four (cell, weight) contributions of one point to grad_grid (deterministic path), in the
// order the CPU bucket path adds them; `base` is the slice's first cell.
template <typename T>
SF_HD void write_contributions(const Stencil<T>& s, int64_t base, int64_t sentinel, int64_t* cells, T* w) {
  if (s.nearest >= 0) {
    cells[0] = base + s.nearest;
    w[0] = T(1);
    for (int k = 1; k < 4; ++k) {
      cells[k] = sentinel;
      w[k] = T(0);
    }
    return;
  }
  for (int k = 0; k < 4; ++k) {
    cells[k] = s.use[k] ? base + s.cell[k] : sentinel;
    w[k] = s.use[k] ? s.w[k] : T(0);
  }
}

// If sorted position q starts a run of equal cells, writes that cell's gradient: the run's
// contributions summed in sorted (= original, the sort being stable) order. `order` maps sorted
// positions to contribution indices n * 4 + k.
template <typename T>
SF_HD void segment_sum_at(int64_t q, int64_t M, const int64_t* sorted_cells, const int64_t* order, const T* w,
                          const T* go, int64_t C, int64_t sentinel, T* gg) {
  const int64_t cell = sorted_cells[q];
  if (cell == sentinel || (q > 0 && sorted_cells[q - 1] == cell)) return;
  int64_t end = q + 1;
  while (end < M && sorted_cells[end] == cell) ++end;
  for (int64_t c = 0; c < C; ++c) {
    T acc = T(0);
    for (int64_t t = q; t < end; ++t) {
      const int64_t src = order[t];
      // A nearest-cell point contributes grad_out itself (weight 1): the same bits as w * go.
      acc += w[src] * go[(src >> 2) * C + c];
    }
    gg[cell * C + c] = acc;
  }
}

}  // namespace uvgrid
}  // namespace smplfast
