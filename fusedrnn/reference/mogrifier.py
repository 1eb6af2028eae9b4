"""Reference Mogrifier LSTM (SPEC §3)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import torch
import torch.nn.functional as F

from .lstm import gate_preactivations, lstm_step
from .recurrence import run_steps

if TYPE_CHECKING:  # fusedrnn.sweep imports the cells, which import this module
    from ..sweep import RoundWeight


def round_preactivation(v, weight, bias):
    """A round's gate pre-activation ``v Wᵀ + b``. For a low-rank ``W = left @ right`` it is
    ``(v rightᵀ) leftᵀ + b``: two thin products through the ``k``-wide ``v rightᵀ``, never
    the ``(m, n)`` product, in the forward and (by autograd) the backward alike."""
    if isinstance(weight, (tuple, list)):
        left, right = weight
        return F.linear(F.linear(v, right), left, bias)
    return F.linear(v, weight, bias)


def mogrify(x_t, h, mogrify_weights, mogrify_biases):
    """The rounds: odd ``j`` gates ``x`` by ``h``, even ``j`` gates ``h`` by ``x``.

    ``mogrify_weights[j-1]`` is ``Q_j (I, H)`` for odd ``j`` and ``R_j (H, I)`` for even ``j``,
    or its low-rank pair ``(left, right)``. Returns the last ``x`` and ``h``.
    """
    for j, weight in enumerate(mogrify_weights, start=1):
        bias = None if mogrify_biases is None else mogrify_biases[j - 1]
        if j % 2 == 1:  # shapes: fusedrnn.cells.mogrify_round_shape
            x_t = 2 * torch.sigmoid(round_preactivation(h, weight, bias)) * x_t
        else:
            h = 2 * torch.sigmoid(round_preactivation(x_t, weight, bias)) * h
    return x_t, h


def mogrifier_lstm(
    x: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: Optional[torch.Tensor],
    bias_hh: Optional[torch.Tensor],
    h0: torch.Tensor,
    c0: torch.Tensor,
    *,
    mogrify_weights: Sequence[RoundWeight],
    mogrify_biases: Optional[Sequence[torch.Tensor]] = None,
    lengths: Optional[torch.Tensor] = None,
    reverse: bool = False,
):
    """Mogrifier LSTM over a whole sequence; shapes as :func:`fusedrnn.reference.lstm`.

    Only the gate pre-activations see the mogrified ``x`` and ``h``; the carried
    state is the LSTM's own ``h_t``.
    """

    def step(t, h, c):
        x_mog, h_mog = mogrify(x[t], h, mogrify_weights, mogrify_biases)
        return lstm_step(gate_preactivations(x_mog, h_mog, weight_ih, weight_hh, bias_ih, bias_hh), c)

    return run_steps(step, x.shape[0], h0, c0, lengths, reverse)
