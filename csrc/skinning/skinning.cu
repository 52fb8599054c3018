// CUDA kernels for the skinning ops (see skinning.h for shapes). Launches go on the caller's stream.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common/cuda_utils.h"
#include "skinning/skinning.h"
#include "skinning/skinning_math.h"

namespace smplfast {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void rodrigues_forward_kernel(int64_t n, const T* aa, T* R) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) rodrigues(aa + i * 3, R + i * 9);
}

template <typename T>
__global__ void rodrigues_backward_kernel(int64_t n, const T* aa, const T* gR, T* gaa) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) rodrigues_backward(aa + i * 3, gR + i * 9, gaa + i * 3);
}

// One thread per sample: the chain is sequential over joints and J is small.
template <typename T>
__global__ void chain_forward_kernel(int64_t B, int64_t J, const int64_t* parents, const T* R, const T* rest,
                                     T* posed, T* A) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b < B) chain_forward_sample(J, parents, R + b * J * 9, rest + b * J * 3, posed + b * J * 3, A + b * J * 12);
}

template <typename T>
__global__ void chain_backward_kernel(int64_t B, int64_t J, const int64_t* parents, const T* R, const T* rest,
                                      const T* posed, const T* A, const T* gP, const T* gA, T* gR, T* grest) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  T gRw[kMaxJoints * 9], gt[kMaxJoints * 3];
  chain_backward_sample(J, parents, R + b * J * 9, rest + b * J * 3, posed + b * J * 3, A + b * J * 12,
                        gP ? gP + b * J * 3 : nullptr, gA ? gA + b * J * 12 : nullptr, gR + b * J * 9,
                        grest + b * J * 3, gRw, gt);
}

template <typename T>
__global__ void lbs_forward_kernel(int64_t B, int64_t V, int64_t K, int64_t J, const T* A, const T* vp,
                                   int64_t vp_stride, const int32_t* idx, const T* w, const T* transl, T* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= B * V) return;
  const int64_t b = i / V, v = i - b * V;
  lbs_vertex(A + b * J * 12, idx + v * K, w + v * K, K, vp + b * vp_stride + v * 3, transl + b * 3, out + i * 3);
}

// Grid: (vertex tiles, batch). Each block reduces its tile's d/dA and d/dtransl in shared memory,
// then adds the tile's sums to global memory with one atomic per entry.
template <typename T>
__global__ void lbs_backward_kernel(int64_t B, int64_t V, int64_t K, int64_t J, const T* A, const T* vp,
                                    int64_t vp_stride, const int32_t* idx, const T* w, const T* g, int64_t gsb,
                                    int64_t gsv, int64_t gsc, T* gA, T* gp, T* gtr) {
  extern __shared__ unsigned char smem_raw[];
  T* acc = reinterpret_cast<T*>(smem_raw);
  const int64_t acc_size = J * 12 + 3;
  for (int64_t i = threadIdx.x; i < acc_size; i += blockDim.x) acc[i] = T(0);
  __syncthreads();
  const int64_t b = blockIdx.y;
  const int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (v < V) {
    const T* Ab = A + b * J * 12;
    const T* p = vp + b * vp_stride + v * 3;
    const T* gsrc = g + b * gsb + v * gsv;
    const T gv[3] = {gsrc[0], gsrc[gsc], gsrc[2 * gsc]};
    const int32_t* iv = idx + v * K;
    const T* wv = w + v * K;
    if (gp) {
      T M[12];
      blend_transform(Ab, iv, wv, K, M);
      for (int c = 0; c < 3; ++c)
        gp[(b * V + v) * 3 + c] = M[0 * 4 + c] * gv[0] + M[1 * 4 + c] * gv[1] + M[2 * 4 + c] * gv[2];
    }
    for (int64_t k = 0; k < K; ++k) {
      const T wk = wv[k];
      if (wk == T(0)) continue;
      T* a = acc + static_cast<int64_t>(iv[k]) * 12;
      for (int r = 0; r < 3; ++r) {
        const T wg = wk * gv[r];
        atomicAdd(a + r * 4 + 0, wg * p[0]);
        atomicAdd(a + r * 4 + 1, wg * p[1]);
        atomicAdd(a + r * 4 + 2, wg * p[2]);
        atomicAdd(a + r * 4 + 3, wg);
      }
    }
    for (int r = 0; r < 3; ++r) atomicAdd(acc + J * 12 + r, gv[r]);
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < acc_size; i += blockDim.x) {
    if (acc[i] == T(0)) continue;
    if (i < J * 12)
      atomicAdd(gA + b * J * 12 + i, acc[i]);
    else
      atomicAdd(gtr + b * 3 + (i - J * 12), acc[i]);
  }
}

// d verts / d w: one thread per (vertex, influence), the batch summed in order (no atomics).
template <typename T>
__global__ void lbs_backward_weights_kernel(int64_t B, int64_t V, int64_t K, int64_t J, const T* A, const T* vp,
                                            int64_t vp_stride, const int32_t* idx, const T* g, int64_t gsb,
                                            int64_t gsv, int64_t gsc, T* gw) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= V * K) return;
  const int64_t v = i / K;
  const int64_t j = idx[i];
  T s = 0;
  for (int64_t b = 0; b < B; ++b) {
    const T* Ak = A + b * J * 12 + j * 12;
    const T* p = vp + b * vp_stride + v * 3;
    const T* gsrc = g + b * gsb + v * gsv;
    for (int r = 0; r < 3; ++r)
      s += gsrc[r * gsc] * (Ak[r * 4 + 0] * p[0] + Ak[r * 4 + 1] * p[1] + Ak[r * 4 + 2] * p[2] + Ak[r * 4 + 3]);
  }
  gw[i] = s;
}

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

