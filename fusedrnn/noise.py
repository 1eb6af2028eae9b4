"""The G2 noise (SPEC §4.5): one counter-based generator that every backend implements.

The noise ``m ⊙ ℓ`` of element ``(t, b, gate, j)`` of a G2 sweep is a pure function of a
seed and those indices: one Philox4x32-10 call (Salmon et al., SC 2011) keyed by the
seed's two 32-bit words, on the counter ``(b·H + j, t, 0, 0)``, gives four words, ``U``
and the Bernoulli draw of ``m`` for the input gate and then for the forget gate. This is
``tl.philox`` of Triton, which the Triton kernels call where they need the noise
(:func:`fusedrnn.triton_kernels.noise.logistic_noise`); :func:`sample_noise` computes the
same words in plain PyTorch, for the backends that take the noise as a tensor and for
anyone who wants a sweep's noise back. The ``cpu`` backend draws the same in vectorised C++
(``csrc/cpu/noise.h``, ``torch.ops.fusedrnn.g2_noise``), where this costs more than its sweep.

A sweep that draws its own noise takes one seed from the torch generator of its device
(:func:`draw_seed`), so ``torch.manual_seed`` reproduces a run on every backend, and
:func:`sample_noise` with the generator in the same state returns that run's noise.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

#: ``U`` is clamped to ``[EPS, 1 - EPS]`` so that the logistic noise stays finite.
EPS = 1e-6

# Philox4x32 constants and rounds, as triton.language.random.philox_impl.
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUNDS = 10
_WORD = 0xFFFFFFFF
# tl.uint_to_uniform_float's scale for 32-bit words: the largest such that (2^31 - 1)·scale < 1
# in float32.
_UNIFORM_SCALE = 4.6566127342e-10


def draw_seed(device=None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A ``(1,)`` int64 seed on ``device``, from ``generator`` (default: the device's torch
    generator). A device tensor, so that a CUDA-graph replay draws a new one."""
    return torch.randint(0, 2 ** 62, (1,), dtype=torch.int64, device=device, generator=generator)


def _multiply(constant: int, words: torch.Tensor):
    """The high and low 32-bit words of ``constant · words`` (32-bit unsigned values held in
    int64, whose full 64-bit product would overflow): multiplied 16 bits at a time."""
    low = constant * (words & 0xFFFF)
    high = constant * (words >> 16)
    middle = ((high & 0xFFFF) << 16) + low
    return (high >> 16) + (middle >> 32), middle & _WORD


def philox(seed: Union[int, torch.Tensor], c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor,
           c3: torch.Tensor):
    """Triton's ``tl.philox(seed, c0, c1, c2, c3)`` for 32-bit counters: four words.

    The counters are uint32 values held in int64 tensors (broadcast together); so are the
    returned words. The key is the seed's low word, then its high word.
    """
    key0, key1 = seed & _WORD, (seed >> 32) & _WORD
    for _ in range(_ROUNDS):
        high_b, low_b = _multiply(_ROUND_B, c2)
        high_a, low_a = _multiply(_ROUND_A, c0)
        c0, c1, c2, c3 = high_b ^ c1 ^ key0, low_b, high_a ^ c3 ^ key1, low_a
        key0, key1 = (key0 + _KEY_A) & _WORD, (key1 + _KEY_B) & _WORD
    return c0, c1, c2, c3


def uniform(words: torch.Tensor) -> torch.Tensor:
    """Triton's ``tl.uint_to_uniform_float`` of uint32 words (held in int64): float32 in
    ``[0, 1)``. The word is read as an int32 and a negative ``x`` taken as ``-x - 1``."""
    magnitude = torch.where(words < 2 ** 31, words, _WORD - words)
    return magnitude.to(torch.float32) * _UNIFORM_SCALE


def sample_noise(seq_len: int, batch_size: int, hidden_size: int, noise_prob: float = 1.0, *,
                 seed: Union[int, torch.Tensor, None] = None, device=None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The G2 noise ``m ⊙ ℓ`` of ``seed``: ``(T, B, 2, H)`` float32, index 0 of the third
    axis for the input gate and 1 for the forget gate.

    ``ℓ = log U - log(1 - U)`` is logistic noise (the two-class Gumbel-softmax), ``U``
    clamped to ``[EPS, 1 - EPS]``, and ``m ~ Bernoulli(noise_prob)`` keeps or drops it.

    Args:
        seed: an int or an int64 tensor of one element (as :func:`draw_seed` returns). ``None``
            draws one as a sweep does, from ``generator`` or else the torch generator of
            ``device``: with that generator in the state it had before a G2 call that drew
            its own noise, this is exactly that call's noise.
        device: where the noise is computed and returned; default the seed tensor's, or CPU.
    """
    if seed is None:
        seed = draw_seed(device, generator)
    if isinstance(seed, torch.Tensor):
        device = seed.device if device is None else device
        seed = seed.to(device=device, dtype=torch.int64).reshape(())
    step = torch.arange(seq_len, dtype=torch.int64, device=device).view(-1, 1, 1)
    row = torch.arange(batch_size, dtype=torch.int64, device=device).view(1, -1, 1)
    unit = torch.arange(hidden_size, dtype=torch.int64, device=device).view(1, 1, -1)
    counter, step = torch.broadcast_tensors((row * hidden_size + unit) & _WORD, step)
    zero = torch.zeros_like(counter)
    u_input, keep_input, u_forget, keep_forget = philox(seed, counter, step, zero, zero)
    u = uniform(torch.stack([u_input, u_forget], dim=2)).clamp_(EPS, 1 - EPS)
    keep = uniform(torch.stack([keep_input, keep_forget], dim=2)) < noise_prob
    return torch.where(keep, torch.log(u) - torch.log(1 - u), 0.0)
