// OpenMP kernel of lm_fit (see lm_fit.h): the pair table once per call, then one sample per thread
// (SerialTeam) with its own scratch; and the team emulation of the CUDA block path for tests.
#include <omp.h>

#include <stdexcept>
#include <vector>

#include "common/cpu_clones.h"
#include "fitting/keypoint_pairs_cpu.h"
#include "fitting/lm_fit.h"
#include "fitting/omp_team.h"

namespace smplfast {
namespace {

// One sample's whole fit, compiled per x86-64 level (the solve and the JᵀJ updates vectorise).
SF_CPU_CLONES void fit_sample(const LMFitArgs& a, const kp::Model<float>& m, const kp::Pairs<float>& pt, int64_t b,
                              const lmfit::Scratch<float>& s) {
  lmfit::lm_sample<kMaxJoints>(solve::SerialTeam{}, a, m, pt, b, s);
}

SF_CPU_CLONES void fit_sample(const LMFitArgs& a, const kp::Model<double>& m, const kp::Pairs<double>& pt, int64_t b,
                              const lmfit::Scratch<double>& s) {
  lmfit::lm_sample<kMaxJoints>(solve::SerialTeam{}, a, m, pt, b, s);
}

template <typename T>
void lm_fit_impl(const LMFitArgs& a) {
  if (a.batch == 0) return;
  const kp::Model<T> m = kp::make_model<T>(a.model);
  const kp::CpuPairTable<T> table(a.model, m);
  const int64_t elems = lmfit::scratch_elems(a);
  const int64_t P = 3 * a.model.joints + a.model.betas + 3;
#pragma omp parallel if (a.batch > 1)
  {
    std::vector<T> buf(static_cast<size_t>(elems));
    std::vector<int32_t> ibuf(static_cast<size_t>(P));
    const lmfit::Scratch<T> s = lmfit::carve<T>(a, buf.data(), ibuf.data());
    // Samples stop after different numbers of iterations: hand them out one at a time.
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < a.batch; ++b) fit_sample(a, m, table.pairs, b, s);
  }
}

template <typename T>
void lm_fit_team_impl(const LMFitArgs& a, int threads, int lanes) {
  if (a.batch == 0) return;
  const kp::Model<T> m = kp::make_model<T>(a.model);
  const kp::CpuPairTable<T> table(a.model, m);
  std::vector<T> buf(static_cast<size_t>(lmfit::scratch_elems(a)));
  const lmfit::Scratch<T> s = lmfit::carve<T>(a, buf.data(), nullptr);
  solve::run_team<T>(threads, lanes, [&](const solve::OmpTeam<T>& team) {
    for (int64_t b = 0; b < a.batch; ++b) {
      team.sync();  // the previous sample is done with the scratch
      lmfit::lm_sample<kMaxJoints>(team, a, m, table.pairs, b, s);
    }
  });
}

}  // namespace

void lm_fit_cpu(DType dtype, const LMFitArgs& a) {
  if (dtype == DType::Float64)
    lm_fit_impl<double>(a);
  else
    lm_fit_impl<float>(a);
}

void lm_fit_team_cpu(DType dtype, const LMFitArgs& a, int threads, int lanes) {
  if (dtype == DType::Float64)
    lm_fit_team_impl<double>(a, threads, lanes);
  else
    lm_fit_team_impl<float>(a, threads, lanes);
}

}  // namespace smplfast
