// CUDA kernels of project_keypoints (see keypoint_jacobian.h), launched on the caller's stream:
// one block per keypoint builds the pair table, then one block per sample keeps the joints' state
// in shared memory and runs each stage's loop over its threads. The pair table and the per-sample
// shape derivatives live in the caller's workspace.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common/cuda_utils.h"
#include "fitting/keypoint_jacobian.h"
#include "fitting/keypoint_pairs.cuh"

namespace smplfast {
namespace {

// Shared memory: parents [J] int64, joint blocks [J, kJointStride], pose feature [9 (J - 1)].
template <typename T>
size_t sample_smem(const KeypointArgs& a) {
  const size_t J = static_cast<size_t>(a.joints);
  return J * sizeof(int64_t) + (J * kp::kJointStride + (a.pose_blend ? 9 * (J - 1) : 0)) * sizeof(T);
}

// kMaxJ >= J bounds each thread's per-joint scratch in kp::keypoint (its stack is reserved for every
// resident thread: about 1.2 KB at 24 joints in double instead of 12 KB for 64).
template <typename T, int kMaxJ>
__global__ void project_keypoints_kernel(KeypointArgs a, kp::Pairs<T> pt, T* shape_ws) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t b = blockIdx.x;
  const int64_t J = a.joints, nb = a.betas;
  const bool jac = a.jacobian;
  int64_t* parents = reinterpret_cast<int64_t*>(smem_raw);
  T* joints = reinterpret_cast<T*>(smem_raw + J * sizeof(int64_t));

  kp::Model<T> m = kp::make_model<T>(a);
  for (int64_t j = threadIdx.x; j < J; j += blockDim.x) parents[j] = a.parents[j];
  m.parents = parents;
  const int64_t shape_size = jac ? J * 3 * nb : 0;
  T* ws = shape_ws + b * 2 * shape_size;
  const kp::State<T> st{joints, joints + J * kp::kJointStride, ws, ws + shape_size};
  const kp::Sample<T> in = kp::make_sample<T>(a, b);
  __syncthreads();

  for (int64_t j = threadIdx.x; j < J; j += blockDim.x) kp::joint_local(j, m, in, st, jac);
  __syncthreads();
  if (a.pose_blend)
    for (int64_t j = 1 + threadIdx.x; j < J; j += blockDim.x) kp::pose_feature(j, st);
  if (threadIdx.x == 0) kp::chain(m, st);
  __syncthreads();
  if (jac) {
    for (int64_t j = threadIdx.x; j < J; j += blockDim.x) kp::joint_pose_factor(j, m, st);
    for (int64_t n = threadIdx.x; n < nb; n += blockDim.x) kp::shape_column(n, m, st);
    __syncthreads();
  }
  const kp::Out<T> out = kp::make_out<T>(a, b);
  for (int64_t k = threadIdx.x; k < a.keypoints; k += blockDim.x)
    kp::keypoint<kMaxJ>(k, m, pt, in, st, static_cast<T>(a.sigma), out);
}

template <typename T>
void launch(const KeypointArgs& a, cudaStream_t s) {
  if (a.batch == 0) return;
  const int64_t J = a.joints, Nk = a.keypoints;
  const int64_t stride = pair_stride(J, a.betas, a.pose_blend);
  T* ws = static_cast<T*>(a.workspace);
  int32_t* wi = a.workspace_int;
  const kp::Pairs<T> pt{stride, wi, wi + Nk, wi + Nk + Nk * J, ws};
  if (Nk > 0) build_pairs_kernel<T><<<static_cast<unsigned>(Nk), kPairThreads, 0, s>>>(a, pt);
  const int threads = Nk > 64 ? 128 : 64;
  const size_t smem = sample_smem<T>(a);
  const unsigned blocks = static_cast<unsigned>(a.batch);
  T* shape_ws = ws + Nk * J * stride;
  if (J <= 24)
    project_keypoints_kernel<T, 24><<<blocks, threads, smem, s>>>(a, pt, shape_ws);
  else if (J <= 32)
    project_keypoints_kernel<T, 32><<<blocks, threads, smem, s>>>(a, pt, shape_ws);
  else
    project_keypoints_kernel<T, kMaxJoints><<<blocks, threads, smem, s>>>(a, pt, shape_ws);
}

}  // namespace

void project_keypoints_cuda(DType dtype, const KeypointArgs& a, int device, void* stream) {
  if (a.batch > 0x7fffffff || a.keypoints > 0x7fffffff)
    throw std::invalid_argument("project_keypoints: CUDA batch and keypoint counts must be below 2^31");
  DeviceGuard guard(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float64)
    launch<double>(a, s);
  else
    launch<float>(a, s);
  check_cuda(cudaGetLastError(), "project_keypoints");
}

}  // namespace smplfast
