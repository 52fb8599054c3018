// CUDA rasterizer (see raster.h): one thread projects each vertex; one thread per (image, face)
// scans the face's bounding box and updates the z-buffer with a 64-bit atomicMin on
// (depth bits << 32 | face), which makes the result independent of thread order. Faces whose box
// holds more than kMaxThreadPixels pixel centres are queued and scanned by whole thread blocks
// instead; a resolve pass then computes the winning face's barycentrics and depth per pixel.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "common/cuda_utils.h"
#include "raster/raster.h"
#include "raster/raster_math.h"

namespace smplfast {
namespace {

using raster::Face;

constexpr int kThreads = 256;
constexpr int64_t kMaxThreadPixels = 64;
constexpr int kBigFaceBlocks = 1024;

template <typename T>
__global__ void project_kernel(RasterArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.batch * a.num_vertices) return;
  const int64_t b = i / a.num_vertices;
  const T* x = static_cast<const T*>(a.vertices) + 3 * i;
  raster::project_vertex(static_cast<double>(x[0]), static_cast<double>(x[1]), static_cast<double>(x[2]),
                         a.focal[2 * b], a.focal[2 * b + 1], a.center[2 * b], a.center[2 * b + 1], a.proj + 4 * i);
}

__device__ __forceinline__ void depth_test(const RasterArgs& a, const Face& face, int64_t b, int64_t f, int64_t x,
                                           int64_t y) {
  double w[3], total;
  raster::edge_values(face, static_cast<double>(x) + 0.5, static_cast<double>(y) + 0.5, w);
  if (!raster::covers(face, w, &total)) return;
  const uint64_t key = raster::depth_key(div_rn(total, raster::inverse_depth_sum(face, w)), f);
  unsigned long long* slot =
      reinterpret_cast<unsigned long long*>(a.face_index + (b * a.height + y) * a.width + x);
  // Keys only decrease, so a stale read can only cost an extra atomic, never skip a needed one.
  if (key < *reinterpret_cast<volatile unsigned long long*>(slot)) atomicMin(slot, static_cast<unsigned long long>(key));
}

__global__ void face_kernel(RasterArgs a) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= a.batch * a.num_faces) return;
  const int64_t b = i / a.num_faces, f = i % a.num_faces;
  const int64_t* tri = a.faces + 3 * f;
  Face face;
  if (!raster::setup_face(a.proj + 4 * b * a.num_vertices, tri[0], tri[1], tri[2], a.width, 0, a.height, a.near,
                          face))
    return;
  const int64_t nx = face.x1 - face.x0 + 1, ny = face.y1 - face.y0 + 1;
  if (nx * ny > kMaxThreadPixels) {
    const unsigned long long slot = atomicAdd(reinterpret_cast<unsigned long long*>(a.big), 1ull);
    a.big[1 + slot] = i;
    return;
  }
  for (int64_t y = face.y0; y <= face.y1; ++y)
    for (int64_t x = face.x0; x <= face.x1; ++x) depth_test(a, face, b, f, x, y);
}

// One block per queued large face (grid-stride over the queue).
__global__ void big_face_kernel(RasterArgs a) {
  const int64_t count = a.big[0];
  for (int64_t e = blockIdx.x; e < count; e += gridDim.x) {
    const int64_t i = a.big[1 + e];
    const int64_t b = i / a.num_faces, f = i % a.num_faces;
    const int64_t* tri = a.faces + 3 * f;
    Face face;
    if (!raster::setup_face(a.proj + 4 * b * a.num_vertices, tri[0], tri[1], tri[2], a.width, 0, a.height, a.near,
                            face))
      continue;  // cannot happen: the same test queued it
    const int64_t nx = face.x1 - face.x0 + 1, n = nx * (face.y1 - face.y0 + 1);
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) depth_test(a, face, b, f, face.x0 + k % nx, face.y0 + k / nx);
  }
}

template <typename T>
__global__ void resolve_kernel(RasterArgs a) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t HW = a.height * a.width;
  if (p >= a.batch * HW) return;
  T* bary = static_cast<T*>(a.bary) + 3 * p;
  T* depth = static_cast<T*>(a.depth) + p;
  const uint64_t key = static_cast<uint64_t>(a.face_index[p]);  // the z-buffer, overwritten in place
  if (key == raster::kEmptyKey) {
    a.face_index[p] = -1;
    bary[0] = bary[1] = bary[2] = T(0);
    *depth = T(0);
    return;
  }
  const int64_t b = p / HW, y = (p % HW) / a.width, x = p % a.width;
  const int64_t f = static_cast<int64_t>(key & 0xffffffffu);
  const int64_t* tri = a.faces + 3 * f;
  Face face;
  raster::load_face(a.proj + 4 * b * a.num_vertices, tri[0], tri[1], tri[2], face);
  a.face_index[p] = f;
  raster::resolve_pixel<T>(face, static_cast<double>(x) + 0.5, static_cast<double>(y) + 0.5, bary, depth);
}

unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

template <typename T>
void launch(const RasterArgs& a, cudaStream_t s) {
  const int64_t B = a.batch, pixels = a.batch * a.height * a.width;
  if (B == 0 || pixels == 0) return;
  check_cuda(cudaMemsetAsync(a.face_index, 0xff, sizeof(int64_t) * pixels, s), "rasterize: clearing the z-buffer");
  if (a.num_vertices > 0) {
    project_kernel<T><<<blocks_for(B * a.num_vertices), kThreads, 0, s>>>(a);
    check_cuda(cudaGetLastError(), "rasterize: project_kernel launch");
  }
  if (a.num_faces > 0) {
    check_cuda(cudaMemsetAsync(a.big, 0, sizeof(int64_t), s), "rasterize: clearing the face queue");
    face_kernel<<<blocks_for(B * a.num_faces), kThreads, 0, s>>>(a);
    check_cuda(cudaGetLastError(), "rasterize: face_kernel launch");
    const int64_t grid = std::min<int64_t>(kBigFaceBlocks, B * a.num_faces);
    big_face_kernel<<<static_cast<unsigned int>(grid), kThreads, 0, s>>>(a);
    check_cuda(cudaGetLastError(), "rasterize: big_face_kernel launch");
  }
  resolve_kernel<T><<<blocks_for(pixels), kThreads, 0, s>>>(a);
  check_cuda(cudaGetLastError(), "rasterize: resolve_kernel launch");
}

}  // namespace

void rasterize_cuda(DType dtype, const RasterArgs& a, int device, void* stream) {
  DeviceGuard guard(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == DType::Float32)
    launch<float>(a, s);
  else
    launch<double>(a, s);
}

}  // namespace smplfast
