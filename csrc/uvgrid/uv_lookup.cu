// CUDA kernels of the UV-grid lookup (see uv_lookup.h for shapes and maths). One thread per point
// (per sorted contribution for the segment sum); launches go on the caller's stream.
#include <cuda_runtime.h>

#include "common/cuda_utils.h"
#include "uvgrid/uv_lookup.h"

namespace smplfast {
namespace {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

template <bool kGrad, typename T>
__device__ __forceinline__ void stencil_of(const UvLookupArgs& a, int64_t n, uvgrid::Stencil<T>& s) {
  const T* uv = static_cast<const T*>(a.uv);
  const int64_t RR = a.res * a.res;
  uvgrid::make_stencil<kGrad>(uv[2 * n], uv[2 * n + 1], a.res, a.valid ? a.valid + a.part[n] * RR : nullptr, s);
}

template <typename T>
__global__ void forward_kernel(UvLookupArgs a) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= a.points) return;
  uvgrid::Stencil<T> s;
  stencil_of<false>(a, n, s);
  const int64_t RRC = a.res * a.res * a.channels;
  uvgrid::lookup_point<0>(s, static_cast<const T*>(a.grid) + uvgrid::slice_of(a, n) * RRC, a.channels,
                       static_cast<T*>(a.out) + n * a.channels);
}

// Default backward: grad_uv per point, grad_grid by atomics (summation order varies run to run).
template <typename T>
__global__ void backward_kernel(UvLookupArgs a) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= a.points) return;
  uvgrid::Stencil<T> s;
  stencil_of<true>(a, n, s);
  const int64_t C = a.channels, RRC = a.res * a.res * C, sl = uvgrid::slice_of(a, n);
  const T* go = static_cast<const T*>(a.grad_out) + n * C;
  if (a.grad_uv)
    uvgrid::uv_grad_point<0>(s, static_cast<const T*>(a.grid) + sl * RRC, C, go, static_cast<T*>(a.grad_uv) + 2 * n);
  if (a.grad_grid == nullptr) return;
  T* dst = static_cast<T*>(a.grad_grid) + sl * RRC;
  if (s.nearest >= 0) {
    for (int64_t c = 0; c < C; ++c) atomicAdd(dst + s.nearest * C + c, go[c]);
    return;
  }
  for (int k = 0; k < 4; ++k) {
    if (!s.use[k] || s.w[k] == T(0)) continue;
    for (int64_t c = 0; c < C; ++c) atomicAdd(dst + s.cell[k] * C + c, s.w[k] * go[c]);
  }
}

template <typename T>
__global__ void contributions_kernel(UvLookupArgs a) {
  const int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (n >= a.points) return;
  uvgrid::Stencil<T> s;
  stencil_of<true>(a, n, s);
  const int64_t C = a.channels, RR = a.res * a.res, sl = uvgrid::slice_of(a, n);
  if (a.grad_uv)
    uvgrid::uv_grad_point<0>(s, static_cast<const T*>(a.grid) + sl * RR * C, C,
                          static_cast<const T*>(a.grad_out) + n * C, static_cast<T*>(a.grad_uv) + 2 * n);
  uvgrid::write_contributions(s, sl * RR, a.groups * a.parts * RR, a.cells + 4 * n,
                              static_cast<T*>(a.weights) + 4 * n);
}

template <typename T>
__global__ void segment_sum_kernel(UvLookupArgs a) {
  const int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t M = 4 * a.points;
  if (q >= M) return;
  uvgrid::segment_sum_at(q, M, a.cells, a.order, static_cast<const T*>(a.weights),
                         static_cast<const T*>(a.grad_out), a.channels, a.groups * a.parts * a.res * a.res,
                         static_cast<T*>(a.grad_grid));
}

template <typename T>
void forward_t(const UvLookupArgs& a, cudaStream_t s) {
  if (a.points == 0 || a.channels == 0) return;
  forward_kernel<T><<<blocks_for(a.points), kThreads, 0, s>>>(a);
}

template <typename T>
void backward_t(const UvLookupArgs& a, cudaStream_t s) {
  if (a.grad_grid)  // atomics accumulate: start from zero
    check_cuda(cudaMemsetAsync(a.grad_grid, 0,
                               sizeof(T) * a.groups * a.parts * a.res * a.res * a.channels, s),
               "uv_lookup_backward");
  if (a.points == 0) return;
  backward_kernel<T><<<blocks_for(a.points), kThreads, 0, s>>>(a);
}

template <typename T>
void contributions_t(const UvLookupArgs& a, cudaStream_t s) {
  if (a.points == 0) return;
  contributions_kernel<T><<<blocks_for(a.points), kThreads, 0, s>>>(a);
}

template <typename T>
void segment_sum_t(const UvLookupArgs& a, cudaStream_t s) {
  if (a.points == 0 || a.channels == 0) return;
  segment_sum_kernel<T><<<blocks_for(4 * a.points), kThreads, 0, s>>>(a);
}

}  // namespace

#define SF_CUDA_DISPATCH(NAME, IMPL)                                              \
  void NAME##_cuda(DType dtype, const UvLookupArgs& a, int device, void* stream) { \
    DeviceGuard guard(device);                                                     \
    cudaStream_t s = static_cast<cudaStream_t>(stream);                            \
    if (dtype == DType::Float64)                                                   \
      IMPL<double>(a, s);                                                          \
    else                                                                           \
      IMPL<float>(a, s);                                                           \
    check_cuda(cudaGetLastError(), #NAME);                                         \
  }

SF_CUDA_DISPATCH(uv_lookup_forward, forward_t)
SF_CUDA_DISPATCH(uv_lookup_backward, backward_t)
SF_CUDA_DISPATCH(uv_lookup_contributions, contributions_t)
SF_CUDA_DISPATCH(uv_lookup_segment_sum, segment_sum_t)

}  // namespace smplfast
