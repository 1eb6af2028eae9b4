"""What the benchmark times: fusedrnn's backends, and the baselines as users write them.

A maker takes a :class:`fusedrnn.testing.Problem` and returns ``(run, weights)``:
``run(x (T, B, I), h (B, H), c (B, H), noise) -> (output (T, B, H), h_n, c_n)`` on the problem's
weights, ``weights`` the tensors it differentiates (``problem.weight_list()``'s order);
``noise`` is G2's ``(T, B, 2, H)`` gate noise, or ``None`` to draw it."""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import dispatch, functional
from ..cells import CELLS, MOGRIFY_STEPS, TEMPERATURE, mogrify_round_shape
from ..noise import EPS
from ..testing import Problem

LSTM_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class MogrifierCell(nn.LSTMCell):
    """A Mogrifier step as the paper's and popular code writes it: ``nn.Linear`` rounds
    gating x and h in turn, then the LSTM step (SPEC §3)."""

    def __init__(self, input_size, hidden_size, **factory):
        super().__init__(input_size, hidden_size, **factory)
        shapes = [mogrify_round_shape(j, input_size, hidden_size) for j in range(1, MOGRIFY_STEPS.default + 1)]
        self.rounds = nn.ModuleList(nn.Linear(cols, rows, **factory) for rows, cols in shapes)

    def forward(self, x, state):
        h, c = state
        for j, linear in enumerate(self.rounds, 1):
            if j % 2:
                x = 2 * torch.sigmoid(linear(h)) * x
            else:
                h = 2 * torch.sigmoid(linear(x)) * h
        return super().forward(x, (h, c))


class G2Cell(nn.LSTMCell):
    """A G2-LSTM step as users write it: ``nn.LSTMCell``'s weights, logistic noise ``(B, 2, H)``
    on the input and forget gates, sigmoids with temperature (SPEC §4)."""

    def forward(self, x, state, noise):
        h, c = state
        z = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        z_i, z_f, z_g, z_o = z.chunk(4, dim=-1)
        i, f = torch.sigmoid((torch.stack((z_i, z_f), 1) + noise.to(z.dtype)) / TEMPERATURE.default).unbind(1)
        c = f * c + i * torch.tanh(z_g)
        return torch.sigmoid(z_o) * torch.tanh(c), c


STEP_MODULES = {"lstm": nn.LSTMCell, "mogrifier": MogrifierCell, "g2": G2Cell}


def _load(parameters: List[nn.Parameter], problem: Problem) -> List[nn.Parameter]:
    with torch.no_grad():
        for parameter, value in zip(parameters, problem.weight_list()):
            parameter.copy_(value).requires_grad_(problem.x.requires_grad)
    return parameters


def users_noise(batch_size: int, hidden_size: int, device) -> torch.Tensor:
    """One step of G2's gate noise ``(B, 2, H)`` as users draw it: logistic noise ``logit(U)`` from
    torch's generator (``noise_prob`` 1, the benchmark's). Not :func:`fusedrnn.sample_noise`: its
    counter-based Philox, there so that every backend draws the same noise, takes over 300 ATen
    operations a draw in plain PyTorch, which no user's loop pays per step."""
    return torch.logit(torch.rand(batch_size, 2, hidden_size, device=device), eps=EPS)


def _step_loop(step, noisy: bool, x, h, c, noise):
    """``step`` once per time step; G2's noise, given or freshly drawn, is drawn outside
    the step, so a compiled step is one graph for the check and the timing."""
    outputs = []
    for t in range(x.shape[0]):
        if noisy:
            h, c = step(x[t], (h, c), users_noise(*h.shape, h.device) if noise is None else noise[t])
        else:
            h, c = step(x[t], (h, c))
        outputs.append(h)
    return torch.stack(outputs), h, c


def eager(problem: Problem, compile: bool = False):
    """The cell's step module in a Python loop, one call per step (``nn.LSTMCell`` for the
    LSTM); with ``compile``, the step under ``torch.compile``'s defaults, compiled afresh
    (compiling the whole loop would unroll all T steps into one graph)."""
    factory = {"device": problem.x.device, "dtype": problem.x.dtype}
    cell = STEP_MODULES[problem.cell](problem.x.shape[2], problem.h0.shape[1], **factory)
    parameters = [getattr(cell, name) for name in LSTM_WEIGHTS]  # problem.weight_list()'s order
    if problem.cell == "mogrifier":
        parameters += [linear.weight for linear in cell.rounds] + [linear.bias for linear in cell.rounds]
    if compile:
        torch.compiler.reset()  # no graphs or recompile budget carried over from another case
        cell = torch.compile(cell)
    return functools.partial(_step_loop, cell, problem.cell == "g2"), _load(parameters, problem)


