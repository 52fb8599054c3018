// CUDA kernels for the skinning ops (see skinning.h for shapes). Launches go on the caller's stream.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common/cuda_utils.h"
#include "skinning/skinning.h"
#include "skinning/skinning_math.h"

namespace smplfast {
namespace {

static_assert(kLbsTile == 256, "the deterministic backward's tiles are one block of vertices");
constexpr int kThreads = 256;  // a multiple of 32: the backward's warp sums need whole warps
constexpr size_t kDefaultSharedBytes = 48 * 1024;

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

// kMaxJ bounds the per-thread scratch (gt, 3 kMaxJ values; gR holds the rotation gradients in place):
// the driver reserves a thread's stack for every resident thread, so it is sized for the model at
// hand (dispatch 24 / 32 / 64), not for the largest tree.
template <typename T, int kMaxJ>
__global__ void chain_backward_kernel(int64_t B, int64_t J, const int64_t* parents, const T* R, const T* rest,
                                      const T* A, const T* gP, const T* gA, T* gR, T* grest) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  T gt[kMaxJ * 3];
  chain_backward_sample(J, parents, R + b * J * 9, rest + b * J * 3, A + b * J * 12,
                        gP ? gP + b * J * 3 : nullptr, gA ? gA + b * J * 12 : nullptr, gR + b * J * 9,
                        grest + b * J * 3, gt);
}

template <typename T>
__global__ void lbs_forward_kernel(int64_t B, int64_t V, int64_t K, int64_t J, const T* A, const T* vp,
                                   int64_t vp_stride, const int32_t* idx, const T* w, const T* transl, T* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= B * V) return;
  const int64_t b = i / V, v = i - b * V;
  lbs_vertex(A + b * J * 12, idx + v * K, w + v * K, K, vp + b * vp_stride + v * 3, transl + b * 3, out + i * 3);
}

constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFullMask, x, o);
  return x;
}

// d/dv_posed of one vertex: M^T g with M its blended transform.
template <typename T>
__device__ __forceinline__ void lbs_grad_vertex(const T* Ab, const int32_t* iv, const T* wv, int64_t K, const T* gv,
                                                T* out) {
  T M[12];
  blend_transform(Ab, iv, wv, K, M);
  for (int c = 0; c < 3; ++c) out[c] = M[0 * 4 + c] * gv[0] + M[1 * 4 + c] * gv[1] + M[2 * 4 + c] * gv[2];
}

