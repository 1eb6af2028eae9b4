// The operators' argument checks declared in checks.h.
#include "checks.h"

#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#ifdef FUSEDRNN_CUDA
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace fusedrnn {
namespace {

using at::ScalarType;

#ifdef FUSEDRNN_CUDA
constexpr ScalarType kKernelDtypes[] = {ScalarType::Half, ScalarType::BFloat16, ScalarType::Float,
                                        ScalarType::Double};
constexpr const char* kKernelDtypeNames =
    "torch.float16, torch.bfloat16, torch.float32 or torch.float64 (the CUDA kernels' types)";
#else
// The cpu backend computes half types in float32 (ext/cpu_backend.py): the CPU kernels have none.
constexpr ScalarType kKernelDtypes[] = {ScalarType::Float, ScalarType::Double};
constexpr const char* kKernelDtypeNames = "torch.float32 or torch.float64 (the CPU kernels' types)";
#endif

// Shapes and dtypes as Python prints them, as in the messages of functional.py.
std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << "(";
  for (size_t k = 0; k < sizes.size(); ++k) out << (k > 0 ? ", " : "") << sizes[k];
  out << (sizes.size() == 1 ? ",)" : ")");
  return out.str();
}

std::string dtype_str(ScalarType dtype) {
  switch (dtype) {
    case ScalarType::Half:
      return "torch.float16";
    case ScalarType::BFloat16:
      return "torch.bfloat16";
    case ScalarType::Float:
      return "torch.float32";
    case ScalarType::Double:
      return "torch.float64";
    case ScalarType::Int:
      return "torch.int32";
    case ScalarType::Long:
      return "torch.int64";
    default:
      return c10::toString(dtype);
  }
}

// A Tensor? argument that was passed (sweep.cpp treats an undefined one as absent too).
bool given(const std::optional<Tensor>& tensor) { return tensor.has_value() && tensor->defined(); }

// Whether `tensor`'s values can be read back now. Not while its stream is captured into a
// CUDA graph: the host sync would be an error that invalidates the capture.
bool values_readable([[maybe_unused]] const Tensor& tensor) {
#ifdef FUSEDRNN_CUDA
  if (tensor.is_cuda()) {
    const c10::cuda::CUDAGuard guard(tensor.device());
    return c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None;
  }
#endif
  return true;
}

// The dtype a tensor must have, and why (for the message).
struct Dtype {
  ScalarType type;
  std::string why;
};

// One operator's checks against the sizes of x (T, B, I) and weight_hh (4H, H), which it
// checks first.
class Checker {
 public:
  Checker(const char* op, const Tensor& x, const Tensor& weight_hh) : op_(op), x_(x) {
    TORCH_CHECK_VALUE(x.dim() == 3, op_, ": x must have 3 dimensions (T, B, I), got shape ", shape_str(x.sizes()));
    TORCH_CHECK_VALUE(x.size(0) >= 1, op_, ": x must have at least one time step (T >= 1), got shape ",
                      shape_str(x.sizes()));
    const bool supported =
        std::find(std::begin(kKernelDtypes), std::end(kKernelDtypes), x.scalar_type()) != std::end(kKernelDtypes);
    TORCH_CHECK_TYPE(supported, op_, ": x must be ", kKernelDtypeNames, ", got ", dtype_str(x.scalar_type()));
    layout("x", x, like_x());
    TORCH_CHECK_VALUE(weight_hh.dim() == 2 && weight_hh.size(0) == 4 * weight_hh.size(1), op_,
                      ": weight_hh must have shape (4H, H), got ", shape_str(weight_hh.sizes()));
    hidden_ = weight_hh.size(1);
    // As torch.nn.LSTM: at least one input feature and one hidden unit.
    TORCH_CHECK_VALUE(x.size(2) >= 1 && hidden_ >= 1, op_, ": x (T, B, I) and weight_hh (4H, H) must have I >= 1 and ",
                      "H >= 1, got I = ", x.size(2), " and H = ", hidden_);
    layout("weight_hh", weight_hh, like_x());
  }

  const char* op() const { return op_; }
  int64_t seq_len() const { return x_.size(0); }
  int64_t batch() const { return x_.size(1); }
  int64_t input() const { return x_.size(2); }
  int64_t hidden() const { return hidden_; }
  Dtype like_x() const { return {x_.scalar_type(), "like x"}; }
  // Where sweep.cpp accumulates: float32 for half types (SPEC §6), else x's dtype.
  Dtype accumulation() const {
    return {at::toOpMathType(x_.scalar_type()), "(the accumulation type of x's " + dtype_str(x_.scalar_type()) + ")"};
  }

  // `tensor` has shape `expected` (spelled `letters`, e.g. "(B, H)", whose sizes come from
  // `origin`), `dtype`, x's device and a contiguous layout.
  void tensor(const std::string& name, const Tensor& tensor, at::IntArrayRef expected, const std::string& letters,
              const Dtype& dtype, const std::string& origin = "T, B, I from x, H from weight_hh") const {
    TORCH_CHECK_VALUE(tensor.sizes() == expected, op_, ": ", name, " must have shape ", letters, " = ",
                      shape_str(expected), " (", origin, "), got ", shape_str(tensor.sizes()));
    layout(name, tensor, dtype);
  }

  // The (B, H) state tensors and their gradients, in x's dtype.
  void state(const char* name, const Tensor& tensor) const {
    this->tensor(name, tensor, {batch(), hidden()}, "(B, H)", like_x());
  }

  // A (T, B, N) sequence: all T steps, as the forward saves them with `save`.
  void sequence(const std::string& name, const Tensor& tensor, int64_t width, const std::string& letter,
                const Dtype& dtype) const {
    this->tensor(name, tensor, {seq_len(), batch(), width}, "(T, B, " + letter + ")", dtype);
  }

  void lengths(const std::optional<Tensor>& lengths) const {
    if (!given(lengths)) return;
    const Tensor& values = *lengths;
    tensor("lengths", values, {batch()}, "(B,)", {ScalarType::Long, "(steps per batch row)"});
    if (values.numel() == 0 || !values_readable(values)) return;
    if (!values.is_cpu()) {
      // Reading device values back would make the host wait for the device: the check runs
      // there instead, and a bad value fails the stream (a device-side assert).
      at::_assert_async(values.ge(0).logical_and(values.le(seq_len())).all(),
                        "fusedrnn: lengths must lie in [0, T] (the sequence length)");
      return;
    }
    // One reduction and one read back for both bounds.
    const auto [low, high] = at::aminmax(values);
    const Tensor bounds = at::stack({low, high}).cpu();
    const int64_t* range = bounds.data_ptr<int64_t>();
    TORCH_CHECK_VALUE(range[0] >= 0 && range[1] <= seq_len(), op_, ": lengths must lie in [0, ", seq_len(),
                      "] (the sequence length T), got values in [", range[0], ", ", range[1], "]");
  }

  // A name of kGateModeNames (kernels.h); returns its mode.
  GateMode gate_mode(c10::string_view name) const {
    const std::optional<GateMode> mode = gate_mode_named(name);
    if (!mode.has_value()) {
      std::string names;  // as functional.py prints fusedrnn.sweep.GATE_MODES
      for (const auto& [known, _] : kGateModeNames) names += (names.empty() ? "('" : ", '") + std::string(known) + "'";
      TORCH_CHECK_VALUE(false, op_, ": gate_mode must be one of ", names, "), got '", name, "'");
    }
    return *mode;
  }

  void temperature(double temperature) const {
    // As fusedrnn.cells.MIN_TEMPERATURE: 1/temperature must be finite in float32.
    TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature >= std::numeric_limits<float>::min(), op_,
                      ": temperature must be finite and >= 2**-126 (float32's smallest normal number), got ",
                      temperature);
  }

  // A list argument of `size` entries, one per Mogrifier round.
  void per_round(const char* name, size_t size, int64_t rounds) const {
    TORCH_CHECK_VALUE(static_cast<int64_t>(size) == rounds, op_, ": ", name, " must hold one entry per round (",
                      rounds, ", as mogrify_weights), got ", size);
  }

  // The left factor (m, k) of low-rank round j: m the round's width, any rank k. Returns k.
  int64_t left_factor(const std::string& name, const Tensor& left, int64_t j) const {
    TORCH_CHECK_VALUE(left.dim() == 2 && left.size(0) == round_width(j), op_, ": ", name, " must have shape (",
                      round_letter(j), ", k) = (", round_width(j), ", k) (the left factor of a low-rank round; ",
                      round_letter(j), " from ", j % 2 == 1 ? "x" : "weight_hh", "), got ", shape_str(left.sizes()));
    TORCH_CHECK_VALUE(left.size(1) >= 1, op_, ": ", name, " must have rank k >= 1, got shape ",
                      shape_str(left.sizes()));
    layout(name, left, like_x());
    return left.size(1);
  }

  // Round j's (1-based) width and its letter: odd rounds update the x chain, even rounds h.
  int64_t round_width(int64_t j) const { return j % 2 == 1 ? input() : hidden(); }
  static std::string round_letter(int64_t j) { return j % 2 == 1 ? "I" : "H"; }
  static std::string round_name(const char* list, int64_t j) {
    return c10::str(list, "[", j - 1, "] (round ", j, ")");
  }

 private:
  void layout(const std::string& name, const Tensor& tensor, const Dtype& dtype) const {
    TORCH_CHECK_TYPE(tensor.scalar_type() == dtype.type, op_, ": ", name, " must be ", dtype_str(dtype.type), " ",
                     dtype.why, ", got ", dtype_str(tensor.scalar_type()));
    TORCH_CHECK_VALUE(tensor.device() == x_.device(), op_, ": ", name, " must be on x's device ", x_.device(),
                      ", got ", tensor.device());
    // The kernels index the tensors' memory as dense row-major arrays.
    TORCH_CHECK_VALUE(tensor.is_contiguous(), op_, ": ", name, " must be contiguous, got strides ",
                      shape_str(tensor.strides()), " for shape ", shape_str(tensor.sizes()));
  }

  const char* op_;
  const Tensor& x_;
  int64_t hidden_;
};

