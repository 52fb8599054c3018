// OpenMP kernels for the skinning ops (see skinning.h for shapes).
#include <omp.h>

#include <algorithm>
#include <vector>

#include "skinning/skinning.h"
#include "skinning/skinning_math.h"

namespace smplfast {
namespace {

template <typename T>
void rodrigues_forward_impl(const RodriguesArgs& a) {
  const T* aa = static_cast<const T*>(a.aa);
  T* R = static_cast<T*>(a.R);
#pragma omp parallel for schedule(static) if (a.n > 4096)
  for (int64_t i = 0; i < a.n; ++i) rodrigues(aa + i * 3, R + i * 9);
}

template <typename T>
void rodrigues_backward_impl(const RodriguesArgs& a) {
  const T* aa = static_cast<const T*>(a.aa);
  const T* gR = static_cast<const T*>(a.grad_R);
  T* gaa = static_cast<T*>(a.grad_aa);
#pragma omp parallel for schedule(static) if (a.n > 4096)
  for (int64_t i = 0; i < a.n; ++i) rodrigues_backward(aa + i * 3, gR + i * 9, gaa + i * 3);
}

template <typename T>
void chain_forward_impl(const ChainArgs& a) {
  const int64_t J = a.joints;
  const T* R = static_cast<const T*>(a.R);
  const T* rest = static_cast<const T*>(a.rest_joints);
  T* posed = static_cast<T*>(a.posed_joints);
  T* A = static_cast<T*>(a.transforms);
#pragma omp parallel for schedule(static) if (a.batch > 256)
  for (int64_t b = 0; b < a.batch; ++b)
    chain_forward_sample(J, a.parents, R + b * J * 9, rest + b * J * 3, posed + b * J * 3, A + b * J * 12);
}

template <typename T>
void chain_backward_impl(const ChainArgs& a) {
  const int64_t J = a.joints;
  const T* R = static_cast<const T*>(a.R);
  const T* rest = static_cast<const T*>(a.rest_joints);
  const T* A = static_cast<const T*>(a.transforms);
  const T* gP = static_cast<const T*>(a.grad_posed);
  const T* gA = static_cast<const T*>(a.grad_transforms);
  T* gR = static_cast<T*>(a.grad_R);
  T* grest = static_cast<T*>(a.grad_rest_joints);
#pragma omp parallel if (a.batch > 128)
  {
    T gt[kMaxJoints * 3];  // gR itself holds the world-rotation gradients
#pragma omp for schedule(static)
    for (int64_t b = 0; b < a.batch; ++b)
      chain_backward_sample(J, a.parents, R + b * J * 9, rest + b * J * 3, A + b * J * 12,
                            gP ? gP + b * J * 3 : nullptr, gA ? gA + b * J * 12 : nullptr, gR + b * J * 9,
                            grest + b * J * 3, gt);
  }
}

// KC > 0: influences fixed at compile time (fully unrolled); KC == 0: runtime count.
template <typename T, int KC>
void lbs_forward_rows(const LbsArgs& a) {
  const int64_t V = a.vertices, K = KC > 0 ? KC : a.influences, J = a.joints, B = a.batch;
  const T* __restrict__ A = static_cast<const T*>(a.transforms);
  const T* __restrict__ vp = static_cast<const T*>(a.v_posed);
  const T* __restrict__ w = static_cast<const T*>(a.w);
  const int32_t* __restrict__ idx = a.idx;
  const T* __restrict__ transl = static_cast<const T*>(a.transl);
  T* __restrict__ out = static_cast<T*>(a.verts);
  // Each thread takes one contiguous range of the flattened (sample, vertex) index and walks it
  // without per-element division; one sample's J transforms stay in L1 while its vertices stream by.
  const int64_t total = B * V;
  if (total == 0) return;
#pragma omp parallel if (total > 2048)
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t begin = total * t / nt, end = total * (t + 1) / nt;
    int64_t b = begin / V, v = begin - b * V;
    for (int64_t i = begin; i < end; ++i) {
      const T* Ab = A + b * J * 12;
      const T* p = vp + b * a.v_posed_batch_stride + v * 3;
      const int32_t* iv = idx + v * K;
      const T* wv = w + v * K;
      // K == 0 (no influences): the blended transform is the zero matrix, so the vertex lands on
      // transl; never read wv[0] / iv[0], which do not exist then.
      T M[12];
      if (K > 0) {
        for (int c = 0; c < 12; ++c) M[c] = wv[0] * Ab[static_cast<int64_t>(iv[0]) * 12 + c];
      } else {
        for (int c = 0; c < 12; ++c) M[c] = T(0);
      }
      for (int64_t k = 1; k < K; ++k) {
        const T wk = wv[k];
        const T* Ak = Ab + static_cast<int64_t>(iv[k]) * 12;
        for (int c = 0; c < 12; ++c) M[c] += wk * Ak[c];
      }
      T* o = out + i * 3;
      const T* tr = transl + b * 3;
      for (int r = 0; r < 3; ++r)
        o[r] = M[r * 4 + 0] * p[0] + M[r * 4 + 1] * p[1] + M[r * 4 + 2] * p[2] + M[r * 4 + 3] + tr[r];
      if (++v == V) {
        v = 0;
        ++b;
      }
    }
  }
}

template <typename T>
void lbs_forward_impl(const LbsArgs& a) {
  switch (a.influences) {
    case 1: return lbs_forward_rows<T, 1>(a);
    case 2: return lbs_forward_rows<T, 2>(a);
    case 3: return lbs_forward_rows<T, 3>(a);
    case 4: return lbs_forward_rows<T, 4>(a);
    case 5: return lbs_forward_rows<T, 5>(a);
    case 6: return lbs_forward_rows<T, 6>(a);
    case 8: return lbs_forward_rows<T, 8>(a);
    default: return lbs_forward_rows<T, 0>(a);
  }
}

// Accumulates one vertex's contribution to d/dA (J*12) and d/dtransl (3); writes d/dv_posed.
template <typename T>
inline void lbs_backward_vertex(const T* A, const int32_t* idx, const T* w, int64_t K, const T* p, const T* g,
                                T* gA_acc, T* gtr_acc, T* gp) {
  if (gp) {
    T M[12];
    blend_transform(A, idx, w, K, M);
    for (int c = 0; c < 3; ++c) gp[c] = M[0 * 4 + c] * g[0] + M[1 * 4 + c] * g[1] + M[2 * 4 + c] * g[2];
  }
  for (int64_t k = 0; k < K; ++k) {
    const T wk = w[k];
    if (wk == T(0)) continue;  // padding entries
    T* acc = gA_acc + static_cast<int64_t>(idx[k]) * 12;
    for (int r = 0; r < 3; ++r) {
      const T wg = wk * g[r];
      acc[r * 4 + 0] += wg * p[0];
      acc[r * 4 + 1] += wg * p[1];
      acc[r * 4 + 2] += wg * p[2];
      acc[r * 4 + 3] += wg;
    }
  }
  for (int r = 0; r < 3; ++r) gtr_acc[r] += g[r];
}

template <typename T>
struct Vec3 {
  T v[3];
};

// The incoming gradient of vertex (b, v), read through its strides.
template <typename T>
inline Vec3<T> grad_at(const LbsArgs& a, const T* g, int64_t b, int64_t v) {
  const T* p = g + b * a.grad_strides[0] + v * a.grad_strides[1];
  return {{p[0], p[a.grad_strides[2]], p[2 * a.grad_strides[2]]}};
}

template <typename T>
void lbs_backward_weights(const LbsArgs& a);

template <typename T>
void lbs_backward_impl(const LbsArgs& a) {
  const int64_t B = a.batch, V = a.vertices, K = a.influences, J = a.joints;
  const T* A = static_cast<const T*>(a.transforms);
  const T* vp = static_cast<const T*>(a.v_posed);
  const T* w = static_cast<const T*>(a.w);
  const T* g = static_cast<const T*>(a.grad_verts);
  T* gA = static_cast<T*>(a.grad_transforms);
  T* gp = static_cast<T*>(a.grad_v_posed);
  T* gtr = static_cast<T*>(a.grad_transl);
  const int nthreads = omp_get_max_threads();
  const int64_t acc_size = J * 12 + 3;
  if (a.grad_w) lbs_backward_weights<T>(a);

  if (B >= nthreads || V * B < 4096) {
    // Enough samples: each thread owns whole samples, so no reduction across threads is needed.
#pragma omp parallel if (B > 1 && V * B >= 4096)
    {
      std::vector<T> acc(acc_size);
#pragma omp for schedule(static)
      for (int64_t b = 0; b < B; ++b) {
        std::fill(acc.begin(), acc.end(), T(0));
        const T* Ab = A + b * J * 12;
        for (int64_t v = 0; v < V; ++v)
          lbs_backward_vertex(Ab, a.idx + v * K, w + v * K, K, vp + b * a.v_posed_batch_stride + v * 3,
                              grad_at(a, g, b, v).v, acc.data(), acc.data() + J * 12,
                              gp ? gp + (b * V + v) * 3 : nullptr);
        std::copy(acc.begin(), acc.begin() + J * 12, gA + b * J * 12);
        std::copy(acc.begin() + J * 12, acc.end(), gtr + b * 3);
      }
    }
    return;
  }
  // Few samples: split the vertices between threads, one accumulator per thread, then sum the
  // accumulators in thread order (deterministic for a fixed thread count).
  std::vector<T> partial(static_cast<size_t>(nthreads) * acc_size);
  for (int64_t b = 0; b < B; ++b) {
    std::fill(partial.begin(), partial.end(), T(0));
    const T* Ab = A + b * J * 12;
#pragma omp parallel num_threads(nthreads)
    {
      T* acc = partial.data() + static_cast<size_t>(omp_get_thread_num()) * acc_size;
#pragma omp for schedule(static)
      for (int64_t v = 0; v < V; ++v)
        lbs_backward_vertex(Ab, a.idx + v * K, w + v * K, K, vp + b * a.v_posed_batch_stride + v * 3,
                            grad_at(a, g, b, v).v, acc, acc + J * 12, gp ? gp + (b * V + v) * 3 : nullptr);
    }
    for (int64_t i = 0; i < acc_size; ++i) {
      T s = 0;
      for (int t = 0; t < nthreads; ++t) s += partial[static_cast<size_t>(t) * acc_size + i];
      if (i < J * 12)
        gA[b * J * 12 + i] = s;
      else
        gtr[b * 3 + (i - J * 12)] = s;
    }
  }
}

// d verts / d w: grad_w[v, k] = sum_b g[b, v] . (transforms[b, idx[v, k]] [v_posed[b, v]; 1]).
// One vertex per iteration, the batch summed in order (deterministic, no reduction across threads).
template <typename T>
void lbs_backward_weights(const LbsArgs& a) {
  const int64_t B = a.batch, V = a.vertices, K = a.influences, J = a.joints;
  if (K == 0 || V == 0) return;
  const T* A = static_cast<const T*>(a.transforms);
  const T* vp = static_cast<const T*>(a.v_posed);
  const T* g = static_cast<const T*>(a.grad_verts);
  T* gw = static_cast<T*>(a.grad_w);
#pragma omp parallel for schedule(static) if (V * B * K > 16384)
  for (int64_t v = 0; v < V; ++v) {
    const int32_t* iv = a.idx + v * K;
    for (int64_t k = 0; k < K; ++k) {
      T s = 0;
      for (int64_t b = 0; b < B; ++b) {
        const T* Ak = A + b * J * 12 + static_cast<int64_t>(iv[k]) * 12;
        const T* p = vp + b * a.v_posed_batch_stride + v * 3;
        const Vec3<T> gv = grad_at(a, g, b, v);
        for (int r = 0; r < 3; ++r)
          s += gv.v[r] * (Ak[r * 4 + 0] * p[0] + Ak[r * 4 + 1] * p[1] + Ak[r * 4 + 2] * p[2] + Ak[r * 4 + 3]);
      }
      gw[v * K + k] = s;
    }
  }
}

}  // namespace

#define SF_DISPATCH(NAME, ARGS)                 \
  void NAME##_cpu(DType dtype, const ARGS& a) { \
    if (dtype == DType::Float64)                \
      NAME##_impl<double>(a);                   \
    else                                        \
      NAME##_impl<float>(a);                    \
  }

SF_DISPATCH(rodrigues_forward, RodriguesArgs)
SF_DISPATCH(rodrigues_backward, RodriguesArgs)
SF_DISPATCH(chain_forward, ChainArgs)
SF_DISPATCH(chain_backward, ChainArgs)
SF_DISPATCH(lbs_forward, LbsArgs)
SF_DISPATCH(lbs_backward, LbsArgs)

}  // namespace smplfast