// Default (non-deterministic) d/dA and d/dtransl. Blocks walk the (sample, vertex tile) pairs
// with a grid-stride loop over one flat index (no batch limit from gridDim.y). Per influence k,
// the lanes of a warp that hit the same joint are summed with shuffles and the warp's leader adds
// the 12 sums once: into a per-block shared accumulator (kShared; flushed with one global atomic
// per non-zero entry) or, when J * 12 values do not fit the device's shared memory, straight into
// global memory. Every lane of a warp runs the loops (blockDim is a multiple of 32).
template <typename T, bool kShared>
__global__ void lbs_backward_kernel(int64_t B, int64_t V, int64_t K, int64_t J, int64_t tiles, const T* A,
                                    const T* vp, int64_t vp_stride, const int32_t* idx, const T* w, const T* g,
                                    int64_t gsb, int64_t gsv, int64_t gsc, T* gA, T* gp, T* gtr) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* acc = reinterpret_cast<T*>(smem_raw);
  const int64_t acc_size = J * 12 + 3;
  const int lane = threadIdx.x & 31;
  for (int64_t blk = blockIdx.x; blk < B * tiles; blk += gridDim.x) {
    const int64_t b = blk / tiles;
    const int64_t v = (blk - b * tiles) * static_cast<int64_t>(blockDim.x) + threadIdx.x;
    if (kShared) {
      for (int64_t i = threadIdx.x; i < acc_size; i += blockDim.x) acc[i] = T(0);
      __syncthreads();
    }
    T* dstA = kShared ? acc : gA + b * J * 12;
    T* dstT = kShared ? acc + J * 12 : gtr + b * 3;
    const bool live = v < V;
    T p[3] = {T(0), T(0), T(0)}, gv[3] = {T(0), T(0), T(0)};
    const int32_t* iv = idx + (live ? v : 0) * K;
    const T* wv = w + (live ? v : 0) * K;
    if (live) {
      const T* pp = vp + b * vp_stride + v * 3;
      const T* gsrc = g + b * gsb + v * gsv;
      for (int c = 0; c < 3; ++c) {
        p[c] = pp[c];
        gv[c] = gsrc[c * gsc];
      }
      if (gp) lbs_grad_vertex(A + b * J * 12, iv, wv, K, gv, gp + (b * V + v) * 3);
    }
    for (int64_t k = 0; k < K; ++k) {
      int j = -1;  // joint ids are int32
      T wk = T(0);
      if (live) {
        wk = wv[k];
        if (wk != T(0)) j = iv[k];
      }
      unsigned pending = __ballot_sync(kFullMask, j >= 0);
      while (pending) {
        const int leader = __ffs(pending) - 1;
        const int jl = __shfl_sync(kFullMask, j, leader);
        const bool mine = j == jl;
        for (int r = 0; r < 3; ++r) {
          const T wg = wk * gv[r];
          const T s0 = warp_sum(mine ? wg * p[0] : T(0));
          const T s1 = warp_sum(mine ? wg * p[1] : T(0));
          const T s2 = warp_sum(mine ? wg * p[2] : T(0));
          const T s3 = warp_sum(mine ? wg : T(0));
          if (lane == leader) {
            T* a = dstA + static_cast<int64_t>(jl) * 12 + r * 4;
            atomicAdd(a + 0, s0);
            atomicAdd(a + 1, s1);
            atomicAdd(a + 2, s2);
            atomicAdd(a + 3, s3);
          }
        }
        pending &= ~__ballot_sync(kFullMask, mine);
      }
    }
    for (int r = 0; r < 3; ++r) {
      const T s = warp_sum(gv[r]);
      if (lane == 0 && s != T(0)) atomicAdd(dstT + r, s);
    }
    if (kShared) {
      __syncthreads();
      for (int64_t i = threadIdx.x; i < acc_size; i += blockDim.x) {
        if (acc[i] == T(0)) continue;
        if (i < J * 12)
          atomicAdd(gA + b * J * 12 + i, acc[i]);
        else
          atomicAdd(gtr + b * 3 + (i - J * 12), acc[i]);
      }
      __syncthreads();  // acc is cleared for the next tile
    }
  }
}