// What both forwards take: x and weight_hh (checked by the Checker), h0, c0, weight_ih,
// bias and lengths.
void forward_inputs(const Checker& check, const Tensor& h0, const Tensor& c0, const Tensor& weight_ih,
                    const std::optional<Tensor>& bias, const std::optional<Tensor>& lengths) {
  check.state("h0", h0);
  check.state("c0", c0);
  check.tensor("weight_ih", weight_ih, {4 * check.hidden(), check.input()}, "(4H, I)", check.like_x());
  if (given(bias)) check.tensor("bias", *bias, {4 * check.hidden()}, "(4H,)", check.accumulation());
  check.lengths(lengths);
}

// What both backwards take besides the Mogrifier's rounds.
void backward_inputs(const Checker& check, const Tensor& grad_output, const Tensor& grad_h_n,
                     const Tensor& grad_c_n, const Tensor& c0, const Tensor& weight_ih, const Tensor& gates,
                     const Tensor& cells, const Tensor& h_prev, const std::optional<Tensor>& lengths) {
  const int64_t hidden = check.hidden();
  check.sequence("grad_output", grad_output, hidden, "H", check.like_x());
  check.state("grad_h_n", grad_h_n);
  check.state("grad_c_n", grad_c_n);
  check.state("c0", c0);
  check.tensor("weight_ih", weight_ih, {4 * hidden, check.input()}, "(4H, I)", check.like_x());
  check.sequence("gates", gates, 4 * hidden, "4H", check.accumulation());
  check.sequence("cells", cells, hidden, "H", check.accumulation());
  check.sequence("h_prev", h_prev, hidden, "H", check.like_x());
  check.lengths(lengths);
}

