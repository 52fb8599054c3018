// Python entry points of the UV-grid lookup kernels (raw pointers from smplfast/ops/uv_lookup.py).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/binding_utils.h"
#include "uvgrid/uv_lookup.h"

namespace smplfast {

namespace {

using namespace smplfast::bind;

// The wrappers validate shapes and index ranges; this only guards the kernels' own assumptions.
UvLookupArgs lookup_args(const char* op, int64_t N, int64_t G, int64_t P, int64_t R, int64_t C) {
  if (N < 0 || G < 1 || P < 1 || R < 1 || C < 0)
    throw std::invalid_argument(std::string(op) + ": need N >= 0, G, P, R >= 1 and C >= 0; got N " +
                                std::to_string(N) + ", G " + std::to_string(G) + ", P " + std::to_string(P) +
                                ", R " + std::to_string(R) + ", C " + std::to_string(C));
  UvLookupArgs a{};
  a.points = N;
  a.groups = G;
  a.parts = P;
  a.res = R;
  a.channels = C;
  return a;
}

void set_inputs(UvLookupArgs& a, uintptr_t grid, uintptr_t part, uintptr_t uv, uintptr_t bidx, uintptr_t valid) {
  a.grid = vptr(grid);
  a.part = cptr<int64_t>(part);
  a.uv = vptr(uv);
  a.batch_index = cptr<int64_t>(bidx);
  a.valid = cptr<uint8_t>(valid);
}

}  // namespace

void bind_uv_lookup(pybind11::module_& m) {
  // Pointer 0 stands for an absent optional buffer (batch_index, valid, grad_grid, grad_uv).
  m.def("uv_lookup_forward", [](const Target& t, int dtype, int64_t N, int64_t G, int64_t P, int64_t R, int64_t C,
                                uintptr_t grid, uintptr_t part, uintptr_t uv, uintptr_t bidx, uintptr_t valid,
                                uintptr_t out) {
    UvLookupArgs a = lookup_args("uv_lookup_forward", N, G, P, R, C);
    set_inputs(a, grid, part, uv, bidx, valid);
    a.out = mptr(out);
    run(t, dtype, a, uv_lookup_forward_cpu, SF_CUDA_FN(uv_lookup_forward), "uv_lookup");
  });

  // grad_grid is fully written (zeros where nothing lands); on the GPU it is summed with atomics.
  m.def("uv_lookup_backward", [](const Target& t, int dtype, int64_t N, int64_t G, int64_t P, int64_t R, int64_t C,
                                 uintptr_t grid, uintptr_t part, uintptr_t uv, uintptr_t bidx, uintptr_t valid,
                                 uintptr_t grad_out, uintptr_t grad_grid, uintptr_t grad_uv) {
    UvLookupArgs a = lookup_args("uv_lookup_backward", N, G, P, R, C);
    set_inputs(a, grid, part, uv, bidx, valid);
    a.grad_out = vptr(grad_out);
    a.grad_grid = mptr(grad_grid);
    a.grad_uv = mptr(grad_uv);
    run(t, dtype, a, uv_lookup_backward_cpu, SF_CUDA_FN(uv_lookup_backward), "uv_lookup_backward");
  });

  // Deterministic backward, step 1: grad_uv and per point four (cell, weight) pairs [N,4].
  m.def("uv_lookup_contributions", [](const Target& t, int dtype, int64_t N, int64_t G, int64_t P, int64_t R,
                                      int64_t C, uintptr_t grid, uintptr_t part, uintptr_t uv, uintptr_t bidx,
                                      uintptr_t valid, uintptr_t grad_out, uintptr_t grad_uv, uintptr_t cells,
                                      uintptr_t weights) {
    UvLookupArgs a = lookup_args("uv_lookup_contributions", N, G, P, R, C);
    set_inputs(a, grid, part, uv, bidx, valid);
    a.grad_out = vptr(grad_out);
    a.grad_uv = mptr(grad_uv);
    a.cells = reinterpret_cast<int64_t*>(cells);
    a.weights = mptr(weights);
    run(t, dtype, a, uv_lookup_contributions_cpu, SF_CUDA_FN(uv_lookup_contributions), "uv_lookup_contributions");
  });

  // Deterministic backward, step 2 (after a stable sort of the cells): grad_grid, which must be
  // zero-filled by the caller, gets each cell's contributions summed in sorted order.
  m.def("uv_lookup_segment_sum", [](const Target& t, int dtype, int64_t N, int64_t G, int64_t P, int64_t R,
                                    int64_t C, uintptr_t sorted_cells, uintptr_t order, uintptr_t weights,
                                    uintptr_t grad_out, uintptr_t grad_grid) {
    UvLookupArgs a = lookup_args("uv_lookup_segment_sum", N, G, P, R, C);
    a.cells = reinterpret_cast<int64_t*>(sorted_cells);
    a.order = cptr<int64_t>(order);
    a.weights = mptr(weights);
    a.grad_out = vptr(grad_out);
    a.grad_grid = mptr(grad_grid);
    run(t, dtype, a, uv_lookup_segment_sum_cpu, SF_CUDA_FN(uv_lookup_segment_sum), "uv_lookup_segment_sum");
  });
}

}  // namespace smplfast
