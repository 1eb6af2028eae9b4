"""The time loop shared by the reference cells."""
from typing import Callable, Optional, Tuple

import torch

Step = Callable[[int, torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def run_steps(
    step: Step,
    seq_len: int,
    h0: torch.Tensor,
    c0: torch.Tensor,
    lengths: Optional[torch.Tensor],
    reverse: bool,
):
    """Runs ``step(t, h, c) -> (h, c)`` over ``t`` in time order (or reversed).

    A row ``b`` only takes steps ``t < lengths[b]``; after that its output is zero and
    its state frozen, so in reverse it starts from ``h0, c0`` at ``t = lengths[b] - 1``.

    Returns ``output (T, B, H), h_n (B, H), c_n (B, H)``.
    """
    h, c = h0, c0
    outputs = [None] * seq_len
    for t in (reversed(range(seq_len)) if reverse else range(seq_len)):
        h_next, c_next = step(t, h, c)
        if lengths is None:
            h, c = h_next, c_next
            outputs[t] = h
        else:
            active = (t < lengths).unsqueeze(1)
            h = torch.where(active, h_next, h)
            c = torch.where(active, c_next, c)
            outputs[t] = torch.where(active, h_next, torch.zeros_like(h_next))
    return torch.stack(outputs), h, c
