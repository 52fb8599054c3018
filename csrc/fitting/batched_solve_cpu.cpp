// OpenMP kernels for the batched solves (see batched_solve.h): one sample per thread, SerialTeam.
#include <omp.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fitting/batched_solve.h"

namespace smplfast {
namespace {

using solve::SerialTeam;

// The per-sample solvers are compiled for several x86-64 levels and picked at load time (GCC
// function multi-versioning): the module is built for baseline x86-64 (SSE2), and AVX2/AVX-512 with
// FMA run the O(n^3) update loops several times faster. `flatten` inlines the shared maths into
// each clone so it is compiled for that level too.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#else
#define SF_CPU_CLONES
#endif

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

// A team of OpenMP threads playing the part of a CUDA block: `lanes` consecutive ranks form a row
// group (a warp), reductions go through shared arrays between barriers.
template <typename T>
struct OmpTeam {
  static constexpr bool kSerial = false;
  int r, s, lanes;
  T* red;     // 2 * s, shared by the team
  int* flags;  // s, shared by the team
  int rank() const { return r; }
  int size() const { return s; }
  int row0() const { return r / lanes; }
  int row_step() const { return s / lanes; }
  int col0() const { return r % lanes; }
  int col_step() const { return lanes; }
  void sync() const {
#pragma omp barrier
  }
  bool any(bool v) const {
    flags[r] = v ? 1 : 0;
    sync();
    bool out = false;
    for (int i = 0; i < s; ++i) out |= flags[i] != 0;
    sync();
    return out;
  }
  void sum2(T& a, T& b) const {
    red[2 * r] = a;
    red[2 * r + 1] = b;
    sync();
    a = T(0);
    b = T(0);
    for (int i = 0; i < s; ++i) {
      a += red[2 * i];
      b += red[2 * i + 1];
    }
    sync();
  }
  T sum(T v) const {
    T unused = T(0);
    sum2(v, unused);
    return v;
  }
};

template <typename T, typename Body>
void run_team(int threads, int lanes, Body body) {
  if (threads < 1 || lanes < 1 || threads % lanes != 0)
    throw std::invalid_argument("batched_solve team emulation: threads must be a positive multiple of lanes; got " +
                                std::to_string(threads) + " and " + std::to_string(lanes));
  std::vector<T> red(2 * static_cast<size_t>(threads));
  std::vector<int> flags(static_cast<size_t>(threads));
  int got = threads;
#pragma omp parallel num_threads(threads)
  {
    if (omp_get_num_threads() != threads) {
#pragma omp single
      got = omp_get_num_threads();
    } else {
      OmpTeam<T> team{omp_get_thread_num(), threads, lanes, red.data(), flags.data()};
      body(team);
    }
  }
  if (got != threads)
    throw std::runtime_error("batched_solve team emulation: OpenMP gave " + std::to_string(got) + " threads, not " +
                             std::to_string(threads));
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
