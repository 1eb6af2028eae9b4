"""Reference G2-LSTM, the Gumbel-gate LSTM (SPEC §4), and its noise."""
from typing import Optional

import torch
import torch.nn.functional as F

from .lstm import cell_update
from .recurrence import run_steps

#: ``U`` is clamped to ``[EPS, 1 - EPS]`` so that the logistic noise stays finite.
EPS = 1e-6


def sample_noise(seq_len, batch_size, hidden_size, noise_prob=1.0, device=None, generator=None):
    """Draws ``m ⊙ ℓ`` for the i and f gates: ``(T, B, 2, H)`` float32.

    ``ℓ = log U - log(1 - U)`` is logistic noise (the two-class Gumbel-softmax) and
    ``m ~ Bernoulli(noise_prob)`` keeps or drops it per element.
    """
    shape = (seq_len, batch_size, 2, hidden_size)
    u = torch.rand(shape, device=device, generator=generator).clamp_(EPS, 1 - EPS)
    noise = torch.log(u) - torch.log1p(-u)
    if noise_prob < 1.0:
        keep = torch.rand(shape, device=device, generator=generator) < noise_prob
        noise = noise * keep
    return noise


def g2_gate(z, noise, temperature, gate_mode):
    """The input or forget gate: ``σ((z + m ⊙ ℓ) / τ)``, ``σ(z / τ)`` or ``1[z ≥ 0]``."""
    if gate_mode == "hard":
        return (z >= 0).to(z.dtype)
    if gate_mode == "noisy":
        z = z + noise.to(z.dtype)
    return torch.sigmoid(z / temperature)


def g2_lstm(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: Optional[torch.Tensor],
    bias_hh: Optional[torch.Tensor],
    h0: torch.Tensor,
    c0: torch.Tensor,
    *,
    temperature: float,
    gate_mode: str,
    noise: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
    reverse: bool = False,
):
    """G2-LSTM over a whole sequence; shapes as :func:`fusedrnn.reference.lstm`.

    ``noise`` is ``(T, B, 2, H)`` (see :func:`sample_noise`) and is required when
    ``gate_mode == "noisy"``. The noise gets no gradient.
    """
    if gate_mode == "noisy" and noise is None:
        raise ValueError("noise must be given when gate_mode is 'noisy'")
    input_gates = F.linear(x, weight_ih, bias_ih)

    def step(t, h, c):
        z_i, z_f, z_g, z_o = (input_gates[t] + F.linear(h, weight_hh, bias_hh)).chunk(4, dim=-1)
        noise_i, noise_f = (None, None) if noise is None else noise[t].unbind(1)
        i = g2_gate(z_i, noise_i, temperature, gate_mode)
        f = g2_gate(z_f, noise_f, temperature, gate_mode)
        return cell_update(i, f, torch.tanh(z_g), torch.sigmoid(z_o), c)

    return run_steps(step, x.shape[0], h0, c0, lengths, reverse)
