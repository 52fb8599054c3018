// One row of a symmetric rank-two update, the inner loop of the per-sample normal-equation kernels.
#pragma once

#include <cstdint>

#include "common/macros.h"

namespace smplfast {

// h[j] += ai a[j] + bi b[j] for j < len (the buffers never overlap, so the loop vectorises).
template <typename T>
SF_HD void rank2_row(T* __restrict__ h, const T* __restrict__ a, const T* __restrict__ b, T ai, T bi, int64_t len) {
  for (int64_t j = 0; j < len; ++j) h[j] += ai * a[j] + bi * b[j];
}

}  // namespace smplfast
