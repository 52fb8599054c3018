// The one Python module: thin entry points that unpack raw pointers and sizes handed over by the
// torch wrappers in smplfast/ops/ and call the CPU or CUDA kernels. No maths here.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/binding_utils.h"
#include "common/macros.h"
#include "skinning/skinning.h"

#ifdef SMPLFAST_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace py = pybind11;
using namespace smplfast;
using namespace smplfast::bind;

namespace smplfast {
// Registered by the fitting kernels' own binding files.
void bind_keypoint_jacobian(py::module_& m);
void bind_batched_solve(py::module_& m);
void bind_lm_fit(py::module_& m);
void bind_point_normal_equations(py::module_& m);
void bind_uv_lookup(py::module_& m);
void bind_rasterize(py::module_& m);
void bind_soft_silhouette(py::module_& m);
}  // namespace smplfast

namespace {

// The inputs shared by the forward and backward entry points of an op.
ChainArgs chain_args(int64_t B, int64_t J, uintptr_t parents, uintptr_t R, uintptr_t rest, uintptr_t posed,
                     uintptr_t A) {
  ChainArgs a{};
  a.batch = B;
  a.joints = J;
  a.parents = cptr<int64_t>(parents);
  a.R = vptr(R);
  a.rest_joints = vptr(rest);
  a.posed_joints = mptr(posed);
  a.transforms = mptr(A);
  return a;
}

LbsArgs lbs_args(int64_t B, int64_t V, int64_t K, int64_t J, uintptr_t A, uintptr_t vp, int64_t vp_stride,
                 uintptr_t idx, uintptr_t w) {
  LbsArgs a{};
  a.batch = B;
  a.vertices = V;
  a.influences = K;
  a.joints = J;
  a.transforms = vptr(A);
  a.v_posed = vptr(vp);
  a.v_posed_batch_stride = vp_stride;
  a.idx = cptr<int32_t>(idx);
  a.w = vptr(w);
  return a;
}

py::dict build_info() {
  py::dict d;
  d["version"] = SMPLFAST_VERSION;
#ifdef SMPLFAST_WITH_CUDA
  d["cuda"] = true;
  d["cuda_architectures"] = SMPLFAST_CUDA_ARCHS;
  d["cuda_runtime_version"] = CUDART_VERSION;
#else
  d["cuda"] = false;
  d["cuda_architectures"] = "";
  d["cuda_runtime_version"] = 0;
#endif
#ifdef _OPENMP
  d["openmp"] = _OPENMP;
#else
  d["openmp"] = 0;
#endif
#if defined(__clang__)
  d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
  d["compiler"] = std::string("gcc ") + __VERSION__;
#else
  d["compiler"] = "unknown";
#endif
  d["max_joints"] = kMaxJoints;
  return d;
}

// (driver's CUDA version, CUDA runtime version the kernels were built with), e.g. (12080, 13000);
// the driver's is 0 when no NVIDIA driver is installed, both are 0 in a CPU-only build.
py::tuple cuda_driver_version() {
#ifdef SMPLFAST_WITH_CUDA
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) {
    cudaGetLastError();
    driver = 0;
  }
  return py::make_tuple(driver, CUDART_VERSION);
#else
  return py::make_tuple(0, 0);
#endif
}

