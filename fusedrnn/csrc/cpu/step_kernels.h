// The CPU step kernels: the LSTM cell's (also the G2 cell's and the Mogrifier's LSTM step),
// one `at::parallel_for` loop over the batch rows per step with the gate math of cell.h, and
// the Mogrifier rounds' elementwise part. Float32 and float64 (the CPU backend computes half
// types in float32). And the G2 noise of a whole sweep, from noise.h's element math.
//
// Included once per instruction set by isa_*.cpp, which define FUSEDRNN_CPU_ISA (the
// namespace) and FUSEDRNN_CPU_TARGET (a `GCC target` pragma, or nothing). The pragma comes
// after every #include on purpose: only the loops below get the wider instructions, so no
// inline function that the other files also emit (ATen's, cell.h's) is ever compiled with
// instructions the CPU may lack. cell.h's gate math and noise.h's, defined before it, are
// inlined into the loops and vectorised at their width.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../cell.h"
#include "noise.h"

FUSEDRNN_CPU_TARGET

namespace fusedrnn::cpu::FUSEDRNN_CPU_ISA {
namespace {

// Rows per task: enough elements that a thread's share outweighs the cost of waking it.
int64_t grain_rows(int64_t width) { return std::max<int64_t>(1, 2048 / std::max<int64_t>(width, 1)); }

bool row_active(const int64_t* lengths, int64_t row, int64_t t) { return lengths == nullptr || t < lengths[row]; }

// Calls `loop` with the gate mode as a compile-time constant: a branch on a run-time
// mode inside the element loop would keep the compiler from vectorising it.
template <typename Loop>
void with_gate_mode(GateMode mode, Loop&& loop) {
  switch (mode) {
    case GateMode::kNoisy:
      return loop(std::integral_constant<GateMode, GateMode::kNoisy>());
    case GateMode::kSoft:
      return loop(std::integral_constant<GateMode, GateMode::kSoft>());
    case GateMode::kHard:
      return loop(std::integral_constant<GateMode, GateMode::kHard>());
  }
}

template <typename scalar_t, GateMode mode>
void cell_forward_rows(const CellForwardArgs& args) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t batch = args.gates.size(0), hidden = args.gates.size(1) / 4;
  acc_t* gates = args.gates.data_ptr<acc_t>();
  const acc_t* c_prev = args.c_prev.data_ptr<acc_t>();
  const scalar_t* h_prev = args.h_prev.data_ptr<scalar_t>();
  acc_t* c_next = args.c_next.data_ptr<acc_t>();
  scalar_t* h_next = args.h_next.data_ptr<scalar_t>();
  scalar_t* output = args.output.data_ptr<scalar_t>();
  const float* noise = args.noise.defined() ? args.noise.data_ptr<float>() : nullptr;
  const int64_t* lengths = args.lengths.defined() ? args.lengths.data_ptr<int64_t>() : nullptr;
  const acc_t inv_temperature = acc_t(1.0 / args.temperature);
  const std::vector<float> zeros(noise ? 0 : hidden, 0.0f);
  at::parallel_for(0, batch, grain_rows(4 * hidden), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      acc_t* z = gates + b * 4 * hidden;
      const int64_t row = b * hidden;
      if (!row_active(lengths, b, args.t)) {  // SPEC §5: frozen state, zero output
        std::fill(z, z + 4 * hidden, acc_t(0));
        std::copy(c_prev + row, c_prev + row + hidden, c_next + row);
        std::copy(h_prev + row, h_prev + row + hidden, h_next + row);
        std::fill(output + row, output + row + hidden, scalar_t(0));
        continue;
      }
      // Rows without noise read zeros, so that the loop below has no branch.
      const float* __restrict__ noise_i = noise ? noise + 2 * row : zeros.data();
      const float* __restrict__ noise_f = noise ? noise + 2 * row + hidden : zeros.data();
      acc_t* __restrict__ z_i = z;
      acc_t* __restrict__ z_f = z + hidden;
      acc_t* __restrict__ z_g = z + 2 * hidden;
      acc_t* __restrict__ z_o = z + 3 * hidden;
      const acc_t* __restrict__ c_in = c_prev + row;
      acc_t* __restrict__ c_out = c_next + row;
      scalar_t* __restrict__ h_out = h_next + row;
      scalar_t* __restrict__ out = output + row;
      // The rows of distinct buffers never overlap; GCC gives up on proving it (too many
      // run-time alias checks) and would leave the loop scalar.
#pragma GCC ivdep
      for (int64_t j = 0; j < hidden; ++j) {
        acc_t c, h;
        const Gates<acc_t> a = cell_forward(Gates<acc_t>{z_i[j], z_f[j], z_g[j], z_o[j]}, acc_t(noise_i[j]),
                                            acc_t(noise_f[j]), inv_temperature, mode, c_in[j], c, h);
        z_i[j] = a.i;
        z_f[j] = a.f;
        z_g[j] = a.g;
        z_o[j] = a.o;
        c_out[j] = c;
        h_out[j] = scalar_t(h);
        out[j] = scalar_t(h);
      }
    }
  });
}

