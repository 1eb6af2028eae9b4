// The matrix products of the sweeps, through ATen, and the one every step repeats with the
// same weight (StepProduct), which on the CPU goes through oneDNN's blocked layout.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace fusedrnn {

// out += a @ b, accumulating in out's type (float32 for half inputs, SPEC §6).
void addmm_acc(at::Tensor out, const at::Tensor& a, const at::Tensor& b);

// out = a @ b in out's type.
void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b);

// out = input @ weightᵀ + bias in out's type.
void linear_into(at::Tensor out, const at::Tensor& input, const at::Tensor& weight,
                 const std::optional<at::Tensor>& bias);

// a (B, n) @ weightᵀ, weight (m, n), into or onto out (B, m), at every step of a sweep over B rows.
//
// ATen's addmm (MKL on x86) reads the weight in its plain layout at every step, and is slow for
// the few rows of a recurrence: an LSTM forward at B 4, T 64, H 1024 on 2 threads took 122 ms
// through it and 32 ms through oneDNN's blocked layout. So on the CPU, in float32, a sweep long
// enough to repay it reorders the weight once into that layout (what nn.LSTM's oneDNN kernel does
// at every call) and multiplies through oneDNN's linear; otherwise (on CUDA, short sweeps, a torch
// without oneDNN, torch.backends.mkldnn.enabled = False) through ATen as above. The environment
// variable FUSEDRNN_CPU_PACKED_WEIGHTS=always or =never overrides the rule (for tests and
// bench/results/cpu-packed/).
class StepProduct {
 public:
  // `steps`: how many products the sweep will take, which the rule weighs.
  StepProduct(const at::Tensor& weight, int64_t batch, int64_t steps);
  // out += a @ weightᵀ.
  void add_into(at::Tensor out, const at::Tensor& a) const;
  // out = a @ weightᵀ + bias.
  void assign(at::Tensor out, const at::Tensor& a, const std::optional<at::Tensor>& bias = std::nullopt) const;

 private:
  at::Tensor weight_;  // as given, for ATen's products
  at::Tensor packed_;  // oneDNN's layout of weight, or undefined
};

}  // namespace fusedrnn
