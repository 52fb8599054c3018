// project_keypoints: keypoints of a body model projected by a pinhole camera, their robust residuals
// against 2D targets, and the analytic Jacobian of the residuals in [pose, betas, transl].
//
// Every function takes raw pointers to contiguous buffers owned by the caller (torch). Shapes
// (B = batch, J = joints, nb = shape coefficients, S = support vertices, K = skinning influences,
// Nk = keypoints, nnz = regressor entries, P = 3 J + nb + 3):
//   model:  parents[J] int64 (parents[0] = -1, parents[j] < j), joint_template[J,3],
//           joint_shapedirs[J,3,nb], vertex_template[S,3], vertex_shapedirs[S,3,nb],
//           vertex_posedirs[S,3,9(J-1)], lbs_idx[S,K] int32, lbs_weights[S,K],
//           regressor_ptr[Nk+1] int32, regressor_col[nnz] int32 (< J: posed joint, else support
//           vertex col - J), regressor_val[nnz]
//   inputs: pose[B,J,3] axis-angle, betas[B,nb], transl[B,3], cam_rot[B,3,3], cam_transl[B,3],
//           focal[B,2], center[B,2], target[B,Nk,2], weight[B,Nk]
//   outputs: residual[B,Nk,2], jacobian[B,Nk,2,P] (only with `jacobian`), points2d[B,Nk,2],
//           keypoints3d[B,Nk,3]
//
// Maths (per sample): R_i = rodrigues(pose_i) (smplx's convention, see common/rotation.h); rest
// joints Jr = joint_template + joint_shapedirs betas; world transforms G_0 = (R_0, Jr_0),
// G_i = G_parent o (R_i, Jr_i - Jr_parent) with rotation Rg_i and translation p_i; support vertex
// v_rest = template + shapedirs betas [+ posedirs vec(R_i - I, i >= 1)], posed
// x = sum_k w_k (Rg_k (v_rest - Jr_k) + p_k); keypoint K = sum of its regressor row over
// [p; x]; X = cam_rot (K + transl) + cam_transl, Z = max(X_z, 1e-4), points2d = focal X_xy / Z +
// center, e = points2d - target, residual = weight * sigma e / sqrt(sigma^2 + e^2) (sigma > 0) or
// weight * e (sigma = 0). The Jacobian differentiates exactly this (including smplx's rodrigues
// offset, so it matches autograd of the same formulas; no orthonormality is assumed).
//
// Since G_j is affine, a keypoint's skinned vertices fold into one "virtual vertex" per
// (keypoint, joint) pair: sum_e val_e w_ej G_j(v_e) = Rg_j (u - c Jr_j) + c p_j with
// c = sum_e val_e w_ej and u = sum_e val_e w_ej v_rest_e, itself linear in betas and the pose
// feature. The pair table (c, u's template, shape and pose-blend bases) depends on the model
// only and is built once per call (stage 0), so per sample the cost scales with the pairs (a few
// per keypoint), not with the support vertices.
//
// The maths below is shared by the CPU and CUDA kernels: the work is split in stages whose loops
// (over keypoints, joints, shape columns) a GPU block runs over its threads.
#pragma once

#include <cstdint>

#include "common/macros.h"
#include "common/rotation.h"

