// The gate math of SPEC §2–§4, once, for the CPU loops and the CUDA kernels alike.
//
// T is the accumulation type (float32 for half types, SPEC §6). A plain LSTM is a G2
// cell in soft mode with inverse temperature 1 and no noise.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>

#include "kernels.h"

namespace fusedrnn {

template <typename T>
C10_HOST_DEVICE inline T sigmoid(T z) {
  return T(1) / (T(1) + std::exp(-z));
}

// The input or forget gate: σ((z + m ⊙ ℓ) / τ), σ(z / τ) or 1[z ≥ 0]; `noise` is 0 unless noisy.
template <typename T>
C10_HOST_DEVICE inline T input_forget_gate(T z, T noise, T inv_temperature, GateMode mode) {
  if (mode == GateMode::kHard) return z >= T(0) ? T(1) : T(0);
  return sigmoid((z + noise) * inv_temperature);
}

// ∂gate/∂z of the input or forget gate, from the gate's value (the step has zero slope).
template <typename T>
C10_HOST_DEVICE inline T input_forget_slope(T gate, T inv_temperature, GateMode mode) {
  if (mode == GateMode::kHard) return T(0);
  return gate * (T(1) - gate) * inv_temperature;
}

template <typename T>
struct Gates {
  T i, f, g, o;
};

// One element of the forward step: activations from pre-activations, then c_t and h_t.
template <typename T>
C10_HOST_DEVICE inline Gates<T> cell_forward(Gates<T> z, T noise_i, T noise_f, T inv_temperature,
                                             GateMode mode, T c_prev, T& c, T& h) {
  Gates<T> a;
  a.i = input_forget_gate(z.i, noise_i, inv_temperature, mode);
  a.f = input_forget_gate(z.f, noise_f, inv_temperature, mode);
  a.g = std::tanh(z.g);
  a.o = sigmoid(z.o);
  c = a.f * c_prev + a.i * a.g;
  h = a.o * std::tanh(c);
  return a;
}

// One element of the backward step (SPEC §2): `grad_h` is the whole ∂L/∂h_t; `grad_c`
// comes in as ∂L/∂c_t and leaves as ∂L/∂c_{t-1}. Returns ∂L/∂z.
template <typename T>
C10_HOST_DEVICE inline Gates<T> cell_backward(Gates<T> a, T c, T c_prev, T grad_h, T& grad_c,
                                              T inv_temperature, GateMode mode) {
  T tanh_c = std::tanh(c);
  T grad_c_hat = grad_c + grad_h * a.o * (T(1) - tanh_c * tanh_c);
  Gates<T> dz;
  dz.i = grad_c_hat * a.g * input_forget_slope(a.i, inv_temperature, mode);
  dz.f = grad_c_hat * c_prev * input_forget_slope(a.f, inv_temperature, mode);
  dz.g = grad_c_hat * a.i * (T(1) - a.g * a.g);
  dz.o = grad_h * tanh_c * a.o * (T(1) - a.o);
  grad_c = grad_c_hat * a.f;
  return dz;
}

// A Mogrifier round's gate s = σ(a) and its chain value 2s ⊙ prev.
template <typename T>
C10_HOST_DEVICE inline T round_chain(T s, T prev) {
  return T(2) * s * prev;
}

// Its backward: returns da = grad ⊙ 2 prev ⊙ s(1 - s) and turns grad into grad ⊙ 2s.
template <typename T>
C10_HOST_DEVICE inline T round_gate_backward(T& grad, T prev, T s) {
  T grad_a = grad * T(2) * prev * s * (T(1) - s);
  grad = grad * T(2) * s;
  return grad_a;
}

}  // namespace fusedrnn
