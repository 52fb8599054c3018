// Batched small dense SPD solves for Levenberg–Marquardt: per sample b, with
//   A_b = H_b + damping[b] * diag(diag_b)        (only the lower triangle of H_b is read),
// damped_cholesky_solve solves A_b x_b = g_b by Cholesky, conjugate_gradient_solve runs Jacobi-
// preconditioned CG from x = 0 on the same system.
//
// Buffers are contiguous and allocated by the caller (torch):
//   H[B,n,n], g[B,n], damping[B], diag[B,n], active[B] (uint8/bool, nullptr = all active)
//   cholesky: x[B,n], ok[B] (uint8/bool)
//   cg:       x[B,n], iters[B] (int32), rel_residual[B]
// `workspace` is only used by the CUDA kernels when a sample's scratch does not fit in shared memory
// (see batched_solve_cuda_workspace_elems); the CPU kernels keep per-thread scratch.
//
// Failures stay per sample: a Cholesky sample whose damped matrix is not positive definite, holds
// NaN/Inf, or whose solution overflows gets ok = 0 and x = 0; CG stops a sample rather than divide
// by a non-positive or non-finite number, and returns x = 0 for non-finite inputs.
//
// The per-sample algorithms below are written once against a "team" (the threads cooperating on
// one sample): SerialTeam on the CPU (one OpenMP thread per sample), a thread block on the GPU. A
// team spreads 1-D loops over rank()/size() and 2-D (row, column) loops over row0()/row_step() x
// col0()/col_step(); sync() is a barrier; any(), sum() and sum2() are reductions that include a
// barrier and whose result every member sees, so all members take the same branches. Each matrix
// entry receives the same sequence of updates whatever the team, so the CPU and CUDA paths run the
// same arithmetic (up to fused multiply-adds).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/macros.h"