namespace smplfast {

struct KeypointArgs {
  int64_t batch;
  int64_t joints;
  int64_t betas;
  int64_t influences;
  int64_t keypoints;
  int64_t nnz;
  bool pose_blend;  // use vertex_posedirs (false: the model has none; skip the work)
  bool jacobian;    // also write the Jacobian
  double sigma;     // Geman-McClure scale; <= 0 means plain residuals
  // Model (on the same device as the inputs).
  const int64_t* parents;
  const void* joint_template;
  const void* joint_shapedirs;
  const void* vertex_template;
  const void* vertex_shapedirs;
  const void* vertex_posedirs;
  const int32_t* lbs_idx;
  const void* lbs_weights;
  const int32_t* regressor_ptr;
  const int32_t* regressor_col;
  const void* regressor_val;
  // Per-sample inputs.
  const void* pose;
  const void* betas_in;
  const void* transl;
  const void* cam_rot;
  const void* cam_transl;
  const void* focal;
  const void* center;
  const void* target;
  const void* weight;
  // Outputs.
  void* residual;
  void* jacobian_out;
  void* points2d;
  void* keypoints3d;
  // CUDA only: scratch of keypoint_workspace_elems() elements (op dtype, and int32).
  void* workspace;
  int32_t* workspace_int;
};

// Values per (keypoint, joint) pair: c, u's template (3), shape basis (3 x nb) and pose-blend basis
// (3 x 9 (J - 1), only with pose blend shapes).
inline int64_t pair_stride(int64_t J, int64_t nb, bool pose_blend) {
  return 4 + 3 * nb + (pose_blend ? 27 * (J - 1) : 0);
}

// Sizes of the CUDA workspace: floats = pair table [Nk, J, stride] + per sample the shape
// derivatives [2, J, 3, nb] (Jacobian only); int32 = pair counts [Nk], pair joints [Nk, J] and each
// regressor influence's pair slot [nnz, K].
inline void keypoint_workspace_elems(int64_t B, int64_t J, int64_t nb, int64_t K, int64_t Nk, int64_t nnz,
                                     bool pose_blend, bool jacobian, int64_t* n_float, int64_t* n_int) {
  *n_float = Nk * J * pair_stride(J, nb, pose_blend) + (jacobian ? B * 6 * J * nb : 0);
  *n_int = Nk + Nk * J + nnz * K;
}

void project_keypoints_cpu(DType dtype, const KeypointArgs& a);
#ifdef SMPLFAST_WITH_CUDA
void project_keypoints_cuda(DType dtype, const KeypointArgs& a, int device, void* stream);
#endif

namespace kp {

// Per-joint block of the sample state: local rotation, its three partial derivatives, world
// rotation and position, rest joint, and D_c = Rg_parent dR/dpose_c (the pose Jacobian's factor).
constexpr int kR = 0, kdR = 9, kRg = 36, kP = 45, kJr = 48, kD = 51, kJointStride = 78;
// Below this depth a point is clamped (keeps the projection finite behind the camera).
constexpr double kMinDepth = 1e-4;

template <typename T>
struct Model {
  int64_t J, nb, K, Nk;
  bool pose_blend;
  const int64_t* parents;
  const T* joint_template;
  const T* joint_shapedirs;
  const T* vertex_template;
  const T* vertex_shapedirs;
  const T* vertex_posedirs;
  const int32_t* lbs_idx;
  const T* lbs_w;
  const int32_t* ptr;
  const int32_t* col;
  const T* val;
};

// The (keypoint, joint) pair table: keypoint k has count[k] pairs; its pair i belongs to joint
// joint[k J + i] and holds data[(k J + i) stride ...] = [c, u0 (3), U_shape (3 x nb), U_pose (3 x np)]
// (np = 9 (J - 1), only with pose blend shapes) with u = u0 + U_shape betas + U_pose pose_feature.
// slot_of[e K + i]: the pair of regressor entry e's influence i (-1 for joints, padding and zero
// weights).
template <typename T>
struct Pairs {
  int64_t stride;
  int32_t* count;
  int32_t* joint;
  int32_t* slot_of;
  T* data;
};

// One sample's inputs.
template <typename T>
struct Sample {
  const T* pose;
  const T* betas;
  const T* transl;
  const T* cam_rot;
  const T* cam_transl;
  const T* focal;
  const T* center;
  const T* target;
  const T* weight;
};

// One sample's intermediate results. joints: J * kJointStride; pose_feature: 9 (J - 1) (pose blend
// only); dp, E: [J,3,nb] each (Jacobian only): dp_j = d p_j / d betas and
// E_j = dp_j - Rg_j d Jr_j / d betas (what a skinned point inherits from joint j).
template <typename T>
struct State {
  T* joints;
  T* pose_feature;
  T* dp;
  T* E;
};

// One sample's outputs (jacobian: [Nk,2,P] or nullptr).
template <typename T>
struct Out {
  T* residual;
  T* jacobian;
  T* points2d;
  T* keypoints3d;
};

template <typename T>
SF_HD Model<T> make_model(const KeypointArgs& a) {
  return Model<T>{a.joints,
                  a.betas,
                  a.influences,
                  a.keypoints,
                  a.pose_blend,
                  a.parents,
                  static_cast<const T*>(a.joint_template),
                  static_cast<const T*>(a.joint_shapedirs),
                  static_cast<const T*>(a.vertex_template),
                  static_cast<const T*>(a.vertex_shapedirs),
                  static_cast<const T*>(a.vertex_posedirs),
                  a.lbs_idx,
                  static_cast<const T*>(a.lbs_weights),
                  a.regressor_ptr,
                  a.regressor_col,
                  static_cast<const T*>(a.regressor_val)};
}

template <typename T>
SF_HD Sample<T> make_sample(const KeypointArgs& a, int64_t b) {
  const int64_t J = a.joints, nb = a.betas, Nk = a.keypoints;
  return Sample<T>{static_cast<const T*>(a.pose) + b * J * 3,     static_cast<const T*>(a.betas_in) + b * nb,
                   static_cast<const T*>(a.transl) + b * 3,       static_cast<const T*>(a.cam_rot) + b * 9,
                   static_cast<const T*>(a.cam_transl) + b * 3,   static_cast<const T*>(a.focal) + b * 2,
                   static_cast<const T*>(a.center) + b * 2,       static_cast<const T*>(a.target) + b * Nk * 2,
                   static_cast<const T*>(a.weight) + b * Nk};
}

template <typename T>
SF_HD Out<T> make_out(const KeypointArgs& a, int64_t b) {
  const int64_t Nk = a.keypoints, P = 3 * a.joints + a.betas + 3;
  return Out<T>{static_cast<T*>(a.residual) + b * Nk * 2,
                a.jacobian ? static_cast<T*>(a.jacobian_out) + b * Nk * 2 * P : nullptr,
                static_cast<T*>(a.points2d) + b * Nk * 2, static_cast<T*>(a.keypoints3d) + b * Nk * 3};
}

// Stage 0a (any keypoint order, once per call): keypoint k's joints, in order of first appearance,
// and the slot of each of its regressor entries' influences.
template <typename T>
SF_HD void pair_joints(int64_t k, const Model<T>& m, const Pairs<T>& pt) {
  int32_t n = 0;
  int32_t* joints = pt.joint + k * m.J;
  for (int32_t e = m.ptr[k]; e < m.ptr[k + 1]; ++e) {
    const int64_t c = m.col[e];
    for (int64_t i = 0; i < m.K; ++i) {
      int32_t slot = -1;
      if (c >= m.J && m.lbs_w[(c - m.J) * m.K + i] != T(0)) {
        const int32_t j = m.lbs_idx[(c - m.J) * m.K + i];
        for (int32_t q = 0; q < n && slot < 0; ++q)
          if (joints[q] == j) slot = q;
        if (slot < 0) {
          slot = n++;
          joints[slot] = j;
        }
      }
      pt.slot_of[static_cast<int64_t>(e) * m.K + i] = slot;
    }
  }
  pt.count[k] = n;
}

// Stage 0b (any (keypoint, column range) order, after 0a): columns [q0, q1) of every pair of
// keypoint k, summed over the row's entries in order (so any split gives the same values).
template <typename T>
SF_HD void pair_columns(int64_t k, int64_t q0, int64_t q1, const Model<T>& m, const Pairs<T>& pt) {
  T* data = pt.data + k * m.J * pt.stride;
  const int32_t n = pt.count[k];
  for (int32_t i = 0; i < n; ++i)
    for (int64_t q = q0; q < q1; ++q) data[i * pt.stride + q] = T(0);
  for (int32_t e = m.ptr[k]; e < m.ptr[k + 1]; ++e) {
    const int64_t c = m.col[e];
    if (c < m.J) continue;
    const int64_t s = c - m.J;
    const T val = m.val[e];
    for (int64_t i = 0; i < m.K; ++i) {
      const int32_t slot = pt.slot_of[static_cast<int64_t>(e) * m.K + i];
      if (slot < 0) continue;
      const T coef = val * m.lbs_w[s * m.K + i];
      T* d = data + slot * pt.stride;
      // Column segments: c (a 1 per unit weight), u0, U_shape, U_pose.
      const int64_t nb3 = 3 * m.nb, np3 = 27 * (m.J - 1);
      if (q0 == 0 && q1 > 0) d[0] += coef;
      const T* vt = m.vertex_template + s * 3;
      for (int64_t q = (q0 > 1 ? q0 : 1); q < (q1 < 4 ? q1 : 4); ++q) d[q] += coef * vt[q - 1];
      const T* vs = m.vertex_shapedirs + s * nb3;
      for (int64_t q = (q0 > 4 ? q0 : 4); q < (q1 < 4 + nb3 ? q1 : 4 + nb3); ++q) d[q] += coef * vs[q - 4];
      const T* vp = m.vertex_posedirs + s * np3;
      for (int64_t q = (q0 > 4 + nb3 ? q0 : 4 + nb3); q < q1; ++q) d[q] += coef * vp[q - 4 - nb3];
    }
  }
}

// dR[c*9 .. c*9+8] = d rodrigues(aa) / d aa_c, differentiating rotation.h's formula term by term
// (theta = |aa + eps|, n = aa / theta, R = I + s K + (1 - c) K K with K = [n]_x), with
// K K = n n^T - |n|^2 I and d(K K) = dn n^T + n dn^T - 2 (n . dn) I.
template <typename T>
SF_HD void rodrigues_jacobian(const T* aa, T* dR) {
  const T eps = T(1e-8);
  const T w[3] = {aa[0] + eps, aa[1] + eps, aa[2] + eps};
  const T theta = sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]);
  const T n[3] = {aa[0] / theta, aa[1] / theta, aa[2] / theta};
  const T s = sin(theta), co = cos(theta), omc = T(1) - co;
  const T nn = n[0] * n[0] + n[1] * n[1] + n[2] * n[2];
  for (int c = 0; c < 3; ++c) {
    const T dtheta = w[c] / theta;
    // dn/daa_c = e_c / theta - n dtheta / theta
    T dn[3];
    for (int i = 0; i < 3; ++i) dn[i] = ((i == c) ? T(1) : T(0)) / theta - n[i] * dtheta / theta;
    const T ndn = n[0] * dn[0] + n[1] * dn[1] + n[2] * dn[2];
    const T ds = co * dtheta, domc = s * dtheta;
    T* out = dR + c * 9;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) {
        const T diag = (i == j) ? T(1) : T(0);
        const T k2 = n[i] * n[j] - nn * diag;
        const T dk2 = dn[i] * n[j] + n[i] * dn[j] - T(2) * ndn * diag;
        out[i * 3 + j] = domc * k2 + omc * dk2;
      }
    // The skew parts: ds K + s dK.
    out[1] -= ds * n[2] + s * dn[2];
    out[2] += ds * n[1] + s * dn[1];
    out[3] += ds * n[2] + s * dn[2];
    out[5] -= ds * n[0] + s * dn[0];
    out[6] -= ds * n[1] + s * dn[1];
    out[7] += ds * n[0] + s * dn[0];
  }
}

