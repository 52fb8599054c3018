// Python entry points of the lm_fit kernels (raw pointers from smplfast/ops/lm_fit.py).
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "common/binding_utils.h"
#include "fitting/keypoint_model_bind.h"
#include "fitting/lm_fit.h"

namespace smplfast {
namespace {

using namespace bind;

// ints = (B, V, n, J, nb, K, Nk, nnz, body_col, M, shape_col, anchor_col, anchor_len, depth_col,
//         max_iters, solver, cg_iters)
// reals = (sigma, pose_w2, angle_w2, shape_w2, bound_w2, bound, anchor_w2, anchor_sigma, depth_w2,
//          ftol, xtol, gtol, init_damping, max_damping, cg_rel_tol)
// model = 11 pointers in KeypointModel's field order (as project_keypoints)
// data = (base, cols, order, cam_rot, cam_transl, focal, center, target, weight, gmm_means, gmm_prec_chol,
//         gmm_precisions, gmm_constants, anchor_target, depth_target, active)
// out = (x, objective, iterations, converged)
LMFitArgs make_args(const std::array<int64_t, 17>& ints, bool pose_blend, const std::array<double, 15>& reals,
                    const std::array<uintptr_t, 11>& model, const std::array<uintptr_t, 16>& data,
                    const std::array<uintptr_t, 4>& out, uintptr_t workspace, uintptr_t workspace_int) {
  LMFitArgs a{};
  KeypointArgs& k = a.model;
  a.batch = ints[0];
  a.views = ints[1];
  a.n = ints[2];
  k.batch = 0;
  set_keypoint_model(k, {ints[3], ints[4], ints[5], ints[6], ints[7]}, model, "lm_fit");
  if (a.n < 1 || a.n > kMaxSolveSize)
    throw std::invalid_argument("lm_fit: the number of parameters must be in [1, " + std::to_string(kMaxSolveSize) +
                                "]; got " + std::to_string(a.n));
  a.body_col = ints[8];
  a.gmm_components = ints[9];
  a.shape_col = ints[10];
  a.anchor_col = ints[11];
  a.anchor_len = ints[12];
  a.depth_col = ints[13];
  a.max_iters = ints[14];
  a.solver = static_cast<int>(ints[15]);
  a.cg_iters = ints[16];
  k.pose_blend = pose_blend;
  k.jacobian = true;
  k.sigma = reals[0];
  a.pose_w2 = reals[1];
  a.angle_w2 = reals[2];
  a.shape_w2 = reals[3];
  a.bound_w2 = reals[4];
  a.bound = reals[5];
  a.anchor_w2 = reals[6];
  a.anchor_sigma = reals[7];
  a.depth_w2 = reals[8];
  a.ftol = reals[9];
  a.xtol = reals[10];
  a.gtol = reals[11];
  a.init_damping = reals[12];
  a.max_damping = reals[13];
  a.cg_rel_tol = reals[14];
  k.workspace = mptr(workspace);
  k.workspace_int = reinterpret_cast<int32_t*>(workspace_int);
  a.base = vptr(data[0]);
  a.cols = cptr<int32_t>(data[1]);
  a.order = cptr<int32_t>(data[2]);
  a.cam_rot = vptr(data[3]);
  a.cam_transl = vptr(data[4]);
  a.focal = vptr(data[5]);
  a.center = vptr(data[6]);
  a.target = vptr(data[7]);
  a.weight = vptr(data[8]);
  a.gmm_means = vptr(data[9]);
  a.gmm_prec_chol = vptr(data[10]);
  a.gmm_precisions = vptr(data[11]);
  a.gmm_constants = vptr(data[12]);
  a.anchor_target = vptr(data[13]);
  a.depth_target = vptr(data[14]);
  a.active = cptr<uint8_t>(data[15]);
  a.x = mptr(out[0]);
  a.objective = mptr(out[1]);
  a.iterations = reinterpret_cast<int64_t*>(out[2]);
  a.converged = reinterpret_cast<uint8_t*>(out[3]);
  a.workspace = mptr(workspace);
  return a;
}

}  // namespace

void bind_lm_fit(pybind11::module_& m) {
  m.def("lm_fit",
        [](const Target& t, int dtype, std::array<int64_t, 17> ints, bool pose_blend, std::array<double, 15> reals,
           std::array<uintptr_t, 11> model, std::array<uintptr_t, 16> data, std::array<uintptr_t, 4> out,
           uintptr_t workspace, uintptr_t workspace_int) {
          const LMFitArgs a = make_args(ints, pose_blend, reals, model, data, out, workspace, workspace_int);
          run(t, dtype, a, lm_fit_cpu, SF_CUDA_FN(lm_fit), "lm_fit");
        });
  m.def("lm_fit_team",
        [](int dtype, std::array<int64_t, 17> ints, bool pose_blend, std::array<double, 15> reals,
           std::array<uintptr_t, 11> model, std::array<uintptr_t, 16> data, std::array<uintptr_t, 4> out, int threads,
           int lanes) {
          const LMFitArgs a = make_args(ints, pose_blend, reals, model, data, out, 0, 0);
          const DType dt = to_dtype(dtype);
          pybind11::gil_scoped_release release;
          lm_fit_team_cpu(dt, a, threads, lanes);
        },
        "The CUDA block path of lm_fit run by `threads` CPU threads (`lanes` per row group); tests only.");
#ifdef SMPLFAST_WITH_CUDA
  m.def("lm_fit_workspace",
        [](int dtype, int device, std::array<int64_t, 17> ints, bool pose_blend) {
          const std::array<double, 15> reals{};
          const std::array<uintptr_t, 11> model{};
          const std::array<uintptr_t, 16> data{};
          const std::array<uintptr_t, 4> out{};
          const LMFitArgs a = make_args(ints, pose_blend, reals, model, data, out, 0, 0);
          int64_t n_float = 0, n_int = 0;
          lm_fit_cuda_workspace_elems(to_dtype(dtype), a, device, &n_float, &n_int);
          return std::make_pair(n_float, n_int);
        },
        "(float elements, int32 elements) of the CUDA workspace lm_fit needs.");
#endif
}

}  // namespace smplfast
