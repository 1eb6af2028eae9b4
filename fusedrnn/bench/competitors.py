"""Optional competitors, timed when their package is importable (none is a dependency)."""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from .problem import Problem

FLASHRNN_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


def flashrnn_unavailable():
    """Why flashrnn cannot be timed here, or ``None``."""
    return None if importlib.util.find_spec("flashrnn") is not None else "flashrnn is not installed"


def flashrnn_lstm(problem: Problem, kernel: str = "cuda_fused"):
    """NX-AI's flashrnn LSTM (its fused CUDA kernel by default) on the problem's weights.

    flashrnn takes the input projection precomputed, ``Wx (B, T, gates, heads, D)``, the
    recurrent matrix as ``R (gates, heads, D_out, D_in)`` and one bias; with one head,
    ``R[g, 0]`` is gate ``g``'s block of ``weight_hh``. The projection is timed with it,
    as it is inside every other implementation. Returns ``forward`` and its leaves.
    """
    from flashrnn import flashrnn

    x, w = problem.x, problem.weights
    steps, batch, _ = x.shape
    hidden = problem.h0.shape[1]
    dtype = FLASHRNN_DTYPES[x.dtype]

    def forward():
        wx = F.linear(x.transpose(0, 1), w["weight_ih"]).reshape(batch, steps, 4, 1, hidden)
        recurrent = w["weight_hh"].view(4, 1, hidden, hidden)
        bias = (w["bias_ih"] + w["bias_hh"]).view(4, 1, hidden)
        states = torch.stack((problem.h0, problem.c0)).view(2, batch, 1, 1, hidden)
        h, last = flashrnn(wx, recurrent, bias, states=states, function="lstm", backend=kernel, dtype=dtype)
        # h: (states, B, T, heads, D); state 0 is h, state 1 is c
        return h[0].reshape(batch, steps, hidden).transpose(0, 1), last[0].reshape(batch, hidden), \
            last[1].reshape(batch, hidden)

    return forward, problem.leaves()
