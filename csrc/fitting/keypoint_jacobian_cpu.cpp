// OpenMP kernel of project_keypoints (see keypoint_jacobian.h): the pair table once per call, then
// one sample per iteration, each thread reusing one scratch buffer for its samples' state.
#include <vector>

#include "fitting/keypoint_jacobian.h"
#include "fitting/keypoint_pairs_cpu.h"

namespace smplfast {
namespace {

template <typename T>
void run_sample(const kp::Model<T>& m, const kp::Pairs<T>& pt, const kp::Sample<T>& in, const kp::State<T>& st,
                T sigma, const kp::Out<T>& out, bool jac) {
  for (int64_t j = 0; j < m.J; ++j) kp::joint_local(j, m, in, st, jac);
  if (m.pose_blend)
    for (int64_t j = 1; j < m.J; ++j) kp::pose_feature(j, st);
  kp::chain(m, st);
  if (jac) {
    for (int64_t j = 0; j < m.J; ++j) kp::joint_pose_factor(j, m, st);
    for (int64_t n = 0; n < m.nb; ++n) kp::shape_column(n, m, st);
  }
  for (int64_t k = 0; k < m.Nk; ++k) kp::keypoint<kMaxJoints>(k, m, pt, in, st, sigma, out);
}

template <typename T>
void project_keypoints_impl(const KeypointArgs& a) {
  const int64_t B = a.batch, J = a.joints, nb = a.betas, Nk = a.keypoints, K = a.influences;
  if (B == 0) return;
  const kp::Model<T> m = kp::make_model<T>(a);
  const bool jac = a.jacobian;

  const kp::CpuPairTable<T> table(a, m);
  const kp::Pairs<T>& pt = table.pairs;

  const int64_t shape_size = jac ? J * 3 * nb : 0;
  const int64_t pf_size = a.pose_blend ? 9 * (J - 1) : 0;
  const size_t size = static_cast<size_t>(J * kp::kJointStride + pf_size + 2 * shape_size);
  const T sigma = static_cast<T>(a.sigma);
#pragma omp parallel if (B > 1)
  {
    std::vector<T> buf(size);
    T* p = buf.data();
    const kp::State<T> st{p, p + J * kp::kJointStride, p + J * kp::kJointStride + pf_size,
                          p + J * kp::kJointStride + pf_size + shape_size};
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b)
      run_sample(m, pt, kp::make_sample<T>(a, b), st, sigma, kp::make_out<T>(a, b), jac);
  }
}

}  // namespace

void project_keypoints_cpu(DType dtype, const KeypointArgs& a) {
  if (dtype == DType::Float64)
    project_keypoints_impl<double>(a);
  else
    project_keypoints_impl<float>(a);
}

}  // namespace smplfast
