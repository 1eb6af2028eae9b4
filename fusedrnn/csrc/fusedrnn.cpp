// Operator schemas (namespace `fusedrnn`) and their CPU or CUDA implementations.
//
// Compiled into both extensions: the CPU one defines the schemas and registers the CPU
// kernels; the CUDA one (built with -DFUSEDRNN_CUDA, loaded after the CPU one) only
// registers the CUDA kernels. Autograd lives in Python (fusedrnn/ext/ops.py).
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "checks.h"
#include "sweep.h"

namespace fusedrnn {
namespace {

// This library's step kernels, looked up per call: the CPU's are chosen at the first one.
const Kernels& device_kernels() {
#ifdef FUSEDRNN_CUDA
  static const Kernels kernels{cuda::cell_forward, cuda::cell_backward, cuda::round_forward, cuda::round_backward,
                               /*g2_noise=*/nullptr};
  return kernels;
#else
  return cpu::kernels();
#endif
}

// An operator's implementation: `Check` (checks.h) vets the arguments, since anything
// registered in torch.ops is public and the sweeps trust their inputs; then the sweep of
// sweep.h runs with this library's kernels, on the device the check returns.
template <auto Check, auto Sweep>
struct Operator;

template <typename Result, typename... Args, c10::Device (*Check)(Args...), Result (*Sweep)(const Kernels&, Args...)>
struct Operator<Check, Sweep> {
  static Result call(Args... args) {
    const c10::DeviceGuard guard(Check(args...));
    // As ATen's own kernels run under autograd: the sweeps' views of and in-place products into
    // their own buffers need no view or version tracking, which cost the CPU sweeps at B 4,
    // H 64 about 1 µs a step for the LSTM and 6 for the five-round Mogrifier (13 % and 22 %).
    const at::AutoDispatchBelowADInplaceOrView untracked_views;
    return Sweep(device_kernels(), args...);
  }
};

}  // namespace

#ifndef FUSEDRNN_CUDA
TORCH_LIBRARY(fusedrnn, m) {
  m.def(
      "lstm_forward(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias, "
      "Tensor? lengths, Tensor? noise, bool reverse, float temperature, str gate_mode, bool save) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells, Tensor h_prev)");
  m.def(
      "lstm_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor x, Tensor c0, "
      "Tensor weight_ih, Tensor weight_hh, Tensor gates, Tensor cells, Tensor h_prev, Tensor? lengths, "
      "bool reverse, float temperature, str gate_mode) "
      "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
      "Tensor grad_bias)");
  m.def(
      "mogrifier_forward(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias, "
      "Tensor[] mogrify_weights, bool[] mogrify_low_rank, Tensor[] mogrify_right_factors, Tensor[] mogrify_biases, "
      "Tensor? lengths, bool reverse, bool save) "
      "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells, Tensor h_prev, Tensor[] chains, "
      "Tensor[] round_gates)");
  m.def(
      "mogrifier_backward(Tensor grad_output, Tensor grad_h_n, Tensor grad_c_n, Tensor x, Tensor c0, "
      "Tensor weight_ih, Tensor weight_hh, Tensor gates, Tensor cells, Tensor h_prev, Tensor[] mogrify_weights, "
      "bool[] mogrify_low_rank, Tensor[] mogrify_right_factors, Tensor[] chains, Tensor[] round_gates, "
      "Tensor? lengths, bool reverse) "
      "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_weight_ih, Tensor grad_weight_hh, "
      "Tensor grad_bias, Tensor[] grad_mogrify_weights, Tensor[] grad_mogrify_right_factors, "
      "Tensor[] grad_mogrify_biases)");
  m.def("g2_noise(int seq_len, int batch_size, int hidden_size, float noise_prob, Tensor seed) -> Tensor");
  // The instruction set of the CPU kernels in use (cpu/isa.h), for reports.
  m.def("cpu_instruction_set() -> str", &cpu::instruction_set);
}

// Any device's seed reaches the check, which refuses all but a CPU one by name.
TORCH_LIBRARY_IMPL(fusedrnn, CompositeExplicitAutograd, m) {
  m.impl("g2_noise", [](int64_t seq_len, int64_t batch_size, int64_t hidden_size, double noise_prob,
                        const Tensor& seed) {
    check_g2_noise(seq_len, batch_size, hidden_size, noise_prob, seed);
    return cpu::g2_noise(seq_len, batch_size, hidden_size, noise_prob, seed);
  });
}
#endif

#ifdef FUSEDRNN_CUDA
TORCH_LIBRARY_IMPL(fusedrnn, CUDA, m) {
#else
TORCH_LIBRARY_IMPL(fusedrnn, CPU, m) {
#endif
  m.impl("lstm_forward", &Operator<&check_lstm_forward, &lstm_forward>::call);
  m.impl("lstm_backward", &Operator<&check_lstm_backward, &lstm_backward>::call);
  m.impl("mogrifier_forward", &Operator<&check_mogrifier_forward, &mogrifier_forward>::call);
  m.impl("mogrifier_backward", &Operator<&check_mogrifier_backward, &mogrifier_backward>::call);
}

}  // namespace fusedrnn
