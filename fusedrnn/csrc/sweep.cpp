// Host loops of the sweeps declared in sweep.h.
#include "sweep.h"

#include <ATen/OpMathType.h>

#include <algorithm>
#include <utility>

#include "step_product.h"

namespace fusedrnn {
namespace {

at::ScalarType acc_type(const Tensor& x) { return at::toOpMathType(x.scalar_type()); }

int64_t time_of(int64_t step, int64_t seq_len, bool reverse) { return reverse ? seq_len - 1 - step : step; }

Tensor optional_or_undefined(const std::optional<Tensor>& tensor) { return tensor.has_value() ? *tensor : Tensor(); }

// The Mogrifier's chain value k over all steps: x for k = -1, the read h for k = 0,
// round k's output for k ≥ 1 (x⁽ᵏ⁾ for odd k, h⁽ᵏ⁾ for even k).
Tensor chain_value(int64_t k, const Tensor& x, const Tensor& h_prev, at::TensorList chains) {
  if (k == -1) return x;
  if (k == 0) return h_prev;
  return chains[k - 1];
}

// The chain values the LSTM step reads after r rounds: the last x and the last h.
int64_t last_x(int64_t rounds) { return rounds >= 1 ? (rounds % 2 == 1 ? rounds : rounds - 1) : -1; }
int64_t last_h(int64_t rounds) { return rounds >= 2 ? (rounds % 2 == 0 ? rounds : rounds - 1) : 0; }

// Round j's matrix W (m, n) as the sweeps apply it: `weight` is W, or for a low-rank round
// W = left @ right the left factor (m, k), with `right` (k, n) (undefined for full rank).
struct RoundWeight {
  Tensor weight;
  Tensor right;
  bool low_rank() const { return right.defined(); }
};

// Which factor of a low-rank round multiplies its k-wide intermediate: the left one in the
// forward (a = (v rightᵀ) leftᵀ), the right one in the backward (δv = (δa left) right).
enum class Factor { kLeft, kRight };

// The rounds of (mogrify_weights, mogrify_low_rank, mogrify_right_factors). A low-rank round's
// intermediate is kept in the accumulation type `acc` (rounding it to a half type would add a
// rounding that a full-rank round does not have), so the factor `inner` that multiplies it is
// converted to `acc` once here (`.to` returns the tensor itself where it already has that type).
std::vector<RoundWeight> round_weights(at::TensorList weights, const BoolList& low_rank, at::TensorList rights,
                                       at::ScalarType acc, Factor inner) {
  std::vector<RoundWeight> rounds;
  const Tensor* right = rights.begin();
  for (size_t j = 0; j < weights.size(); ++j) {
    if (!low_rank.get(j)) {
      rounds.push_back({weights[j], Tensor()});
    } else if (inner == Factor::kLeft) {
      rounds.push_back({weights[j].to(acc), *right++});
    } else {
      rounds.push_back({weights[j], (right++)->to(acc)});
    }
  }
  return rounds;
}

// A round's products at every step (StepProduct): by W, or for a low-rank round by its two
// factors; in the backward, by their transposes.
struct RoundProducts {
  StepProduct weight;                // W, or the left factor
  std::optional<StepProduct> right;  // the right factor of a low-rank round
};

std::vector<RoundProducts> round_products(const std::vector<RoundWeight>& weights, bool backward, int64_t batch,
                                          int64_t steps) {
  auto product = [&](const Tensor& weight) { return StepProduct(backward ? weight.t() : weight, batch, steps); };
  std::vector<RoundProducts> products;
  for (const RoundWeight& round : weights) {
    products.push_back({product(round.weight), round.low_rank() ? std::optional(product(round.right)) : std::nullopt});
  }
  return products;
}

// Step t's slot of a forward buffer: one per step when the backward will read it, else a
// ring of two (state the next step reads) or one (values used within the step).
Tensor at_step(const Tensor& buffer, int64_t t) { return buffer.select(0, t % buffer.size(0)); }

// Slots of a forward buffer: all steps when saved for the backward, else `ring`.
int64_t slots(int64_t seq_len, bool save, int64_t ring) { return save ? seq_len : ring; }

// (T, B, N) → (T·B, N), for the weight gradients taken in one product after the sweep.
Tensor rows(const Tensor& sequence) { return sequence.reshape({-1, sequence.size(-1)}); }

// Steps per block of the LSTM forward's input projection, whose pre-activations take
// `step_bytes` per row of x. On a GPU all T: one product. On the CPU, as many as keep a block's
// pre-activations within kProjectionBlockBytes, so that the steps read them from the cache
// where the product left them. One product of all T·B rows into a (T, B, 4H) buffer wrote it
// out to memory and read it back: at B 16, H 128, float32, one thread, the profiler put 0.4-0.6 ms
// of a 3.3 ms forward (T 64) in the buffer's first write (ATen's copy of the bias), and a forward
// of T 512 took 53.0 µs a step, 46.6 in blocks (oneDNN's: 44.6).
constexpr int64_t kProjectionBlockBytes = int64_t{256} << 10;

int64_t projection_block(const Tensor& x, int64_t step_bytes) {
  const int64_t all_steps = std::max<int64_t>(x.size(0), 1), batch = x.size(1);
  if (!x.device().is_cpu() || batch == 0) return all_steps;
  return std::clamp<int64_t>(kProjectionBlockBytes / (batch * step_bytes), 1, all_steps);
}

// The shared forward time loop; `preactivations(t, h)` fills step t's gates with z.
// `gates`, `h_prev` and `cells` hold every step (save) or a ring (see at_step).
template <typename Preactivations>
std::tuple<Tensor, Tensor, Tensor> run_forward(const Kernels& kernels, const Tensor& x, const Tensor& h0,
                                               const Tensor& c0, const Tensor& gates, const Tensor& h_prev,
                                               const Tensor& cells, const std::optional<Tensor>& lengths,
                                               const std::optional<Tensor>& noise, bool reverse, double temperature,
                                               GateMode mode, Preactivations&& preactivations) {
  const int64_t seq_len = x.size(0);
  Tensor output = at::empty({seq_len, x.size(1), h0.size(1)}, x.options());
  Tensor h_n = at::empty_like(h0);
  Tensor c = c0.to(gates.scalar_type());
  at_step(h_prev, time_of(0, seq_len, reverse)).copy_(h0);
  for (int64_t step = 0; step < seq_len; ++step) {
    const int64_t t = time_of(step, seq_len, reverse);
    Tensor h = at_step(h_prev, t);
    preactivations(t, h);
    Tensor h_next = step + 1 < seq_len ? at_step(h_prev, time_of(step + 1, seq_len, reverse)) : h_n;
    Tensor c_next = at_step(cells, t);
    Tensor noise_t = noise.has_value() && mode == GateMode::kNoisy ? noise->select(0, t) : Tensor();
    kernels.cell_forward({at_step(gates, t), c, h, c_next, h_next, output.select(0, t), noise_t,
                          optional_or_undefined(lengths), t, temperature, mode});
    c = c_next;
  }
  Tensor c_n = c.to(x.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
  return {output, h_n, c_n};
}

// The shared backward time loop; `propagate(t, grad_z, grad_h_carry)` adds step t's
// contribution to ∂L/∂h_{t-1} into grad_h_carry (and records whatever else it needs).
template <typename Propagate>
std::tuple<Tensor, Tensor, Tensor> run_backward(const Kernels& kernels, const Tensor& grad_output,
                                                const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& c0,
                                                const Tensor& gates, const Tensor& cells,
                                                const std::optional<Tensor>& lengths, bool reverse,
                                                double temperature, GateMode mode, Propagate&& propagate) {
  const int64_t seq_len = gates.size(0);
  const auto acc = gates.scalar_type();
  Tensor grad_z = at::empty(gates.sizes(), grad_output.options());
  Tensor grad_h = grad_h_n.to(acc, false, true);
  Tensor grad_c = grad_c_n.to(acc, false, true);
  Tensor grad_h_carry = at::empty_like(grad_h);
  Tensor c0_acc = c0.to(acc);
  for (int64_t step = seq_len - 1; step >= 0; --step) {
    const int64_t t = time_of(step, seq_len, reverse);
    Tensor c_prev = step > 0 ? cells.select(0, time_of(step - 1, seq_len, reverse)) : c0_acc;
    Tensor grad_z_t = grad_z.select(0, t);
    kernels.cell_backward({gates.select(0, t), cells.select(0, t), c_prev, grad_output.select(0, t), grad_h, grad_c,
                           grad_z_t, grad_h_carry, optional_or_undefined(lengths), t, temperature, mode});
    propagate(t, grad_z_t, grad_h_carry);
    std::swap(grad_h, grad_h_carry);
  }
  const auto dtype = grad_output.scalar_type();
  return {grad_z, grad_h.to(dtype), grad_c.to(dtype)};
}

Tensor bias_grad(const Tensor& grad_rows, at::ScalarType dtype) {
  return grad_rows.sum(0, /*keepdim=*/false, at::toOpMathType(dtype)).to(dtype);
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_forward(
    const Kernels& kernels, const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& weight_ih,
    const Tensor& weight_hh, const std::optional<Tensor>& bias, const std::optional<Tensor>& lengths,
    const std::optional<Tensor>& noise, bool reverse, double temperature, c10::string_view gate_mode, bool save) {
  const int64_t seq_len = x.size(0), batch = x.size(1), hidden = weight_hh.size(1);
  const auto acc_options = x.options().dtype(acc_type(x));
  // The input projection does not depend on the recurrence: a product over the T·B rows of a
  // block of steps, taken as the sweep reaches the block (see projection_block).
  const int64_t block = projection_block(x, 4 * hidden * c10::elementSize(acc_type(x)));
  Tensor gates = at::empty({save ? seq_len : block, batch, 4 * hidden}, acc_options);
  const StepProduct input(weight_ih, block * batch, (seq_len + block - 1) / block);
  Tensor h_prev = at::empty({slots(seq_len, save, 2), batch, hidden}, x.options());
  Tensor cells = at::empty({slots(seq_len, save, 2), batch, hidden}, acc_options);
  const StepProduct recurrent(weight_hh, batch, seq_len);
  auto [output, h_n, c_n] = run_forward(
      kernels, x, h0, c0, gates, h_prev, cells, lengths, noise, reverse, temperature,
      gate_mode_named(gate_mode).value(), [&](int64_t t, const Tensor& h) {
        const int64_t first = t / block * block, count = std::min(block, seq_len - first);
        if (t == (reverse ? first + count - 1 : first)) {  // the sweep enters the block: project it
          input.assign(rows(gates.narrow(0, save ? first : 0, count)), rows(x.narrow(0, first, count)), bias);
        }
        recurrent.add_into(at_step(gates, t), h);
      });
  if (!save) gates = at::empty({0, batch, 4 * hidden}, acc_options);  // scratch, as no backward reads it
  return {output, h_n, c_n, gates, cells, h_prev};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Kernels& kernels, const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const Tensor& x, const Tensor& c0, const Tensor& weight_ih, const Tensor& weight_hh, const Tensor& gates,
    const Tensor& cells, const Tensor& h_prev, const std::optional<Tensor>& lengths, bool reverse,
    double temperature, c10::string_view gate_mode) {
  const StepProduct recurrent(weight_hh.t(), gates.size(1), gates.size(0));
  auto [grad_z, grad_h0, grad_c0] =
      run_backward(kernels, grad_output, grad_h_n, grad_c_n, c0, gates, cells, lengths, reverse, temperature,
                   gate_mode_named(gate_mode).value(),
                   [&](int64_t, const Tensor& grad_z_t, Tensor& grad_h_carry) {
                     recurrent.add_into(grad_h_carry, grad_z_t);
                   });
  // Weight gradients in one product over all T·B rows (as cuDNN does, SPEC §2).
  const Tensor grad_rows = rows(grad_z);
  Tensor grad_x = at::mm(grad_rows, weight_ih).view(x.sizes());
  Tensor grad_weight_ih = at::mm(grad_rows.t(), rows(x));
  Tensor grad_weight_hh = at::mm(grad_rows.t(), rows(h_prev));
  return {grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, bias_grad(grad_rows, gates.scalar_type())};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, TensorList, TensorList> mogrifier_forward(
    const Kernels& kernels, const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& weight_ih,
    const Tensor& weight_hh, const std::optional<Tensor>& bias, at::TensorList mogrify_weights,
    const BoolList& mogrify_low_rank, at::TensorList mogrify_right_factors, at::TensorList mogrify_biases,
    const std::optional<Tensor>& lengths, bool reverse, bool save) {
  const int64_t seq_len = x.size(0), batch = x.size(1), hidden = weight_hh.size(1);
  const int64_t rounds = static_cast<int64_t>(mogrify_weights.size());
  const auto acc_options = x.options().dtype(acc_type(x));
  const int64_t step_slots = slots(seq_len, save, 1), state_slots = slots(seq_len, save, 2);
  const std::vector<RoundWeight> weights =
      round_weights(mogrify_weights, mogrify_low_rank, mogrify_right_factors, acc_type(x), Factor::kLeft);
  TensorList chains, round_gates, thin;
  for (int64_t j = 1; j <= rounds; ++j) {
    const RoundWeight& round = weights[j - 1];
    const int64_t width = round.weight.size(0);
    chains.push_back(at::empty({step_slots, batch, width}, x.options()));
    round_gates.push_back(at::empty({step_slots, batch, width}, acc_options));
    // A low-rank round's k-wide v rightᵀ, used within the step only.
    thin.push_back(round.low_rank() ? at::empty({batch, round.right.size(0)}, acc_options) : Tensor());
  }
  Tensor gates = at::empty({step_slots, batch, 4 * hidden}, acc_options);
  Tensor h_prev = at::empty({state_slots, batch, hidden}, x.options());
  Tensor cells = at::empty({state_slots, batch, hidden}, acc_options);
  const std::vector<RoundProducts> products = round_products(weights, /*backward=*/false, batch, seq_len);
  const StepProduct input(weight_ih, batch, seq_len), recurrent(weight_hh, batch, seq_len);
  auto [output, h_n, c_n] = run_forward(
      kernels, x, h0, c0, gates, h_prev, cells, lengths, std::nullopt, reverse, 1.0, GateMode::kSoft,
      [&](int64_t t, const Tensor&) {
        auto value = [&](int64_t k) { return at_step(chain_value(k, x, h_prev, chains), t); };
        for (int64_t j = 1; j <= rounds; ++j) {
          const RoundWeight& round = weights[j - 1];
          Tensor gate = at_step(round_gates[j - 1], t);
          std::optional<Tensor> round_bias;
          if (!mogrify_biases.empty()) round_bias = mogrify_biases[j - 1];
          const RoundProducts& product = products[j - 1];
          if (round.low_rank()) {  // a = (v rightᵀ) leftᵀ + b: B·k·(m + n) multiply-adds, not B·m·n
            product.right->assign(thin[j - 1], value(j - 1));
            product.weight.assign(gate, thin[j - 1], round_bias);
          } else {
            product.weight.assign(gate, value(j - 1), round_bias);
          }
          kernels.round_forward({gate, value(j - 2), at_step(chains[j - 1], t)});
        }
        Tensor z = at_step(gates, t);
        input.assign(z, value(last_x(rounds)), bias);
        recurrent.add_into(z, value(last_h(rounds)));
      });
  return {output, h_n, c_n, gates, cells, h_prev, chains, round_gates};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, TensorList, TensorList, TensorList> mogrifier_backward(
    const Kernels& kernels, const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
    const Tensor& x, const Tensor& c0, const Tensor& weight_ih, const Tensor& weight_hh, const Tensor& gates,
    const Tensor& cells, const Tensor& h_prev, at::TensorList mogrify_weights,
    const BoolList& mogrify_low_rank, at::TensorList mogrify_right_factors, at::TensorList chains,
    at::TensorList round_gates, const std::optional<Tensor>& lengths, bool reverse) {
  const int64_t rounds = static_cast<int64_t>(mogrify_weights.size());
  const auto acc = gates.scalar_type();
  const std::vector<RoundWeight> weights =
      round_weights(mogrify_weights, mogrify_low_rank, mogrify_right_factors, acc, Factor::kRight);
  Tensor grad_x = at::empty_like(x);
  // Per round and step: da (the gradient of the gate pre-activation) and, for a low-rank
  // round, its k-wide da·left, both kept for the weight gradients after the sweep.
  TensorList grad_a, grad_thin;
  for (int64_t j = 1; j <= rounds; ++j) {
    const RoundWeight& round = weights[j - 1];
    const Tensor& gate = round_gates[j - 1];
    grad_a.push_back(at::empty(gate.sizes(), x.options()));
    grad_thin.push_back(round.low_rank() ? at::empty({gate.size(0), gate.size(1), round.weight.size(1)},
                                                     x.options().dtype(acc))
                                         : Tensor());
  }
  // ∂L/∂(last x) and ∂L/∂(last h) of one step, carried down through the rounds.
  Tensor grad_chain_x = at::empty({x.size(1), x.size(2)}, x.options().dtype(acc));
  Tensor grad_chain_h = at::empty({x.size(1), weight_hh.size(1)}, grad_chain_x.options());
  const int64_t batch = x.size(1), seq_len = x.size(0);
  const std::vector<RoundProducts> products = round_products(weights, /*backward=*/true, batch, seq_len);
  const StepProduct input(weight_ih.t(), batch, seq_len), recurrent(weight_hh.t(), batch, seq_len);
  auto [grad_z, grad_h0, grad_c0] = run_backward(
      kernels, grad_output, grad_h_n, grad_c_n, c0, gates, cells, lengths, reverse, 1.0, GateMode::kSoft,
      [&](int64_t t, const Tensor& grad_z_t, Tensor& grad_h_carry) {
        input.assign(grad_chain_x, grad_z_t);
        recurrent.assign(grad_chain_h, grad_z_t);
        for (int64_t j = rounds; j >= 1; --j) {
          const RoundWeight& round = weights[j - 1];
          const bool odd = j % 2 == 1;
          Tensor& grad = odd ? grad_chain_x : grad_chain_h;
          Tensor& grad_other = odd ? grad_chain_h : grad_chain_x;
          Tensor grad_a_t = grad_a[j - 1].select(0, t);
          kernels.round_backward(
              {grad, chain_value(j - 2, x, h_prev, chains).select(0, t), round_gates[j - 1].select(0, t), grad_a_t});
          const RoundProducts& product = products[j - 1];
          if (round.low_rank()) {  // δv += (da left) right, through the k-wide da left
            Tensor grad_thin_t = grad_thin[j - 1].select(0, t);
            product.weight.assign(grad_thin_t, grad_a_t);
            product.right->add_into(grad_other, grad_thin_t);
          } else {
            product.weight.add_into(grad_other, grad_a_t);
          }
        }
        grad_x.select(0, t).copy_(grad_chain_x);
        grad_h_carry.add_(grad_chain_h);
      });
  const auto dtype = x.scalar_type();
  const Tensor grad_rows = rows(grad_z);
  Tensor grad_weight_ih = at::mm(grad_rows.t(), rows(chain_value(last_x(rounds), x, h_prev, chains)));
  Tensor grad_weight_hh = at::mm(grad_rows.t(), rows(chain_value(last_h(rounds), x, h_prev, chains)));
  TensorList grad_mogrify_weights, grad_right_factors, grad_mogrify_biases;
  for (int64_t j = 1; j <= rounds; ++j) {
    const RoundWeight& round = weights[j - 1];
    const Tensor grad_a_rows = rows(grad_a[j - 1]);
    const Tensor read = rows(chain_value(j - 1, x, h_prev, chains));  // the v round j's gate read
    if (round.low_rank()) {
      // ∂L/∂left = daᵀ (v rightᵀ) and ∂L/∂right = (da left)ᵀ v, each over all T·B rows; the
      // k-wide v rightᵀ of every step is recomputed here in one product rather than kept
      // by the forward. In the accumulation type, which `round.right` and da left have.
      const Tensor read_acc = read.to(acc);
      const Tensor thin = at::mm(read_acc, round.right.t());
      grad_mogrify_weights.push_back(at::mm(grad_a_rows.to(acc).t(), thin).to(dtype));
      grad_right_factors.push_back(at::mm(rows(grad_thin[j - 1]).t(), read_acc).to(dtype));
    } else {
      grad_mogrify_weights.push_back(at::mm(grad_a_rows.t(), read));
    }
    grad_mogrify_biases.push_back(bias_grad(grad_a_rows, dtype));
  }
  return {grad_x,         grad_h0,        grad_c0,
          grad_weight_ih, grad_weight_hh, bias_grad(grad_rows, acc),
          grad_mogrify_weights, grad_right_factors, grad_mogrify_biases};
}

}  // namespace fusedrnn
