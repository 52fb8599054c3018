// CUDA kernels for the batched solves (see batched_solve.h): one thread block per sample, running the
// same per-sample algorithms as the CPU with the block as the team. A sample's scratch lives in
// dynamic shared memory when it fits (n = 110 in double needs ~100 KB, above the default 48 KB, so
// the kernels opt in to the device's maximum); otherwise it lives in a global workspace allocated
// by the caller for a grid of a few blocks per SM, which then loops over the samples.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "common/cuda_utils.h"
#include "fitting/batched_solve.h"
#include "fitting/block_team.cuh"

namespace smplfast {
namespace {

using solve::BlockTeam;
using solve::kRedSlots;
using solve::kWarp;

constexpr int kMaxThreads = 256;
constexpr size_t kDefaultSharedBytes = 48 * 1024;
constexpr int64_t kGlobalScratchBudget = int64_t(256) << 20;  // bytes

// How a launch is laid out; the workspace query and the launch compute it the same way.
struct Plan {
  int threads;
  int ld;
  int64_t scratch;      // elements per sample
  size_t smem_bytes;    // dynamic shared memory per block
  bool global_scratch;  // scratch in the caller's workspace instead of shared memory
  unsigned grid;
};

int device_attribute(cudaDeviceAttr attr, int device) {
  int v = 0;
  check_cuda(cudaDeviceGetAttribute(&v, attr, device), "cudaDeviceGetAttribute");
  return v;
}

Plan make_plan(SolveKind kind, size_t elem, int64_t batch, int64_t n, int device) {
  Plan p{};
  // An odd row stride spreads column walks (the Cholesky's column gather, the CG's symmetric fill)
  // over all shared-memory banks.
  p.ld = static_cast<int>(n | 1);
  if (kind == SolveKind::Cholesky) {
    // Per step the trailing update has ~(n - k)^2 / 2 entries: give larger systems more warps.
    p.threads = n <= 16 ? 32 : n <= 48 ? 64 : n <= 80 ? 128 : kMaxThreads;
    p.scratch = solve::cholesky_scratch(n, p.ld);
  } else {
    // CG's matvec gives each thread one row: one thread per row, up to the block size.
    p.threads = static_cast<int>(std::min<int64_t>(kMaxThreads, (n + kWarp - 1) / kWarp * kWarp));
    p.scratch = solve::cg_scratch(n, p.ld);
  }
  const size_t red_bytes = kRedSlots * elem;
  const size_t want = red_bytes + static_cast<size_t>(p.scratch) * elem;
  const size_t limit = static_cast<size_t>(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  p.global_scratch = want > limit;
  p.smem_bytes = p.global_scratch ? red_bytes : want;
  // With global scratch, a few blocks per SM keep the device busy; large systems get fewer so that
  // the workspace stays under kGlobalScratchBudget (but always at least one block).
  int64_t max_grid = INT32_MAX;
  if (p.global_scratch) {
    const int64_t per_block = p.scratch * static_cast<int64_t>(elem);
    max_grid = std::min<int64_t>(int64_t(4) * device_attribute(cudaDevAttrMultiProcessorCount, device),
                                 std::max<int64_t>(1, kGlobalScratchBudget / per_block));
  }
  p.grid = static_cast<unsigned>(std::max<int64_t>(1, std::min(batch, max_grid)));
  return p;
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    damped_cholesky_kernel(int64_t B, int n, int ld, const T* __restrict__ H, const T* __restrict__ g,
                           const T* __restrict__ damping, const T* __restrict__ diag,
                           const uint8_t* __restrict__ active, T* gscratch, int64_t scratch_elems, T* x,
                           uint8_t* ok) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* red = reinterpret_cast<T*>(smem_raw);
  T* scratch = gscratch ? gscratch + blockIdx.x * scratch_elems : red + kRedSlots;
  const BlockTeam<T> team{red};
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    T* xb = x + b * n;
    if (active && !active[b]) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) xb[i] = T(0);
      if (threadIdx.x == 0) ok[b] = 1;
      continue;
    }
    team.sync();  // the previous sample of this block is done with the scratch
    const bool good = solve::damped_cholesky_sample(team, n, ld, H + b * n * n, g + b * n, damping[b],
                                                    diag + b * n, scratch, xb);
    if (threadIdx.x == 0) ok[b] = good ? 1 : 0;
  }
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    cg_kernel(int64_t B, int n, int ld, int max_iters, T rel_tol, const T* __restrict__ H, const T* __restrict__ g,
              const T* __restrict__ damping, const T* __restrict__ diag, const uint8_t* __restrict__ active,
              T* gscratch, int64_t scratch_elems, T* x, int32_t* iters, T* rel) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* red = reinterpret_cast<T*>(smem_raw);
  T* scratch = gscratch ? gscratch + blockIdx.x * scratch_elems : red + kRedSlots;
  const BlockTeam<T> team{red};
  for (int64_t b = blockIdx.x; b < B; b += gridDim.x) {
    T* xb = x + b * n;
    if (active && !active[b]) {
      for (int i = threadIdx.x; i < n; i += blockDim.x) xb[i] = T(0);
      if (threadIdx.x == 0) {
        iters[b] = 0;
        rel[b] = T(0);
      }
      continue;
    }
    team.sync();
    solve::cg_sample(team, n, ld, H + b * n * n, g + b * n, damping[b], diag + b * n, max_iters, rel_tol, scratch,
                     xb, iters + b, rel + b);
  }
}

