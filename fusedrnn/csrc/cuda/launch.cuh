// Launch helpers shared by the CUDA step kernels: one thread per element, on the
// current stream of the tensors' device.
#pragma once

// c10 headers only: ATen/cuda/CUDAContext.h would pull in the cuBLAS/cuSPARSE headers.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace fusedrnn::cuda {

constexpr int kThreadsPerBlock = 256;

inline unsigned int blocks_for(int64_t elements) {
  return static_cast<unsigned int>(std::max<int64_t>(1, (elements + kThreadsPerBlock - 1) / kThreadsPerBlock));
}

// The element this thread handles, as int64 so that large B·H cannot overflow.
__device__ inline int64_t element_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

}  // namespace fusedrnn::cuda
