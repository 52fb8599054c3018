// lm_fit: SMPLify's Levenberg–Marquardt, every iteration of every sample inside one kernel call.
//
// Per sample b the kernel minimises a sum of squares over a parameter vector x (n) from x0:
//   * reprojection, per view v < V: the residuals of project_keypoints (keypoint_jacobian.h) with the
//     view's camera, targets, weights and the Geman–McClure scale sigma (0: plain residuals). The
//     kernel's inputs [pose (3 J), betas (nb), transl (3)] (P = 3 J + nb + 3 columns) are base[b, v]
//     except where cols[v, q] >= 0: that column is x[cols[v, q]] (one x column per kernel column
//     within a view; views may share x columns). JᵀJ, Jᵀr and Σ r² are accumulated keypoint by
//     keypoint from each keypoint's two Jacobian rows: no Jacobian is stored for the batch;
//   * with body_col >= 0, on the 69 body-pose entries x[body_col ...]: the max-mixture GMM prior
//     (component re-selected at every point; residual L_mᵀ(θ − μ_m)/√2 and √c_m, so JᵀJ = P_m / 2)
//     weighted pose_w2, and SPIN's angle prior exp(s θ_k) at the elbows and knees weighted angle_w2;
//   * with shape_col >= 0, on x[shape_col .. + nb): the shape prior β (shape_w2) and, when
//     bound_w2 != 0, HoloPose's shape bound max(0, |β| − bound) by IRLS (its true value enters the
//     objective);
//   * with anchor_col >= 0: Pavlakos' anchor, Geman–McClure residuals of x[anchor_col + i] −
//     anchor_target[b, i] with scale anchor_sigma, weighted anchor_w2;
//   * with depth_col >= 0: depth_w2 (x[depth_col] − depth_target[b])².
// Every weight is a squared weight (SPIN's w²). The LM loop is smplfast.fitting.lm's, per sample:
// Marquardt's scaling D = max(diag H, 1e-6 mean diag H), the damped solve (Cholesky or CG, from
// batched_solve.h), gain ratio, damping update (Nielsen), and the stopping tests (ftol, xtol, gtol,
// max_damping, max_iters). A sample's state never leaves the kernel, so a whole stage is one launch
// and no host synchronisation happens between iterations.
//
// Buffers (contiguous, allocated by the caller; T = float or double):
//   base[B,V,P], cols[V,P] int32, order[V,P] int32 (the mapped kernel columns sorted by their x
//   column, then -1), cam_rot[B,V,3,3], cam_transl[B,V,3], focal[B,V,2], center[B,V,2],
//   target[B,V,Nk,2], weight[B,V,Nk], gmm_means[M,69], gmm_prec_chol[M,69,69] (lower, P_m = L Lᵀ),
//   gmm_precisions[M,69,69], gmm_constants[M], anchor_target[B,anchor_len], depth_target[B],
//   active[B] uint8 (nullptr: all), x[B,n] (in: x0, out: the result), objective[B],
//   iterations[B] int64, converged[B] uint8.
// An inactive sample keeps x0 with objective NaN, 0 iterations, converged 0 (as the Python loop).
//
// The per-sample algorithm is written once against a team (batched_solve.h): SerialTeam on the
// CPU, a thread block on the GPU, OpenMP threads emulating a block in tests. The serial and the
// block paths sum in different orders (JᵀJ by keypoint or by entry, the block's reductions), so
// they agree up to rounding, not bit for bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "common/macros.h"
#include "common/rank_update.h"
#include "fitting/batched_solve.h"
#include "fitting/keypoint_jacobian.h"

