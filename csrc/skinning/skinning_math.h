// Per-sample / per-vertex bodies of the skinning kernels, shared by the CPU and CUDA paths.
#pragma once

#include "common/macros.h"
#include "common/rotation.h"

namespace smplfast {

// Forward kinematics of one sample. R: [J,9], rest: [J,3] -> posed: [J,3], transforms: [J,12].
template <typename T>
SF_HD void chain_forward_sample(int64_t J, const int64_t* parents, const T* R, const T* rest, T* posed,
                                T* transforms) {
  for (int64_t j = 0; j < J; ++j) {
    const int64_t p = parents[j];
    T Rw[9], t[3];
    if (p < 0) {
      for (int i = 0; i < 9; ++i) Rw[i] = R[j * 9 + i];
      for (int i = 0; i < 3; ++i) t[i] = rest[j * 3 + i];
    } else {
      // The parent's world rotation sits in its transform's 3x3 block.
      const T* Ap = transforms + p * 12;
      const T Rp[9] = {Ap[0], Ap[1], Ap[2], Ap[4], Ap[5], Ap[6], Ap[8], Ap[9], Ap[10]};
      matmul33(Rp, R + j * 9, Rw);
      const T d[3] = {rest[j * 3 + 0] - rest[p * 3 + 0], rest[j * 3 + 1] - rest[p * 3 + 1],
                      rest[j * 3 + 2] - rest[p * 3 + 2]};
      matvec33(Rp, d, t);
      for (int i = 0; i < 3; ++i) t[i] += posed[p * 3 + i];
    }
    T Rj[3];
    matvec33(Rw, rest + j * 3, Rj);
    T* A = transforms + j * 12;
    for (int r = 0; r < 3; ++r) {
      A[r * 4 + 0] = Rw[r * 3 + 0];
      A[r * 4 + 1] = Rw[r * 3 + 1];
      A[r * 4 + 2] = Rw[r * 3 + 2];
      A[r * 4 + 3] = t[r] - Rj[r];
      posed[j * 3 + r] = t[r];
    }
  }
}

// Reverse-mode of chain_forward_sample. gR [J,9] first holds d/d Rw_j (the world rotations) and is
// turned into d/d R_j children-first, so the only scratch is gt, J*3 values given by the caller.
template <typename T>
SF_HD void chain_backward_sample(int64_t J, const int64_t* parents, const T* R, const T* rest,
                                 const T* transforms, const T* g_posed, const T* g_transforms, T* gR,
                                 T* g_rest, T* gt) {
  // Output terms: A_j = [Rw_j | t_j - Rw_j rest_j], posed_j = t_j.
  for (int64_t j = 0; j < J; ++j) {
    const T* A = transforms + j * 12;
    const T* gA = g_transforms ? g_transforms + j * 12 : nullptr;
    const T* r = rest + j * 3;
    for (int i = 0; i < 3; ++i) {
      const T gtr = gA ? gA[i * 4 + 3] : T(0);
      for (int k = 0; k < 3; ++k) gR[j * 9 + i * 3 + k] = (gA ? gA[i * 4 + k] : T(0)) - gtr * r[k];
      gt[j * 3 + i] = gtr + (g_posed ? g_posed[j * 3 + i] : T(0));
    }
    // d(-Rw rest)/d rest = -Rw^T g
    T gtr[3] = {gA ? gA[3] : T(0), gA ? gA[7] : T(0), gA ? gA[11] : T(0)};
    const T Rw[9] = {A[0], A[1], A[2], A[4], A[5], A[6], A[8], A[9], A[10]};
    T tmp[3];
    matvec33_t(Rw, gtr, tmp);
    for (int i = 0; i < 3; ++i) g_rest[j * 3 + i] = -tmp[i];
  }
  // Children before parents: Rw_j = Rw_p R_j, t_j = Rw_p (rest_j - rest_p) + t_p.
  for (int64_t j = J - 1; j >= 0; --j) {
    const int64_t p = parents[j];
    if (p < 0) {  // gR_j = gRw_j, already in place
      for (int i = 0; i < 3; ++i) g_rest[j * 3 + i] += gt[j * 3 + i];
      continue;
    }
    const T* Ap = transforms + p * 12;
    const T Rp[9] = {Ap[0], Ap[1], Ap[2], Ap[4], Ap[5], Ap[6], Ap[8], Ap[9], Ap[10]};
    const T* Rj = R + j * 9;
    T gRwj[9];  // complete: every child (index > j) has added its share
    for (int i = 0; i < 9; ++i) gRwj[i] = gR[j * 9 + i];
    const T* gtj = gt + j * 3;
    const T d[3] = {rest[j * 3 + 0] - rest[p * 3 + 0], rest[j * 3 + 1] - rest[p * 3 + 1],
                    rest[j * 3 + 2] - rest[p * 3 + 2]};
    // gR_j = Rp^T gRw_j
    for (int i = 0; i < 3; ++i)
      for (int k = 0; k < 3; ++k)
        gR[j * 9 + i * 3 + k] = Rp[0 * 3 + i] * gRwj[0 * 3 + k] + Rp[1 * 3 + i] * gRwj[1 * 3 + k] +
                                Rp[2 * 3 + i] * gRwj[2 * 3 + k];
    // gRw_p += gRw_j R_j^T + gt_j d^T
    for (int i = 0; i < 3; ++i)
      for (int k = 0; k < 3; ++k)
        gR[p * 9 + i * 3 + k] += gRwj[i * 3 + 0] * Rj[k * 3 + 0] + gRwj[i * 3 + 1] * Rj[k * 3 + 1] +
                                 gRwj[i * 3 + 2] * Rj[k * 3 + 2] + gtj[i] * d[k];
    T gd[3];
    matvec33_t(Rp, gtj, gd);
    for (int i = 0; i < 3; ++i) {
      gt[p * 3 + i] += gtj[i];
      g_rest[j * 3 + i] += gd[i];
      g_rest[p * 3 + i] -= gd[i];
    }
  }
}

// Blended 3x4 transform of one vertex: M = sum_k w_k A[idx_k].
template <typename T>
SF_HD void blend_transform(const T* A, const int32_t* idx, const T* w, int64_t K, T* M) {
  for (int i = 0; i < 12; ++i) M[i] = T(0);
  for (int64_t k = 0; k < K; ++k) {
    const T wk = w[k];
    const T* Ak = A + static_cast<int64_t>(idx[k]) * 12;
    for (int i = 0; i < 12; ++i) M[i] += wk * Ak[i];
  }
}

template <typename T>
SF_HD void lbs_vertex(const T* A, const int32_t* idx, const T* w, int64_t K, const T* p, const T* transl,
                      T* out) {
  T M[12];
  blend_transform(A, idx, w, K, M);
  for (int r = 0; r < 3; ++r)
    out[r] = M[r * 4 + 0] * p[0] + M[r * 4 + 1] * p[1] + M[r * 4 + 2] * p[2] + M[r * 4 + 3] + transl[r];
}

}  // namespace smplfast
