// The keypoint model's sizes and tensor pointers as Python passes them (KeypointModel's field order),
// shared by the project_keypoints and lm_fit entry points.
#pragma once

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/binding_utils.h"
#include "fitting/keypoint_jacobian.h"

namespace smplfast {
namespace bind {

// sizes = (J, nb, K, Nk, nnz); model = (parents, joint_template, joint_shapedirs, vertex_template,
// vertex_shapedirs, vertex_posedirs, lbs_idx, lbs_weights, regressor_ptr, regressor_col, regressor_val).
inline void set_keypoint_model(KeypointArgs& a, const std::array<int64_t, 5>& sizes,
                               const std::array<uintptr_t, 11>& model, const char* op) {
  a.joints = sizes[0];
  a.betas = sizes[1];
  a.influences = sizes[2];
  a.keypoints = sizes[3];
  a.nnz = sizes[4];
  if (a.joints < 1 || a.joints > kMaxJoints)
    throw std::invalid_argument(std::string(op) + ": the number of joints must be in [1, " +
                                std::to_string(kMaxJoints) + "]; got " + std::to_string(a.joints));
  a.parents = cptr<int64_t>(model[0]);
  a.joint_template = vptr(model[1]);
  a.joint_shapedirs = vptr(model[2]);
  a.vertex_template = vptr(model[3]);
  a.vertex_shapedirs = vptr(model[4]);
  a.vertex_posedirs = vptr(model[5]);
  a.lbs_idx = cptr<int32_t>(model[6]);
  a.lbs_weights = vptr(model[7]);
  a.regressor_ptr = cptr<int32_t>(model[8]);
  a.regressor_col = cptr<int32_t>(model[9]);
  a.regressor_val = vptr(model[10]);
}

}  // namespace bind
}  // namespace smplfast
