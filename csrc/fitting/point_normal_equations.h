// point_normal_equations: HoloPose's DensePose term folded into Gauss–Newton normal equations point by
// point, without the (B, N, 2, n) Jacobian.
//
// Per sample b (J joints, S shape coefficients, n = 3 J + S + 3 parameters [pose, betas, c]):
//   inputs (contiguous, T = float or double): parents[J] int64 (parents[j] < j), A[B,J,3,4] world
//   transforms (posed = A_j[:, :3] v + A_j[:, 3]), p[B,J,3] posed joints, M[B,J,3,3] = d omega / d theta_j
//   (world frame), dT[B,J,3,S] = d A_j[:, 3] / d betas minus the rotation part (see
//   smplfast/surface/refine.py), points: v[B,N,3] rest positions, Sd[B,N,3,S] their shape basis,
//   w[B,N,J] skinning weights, xy[B,N,2] targets, mask[B,N] (0 / 1), count[B] (the term's
//   normaliser), c[B,3] the camera parameters of x (perspective: body translation; weak
//   perspective: [s, tx, ty]); perspective: cam_R[B,3,3], cam_t[B,3], focal[B,2], center[B,2];
//   weak perspective: fixed_transl[B,3] (the body translation, not a parameter).
//   Each point is posed x = sum_j w_j (A_j v + t_j) (+ fixed_transl), projected, e = proj − xy.
//   Outputs: value[B] = sum_i m_i d_i / count with d_i = |e_i| (or |e_i|² when squared), and the IRLS
//   normal equations H[B,n,n] (full), g[B,n]: H = sum_i s_i J_iᵀ J_i, g = sum_i s_i J_iᵀ e_i with
//   s_i = weight m_i / count / (2 max(|e_i|, eps)) (squared: weight m_i / count), J_i the point's two
//   Jacobian rows (pose through the subtree lever arms a_k = X_k − W_k p_k: (a_k × P_r)ᵀ M_k; betas:
//   P_r (sum_j w_j G_j Sd + sum_j w_j dT_j); c: the camera's own derivative).
// The per-sample loop is written against a team (batched_solve.h): the CPU runs one sample per thread
// with dense rank-two row updates, a CUDA block takes a chunk of points per pass (one per thread),
// stores their rows, then accumulates H entry by entry.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/macros.h"
#include "common/rank_update.h"
#include "fitting/batched_solve.h"

