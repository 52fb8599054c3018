// Skinning ops: rodrigues, kinematic chain and sparse linear blend skinning, forward and backward.
//
// Every function takes raw pointers to contiguous buffers (except where a batch stride is given)
// owned and allocated by the caller (torch), so the core never links libtorch. `*_cpu` functions
// run with OpenMP on the host; `*_cuda` functions enqueue on `stream` (a cudaStream_t) on `device`.
//
// Shapes (B = batch, N = rotations, J = joints, V = vertices, K = influences per vertex):
//   rodrigues:        aa[N,3] -> R[N,3,3]
//   kinematic_chain:  R[B,J,3,3], joints[B,J,3], parents[J] (int64, parents[0] = -1,
//                     parents[j] < j) -> posed_joints[B,J,3], transforms[B,J,3,4]
//                     where transforms[j] = [Rw_j | t_j - Rw_j joints_j] maps rest to posed space.
//   sparse_lbs:       transforms[B,J,3,4], v_posed[B,V,3] (batch stride may be 0),
//                     idx[V,K] (int32), w[V,K], transl[B,3] -> verts[B,V,3]
//                     verts[b,v] = sum_k w[v,k] transforms[b, idx[v,k]] [v_posed[b,v]; 1] + transl[b]
//                     K may be 0: an empty sum is the zero transform, so verts[b,v] = transl[b].
#pragma once

#include <cstdint>

#include "common/macros.h"

namespace smplfast {

struct RodriguesArgs {
  int64_t n;
  const void* aa;
  const void* grad_R;  // backward only
  void* R;             // forward output
  void* grad_aa;       // backward output
};

struct ChainArgs {
  int64_t batch;
  int64_t joints;
  const int64_t* parents;  // on the same device as the other buffers
  const void* R;
  const void* rest_joints;
  void* posed_joints;
  void* transforms;
  // backward: inputs grad_posed, grad_transforms (+ the forward's transforms as an input);
  // outputs grad_R, grad_rest_joints.
  const void* grad_posed;
  const void* grad_transforms;
  void* grad_R;
  void* grad_rest_joints;
};

struct LbsArgs {
  int64_t batch;
  int64_t vertices;
  int64_t influences;
  int64_t joints;
  const void* transforms;
  const void* v_posed;
  int64_t v_posed_batch_stride;  // in elements; 0 when one rest mesh is shared by the batch
  const int32_t* idx;
  const void* w;
  const void* transl;
  void* verts;
  // backward: input grad_verts [B,V,3] with element strides grad_strides (any layout: a gradient
  // from sum() arrives as a stride-0 broadcast and is read in place, not materialised);
  // outputs grad_transforms [B,J,3,4], grad_v_posed [B,V,3] (contiguous, nullptr to skip),
  // grad_transl [B,3].
  const void* grad_verts;
  int64_t grad_strides[3];
  void* grad_transforms;
  void* grad_v_posed;
  void* grad_transl;
  void* grad_w;  // [V,K] contiguous, summed over the batch; nullptr to skip
  // CUDA backward: deterministic = d/dtransforms and d/dtransl summed in a fixed order (two passes
  // through `workspace`, lbs_backward_workspace_elems() elements of the op's dtype) instead of with
  // atomics. The CPU backward is deterministic either way and ignores both.
  bool deterministic;
  void* workspace;
};

// Vertices per tile of the deterministic CUDA backward (one block).
constexpr int64_t kLbsTile = 256;

// Elements of the deterministic CUDA backward's workspace: partial sums [B, tiles, J*12+3].
inline int64_t lbs_backward_workspace_elems(int64_t B, int64_t V, int64_t J, bool deterministic) {
  if (!deterministic || B == 0 || V == 0) return 0;
  return B * ((V + kLbsTile - 1) / kLbsTile) * (J * 12 + 3);
}

void rodrigues_forward_cpu(DType dtype, const RodriguesArgs& a);
void rodrigues_backward_cpu(DType dtype, const RodriguesArgs& a);
void chain_forward_cpu(DType dtype, const ChainArgs& a);
void chain_backward_cpu(DType dtype, const ChainArgs& a);
void lbs_forward_cpu(DType dtype, const LbsArgs& a);
void lbs_backward_cpu(DType dtype, const LbsArgs& a);

#ifdef SMPLFAST_WITH_CUDA
void rodrigues_forward_cuda(DType dtype, const RodriguesArgs& a, int device, void* stream);
void rodrigues_backward_cuda(DType dtype, const RodriguesArgs& a, int device, void* stream);
void chain_forward_cuda(DType dtype, const ChainArgs& a, int device, void* stream);
void chain_backward_cuda(DType dtype, const ChainArgs& a, int device, void* stream);
void lbs_forward_cuda(DType dtype, const LbsArgs& a, int device, void* stream);
void lbs_backward_cuda(DType dtype, const LbsArgs& a, int device, void* stream);
#endif

}  // namespace smplfast
