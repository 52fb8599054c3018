// CUDA kernel of lm_fit (see lm_fit.h), launched on the caller's stream: the pair table (one block
// per keypoint), then one thread block per sample running the whole LM loop with the block as the
// team (BlockTeam). The grid is capped at a few blocks per SM that loop over the samples, so the
// per-block scratch (H, the step's H, the solve, the keypoints' Jacobian rows) in the caller's
// workspace stays small; only the reductions use shared memory.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common/cuda_utils.h"
#include "fitting/block_team.cuh"
#include "fitting/keypoint_pairs.cuh"
#include "fitting/lm_fit.h"

namespace smplfast {
namespace {

constexpr int kThreads = 128;
constexpr int kBlocksPerSM = 4;

template <typename T, int kMaxJ>
__global__ void __launch_bounds__(kThreads) lm_fit_kernel(LMFitArgs a, kp::Pairs<T> pt, T* scratch, int64_t elems) {
  __shared__ T red[solve::kRedSlots];
  const solve::BlockTeam<T> team{red};
  const kp::Model<T> m = kp::make_model<T>(a.model);
  const lmfit::Scratch<T> s = lmfit::carve<T>(a, scratch + blockIdx.x * elems, nullptr);
  for (int64_t b = blockIdx.x; b < a.batch; b += gridDim.x) {
    team.sync();  // the previous sample of this block is done with the scratch
    lmfit::lm_sample<kMaxJ>(team, a, m, pt, b, s);
  }
}


int64_t pair_floats(const LMFitArgs& a) {
  const KeypointArgs& k = a.model;
  return k.keypoints * k.joints * pair_stride(k.joints, k.betas, k.pose_blend);
}

template <typename T>
void launch(const LMFitArgs& a, int device, cudaStream_t s) {
  if (a.batch == 0) return;
  const KeypointArgs& k = a.model;
  const int64_t J = k.joints, Nk = k.keypoints;
  T* ws = static_cast<T*>(a.workspace);
  int32_t* wi = k.workspace_int;
  const kp::Pairs<T> pt{pair_stride(J, k.betas, k.pose_blend), wi, wi + Nk, wi + Nk + Nk * J, ws};
  if (Nk > 0) build_pairs_kernel<T><<<static_cast<unsigned>(Nk), kPairThreads, 0, s>>>(k, pt);
  const unsigned grid = blocks_per_sample_grid(a.batch, device, kBlocksPerSM);
  T* scratch = ws + pair_floats(a);
  const int64_t elems = lmfit::scratch_elems(a);
  if (J <= 24)
    lm_fit_kernel<T, 24><<<grid, kThreads, 0, s>>>(a, pt, scratch, elems);
  else if (J <= 32)
    lm_fit_kernel<T, 32><<<grid, kThreads, 0, s>>>(a, pt, scratch, elems);
  else
    lm_fit_kernel<T, kMaxJoints><<<grid, kThreads, 0, s>>>(a, pt, scratch, elems);
}

}  // namespace

void lm_fit_cuda(DType dtype, const LMFitArgs& a, int device, void* stream) {
  if (a.batch > 0x7fffffff || a.model.keypoints > 0x7fffffff)
    throw std::invalid_argument("lm_fit: CUDA batch and keypoint counts must be below 2^31");
  DeviceGuard guard(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float64)
    launch<double>(a, device, s);
  else
    launch<float>(a, device, s);
  check_cuda(cudaGetLastError(), "lm_fit");
}

void lm_fit_cuda_workspace_elems(DType dtype, const LMFitArgs& a, int device, int64_t* n_float, int64_t* n_int) {
  (void)dtype;
  const KeypointArgs& k = a.model;
  *n_int = k.keypoints + k.keypoints * k.joints + k.nnz * k.influences;
  const int64_t blocks = blocks_per_sample_grid(a.batch, device, kBlocksPerSM);
  *n_float = a.batch == 0 ? 0 : pair_floats(a) + blocks * lmfit::scratch_elems(a);
}

}  // namespace smplfast
