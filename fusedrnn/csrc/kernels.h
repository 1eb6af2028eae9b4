// The per-step elementwise kernels every device provides, and their arguments.
//
// Shape letters as SPEC.md: T time steps, B batch, I input size, H hidden size.
// "acc" tensors are in the accumulation type (float32 for half types, else the input's
// type); the others are in the input's type. The host loops of sweep.cpp call these
// once per step (and once per Mogrifier round); everything else is ATen.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/string_view.h>

#include <optional>
#include <string>
#include <utility>

namespace fusedrnn {

// SPEC §4 gate modes of the input and forget gates; a plain LSTM is kSoft with τ = 1.
enum class GateMode { kNoisy, kSoft, kHard };

// Their names, which the operators take (`str gate_mode`), as fusedrnn.sweep.GATE_MODES.
inline constexpr std::pair<const char*, GateMode> kGateModeNames[] = {
    {"noisy", GateMode::kNoisy}, {"soft", GateMode::kSoft}, {"hard", GateMode::kHard}};

// The gate mode called `name`, or nullopt for any other name (checks.cpp rejects those).
inline std::optional<GateMode> gate_mode_named(c10::string_view name) {
  for (const auto& [known, mode] : kGateModeNames) {
    if (name == known) return mode;
  }
  return std::nullopt;
}

struct CellForwardArgs {
  at::Tensor gates;        // (B, 4H) acc: in, pre-activations z; out, activations i, f, g, o
  at::Tensor c_prev;       // (B, H) acc
  at::Tensor h_prev;       // (B, H)
  at::Tensor c_next;       // (B, H) acc, out
  at::Tensor h_next;       // (B, H) out
  at::Tensor output;       // (B, H) out: h_next, or zero for rows past their length
  at::Tensor noise;        // (B, 2, H) float32 m ⊙ ℓ, or undefined
  at::Tensor lengths;      // (B,) int64, or undefined
  int64_t t;
  double temperature;
  GateMode mode;
};

struct CellBackwardArgs {
  at::Tensor gates;        // (B, 4H) acc: activations i, f, g, o
  at::Tensor c;            // (B, H) acc: c_t
  at::Tensor c_prev;       // (B, H) acc
  at::Tensor grad_output;  // (B, H)
  at::Tensor grad_h;       // (B, H) acc: ∂L/∂h_t from step t+1
  at::Tensor grad_c;       // (B, H) acc: in ∂L/∂c_t, out ∂L/∂c_{t-1}
  at::Tensor grad_z;       // (B, 4H) out
  at::Tensor grad_h_carry; // (B, H) acc, out: grad_h for rows past their length, else 0
  at::Tensor lengths;      // (B,) int64, or undefined
  int64_t t;
  double temperature;
  GateMode mode;
};

// One Mogrifier round (SPEC §3): `gate` holds the pre-activation a (B, N) acc and gets
// s = σ(a); `chain` (B, N) gets 2s ⊙ prev.
struct RoundForwardArgs {
  at::Tensor gate;
  at::Tensor prev;
  at::Tensor chain;
};

// Its backward: da = grad ⊙ 2 prev ⊙ s(1 - s) into `grad_a` (B, N), then grad ← grad ⊙ 2s.
struct RoundBackwardArgs {
  at::Tensor grad;         // (B, N) acc, in and out
  at::Tensor prev;         // (B, N)
  at::Tensor gate;         // (B, N) acc: s
  at::Tensor grad_a;       // (B, N) out
};

// The G2 noise m ⊙ ℓ of a whole sweep (SPEC §4.5), as fusedrnn.noise.sample_noise draws it.
struct NoiseArgs {
  at::Tensor noise;        // (T, B, 2, H) float32, out
  uint64_t seed;           // the Philox key: its low word, then its high word
  double noise_prob;
};

struct Kernels {
  void (*cell_forward)(const CellForwardArgs&);
  void (*cell_backward)(const CellBackwardArgs&);
  void (*round_forward)(const RoundForwardArgs&);
  void (*round_backward)(const RoundBackwardArgs&);
  void (*g2_noise)(const NoiseArgs&);  // the CPU's only: the CUDA backend draws with fusedrnn.sample_noise
};

// cpu/: float32 and float64 (the CPU backend computes half types in float32), compiled for
// several instruction sets; these are the kernels and the name of the set this CPU runs.
namespace cpu {
const Kernels& kernels();
std::string instruction_set();

// cpu/noise.cpp: fusedrnn.noise.sample_noise(seq_len, batch_size, hidden_size, noise_prob,
// seed=seed) on the CPU, (T, B, 2, H) float32, on arguments check_g2_noise (checks.h) passed.
at::Tensor g2_noise(int64_t seq_len, int64_t batch_size, int64_t hidden_size, double noise_prob,
                    const at::Tensor& seed);
}  // namespace cpu

// cuda/*.cu: float64, float32, float16, bfloat16.
namespace cuda {
void cell_forward(const CellForwardArgs& args);
void cell_backward(const CellBackwardArgs& args);
void round_forward(const RoundForwardArgs& args);
void round_backward(const RoundBackwardArgs& args);
}  // namespace cuda

}  // namespace fusedrnn