// Stage 1 (any joint order): local rotation (+ derivatives) and rest joint of joint j.
template <typename T>
SF_HD void joint_local(int64_t j, const Model<T>& m, const Sample<T>& in, const State<T>& st, bool jac) {
  T* blk = st.joints + j * kJointStride;
  rodrigues(in.pose + j * 3, blk + kR);
  if (jac) rodrigues_jacobian(in.pose + j * 3, blk + kdR);
  for (int r = 0; r < 3; ++r) {
    const T* sd = m.joint_shapedirs + (j * 3 + r) * m.nb;
    T acc = m.joint_template[j * 3 + r];
    for (int64_t n = 0; n < m.nb; ++n) acc += sd[n] * in.betas[n];
    blk[kJr + r] = acc;
  }
}

// Stage 1b (after joint_local): pose feature vec(R_i - I), i = 1 .. J - 1, row-major.
template <typename T>
SF_HD void pose_feature(int64_t i, const State<T>& st) {
  const T* R = st.joints + i * kJointStride + kR;
  for (int q = 0; q < 9; ++q) st.pose_feature[(i - 1) * 9 + q] = R[q] - ((q % 4 == 0) ? T(1) : T(0));
}

// Stage 2 (sequential over joints): world rotations and positions.
template <typename T>
SF_HD void chain(const Model<T>& m, const State<T>& st) {
  for (int64_t j = 0; j < m.J; ++j) {
    T* blk = st.joints + j * kJointStride;
    const int64_t p = m.parents[j];
    if (p < 0) {
      for (int i = 0; i < 9; ++i) blk[kRg + i] = blk[kR + i];
      for (int i = 0; i < 3; ++i) blk[kP + i] = blk[kJr + i];
      continue;
    }
    const T* pb = st.joints + p * kJointStride;
    matmul33(pb + kRg, blk + kR, blk + kRg);
    const T d[3] = {blk[kJr + 0] - pb[kJr + 0], blk[kJr + 1] - pb[kJr + 1], blk[kJr + 2] - pb[kJr + 2]};
    T t[3];
    matvec33(pb + kRg, d, t);
    for (int i = 0; i < 3; ++i) blk[kP + i] = pb[kP + i] + t[i];
  }
}

