// Portability macros shared by the CPU (.cpp) and CUDA (.cu) translation units.
#pragma once

#if defined(__CUDACC__)
#define SF_HD __host__ __device__ __forceinline__
#else
#define SF_HD inline
#endif

#include <cstdint>

namespace smplfast {

// Element type of every floating-point buffer an op receives (index buffers are int32/int64).
enum class DType : int { Float32 = 0, Float64 = 1 };

// Largest kinematic tree the chain kernels accept (SMPL 24, SMPL-H 52, SMPL-X 55); bounds per-thread scratch.
constexpr int kMaxJoints = 64;

}  // namespace smplfast
