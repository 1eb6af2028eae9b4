// step_kernels.h for AVX-512 at full width (GCC would otherwise prefer 256-bit vectors);
// kernels.cpp calls it only on CPUs that have every set named here.
#include "isa.h"
#if FUSEDRNN_CPU_WIDE_ISAS
#define FUSEDRNN_CPU_ISA avx512
#define FUSEDRNN_CPU_TARGET \
  _Pragma("GCC target(\"avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,prefer-vector-width=512\")")
#include "step_kernels.h"
#endif
