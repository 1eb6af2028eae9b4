// Operator schemas (namespace `fusedrnn`) and their CPU or CUDA implementations.
//
// Compiled into both extensions: the CPU one defines the schemas and registers the CPU
// kernels; the CUDA one (built with -DFUSEDRNN_CUDA, loaded after the CPU one) only
// registers the CUDA kernels. Autograd lives in Python (fusedrnn/ext/ops.py).
#include <torch/library.h>

#include "sweep.h"

namespace fusedrnn {
namespace {

#ifdef FUSEDRNN_CUDA
const Kernels kDeviceKernels{cuda::cell_forward, cuda::cell_backward, cuda::round_forward, cuda::round_backward};
#else
const Kernels kDeviceKernels{cpu::cell_forward, cpu::cell_backward, cpu::round_forward, cpu::round_backward};
#endif

// A sweep of sweep.h with this library's kernels bound: the operator's implementation.
template <auto Sweep>
struct WithKernels;

template <typename Result, typename... Args, Result (*Sweep)(const Kernels&, Args...)>
struct WithKernels<Sweep> {
  static Result call(Args... args) { return Sweep(kDeviceKernels, args...); }
};

}  // namespace

#ifndef FUSEDRNN_CUDA
TORCH_LIBRARY(fusedrnn, m) {
  m.def(
      "lstm_forward(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias, "
      "Tensor? lengths, Tensor? noise, bool reverse, float temperature, int gate_mode, bool save) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells, Tensor h_prev)");
  m.def(
      "lstm_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor x, Tensor c0, "
      "Tensor weight_ih, Tensor weight_hh, Tensor gates, Tensor cells, Tensor h_prev, Tensor? lengths, "
      "bool reverse, float temperature, int gate_mode) "
      "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
      "Tensor grad_bias)");
  m.def(
      "mogrifier_forward(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias, "
      "Tensor[] mogrify_weights, Tensor[] mogrify_biases, Tensor? lengths, bool reverse, bool save) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells, Tensor h_prev, Tensor[] chains, "
      "Tensor[] round_gates)");
  m.def(
      "mogrifier_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor x, Tensor c0, "
      "Tensor weight_ih, Tensor weight_hh, Tensor gates, Tensor cells, Tensor h_prev, Tensor[] mogrify_weights, "
      "Tensor[] chains, Tensor[] round_gates, Tensor? lengths, bool reverse) "
      "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
      "Tensor grad_bias, Tensor[] grad_mogrify_weights, Tensor[] grad_mogrify_biases)");
}
#endif

#ifdef FUSEDRNN_CUDA
TORCH_LIBRARY_IMPL(fusedrnn, CUDA, m) {
#else
TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
#endif
  m.impl("lstm_forward", &WithKernels<&lstm_forward>::call);
  m.impl("lstm_backward", &WithKernels<&lstm_backward>::call);
  m.impl("mogrifier_forward", &WithKernels<&mogrifier_forward>::call);
  m.impl("mogrifier_backward", &WithKernels<&mogrifier_backward>::call);
}

}  // namespace fusedrnn
