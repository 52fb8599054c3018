// Small CUDA host helpers: error checks that raise C++ exceptions (pybind11 turns them into
// Python RuntimeErrors), the driver-version check, and a guard that switches to the tensor's device
// for the call.
#pragma once

#include <cuda.h>  // CUcontext / CUresult types only: the driver is reached through cudart's entry points
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace smplfast {

// "13.0" from 13000.
inline std::string cuda_version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

// The message for a driver too old for the statically linked runtime (CUDART_VERSION).
inline std::string insufficient_driver_message() {
  int driver = 0;
  cudaDriverGetVersion(&driver);
  std::string msg = "smplfast's CUDA kernels use the CUDA " + cuda_version_string(CUDART_VERSION) +
                    " runtime (statically linked), which needs an NVIDIA driver supporting CUDA " +
                    std::to_string(CUDART_VERSION / 1000) + ".x";
  if (CUDART_VERSION / 1000 == 13) msg += " (Linux driver >= 580)";
  if (CUDART_VERSION / 1000 == 12) msg += " (Linux driver >= 525)";
  msg += driver > 0 ? "; this machine's driver supports CUDA " + cuda_version_string(driver)
                    : std::string("; no NVIDIA driver was found");
  msg += ". Update the driver, or rebuild smplfast with a CUDA toolkit the driver supports "
         "(CUDACXX=/path/to/nvcc pip install ...), or build it CPU-only with SMPLFAST_CUDA=OFF.";
  return msg;
}

inline void check_cuda(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  if (err == cudaErrorInsufficientDriver)
    throw std::runtime_error(std::string("smplfast CUDA error in ") + what + ": " + insufficient_driver_message());
  throw std::runtime_error(std::string("smplfast CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

namespace detail {

// cuCtxGetCurrent / cuCtxSetCurrent through the runtime's driver entry points (no link to libcuda).
struct CtxApi {
  CUresult (*get)(CUcontext*) = nullptr;
  CUresult (*set)(CUcontext) = nullptr;
};

inline const CtxApi& ctx_api() {
  static const CtxApi api = [] {
    CtxApi a;
    void* get = nullptr;
    void* set = nullptr;
    cudaDriverEntryPointQueryResult qg = cudaDriverEntryPointSymbolNotFound, qs = cudaDriverEntryPointSymbolNotFound;
    const bool ok =
        cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &get, 4000, cudaEnableDefault, &qg) == cudaSuccess &&
        cudaGetDriverEntryPointByVersion("cuCtxSetCurrent", &set, 4000, cudaEnableDefault, &qs) == cudaSuccess &&
        qg == cudaDriverEntryPointSuccess && qs == cudaDriverEntryPointSuccess && get && set;
    cudaGetLastError();  // a failed query is not an error of the caller's kernels
    if (ok) {
      a.get = reinterpret_cast<CUresult (*)(CUcontext*)>(get);
      a.set = reinterpret_cast<CUresult (*)(CUcontext)>(set);
    }
    return a;
  }();
  return api;
}

}  // namespace detail

// Runs a call on `device` and leaves the calling thread as it found it.
//
// The statically linked runtime keeps its own per-thread current device, which starts at 0 whatever
// torch selected; since CUDA 12, cudaSetDevice also creates the device's primary context. So the
// guard (1) sets the device only when it differs from the current one, and (2) on exit restores the
// thread's current *driver context* exactly as it was (possibly none) instead of calling
// cudaSetDevice(previous), which would create a context (and ~0.5 GB) on GPU 0 for work on cuda:1..N.
// The runtime follows the driver's current context, so torch (dynamic runtime, same driver) sees
// the same current device after the call as before it.
// Blocks for a one-block-per-sample kernel that loops over its samples: a few per SM, never more than
// the samples (the grid, and with it the per-block scratch the caller allocates, stays bounded).
inline unsigned blocks_per_sample_grid(int64_t batch, int device, int blocks_per_sm) {
  int sms = 0;
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
  const int64_t cap = int64_t(blocks_per_sm) * sms;
  const int64_t grid = batch < cap ? batch : cap;
  return static_cast<unsigned>(grid > 1 ? grid : 1);
}

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    const detail::CtxApi& api = detail::ctx_api();
    if (api.get && api.get(&saved_ctx_) == CUDA_SUCCESS) have_saved_ctx_ = true;
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device != previous_) {
      check_cuda(cudaSetDevice(device), "cudaSetDevice");
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (have_saved_ctx_) {
      CUcontext now = nullptr;
      const detail::CtxApi& api = detail::ctx_api();
      if (api.get(&now) != CUDA_SUCCESS || now != saved_ctx_) api.set(saved_ctx_);
    } else if (changed_) {
      cudaSetDevice(previous_);  // no driver entry points: the runtime's own restore
    }
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
  bool have_saved_ctx_ = false;
  CUcontext saved_ctx_ = nullptr;
};

// Dynamic shared memory a kernel on `device` may use per block (the opt-in maximum).
inline size_t max_shared_bytes(int device) {
  int v = 0;
  check_cuda(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
             "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
  return static_cast<size_t>(v);
}

}  // namespace smplfast
