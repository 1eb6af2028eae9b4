"""Everything the benchmark times, behind one interface: the fusedrnn backends (through the
public functional API), the baselines a user would otherwise run, and optional competitors.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from .. import dispatch
from ..functional import FUNCTIONS
from ..sweep import CELLS
from . import baselines, competitors
from .grid import Config
from .problem import Problem

Outputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
#: ``prepare(problem) -> (forward() -> (output, h_n, c_n), leaves)``: ``leaves`` are the
#: tensors whose gradients count, in the order of ``problem.leaves()``.
Prepare = Callable[[Problem], Tuple[Callable[[], Outputs], List[torch.Tensor]]]

#: The speed-up columns: what a user runs today.
BASELINES = ("nn.LSTM", "eager", "reference")


@dataclass(frozen=True)
class Implementation:
    """One timed implementation; ``kind`` is ``"fusedrnn"``, ``"baseline"`` or ``"competitor"``."""

    name: str
    kind: str
    prepare: Prepare
    cells: Tuple[str, ...] = CELLS
    device_types: Tuple[str, ...] = ("cpu", "cuda")
    unavailable: Callable[[], Optional[str]] = lambda: None

    def unsupported(self, config: Config, device: torch.device) -> Optional[str]:
        """Why this implementation cannot run ``config`` on ``device`` at all, or ``None``.

        A fusedrnn backend may still decline a call it is given (``BackendUnavailableError``).
        """
        if config.cell not in self.cells:
            return f"{self.name} has no {config.cell} cell"
        if device.type not in self.device_types:
            return f"{self.name} needs {' or '.join(self.device_types)}"
        return self.unavailable()


def _backend_unavailable(name: str) -> Optional[str]:
    if name == "auto":
        return None
    reason = dispatch.unavailable_reason(name)
    if reason is None and name == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
        reason = "TRITON_INTERPRET=1 runs Triton's interpreter, a correctness tool: not timed"
    return reason


def _fused_backend(name: str, problem: Problem):
    function = FUNCTIONS[problem.cell]

    def forward() -> Outputs:
        output, (h_n, c_n) = function(problem.x, h0=problem.h0, c0=problem.c0, **problem.weights,
                                      **problem.call_options(), backend=name)
        return output, h_n, c_n

    return forward, problem.leaves()


def _eager(problem: Problem):
    return baselines.EAGER[problem.cell](problem)


def fusedrnn_backend(name: str) -> Implementation:
    return Implementation(name, "fusedrnn", functools.partial(_fused_backend, name),
                          unavailable=functools.partial(_backend_unavailable, name))


OTHERS = {
    "nn.LSTM": Implementation("nn.LSTM", "baseline", baselines.torch_lstm, cells=("lstm",)),
    "eager": Implementation("eager", "baseline", _eager),
    "flashrnn": Implementation("flashrnn", "competitor", competitors.flashrnn_lstm, cells=("lstm",),
                               device_types=("cuda",), unavailable=competitors.flashrnn_unavailable),
}
#: ``"auto"`` times what a user gets by default: the backend it picks per call.
NAMES = ("auto",) + dispatch.BACKENDS + tuple(OTHERS)


def implementations(names: Optional[Sequence[str]] = None) -> List[Implementation]:
    """The named implementations, or by default ``"auto"``, every available fusedrnn backend
    of its own, the baselines, and flashrnn when it is installed."""
    if names is None:
        # "torch" is nn.LSTM's own kernel, timed as the nn.LSTM baseline already.
        names = ["auto"] + [name for name in dispatch.available_backends() if name != "torch"] + ["nn.LSTM", "eager"]
        names += ["flashrnn"] if competitors.flashrnn_unavailable() is None else []
    chosen = []
    for name in names:
        if name not in NAMES:
            raise ValueError(f"backends must be among {NAMES}, got {name!r}")
        chosen.append(OTHERS[name] if name in OTHERS else fusedrnn_backend(name))
    return chosen
