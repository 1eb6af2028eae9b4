// torch.ops.fusedrnn.g2_noise: the G2 noise of fusedrnn/noise.py drawn on the CPU, by the
// instruction set's kernel (step_kernels.h, noise.h), where the PyTorch version costs
// several times the sweep it feeds.
#include "../kernels.h"

namespace fusedrnn::cpu {

at::Tensor g2_noise(int64_t seq_len, int64_t batch_size, int64_t hidden_size, double noise_prob,
                    const at::Tensor& seed) {
  at::Tensor noise = at::empty({seq_len, batch_size, 2, hidden_size}, seed.options().dtype(at::kFloat));
  if (noise.numel() > 0) {
    kernels().g2_noise({noise, static_cast<uint64_t>(seed.item<int64_t>()), noise_prob});
  }
  return noise;
}

}  // namespace fusedrnn::cpu
