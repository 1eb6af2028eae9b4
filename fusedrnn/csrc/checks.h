// Argument checks of the operators: the binding (fusedrnn.cpp) runs one before each sweep,
// so that a call straight through `torch.ops.fusedrnn` can neither crash the process nor
// return wrong numbers. Each takes its operator's arguments (sweep.h, without the kernel
// table), raises ValueError (shapes, values, devices, layout) or TypeError (dtypes) naming
// the first bad argument, and returns the device every tensor is on.
//
// What they enforce, with T, B, I from x (T, B, I) and H from weight_hh (4H, H):
//   - every tensor on x's device and contiguous (the kernels index raw pointers);
//   - h0, c0 (B, H); weight_ih (4H, I); bias (4H); noise (T, B, 2, H) float32;
//     lengths (B,) int64 with values in [0, T] (as functional.py; a row of length 0 keeps
//     its initial state);
//   - the backward's saved tensors as the forward returns them with `save`: gates
//     (T, B, 4H), cells and h_prev (T, B, H); grad_output (T, B, H), grad_h_n, grad_c_n (B, H);
//   - Mogrifier round j (1-based): weight (I, H) for odd j, (H, I) for even j, or, where
//     mogrify_low_rank marks it (one flag per round), left factor (I, k) | (H, k) and, next in
//     mogrify_right_factors (one per low-rank round), right factor (k, H) | (k, I), any k;
//     bias empty or one per round, (I) odd / (H) even; chains and round gates (T, B, I|H),
//     one per round;
//   - x float32 or float64 (CPU library) or also float16, bfloat16 (CUDA library); every
//     other float tensor of x's dtype except bias, gates, cells and round gates, which are in
//     the accumulation type (float32 for half types, else x's dtype);
//   - gate_mode a name of kGateModeNames (kernels.h): "noisy", "soft" or "hard"; temperature
//     finite and > 0; noise given exactly when gate_mode is "noisy".
// The range check of `lengths` reads CPU values back; device values are checked on the
// device (an asynchronous assert, no host sync), not at all while the stream is captured
// into a CUDA graph (as functional.py does).
#pragma once

#include <c10/core/Device.h>

#include "sweep.h"

namespace fusedrnn {

c10::Device check_lstm_forward(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& weight_ih,
                               const Tensor& weight_hh, const std::optional<Tensor>& bias,
                               const std::optional<Tensor>& lengths, const std::optional<Tensor>& noise, bool reverse,
                               double temperature, c10::string_view gate_mode, bool save);

c10::Device check_lstm_backward(const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
                                const Tensor& x, const Tensor& c0, const Tensor& weight_ih, const Tensor& weight_hh,
                                const Tensor& gates, const Tensor& cells, const Tensor& h_prev,
                                const std::optional<Tensor>& lengths, bool reverse, double temperature,
                                c10::string_view gate_mode);

c10::Device check_mogrifier_forward(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& weight_ih,
                                    const Tensor& weight_hh, const std::optional<Tensor>& bias,
                                    at::TensorList mogrify_weights, const BoolList& mogrify_low_rank,
                                    at::TensorList mogrify_right_factors, at::TensorList mogrify_biases,
                                    const std::optional<Tensor>& lengths, bool reverse, bool save);

c10::Device check_mogrifier_backward(const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
                                     const Tensor& x, const Tensor& c0, const Tensor& weight_ih,
                                     const Tensor& weight_hh, const Tensor& gates, const Tensor& cells,
                                     const Tensor& h_prev, at::TensorList mogrify_weights,
                                     const BoolList& mogrify_low_rank, at::TensorList mogrify_right_factors,
                                     at::TensorList chains,
                                     at::TensorList round_gates, const std::optional<Tensor>& lengths, bool reverse);

// The G2 noise's draw (cpu/noise.cpp): sizes >= 0, noise_prob in [0, 1], seed one int64 on
// the CPU. It returns nothing: the draw is on the CPU whatever device a seed was passed from.
void check_g2_noise(int64_t seq_len, int64_t batch_size, int64_t hidden_size, double noise_prob,
                    const Tensor& seed);

}  // namespace fusedrnn
