// CUDA soft silhouette (see soft_silhouette.h). Forward: one thread per (image, face) scans the face's
// pixel window and adds softplus(s_f) to the pixel sums with atomicAdd; faces whose window holds more
// than kMaxThreadPixels pixels are queued and scanned by a whole block; a per-pixel pass then turns
// the sums L into A = -expm1(-L) and exp(-L). Backward: the same face-parallel scan sums each face's
// corner gradients (in registers, or in shared memory for queued faces) and adds them to the vertices
// with atomicAdd. Float atomics make the last bits depend on thread order (not bit-reproducible
// from run to run); the CPU kernel is deterministic.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/cuda_utils.h"
#include "softras/soft_silhouette.h"
#include "softras/softras_math.h"

namespace smplfast {
namespace {

using softras::Face;
using softras::PixelHit;

constexpr int kThreads = 256;
constexpr int64_t kMaxThreadPixels = 64;
constexpr int kBigFaceBlocks = 1024;

struct Consts {
  double reach;
};

template <typename T>
__device__ __forceinline__ bool load_face(const SoftSilhouetteArgs& a, int64_t i, double reach, Face<T>& face) {
  const int64_t b = i / a.num_faces, f = i % a.num_faces;
  const int64_t* tri = a.faces + 3 * f;
  return softras::setup_face(static_cast<const T*>(a.verts) + 2 * b * a.num_vertices, tri[0], tri[1], tri[2],
                             a.width, a.height, 0, a.height, reach, face);
}

template <typename T>
__device__ __forceinline__ void forward_pixel(const SoftSilhouetteArgs& a, const Face<T>& face, T* acc, int64_t x,
                                              int64_t y, T inv_sigma, T cutoff) {
  const T pu = static_cast<T>(x) + T(0.5), pv = static_cast<T>(y) + T(0.5);
  if (!softras::near_box(face, pu, pv)) return;
  bool inside;
  const T d2 = softras::distance2(face, pu, pv, &inside);
  T s;
  if (softras::scaled_distance(d2, inside, inv_sigma, cutoff, &s))
    atomicAdd(acc + y * a.width + x, softras::softplus(s));
}

// This thread's face (batch x face index i) when it touches pixels and is small enough for one thread;
// a face with too many pixels is queued for the one-block-per-face kernel instead.
template <typename T>
__device__ __forceinline__ bool take_small_face(const SoftSilhouetteArgs& a, const Consts& c, int64_t* index,
                                                Face<T>& face) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  *index = i;
  if (i >= a.batch * a.num_faces) return false;
  if (!load_face<T>(a, i, c.reach, face)) return false;
  const int64_t nx = face.x1 - face.x0 + 1, ny = face.y1 - face.y0 + 1;
  if (nx * ny > kMaxThreadPixels) {
    const unsigned long long slot = atomicAdd(reinterpret_cast<unsigned long long*>(a.big), 1ull);
    a.big[1 + slot] = i;
    return false;
  }
  return true;
}

template <typename T>
__global__ void forward_face_kernel(SoftSilhouetteArgs a, Consts c) {
  int64_t i;
  Face<T> face;
  if (!take_small_face<T>(a, c, &i, face)) return;
  const int64_t b = i / a.num_faces;
  T* acc = static_cast<T*>(a.alpha) + b * a.height * a.width;
  const T inv_sigma = static_cast<T>(1.0 / a.sigma), cutoff = static_cast<T>(a.cutoff_d2);
  for (int64_t y = face.y0; y <= face.y1; ++y)
    for (int64_t x = face.x0; x <= face.x1; ++x) forward_pixel(a, face, acc, x, y, inv_sigma, cutoff);
}

// One block per queued face (grid-stride over the queue).
template <typename T>
__global__ void forward_big_face_kernel(SoftSilhouetteArgs a, Consts c) {
  const int64_t count = a.big[0];
  const T inv_sigma = static_cast<T>(1.0 / a.sigma), cutoff = static_cast<T>(a.cutoff_d2);
  for (int64_t e = blockIdx.x; e < count; e += gridDim.x) {
    const int64_t i = a.big[1 + e];
    Face<T> face;
    if (!load_face<T>(a, i, c.reach, face)) continue;  // cannot happen: the same test queued it
    T* acc = static_cast<T*>(a.alpha) + (i / a.num_faces) * a.height * a.width;
    const int64_t nx = face.x1 - face.x0 + 1, n = nx * (face.y1 - face.y0 + 1);
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x)
      forward_pixel(a, face, acc, face.x0 + k % nx, face.y0 + k / nx, inv_sigma, cutoff);
  }
}

