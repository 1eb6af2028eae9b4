// The gate math of SPEC §2–§4, once, for the CPU loops and the CUDA kernels alike.
//
// T is the accumulation type (float32 for half types, SPEC §6). A plain LSTM is a G2
// cell in soft mode with inverse temperature 1 and no noise.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace fusedrnn {

#ifndef __CUDA_ARCH__
// exp for the CPU loops: Cody–Waite range reduction and Cephes' degree-6 polynomial
// (max error about 2 ulp), written without calls or branches so that the compiler
// vectorises the loops that use it (std::exp would keep them scalar). GCC needs
// -fno-trapping-math (ext/build.py) to turn the clamp into min/max; check a change with
// -fopt-info-vec-missed.
inline float vectorisable_exp(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  constexpr float kRound = 12582912.0f;  // 1.5 · 2²³: adding it rounds to an integer
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2ⁿ, n in [-126, 127]
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}
#endif

C10_HOST_DEVICE inline float exponential(float x) {
#ifdef __CUDA_ARCH__
  return ::expf(x);
#else
  return vectorisable_exp(x);
#endif
}

C10_HOST_DEVICE inline double exponential(double x) { return std::exp(x); }

C10_HOST_DEVICE inline float hyperbolic_tangent(float x) {
#ifdef __CUDA_ARCH__
  return ::tanhf(x);
#else
  return 1.0f - 2.0f / (vectorisable_exp(2.0f * x) + 1.0f);
#endif
}

C10_HOST_DEVICE inline double hyperbolic_tangent(double x) { return std::tanh(x); }

template <typename T>
C10_HOST_DEVICE inline T sigmoid(T z) {
  return T(1) / (T(1) + exponential(-z));
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
  a.g = hyperbolic_tangent(z.g);
  a.o = sigmoid(z.o);
  c = a.f * c_prev + a.i * a.g;
  h = a.o * hyperbolic_tangent(c);
  return a;
}

// One element of the backward step (SPEC §2): `grad_h` is the whole ∂L/∂h_t; `grad_c`
// comes in as ∂L/∂c_t and leaves as ∂L/∂c_{t-1}. Returns ∂L/∂z.
template <typename T>
C10_HOST_DEVICE inline Gates<T> cell_backward(Gates<T> a, T c, T c_prev, T grad_h, T& grad_c,
                                              T inv_temperature, GateMode mode) {
  T tanh_c = hyperbolic_tangent(c);
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