namespace smplfast {

// Largest system size the ops accept (bounds int indexing of one sample's scratch).
constexpr int64_t kMaxSolveSize = 4096;

struct DampedCholeskyArgs {
  int64_t batch;
  int64_t n;
  const void* H;
  const void* g;
  const void* damping;
  const void* diag;
  const uint8_t* active;  // nullptr: every sample active
  void* workspace;        // CUDA global-memory fallback, nullptr when unused
  void* x;
  uint8_t* ok;
};

struct ConjugateGradientArgs {
  int64_t batch;
  int64_t n;
  int64_t max_iters;
  double rel_tol;
  const void* H;
  const void* g;
  const void* damping;
  const void* diag;
  const uint8_t* active;
  void* workspace;
  void* x;
  int32_t* iters;
  void* rel_residual;
};

// Which op a workspace query is about.
enum class SolveKind : int { Cholesky = 0, ConjugateGradient = 1 };

void damped_cholesky_solve_cpu(DType dtype, const DampedCholeskyArgs& a);
void conjugate_gradient_solve_cpu(DType dtype, const ConjugateGradientArgs& a);
// Runs the block-parallel (non-serial) path of the per-sample algorithms on `threads` CPU threads
// with `lanes` columns per row group, one sample at a time: lets tests check the GPU's work split
// and barriers on machines without a GPU.
void damped_cholesky_solve_team_cpu(DType dtype, const DampedCholeskyArgs& a, int threads, int lanes);
void conjugate_gradient_solve_team_cpu(DType dtype, const ConjugateGradientArgs& a, int threads, int lanes);

#ifdef SMPLFAST_WITH_CUDA
void damped_cholesky_solve_cuda(DType dtype, const DampedCholeskyArgs& a, int device, void* stream);
void conjugate_gradient_solve_cuda(DType dtype, const ConjugateGradientArgs& a, int device, void* stream);
// Elements of global workspace the CUDA kernel needs (0 when its scratch fits in shared memory).
int64_t batched_solve_cuda_workspace_elems(SolveKind kind, DType dtype, int64_t batch, int64_t n, int device);
#endif

namespace solve {

// True for finite v: inf - inf and NaN - NaN are NaN, which compares unequal to 0.
template <typename T>
SF_HD bool finite(T v) {
  return v - v == T(0);
}

SF_HD float root(float v) { return sqrtf(v); }
SF_HD double root(double v) { return sqrt(v); }

// One thread working alone on a sample.
struct SerialTeam {
  static constexpr bool kSerial = true;
  SF_HD int rank() const { return 0; }
  SF_HD int size() const { return 1; }
  SF_HD int row0() const { return 0; }
  SF_HD int row_step() const { return 1; }
  SF_HD int col0() const { return 0; }
  SF_HD int col_step() const { return 1; }
  SF_HD void sync() const {}
  SF_HD bool any(bool v) const { return v; }
  template <typename T>
  SF_HD T sum(T v) const {
    return v;
  }
  template <typename T>
  SF_HD void sum2(T& a, T& b) const {
    (void)a;
    (void)b;
  }
};

// Columns factorised together by one step of the Cholesky (see cholesky_panel_step).
constexpr int kPanel = 4;

// Scratch of one sample, in elements, for a row stride ld >= n.
SF_HD int64_t cholesky_scratch(int64_t n, int64_t ld) { return (n + 1) * ld + kPanel * (n + 1) + 2 * n; }
SF_HD int64_t cg_scratch(int64_t n, int64_t ld) { return n * ld + 6 * n; }

// One right-looking step over the M columns k..k+M-1 of W (row stride ld; rows 0..n-1 hold the
// lower triangle of the matrix, row n the right-hand side). First the panel: column k+q is finished
// with the updates from the panel's earlier columns, checked (its pivot must be positive and
// finite) and scaled, and copied to C[q] (stride n + 1). Then every entry right of the panel gets
// its M updates in one pass, w -= L[i][k+q] * L[j][k+q] for q = 0..M-1 in order: the same
// operations, in the same order per entry, as M unblocked steps, with a quarter of the passes
// over the trailing triangle (and, on the GPU, of the barriers).
template <int M, typename T, typename Team>
SF_HD bool cholesky_panel_step(const Team& t, int n, int ld, int k, T* W, T* C, T* dg) {
  const int cs = n + 1;
  for (int q = 0; q < M; ++q) {
    const int col = k + q;
    T pivot = W[col * ld + col];
    for (int s = 0; s < q; ++s) pivot -= C[s * cs + col] * C[s * cs + col];
    if (!(pivot > T(0)) || !finite(pivot)) return false;
    const T inv = T(1) / root(pivot);
    if (t.rank() == 0) dg[col] = root(pivot);
    for (int j = col + 1 + t.rank(); j <= n; j += t.size()) {
      T v = W[j * ld + col];
      for (int s = 0; s < q; ++s) v -= C[s * cs + j] * C[s * cs + col];
      v *= inv;
      W[j * ld + col] = v;
      C[q * cs + j] = v;
    }
    t.sync();
  }
  for (int i = k + M + t.row0(); i <= n; i += t.row_step()) {
    T ci[M];
    for (int q = 0; q < M; ++q) ci[q] = C[q * cs + i];
    T* w = W + i * ld;
    const int jend = i < n ? i : n - 1;  // row n (the right-hand side) has no diagonal
    for (int j = k + M + t.col0(); j <= jend; j += t.col_step()) {
      T v = w[j];
      for (int q = 0; q < M; ++q) v -= ci[q] * C[q * cs + j];
      w[j] = v;
    }
  }
  t.sync();
  return true;
}

// Damped Cholesky solve of one sample; writes x (zeros on failure) and returns ok.
// scratch: cholesky_scratch(n, ld) elements. W's rows 0..n-1 get the lower triangle of the damped
// matrix and are factorised in place; row n gets g and takes part in the same updates, which is
// exactly forward substitution: it ends as y = L^{-1} g.
template <typename T, typename Team>
SF_HD bool damped_cholesky_sample(const Team& t, int n, int ld, const T* H, const T* g, T lambda, const T* d,
                                  T* scratch, T* x) {
  T* W = scratch;                // (n + 1) x ld
  T* C = W + (n + 1) * ld;       // kPanel x (n + 1): the panel's columns of L (y at index n)
  T* dg = C + kPanel * (n + 1);  // diagonal of L, n
  T* xs = dg + n;                // solution, n
  // No separate finiteness check is needed: a NaN/Inf in the lower triangle (or in damping * diag)
  // makes the pivot of its row non-finite or negative (through L[i][j]^2 when off the diagonal),
  // and one in g makes x non-finite; both are tested below.
  for (int i = t.row0(); i <= n; i += t.row_step()) {
    T* w = W + i * ld;
    const T* src = i < n ? H + static_cast<int64_t>(i) * n : g;
    const int jend = i < n ? i : n;
    for (int j = t.col0(); j < jend; j += t.col_step()) w[j] = src[j];
    if (i < n && t.col0() == 0) w[i] = src[i] + lambda * d[i];  // the diagonal goes to column 0's member
  }
  t.sync();
  bool ok = true;
  for (int k = 0; ok && k < n; k += kPanel) {
    switch (n - k) {
      case 1: ok = cholesky_panel_step<1>(t, n, ld, k, W, C, dg); break;
      case 2: ok = cholesky_panel_step<2>(t, n, ld, k, W, C, dg); break;
      case 3: ok = cholesky_panel_step<3>(t, n, ld, k, W, C, dg); break;
      default: ok = cholesky_panel_step<kPanel>(t, n, ld, k, W, C, dg); break;
    }
  }
  if (ok) {
    // Back substitution L^T x = y, column-oriented so each step reads one contiguous row of L.
    T* r = W + n * ld;
    for (int k = n - 1; k >= 0; --k) {
      const T xk = r[k] / dg[k];
      if (t.rank() == 0) xs[k] = xk;
      const T* lk = W + k * ld;
      for (int i = t.rank(); i < k; i += t.size()) r[i] -= lk[i] * xk;
      t.sync();
    }
    bool nonfinite = false;
    for (int i = t.rank(); i < n; i += t.size()) nonfinite |= !finite(xs[i]);
    ok = !t.any(nonfinite);
  }
  for (int i = t.rank(); i < n; i += t.size()) x[i] = ok ? xs[i] : T(0);
  return ok;
}

// y = A p for the symmetric n x n matrix A (row stride ld). Every y_i is summed over j in
// increasing order in both branches; the serial one walks rows of A so its inner loop is contiguous.
template <typename T, typename Team>
SF_HD void symmetric_matvec(const Team& t, int n, int ld, const T* A, const T* p, T* y) {
  if constexpr (Team::kSerial) {
    // Four rows per pass over y: a quarter of the loads and stores of y, same order of additions.
    for (int i = 0; i < n; ++i) y[i] = T(0);
    int j = 0;
    for (; j + 4 <= n; j += 4) {
      const T p0 = p[j], p1 = p[j + 1], p2 = p[j + 2], p3 = p[j + 3];
      const T *a0 = A + j * ld, *a1 = a0 + ld, *a2 = a1 + ld, *a3 = a2 + ld;
      for (int i = 0; i < n; ++i) {
        T v = y[i];
        v += a0[i] * p0;
        v += a1[i] * p1;
        v += a2[i] * p2;
        v += a3[i] * p3;
        y[i] = v;
      }
    }
    for (; j < n; ++j) {
      const T pj = p[j];
      const T* a = A + j * ld;
      for (int i = 0; i < n; ++i) y[i] += a[i] * pj;
    }
  } else {
    // Column i of A equals row i: consecutive members read consecutive addresses.
    for (int i = t.rank(); i < n; i += t.size()) {
      T acc = T(0);
      for (int j = 0; j < n; ++j) acc += A[j * ld + i] * p[j];
      y[i] = acc;
    }
  }
}

// Jacobi-preconditioned CG from x = 0 on one sample (see the op's documentation for the stopping
// rules). scratch: cg_scratch(n, ld) elements. Each vector entry i is only touched by the member
// owning i (rank-strided), so barriers are only needed around the matvec, which reads all of p.
template <typename T, typename Team>
SF_HD void cg_sample(const Team& t, int n, int ld, const T* H, const T* g, T lambda, const T* d, int max_iters,
                     T rel_tol, T* scratch, T* x_out, int32_t* iters_out, T* rel_residual_out) {
  T* A = scratch;        // n x ld, full symmetric
  T* x = A + n * ld;
  T* r = x + n;
  T* z = r + n;
  T* p = z + n;
  T* q = p + n;
  T* minv = q + n;
  int bad = 0;  // an int (not a bool) lets the compiler vectorise the checking copy
  for (int i = t.row0(); i < n; i += t.row_step()) {
    const T* h = H + static_cast<int64_t>(i) * n;
    T* a = A + i * ld;
    for (int j = t.col0(); j < i; j += t.col_step()) {
      const T v = h[j];
      bad |= !finite(v);
      a[j] = v;
    }
    if (t.col0() == 0) {
      const T v = h[i] + lambda * d[i];
      bad |= !finite(v);
      a[i] = v;
    }
  }
  t.sync();
  for (int i = t.row0(); i < n; i += t.row_step())  // mirror the strict lower triangle
    for (int j = t.col0(); j < i; j += t.col_step()) A[j * ld + i] = A[i * ld + j];
  for (int i = t.rank(); i < n; i += t.size()) bad |= !finite(g[i]);
  if (t.any(bad != 0)) {
    for (int i = t.rank(); i < n; i += t.size()) x_out[i] = T(0);
    if (t.rank() == 0) {
      *iters_out = 0;
      *rel_residual_out = T(INFINITY);
    }
    return;
  }
  T gg = T(0), rz = T(0);
  for (int i = t.rank(); i < n; i += t.size()) {
    const T aii = A[i * ld + i];
    // A non-positive diagonal entry means A is not SPD; leave that coordinate unpreconditioned.
    minv[i] = aii > T(0) ? T(1) / aii : T(1);
    x[i] = T(0);
    r[i] = g[i];
    z[i] = minv[i] * r[i];
    p[i] = z[i];
    gg += g[i] * g[i];
    rz += r[i] * z[i];
  }
  t.sum2(gg, rz);  // its barrier also publishes p
  const T gnorm = root(gg), threshold = rel_tol * gnorm;
  T rnorm = gnorm;
  int it = 0;
  while (it < max_iters && !(rnorm <= threshold)) {
    symmetric_matvec(t, n, ld, A, p, q);
    T pq = T(0);
    for (int i = t.rank(); i < n; i += t.size()) pq += p[i] * q[i];
    pq = t.sum(pq);
    // Non-positive curvature (A not SPD) or overflow: stop this sample with the current x.
    if (!(pq > T(0)) || !finite(pq)) break;
    const T alpha = rz / pq;
    if (!finite(alpha)) break;
    T rr = T(0), rz_new = T(0);
    for (int i = t.rank(); i < n; i += t.size()) {
      x[i] += alpha * p[i];
      r[i] -= alpha * q[i];
      z[i] = minv[i] * r[i];
      rr += r[i] * r[i];
      rz_new += r[i] * z[i];
    }
    t.sum2(rr, rz_new);
    ++it;
    rnorm = root(rr);
    if (rnorm <= threshold || !(rz_new > T(0)) || !finite(rz_new)) break;
    const T beta = rz_new / rz;
    rz = rz_new;
    for (int i = t.rank(); i < n; i += t.size()) p[i] = z[i] + beta * p[i];
    t.sync();  // p is read whole by the next matvec
  }
  for (int i = t.rank(); i < n; i += t.size()) x_out[i] = x[i];
  if (t.rank() == 0) {
    *iters_out = it;
    *rel_residual_out = gnorm > T(0) ? rnorm / gnorm : T(0);
  }
}

}  // namespace solve
}  // namespace smplfast
