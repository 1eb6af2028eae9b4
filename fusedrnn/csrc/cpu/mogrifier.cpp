// CPU kernels of the Mogrifier rounds (SPEC §3); its LSTM step is lstm.cpp's.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "../cell.h"

namespace fusedrnn::cpu {
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

}  // namespace fusedrnn::cpu