template <typename scalar_t, GateMode mode>
void cell_backward_rows(const CellBackwardArgs& args) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t batch = args.gates.size(0), hidden = args.gates.size(1) / 4;
  const acc_t* gates = args.gates.data_ptr<acc_t>();
  const acc_t* cells = args.c.data_ptr<acc_t>();
  const acc_t* c_prev = args.c_prev.data_ptr<acc_t>();
  const scalar_t* grad_output = args.grad_output.data_ptr<scalar_t>();
  const acc_t* grad_h = args.grad_h.data_ptr<acc_t>();
  acc_t* grad_c = args.grad_c.data_ptr<acc_t>();
  scalar_t* grad_z = args.grad_z.data_ptr<scalar_t>();
  acc_t* grad_h_carry = args.grad_h_carry.data_ptr<acc_t>();
  const int64_t* lengths = args.lengths.defined() ? args.lengths.data_ptr<int64_t>() : nullptr;
  const acc_t inv_temperature = acc_t(1.0 / args.temperature);
  at::parallel_for(0, batch, grain_rows(4 * hidden), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const acc_t* a = gates + b * 4 * hidden;
      scalar_t* dz = grad_z + b * 4 * hidden;
      const int64_t row = b * hidden;
      if (!row_active(lengths, b, args.t)) {  // frozen: the gradients pass straight through
        std::fill(dz, dz + 4 * hidden, scalar_t(0));
        std::copy(grad_h + row, grad_h + row + hidden, grad_h_carry + row);
        continue;
      }
      const acc_t* __restrict__ a_i = a;
      const acc_t* __restrict__ a_f = a + hidden;
      const acc_t* __restrict__ a_g = a + 2 * hidden;
      const acc_t* __restrict__ a_o = a + 3 * hidden;
      const acc_t* __restrict__ c_t = cells + row;
      const acc_t* __restrict__ c_in = c_prev + row;
      const scalar_t* __restrict__ grad_out = grad_output + row;
      const acc_t* __restrict__ grad_h_in = grad_h + row;
      acc_t* __restrict__ grad_c_io = grad_c + row;
      scalar_t* __restrict__ dz_i = dz;
      scalar_t* __restrict__ dz_f = dz + hidden;
      scalar_t* __restrict__ dz_g = dz + 2 * hidden;
      scalar_t* __restrict__ dz_o = dz + 3 * hidden;
      acc_t* __restrict__ carry = grad_h_carry + row;
#pragma GCC ivdep  // as in the forward
      for (int64_t j = 0; j < hidden; ++j) {
        const Gates<acc_t> d = cell_backward(Gates<acc_t>{a_i[j], a_f[j], a_g[j], a_o[j]}, c_t[j], c_in[j],
                                             grad_h_in[j] + acc_t(grad_out[j]), grad_c_io[j], inv_temperature, mode);
        dz_i[j] = scalar_t(d.i);
        dz_f[j] = scalar_t(d.f);
        dz_g[j] = scalar_t(d.g);
        dz_o[j] = scalar_t(d.o);
        carry[j] = acc_t(0);
      }
    }
  });
}

}  // namespace

