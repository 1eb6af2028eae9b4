// CUDA step kernels of the LSTM cell (also the G2 cell and the Mogrifier's LSTM step):
// one thread per (row, hidden unit), the gate math of cell.h, float32 accumulation for
// half types (SPEC §6).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include "../cell.h"
#include "launch.cuh"

namespace fusedrnn::cuda {
namespace {

template <typename scalar_t>
__global__ void cell_forward_kernel(at::opmath_type<scalar_t>* __restrict__ gates,
                                    const at::opmath_type<scalar_t>* __restrict__ c_prev,
                                    const scalar_t* __restrict__ h_prev, at::opmath_type<scalar_t>* __restrict__ c_next,
                                    scalar_t* __restrict__ h_next, scalar_t* __restrict__ output,
                                    const float* __restrict__ noise, const int64_t* __restrict__ lengths,
                                    int64_t batch, int64_t hidden, int64_t t, at::opmath_type<scalar_t> inv_temperature,
                                    GateMode mode) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k = element_index();
  if (k >= batch * hidden) return;
  const int64_t b = k / hidden, j = k % hidden;
  acc_t* z = gates + b * 4 * hidden + j;
  if (lengths != nullptr && t >= lengths[b]) {  // SPEC §5: frozen state, zero output
    z[0] = z[hidden] = z[2 * hidden] = z[3 * hidden] = acc_t(0);
    c_next[k] = c_prev[k];
    h_next[k] = h_prev[k];
    output[k] = scalar_t(0);
    return;
  }
  const acc_t noise_i = noise != nullptr ? acc_t(noise[2 * b * hidden + j]) : acc_t(0);
  const acc_t noise_f = noise != nullptr ? acc_t(noise[(2 * b + 1) * hidden + j]) : acc_t(0);
  acc_t c, h;
  const Gates<acc_t> a = cell_forward(Gates<acc_t>{z[0], z[hidden], z[2 * hidden], z[3 * hidden]}, noise_i, noise_f,
                                      inv_temperature, mode, c_prev[k], c, h);
  z[0] = a.i;
  z[hidden] = a.f;
  z[2 * hidden] = a.g;
  z[3 * hidden] = a.o;
  c_next[k] = c;
  h_next[k] = scalar_t(h);
  output[k] = scalar_t(h);
}

template <typename scalar_t>
__global__ void cell_backward_kernel(const at::opmath_type<scalar_t>* __restrict__ gates,
                                     const at::opmath_type<scalar_t>* __restrict__ cells,
                                     const at::opmath_type<scalar_t>* __restrict__ c_prev,
                                     const scalar_t* __restrict__ grad_output,
                                     const at::opmath_type<scalar_t>* __restrict__ grad_h,
                                     at::opmath_type<scalar_t>* __restrict__ grad_c, scalar_t* __restrict__ grad_z,
                                     at::opmath_type<scalar_t>* __restrict__ grad_h_carry,
                                     const int64_t* __restrict__ lengths, int64_t batch, int64_t hidden, int64_t t,
                                     at::opmath_type<scalar_t> inv_temperature, GateMode mode) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k = element_index();
  if (k >= batch * hidden) return;
  const int64_t b = k / hidden, j = k % hidden;
  const acc_t* a = gates + b * 4 * hidden + j;
  scalar_t* dz = grad_z + b * 4 * hidden + j;
  if (lengths != nullptr && t >= lengths[b]) {  // frozen: the gradients pass straight through
    dz[0] = dz[hidden] = dz[2 * hidden] = dz[3 * hidden] = scalar_t(0);
    grad_h_carry[k] = grad_h[k];
    return;
  }
  acc_t grad_c_k = grad_c[k];
  const Gates<acc_t> d = cell_backward(Gates<acc_t>{a[0], a[hidden], a[2 * hidden], a[3 * hidden]}, cells[k],
                                       c_prev[k], grad_h[k] + acc_t(grad_output[k]), grad_c_k, inv_temperature, mode);
  dz[0] = scalar_t(d.i);
  dz[hidden] = scalar_t(d.f);
  dz[2 * hidden] = scalar_t(d.g);
  dz[3 * hidden] = scalar_t(d.o);
  grad_c[k] = grad_c_k;
  grad_h_carry[k] = acc_t(0);
}

}  // namespace

void cell_forward(const CellForwardArgs& args) {
  const c10::cuda::CUDAGuard guard(args.gates.device());
  const int64_t batch = args.gates.size(0), hidden = args.gates.size(1) / 4;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.h_prev.scalar_type(), "fusedrnn_cuda_cell_forward",
                                  [&] {
                                    using acc_t = at::opmath_type<scalar_t>;
                                    cell_forward_kernel<scalar_t><<<blocks_for(batch * hidden), kThreadsPerBlock, 0,
                                                                    stream>>>(
                                        args.gates.data_ptr<acc_t>(), args.c_prev.data_ptr<acc_t>(),
                                        args.h_prev.data_ptr<scalar_t>(), args.c_next.data_ptr<acc_t>(),
                                        args.h_next.data_ptr<scalar_t>(), args.output.data_ptr<scalar_t>(),
                                        args.noise.defined() ? args.noise.data_ptr<float>() : nullptr,
                                        args.lengths.defined() ? args.lengths.data_ptr<int64_t>() : nullptr, batch,
                                        hidden, args.t, acc_t(1.0 / args.temperature), args.mode);
                                  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void cell_backward(const CellBackwardArgs& args) {
  const c10::cuda::CUDAGuard guard(args.gates.device());
  const int64_t batch = args.gates.size(0), hidden = args.gates.size(1) / 4;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, args.grad_output.scalar_type(),
                                  "fusedrnn_cuda_cell_backward", [&] {
                                    using acc_t = at::opmath_type<scalar_t>;
                                    cell_backward_kernel<scalar_t><<<blocks_for(batch * hidden), kThreadsPerBlock, 0,
                                                                     stream>>>(
                                        args.gates.data_ptr<acc_t>(), args.c.data_ptr<acc_t>(),
                                        args.c_prev.data_ptr<acc_t>(), args.grad_output.data_ptr<scalar_t>(),
                                        args.grad_h.data_ptr<acc_t>(), args.grad_c.data_ptr<acc_t>(),
                                        args.grad_z.data_ptr<scalar_t>(), args.grad_h_carry.data_ptr<acc_t>(),
                                        args.lengths.defined() ? args.lengths.data_ptr<int64_t>() : nullptr, batch,
                                        hidden, args.t, acc_t(1.0 / args.temperature), args.mode);
                                  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fusedrnn::cuda