// Above the default 48 KB a kernel must opt in to its dynamic shared memory size.
template <typename Kernel>
void allow_shared(Kernel kernel, size_t bytes, const char* what) {
  if (bytes > kDefaultSharedBytes)
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
               what);
}

template <typename T>
T* workspace_for(const Plan& p, void* workspace, const char* op) {
  if (!p.global_scratch) return nullptr;
  if (!workspace)
    throw std::invalid_argument(std::string(op) +
                                ": this system size needs a global workspace (see batched_solve_workspace_size)");
  return static_cast<T*>(workspace);
}

template <typename T>
void damped_cholesky_t(const DampedCholeskyArgs& a, int device, cudaStream_t s) {
  if (a.batch == 0) return;
  const Plan p = make_plan(SolveKind::Cholesky, sizeof(T), a.batch, a.n, device);
  T* ws = workspace_for<T>(p, a.workspace, "damped_cholesky_solve");
  allow_shared(damped_cholesky_kernel<T>, p.smem_bytes, "damped_cholesky_solve (shared memory size)");
  damped_cholesky_kernel<T><<<p.grid, p.threads, p.smem_bytes, s>>>(
      a.batch, static_cast<int>(a.n), p.ld, static_cast<const T*>(a.H), static_cast<const T*>(a.g),
      static_cast<const T*>(a.damping), static_cast<const T*>(a.diag), a.active, ws, p.scratch,
      static_cast<T*>(a.x), a.ok);
}

template <typename T>
void cg_t(const ConjugateGradientArgs& a, int device, cudaStream_t s) {
  if (a.batch == 0) return;
  const Plan p = make_plan(SolveKind::ConjugateGradient, sizeof(T), a.batch, a.n, device);
  T* ws = workspace_for<T>(p, a.workspace, "conjugate_gradient_solve");
  allow_shared(cg_kernel<T>, p.smem_bytes, "conjugate_gradient_solve (shared memory size)");
  cg_kernel<T><<<p.grid, p.threads, p.smem_bytes, s>>>(
      a.batch, static_cast<int>(a.n), p.ld, static_cast<int>(a.max_iters), static_cast<T>(a.rel_tol),
      static_cast<const T*>(a.H), static_cast<const T*>(a.g), static_cast<const T*>(a.damping),
      static_cast<const T*>(a.diag), a.active, ws, p.scratch, static_cast<T*>(a.x), a.iters,
      static_cast<T*>(a.rel_residual));
}

}  // namespace

void damped_cholesky_solve_cuda(DType dtype, const DampedCholeskyArgs& a, int device, void* stream) {
  DeviceGuard guard(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float64)
    damped_cholesky_t<double>(a, device, s);
  else
    damped_cholesky_t<float>(a, device, s);
  check_cuda(cudaGetLastError(), "damped_cholesky_solve");
}

void conjugate_gradient_solve_cuda(DType dtype, const ConjugateGradientArgs& a, int device, void* stream) {
  DeviceGuard guard(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float64)
    cg_t<double>(a, device, s);
  else
    cg_t<float>(a, device, s);
  check_cuda(cudaGetLastError(), "conjugate_gradient_solve");
}

int64_t batched_solve_cuda_workspace_elems(SolveKind kind, DType dtype, int64_t batch, int64_t n, int device) {
  if (batch == 0) return 0;
  const size_t elem = dtype == DType::Float64 ? sizeof(double) : sizeof(float);
  const Plan p = make_plan(kind, elem, batch, n, device);
  return p.global_scratch ? int64_t(p.grid) * p.scratch : 0;
}

}  // namespace smplfast
