// The host side of every sweep: the time loop, per-step matrix products through ATen,
// and one device kernel per step (kernels.h). The same code drives the CPU and CUDA
// extensions; only the `Kernels` table differs.
//
// Shapes (SPEC.md letters): x (T, B, I), h0/c0 (B, H), weight_ih (4H, I), weight_hh
// (4H, H), bias (4H) = bias_ih + bias_hh, lengths (B,) int64. Half types are computed
// with float32 accumulation (SPEC §6): `bias`, `gates` and `cells` are float32 for them.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

#include "kernels.h"

namespace fusedrnn {

using at::Tensor;
using TensorList = std::vector<Tensor>;
// A `bool[]` operator argument.
using BoolList = c10::List<bool>;

// LSTM and G2-LSTM forward. Returns output (T, B, H), h_n, c_n, and for the backward:
// gates (T, B, 4H) acc (activations i, f, g, o), cells (T, B, H) acc (c after each step,
// frozen rows carried), h_prev (T, B, H) (the h each step read). Without `save` (no
// backward to come) cells and h_prev are scratch: a ring of 2 slots, not T; gates is (0, B, 4H).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_forward(
    const Kernels& kernels, const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& weight_ih,
    const Tensor& weight_hh, const std::optional<Tensor>& bias, const std::optional<Tensor>& lengths,
    const std::optional<Tensor>& noise, bool reverse, double temperature, c10::string_view gate_mode, bool save);

// Returns grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Kernels& kernels, const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const Tensor& x, const Tensor& c0, const Tensor& weight_ih, const Tensor& weight_hh, const Tensor& gates,
    const Tensor& cells, const Tensor& h_prev, const std::optional<Tensor>& lengths, bool reverse,
    double temperature, c10::string_view gate_mode);

// Mogrifier LSTM forward: as lstm_forward, plus the round chains (x⁽ʲ⁾ or h⁽ʲ⁾ per round,
// (T, B, I|H)) and round gates (s_j, acc). Round j's matrix W_j (m, n) is mogrify_weights[j-1];
// or, where mogrify_low_rank[j-1] is set, W_j = mogrify_weights[j-1] (m, k) @ right (k, n) with
// `right` the next entry of mogrify_right_factors (one per low-rank round, in round order),
// applied as two thin products and never multiplied out. `mogrify_biases` is empty or one
// per round.
// Without `save` every returned buffer but output, h_n and c_n is scratch (1 or 2 slots).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, TensorList, TensorList> mogrifier_forward(
    const Kernels& kernels, const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& weight_ih,
    const Tensor& weight_hh, const std::optional<Tensor>& bias, at::TensorList mogrify_weights,
    const BoolList& mogrify_low_rank, at::TensorList mogrify_right_factors, at::TensorList mogrify_biases,
    const std::optional<Tensor>& lengths, bool reverse, bool save);

// As lstm_backward, plus the gradients of the round weights (of each mogrify_weights entry,
// matrix or left factor), of the right factors and of the round biases.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, TensorList, TensorList, TensorList> mogrifier_backward(
    const Kernels& kernels, const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const Tensor& x, const Tensor& c0, const Tensor& weight_ih, const Tensor& weight_hh, const Tensor& gates,
    const Tensor& cells, const Tensor& h_prev, at::TensorList mogrify_weights,
    const BoolList& mogrify_low_rank, at::TensorList mogrify_right_factors, at::TensorList chains,
    at::TensorList round_gates,
    const std::optional<Tensor>& lengths, bool reverse);

}  // namespace fusedrnn
