"""G2-LSTM gate noise drawn inside the kernels from a counter-based generator (Philox).

The noise of element ``(t, b, gate, j)`` is a pure function of a seed and those
indices, so a kernel can draw it where it needs it and :func:`noise_from_seed` can
draw the very same values again as a tensor. The seed comes from the torch generator
of the device (:func:`draw_seed`): ``torch.manual_seed`` reproduces a run, and under
CUDA-graph capture the seed stays a device tensor that each replay redraws.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..reference.g2 import EPS
from .common import input_guard, next_power_of_2


def draw_seed(device) -> torch.Tensor:
    """A ``(1,)`` int64 Philox seed on ``device``, from that device's torch generator."""
    return torch.randint(0, 2 ** 62, (1,), dtype=torch.int64, device=device)


@triton.jit
def logistic_noise(seed, t, o_b, o_j, H, noise_prob, EPS: tl.constexpr):
    """``m ⊙ ℓ`` of the i and f gates at step ``t``: two ``(len(o_b), len(o_j))`` float32.

    One Philox call per element gives four independent words: ``U`` and the
    Bernoulli draw of ``m`` for each of the two gates.
    """
    counter = (o_b[:, None] * H + o_j[None, :]).to(tl.uint32)
    step = tl.zeros_like(counter) + t.to(tl.uint32)
    zero = tl.zeros_like(counter)
    r_ui, r_mi, r_uf, r_mf = tl.philox(seed, counter, step, zero, zero)
    u_i = tl.clamp(tl.uint_to_uniform_float(r_ui), EPS, 1.0 - EPS)
    u_f = tl.clamp(tl.uint_to_uniform_float(r_uf), EPS, 1.0 - EPS)
    n_i = tl.where(tl.uint_to_uniform_float(r_mi) < noise_prob, tl.log(u_i) - tl.log(1.0 - u_i), 0.0)
    n_f = tl.where(tl.uint_to_uniform_float(r_mf) < noise_prob, tl.log(u_f) - tl.log(1.0 - u_f), 0.0)
    return n_i, n_f


@triton.jit
def _noise_kernel(seed, noise, B, H, noise_prob, EPS: tl.constexpr, BLOCK_B: tl.constexpr,
                  BLOCK_H: tl.constexpr):
    i_t, i_b, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_j = i_h * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (o_b < B)[:, None] & (o_j < H)[None, :]
    n_i, n_f = logistic_noise(tl.load(seed), i_t, o_b, o_j, H, noise_prob, EPS)
    # (T, B, 2, H): gate i then gate f of each row.
    p_noise = noise + ((i_t * B + o_b).to(tl.int64) * (2 * H))[:, None] + o_j[None, :]
    tl.store(p_noise, n_i, mask=mask)
    tl.store(p_noise + H, n_f, mask=mask)


@input_guard
def noise_from_seed(seed: torch.Tensor, seq_len: int, batch_size: int, hidden_size: int,
                    noise_prob: float = 1.0) -> torch.Tensor:
    """The noise a G2 sweep with this ``seed`` adds: ``(T, B, 2, H)`` float32 on the seed's device."""
    noise = torch.empty(seq_len, batch_size, 2, hidden_size, dtype=torch.float32, device=seed.device)
    block_b, block_h = min(next_power_of_2(batch_size, 1), 16), min(next_power_of_2(hidden_size, 1), 128)
    grid = (seq_len, triton.cdiv(batch_size, block_b), triton.cdiv(hidden_size, block_h))
    _noise_kernel[grid](seed, noise, batch_size, hidden_size, float(noise_prob), EPS=EPS,
                        BLOCK_B=block_b, BLOCK_H=block_h)
    return noise


def sample_noise(seq_len: int, batch_size: int, hidden_size: int, noise_prob: float = 1.0,
                 device=None) -> torch.Tensor:
    """Draws a seed as a G2 sweep does, and returns its noise ``(T, B, 2, H)``.

    With the generator of ``device`` in the state it had before a Triton G2 call
    (``torch.get_rng_state`` / ``set_rng_state``), this is exactly that call's noise.
    """
    return noise_from_seed(draw_seed(device), seq_len, batch_size, hidden_size, noise_prob)
