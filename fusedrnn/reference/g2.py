"""Reference G2-LSTM, the Gumbel-gate LSTM (SPEC §4), fed its noise as a tensor."""
from typing import Optional

import torch
import torch.nn.functional as F

from .lstm import cell_update
from .recurrence import run_steps


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

    ``noise`` is ``(T, B, 2, H)`` (see :func:`fusedrnn.noise.sample_noise`) and is required when
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
