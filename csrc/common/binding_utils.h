// Helpers shared by every binding translation unit: where a call runs (Target), dtype codes, and the
// CPU/CUDA dispatch that releases the GIL. Entry points live next to their kernels
// (csrc/<area>/*_bind.cpp) and are registered from csrc/bindings.cpp.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/macros.h"

namespace smplfast {
namespace bind {

namespace py = pybind11;

// Where a call runs: device_type 0 = CPU, 1 = CUDA (device index and stream handle used then).
struct Target {
  int device_type;
  int device_index;
  uintptr_t stream;
};

inline DType to_dtype(int code) {
  if (code == 0) return DType::Float32;
  if (code == 1) return DType::Float64;
  throw std::invalid_argument("smplfast._C: dtype code must be 0 (float32) or 1 (float64), got " +
                              std::to_string(code));
}

template <typename Args, typename CpuFn, typename CudaFn>
void run(const Target& t, int dtype, const Args& args, CpuFn cpu, CudaFn cuda, const char* name) {
  const DType dt = to_dtype(dtype);
  py::gil_scoped_release release;
  if (t.device_type == 0) {
    cpu(dt, args);
    return;
  }
#ifdef SMPLFAST_WITH_CUDA
  cuda(dt, args, t.device_index, reinterpret_cast<void*>(t.stream));
#else
  (void)cuda;
  throw std::runtime_error(std::string("smplfast was built without CUDA kernels; ") + name +
                           " cannot run on a CUDA tensor (rebuild with SMPLFAST_CUDA=ON)");
#endif
}

template <typename T>
const T* cptr(uintptr_t p) { return reinterpret_cast<const T*>(p); }
inline void* mptr(uintptr_t p) { return reinterpret_cast<void*>(p); }
inline const void* vptr(uintptr_t p) { return reinterpret_cast<const void*>(p); }

#ifdef SMPLFAST_WITH_CUDA
#define SF_CUDA_FN(name) name##_cuda
#else
#define SF_CUDA_FN(name) nullptr
#endif

}  // namespace bind
}  // namespace smplfast
