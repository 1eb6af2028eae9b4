// The matrix products of the sweeps, through ATen, and the one every step repeats with the
// same weight (StepProduct), which on the CPU goes through panels of the weight and a GEMM kernel.
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
// ATen's addmm (MKL on x86) repacks the weight at every call and pays a dispatch each time,
// which dominates the few rows of a recurrence: B 4, H 1024 took 1.6 ms a step through it on
// one thread. So on the CPU, in float32, a sweep of a few steps copies the weight once into
// panels of 64 output columns, each a contiguous (n, 64) block of weightᵀ, and multiplies by
// them with ATen's batch-reduce GEMM (oneDNN's micro-kernel, no dispatch), the panels split
// among threads: 0.37 ms at that size (both timed by hand; bench/results/cpu-panels/ times whole
// sweeps). Otherwise (on CUDA, other dtypes, a torch without that GEMM, a CPU other than x86-64,
// torch.backends.mkldnn.enabled = False, a sweep too short to repay the copy) through ATen as above. The environment variable
// FUSEDRNN_CPU_PACKED_WEIGHTS=always or =never overrides the rule (for tests and benchmarks).
class StepProduct {
 public:
  // `steps`: how many products the sweep will take, which the rule weighs.
  StepProduct(const at::Tensor& weight, int64_t batch, int64_t steps);
  // out += a @ weightᵀ.
  void add_into(at::Tensor out, const at::Tensor& a) const;
  // out = a @ weightᵀ + bias.
  void assign(at::Tensor out, const at::Tensor& a, const std::optional<at::Tensor>& bias = std::nullopt) const;

 private:
  bool through_panels(const at::Tensor& out, const at::Tensor& a) const;
  // out = a @ weightᵀ, or out += a @ weightᵀ with `accumulate`, panel by panel.
  void panel_products(at::Tensor out, const at::Tensor& a, bool accumulate) const;

  at::Tensor weight_;  // as given, for ATen's products
  at::Tensor panels_;  // weightᵀ in panels, or undefined
};

}  // namespace fusedrnn