def torch_lstm(problem: Problem):
    """``torch.nn.LSTM`` (cuDNN on CUDA), flattened after the weights are copied in: as fast as
    PyTorch makes it. Not in bfloat16, which ``flatten_parameters`` leaves as it is (cuDNN's
    ``is_acceptable`` takes float16, float32 and float64), so cuDNN copies the weights into one
    buffer at every call, with a warning, as it does for every user of a bfloat16 ``nn.LSTM``."""
    module = nn.LSTM(problem.x.shape[2], problem.h0.shape[1], device=problem.x.device, dtype=problem.x.dtype)
    parameters = _load([getattr(module, name + "_l0") for name in LSTM_WEIGHTS], problem)
    module.flatten_parameters()

    def run(x, h, c, noise):
        output, (h_n, c_n) = module(x, (h.unsqueeze(0), c.unsqueeze(0)))
        return output, h_n[0], c_n[0]

    return run, parameters


def flashrnn_lstm(problem: Problem, kernel: str = "cuda_fused"):
    """NX-AI's flashrnn LSTM (its fused CUDA kernel by default). It takes the input projection
    precomputed, ``Wx (B, T, gates, heads, D)`` (timed with it, as inside every other implementation),
    ``R (gates, heads, D_out, D_in)`` (one head: ``R[g, 0]`` is gate ``g``'s block of ``weight_hh``), one bias."""
    from flashrnn import flashrnn

    w, hidden = problem.weights, problem.h0.shape[1]

    def run(x, h0, c0, noise):
        steps, batch, _ = x.shape
        wx = F.linear(x.transpose(0, 1), w["weight_ih"]).reshape(batch, steps, 4, 1, hidden)
        h, last = flashrnn(wx, w["weight_hh"].view(4, 1, hidden, hidden), (w["bias_ih"] + w["bias_hh"]).view(4, 1, hidden),
                           states=torch.stack((h0, c0)).view(2, batch, 1, 1, hidden), function="lstm",
                           backend=kernel, dtype=str(x.dtype).removeprefix("torch."))
        # h: (states, B, T, heads, D); state 0 is h, state 1 is c
        return (h[0].reshape(batch, steps, hidden).transpose(0, 1), last[0].reshape(batch, hidden),
                last[1].reshape(batch, hidden))

    return run, problem.weight_list()


def fusedrnn_call(problem: Problem, backend: str):
    """``fusedrnn.functional``'s cell on ``backend`` as a user's code calls it: the LSTM's weights
    by position, the rest by keyword (binding every argument by keyword through
    ``functools.partial`` cost about 2 µs more a call, and at T = 1 the host time is the cost)."""
    function, noisy = functional.FUNCTIONS[problem.cell], "noise" in problem.options
    weights = [problem.weights.get(name) for name in LSTM_WEIGHTS]
    keywords = {**{name: value for name, value in problem.weights.items() if name not in LSTM_WEIGHTS},
                **{name: value for name, value in problem.options.items() if name != "noise"}, "backend": backend}
    if problem.lengths is not None or problem.reverse:  # else left at their defaults, as users do
        keywords.update(lengths=problem.lengths, reverse=problem.reverse)

    def run(x, h0, c0, noise):
        output, (h_n, c_n) = (function(x, *weights, h0, c0, noise=noise, **keywords) if noisy
                              else function(x, *weights, h0, c0, **keywords))
        return output, h_n, c_n

    return run, problem.weight_list()


@dataclasses.dataclass(frozen=True)
class Implementation:
    """One timed implementation; only ``kind == "fusedrnn"`` is gated by the check."""

    name: str
    kind: str
    make: Callable[[Problem], Tuple[Callable, List[torch.Tensor]]]
    cells: Tuple[str, ...] = tuple(CELLS)
    device_types: Tuple[str, ...] = ("cpu", "cuda")


BASELINES = {
    "nn.LSTM": Implementation("nn.LSTM", "baseline", torch_lstm, cells=("lstm",)),
    "eager": Implementation("eager", "baseline", eager),
    "compiled": Implementation("compiled", "baseline", functools.partial(eager, compile=True)),
    "flashrnn": Implementation("flashrnn", "competitor", flashrnn_lstm, cells=("lstm",), device_types=("cuda",)),
}
#: Where a fusedrnn backend runs at all (the Triton interpreter on a CPU is a correctness tool).
BACKEND_DEVICES = {"triton": ("cuda",), "cuda": ("cuda",), "cpu": ("cpu",)}
NAMES = ("auto",) + dispatch.BACKENDS + tuple(BASELINES)
#: ``auto``, fusedrnn's own backends (not ``torch``, nn.LSTM's kernel; not ``reference``: the
#: eager loop is the slow baseline), then the baselines.
DEFAULT_NAMES = tuple(n for n in NAMES if n not in ("torch", "reference"))


def implementation(name: str) -> Implementation:
    if name in BASELINES:
        return BASELINES[name]
    if name not in NAMES:
        raise ValueError(f"backends must be among {NAMES}, got {name!r}")
    return Implementation(name, "fusedrnn", functools.partial(fusedrnn_call, backend=name),
                          device_types=BACKEND_DEVICES.get(name, ("cpu", "cuda")))


def unavailable(name: str) -> Optional[str]:
    """Why ``name`` cannot run on this machine at all, or ``None``."""
    if name == "flashrnn":
        return None if importlib.util.find_spec("flashrnn") else "flashrnn is not installed"
    return None if name in BASELINES or name == "auto" else dispatch.unavailable_reason(name)