int cuda_device_count() {
#ifdef SMPLFAST_WITH_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
#else
  return 0;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "smplfast compiled kernels (raw-pointer entry points; use smplfast.ops instead)";
  py::class_<Target>(m, "Target")
      .def(py::init<int, int, uintptr_t>(), py::arg("device_type"), py::arg("device_index"), py::arg("stream"));
  m.def("build_info", &build_info);
  m.def("cuda_device_count", &cuda_device_count);
  m.def("cuda_driver_version", &cuda_driver_version);

  m.def("rodrigues_forward", [](const Target& t, int dtype, int64_t n, uintptr_t aa, uintptr_t R) {
    RodriguesArgs a{n, vptr(aa), nullptr, mptr(R), nullptr};
    run(t, dtype, a, rodrigues_forward_cpu, SF_CUDA_FN(rodrigues_forward), "rodrigues");
  });
  m.def("rodrigues_backward", [](const Target& t, int dtype, int64_t n, uintptr_t aa, uintptr_t gR, uintptr_t gaa) {
    RodriguesArgs a{n, vptr(aa), vptr(gR), nullptr, mptr(gaa)};
    run(t, dtype, a, rodrigues_backward_cpu, SF_CUDA_FN(rodrigues_backward), "rodrigues_backward");
  });
  m.def("chain_forward", [](const Target& t, int dtype, int64_t B, int64_t J, uintptr_t parents, uintptr_t R,
                            uintptr_t rest, uintptr_t posed, uintptr_t A) {
    ChainArgs a = chain_args(B, J, parents, R, rest, posed, A);
    run(t, dtype, a, chain_forward_cpu, SF_CUDA_FN(chain_forward), "kinematic_chain");
  });
  m.def("chain_backward", [](const Target& t, int dtype, int64_t B, int64_t J, uintptr_t parents, uintptr_t R,
                             uintptr_t rest, uintptr_t A, uintptr_t gP, uintptr_t gA, uintptr_t gR,
                             uintptr_t grest) {
    ChainArgs a = chain_args(B, J, parents, R, rest, 0, A);  // the backward does not read the posed joints
    a.grad_posed = vptr(gP);
    a.grad_transforms = vptr(gA);
    a.grad_R = mptr(gR);
    a.grad_rest_joints = mptr(grest);
    run(t, dtype, a, chain_backward_cpu, SF_CUDA_FN(chain_backward), "kinematic_chain_backward");
  });
  m.def("lbs_forward", [](const Target& t, int dtype, int64_t B, int64_t V, int64_t K, int64_t J, uintptr_t A,
                          uintptr_t vp, int64_t vp_stride, uintptr_t idx, uintptr_t w, uintptr_t transl,
                          uintptr_t out) {
    LbsArgs a = lbs_args(B, V, K, J, A, vp, vp_stride, idx, w);
    a.transl = vptr(transl);
    a.verts = mptr(out);
    run(t, dtype, a, lbs_forward_cpu, SF_CUDA_FN(lbs_forward), "sparse_lbs");
  });
  // deterministic, workspace: the CUDA backward's fixed-order path and its scratch of
  // lbs_backward_workspace(B, V, J, True) elements (0 otherwise; the CPU ignores both).
  m.def("lbs_backward", [](const Target& t, int dtype, int64_t B, int64_t V, int64_t K, int64_t J, uintptr_t A,
                           uintptr_t vp, int64_t vp_stride, uintptr_t idx, uintptr_t w, uintptr_t g,
                           int64_t gsb, int64_t gsv, int64_t gsc, uintptr_t gA, uintptr_t gvp, uintptr_t gtr,
                           uintptr_t gw, bool deterministic, uintptr_t workspace) {
    LbsArgs a = lbs_args(B, V, K, J, A, vp, vp_stride, idx, w);
    a.grad_verts = vptr(g);
    a.grad_strides[0] = gsb;
    a.grad_strides[1] = gsv;
    a.grad_strides[2] = gsc;
    a.grad_transforms = mptr(gA);
    a.grad_v_posed = mptr(gvp);
    a.grad_transl = mptr(gtr);
    a.grad_w = mptr(gw);
    a.deterministic = deterministic;
    a.workspace = mptr(workspace);
    run(t, dtype, a, lbs_backward_cpu, SF_CUDA_FN(lbs_backward), "sparse_lbs_backward");
  }, py::arg("target"), py::arg("dtype"), py::arg("B"), py::arg("V"), py::arg("K"), py::arg("J"), py::arg("A"),
     py::arg("vp"), py::arg("vp_stride"), py::arg("idx"), py::arg("w"), py::arg("g"), py::arg("gsb"), py::arg("gsv"),
     py::arg("gsc"), py::arg("gA"), py::arg("gvp"), py::arg("gtr"), py::arg("gw"), py::arg("deterministic") = false,
     py::arg("workspace") = 0);
  m.def("lbs_backward_workspace", &lbs_backward_workspace_elems, py::arg("B"), py::arg("V"), py::arg("J"),
        py::arg("deterministic"),
        "Elements (op dtype) of the scratch the deterministic CUDA sparse_lbs backward needs.");
  bind_keypoint_jacobian(m);
  bind_batched_solve(m);
  bind_lm_fit(m);
  bind_point_normal_equations(m);
  bind_uv_lookup(m);
  bind_rasterize(m);
  bind_soft_silhouette(m);
}
