// step_kernels.h for the compiler's default target (SSE2 on x86-64): runs on every CPU.
#include "isa.h"
#define FUSEDRNN_CPU_ISA baseline
#define FUSEDRNN_CPU_TARGET
#include "step_kernels.h"
