// CUDA kernels of the Mogrifier rounds (SPEC §3), one thread per element; its LSTM
// step is lstm.cu's.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../cell.h"
#include "launch.cuh"

namespace fusedrnn::cuda {
namespace {

template <typename scalar_t>
__global__ void round_forward_kernel(at::opmath_type<scalar_t>* __restrict__ gate, const scalar_t* __restrict__ prev,
                                     scalar_t* __restrict__ chain, int64_t elements) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k = element_index();
  if (k >= elements) return;
  const acc_t s = sigmoid(gate[k]);
  gate[k] = s;
  chain[k] = scalar_t(round_chain(s, acc_t(prev[k])));
}

template <typename scalar_t>
__global__ void round_backward_kernel(at::opmath_type<scalar_t>* __restrict__ grad, const scalar_t* __restrict__ prev,
                                      const at::opmath_type<scalar_t>* __restrict__ gate,
                                      scalar_t* __restrict__ grad_a, int64_t elements) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k = element_index();
  if (k >= elements) return;
  acc_t grad_k = grad[k];
  grad_a[k] = scalar_t(round_gate_backward(grad_k, acc_t(prev[k]), gate[k]));
  grad[k] = grad_k;
}

}  // namespace

void round_forward(const RoundForwardArgs& args) {
  const c10::cuda::CUDAGuard guard(args.gate.device());
  const int64_t elements = args.gate.numel();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.prev.scalar_type(), "fusedrnn_cuda_round_forward",
                                  [&] {
                                    using acc_t = at::opmath_type<scalar_t>;
                                    round_forward_kernel<scalar_t><<<blocks_for(elements), kThreadsPerBlock, 0,
                                                                     stream>>>(
                                        args.gate.data_ptr<acc_t>(), args.prev.data_ptr<scalar_t>(),
                                        args.chain.data_ptr<scalar_t>(), elements);
                                  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void round_backward(const RoundBackwardArgs& args) {
  const c10::cuda::CUDAGuard guard(args.grad.device());
  const int64_t elements = args.grad.numel();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.prev.scalar_type(), "fusedrnn_cuda_round_backward",
                                  [&] {
                                    using acc_t = at::opmath_type<scalar_t>;
                                    round_backward_kernel<scalar_t><<<blocks_for(elements), kThreadsPerBlock, 0,
                                                                      stream>>>(
                                        args.grad.data_ptr<acc_t>(), args.prev.data_ptr<scalar_t>(),
                                        args.gate.data_ptr<acc_t>(), args.grad_a.data_ptr<scalar_t>(), elements);
                                  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fusedrnn::cuda
