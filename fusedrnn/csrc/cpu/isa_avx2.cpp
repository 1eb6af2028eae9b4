// step_kernels.h for AVX2 and FMA; kernels.cpp calls it only on CPUs that have both.
#include "isa.h"
#if FUSEDRNN_CPU_WIDE_ISAS
#define FUSEDRNN_CPU_ISA avx2
#define FUSEDRNN_CPU_TARGET _Pragma("GCC target(\"avx2,fma\")")
#include "step_kernels.h"
#endif
