"""What a user runs without fusedrnn: ``torch.nn.LSTM``, and the eager Python loop of each
cell written by hand (one step at a time, nothing hoisted out of the loop, in the input's dtype).

Each ``*_forward`` takes a :class:`~fusedrnn.bench.problem.Problem`'s tensors and returns
``output (T, B, H), h_n (B, H), c_n (B, H)``.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from ..noise import sample_noise
from ..reference.g2 import g2_gate
from ..reference.lstm import cell_update, gate_preactivations, lstm_step
from ..reference.mogrifier import mogrify
from .problem import G2_TEMPERATURE, Problem

Outputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _copy_lstm_weights(module: nn.Module, problem: Problem, suffix: str) -> List[nn.Parameter]:
    """Loads the problem's LSTM weights into ``module`` (``nn.LSTM`` or ``nn.LSTMCell``);
    returns its parameters in the problem's leaf order."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    parameters = [getattr(module, name + suffix) for name in names]
    with torch.no_grad():
        for parameter, name in zip(parameters, names):
            parameter.copy_(problem.weights[name])
            parameter.requires_grad_(problem.x.requires_grad)
    return parameters


def torch_lstm(problem: Problem):
    """``torch.nn.LSTM`` (cuDNN on CUDA) holding the problem's weights.

    Returns ``forward() -> outputs`` and the tensors it differentiates, in leaf order.
    """
    x = problem.x
    module = nn.LSTM(x.shape[2], problem.h0.shape[1], device=x.device, dtype=x.dtype)
    parameters = _copy_lstm_weights(module, problem, "_l0")
    module.flatten_parameters()

    def forward() -> Outputs:
        output, (h_n, c_n) = module(x, (problem.h0.unsqueeze(0), problem.c0.unsqueeze(0)))
        return output, h_n[0], c_n[0]

    return forward, [x, problem.h0, problem.c0] + parameters


def _loop(step, x, h, c) -> Outputs:
    outputs = []
    for t in range(x.shape[0]):
        h, c = step(t, h, c)
        outputs.append(h)
    return torch.stack(outputs), h, c


def eager_lstm(problem: Problem):
    """``torch.nn.LSTMCell`` in a Python loop; returns ``forward`` and its leaves."""
    x = problem.x
    cell = nn.LSTMCell(x.shape[2], problem.h0.shape[1], device=x.device, dtype=x.dtype)
    parameters = _copy_lstm_weights(cell, problem, "")

    def forward() -> Outputs:
        return _loop(lambda t, h, c: cell(x[t], (h, c)), x, problem.h0, problem.c0)

    return forward, [x, problem.h0, problem.c0] + parameters


def eager_mogrifier(problem: Problem):
    """The Mogrifier step in a Python loop; returns ``forward`` and its leaves."""
    w = problem.weights
    lstm_weights = (w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"])

    def step(t, h, c):
        x_mog, h_mog = mogrify(problem.x[t], h, w["mogrify_weights"], w["mogrify_biases"])
        return lstm_step(gate_preactivations(x_mog, h_mog, *lstm_weights), c)

    return (lambda: _loop(step, problem.x, problem.h0, problem.c0)), problem.leaves()


def eager_g2(problem: Problem):
    """The noisy G2-LSTM step in a Python loop, drawing its noise per step unless the
    problem carries it; returns ``forward`` and its leaves."""
    w = problem.weights
    lstm_weights = (w["weight_ih"], w["weight_hh"], w["bias_ih"], w["bias_hh"])
    batch_size, hidden_size = problem.h0.shape

    def step(t, h, c):
        z_i, z_f, z_g, z_o = gate_preactivations(problem.x[t], h, *lstm_weights).chunk(4, dim=-1)
        if problem.noise is None:
            noise = sample_noise(1, batch_size, hidden_size, device=h.device)[0]
        else:
            noise = problem.noise[t]
        i = g2_gate(z_i, noise[:, 0], G2_TEMPERATURE, "noisy")
        f = g2_gate(z_f, noise[:, 1], G2_TEMPERATURE, "noisy")
        return cell_update(i, f, torch.tanh(z_g), torch.sigmoid(z_o), c)

    return (lambda: _loop(step, problem.x, problem.h0, problem.c0)), problem.leaves()


EAGER = {"lstm": eager_lstm, "mogrifier": eager_mogrifier, "g2": eager_g2}
