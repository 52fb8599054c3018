// The (keypoint, joint) pair table of keypoint_jacobian.h built on the CPU, once per call (model only).
#pragma once

#include <memory>
#include <vector>

#include "fitting/keypoint_jacobian.h"

namespace smplfast {
namespace kp {

template <typename T>
struct CpuPairTable {
  std::unique_ptr<T[]> data;  // slots past a keypoint's count are never read: no initialisation
  std::vector<int32_t> ints;
  Pairs<T> pairs;

  CpuPairTable(const KeypointArgs& a, const Model<T>& m) {
    const int64_t J = a.joints, Nk = a.keypoints, K = a.influences;
    const int64_t stride = pair_stride(J, a.betas, a.pose_blend);
    data.reset(new T[static_cast<size_t>(Nk * J * stride)]);
    ints.resize(static_cast<size_t>(Nk + Nk * J + a.nnz * K));
    pairs = Pairs<T>{stride, ints.data(), ints.data() + Nk, ints.data() + Nk + Nk * J, data.get()};
    for (int64_t k = 0; k < Nk; ++k) pair_joints(k, m, pairs);
#pragma omp parallel for schedule(dynamic) if (a.nnz * K * stride > (1 << 16))
    for (int64_t k = 0; k < Nk; ++k) pair_columns(k, 0, stride, m, pairs);
  }
  CpuPairTable(const CpuPairTable&) = delete;
  CpuPairTable& operator=(const CpuPairTable&) = delete;
};

}  // namespace kp
}  // namespace smplfast