// Deterministic d/dA and d/dtransl, pass 1: per (sample, tile of kThreads vertices) partial sums in
// a fixed order into partial[B, tiles, J*12+3]. The tile's points and gradients are staged in shared
// memory; then one thread per (joint, row) (and per translation row) walks the tile's vertices and
// influences in order. Also writes d/dv_posed (per vertex, no reduction).
template <typename T>
__global__ void lbs_backward_partial_kernel(int64_t B, int64_t V, int64_t K, int64_t J, int64_t tiles, const T* A,
                                            const T* vp, int64_t vp_stride, const int32_t* idx, const T* w,
                                            const T* g, int64_t gsb, int64_t gsv, int64_t gsc, T* gp, T* partial) {
  __shared__ T sp[kThreads * 3];
  __shared__ T sg[kThreads * 3];
  const int64_t E = J * 12 + 3, tasks = J * 3 + 3;
  for (int64_t blk = blockIdx.x; blk < B * tiles; blk += gridDim.x) {
    const int64_t b = blk / tiles, v0 = (blk - b * tiles) * kThreads;
    const int64_t n = V - v0 < kThreads ? V - v0 : kThreads;
    const int64_t v = v0 + threadIdx.x;
    if (threadIdx.x < n) {
      const T* pp = vp + b * vp_stride + v * 3;
      const T* gsrc = g + b * gsb + v * gsv;
      T gv[3];
      for (int c = 0; c < 3; ++c) {
        sp[threadIdx.x * 3 + c] = pp[c];
        gv[c] = sg[threadIdx.x * 3 + c] = gsrc[c * gsc];
      }
      if (gp) lbs_grad_vertex(A + b * J * 12, idx + v * K, w + v * K, K, gv, gp + (b * V + v) * 3);
    }
    __syncthreads();
    T* out = partial + blk * E;
    for (int64_t e = threadIdx.x; e < tasks; e += blockDim.x) {
      if (e < J * 3) {
        const int64_t j = e / 3;
        const int r = static_cast<int>(e - j * 3);
        T s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0);
        for (int64_t i = 0; i < n; ++i) {
          const int32_t* iv = idx + (v0 + i) * K;
          const T* wv = w + (v0 + i) * K;
          for (int64_t k = 0; k < K; ++k) {
            const T wk = wv[k];
            if (iv[k] != j || wk == T(0)) continue;
            const T wg = wk * sg[i * 3 + r];
            s0 += wg * sp[i * 3 + 0];
            s1 += wg * sp[i * 3 + 1];
            s2 += wg * sp[i * 3 + 2];
            s3 += wg;
          }
        }
        T* o = out + j * 12 + r * 4;
        o[0] = s0;
        o[1] = s1;
        o[2] = s2;
        o[3] = s3;
      } else {
        const int r = static_cast<int>(e - J * 3);
        T s = T(0);
        for (int64_t i = 0; i < n; ++i) s += sg[i * 3 + r];
        out[J * 12 + r] = s;
      }
    }
    __syncthreads();  // sp / sg are refilled for the next tile
  }
}

// Deterministic pass 2: one thread per (sample, entry) sums the tiles' partials in tile order.
template <typename T>
__global__ void lbs_backward_final_kernel(int64_t B, int64_t J, int64_t tiles, const T* partial, T* gA, T* gtr) {
  const int64_t E = J * 12 + 3;
  const int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (q >= B * E) return;
  const int64_t b = q / E, e = q - b * E;
  const T* src = partial + b * tiles * E + e;
  T s = T(0);
  for (int64_t t = 0; t < tiles; ++t) s += src[t * E];
  if (e < J * 12)
    gA[b * J * 12 + e] = s;
  else
    gtr[b * 3 + (e - J * 12)] = s;
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

// Blocks for n threads of kThreads; grid.x holds up to 2^31 - 1 blocks.
inline unsigned blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  if (blocks > 0x7fffffff)
    throw std::invalid_argument("smplfast skinning: " + std::to_string(n) +
                                " CUDA threads exceed the grid limit; split the batch");
  return static_cast<unsigned>(blocks);
}

// Grid of a grid-stride loop over `work` blocks.
inline unsigned grid_stride_blocks(int64_t work) {
  return static_cast<unsigned>(work < (int64_t(1) << 24) ? work : (int64_t(1) << 24));
}

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

template <typename T, int kMaxJ>
void chain_backward_launch(const ChainArgs& a, cudaStream_t s) {
  chain_backward_kernel<T, kMaxJ><<<static_cast<unsigned>((a.batch + 63) / 64), 64, 0, s>>>(
      a.batch, a.joints, a.parents, static_cast<const T*>(a.R), static_cast<const T*>(a.rest_joints),
      static_cast<const T*>(a.transforms), static_cast<const T*>(a.grad_posed), static_cast<const T*>(a.grad_transforms), static_cast<T*>(a.grad_R),
      static_cast<T*>(a.grad_rest_joints));
}

