// The G2 noise of fusedrnn/noise.py (SPEC §4.5) drawn on the CPU, where the PyTorch version
// costs several times the sweep it feeds: the same Philox4x32-10 words, hence the same
// Bernoulli masks and uniforms; the logistic values within float32 rounding of libm's log.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../kernels.h"

namespace fusedrnn::cpu {
namespace {

// Philox4x32 constants and rounds, as triton.language.random.philox_impl and noise.py.
constexpr uint32_t kRoundA = 0xD2511F53u, kRoundB = 0xCD9E8D57u;
constexpr uint32_t kKeyA = 0x9E3779B9u, kKeyB = 0xBB67AE85u;
constexpr int kRounds = 10;
constexpr float kUniformScale = 4.6566127342e-10f;  // noise.py's _UNIFORM_SCALE
constexpr double kEps = 1e-6;                        // noise.py's EPS

struct Words {
  uint32_t c0, c1, c2, c3;
};

Words philox(uint32_t key0, uint32_t key1, Words c) {
  for (int round = 0; round < kRounds; ++round) {
    const uint64_t product_b = static_cast<uint64_t>(kRoundB) * c.c2;
    const uint64_t product_a = static_cast<uint64_t>(kRoundA) * c.c0;
    c = {static_cast<uint32_t>(product_b >> 32) ^ c.c1 ^ key0, static_cast<uint32_t>(product_b),
         static_cast<uint32_t>(product_a >> 32) ^ c.c3 ^ key1, static_cast<uint32_t>(product_a)};
    key0 += kKeyA;
    key1 += kKeyB;
  }
  return c;
}

// tl.uint_to_uniform_float: the word read as an int32, a negative x taken as -x - 1.
float uniform(uint32_t word) {
  const int32_t x = static_cast<int32_t>(word);
  return static_cast<float>(x < 0 ? -(x + 1) : x) * kUniformScale;
}

// m ⊙ ℓ for one gate from its two words, as noise.py's sample_noise rounds it (float32).
float gate_noise(uint32_t value_word, uint32_t keep_word, float noise_prob) {
  if (!(uniform(keep_word) < noise_prob)) return 0.0f;
  const float u = std::clamp(uniform(value_word), static_cast<float>(kEps), static_cast<float>(1.0 - kEps));
  return std::log(u) - std::log(1.0f - u);
}

}  // namespace

at::Tensor g2_noise(int64_t seq_len, int64_t batch_size, int64_t hidden_size, double noise_prob,
                    const at::Tensor& seed) {
  const uint64_t key = static_cast<uint64_t>(seed.item<int64_t>());
  const uint32_t key0 = static_cast<uint32_t>(key), key1 = static_cast<uint32_t>(key >> 32);
  const float keep_below = static_cast<float>(noise_prob);
  at::Tensor noise = at::empty({seq_len, batch_size, 2, hidden_size}, seed.options().dtype(at::kFloat));
  float* out = noise.data_ptr<float>();
  // One (t, b) row a task item: its two gates' H values from the counters (b·H + j, t, 0, 0).
  at::parallel_for(0, seq_len * batch_size, std::max<int64_t>(1, 4096 / std::max<int64_t>(hidden_size, 1)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t row = begin; row < end; ++row) {
                       const int64_t t = row / batch_size, b = row % batch_size;
                       float* input_gate = out + row * 2 * hidden_size;
                       float* forget_gate = input_gate + hidden_size;
                       for (int64_t j = 0; j < hidden_size; ++j) {
                         const Words w = philox(key0, key1, {static_cast<uint32_t>(b * hidden_size + j),
                                                             static_cast<uint32_t>(t), 0u, 0u});
                         input_gate[j] = gate_noise(w.c0, w.c1, keep_below);
                         forget_gate[j] = gate_noise(w.c2, w.c3, keep_below);
                       }
                     }
                   });
  return noise;
}

}  // namespace fusedrnn::cpu
