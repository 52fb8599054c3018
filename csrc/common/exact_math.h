// Correctly rounded arithmetic that is never contracted into fused multiply-adds: on the GPU the
// round-to-nearest intrinsics (which nvcc never fuses), on the CPU plain operators (the files that
// need exactness are compiled with -ffp-contract=off or do not combine them). Used where CPU, CUDA
// and the PyTorch references must agree bit for bit (rasterizer edge functions, nearest-cell ties).
#pragma once

#include "common/macros.h"

namespace smplfast {

#ifdef __CUDA_ARCH__
#define SF_RN(cuda_expr, host_expr) return cuda_expr
#else
#define SF_RN(cuda_expr, host_expr) return host_expr
#endif

SF_HD float mul_rn(float a, float b) { SF_RN(__fmul_rn(a, b), a * b); }
SF_HD double mul_rn(double a, double b) { SF_RN(__dmul_rn(a, b), a * b); }
SF_HD float add_rn(float a, float b) { SF_RN(__fadd_rn(a, b), a + b); }
SF_HD double add_rn(double a, double b) { SF_RN(__dadd_rn(a, b), a + b); }
SF_HD float sub_rn(float a, float b) { SF_RN(__fsub_rn(a, b), a - b); }
SF_HD double sub_rn(double a, double b) { SF_RN(__dsub_rn(a, b), a - b); }
SF_HD double div_rn(double a, double b) { SF_RN(__ddiv_rn(a, b), a / b); }
SF_HD float to_float_rn(double a) { SF_RN(__double2float_rn(a), static_cast<float>(a)); }

#undef SF_RN

}  // namespace smplfast
