// Per-element rotation and rigid-transform maths, shared by CPU and CUDA kernels.
//
// Layouts: 3-vectors are T[3]; rotation matrices are row-major T[9]; rigid transforms are
// row-major 3x4 T[12] = [R | t].
#pragma once

#include <cmath>

#include "common/macros.h"

namespace smplfast {

// Axis-angle -> rotation matrix with the same convention as smplx's batch_rodrigues: the angle is
// |aa + eps| with eps = 1e-8 added to each component (not |aa|). Matching it bit for bit keeps
// smplfast equal to smplx near the identity, where the two definitions differ by ~1e-8 rad.
template <typename T>
SF_HD void rodrigues(const T* aa, T* R) {
  const T eps = T(1e-8);
  const T w0 = aa[0] + eps, w1 = aa[1] + eps, w2 = aa[2] + eps;
  const T theta = sqrt(w0 * w0 + w1 * w1 + w2 * w2);
  const T n0 = aa[0] / theta, n1 = aa[1] / theta, n2 = aa[2] / theta;
  const T s = sin(theta), omc = T(1) - cos(theta);
  // R = I + s K + (1 - c) K^2 with K = [n]_x, K^2 formed as the product (as smplx does).
  const T K[9] = {0, -n2, n1, n2, 0, -n0, -n1, n0, 0};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      const T k2 = K[i * 3 + 0] * K[0 * 3 + j] + K[i * 3 + 1] * K[1 * 3 + j] + K[i * 3 + 2] * K[2 * 3 + j];
      R[i * 3 + j] = (i == j ? T(1) : T(0)) + s * K[i * 3 + j] + omc * k2;
    }
}

// Vector-Jacobian product of rodrigues(): given dL/dR (row-major 3x3) return dL/daa.
template <typename T>
SF_HD void rodrigues_backward(const T* aa, const T* gR, T* gaa) {
  const T eps = T(1e-8);
  const T w[3] = {aa[0] + eps, aa[1] + eps, aa[2] + eps};
  const T theta = sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]);
  const T n[3] = {aa[0] / theta, aa[1] / theta, aa[2] / theta};
  const T s = sin(theta), c = cos(theta), omc = T(1) - c;
  // K and K^2 (row-major).
  const T K[9] = {0, -n[2], n[1], n[2], 0, -n[0], -n[1], n[0], 0};
  T K2[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      K2[i * 3 + j] = K[i * 3 + 0] * K[0 * 3 + j] + K[i * 3 + 1] * K[1 * 3 + j] + K[i * 3 + 2] * K[2 * 3 + j];
  T g_s = 0, g_omc = 0;
  for (int i = 0; i < 9; ++i) {
    g_s += gR[i] * K[i];
    g_omc += gR[i] * K2[i];
  }
  // dL/dK = s G + (1 - c) (G K^T + K^T G)
  T gK[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      T a = 0, b = 0;
      for (int k = 0; k < 3; ++k) {
        a += gR[i * 3 + k] * K[j * 3 + k];  // (G K^T)_ij
        b += K[k * 3 + i] * gR[k * 3 + j];  // (K^T G)_ij
      }
      gK[i * 3 + j] = s * gR[i * 3 + j] + omc * (a + b);
    }
  const T gn[3] = {gK[7] - gK[5], gK[2] - gK[6], gK[3] - gK[1]};
  // n = aa / theta, theta = |aa + eps|
  T g_theta = g_s * c + g_omc * s;
  g_theta -= (gn[0] * aa[0] + gn[1] * aa[1] + gn[2] * aa[2]) / (theta * theta);
  for (int i = 0; i < 3; ++i) gaa[i] = gn[i] / theta + g_theta * w[i] / theta;
}

// out = a * b for row-major 3x3 matrices.
template <typename T>
SF_HD void matmul33(const T* a, const T* b, T* out) {
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      out[i * 3 + j] = a[i * 3 + 0] * b[0 * 3 + j] + a[i * 3 + 1] * b[1 * 3 + j] + a[i * 3 + 2] * b[2 * 3 + j];
}

// out = a * v for a row-major 3x3 matrix.
template <typename T>
SF_HD void matvec33(const T* a, const T* v, T* out) {
  for (int i = 0; i < 3; ++i) out[i] = a[i * 3 + 0] * v[0] + a[i * 3 + 1] * v[1] + a[i * 3 + 2] * v[2];
}

// out = a^T * v for a row-major 3x3 matrix.
template <typename T>
SF_HD void matvec33_t(const T* a, const T* v, T* out) {
  for (int i = 0; i < 3; ++i) out[i] = a[0 * 3 + i] * v[0] + a[1 * 3 + i] * v[1] + a[2 * 3 + i] * v[2];
}

}  // namespace smplfast