namespace smplfast {

struct PointNormalArgs {
  int64_t batch, points, joints, betas;  // B, N, J, S
  bool weak, squared;
  double weight, eps, min_depth;
  const int64_t* parents;
  const void *A, *p, *M, *dT;
  const void *v, *Sd, *w, *xy, *mask, *count, *c;
  const void *cam_R, *cam_t, *focal, *center, *fixed_transl;
  void *value, *H, *g;
  void* workspace;  // CUDA: point_normal_scratch_elems() per block
};

void point_normal_equations_cpu(DType dtype, const PointNormalArgs& a);
void point_normal_equations_team_cpu(DType dtype, const PointNormalArgs& a, int threads, int lanes);
#ifdef SMPLFAST_WITH_CUDA
void point_normal_equations_cuda(DType dtype, const PointNormalArgs& a, int device, void* stream);
int64_t point_normal_equations_cuda_workspace_elems(const PointNormalArgs& a, int device);
#endif

namespace pne {

// Scratch per team, for `chunk` points per pass: rows [chunk, 2, n], residual [chunk, 2], weights [chunk].
SF_HD int64_t scratch_elems(int64_t n, int64_t chunk) { return chunk * (2 * n + 3); }

// One point's Jacobian rows r0, r1 (n each, every column written), residual e, IRLS weight s and
// its contribution to the value. Returns false for a masked point (nothing written).
template <int kMaxJ, typename T>
SF_HD bool point_rows(const PointNormalArgs& a, int64_t b, int64_t i, T* r0, T* r1, T* e, T* s, T* val) {
  const int64_t J = a.joints, S = a.betas, N = a.points, n = 3 * J + S + 3;
  const int64_t bi = b * N + i;
  const T m = static_cast<const T*>(a.mask)[bi];
  if (m == T(0)) return false;
  const T* A = static_cast<const T*>(a.A) + b * J * 12;
  const T* pj = static_cast<const T*>(a.p) + b * J * 3;
  const T* Mj = static_cast<const T*>(a.M) + b * J * 9;
  const T* dT = static_cast<const T*>(a.dT) + b * J * 3 * S;
  const T* v = static_cast<const T*>(a.v) + bi * 3;
  const T* Sd = static_cast<const T*>(a.Sd) + bi * 3 * S;
  const T* w = static_cast<const T*>(a.w) + bi * J;
  const T* cv = static_cast<const T*>(a.c) + b * 3;
  // Posed point and the subtree sums X_k (weighted positions) and W_k (weights), children first.
  // Only the joints with a weight move the point (about 2 of 24 on a UV grid): the others are skipped.
  T X[3 * kMaxJ], W[kMaxJ], Gw[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0}, x[3] = {0, 0, 0};
  int nz[kMaxJ];
  int nnz = 0;
  for (int64_t j = 0; j < J; ++j) {
    const T wj = w[j];
    if (wj == T(0)) {
      X[3 * j] = X[3 * j + 1] = X[3 * j + 2] = W[j] = T(0);
      continue;
    }
    nz[nnz++] = static_cast<int>(j);
    const T* Aj = A + j * 12;
    T y[3];
    for (int r = 0; r < 3; ++r) y[r] = Aj[r * 4] * v[0] + Aj[r * 4 + 1] * v[1] + Aj[r * 4 + 2] * v[2] + Aj[r * 4 + 3];
    for (int r = 0; r < 3; ++r) {
      X[3 * j + r] = wj * y[r];
      x[r] += wj * y[r];
      for (int q = 0; q < 3; ++q) Gw[r * 3 + q] += wj * Aj[r * 4 + q];
    }
    W[j] = wj;
  }
  for (int64_t j = J - 1; j > 0; --j) {
    const int64_t par = a.parents[j];
    for (int r = 0; r < 3; ++r) X[3 * par + r] += X[3 * j + r];
    W[par] += W[j];
  }
  // Projection and its derivative P (2 x 3) w.r.t. the posed point; camera columns Jc (2 x 3).
  T P[6], Jc[6], proj[2];
  if (a.weak) {
    const T* ft = static_cast<const T*>(a.fixed_transl) + b * 3;
    const T sc = cv[0];
    const T xt[2] = {x[0] + ft[0] + cv[1], x[1] + ft[1] + cv[2]};
    proj[0] = sc * xt[0];
    proj[1] = sc * xt[1];
    P[0] = sc; P[1] = T(0); P[2] = T(0);
    P[3] = T(0); P[4] = sc; P[5] = T(0);
    Jc[0] = xt[0]; Jc[1] = sc; Jc[2] = T(0);
    Jc[3] = xt[1]; Jc[4] = T(0); Jc[5] = sc;
  } else {
    const T* R = static_cast<const T*>(a.cam_R) + b * 9;
    const T* tc = static_cast<const T*>(a.cam_t) + b * 3;
    const T* f = static_cast<const T*>(a.focal) + b * 2;
    const T* ctr = static_cast<const T*>(a.center) + b * 2;
    const T xc[3] = {x[0] + cv[0], x[1] + cv[1], x[2] + cv[2]};
    T Xc[3];
    for (int r = 0; r < 3; ++r) Xc[r] = R[r * 3] * xc[0] + R[r * 3 + 1] * xc[1] + R[r * 3 + 2] * xc[2] + tc[r];
    const T md = static_cast<T>(a.min_depth);
    const T Z = Xc[2] < md ? md : Xc[2];
    for (int r = 0; r < 2; ++r) {
      proj[r] = f[r] * Xc[r] / Z + ctr[r];
      const T fz = f[r] / Z;
      const T dz = -fz * Xc[r] / Z;  // as refine.py: the clamped depth keeps its derivative
      for (int q = 0; q < 3; ++q) P[r * 3 + q] = fz * R[r * 3 + q] + dz * R[6 + q];
    }
    for (int k = 0; k < 6; ++k) Jc[k] = P[k];
  }
  const T* xy = static_cast<const T*>(a.xy) + bi * 2;
  e[0] = proj[0] - xy[0];
  e[1] = proj[1] - xy[1];
  const T cnt = static_cast<const T*>(a.count)[b];
  const T sq = e[0] * e[0] + e[1] * e[1];
  const T wt = static_cast<T>(a.weight);
  if (a.squared) {
    *val = sq * m / cnt;
    *s = wt * m / cnt;
  } else {
    const T dist = sq > T(0) ? sqrt(sq) : T(0);
    *val = dist * m / cnt;
    const T eps = static_cast<T>(a.eps);
    *s = wt * m / cnt / (T(2) * (dist > eps ? dist : eps));
  }
  // Pose columns: (a_k x P_r)^T M_k (zero for the joints with no weight in their subtree).
  for (int64_t k = 0; k < J; ++k) {
    if (W[k] == T(0) && X[3 * k] == T(0) && X[3 * k + 1] == T(0) && X[3 * k + 2] == T(0)) {
      for (int q = 0; q < 3; ++q) r0[3 * k + q] = r1[3 * k + q] = T(0);
      continue;
    }
    const T ak[3] = {X[3 * k] - W[k] * pj[3 * k], X[3 * k + 1] - W[k] * pj[3 * k + 1],
                     X[3 * k + 2] - W[k] * pj[3 * k + 2]};
    const T* Mk = Mj + k * 9;
    for (int r = 0; r < 2; ++r) {
      const T* pr = P + 3 * r;
      const T c0 = ak[1] * pr[2] - ak[2] * pr[1];
      const T c1 = ak[2] * pr[0] - ak[0] * pr[2];
      const T c2 = ak[0] * pr[1] - ak[1] * pr[0];
      T* row = r == 0 ? r0 : r1;
      for (int q = 0; q < 3; ++q) row[3 * k + q] = c0 * Mk[q] + c1 * Mk[3 + q] + c2 * Mk[6 + q];
    }
  }
  // Shape columns: P_r (Gw Sd + sum_j w_j dT_j).
  for (int64_t sidx = 0; sidx < S; ++sidx) {
    T d[3];
    for (int r = 0; r < 3; ++r) {
      T acc = Gw[r * 3] * Sd[sidx] + Gw[r * 3 + 1] * Sd[S + sidx] + Gw[r * 3 + 2] * Sd[2 * S + sidx];
      for (int q = 0; q < nnz; ++q) acc += w[nz[q]] * dT[(nz[q] * 3 + r) * S + sidx];
      d[r] = acc;
    }
    r0[3 * J + sidx] = P[0] * d[0] + P[1] * d[1] + P[2] * d[2];
    r1[3 * J + sidx] = P[3] * d[0] + P[4] * d[1] + P[5] * d[2];
  }
  for (int q = 0; q < 3; ++q) {
    r0[n - 3 + q] = Jc[q];
    r1[n - 3 + q] = Jc[3 + q];
  }
  return true;
}

// Sample b's value, H and g. scratch: scratch_elems(n, t.size()) values; idx: n ints (serial only).
template <int kMaxJ, typename T, typename Team>
SF_HD void sample(const Team& t, const PointNormalArgs& a, int64_t b, T* scratch, int32_t* idx) {
  const int64_t J = a.joints, S = a.betas, N = a.points, n = 3 * J + S + 3;
  T* H = static_cast<T*>(a.H) + b * n * n;
  T* g = static_cast<T*>(a.g) + b * n;
  for (int64_t q = t.rank(); q < n * n; q += t.size()) H[q] = T(0);
  for (int64_t q = t.rank(); q < n; q += t.size()) g[q] = T(0);
  const int64_t chunk = t.size();
  T* rows = scratch;                   // [chunk, 2, n]
  T* res = rows + chunk * 2 * n;       // [chunk, 2]
  T* wts = res + chunk * 2;            // [chunk]: IRLS weight, 0 for a masked point
  t.sync();
  T vpart = T(0);
  for (int64_t i0 = 0; i0 < N; i0 += chunk) {
    const int64_t i = i0 + t.rank();
    T* r0 = rows + t.rank() * 2 * n;
    T* r1 = r0 + n;
    T val = T(0);
    bool used = false;
    if (i < N) used = point_rows<kMaxJ>(a, b, i, r0, r1, res + 2 * t.rank(), wts + t.rank(), &val);
    if (!used && !Team::kSerial) {  // weight 0 and finite rows: the block's sums read every slot
      wts[t.rank()] = T(0);
      for (int64_t q = 0; q < 2 * n; ++q) r0[q] = T(0);
      res[2 * t.rank()] = res[2 * t.rank() + 1] = T(0);
    }
    vpart += val;
    if (Team::kSerial) {
      if (!used) continue;
      // Dense rows: for each non-zero column c, one contiguous update of H's row c up to the diagonal.
      const T sw = wts[0];
      const T e0 = res[0], e1 = res[1];
      int cnt = 0;
      for (int64_t q = 0; q < n; ++q) {
        idx[cnt] = static_cast<int32_t>(q);
        cnt += (r0[q] != T(0)) | (r1[q] != T(0));
      }
      for (int k = 0; k < cnt; ++k) {
        const int64_t c = idx[k];
        const T ai = sw * r0[c], bi = sw * r1[c];
        g[c] += ai * e0 + bi * e1;
        rank2_row(H + c * n, r0, r1, ai, bi, c + 1);
      }
    } else {
      t.sync();
      const int64_t m = (N - i0) < chunk ? (N - i0) : chunk;
      for (int64_t r = t.row0(); r < n; r += t.row_step())
        for (int64_t c = t.col0(); c <= r; c += t.col_step()) {
          T acc = T(0);
          for (int64_t q = 0; q < m; ++q) {
            const T* ra = rows + q * 2 * n;
            acc += wts[q] * (ra[r] * ra[c] + ra[n + r] * ra[n + c]);
          }
          H[r * n + c] += acc;
        }
      for (int64_t r = t.rank(); r < n; r += t.size()) {
        T acc = T(0);
        for (int64_t q = 0; q < m; ++q) {
          const T* ra = rows + q * 2 * n;
          acc += wts[q] * (ra[r] * res[2 * q] + ra[n + r] * res[2 * q + 1]);
        }
        g[r] += acc;
      }
      t.sync();
    }
  }
  const T value = t.sum(vpart);
  for (int64_t r = t.row0(); r < n; r += t.row_step())
    for (int64_t c = t.col0(); c < r; c += t.col_step()) H[c * n + r] = H[r * n + c];
  if (t.rank() == 0) static_cast<T*>(a.value)[b] = value;
  t.sync();
}

}  // namespace pne
}  // namespace smplfast
