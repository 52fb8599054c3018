// CPU rasterizer (see raster.h): vertices are projected once per image, then each OpenMP task owns
// one band of rows of one image (the whole image when the batch alone keeps every thread busy) and
// scans every face's bounding box clipped to its band, keeping its own part of the z-buffer without
// locks (bands make a batch of one use every core); it then resolves the winning face's
// barycentrics and depth for its rows. The z-buffer lives in the face_index output itself.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "raster/raster.h"
#include "raster/raster_math.h"

namespace smplfast {
namespace {

using raster::Face;

// Below this many units of work (faces + pixels / 8, summed over images) a call runs on one thread.
constexpr int64_t kSerialWork = 4096;

template <typename T>
void project_image(const RasterArgs& a, int64_t b, double* out) {
  const int64_t V = a.num_vertices;
  const T* x = static_cast<const T*>(a.vertices) + 3 * b * V;
  const double fx = a.focal[2 * b], fy = a.focal[2 * b + 1], cx = a.center[2 * b], cy = a.center[2 * b + 1];
  for (int64_t i = 0; i < V; ++i)
    raster::project_vertex(static_cast<double>(x[3 * i]), static_cast<double>(x[3 * i + 1]),
                           static_cast<double>(x[3 * i + 2]), fx, fy, cx, cy, out + 4 * i);
}

// Every face of image b over rows [r0, r1); faces in increasing index order, so a strict depth test
// keeps the smaller face on equal keys.
void scan_band(const RasterArgs& a, const double* proj, int64_t b, int64_t r0, int64_t r1) {
  const int64_t F = a.num_faces, W = a.width;
  uint64_t* keys = reinterpret_cast<uint64_t*>(a.face_index) + b * a.height * W;
  std::fill(keys + r0 * W, keys + r1 * W, raster::kEmptyKey);
  for (int64_t f = 0; f < F; ++f) {
    const int64_t* tri = a.faces + 3 * f;
    Face face;
    if (!raster::setup_face(proj, tri[0], tri[1], tri[2], W, r0, r1, a.near, face)) continue;
    for (int64_t y = face.y0; y <= face.y1; ++y) {
      const double pv = static_cast<double>(y) + 0.5;
      uint64_t* row = keys + y * W;
      for (int64_t x = face.x0; x <= face.x1; ++x) {
        double w[3], total;
        raster::edge_values(face, static_cast<double>(x) + 0.5, pv, w);
        if (!raster::covers(face, w, &total)) continue;
        const uint64_t key = raster::depth_key(div_rn(total, raster::inverse_depth_sum(face, w)), f);
        if (key < row[x]) row[x] = key;
      }
    }
  }
}

// Face ids, barycentrics and depth of rows [r0, r1) of image b from its finished z-buffer.
template <typename T>
void resolve_band(const RasterArgs& a, const double* proj, int64_t b, int64_t r0, int64_t r1) {
  const int64_t H = a.height, W = a.width;
  T* bary = static_cast<T*>(a.bary);
  T* depth = static_cast<T*>(a.depth);
  for (int64_t y = r0; y < r1; ++y) {
    for (int64_t x = 0; x < W; ++x) {
      const int64_t p = (b * H + y) * W + x;
      const uint64_t key = static_cast<uint64_t>(a.face_index[p]);  // the z-buffer, overwritten in place
      if (key == raster::kEmptyKey) {
        a.face_index[p] = -1;
        bary[3 * p] = bary[3 * p + 1] = bary[3 * p + 2] = T(0);
        depth[p] = T(0);
        continue;
      }
      const int64_t f = static_cast<int64_t>(key & 0xffffffffu);
      const int64_t* tri = a.faces + 3 * f;
      Face face;
      raster::load_face(proj, tri[0], tri[1], tri[2], face);
      a.face_index[p] = f;
      raster::resolve_pixel<T>(face, static_cast<double>(x) + 0.5, static_cast<double>(y) + 0.5, bary + 3 * p,
                               depth + p);
    }
  }
}

template <typename T>
void rasterize_impl(const RasterArgs& a) {
  const int64_t B = a.batch, H = a.height;
  if (B == 0 || H == 0 || a.width == 0) return;
  const int64_t V = a.num_vertices;
  // Tiny calls (a few triangles, small images) run on one thread: starting a team costs more.
  const bool small = B * (a.num_faces + H * a.width / 8) < kSerialWork;
  const int64_t threads = small ? 1 : std::max(1, omp_get_max_threads());
  if (B >= 2 * threads) {
    // Whole images per task: one parallel region, no barrier between the passes, and the projected
    // vertices in a per-thread buffer that stays in cache.
#pragma omp parallel num_threads(static_cast<int>(threads))
    {
      std::vector<double> proj(static_cast<size_t>(4 * V));
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < B; ++b) {
        project_image<T>(a, b, proj.data());
        scan_band(a, proj.data(), b, 0, H);
        resolve_band<T>(a, proj.data(), b, 0, H);
      }
    }
    return;
  }
  // Few images: bands of rows, a few tasks per thread to even out the load. A band's z-buffer rows
  // are written by its task only, so it resolves them as soon as its scan is done.
  const int64_t want = std::min(H, (2 * threads + B - 1) / B);
  const int64_t rows = (H + want - 1) / want;
  const int64_t bands = (H + rows - 1) / rows;
  std::vector<double> proj(static_cast<size_t>(4 * B * V));
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(threads))
  for (int64_t b = 0; b < B; ++b) project_image<T>(a, b, proj.data() + 4 * b * V);
#pragma omp parallel for schedule(dynamic, 1) num_threads(static_cast<int>(threads))
  for (int64_t t = 0; t < B * bands; ++t) {
    const int64_t b = t / bands, r0 = (t % bands) * rows, r1 = std::min(H, r0 + rows);
    scan_band(a, proj.data() + 4 * b * V, b, r0, r1);
    resolve_band<T>(a, proj.data() + 4 * b * V, b, r0, r1);
  }
}

}  // namespace

void rasterize_cpu(DType dtype, const RasterArgs& a) {
  if (dtype == DType::Float32)
    rasterize_impl<float>(a);
  else
    rasterize_impl<double>(a);
}

}  // namespace smplfast
