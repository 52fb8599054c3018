// Python entry points of the keypoint_jacobian kernels (raw pointers from smplfast/ops/keypoint_projection.py).
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "common/binding_utils.h"
#include "fitting/keypoint_jacobian.h"
#include "fitting/keypoint_model_bind.h"

namespace smplfast {

void bind_keypoint_jacobian(pybind11::module_& m) {
  using namespace bind;
  // sizes = (B, J, nb, K, Nk, nnz); model = 11 pointers in KeypointModel's field order (parents,
  // joint_template, joint_shapedirs, vertex_template, vertex_shapedirs, vertex_posedirs, lbs_idx,
  // lbs_weights, regressor_ptr, regressor_col, regressor_val); inputs = 9 pointers (pose, betas,
  // transl, cam_rot, cam_transl, focal, center, target, weight); outputs = 4 pointers (residual,
  // jacobian, points2d, keypoints3d); workspace, workspace_int: CUDA scratch (0 on the CPU).
  m.def("project_keypoints",
        [](const Target& t, int dtype, std::array<int64_t, 6> sizes, bool pose_blend, bool jacobian, double sigma,
           std::array<uintptr_t, 11> model, std::array<uintptr_t, 9> in, std::array<uintptr_t, 4> out,
           uintptr_t workspace, uintptr_t workspace_int) {
          KeypointArgs a{};
          a.batch = sizes[0];
          set_keypoint_model(a, {sizes[1], sizes[2], sizes[3], sizes[4], sizes[5]}, model, "project_keypoints");
          a.pose_blend = pose_blend;
          a.jacobian = jacobian;
          a.sigma = sigma;
          a.pose = vptr(in[0]);
          a.betas_in = vptr(in[1]);
          a.transl = vptr(in[2]);
          a.cam_rot = vptr(in[3]);
          a.cam_transl = vptr(in[4]);
          a.focal = vptr(in[5]);
          a.center = vptr(in[6]);
          a.target = vptr(in[7]);
          a.weight = vptr(in[8]);
          a.residual = mptr(out[0]);
          a.jacobian_out = mptr(out[1]);
          a.points2d = mptr(out[2]);
          a.keypoints3d = mptr(out[3]);
          a.workspace = mptr(workspace);
          a.workspace_int = reinterpret_cast<int32_t*>(workspace_int);
          run(t, dtype, a, project_keypoints_cpu, SF_CUDA_FN(project_keypoints), "project_keypoints");
        });
  m.def(
      "project_keypoints_workspace",
      [](int64_t B, int64_t J, int64_t nb, int64_t K, int64_t Nk, int64_t nnz, bool pose_blend, bool jacobian) {
        int64_t n_float = 0, n_int = 0;
        keypoint_workspace_elems(B, J, nb, K, Nk, nnz, pose_blend, jacobian, &n_float, &n_int);
        return std::make_pair(n_float, n_int);
      },
      "(float elements, int32 elements) of the CUDA scratch project_keypoints needs for "
      "(B, J, nb, K, Nk, nnz, pose_blend, jacobian).");
}

}  // namespace smplfast
