// CPU kernels whose inner loops vectorise are compiled for several x86-64 levels and picked at load
// time (GCC function multi-versioning): the module is built for baseline x86-64 (SSE2), and
// AVX2/AVX-512 with FMA run the O(n^3) update loops several times faster. `flatten` inlines the
// shared maths into each clone so it is compiled for that level too.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"), flatten))
#else
#define SF_CPU_CLONES
#endif
