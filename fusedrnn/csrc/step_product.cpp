#include "step_product.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <optional>
#include <string>

namespace fusedrnn {
namespace {

// oneDNN's reorder and linear, the operators ATen registers for Inductor's CPU linear
// (mkldnn::_reorder_linear_weight, mkldnn::_linear_pointwise.binary), found through the
// dispatcher: a torch built without oneDNN has neither, and sweeps then use addmm.
struct OneDnn {
  c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, std::optional<int64_t>)> reorder;
  c10::TypedOperatorHandle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const std::optional<at::Tensor>&, c10::string_view)>
      linear_add;  // linear_add(a, out, packed, bias, "add") = a @ weightᵀ + bias + out
};

const OneDnn* onednn() {
  static const std::optional<OneDnn> found = []() -> std::optional<OneDnn> {
    auto& dispatcher = c10::Dispatcher::singleton();
    const auto reorder = dispatcher.findSchema({"mkldnn::_reorder_linear_weight", ""});
    const auto linear = dispatcher.findSchema({"mkldnn::_linear_pointwise", "binary"});
    if (!reorder || !linear) return std::nullopt;
    try {  // a torch whose schemas differ from these signatures throws here
      return OneDnn{reorder->typed<at::Tensor(const at::Tensor&, std::optional<int64_t>)>(),
                    linear->typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                             const std::optional<at::Tensor>&, c10::string_view)>()};
    } catch (const c10::Error&) {
      return std::nullopt;
    }
  }();
  return found ? &*found : nullptr;
}

// The rule, from bench/results/cpu-packed/ (LSTM, B 1-64, T 4-64, H 128-1024, 1 and 2 threads):
// oneDNN's linear pays from 4·512² weight elements and 2 rows (below, or at B = 1, it is no
// faster than addmm, or slower), and the reorder (milliseconds at H 1024) from 16 steps, or
// 32 for a transposed weight (the backward's), which must first be copied into a plain one.
constexpr int64_t kMinElements = 4 * 512 * 512;
constexpr int64_t kMinRows = 2;
constexpr int64_t kMinSteps = 16;
constexpr int64_t kMinStepsTransposed = 32;

bool worth_packing(const at::Tensor& weight, int64_t batch, int64_t steps) {
  const char* forced = std::getenv("FUSEDRNN_CPU_PACKED_WEIGHTS");
  if (forced != nullptr && *forced != '\0') {
    const std::string mode = forced;
    TORCH_CHECK_VALUE(mode == "always" || mode == "never",
                      "FUSEDRNN_CPU_PACKED_WEIGHTS must be 'always', 'never' or unset, got '", mode, "'");
    return mode == "always";
  }
  const int64_t min_steps = weight.is_contiguous() ? kMinSteps : kMinStepsTransposed;
  return weight.numel() >= kMinElements && batch >= kMinRows && steps >= min_steps;
}

}  // namespace

void addmm_acc(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
  if (out.scalar_type() == a.scalar_type()) {
    out.addmm_(a, b);
  } else {
    at::addmm_out(out, out, a, b, out.scalar_type());
  }
}

void mm_into(at::Tensor out, const at::Tensor& a, const at::Tensor& b) {
  if (out.scalar_type() == a.scalar_type()) {
    at::mm_out(out, a, b);
  } else {
    out.zero_();
    addmm_acc(out, a, b);
  }
}

void linear_into(at::Tensor out, const at::Tensor& input, const at::Tensor& weight,
                 const std::optional<at::Tensor>& bias) {
  const bool biased = bias.has_value() && bias->defined();
  if (biased && out.scalar_type() == input.scalar_type() && bias->scalar_type() == out.scalar_type()) {
    at::addmm_out(out, *bias, input, weight.t());
  } else if (biased) {
    out.copy_(*bias);
    addmm_acc(out, input, weight.t());
  } else {
    mm_into(out, input, weight.t());
  }
}

StepProduct::StepProduct(const at::Tensor& weight, int64_t batch, int64_t steps) : weight_(weight) {
  if (!weight.device().is_cpu() || weight.scalar_type() != at::kFloat || !at::globalContext().userEnabledMkldnn() ||
      onednn() == nullptr || !worth_packing(weight, batch, steps)) {
    return;
  }
  try {
    packed_ = onednn()->reorder.call(weight.contiguous(), batch);
  } catch (const c10::Error&) {  // a oneDNN that cannot run here: packed_ stays undefined, addmm as without it
  }
}

void StepProduct::add_into(at::Tensor out, const at::Tensor& a) const {
  if (!packed_.defined()) {
    addmm_acc(out, a, weight_.t());
  } else {
    out.copy_(onednn()->linear_add.call(a.contiguous(), out, packed_, std::nullopt, "add"));
  }
}

void StepProduct::assign(at::Tensor out, const at::Tensor& a, const std::optional<at::Tensor>& bias) const {
  if (!packed_.defined()) {
    linear_into(out, a, weight_, bias);
    return;
  }
  if (bias.has_value() && bias->defined()) {
    out.copy_(*bias);
  } else {
    out.zero_();
  }
  add_into(out, a);
}

}  // namespace fusedrnn
