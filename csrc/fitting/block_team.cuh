// A CUDA thread block as the "team" of the per-sample algorithms (see batched_solve.h): warps take
// rows, lanes take columns; reductions by warp shuffles and kRedSlots shared slots.
#pragma once

#include <cuda_runtime.h>

namespace smplfast {
namespace solve {

constexpr int kWarp = 32;
// Shared slots of the block reductions: two per warp, then the two results.
constexpr int kRedSlots = 2 * kWarp + 2;

// A thread block working on one sample: warps take rows, lanes take columns.
template <typename T>
struct BlockTeam {
  static constexpr bool kSerial = false;
  T* red;  // kRedSlots entries of shared memory
  __device__ int rank() const { return static_cast<int>(threadIdx.x); }
  __device__ int size() const { return static_cast<int>(blockDim.x); }
  __device__ int row0() const { return static_cast<int>(threadIdx.x) / kWarp; }
  __device__ int row_step() const { return static_cast<int>(blockDim.x) / kWarp; }
  __device__ int col0() const { return static_cast<int>(threadIdx.x) % kWarp; }
  __device__ int col_step() const { return kWarp; }
  __device__ void sync() const { __syncthreads(); }
  __device__ bool any(bool v) const { return __syncthreads_or(v ? 1 : 0) != 0; }
  __device__ void sum2(T& a, T& b) const {
    for (int o = kWarp / 2; o > 0; o /= 2) {
      a += __shfl_down_sync(0xffffffffu, a, o);
      b += __shfl_down_sync(0xffffffffu, b, o);
    }
    const int lane = rank() % kWarp, warp = rank() / kWarp, warps = size() / kWarp;
    if (lane == 0) {
      red[warp] = a;
      red[kWarp + warp] = b;
    }
    __syncthreads();
    if (warp == 0) {
      a = lane < warps ? red[lane] : T(0);
      b = lane < warps ? red[kWarp + lane] : T(0);
      for (int o = kWarp / 2; o > 0; o /= 2) {
        a += __shfl_down_sync(0xffffffffu, a, o);
        b += __shfl_down_sync(0xffffffffu, b, o);
      }
      if (lane == 0) {
        red[2 * kWarp] = a;
        red[2 * kWarp + 1] = b;
      }
    }
    __syncthreads();
    // The next reduction writes the result slots only after its first barrier, which every thread
    // reaches after reading them here, so no trailing barrier is needed.
    a = red[2 * kWarp];
    b = red[2 * kWarp + 1];
  }
  __device__ T sum(T v) const {
    T unused = T(0);
    sum2(v, unused);
    return v;
  }
};

}  // namespace solve
}  // namespace smplfast
