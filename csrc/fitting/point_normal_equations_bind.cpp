// Python entry points of the point_normal_equations kernels (raw pointers from
// smplfast/ops/point_normal_equations.py).
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/binding_utils.h"
#include "fitting/point_normal_equations.h"

namespace smplfast {
namespace {

using namespace bind;

// sizes = (B, N, J, S); flags = (weak, squared); reals = (weight, eps, min_depth);
// data = (parents, A, p, M, dT, v, Sd, w, xy, mask, count, c, cam_R, cam_t, focal, center, fixed_transl);
// out = (value, H, g).
PointNormalArgs make_args(const std::array<int64_t, 4>& sizes, const std::array<bool, 2>& flags,
                          const std::array<double, 3>& reals, const std::array<uintptr_t, 17>& d,
                          const std::array<uintptr_t, 3>& out, uintptr_t workspace) {
  PointNormalArgs a{};
  a.batch = sizes[0];
  a.points = sizes[1];
  a.joints = sizes[2];
  a.betas = sizes[3];
  if (a.joints < 1 || a.joints > kMaxJoints)
    throw std::invalid_argument("point_normal_equations: the number of joints must be in [1, " +
                                std::to_string(kMaxJoints) + "]; got " + std::to_string(a.joints));
  a.weak = flags[0];
  a.squared = flags[1];
  a.weight = reals[0];
  a.eps = reals[1];
  a.min_depth = reals[2];
  a.parents = cptr<int64_t>(d[0]);
  a.A = vptr(d[1]);
  a.p = vptr(d[2]);
  a.M = vptr(d[3]);
  a.dT = vptr(d[4]);
  a.v = vptr(d[5]);
  a.Sd = vptr(d[6]);
  a.w = vptr(d[7]);
  a.xy = vptr(d[8]);
  a.mask = vptr(d[9]);
  a.count = vptr(d[10]);
  a.c = vptr(d[11]);
  a.cam_R = vptr(d[12]);
  a.cam_t = vptr(d[13]);
  a.focal = vptr(d[14]);
  a.center = vptr(d[15]);
  a.fixed_transl = vptr(d[16]);
  a.value = mptr(out[0]);
  a.H = mptr(out[1]);
  a.g = mptr(out[2]);
  a.workspace = mptr(workspace);
  return a;
}

}  // namespace

void bind_point_normal_equations(pybind11::module_& m) {
  m.def("point_normal_equations",
        [](const Target& t, int dtype, std::array<int64_t, 4> sizes, std::array<bool, 2> flags,
           std::array<double, 3> reals, std::array<uintptr_t, 17> data, std::array<uintptr_t, 3> out,
           uintptr_t workspace) {
          const PointNormalArgs a = make_args(sizes, flags, reals, data, out, workspace);
          run(t, dtype, a, point_normal_equations_cpu, SF_CUDA_FN(point_normal_equations), "point_normal_equations");
        });
  m.def("point_normal_equations_team",
        [](int dtype, std::array<int64_t, 4> sizes, std::array<bool, 2> flags, std::array<double, 3> reals,
           std::array<uintptr_t, 17> data, std::array<uintptr_t, 3> out, int threads, int lanes) {
          const PointNormalArgs a = make_args(sizes, flags, reals, data, out, 0);
          const DType dt = to_dtype(dtype);
          pybind11::gil_scoped_release release;
          point_normal_equations_team_cpu(dt, a, threads, lanes);
        },
        "The CUDA block path of point_normal_equations on `threads` CPU threads; tests only.");
#ifdef SMPLFAST_WITH_CUDA
  m.def("point_normal_equations_workspace", [](int device, std::array<int64_t, 4> sizes) {
    PointNormalArgs a{};
    a.batch = sizes[0];
    a.points = sizes[1];
    a.joints = sizes[2];
    a.betas = sizes[3];
    return point_normal_equations_cuda_workspace_elems(a, device);
  });
#endif
}

}  // namespace smplfast
