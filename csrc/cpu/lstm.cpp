// CPU step kernels of the LSTM cell (also the G2 cell and the Mogrifier's LSTM step):
// one `at::parallel_for` loop over the batch rows per step, the gate math of cell.h.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "../cell.h"

namespace fusedrnn::cpu {
namespace {

// Rows per task: enough elements that a thread's share outweighs the cost of waking it.
int64_t grain_rows(int64_t width) { return std::max<int64_t>(1, 2048 / std::max<int64_t>(width, 1)); }

bool row_active(const int64_t* lengths, int64_t row, int64_t t) { return lengths == nullptr || t < lengths[row]; }

template <typename scalar_t>
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
      const float* noise_i = noise ? noise + 2 * row : nullptr;
      const float* noise_f = noise ? noise + 2 * row + hidden : nullptr;
      for (int64_t j = 0; j < hidden; ++j) {
        acc_t c, h;
        const Gates<acc_t> a = cell_forward(
            Gates<acc_t>{z[j], z[hidden + j], z[2 * hidden + j], z[3 * hidden + j]},
            noise_i ? acc_t(noise_i[j]) : acc_t(0), noise_f ? acc_t(noise_f[j]) : acc_t(0), inv_temperature,
            args.mode, c_prev[row + j], c, h);
        z[j] = a.i;
        z[hidden + j] = a.f;
        z[2 * hidden + j] = a.g;
        z[3 * hidden + j] = a.o;
        c_next[row + j] = c;
        h_next[row + j] = scalar_t(h);
        output[row + j] = scalar_t(h);
      }
    }
  });
}

template <typename scalar_t>
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
      for (int64_t j = 0; j < hidden; ++j) {
        const Gates<acc_t> d = cell_backward(
            Gates<acc_t>{a[j], a[hidden + j], a[2 * hidden + j], a[3 * hidden + j]}, cells[row + j],
            c_prev[row + j], grad_h[row + j] + acc_t(grad_output[row + j]), grad_c[row + j], inv_temperature,
            args.mode);
        dz[j] = scalar_t(d.i);
        dz[hidden + j] = scalar_t(d.f);
        dz[2 * hidden + j] = scalar_t(d.g);
        dz[3 * hidden + j] = scalar_t(d.o);
        grad_h_carry[row + j] = acc_t(0);
      }
    }
  });
}

}  // namespace

void cell_forward(const CellForwardArgs& args) {
  AT_DISPATCH_FLOATING_TYPES(args.h_prev.scalar_type(), "fusedrnn_cpu_cell_forward",
                             [&] { cell_forward_rows<scalar_t>(args); });
}

void cell_backward(const CellBackwardArgs& args) {
  AT_DISPATCH_FLOATING_TYPES(args.grad_output.scalar_type(), "fusedrnn_cpu_cell_backward",
                             [&] { cell_backward_rows<scalar_t>(args); });
}

}  // namespace fusedrnn::cpu