// Round j (1-based) maps the other chain to its own: (I, H) for odd j, (H, I) for even j;
// where mogrify_low_rank marks it, mogrify_weights[j-1] is the left factor (I|H, k) and the
// next right factor is (k, H|I).
void round_weights(const Checker& check, at::TensorList weights, const BoolList& low_rank, at::TensorList rights) {
  const int64_t rounds = static_cast<int64_t>(weights.size());
  check.per_round("mogrify_low_rank", low_rank.size(), rounds);
  const int64_t factored = std::count(low_rank.begin(), low_rank.end(), true);
  TORCH_CHECK_VALUE(static_cast<int64_t>(rights.size()) == factored, check.op(),
                    ": mogrify_right_factors must hold one tensor per low-rank round (", factored,
                    ", as mogrify_low_rank), got ", rights.size());
  int64_t next_right = 0;
  for (int64_t j = 1; j <= rounds; ++j) {
    const bool odd = j % 2 == 1;
    const int64_t other = odd ? check.hidden() : check.input();
    const std::string name = Checker::round_name("mogrify_weights", j);
    if (!low_rank.get(j - 1)) {
      check.tensor(name, weights[j - 1], {check.round_width(j), other}, odd ? "(I, H)" : "(H, I)", check.like_x());
      continue;
    }
    const int64_t rank = check.left_factor(name, weights[j - 1], j);
    check.tensor(c10::str("mogrify_right_factors[", next_right, "] (round ", j, ")"), rights[next_right],
                 {rank, other}, odd ? "(k, H)" : "(k, I)", check.like_x(),
                 c10::str("k from ", name, ", ", odd ? "H from weight_hh" : "I from x"));
    ++next_right;
  }
}

}  // namespace

