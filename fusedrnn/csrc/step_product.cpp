#include "step_product.h"

#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/record_function.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>

namespace fusedrnn {
namespace {

// ATen's float32 batch-reduce GEMM (at::native::cpublas::brgemm) exists from the torch that
// defines this macro. It is a oneDNN micro-kernel on x86-64 CPUs with AVX2; elsewhere ATen falls
// back to one BLAS call per panel, never measured here, so the panels are for x86-64 only.
#if defined(CPUBLAS_BRGEMM_F32F32F32) && (defined(__x86_64__) || defined(_M_X64))
#define FUSEDRNN_PANELS 1
#else
#define FUSEDRNN_PANELS 0
#endif

// Columns of out per panel, and the least work worth a thread of its own: multiply-adds of a
// product, elements of the copy into panels.
constexpr int64_t kPanelWidth = 64;
constexpr int64_t kGrainMacs = int64_t{1} << 16;
constexpr int64_t kGrainElements = int64_t{1} << 14;

// The rule, from bench/results/cpu-panels/ (LSTM, B 1-64, T 1-32, H 64-1024, one thread): the
// copy into panels (milliseconds at H 1024, a transposition in the forward) repays itself from
// 4 steps over 2 rows or more, but one row's products gain less per step (MKL's matrix-vector
// product is itself close to reading the weight once): 16 steps there.
constexpr int64_t kMinSteps = 4;
constexpr int64_t kMinStepsOneRow = 16;

bool worth_packing(int64_t batch, int64_t steps) {
  const char* forced = std::getenv("FUSEDRNN_CPU_PACKED_WEIGHTS");
  if (forced != nullptr && *forced != '\0') {
    const std::string mode = forced;
    TORCH_CHECK_VALUE(mode == "always" || mode == "never",
                      "FUSEDRNN_CPU_PACKED_WEIGHTS must be 'always', 'never' or unset, got '", mode, "'");
    return mode == "always";
  }
  return steps >= (batch == 1 ? kMinStepsOneRow : kMinSteps);
}

// weight (m, n), any strides, as panels (ceil(m / 64), n, 64): panel j is the contiguous
// (n, 64) block of weightᵀ holding out's columns 64 j to 64 j + 63 (the last one part filled).
at::Tensor pack_panels(const at::Tensor& weight) {
  RECORD_FUNCTION("fusedrnn::pack_step_weight", std::vector<c10::IValue>({weight}));
  const int64_t m = weight.size(0), n = weight.size(1);
  const int64_t row_stride = weight.stride(0), col_stride = weight.stride(1);
  at::Tensor panels = at::empty({(m + kPanelWidth - 1) / kPanelWidth, n, kPanelWidth}, weight.options());
  const float* source = weight.data_ptr<float>();
  float* target = panels.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, kGrainElements / (n * kPanelWidth));
  at::parallel_for(0, panels.size(0), grain, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t width = std::min(kPanelWidth, m - j * kPanelWidth);
      const float* from = source + j * kPanelWidth * row_stride;
      float* to = target + j * n * kPanelWidth;
      if (row_stride == 1) {  // weight = Wᵀ, W contiguous (the backward's): a copy of W's rows
        for (int64_t k = 0; k < n; ++k) {
          for (int64_t p = 0; p < width; ++p) to[k * kPanelWidth + p] = from[k * col_stride + p];
        }
      } else {  // a transposition, reading along weight's rows
        for (int64_t p = 0; p < width; ++p) {
          for (int64_t k = 0; k < n; ++k) to[k * kPanelWidth + p] = from[p * row_stride + k * col_stride];
        }
      }
    }
  });
  return panels;
}

// Whether brgemm can read t (rows, cols) as it is: unit column stride, rows at least cols apart.
bool plain_rows(const at::Tensor& t) {
  return t.stride(1) == 1 && (t.size(0) <= 1 || t.stride(0) >= t.size(1));
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
  if (FUSEDRNN_PANELS && weight.device().is_cpu() && weight.scalar_type() == at::kFloat && weight.numel() > 0 &&
      batch > 0 && at::globalContext().userEnabledMkldnn() && worth_packing(batch, steps)) {
    panels_ = pack_panels(weight);
  }
}

bool StepProduct::through_panels(const at::Tensor& out, const at::Tensor& a) const {
  return panels_.defined() && out.scalar_type() == at::kFloat && a.scalar_type() == at::kFloat && out.size(0) > 0;
}

void StepProduct::panel_products(at::Tensor out, const at::Tensor& a, bool accumulate) const {
#if FUSEDRNN_PANELS
  at::Tensor target = plain_rows(out) ? out : out.contiguous();
  const at::Tensor rows = plain_rows(a) ? a : a.contiguous();
  const int64_t batch = rows.size(0), n = rows.size(1), m = target.size(1);
  const int64_t lda = batch > 1 ? rows.stride(0) : n, ldc = batch > 1 ? target.stride(0) : m;
  const float* a_data = rows.data_ptr<float>();
  const float* panels = panels_.data_ptr<float>();
  float* c = target.data_ptr<float>();
  const int64_t grain = std::max<int64_t>(1, kGrainMacs / (batch * n * kPanelWidth));
  at::parallel_for(0, panels_.size(0), grain, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t column = j * kPanelWidth;
      at::native::cpublas::brgemm(batch, std::min(kPanelWidth, m - column), n, lda, kPanelWidth, ldc, accumulate,
                                  a_data, panels + j * n * kPanelWidth, c + column);
    }
  });
  if (!target.is_same(out)) out.copy_(target);
#else
  TORCH_INTERNAL_ASSERT(false, "panels without brgemm");
#endif
}

void StepProduct::add_into(at::Tensor out, const at::Tensor& a) const {
  if (through_panels(out, a)) {
    panel_products(out, a, /*accumulate=*/true);
  } else {
    addmm_acc(out, a, weight_.t());
  }
}

void StepProduct::assign(at::Tensor out, const at::Tensor& a, const std::optional<at::Tensor>& bias) const {
  if (!through_panels(out, a)) {
    linear_into(out, a, weight_, bias);
  } else if (bias.has_value() && bias->defined()) {
    out.copy_(*bias);
    panel_products(out, a, /*accumulate=*/true);
  } else {
    panel_products(out, a, /*accumulate=*/false);
  }
}

}  // namespace fusedrnn
