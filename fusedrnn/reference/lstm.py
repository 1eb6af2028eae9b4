"""Reference LSTM (SPEC §2), and the gate math the other reference cells reuse."""
from typing import Optional

import torch
import torch.nn.functional as F

from .recurrence import run_steps


def gate_preactivations(x_t, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """``z = x_t W_ihᵀ + b_ih + h W_hhᵀ + b_hh``, ``(B, 4H)`` in gate order i, f, g, o."""
    return F.linear(x_t, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)


def cell_update(i, f, g, o, c_prev):
    """``c_t = f ⊙ c_{t-1} + i ⊙ g``, ``h_t = o ⊙ tanh(c_t)``; returns ``h_t, c_t``."""
    c = f * c_prev + i * g
    return o * torch.tanh(c), c


def lstm_step(z, c_prev):
    """One LSTM step from its pre-activations ``z (B, 4H)``; returns ``h_t, c_t``."""
    z_i, z_f, z_g, z_o = z.chunk(4, dim=-1)
    return cell_update(torch.sigmoid(z_i), torch.sigmoid(z_f), torch.tanh(z_g), torch.sigmoid(z_o), c_prev)


def lstm(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: Optional[torch.Tensor],
    bias_hh: Optional[torch.Tensor],
    h0: torch.Tensor,
    c0: torch.Tensor,
    *,
    lengths: Optional[torch.Tensor] = None,
    reverse: bool = False,
):
    """LSTM over a whole sequence, arguments in :func:`fusedrnn.functional.lstm`'s order:
    ``x (T, B, I)``, ``weight_ih (4H, I)``, ``weight_hh (4H, H)``, biases ``(4H,)`` or
    ``None``, ``h0, c0 (B, H)``.

    Returns ``output (T, B, H), h_n (B, H), c_n (B, H)``.
    """
    input_gates = F.linear(x, weight_ih, bias_ih)

    def step(t, h, c):
        return lstm_step(input_gates[t] + F.linear(h, weight_hh, bias_hh), c)

    return run_steps(step, x.shape[0], h0, c0, lengths, reverse)