c10::Device check_lstm_forward(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& weight_ih,
                               const Tensor& weight_hh, const std::optional<Tensor>& bias,
                               const std::optional<Tensor>& lengths, const std::optional<Tensor>& noise,
                               bool /*reverse*/, double temperature, c10::string_view gate_mode, bool /*save*/) {
  const Checker check("fusedrnn.lstm_forward", x, weight_hh);
  forward_inputs(check, h0, c0, weight_ih, bias, lengths);
  const GateMode mode = check.gate_mode(gate_mode);
  check.temperature(temperature);
  // Without noise a noisy sweep would silently run soft gates; with it, another mode ignores it.
  const bool noisy = mode == GateMode::kNoisy;
  TORCH_CHECK_VALUE(given(noise) == noisy, "fusedrnn.lstm_forward: noise must be given exactly when gate_mode is ",
                    "'noisy', got ", given(noise) ? "noise" : "no noise", " with gate_mode '", gate_mode, "'");
  if (noisy) {
    check.tensor("noise", *noise, {check.seq_len(), check.batch(), 2, check.hidden()}, "(T, B, 2, H)",
                 {ScalarType::Float, "(the G2 noise is float32 for every dtype of x)"});
  }
  return x.device();
}

c10::Device check_lstm_backward(const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
                                const Tensor& x, const Tensor& c0, const Tensor& weight_ih, const Tensor& weight_hh,
                                const Tensor& gates, const Tensor& cells, const Tensor& h_prev,
                                const std::optional<Tensor>& lengths, bool /*reverse*/, double temperature,
                                c10::string_view gate_mode) {
  const Checker check("fusedrnn.lstm_backward", x, weight_hh);
  backward_inputs(check, grad_output, grad_h_n, grad_c_n, c0, weight_ih, gates, cells, h_prev, lengths);
  check.gate_mode(gate_mode);
  check.temperature(temperature);
  return x.device();
}

