// The instruction sets the CPU step kernels (step_kernels.h) are compiled for, and the
// choice among them. Wider sets only where GCC builds for x86-64: `#pragma GCC target` and
// `__builtin_cpu_supports` are its tools; everywhere else the baseline is the only set.
#pragma once

#include "../kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FUSEDRNN_CPU_WIDE_ISAS 1
#else
#define FUSEDRNN_CPU_WIDE_ISAS 0
#endif

namespace fusedrnn::cpu {
namespace baseline {
extern const Kernels kernels;
}
#if FUSEDRNN_CPU_WIDE_ISAS
namespace avx2 {  // AVX2 and FMA: 8 floats a vector
extern const Kernels kernels;
}
namespace avx512 {  // AVX-512 (F, DQ, BW, VL): 16 floats a vector
extern const Kernels kernels;
}
#endif
}  // namespace fusedrnn::cpu
