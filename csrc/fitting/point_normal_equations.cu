// CUDA kernel of point_normal_equations (see point_normal_equations.h), on the caller's stream: one
// thread block per sample (grid-stride over samples, a few blocks per SM); each pass, every thread
// computes one point's rows into the block's scratch (the caller's workspace), then the block adds
// the pass's rows to H entry by entry.
#include <cuda_runtime.h>

#include <stdexcept>

#include "common/cuda_utils.h"
#include "fitting/block_team.cuh"
#include "fitting/point_normal_equations.h"

namespace smplfast {
namespace {

constexpr int kThreads = 128;
constexpr int kBlocksPerSM = 4;

template <typename T, int kMaxJ>
__global__ void __launch_bounds__(kThreads) pne_kernel(PointNormalArgs a, T* scratch, int64_t elems) {
  __shared__ T red[solve::kRedSlots];
  const solve::BlockTeam<T> team{red};
  T* mine = scratch + blockIdx.x * elems;
  for (int64_t b = blockIdx.x; b < a.batch; b += gridDim.x) {
    team.sync();
    pne::sample<kMaxJ, T>(team, a, b, mine, nullptr);
  }
}


int64_t block_elems(const PointNormalArgs& a) {
  return pne::scratch_elems(3 * a.joints + a.betas + 3, kThreads);
}

template <typename T>
void launch(const PointNormalArgs& a, int device, cudaStream_t s) {
  if (a.batch == 0) return;
  const unsigned grid = blocks_per_sample_grid(a.batch, device, kBlocksPerSM);
  T* ws = static_cast<T*>(a.workspace);
  const int64_t elems = block_elems(a);
  if (a.joints <= 24)
    pne_kernel<T, 24><<<grid, kThreads, 0, s>>>(a, ws, elems);
  else if (a.joints <= 32)
    pne_kernel<T, 32><<<grid, kThreads, 0, s>>>(a, ws, elems);
  else
    pne_kernel<T, kMaxJoints><<<grid, kThreads, 0, s>>>(a, ws, elems);
}

}  // namespace

void point_normal_equations_cuda(DType dtype, const PointNormalArgs& a, int device, void* stream) {
  DeviceGuard guard(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float64)
    launch<double>(a, device, s);
  else
    launch<float>(a, device, s);
  check_cuda(cudaGetLastError(), "point_normal_equations");
}

int64_t point_normal_equations_cuda_workspace_elems(const PointNormalArgs& a, int device) {
  return a.batch == 0 ? 0 : int64_t(blocks_per_sample_grid(a.batch, device, kBlocksPerSM)) * block_elems(a);
}

}  // namespace smplfast
