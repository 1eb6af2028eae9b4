"""Gate values of a layer, for inspecting a trained model (e.g. the G2-LSTM paper's
histograms of input- and forget-gate values)."""
import torch

from .g2 import g2_gate
from .lstm import gate_preactivations


def input_forget_gates(x, h_prev, weight_ih, weight_hh, bias_ih=None, bias_hh=None, *, cell="lstm",
                       temperature=1.0, gate_mode="soft"):
    """The input and forget gates ``i, f`` of the steps with inputs ``x (..., I)`` and
    previous hidden states ``h_prev (..., H)``.

    For a whole sequence pass ``x (T, B, I)`` and the layer's own states shifted by one
    step, ``h_prev = [h_0, output[0], ..., output[T-2]]``: no time loop is needed.

    Args:
        cell: ``"lstm"`` (``σ(z)``) or ``"g2"`` (:func:`~fusedrnn.reference.g2.g2_gate`
            with ``temperature``, in ``gate_mode`` ``"soft"`` or ``"hard"``; noisy gates
            are a random draw, not a property of the weights, so they are not offered).
    Returns:
        ``i, f``, each ``(..., H)``.
    """
    if cell not in ("lstm", "g2"):
        raise ValueError(f"cell must be 'lstm' or 'g2', got {cell!r}")
    if gate_mode not in ("soft", "hard"):
        raise ValueError(f"gate_mode must be 'soft' or 'hard', got {gate_mode!r}")
    z = gate_preactivations(x, h_prev, weight_ih, weight_hh, bias_ih, bias_hh)
    z_i, z_f, _, _ = z.chunk(4, dim=-1)
    if cell == "lstm":
        return torch.sigmoid(z_i), torch.sigmoid(z_f)
    return g2_gate(z_i, None, temperature, gate_mode), g2_gate(z_f, None, temperature, gate_mode)