namespace smplfast {

struct LMFitArgs {
  KeypointArgs model;  // sizes, pose_blend, sigma and the model's pointers (per-sample fields unused)
  int64_t batch, views, n;
  const void* base;
  const int32_t* cols;
  const int32_t* order;
  const void* cam_rot;
  const void* cam_transl;
  const void* focal;
  const void* center;
  const void* target;
  const void* weight;
  // Priors (a column of -1 switches a term off).
  int64_t body_col;
  int64_t gmm_components;
  const void* gmm_means;
  const void* gmm_prec_chol;
  const void* gmm_precisions;
  const void* gmm_constants;
  double pose_w2, angle_w2;
  int64_t shape_col;
  double shape_w2, bound_w2, bound;
  int64_t anchor_col, anchor_len;
  const void* anchor_target;
  double anchor_w2, anchor_sigma;
  int64_t depth_col;
  const void* depth_target;
  double depth_w2;
  // LM options (smplfast.fitting.lm.LMOptions).
  int64_t max_iters;
  double ftol, xtol, gtol, init_damping, max_damping;
  int solver;  // 0 Cholesky, 1 conjugate gradient
  int64_t cg_iters;
  double cg_rel_tol;
  const uint8_t* active;
  void* x;
  void* objective;
  int64_t* iterations;
  uint8_t* converged;
  void* workspace;  // CUDA: the pair table, then lmfit::scratch_elems() per block
};

// Dimension of the GMM pose prior (SMPL's 23 body joints) and the angle prior's entries in it.
constexpr int kBodyDim = 69;
constexpr double kShapeBoundEps = 1e-4;  // shape_bound_residuals' floor of the IRLS weight

void lm_fit_cpu(DType dtype, const LMFitArgs& a);
// The block-parallel path on `threads` CPU threads (tests: the GPU's work split without a GPU).
void lm_fit_team_cpu(DType dtype, const LMFitArgs& a, int threads, int lanes);
#ifdef SMPLFAST_WITH_CUDA
void lm_fit_cuda(DType dtype, const LMFitArgs& a, int device, void* stream);
// Floats and int32s of CUDA workspace lm_fit_cuda needs for this problem on `device`.
void lm_fit_cuda_workspace_elems(DType dtype, const LMFitArgs& a, int device, int64_t* n_float, int64_t* n_int);
#endif

namespace lmfit {

// One sample's scratch, carved from one buffer of scratch_elems() values (and P ints, CPU only).
template <typename T>
struct Scratch {
  T *x, *xn, *step, *g, *gn, *D, *mg, *H, *Hn, *solve, *inp, *joints, *pose_feature, *dp, *E, *jac, *res, *p2d,
      *kp3, *z, *dense;
  int32_t* gather_idx;  // P, serial accumulation only
};

SF_HD int64_t solve_ld(int64_t n) { return n | 1; }

// Hands out consecutive slices of a buffer; with no buffer it only counts (the size query).
template <typename T>
struct Carver {
  T* base;
  int64_t used;
  SF_HD T* take(int64_t count) {
    T* p = base ? base + used : nullptr;
    used += count;
    return p;
  }
};

// One sample's scratch from `p` (nullptr: nothing is carved, *total still gets the size) and P ints `ip`.
template <typename T>
SF_HD Scratch<T> carve(const LMFitArgs& a, T* p, int32_t* ip, int64_t* total = nullptr) {
  const int64_t n = a.n, J = a.model.joints, nb = a.model.betas, Nk = a.model.keypoints;
  const int64_t P = 3 * J + nb + 3, ld = solve_ld(n);
  const int64_t chol = solve::cholesky_scratch(n, ld), cg = solve::cg_scratch(n, ld);
  Carver<T> c{p, 0};
  Scratch<T> s;
  s.x = c.take(n);
  s.xn = c.take(n);
  s.step = c.take(n);
  s.g = c.take(n);
  s.gn = c.take(n);
  s.D = c.take(n);
  s.mg = c.take(n);
  s.H = c.take(n * n);
  s.Hn = c.take(n * n);
  s.solve = c.take(chol > cg ? chol : cg);
  s.inp = c.take(P);
  s.joints = c.take(J * kp::kJointStride);
  s.pose_feature = c.take(9 * (J > 1 ? J - 1 : 0));
  s.dp = c.take(3 * J * nb);
  s.E = c.take(3 * J * nb);
  s.jac = c.take(Nk * 2 * P);
  s.res = c.take(Nk * 2);
  s.p2d = c.take(Nk * 2);
  s.kp3 = c.take(Nk * 3);
  s.z = c.take(a.gmm_components * kBodyDim);
  s.dense = c.take(2 * n);  // serial accumulation only: zero when carved (the caller's buffer) and between views
  s.gather_idx = ip;
  if (total) *total = c.used;
  return s;
}

SF_HD int64_t scratch_elems(const LMFitArgs& a) {
  int64_t total = 0;
  carve<float>(a, nullptr, nullptr, &total);
  return total;
}

// The angle prior's body-pose entries (left elbow y, right elbow y, left knee x, right knee x) and the
// signs that make a positive product a hyperextension (smplfast.fitting.priors.ANGLE_PRIOR_*).
SF_HD int angle_prior_index(int q) { return q == 0 ? 52 : q == 1 ? 55 : q == 2 ? 9 : 12; }
SF_HD double angle_prior_sign(int q) { return q == 0 ? 1.0 : -1.0; }

template <typename T>
SF_HD T nan_value() {
  return std::numeric_limits<T>::quiet_NaN();
}

template <typename T>
SF_HD T robust_t(T sigma, T e) {  // sigma / sqrt(sigma^2 + e^2)
  return sigma / sqrt(sigma * sigma + e * e);
}

// The mapped kernel columns of view v (order's entries before the first -1).
SF_HD int mapped_count(const LMFitArgs& a, int64_t v, int64_t P) {
  const int32_t* ord = a.order + v * P;
  int c = 0;
  while (c < P && ord[c] >= 0) ++c;
  return c;
}

// Adds view v's reprojection terms at x to H (lower triangle), g; returns this member's part of Σ r².
template <int kMaxJ, typename T, typename Team>
SF_HD T reprojection_view(const Team& t, const LMFitArgs& a, const kp::Model<T>& m, const kp::Pairs<T>& pt,
                          int64_t b, int64_t v, const T* x, T* H, T* g, const Scratch<T>& s) {
  const int64_t J = m.J, nb = m.nb, Nk = m.Nk, P = 3 * J + nb + 3, n = a.n, bv = b * a.views + v;
  const int32_t* cols = a.cols + v * P;
  const int32_t* order = a.order + v * P;
  const T* base = static_cast<const T*>(a.base) + bv * P;
  for (int64_t q = t.rank(); q < P; q += t.size()) s.inp[q] = cols[q] >= 0 ? x[cols[q]] : base[q];
  t.sync();
  const kp::Sample<T> in{s.inp,
                         s.inp + 3 * J,
                         s.inp + 3 * J + nb,
                         static_cast<const T*>(a.cam_rot) + bv * 9,
                         static_cast<const T*>(a.cam_transl) + bv * 3,
                         static_cast<const T*>(a.focal) + bv * 2,
                         static_cast<const T*>(a.center) + bv * 2,
                         static_cast<const T*>(a.target) + bv * Nk * 2,
                         static_cast<const T*>(a.weight) + bv * Nk};
  const kp::State<T> st{s.joints, s.pose_feature, s.dp, s.E};
  for (int64_t j = t.rank(); j < J; j += t.size()) kp::joint_local(j, m, in, st, true);
  t.sync();
  if (m.pose_blend)
    for (int64_t j = 1 + t.rank(); j < J; j += t.size()) kp::pose_feature(j, st);
  if (t.rank() == 0) kp::chain(m, st);
  t.sync();
  // A view that maps neither body-pose nor shape columns (the camera stage) skips their derivatives.
  bool body_columns = false;
  for (int64_t q = 3; q < 3 * J + nb; ++q) body_columns |= cols[q] >= 0;
  for (int64_t j = t.rank(); j < J; j += t.size()) kp::joint_pose_factor(j, m, st);
  if (body_columns)
    for (int64_t c = t.rank(); c < nb; c += t.size()) kp::shape_column(c, m, st);
  t.sync();
  const kp::Out<T> out{s.res, s.jac, s.p2d, s.kp3};
  const T sigma = static_cast<T>(a.model.sigma);
  for (int64_t k = t.rank(); k < Nk; k += t.size()) kp::keypoint<kMaxJ>(k, m, pt, in, st, sigma, out, body_columns);
  t.sync();
  const int mv = mapped_count(a, v, P);
  T fpart = T(0);
  if (Team::kSerial) {
    // Keypoint by keypoint: its two rows scattered into x's column order (every column the view maps
    // is written for every keypoint; the others are zero), then for each non-zero column c one
    // contiguous, vectorisable update of H's row c up to the diagonal.
    T* xa = s.dense;
    T* xb = s.dense + n;
    for (int64_t k = 0; k < Nk; ++k) {
      const T* rowa = s.jac + 2 * k * P;
      const T* rowb = rowa + P;
      const T ra = s.res[2 * k], rb = s.res[2 * k + 1];
      fpart += ra * ra;
      fpart += rb * rb;
      int cnt = 0;
      for (int q = 0; q < mv; ++q) {  // branch-free: the non-zero pattern changes from keypoint to keypoint
        const int32_t kc = order[q];
        const int32_t c = cols[kc];
        const T va = rowa[kc], vb = rowb[kc];
        xa[c] = va;
        xb[c] = vb;
        s.gather_idx[cnt] = c;
        cnt += (va != T(0)) | (vb != T(0));
      }
      for (int i = 0; i < cnt; ++i) {
        const int32_t c = s.gather_idx[i];
        const T ai = xa[c], bi = xb[c];
        g[c] += ai * ra + bi * rb;
        rank2_row(H + static_cast<int64_t>(c) * n, xa, xb, ai, bi, c + 1);
      }
    }
    // The next view (or evaluation) may map other columns: leave the buffers zero everywhere.
    for (int q = 0; q < mv; ++q) xa[cols[order[q]]] = xb[cols[order[q]]] = T(0);
  } else {
    // Entry by entry (each (i, j) of the view's mapped columns has one owner), summed over the rows.
    for (int i = t.row0(); i < mv; i += t.row_step()) {
      const int32_t ki = order[i];
      for (int j = t.col0(); j <= i; j += t.col_step()) {
        const int32_t kj = order[j];
        T acc = T(0);
        for (int64_t r = 0; r < 2 * Nk; ++r) acc += s.jac[r * P + ki] * s.jac[r * P + kj];
        H[static_cast<int64_t>(cols[ki]) * n + cols[kj]] += acc;
      }
    }
    for (int i = t.rank(); i < mv; i += t.size()) {
      const int32_t ki = order[i];
      T acc = T(0);
      for (int64_t r = 0; r < 2 * Nk; ++r) acc += s.jac[r * P + ki] * s.res[r];
      g[cols[ki]] += acc;
    }
    for (int64_t r = t.rank(); r < 2 * Nk; r += t.size()) fpart += s.res[r] * s.res[r];
  }
  t.sync();
  return fpart;
}

// Objective, H (its lower triangle; the upper one is left at zero) and g at x. Every member returns the same objective.
template <int kMaxJ, typename T, typename Team>
SF_HD T evaluate(const Team& t, const LMFitArgs& a, const kp::Model<T>& m, const kp::Pairs<T>& pt, int64_t b,
                 const T* x, T* H, T* g, const Scratch<T>& s) {
  const int64_t n = a.n, nb = m.nb;
  for (int64_t i = t.rank(); i < n * n; i += t.size()) H[i] = T(0);
  for (int64_t i = t.rank(); i < n; i += t.size()) g[i] = T(0);
  t.sync();
  T fpart = T(0);
  for (int64_t v = 0; v < a.views; ++v) fpart += reprojection_view<kMaxJ>(t, a, m, pt, b, v, x, H, g, s);

  if (a.body_col >= 0) {
    const int64_t bc = a.body_col, M = a.gmm_components, D = kBodyDim;
    const T* mu = static_cast<const T*>(a.gmm_means);
    const T* L = static_cast<const T*>(a.gmm_prec_chol);
    const T* cst = static_cast<const T*>(a.gmm_constants);
    const T* theta = x + bc;
    // Component with the lowest energy 0.5 |L_mᵀ(θ − μ_m)|² + c_m (the first one on ties).
    T best = T(0);
    int64_t comp = -1;
    for (int64_t mc = 0; mc < M; ++mc) {
      const T* Lm = L + mc * D * D;
      const T* mum = mu + mc * D;
      T epart = T(0);
      T* z = s.z + mc * D;
      if (Team::kSerial) {
        // Row by row of L (contiguous, vectorises): each z_i still sums j = i, i + 1, ... in order.
        for (int64_t i = 0; i < D; ++i) z[i] = T(0);
        for (int64_t j = 0; j < D; ++j) {
          const T dj = theta[j] - mum[j];
          const T* Lrow = Lm + j * D;
          for (int64_t i = 0; i <= j; ++i) z[i] += Lrow[i] * dj;
        }
        for (int64_t i = 0; i < D; ++i) epart += z[i] * z[i];
      } else {
        for (int64_t i = t.rank(); i < D; i += t.size()) {
          T zi = T(0);
          for (int64_t j = i; j < D; ++j) zi += Lm[j * D + i] * (theta[j] - mum[j]);
          z[i] = zi;
          epart += zi * zi;
        }
      }
      const T e = T(0.5) * t.sum(epart) + cst[mc];
      if (comp < 0 || e < best) {
        best = e;
        comp = mc;
      }
    }
    const T wp = static_cast<T>(a.pose_w2);
    if (t.rank() == 0) fpart += wp * best;
    const T* Pc = static_cast<const T*>(a.gmm_precisions) + comp * D * D;
    const T* Lc = L + comp * D * D;
    const T* zc = s.z + comp * D;
    const T half = T(0.5) * wp;
    for (int64_t i = t.row0(); i < D; i += t.row_step())
      for (int64_t j = t.col0(); j <= i; j += t.col_step()) H[(bc + i) * n + bc + j] += half * Pc[i * D + j];
    for (int64_t i = t.rank(); i < D; i += t.size()) {
      T acc = T(0);
      for (int64_t j = 0; j <= i; ++j) acc += Lc[i * D + j] * zc[j];
      g[bc + i] += half * acc;
    }
    t.sync();
    const T wa = static_cast<T>(a.angle_w2);
    for (int q = t.rank(); q < 4; q += t.size()) {
      const int64_t c = bc + angle_prior_index(q);
      const T sgn = static_cast<T>(angle_prior_sign(q));
      const T r = exp(x[c] * sgn);
      const T sr = sgn * r;
      fpart += wa * r * r;
      H[c * n + c] += wa * sr * sr;
      g[c] += wa * sr * r;
    }
    t.sync();
  }
  if (a.shape_col >= 0) {
    const T ws = static_cast<T>(a.shape_w2), wb = static_cast<T>(a.bound_w2), bound = static_cast<T>(a.bound);
    for (int64_t i = t.rank(); i < nb; i += t.size()) {
      const int64_t c = a.shape_col + i;
      const T beta = x[c];
      fpart += ws * beta * beta;
      H[c * n + c] += ws;
      g[c] += ws * beta;
    }
    t.sync();
    if (a.bound_w2 != 0.0) {
      for (int64_t i = t.rank(); i < nb; i += t.size()) {
        const int64_t c = a.shape_col + i;
        const T beta = x[c];
        const T over = fabs(beta) - bound;
        const T h = over > T(0) ? over : T(0);
        const T floor_h = h > T(kShapeBoundEps) ? h : T(kShapeBoundEps);
        const T scale = T(1) / sqrt(floor_h);
        const T sgn = beta > T(0) ? T(1) : (beta < T(0) ? T(-1) : T(0));
        const T d = fabs(beta) > bound ? sgn * scale : T(0);
        fpart += wb * h;
        H[c * n + c] += wb * d * d;
        g[c] += wb * d * (h * scale);
      }
      t.sync();
    }
  }
  if (a.anchor_col >= 0) {
    const T wan = static_cast<T>(a.anchor_w2), sigma = static_cast<T>(a.anchor_sigma);
    const T* init = static_cast<const T*>(a.anchor_target) + b * a.anchor_len;
    for (int64_t i = t.rank(); i < a.anchor_len; i += t.size()) {
      const int64_t c = a.anchor_col + i;
      const T e = x[c] - init[i];
      const T tt = robust_t(sigma, e);
      const T r = tt * e, dr = tt * tt * tt;
      fpart += wan * r * r;
      H[c * n + c] += wan * dr * dr;
      g[c] += wan * dr * r;
    }
    t.sync();
  }
  if (a.depth_col >= 0 && t.rank() == 0) {
    const int64_t c = a.depth_col;
    const T wd = static_cast<T>(a.depth_w2);
    const T dz = x[c] - static_cast<const T*>(a.depth_target)[b];
    fpart += wd * dz * dz;
    H[c * n + c] += wd;
    g[c] += wd * dz;
  }
  const T f = t.sum(fpart);  // includes a barrier: H and g are complete for every member
  return f;
}

// The whole LM run of sample b (smplfast.fitting.lm.levenberg_marquardt, one sample).
template <int kMaxJ, typename T, typename Team>
SF_HD void lm_sample(const Team& t, const LMFitArgs& a, const kp::Model<T>& m, const kp::Pairs<T>& pt, int64_t b,
                     Scratch<T> s) {
  const int64_t n = a.n;
  const int ld = static_cast<int>(solve_ld(n));
  T* xout = static_cast<T*>(a.x) + b * n;
  T* objective = static_cast<T*>(a.objective) + b;
  if (a.active && !a.active[b]) {
    if (t.rank() == 0) {
      *objective = nan_value<T>();
      a.iterations[b] = 0;
      a.converged[b] = 0;
    }
    return;
  }
  for (int64_t i = t.rank(); i < n; i += t.size()) s.x[i] = xout[i];
  t.sync();
  T f = evaluate<kMaxJ>(t, a, m, pt, b, s.x, s.H, s.g, s);
  T lam = static_cast<T>(a.init_damping), nu = T(2);
  const T tiny = std::numeric_limits<T>::min();
  int64_t iters = 0;
  bool done = false;
  for (int64_t it = 0; it < a.max_iters && !done; ++it) {
    // Marquardt's scaling: each parameter damped by its own curvature, floored for unused ones.
    T dpart = T(0);
    for (int64_t i = t.rank(); i < n; i += t.size()) dpart += s.H[i * n + i];
    const T mean = t.sum(dpart) / static_cast<T>(n);
    const T floor_d = T(1e-6) * (mean < T(1e-12) ? T(1e-12) : mean);  // NaN stays NaN, as clamp_min
    for (int64_t i = t.rank(); i < n; i += t.size()) {
      const T d = s.H[i * n + i];
      s.D[i] = (d != d || floor_d != floor_d) ? nan_value<T>() : (d > floor_d ? d : floor_d);
      s.mg[i] = -s.g[i];
    }
    t.sync();
    bool ok;
    if (a.solver == 0) {
      ok = solve::damped_cholesky_sample(t, static_cast<int>(n), ld, s.H, s.mg, lam, s.D, s.solve, s.step);
    } else {
      int32_t cg_iters = 0;
      T rel = T(0);
      solve::cg_sample(t, static_cast<int>(n), ld, s.H, s.mg, lam, s.D, static_cast<int>(a.cg_iters),
                       static_cast<T>(a.cg_rel_tol), s.solve, s.step, &cg_iters, &rel);
      t.sync();
      bool bad = false;
      for (int64_t i = t.rank(); i < n; i += t.size()) bad |= !solve::finite(s.step[i]);
      ok = !t.any(bad);
    }
    t.sync();
    for (int64_t i = t.rank(); i < n; i += t.size()) s.xn[i] = s.x[i] + s.step[i];
    t.sync();
    // A failed solve leaves x where it is (its step is 0 or not finite): nothing to evaluate.
    const T fn = ok ? evaluate<kMaxJ>(t, a, m, pt, b, s.xn, s.Hn, s.gn, s) : nan_value<T>();
    ++iters;
    // H step from H's lower triangle (the solve's right-hand side buffer is free now).
    T* hs = s.mg;
    if (Team::kSerial) {
      for (int64_t i = 0; i < n; ++i) hs[i] = T(0);
      for (int64_t i = 0; i < n; ++i) {
        const T* Hrow = s.H + i * n;
        const T si = s.step[i];
        T acc = Hrow[i] * si;
        for (int64_t j = 0; j < i; ++j) {
          acc += Hrow[j] * s.step[j];
          hs[j] += Hrow[j] * si;
        }
        hs[i] += acc;
      }
    } else {
      for (int64_t i = t.rank(); i < n; i += t.size()) {
        T acc = T(0);
        for (int64_t j = 0; j <= i; ++j) acc += s.H[i * n + j] * s.step[j];
        for (int64_t j = i + 1; j < n; ++j) acc += s.H[j * n + i] * s.step[j];
        hs[i] = acc;
      }
    }
    t.sync();
    T p1 = T(0), p2 = T(0), ss = T(0), xx = T(0);
    bool big_g = false;
    for (int64_t i = t.rank(); i < n; i += t.size()) {
      const T si = s.step[i];
      p1 += si * s.g[i];
      p2 += si * hs[i];
      ss += si * si;
      xx += s.x[i] * s.x[i];
      big_g |= !(fabs(s.g[i]) <= static_cast<T>(a.gtol));
    }
    t.sum2(p1, p2);
    t.sum2(ss, xx);
    const bool small_g = !t.any(big_g);
    const T predicted = -(T(2) * p1 + p2);
    const bool accept = ok && solve::finite(fn) && fn < f;
    const T rho = (f - fn) / (predicted < tiny ? tiny : predicted);
    if (accept) {
      const T c = T(2) * rho - T(1);
      const T shrink = T(1) - c * c * c;
      lam = lam * ((shrink < T(1) / T(3)) ? T(1) / T(3) : shrink);
      nu = T(2);
    } else {
      lam = lam * nu;
      nu = nu * T(2);
    }
    const bool small_f = accept && (f - fn) <= static_cast<T>(a.ftol) * fabs(f);
    const T xtol = static_cast<T>(a.xtol);
    const bool small_x = sqrt(ss) <= xtol * (sqrt(xx) + xtol);
    const bool stalled = lam > static_cast<T>(a.max_damping);
    if (accept) {
      f = fn;
      T* tmp = s.x; s.x = s.xn; s.xn = tmp;
      tmp = s.H; s.H = s.Hn; s.Hn = tmp;
      tmp = s.g; s.g = s.gn; s.gn = tmp;
    }
    done = small_f || small_x || small_g || stalled;
    t.sync();
  }
  for (int64_t i = t.rank(); i < n; i += t.size()) xout[i] = s.x[i];
  if (t.rank() == 0) {
    *objective = f;
    a.iterations[b] = iters;
    a.converged[b] = done ? 1 : 0;
  }
  t.sync();
}

}  // namespace lmfit
}  // namespace smplfast