template <typename T>
void chain_backward_t(const ChainArgs& a, cudaStream_t s) {
  if (a.batch == 0) return;
  if (a.joints > kMaxJoints)
    throw std::invalid_argument("kinematic_chain_backward: at most " + std::to_string(kMaxJoints) + " joints");
  if (a.joints <= 24)
    chain_backward_launch<T, 24>(a, s);
  else if (a.joints <= 32)
    chain_backward_launch<T, 32>(a, s);
  else
    chain_backward_launch<T, kMaxJoints>(a, s);
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
  const int64_t B = a.batch, V = a.vertices, J = a.joints;
  if (V == 0) {
    check_cuda(cudaMemsetAsync(a.grad_transforms, 0, sizeof(T) * B * J * 12, s), "lbs_backward");
    check_cuda(cudaMemsetAsync(a.grad_transl, 0, sizeof(T) * B * 3, s), "lbs_backward");
    return;
  }
  const int64_t tiles = (V + kThreads - 1) / kThreads;
  const T* At = static_cast<const T*>(a.transforms);
  const T* vp = static_cast<const T*>(a.v_posed);
  const T* w = static_cast<const T*>(a.w);
  const T* g = static_cast<const T*>(a.grad_verts);
  const unsigned grid = grid_stride_blocks(B * tiles);
  if (a.deterministic) {
    if (a.workspace == nullptr)
      throw std::invalid_argument("sparse_lbs_backward: the deterministic CUDA path needs a workspace of "
                                  "lbs_backward_workspace_elems() elements");
    T* partial = static_cast<T*>(a.workspace);
    lbs_backward_partial_kernel<T><<<grid, kThreads, 0, s>>>(
        B, V, a.influences, J, tiles, At, vp, a.v_posed_batch_stride, a.idx, w, g, a.grad_strides[0],
        a.grad_strides[1], a.grad_strides[2], static_cast<T*>(a.grad_v_posed), partial);
    check_cuda(cudaGetLastError(), "lbs_backward (partial sums)");
    lbs_backward_final_kernel<T><<<blocks_for(B * (J * 12 + 3)), kThreads, 0, s>>>(
        B, J, tiles, partial, static_cast<T*>(a.grad_transforms), static_cast<T*>(a.grad_transl));
    return;
  }
  // The kernel accumulates with atomics: outputs start from zero.
  check_cuda(cudaMemsetAsync(a.grad_transforms, 0, sizeof(T) * B * J * 12, s), "lbs_backward");
  check_cuda(cudaMemsetAsync(a.grad_transl, 0, sizeof(T) * B * 3, s), "lbs_backward");
  // The per-block accumulator needs J * 12 + 3 values of shared memory: above the default 48 KB the
  // kernel opts in (up to the device's limit); beyond that it adds the warp sums to global memory.
  const size_t smem = sizeof(T) * static_cast<size_t>(J * 12 + 3);
  int device = 0;
  check_cuda(cudaGetDevice(&device), "lbs_backward: cudaGetDevice");
  bool shared = smem <= kDefaultSharedBytes;
  if (!shared && smem <= max_shared_bytes(device)) {
    check_cuda(cudaFuncSetAttribute(lbs_backward_kernel<T, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)),
               "lbs_backward (shared memory size)");
    shared = true;
  }
  if (shared)
    lbs_backward_kernel<T, true><<<grid, kThreads, smem, s>>>(
        B, V, a.influences, J, tiles, At, vp, a.v_posed_batch_stride, a.idx, w, g, a.grad_strides[0],
        a.grad_strides[1], a.grad_strides[2], static_cast<T*>(a.grad_transforms), static_cast<T*>(a.grad_v_posed),
        static_cast<T*>(a.grad_transl));
  else
    lbs_backward_kernel<T, false><<<grid, kThreads, 0, s>>>(
        B, V, a.influences, J, tiles, At, vp, a.v_posed_batch_stride, a.idx, w, g, a.grad_strides[0],
        a.grad_strides[1], a.grad_strides[2], static_cast<T*>(a.grad_transforms), static_cast<T*>(a.grad_v_posed),
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
