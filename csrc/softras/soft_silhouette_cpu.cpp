// CPU soft silhouette (see soft_silhouette.h). Forward: each OpenMP task owns one image (or one band
// of rows of one image when the batch alone does not keep every thread busy), scans every face's
// pixel window clipped to its rows and multiplies 1 - D_f = sigmoid(-s_f) into its own rows of the
// transmittance without locks, then sets A = 1 - transmittance. Backward: each task owns a range of
// faces of one image and writes every face's summed corner gradients to a workspace; a second pass
// adds them to the vertices in face order (one task per image), so the result does not depend on the
// thread count.
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "softras/soft_silhouette.h"
#include "softras/softras_math.h"

namespace smplfast {
namespace {

using softras::Face;
using softras::PixelHit;

// Below this many units of work (faces + pixels / 8, summed over images) a call runs on one thread.
constexpr int64_t kSerialWork = 4096;
// Faces per backward task.
constexpr int64_t kFaceChunk = 2048;

int64_t thread_count(const SoftSilhouetteArgs& a) {
  const bool small = a.batch * (a.num_faces + a.height * a.width / 8) < kSerialWork;
  return small ? 1 : std::max(1, omp_get_max_threads());
}

// Rows [r0, r1) of image b: the transmittance prod_f (1 - D_f), then A = 1 - transmittance.
template <typename T>
void forward_band(const SoftSilhouetteArgs& a, int64_t b, int64_t r0, int64_t r1, double reach) {
  const int64_t W = a.width, F = a.num_faces;
  const T* verts = static_cast<const T*>(a.verts) + 2 * b * a.num_vertices;
  T* alpha = static_cast<T*>(a.alpha) + b * a.height * W;
  T* trans = static_cast<T*>(a.transmittance) + b * a.height * W;
  std::fill(trans + r0 * W, trans + r1 * W, T(1));
  const T inv_sigma = static_cast<T>(1.0 / a.sigma);
  const T cutoff = static_cast<T>(a.cutoff_d2);
  for (int64_t f = 0; f < F; ++f) {
    const int64_t* tri = a.faces + 3 * f;
    Face<T> face;
    if (!softras::setup_face(verts, tri[0], tri[1], tri[2], W, a.height, r0, r1, reach, face)) continue;
    for (int64_t y = face.y0; y <= face.y1; ++y) {
      const T pv = static_cast<T>(y) + T(0.5);
      T* row = trans + y * W;
      for (int64_t x = face.x0; x <= face.x1; ++x) {
        const T pu = static_cast<T>(x) + T(0.5);
        if (!softras::near_box(face, pu, pv)) continue;
        bool inside;
        const T d2 = softras::distance2(face, pu, pv, &inside);
        T s;
        if (softras::scaled_distance(d2, inside, inv_sigma, cutoff, &s)) row[x] *= softras::sigmoid(-s);
      }
    }
  }
  for (int64_t p = r0 * W; p < r1 * W; ++p) alpha[p] = T(1) - trans[p];
}

template <typename T>
void forward_impl(const SoftSilhouetteArgs& a) {
  const int64_t B = a.batch, H = a.height;
  if (B == 0 || H == 0 || a.width == 0) return;
  const double reach = softras::window_reach(a.cutoff_d2);
  const int64_t threads = thread_count(a);
  if (B >= 2 * threads) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(static_cast<int>(threads))
    for (int64_t b = 0; b < B; ++b) forward_band<T>(a, b, 0, H, reach);
    return;
  }
  // Few images: bands of rows, a few per thread to even out the load.
  const int64_t want = std::min(H, (2 * threads + B - 1) / B);
  const int64_t rows = (H + want - 1) / want;
  const int64_t bands = (H + rows - 1) / rows;
#pragma omp parallel for schedule(dynamic, 1) num_threads(static_cast<int>(threads))
  for (int64_t t = 0; t < B * bands; ++t) {
    const int64_t b = t / bands, r0 = (t % bands) * rows;
    forward_band<T>(a, b, r0, std::min(H, r0 + rows), reach);
  }
}

// Summed corner gradients of faces [f0, f1) of image b into grad_faces[b, f, 3, 2].
template <typename T>
void face_grads(const SoftSilhouetteArgs& a, int64_t b, int64_t f0, int64_t f1, double reach) {
  const int64_t H = a.height, W = a.width;
  const T* verts = static_cast<const T*>(a.verts) + 2 * b * a.num_vertices;
  const T* g = static_cast<const T*>(a.grad_alpha) + b * H * W;
  const T* trans = static_cast<const T*>(a.transmittance) + b * H * W;
  T* out = static_cast<T*>(a.grad_faces) + 6 * b * a.num_faces;
  const T inv_sigma = static_cast<T>(1.0 / a.sigma);
  const T cutoff = static_cast<T>(a.cutoff_d2);
  for (int64_t f = f0; f < f1; ++f) {
    T acc[6] = {T(0), T(0), T(0), T(0), T(0), T(0)};
    const int64_t* tri = a.faces + 3 * f;
    Face<T> face;
    if (softras::setup_face(verts, tri[0], tri[1], tri[2], W, H, 0, H, reach, face)) {
      for (int64_t y = face.y0; y <= face.y1; ++y) {
        const T pv = static_cast<T>(y) + T(0.5);
        for (int64_t x = face.x0; x <= face.x1; ++x) {
          // dA/ds_f = (1 - A) sigmoid(s_f) = exp(-L) D_f.
          const T w = g[y * W + x] * trans[y * W + x];
          const T pu = static_cast<T>(x) + T(0.5);
          if (w == T(0) || !softras::near_box(face, pu, pv)) continue;
          PixelHit<T> h;
          softras::locate(face, pu, pv, h);
          T s;
          if (!softras::scaled_distance(h.d2, h.inside, inv_sigma, cutoff, &s)) continue;
          const T c = w * softras::sigmoid(s) * (h.inside ? inv_sigma : -inv_sigma);
          softras::add_distance_grad(h, c, acc);
        }
      }
    }
    std::copy(acc, acc + 6, out + 6 * f);
  }
}

template <typename T>
void backward_impl(const SoftSilhouetteArgs& a) {
  const int64_t B = a.batch, V = a.num_vertices, F = a.num_faces;
  T* gv = static_cast<T*>(a.grad_verts);
  std::fill(gv, gv + 2 * B * V, T(0));
  if (B == 0 || F == 0 || a.height == 0 || a.width == 0) return;
  const double reach = softras::window_reach(a.cutoff_d2);
  const int64_t threads = thread_count(a);
  const int64_t chunks = (F + kFaceChunk - 1) / kFaceChunk;
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < B * chunks; ++t) {
      const int64_t b = t / chunks, f0 = (t % chunks) * kFaceChunk;
      face_grads<T>(a, b, f0, std::min(F, f0 + kFaceChunk), reach);
    }
    // Implicit barrier: every face sum is written. Scatter them image by image, in face order.
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const T* src = static_cast<const T*>(a.grad_faces) + 6 * b * F;
      T* dst = gv + 2 * b * V;
      for (int64_t f = 0; f < F; ++f) {
        const int64_t* tri = a.faces + 3 * f;
        for (int k = 0; k < 3; ++k) {
          dst[2 * tri[k]] += src[6 * f + 2 * k];
          dst[2 * tri[k] + 1] += src[6 * f + 2 * k + 1];
        }
      }
    }
  }
}

}  // namespace

void soft_silhouette_forward_cpu(DType dtype, const SoftSilhouetteArgs& a) {
  if (dtype == DType::Float32)
    forward_impl<float>(a);
  else
    forward_impl<double>(a);
}

void soft_silhouette_backward_cpu(DType dtype, const SoftSilhouetteArgs& a) {
  if (dtype == DType::Float32)
    backward_impl<float>(a);
  else
    backward_impl<double>(a);
}

}  // namespace smplfast
