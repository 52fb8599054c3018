// Python entry points of the batched_solve kernels (raw pointers from smplfast/ops/batched_solve.py).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/binding_utils.h"
#include "fitting/batched_solve.h"

namespace smplfast {

namespace {

using namespace smplfast::bind;

DampedCholeskyArgs cholesky_args(int64_t B, int64_t n, uintptr_t H, uintptr_t g, uintptr_t damping, uintptr_t diag,
                                 uintptr_t active, uintptr_t workspace, uintptr_t x, uintptr_t ok) {
  DampedCholeskyArgs a{};
  a.batch = B;
  a.n = n;
  a.H = vptr(H);
  a.g = vptr(g);
  a.damping = vptr(damping);
  a.diag = vptr(diag);
  a.active = cptr<uint8_t>(active);
  a.workspace = mptr(workspace);
  a.x = mptr(x);
  a.ok = reinterpret_cast<uint8_t*>(ok);
  return a;
}

ConjugateGradientArgs cg_args(int64_t B, int64_t n, int64_t max_iters, double rel_tol, uintptr_t H, uintptr_t g,
                              uintptr_t damping, uintptr_t diag, uintptr_t active, uintptr_t workspace, uintptr_t x,
                              uintptr_t iters, uintptr_t rel) {
  ConjugateGradientArgs a{};
  a.batch = B;
  a.n = n;
  a.max_iters = max_iters;
  a.rel_tol = rel_tol;
  a.H = vptr(H);
  a.g = vptr(g);
  a.damping = vptr(damping);
  a.diag = vptr(diag);
  a.active = cptr<uint8_t>(active);
  a.workspace = mptr(workspace);
  a.x = mptr(x);
  a.iters = reinterpret_cast<int32_t*>(iters);
  a.rel_residual = mptr(rel);
  return a;
}

// The wrappers validate; these checks only guard the kernels' own assumptions.
void check_sizes(const char* op, int64_t B, int64_t n) {
  if (B < 0 || n < 1 || n > kMaxSolveSize)
    throw std::invalid_argument(std::string(op) + ": need batch >= 0 and 1 <= n <= " +
                                std::to_string(kMaxSolveSize) + "; got batch " + std::to_string(B) + ", n " +
                                std::to_string(n));
}

void check_cg(int64_t max_iters, double rel_tol) {
  if (max_iters < 0 || max_iters > INT32_MAX || !(rel_tol >= 0.0))
    throw std::invalid_argument("conjugate_gradient_solve: need 0 <= max_iters < 2^31 and rel_tol >= 0; got " +
                                std::to_string(max_iters) + " and " + std::to_string(rel_tol));
}

}  // namespace

void bind_batched_solve(pybind11::module_& m) {
  m.def("batched_solve_workspace_size",
        [](const Target& t, int dtype, int kind, int64_t B, int64_t n) -> int64_t {
          check_sizes("batched_solve_workspace_size", B, n);
          if (kind != 0 && kind != 1)
            throw std::invalid_argument("batched_solve_workspace_size: kind must be 0 (cholesky) or 1 (cg)");
          if (t.device_type == 0) return 0;
#ifdef SMPLFAST_WITH_CUDA
          return batched_solve_cuda_workspace_elems(static_cast<SolveKind>(kind), to_dtype(dtype), B, n,
                                                    t.device_index);
#else
          (void)dtype;
          throw std::runtime_error("smplfast was built without CUDA kernels (rebuild with SMPLFAST_CUDA=ON)");
#endif
        },
        "Elements of workspace (of the solve's dtype) the wrapper must allocate; 0 when none is needed.");

  m.def("damped_cholesky_solve", [](const Target& t, int dtype, int64_t B, int64_t n, uintptr_t H, uintptr_t g,
                                    uintptr_t damping, uintptr_t diag, uintptr_t active, uintptr_t workspace,
                                    uintptr_t x, uintptr_t ok) {
    check_sizes("damped_cholesky_solve", B, n);
    const DampedCholeskyArgs a = cholesky_args(B, n, H, g, damping, diag, active, workspace, x, ok);
    run(t, dtype, a, damped_cholesky_solve_cpu, SF_CUDA_FN(damped_cholesky_solve), "damped_cholesky_solve");
  });

  m.def("conjugate_gradient_solve", [](const Target& t, int dtype, int64_t B, int64_t n, int64_t max_iters,
                                       double rel_tol, uintptr_t H, uintptr_t g, uintptr_t damping, uintptr_t diag,
                                       uintptr_t active, uintptr_t workspace, uintptr_t x, uintptr_t iters,
                                       uintptr_t rel) {
    check_sizes("conjugate_gradient_solve", B, n);
    check_cg(max_iters, rel_tol);
    const ConjugateGradientArgs a =
        cg_args(B, n, max_iters, rel_tol, H, g, damping, diag, active, workspace, x, iters, rel);
    run(t, dtype, a, conjugate_gradient_solve_cpu, SF_CUDA_FN(conjugate_gradient_solve), "conjugate_gradient_solve");
  });

  // CPU-only: the block-parallel algorithms the CUDA kernels run, on `threads` OpenMP threads with
  // `lanes` columns per row group. Used by the tests to check that work split without a GPU.
  m.def("batched_solve_team_emulation", [](int kind, int dtype, int64_t B, int64_t n, int64_t max_iters,
                                           double rel_tol, uintptr_t H, uintptr_t g, uintptr_t damping,
                                           uintptr_t diag, uintptr_t active, uintptr_t out0, uintptr_t out1,
                                           uintptr_t out2, int threads, int lanes) {
    check_sizes("batched_solve_team_emulation", B, n);
    const DType dt = to_dtype(dtype);
    pybind11::gil_scoped_release release;
    if (kind == 0) {
      damped_cholesky_solve_team_cpu(dt, cholesky_args(B, n, H, g, damping, diag, active, 0, out0, out1), threads,
                                     lanes);
    } else {
      check_cg(max_iters, rel_tol);
      conjugate_gradient_solve_team_cpu(
          dt, cg_args(B, n, max_iters, rel_tol, H, g, damping, diag, active, 0, out0, out1, out2), threads, lanes);
    }
  });
}

}  // namespace smplfast
