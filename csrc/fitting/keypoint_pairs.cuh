// The CUDA kernel that builds project_keypoints' (keypoint, joint) pair table (see keypoint_jacobian.h):
// one block per keypoint, its threads over the table's columns. Shared by every kernel that reads keypoints.
#pragma once

#include <cuda_runtime.h>

#include "fitting/keypoint_jacobian.h"

namespace smplfast {

constexpr int kPairThreads = 128;

template <typename T>
__global__ void build_pairs_kernel(KeypointArgs a, kp::Pairs<T> pt) {
  const kp::Model<T> m = kp::make_model<T>(a);
  const int64_t k = blockIdx.x;
  if (threadIdx.x == 0) kp::pair_joints(k, m, pt);
  __syncthreads();
  for (int64_t q = threadIdx.x; q < pt.stride; q += blockDim.x) kp::pair_columns(k, q, q + 1, m, pt);
}

}  // namespace smplfast