template <typename T>
void rodrigues_forward_t(const RodriguesArgs& a, cudaStream_t s) {
  if (a.n == 0) return;
  rodrigues_forward_kernel<T><<<blocks_for(a.n), kThreads, 0, s>>>(a.n, static_cast<const T*>(a.aa),
                                                                    static_cast<T*>(a.R));
}

template <typename T>
void rodrigues_backward_t(const RodriguesArgs& a, cudaStream_t s) {
  if (a.n == 0) return;
  rodrigues_backward_kernel<T><<<blocks_for(a.n), kThreads, 0, s>>>(
      a.n, static_cast<const T*>(a.aa), static_cast<const T*>(a.grad_R), static_cast<T*>(a.grad_aa));
}

template <typename T>
void chain_forward_t(const ChainArgs& a, cudaStream_t s) {
  if (a.batch == 0) return;
  chain_forward_kernel<T><<<static_cast<unsigned>((a.batch + 63) / 64), 64, 0, s>>>(
      a.batch, a.joints, a.parents, static_cast<const T*>(a.R), static_cast<const T*>(a.rest_joints),
      static_cast<T*>(a.posed_joints), static_cast<T*>(a.transforms));
}

template <typename T>
void chain_backward_t(const ChainArgs& a, cudaStream_t s) {
  if (a.batch == 0) return;
  chain_backward_kernel<T><<<static_cast<unsigned>((a.batch + 63) / 64), 64, 0, s>>>(
      a.batch, a.joints, a.parents, static_cast<const T*>(a.R), static_cast<const T*>(a.rest_joints),
      static_cast<const T*>(a.posed_joints), static_cast<const T*>(a.transforms),
      static_cast<const T*>(a.grad_posed), static_cast<const T*>(a.grad_transforms), static_cast<T*>(a.grad_R),
      static_cast<T*>(a.grad_rest_joints));
}

template <typename T>
void lbs_forward_t(const LbsArgs& a, cudaStream_t s) {
  const int64_t n = a.batch * a.vertices;
  if (n == 0) return;
  lbs_forward_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(
      a.batch, a.vertices, a.influences, a.joints, static_cast<const T*>(a.transforms),
      static_cast<const T*>(a.v_posed), a.v_posed_batch_stride, a.idx, static_cast<const T*>(a.w),
      static_cast<const T*>(a.transl), static_cast<T*>(a.verts));
}

template <typename T>
void lbs_backward_t(const LbsArgs& a, cudaStream_t s) {
  if (a.grad_w && a.vertices * a.influences > 0) {
    const int64_t n = a.vertices * a.influences;
    if (a.batch == 0) {
      check_cuda(cudaMemsetAsync(a.grad_w, 0, sizeof(T) * n, s), "lbs_backward");
    } else {
      lbs_backward_weights_kernel<T><<<blocks_for(n), kThreads, 0, s>>>(
          a.batch, a.vertices, a.influences, a.joints, static_cast<const T*>(a.transforms),
          static_cast<const T*>(a.v_posed), a.v_posed_batch_stride, a.idx, static_cast<const T*>(a.grad_verts),
          a.grad_strides[0], a.grad_strides[1], a.grad_strides[2], static_cast<T*>(a.grad_w));
    }
  }
  if (a.batch == 0) return;
  // The kernel accumulates with atomics: outputs start from zero.
  check_cuda(cudaMemsetAsync(a.grad_transforms, 0, sizeof(T) * a.batch * a.joints * 12, s), "lbs_backward");
  check_cuda(cudaMemsetAsync(a.grad_transl, 0, sizeof(T) * a.batch * 3, s), "lbs_backward");
  if (a.vertices == 0) return;
  const dim3 grid(blocks_for(a.vertices), static_cast<unsigned>(a.batch));
  const size_t smem = sizeof(T) * (a.joints * 12 + 3);
  lbs_backward_kernel<T><<<grid, kThreads, smem, s>>>(
      a.batch, a.vertices, a.influences, a.joints, static_cast<const T*>(a.transforms),
      static_cast<const T*>(a.v_posed), a.v_posed_batch_stride, a.idx, static_cast<const T*>(a.w),
      static_cast<const T*>(a.grad_verts), a.grad_strides[0], a.grad_strides[1], a.grad_strides[2],
      static_cast<T*>(a.grad_transforms), static_cast<T*>(a.grad_v_posed),
      static_cast<T*>(a.grad_transl));
}

}  // namespace

#define SF_CUDA_DISPATCH(NAME, ARGS)                                       \
  void NAME##_cuda(DType dtype, const ARGS& a, int device, void* stream) { \
    DeviceGuard guard(device);                                             \
    cudaStream_t s = static_cast<cudaStream_t>(stream);                    \
    if (dtype == DType::Float64)                                           \
      NAME##_t<double>(a, s);                                              \
    else                                                                   \
      NAME##_t<float>(a, s);                                               \
    check_cuda(cudaGetLastError(), #NAME);                                 \
  }

SF_CUDA_DISPATCH(rodrigues_forward, RodriguesArgs)
SF_CUDA_DISPATCH(rodrigues_backward, RodriguesArgs)
SF_CUDA_DISPATCH(chain_forward, ChainArgs)
SF_CUDA_DISPATCH(chain_backward, ChainArgs)
SF_CUDA_DISPATCH(lbs_forward, LbsArgs)
SF_CUDA_DISPATCH(lbs_backward, LbsArgs)

}  // namespace smplfast
