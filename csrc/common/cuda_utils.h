// Small CUDA host helpers: error checks that raise C++ exceptions (pybind11 turns them into
// Python RuntimeErrors) and a guard that switches to the tensor's device for the call.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace smplfast {

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("smplfast CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (device != previous_) check_cuda(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace smplfast
