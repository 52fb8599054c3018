// OpenMP kernel of point_normal_equations (see point_normal_equations.h): one sample per thread with
// dense rank-two row updates; and the team emulation of the CUDA block path for tests.
#include <vector>

#include "common/cpu_clones.h"
#include "fitting/omp_team.h"
#include "fitting/point_normal_equations.h"

namespace smplfast {
namespace {

// One sample, compiled per x86-64 level (the row updates vectorise).
SF_CPU_CLONES void run_sample(const PointNormalArgs& a, int64_t b, float* scratch, int32_t* idx) {
  pne::sample<kMaxJoints, float>(solve::SerialTeam{}, a, b, scratch, idx);
}

SF_CPU_CLONES void run_sample(const PointNormalArgs& a, int64_t b, double* scratch, int32_t* idx) {
  pne::sample<kMaxJoints, double>(solve::SerialTeam{}, a, b, scratch, idx);
}

template <typename T>
void impl(const PointNormalArgs& a) {
  const int64_t n = 3 * a.joints + a.betas + 3;
#pragma omp parallel if (a.batch > 1)
  {
    std::vector<T> scratch(static_cast<size_t>(pne::scratch_elems(n, 1)));
    std::vector<int32_t> idx(static_cast<size_t>(n));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < a.batch; ++b) run_sample(a, b, scratch.data(), idx.data());
  }
}

template <typename T>
void team_impl(const PointNormalArgs& a, int threads, int lanes) {
  const int64_t n = 3 * a.joints + a.betas + 3;
  std::vector<T> scratch(static_cast<size_t>(pne::scratch_elems(n, threads)));
  solve::run_team<T>(threads, lanes, [&](const solve::OmpTeam<T>& team) {
    for (int64_t b = 0; b < a.batch; ++b) {
      team.sync();
      pne::sample<kMaxJoints, T>(team, a, b, scratch.data(), nullptr);
    }
  });
}

}  // namespace

void point_normal_equations_cpu(DType dtype, const PointNormalArgs& a) {
  if (dtype == DType::Float64)
    impl<double>(a);
  else
    impl<float>(a);
}

void point_normal_equations_team_cpu(DType dtype, const PointNormalArgs& a, int threads, int lanes) {
  if (dtype == DType::Float64)
    team_impl<double>(a, threads, lanes);
  else
    team_impl<float>(a, threads, lanes);
}

}  // namespace smplfast
