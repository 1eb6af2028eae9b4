// The G2 noise of fusedrnn/noise.py (SPEC §4.5), one element pair at a time: the same
// Philox4x32-10 words, hence the same Bernoulli masks and uniforms, and the logistic values
// within 2 float32 ulps of sample_noise's (its own log below, not libm's). Written without
// calls or branches, like cell.h's exp, so that step_kernels.h's loop over the hidden units
// vectorises at each instruction set's width (scalar, this cost more than the sweep it feeds).
#pragma once

#include <cstdint>
#include <cstring>

namespace fusedrnn::cpu {

// Philox4x32 constants and rounds, as triton.language.random.philox_impl and noise.py.
constexpr uint32_t kPhiloxRoundA = 0xD2511F53u, kPhiloxRoundB = 0xCD9E8D57u;
constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u, kPhiloxKeyB = 0xBB67AE85u;
constexpr float kUniformScale = 4.6566127342e-10f;  // noise.py's _UNIFORM_SCALE
// noise.py's clamp of U to [EPS, 1 - EPS], EPS = 1e-6, as torch rounds it to float32.
constexpr float kUniformLow = 1e-6f, kUniformHigh = static_cast<float>(1.0 - 1e-6);

struct PhiloxWords {
  uint32_t c0, c1, c2, c3;
};

inline PhiloxWords philox(uint32_t key0, uint32_t key1, PhiloxWords c) {
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    const uint64_t product_b = static_cast<uint64_t>(kPhiloxRoundB) * c.c2;
    const uint64_t product_a = static_cast<uint64_t>(kPhiloxRoundA) * c.c0;
    c = {static_cast<uint32_t>(product_b >> 32) ^ c.c1 ^ key0, static_cast<uint32_t>(product_b),
         static_cast<uint32_t>(product_a >> 32) ^ c.c3 ^ key1, static_cast<uint32_t>(product_a)};
    key0 += kPhiloxKeyA;
    key1 += kPhiloxKeyB;
  }
  return c;
}

// tl.uint_to_uniform_float: the word read as an int32, a negative x taken as -x - 1 (= ~x).
inline float uniform(uint32_t word) {
  const int32_t x = static_cast<int32_t>(word);
  return static_cast<float>(x ^ (x >> 31)) * kUniformScale;
}

// log of a positive normal float: Cephes' logf (range reduction to [√½, √2) and a degree-9
// polynomial, within about 1 ulp).
inline float vectorisable_log(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  int32_t exponent = ((bits >> 23) & 0xff) - 126;  // x = m · 2^exponent, m in [½, 1)
  bits = (bits & 0x807fffff) | 0x3f000000;
  float m;
  std::memcpy(&m, &bits, sizeof(m));
  const bool low = m < 0.707106781186547524f;
  exponent = low ? exponent - 1 : exponent;
  m = low ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  const float e = static_cast<float>(exponent);
  y = y * m * z - 2.12194440e-4f * e - 0.5f * z;
  return m + y + 0.693359375f * e;
}

// m ⊙ ℓ for one gate from its two words, as noise.py's sample_noise rounds it (float32).
inline float gate_noise(uint32_t value_word, uint32_t keep_word, float noise_prob) {
  float u = uniform(value_word);
  u = u < kUniformLow ? kUniformLow : (u > kUniformHigh ? kUniformHigh : u);
  const float logistic = vectorisable_log(u) - vectorisable_log(1.0f - u);
  return uniform(keep_word) < noise_prob ? logistic : 0.0f;
}

}  // namespace fusedrnn::cpu