// Stage 3a (any joint order, after the chain): D_c = Rg_parent dR_c (root: dR_c).
template <typename T>
SF_HD void joint_pose_factor(int64_t j, const Model<T>& m, const State<T>& st) {
  T* blk = st.joints + j * kJointStride;
  const int64_t p = m.parents[j];
  for (int c = 0; c < 3; ++c) {
    if (p < 0) {
      for (int i = 0; i < 9; ++i) blk[kD + c * 9 + i] = blk[kdR + c * 9 + i];
    } else {
      matmul33(st.joints + p * kJointStride + kRg, blk + kdR + c * 9, blk + kD + c * 9);
    }
  }
}

// Stage 3b (any column order, after the chain): column n of dp and E for every joint, by the
// recursion dp_j = dp_parent + Rg_parent (dJr_j - dJr_parent).
template <typename T>
SF_HD void shape_column(int64_t n, const Model<T>& m, const State<T>& st) {
  const int64_t nb = m.nb;
  for (int64_t j = 0; j < m.J; ++j) {
    const T* blk = st.joints + j * kJointStride;
    const int64_t p = m.parents[j];
    const T* sd = m.joint_shapedirs + j * 3 * nb + n;
    const T sdj[3] = {sd[0], sd[nb], sd[2 * nb]};
    T dpj[3];
    if (p < 0) {
      for (int r = 0; r < 3; ++r) dpj[r] = sdj[r];
    } else {
      const T* sp = m.joint_shapedirs + p * 3 * nb + n;
      const T d[3] = {sdj[0] - sp[0], sdj[1] - sp[nb], sdj[2] - sp[2 * nb]};
      T t[3];
      matvec33(st.joints + p * kJointStride + kRg, d, t);
      for (int r = 0; r < 3; ++r) dpj[r] = st.dp[(p * 3 + r) * nb + n] + t[r];
    }
    T rs[3];
    matvec33(blk + kRg, sdj, rs);
    for (int r = 0; r < 3; ++r) {
      st.dp[(j * 3 + r) * nb + n] = dpj[r];
      st.E[(j * 3 + r) * nb + n] = dpj[r] - rs[r];
    }
  }
}

