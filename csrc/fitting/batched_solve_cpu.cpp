// OpenMP kernels for the batched solves (see batched_solve.h): one sample per thread, SerialTeam.
#include <omp.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/cpu_clones.h"
#include "fitting/batched_solve.h"
#include "fitting/omp_team.h"

namespace smplfast {
namespace {

using solve::SerialTeam;
using solve::OmpTeam;
using solve::run_team;

SF_CPU_CLONES bool cholesky_sample(int n, int ld, const float* H, const float* g, float lambda, const float* d,
                                   float* scratch, float* x) {
  return solve::damped_cholesky_sample(SerialTeam{}, n, ld, H, g, lambda, d, scratch, x);
}

SF_CPU_CLONES bool cholesky_sample(int n, int ld, const double* H, const double* g, double lambda, const double* d,
                                   double* scratch, double* x) {
  return solve::damped_cholesky_sample(SerialTeam{}, n, ld, H, g, lambda, d, scratch, x);
}

SF_CPU_CLONES void cg_sample(int n, int ld, const float* H, const float* g, float lambda, const float* d,
                             int max_iters, float rel_tol, float* scratch, float* x, int32_t* iters, float* rel) {
  solve::cg_sample(SerialTeam{}, n, ld, H, g, lambda, d, max_iters, rel_tol, scratch, x, iters, rel);
}

SF_CPU_CLONES void cg_sample(int n, int ld, const double* H, const double* g, double lambda, const double* d,
                             int max_iters, double rel_tol, double* scratch, double* x, int32_t* iters, double* rel) {
  solve::cg_sample(SerialTeam{}, n, ld, H, g, lambda, d, max_iters, rel_tol, scratch, x, iters, rel);
}

// Row stride of the CPU scratch: whole 64-byte lines per row keep the vector loops aligned alike.
template <typename T>
int cpu_ld(int64_t n) {
  constexpr int64_t per_line = 64 / sizeof(T);
  return static_cast<int>((n + per_line - 1) / per_line * per_line);
}

// Enough work to be worth waking a second thread (~ n^3 / 6 multiply-adds per Cholesky).
inline bool parallel_worth_it(int64_t batch, int64_t work_per_sample) {
  return batch > 1 && batch * work_per_sample > 32768;
}

// Samples handed out at a time: small dynamic chunks balance failed or inactive samples (which
// finish early) and threads the OS preempts, while each chunk stays long enough (~8k multiply-adds)
// that taking it costs little.
inline int dynamic_chunk(int64_t work_per_sample) {
  const int64_t chunk = 8192 / (work_per_sample + 1) + 1;
  return static_cast<int>(chunk < 256 ? chunk : 256);
}

template <typename T>
void cholesky_impl(const DampedCholeskyArgs& a) {
  const int64_t B = a.batch;
  const int n = static_cast<int>(a.n);
  const int ld = cpu_ld<T>(n);
  const T* H = static_cast<const T*>(a.H);
  const T* g = static_cast<const T*>(a.g);
  const T* damping = static_cast<const T*>(a.damping);
  const T* diag = static_cast<const T*>(a.diag);
  T* x = static_cast<T*>(a.x);
  const int64_t work = a.n * a.n * a.n / 6 + a.n * a.n;
  const int chunk = dynamic_chunk(work);
#pragma omp parallel if (parallel_worth_it(B, work))
  {
    std::vector<T> scratch(static_cast<size_t>(solve::cholesky_scratch(n, ld)));
#pragma omp for schedule(dynamic, chunk)
    for (int64_t b = 0; b < B; ++b) {
      T* xb = x + b * n;
      if (a.active && !a.active[b]) {
        for (int i = 0; i < n; ++i) xb[i] = T(0);
        a.ok[b] = 1;
        continue;
      }
      a.ok[b] = cholesky_sample(n, ld, H + b * n * n, g + b * n, damping[b], diag + b * n, scratch.data(), xb) ? 1 : 0;
    }
  }
}

template <typename T>
void cg_impl(const ConjugateGradientArgs& a) {
  const int64_t B = a.batch;
  const int n = static_cast<int>(a.n);
  const int ld = cpu_ld<T>(n);
  const int max_iters = static_cast<int>(a.max_iters);
  const T rel_tol = static_cast<T>(a.rel_tol);
  const T* H = static_cast<const T*>(a.H);
  const T* g = static_cast<const T*>(a.g);
  const T* damping = static_cast<const T*>(a.damping);
  const T* diag = static_cast<const T*>(a.diag);
  T* x = static_cast<T*>(a.x);
  T* rel = static_cast<T*>(a.rel_residual);
  const int64_t work = a.n * a.n * (a.max_iters + 1);
  const int chunk = dynamic_chunk(work);
#pragma omp parallel if (parallel_worth_it(B, work))
  {
    std::vector<T> scratch(static_cast<size_t>(solve::cg_scratch(n, ld)));
#pragma omp for schedule(dynamic, chunk)
    for (int64_t b = 0; b < B; ++b) {
      T* xb = x + b * n;
      if (a.active && !a.active[b]) {
        for (int i = 0; i < n; ++i) xb[i] = T(0);
        a.iters[b] = 0;
        rel[b] = T(0);
        continue;
      }
      cg_sample(n, ld, H + b * n * n, g + b * n, damping[b], diag + b * n, max_iters, rel_tol, scratch.data(), xb,
                a.iters + b, rel + b);
    }
  }
}

template <typename T>
void cholesky_team_impl(const DampedCholeskyArgs& a, int threads, int lanes) {
  const int n = static_cast<int>(a.n);
  const int ld = n;
  std::vector<T> scratch(static_cast<size_t>(solve::cholesky_scratch(n, ld)));
  run_team<T>(threads, lanes, [&](const OmpTeam<T>& team) {
    for (int64_t b = 0; b < a.batch; ++b) {
      T* xb = static_cast<T*>(a.x) + b * n;
      team.sync();  // the previous sample is done with the scratch
      if (a.active && !a.active[b]) {
        for (int i = team.rank(); i < n; i += team.size()) xb[i] = T(0);
        if (team.rank() == 0) a.ok[b] = 1;
        continue;
      }
      const bool ok = solve::damped_cholesky_sample(
          team, n, ld, static_cast<const T*>(a.H) + b * n * n, static_cast<const T*>(a.g) + b * n,
          static_cast<const T*>(a.damping)[b], static_cast<const T*>(a.diag) + b * n, scratch.data(), xb);
      if (team.rank() == 0) a.ok[b] = ok ? 1 : 0;
    }
  });
}

template <typename T>
void cg_team_impl(const ConjugateGradientArgs& a, int threads, int lanes) {
  const int n = static_cast<int>(a.n);
  const int ld = n;
  std::vector<T> scratch(static_cast<size_t>(solve::cg_scratch(n, ld)));
  run_team<T>(threads, lanes, [&](const OmpTeam<T>& team) {
    for (int64_t b = 0; b < a.batch; ++b) {
      T* xb = static_cast<T*>(a.x) + b * n;
      T* rel = static_cast<T*>(a.rel_residual) + b;
      team.sync();
      if (a.active && !a.active[b]) {
        for (int i = team.rank(); i < n; i += team.size()) xb[i] = T(0);
        if (team.rank() == 0) {
          a.iters[b] = 0;
          *rel = T(0);
        }
        continue;
      }
      solve::cg_sample(team, n, ld, static_cast<const T*>(a.H) + b * n * n, static_cast<const T*>(a.g) + b * n,
                       static_cast<const T*>(a.damping)[b], static_cast<const T*>(a.diag) + b * n,
                       static_cast<int>(a.max_iters), static_cast<T>(a.rel_tol), scratch.data(), xb, a.iters + b,
                       rel);
    }
  });
}

}  // namespace

void damped_cholesky_solve_cpu(DType dtype, const DampedCholeskyArgs& a) {
  if (dtype == DType::Float64)
    cholesky_impl<double>(a);
  else
    cholesky_impl<float>(a);
}

void conjugate_gradient_solve_cpu(DType dtype, const ConjugateGradientArgs& a) {
  if (dtype == DType::Float64)
    cg_impl<double>(a);
  else
    cg_impl<float>(a);
}

void damped_cholesky_solve_team_cpu(DType dtype, const DampedCholeskyArgs& a, int threads, int lanes) {
  if (dtype == DType::Float64)
    cholesky_team_impl<double>(a, threads, lanes);
  else
    cholesky_team_impl<float>(a, threads, lanes);
}

void conjugate_gradient_solve_team_cpu(DType dtype, const ConjugateGradientArgs& a, int threads, int lanes) {
  if (dtype == DType::Float64)
    cg_team_impl<double>(a, threads, lanes);
  else
    cg_team_impl<float>(a, threads, lanes);
}

}  // namespace smplfast