template <typename T>
__global__ void finalize_kernel(SoftSilhouetteArgs a) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= a.batch * a.height * a.width) return;
  T* alpha = static_cast<T*>(a.alpha);
  const T L = alpha[p];
  alpha[p] = -softras::expm1_(-L);
  static_cast<T*>(a.transmittance)[p] = softras::exp_(-L);
}

template <typename T>
__device__ __forceinline__ void backward_pixel(const SoftSilhouetteArgs& a, const Face<T>& face, const T* g,
                                               const T* trans, int64_t x, int64_t y, T inv_sigma, T cutoff,
                                               T* acc) {
  const int64_t p = y * a.width + x;
  const T w = g[p] * trans[p];  // dA/ds_f = exp(-L) D_f
  const T pu = static_cast<T>(x) + T(0.5), pv = static_cast<T>(y) + T(0.5);
  if (w == T(0) || !softras::near_box(face, pu, pv)) return;
  PixelHit<T> h;
  softras::locate(face, pu, pv, h);
  T s;
  if (!softras::scaled_distance(h.d2, h.inside, inv_sigma, cutoff, &s)) return;
  const T c = w * softras::sigmoid(s) * (h.inside ? inv_sigma : -inv_sigma);
  softras::add_distance_grad(h, c, acc);
}

template <typename T>
__device__ __forceinline__ void add_face_grad(const SoftSilhouetteArgs& a, int64_t i, const T* acc) {
  const int64_t b = i / a.num_faces, f = i % a.num_faces;
  const int64_t* tri = a.faces + 3 * f;
  T* gv = static_cast<T*>(a.grad_verts) + 2 * b * a.num_vertices;
  for (int k = 0; k < 3; ++k) {
    if (acc[2 * k] != T(0)) atomicAdd(gv + 2 * tri[k], acc[2 * k]);
    if (acc[2 * k + 1] != T(0)) atomicAdd(gv + 2 * tri[k] + 1, acc[2 * k + 1]);
  }
}

template <typename T>
__global__ void backward_face_kernel(SoftSilhouetteArgs a, Consts c) {
  int64_t i;
  Face<T> face;
  if (!take_small_face<T>(a, c, &i, face)) return;
  const int64_t HW = a.height * a.width, b = i / a.num_faces;
  const T* g = static_cast<const T*>(a.grad_alpha) + b * HW;
  const T* trans = static_cast<const T*>(a.transmittance) + b * HW;
  const T inv_sigma = static_cast<T>(1.0 / a.sigma), cutoff = static_cast<T>(a.cutoff_d2);
  T acc[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
  for (int64_t y = face.y0; y <= face.y1; ++y)
    for (int64_t x = face.x0; x <= face.x1; ++x) backward_pixel(a, face, g, trans, x, y, inv_sigma, cutoff, acc);
  add_face_grad(a, i, acc);
}

// One block per queued face: per-thread partial sums, reduced in shared memory.
template <typename T>
__global__ void backward_big_face_kernel(SoftSilhouetteArgs a, Consts c) {
  __shared__ T part[6][kThreads];
  const int64_t count = a.big[0];
  const int64_t HW = a.height * a.width;
  const T inv_sigma = static_cast<T>(1.0 / a.sigma), cutoff = static_cast<T>(a.cutoff_d2);
  for (int64_t e = blockIdx.x; e < count; e += gridDim.x) {
    const int64_t i = a.big[1 + e];
    Face<T> face;
    if (!load_face<T>(a, i, c.reach, face)) continue;  // same for the whole block
    const int64_t b = i / a.num_faces;
    const T* g = static_cast<const T*>(a.grad_alpha) + b * HW;
    const T* trans = static_cast<const T*>(a.transmittance) + b * HW;
    T acc[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
    const int64_t nx = face.x1 - face.x0 + 1, n = nx * (face.y1 - face.y0 + 1);
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x)
      backward_pixel(a, face, g, trans, face.x0 + k % nx, face.y0 + k / nx, inv_sigma, cutoff, acc);
    for (int j = 0; j < 6; ++j) part[j][threadIdx.x] = acc[j];
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride)
        for (int j = 0; j < 6; ++j) part[j][threadIdx.x] += part[j][threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      T sum[6];
      for (int j = 0; j < 6; ++j) sum[j] = part[j][0];
      add_face_grad(a, i, sum);
    }
    __syncthreads();  // part is reused by the next queued face
  }
}

unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

template <typename T>
void forward(const SoftSilhouetteArgs& a, cudaStream_t s) {
  const int64_t pixels = a.batch * a.height * a.width;
  if (pixels == 0) return;
  check_cuda(cudaMemsetAsync(a.alpha, 0, sizeof(T) * pixels, s), "soft_silhouette: clearing the sums");
  const Consts c{softras::window_reach(a.cutoff_d2)};
  const int64_t BF = a.batch * a.num_faces;
  if (BF > 0) {
    check_cuda(cudaMemsetAsync(a.big, 0, sizeof(int64_t), s), "soft_silhouette: clearing the face queue");
    forward_face_kernel<T><<<blocks_for(BF), kThreads, 0, s>>>(a, c);
    check_cuda(cudaGetLastError(), "soft_silhouette: forward_face_kernel launch");
    const int64_t grid = std::min<int64_t>(kBigFaceBlocks, BF);
    forward_big_face_kernel<T><<<static_cast<unsigned int>(grid), kThreads, 0, s>>>(a, c);
    check_cuda(cudaGetLastError(), "soft_silhouette: forward_big_face_kernel launch");
  }
  finalize_kernel<T><<<blocks_for(pixels), kThreads, 0, s>>>(a);
  check_cuda(cudaGetLastError(), "soft_silhouette: finalize_kernel launch");
}

template <typename T>
void backward(const SoftSilhouetteArgs& a, cudaStream_t s) {
  const int64_t BV = a.batch * a.num_vertices;
  if (BV > 0)
    check_cuda(cudaMemsetAsync(a.grad_verts, 0, sizeof(T) * 2 * BV, s), "soft_silhouette: clearing grad_verts");
  const int64_t BF = a.batch * a.num_faces;
  if (BF == 0 || a.height == 0 || a.width == 0) return;
  const Consts c{softras::window_reach(a.cutoff_d2)};
  check_cuda(cudaMemsetAsync(a.big, 0, sizeof(int64_t), s), "soft_silhouette: clearing the face queue");
  backward_face_kernel<T><<<blocks_for(BF), kThreads, 0, s>>>(a, c);
  check_cuda(cudaGetLastError(), "soft_silhouette: backward_face_kernel launch");
  const int64_t grid = std::min<int64_t>(kBigFaceBlocks, BF);
  backward_big_face_kernel<T><<<static_cast<unsigned int>(grid), kThreads, 0, s>>>(a, c);
  check_cuda(cudaGetLastError(), "soft_silhouette: backward_big_face_kernel launch");
}

}  // namespace

void soft_silhouette_forward_cuda(DType dtype, const SoftSilhouetteArgs& a, int device, void* stream) {
  DeviceGuard guard(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float32)
    forward<float>(a, s);
  else
    forward<double>(a, s);
}

void soft_silhouette_backward_cuda(DType dtype, const SoftSilhouetteArgs& a, int device, void* stream) {
  DeviceGuard guard(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float32)
    backward<float>(a, s);
  else
    backward<double>(a, s);
}

}  // namespace smplfast