c10::Device check_mogrifier_forward(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& weight_ih,
                                    const Tensor& weight_hh, const std::optional<Tensor>& bias,
                                    at::TensorList mogrify_weights, const BoolList& mogrify_low_rank,
                                    at::TensorList mogrify_right_factors, at::TensorList mogrify_biases,
                                    const std::optional<Tensor>& lengths, bool /*reverse*/, bool /*save*/) {
  const Checker check("fusedrnn.mogrifier_forward", x, weight_hh);
  forward_inputs(check, h0, c0, weight_ih, bias, lengths);
  round_weights(check, mogrify_weights, mogrify_low_rank, mogrify_right_factors);
  const int64_t rounds = static_cast<int64_t>(mogrify_weights.size());
  TORCH_CHECK_VALUE(mogrify_biases.empty() || static_cast<int64_t>(mogrify_biases.size()) == rounds,
                    "fusedrnn.mogrifier_forward: mogrify_biases must be empty or hold one tensor per round (", rounds,
                    ", as mogrify_weights), got ", mogrify_biases.size());
  for (int64_t j = 1; j <= static_cast<int64_t>(mogrify_biases.size()); ++j) {
    check.tensor(Checker::round_name("mogrify_biases", j), mogrify_biases[j - 1], {check.round_width(j)},
                 "(" + Checker::round_letter(j) + ",)", check.like_x());
  }
  return x.device();
}

c10::Device check_mogrifier_backward(const Tensor& grad_output, const Tensor& grad_h_n, const Tensor& grad_c_n,
                                     const Tensor& x, const Tensor& c0, const Tensor& weight_ih,
                                     const Tensor& weight_hh, const Tensor& gates, const Tensor& cells,
                                     const Tensor& h_prev, at::TensorList mogrify_weights,
                                     const BoolList& mogrify_low_rank, at::TensorList mogrify_right_factors,
                                     at::TensorList chains, at::TensorList round_gates,
                                     const std::optional<Tensor>& lengths, bool /*reverse*/) {
  const Checker check("fusedrnn.mogrifier_backward", x, weight_hh);
  backward_inputs(check, grad_output, grad_h_n, grad_c_n, c0, weight_ih, gates, cells, h_prev, lengths);
  round_weights(check, mogrify_weights, mogrify_low_rank, mogrify_right_factors);
  const int64_t rounds = static_cast<int64_t>(mogrify_weights.size());
  check.per_round("chains", chains.size(), rounds);
  check.per_round("round_gates", round_gates.size(), rounds);
  for (int64_t j = 1; j <= rounds; ++j) {
    const std::string letter = Checker::round_letter(j);
    check.sequence(Checker::round_name("chains", j), chains[j - 1], check.round_width(j), letter, check.like_x());
    check.sequence(Checker::round_name("round_gates", j), round_gates[j - 1], check.round_width(j), letter,
                   check.accumulation());
  }
  return x.device();
}

void check_g2_noise(int64_t seq_len, int64_t batch_size, int64_t hidden_size, double noise_prob,
                    const Tensor& seed) {
  TORCH_CHECK_VALUE(seq_len >= 0 && batch_size >= 0 && hidden_size >= 0,
                    "fusedrnn.g2_noise: seq_len, batch_size and hidden_size must be >= 0, got ", seq_len, ", ",
                    batch_size, ", ", hidden_size);
  // The element count of (T, B, 2, H), in floating point so that the check cannot overflow itself.
  TORCH_CHECK_VALUE(2.0 * static_cast<double>(seq_len) * static_cast<double>(batch_size) *
                            static_cast<double>(hidden_size) < 0x1p63,
                    "fusedrnn.g2_noise: the noise (T, B, 2, H) = (", seq_len, ", ", batch_size, ", 2, ", hidden_size,
                    ") has more elements than int64 can count");
  TORCH_CHECK_VALUE(noise_prob >= 0.0 && noise_prob <= 1.0, "fusedrnn.g2_noise: noise_prob must be in [0, 1], got ",
                    noise_prob);
  TORCH_CHECK_VALUE(seed.device().is_cpu() && seed.numel() == 1,
                    "fusedrnn.g2_noise: seed must be a CPU tensor of one element, got ", seed.numel(),
                    " elements on ", seed.device());
  TORCH_CHECK_TYPE(seed.scalar_type() == at::kLong, "fusedrnn.g2_noise: seed must be torch.int64, got ",
                   seed.scalar_type());
}

}  // namespace fusedrnn