void cell_forward(const CellForwardArgs& args) {
  AT_DISPATCH_FLOATING_TYPES(args.h_prev.scalar_type(), "fusedrnn_cpu_cell_forward", [&] {
    with_gate_mode(args.mode, [&](auto mode) { cell_forward_rows<scalar_t, mode.value>(args); });
  });
}

void cell_backward(const CellBackwardArgs& args) {
  AT_DISPATCH_FLOATING_TYPES(args.grad_output.scalar_type(), "fusedrnn_cpu_cell_backward", [&] {
    with_gate_mode(args.mode, [&](auto mode) { cell_backward_rows<scalar_t, mode.value>(args); });
  });
}

// ---- Mogrifier rounds (SPEC §3); their LSTM step is the cell's above.

namespace {

// As ATen's own elementwise ops: a round's cheap sigmoid only pays for a thread per 32K elements.
constexpr int64_t kGrain = at::internal::GRAIN_SIZE;

template <typename scalar_t>
void round_forward_elements(const RoundForwardArgs& args) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t* gate = args.gate.data_ptr<acc_t>();
  const scalar_t* prev = args.prev.data_ptr<scalar_t>();
  scalar_t* chain = args.chain.data_ptr<scalar_t>();
  at::parallel_for(0, args.gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const acc_t s = sigmoid(gate[k]);
      gate[k] = s;
      chain[k] = scalar_t(round_chain(s, acc_t(prev[k])));
    }
  });
}

template <typename scalar_t>
void round_backward_elements(const RoundBackwardArgs& args) {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t* grad = args.grad.data_ptr<acc_t>();
  const scalar_t* prev = args.prev.data_ptr<scalar_t>();
  const acc_t* gate = args.gate.data_ptr<acc_t>();
  scalar_t* grad_a = args.grad_a.data_ptr<scalar_t>();
  at::parallel_for(0, args.grad.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      grad_a[k] = scalar_t(round_gate_backward(grad[k], acc_t(prev[k]), gate[k]));
    }
  });
}

}  // namespace

void round_forward(const RoundForwardArgs& args) {
  AT_DISPATCH_FLOATING_TYPES(args.prev.scalar_type(), "fusedrnn_cpu_round_forward",
                             [&] { round_forward_elements<scalar_t>(args); });
}

void round_backward(const RoundBackwardArgs& args) {
  AT_DISPATCH_FLOATING_TYPES(args.prev.scalar_type(), "fusedrnn_cpu_round_backward",
                             [&] { round_backward_elements<scalar_t>(args); });
}

// ---- The G2 noise (SPEC §4.5): element (t, b, gate, j) from the counters (b·H + j, t, 0, 0).

void g2_noise(const NoiseArgs& args) {
  const int64_t batch = args.noise.size(1), hidden = args.noise.size(3);
  const uint32_t key0 = static_cast<uint32_t>(args.seed), key1 = static_cast<uint32_t>(args.seed >> 32);
  const float noise_prob = static_cast<float>(args.noise_prob);
  float* out = args.noise.data_ptr<float>();
  at::parallel_for(0, args.noise.size(0) * batch, grain_rows(2 * hidden), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {  // one (t, b): its two gates' H values
      const uint32_t t = static_cast<uint32_t>(row / batch), first = static_cast<uint32_t>((row % batch) * hidden);
      float* __restrict__ input_gate = out + row * 2 * hidden;
      float* __restrict__ forget_gate = input_gate + hidden;
#pragma GCC ivdep  // as in the cell loops
      for (int64_t j = 0; j < hidden; ++j) {
        const PhiloxWords w = philox(key0, key1, {first + static_cast<uint32_t>(j), t, 0u, 0u});
        input_gate[j] = gate_noise(w.c0, w.c1, noise_prob);
        forget_gate[j] = gate_noise(w.c2, w.c3, noise_prob);
      }
    }
  });
}

extern const Kernels kernels{cell_forward, cell_backward, round_forward, round_backward, g2_noise};

}  // namespace fusedrnn::cpu::FUSEDRNN_CPU_ISA