// Index of the highest / lowest set bit of a non-zero mask.
SF_HD int highest_bit(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return 63 - __clzll(static_cast<long long>(x));
#else
  return 63 - __builtin_clzll(x);
#endif
}

SF_HD int lowest_bit(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __ffsll(static_cast<long long>(x)) - 1;
#else
  return __builtin_ctzll(x);
#endif
}

// a = A Rg (2x3 = 2x3 . 3x3): a pair's d residual / d (its virtual vertex in joint j's frame).
template <typename T>
SF_HD void pair_row_factor(const T* A, const T* Rg, T* a) {
  for (int c = 0; c < 2; ++c)
    for (int q = 0; q < 3; ++q)
      a[c * 3 + q] = A[c * 3 + 0] * Rg[0 * 3 + q] + A[c * 3 + 1] * Rg[1 * 3 + q] + A[c * 3 + 2] * Rg[2 * 3 + q];
}

// Stage 4 (any keypoint order, after every other stage): keypoint k's outputs and Jacobian rows.
//
// Pose: a point attached below joint m is x = Rg_parent(m) (R_m q_m + Jr_m - Jr_parent(m)) +
// p_parent(m), where q_m is the point in m's rest-relative frame; so dx/dpose_mc = D_mc q_m. The
// keypoint's weighted sum Q_m of q_m over m's subtree is gathered children-first with
// q_parent = R_m q_m + Jr_m - Jr_parent. A pair's virtual vertex also moves with the pose
// feature: Rg_j U_pose vec(dR_mc). Shape: a joint point contributes dp_j, a pair
// Rg_j U_shape + c E_j.
// Per-joint scratch is only initialised for the joints the keypoint reaches (bit masks, J <= 64).
// kMaxJ (>= J, <= 64) bounds the per-joint scratch: a GPU thread's stack is reserved for every
// resident thread, so the CUDA kernel instantiates it for the model's size (24 / 32 / 64).
// With body_columns false only the root's pose columns and the translation columns are written (the
// others stay zero, and the shape derivatives of stage 3b are not read): a camera-only fit's Jacobian.
template <int kMaxJ, typename T>
SF_HD void keypoint(int64_t k, const Model<T>& m, const Pairs<T>& pt, const Sample<T>& in, const State<T>& st,
                    T sigma, const Out<T>& out, bool body_columns = true) {
  static_assert(kMaxJ >= 1 && kMaxJ <= kMaxJoints, "joint masks are 64 bits");
  const int64_t J = m.J, nb = m.nb, P = 3 * J + nb + 3, np = 9 * (J - 1);
  const bool jac = out.jacobian != nullptr;
  // Per joint: Q (3), total weight in the subtree S, direct weights of joint points Sj and of
  // pairs Sv.
  T Q[3 * kMaxJ], S[kMaxJ], Sj[kMaxJ], Sv[kMaxJ];
  uint64_t direct = 0;  // joints the keypoint reads directly
  T Kp[3] = {0, 0, 0};
  for (int32_t e = m.ptr[k]; e < m.ptr[k + 1]; ++e) {
    const int64_t c = m.col[e];
    if (c >= J) continue;
    const T val = m.val[e];
    const T* pc = st.joints + c * kJointStride + kP;
    for (int r = 0; r < 3; ++r) Kp[r] += val * pc[r];
    if (jac) {
      const uint64_t bit = uint64_t(1) << c;
      if (!(direct & bit)) {
        Q[3 * c] = Q[3 * c + 1] = Q[3 * c + 2] = Sj[c] = Sv[c] = T(0);
        direct |= bit;
      }
      Sj[c] += val;
    }
  }
  const int32_t npairs = pt.count[k];
  const int32_t* pjoint = pt.joint + k * J;
  const T* pdata = pt.data + k * J * pt.stride;
  for (int32_t i = 0; i < npairs; ++i) {
    const int64_t j = pjoint[i];
    const T* pd = pdata + i * pt.stride;
    const T c = pd[0];
    const T* blk = st.joints + j * kJointStride;
    // d = u - c Jr_j, u = u0 + U_shape betas + U_pose pose_feature
    T d[3];
    for (int r = 0; r < 3; ++r) {
      T u = pd[1 + r];
      const T* us = pd + 4 + r * nb;
      for (int64_t n = 0; n < nb; ++n) u += us[n] * in.betas[n];
      if (m.pose_blend) {
        const T* up = pd + 4 + 3 * nb + r * np;
        for (int64_t q = 0; q < np; ++q) u += up[q] * st.pose_feature[q];
      }
      d[r] = u - c * blk[kJr + r];
    }
    T y[3];
    matvec33(blk + kRg, d, y);
    for (int r = 0; r < 3; ++r) Kp[r] += y[r] + c * blk[kP + r];
    if (jac) {
      const uint64_t bit = uint64_t(1) << j;
      if (!(direct & bit)) {
        Q[3 * j] = Q[3 * j + 1] = Q[3 * j + 2] = Sj[j] = Sv[j] = T(0);
        direct |= bit;
      }
      for (int r = 0; r < 3; ++r) Q[3 * j + r] += d[r];
      Sv[j] += c;
    }
  }

  // Camera and robust residual.
  T kp3[3], X[3];
  for (int r = 0; r < 3; ++r) kp3[r] = Kp[r] + in.transl[r];
  matvec33(in.cam_rot, kp3, X);
  for (int r = 0; r < 3; ++r) X[r] += in.cam_transl[r];
  const bool clamped = X[2] < T(kMinDepth);
  const T Z = clamped ? T(kMinDepth) : X[2];
  const T w = in.weight[k];
  T A[6];  // d residual / d keypoint (2x3, row-major)
  for (int c = 0; c < 2; ++c) {
    const T u = in.focal[c] * X[c] / Z + in.center[c];
    const T e = u - in.target[k * 2 + c];
    T rho = e, drho = T(1);
    if (sigma > T(0)) {
      const T inv = T(1) / sqrt(sigma * sigma + e * e);
      rho = sigma * e * inv;
      const T si = sigma * inv;
      drho = si * si * si;
    }
    out.residual[k * 2 + c] = w * rho;
    out.points2d[k * 2 + c] = u;
    const T g = w * drho;
    // d u / d X = (f / Z) e_c - (f X_c / Z^2) e_z (no depth term when clamped).
    const T gx = g * in.focal[c] / Z;
    const T gz = clamped ? T(0) : -g * in.focal[c] * X[c] / (Z * Z);
    for (int i = 0; i < 3; ++i) A[c * 3 + i] = gx * in.cam_rot[c * 3 + i] + gz * in.cam_rot[6 + i];
  }
  for (int r = 0; r < 3; ++r) out.keypoints3d[k * 3 + r] = kp3[r];
  if (!jac) return;

  T* row0 = out.jacobian + k * 2 * P;
  T* row1 = row0 + P;
  for (int64_t i = 0; i < 2 * P; ++i) row0[i] = T(0);

  // Subtree sums, children first (parents[j] < j, so the highest pending joint has no pending
  // descendant); `touched` = joints with a point of the keypoint in their subtree.
  for (uint64_t bits = direct; bits; bits &= bits - 1) {
    const int j = lowest_bit(bits);
    S[j] = Sj[j] + Sv[j];
  }
  uint64_t touched = direct;
  for (uint64_t pending = direct; pending;) {
    const int j = highest_bit(pending);
    pending &= ~(uint64_t(1) << j);
    const int64_t p = m.parents[j];
    if (p < 0) continue;
    const uint64_t pbit = uint64_t(1) << p;
    if (!(touched & pbit)) {
      Q[3 * p] = Q[3 * p + 1] = Q[3 * p + 2] = S[p] = T(0);
      touched |= pbit;
      pending |= pbit;
    }
    const T* blk = st.joints + j * kJointStride;
    const T* pb = st.joints + p * kJointStride;
    T rq[3];
    matvec33(blk + kR, Q + 3 * j, rq);
    for (int r = 0; r < 3; ++r) Q[3 * p + r] += rq[r] + S[j] * (blk[kJr + r] - pb[kJr + r]);
    S[p] += S[j];
  }

  // Pose columns of the joints above the keypoint (the others stay zero).
  for (uint64_t bits = body_columns ? touched : (touched & uint64_t(1)); bits; bits &= bits - 1) {
    const int j = lowest_bit(bits);
    const T* D = st.joints + j * kJointStride + kD;
    for (int c = 0; c < 3; ++c) {
      T dx[3];
      matvec33(D + c * 9, Q + 3 * j, dx);
      row0[3 * j + c] = A[0] * dx[0] + A[1] * dx[1] + A[2] * dx[2];
      row1[3 * j + c] = A[3] * dx[0] + A[4] * dx[1] + A[5] * dx[2];
    }
  }

  if (!body_columns) {
    for (int i = 0; i < 3; ++i) {
      row0[3 * J + nb + i] = A[i];
      row1[3 * J + nb + i] = A[3 + i];
    }
    return;
  }

  // Shape columns through the joints: sum_j Sj_j dp_j + Sv_j E_j (a joint is usually read either
  // as a point or through pairs, so each term is skipped when its weight is zero).
  T* sh0 = row0 + 3 * J;
  T* sh1 = row1 + 3 * J;
  for (uint64_t bits = direct; bits; bits &= bits - 1) {
    const int j = lowest_bit(bits);
    for (int term = 0; term < 2; ++term) {
      const T wt = term == 0 ? Sj[j] : Sv[j];
      if (wt == T(0)) continue;
      const T* D = (term == 0 ? st.dp : st.E) + j * 3 * nb;
      T a[6];
      for (int i = 0; i < 6; ++i) a[i] = wt * A[i];
      for (int64_t n = 0; n < nb; ++n) {
        sh0[n] += a[0] * D[n] + a[1] * D[nb + n] + a[2] * D[2 * nb + n];
        sh1[n] += a[3] * D[n] + a[4] * D[nb + n] + a[5] * D[2 * nb + n];
      }
    }
  }

  // Terms through the pairs' virtual vertices: with a_c = A_c Rg_j, shape a_c U_shape; for the pose
  // blend shapes G_c = sum over pairs of a_c U_pose, then G_c[block m] . vec(dR_mc') per column.
  // G is built one joint block (9 values) at a time, each entry summed over the pairs in order, so
  // no 2 * 9 (J - 1) scratch is needed (same sums, same order as a whole-G accumulation).
  for (int32_t i = 0; i < npairs; ++i) {
    const T* pd = pdata + i * pt.stride;
    T a[6];
    pair_row_factor(A, st.joints + pjoint[i] * kJointStride + kRg, a);
    const T* us = pd + 4;
    for (int64_t n = 0; n < nb; ++n) {
      sh0[n] += a[0] * us[n] + a[1] * us[nb + n] + a[2] * us[2 * nb + n];
      sh1[n] += a[3] * us[n] + a[4] * us[nb + n] + a[5] * us[2 * nb + n];
    }
  }
  if (m.pose_blend && npairs > 0) {
    for (int64_t mj = 1; mj < J; ++mj) {
      T g0[9], g1[9];
      for (int q = 0; q < 9; ++q) g0[q] = g1[q] = T(0);
      for (int32_t i = 0; i < npairs; ++i) {
        const T* pd = pdata + i * pt.stride;
        T a[6];
        pair_row_factor(A, st.joints + pjoint[i] * kJointStride + kRg, a);
        const T* u0 = pd + 4 + 3 * nb + (mj - 1) * 9;
        const T* u1 = u0 + np;
        const T* u2 = u1 + np;
        for (int q = 0; q < 9; ++q) {
          g0[q] += a[0] * u0[q] + a[1] * u1[q] + a[2] * u2[q];
          g1[q] += a[3] * u0[q] + a[4] * u1[q] + a[5] * u2[q];
        }
      }
      const T* dR = st.joints + mj * kJointStride + kdR;
      for (int cp = 0; cp < 3; ++cp) {
        T s0 = 0, s1 = 0;
        for (int q = 0; q < 9; ++q) {
          s0 += g0[q] * dR[cp * 9 + q];
          s1 += g1[q] * dR[cp * 9 + q];
        }
        row0[3 * mj + cp] += s0;
        row1[3 * mj + cp] += s1;
      }
    }
  }

  // Translation columns.
  for (int i = 0; i < 3; ++i) {
    row0[3 * J + nb + i] = A[i];
    row1[3 * J + nb + i] = A[3 + i];
  }
}

}  // namespace kp
}  // namespace smplfast
