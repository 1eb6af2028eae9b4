"""What the benchmark measures: configurations, and the presets that choose them.

Shape letters as in docs/SPEC.md: B batch, T time steps, I input size, H hidden size.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

from ..sweep import CELLS

DIRECTIONS = ("fwd", "fwdbwd")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

Shape = Tuple[int, int, int, int]  # (B, T, I, H)


@dataclass(frozen=True)
class Config:
    """One benchmarked problem: a cell on a ``(T, B, I)`` input with hidden size ``H``."""

    cell: str
    batch_size: int
    seq_len: int
    input_size: int
    hidden_size: int
    dtype: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def label(self) -> str:
        return (f"{self.cell} B{self.batch_size}-T{self.seq_len}-I{self.input_size}-H{self.hidden_size} "
                f"{self.dtype}")


@dataclass(frozen=True)
class Timing:
    """How long each measurement runs (the GPU path hands these to ``do_bench`` in ms)."""

    warmup_s: float
    budget_s: float
    min_reps: int
    max_reps: int


@dataclass(frozen=True)
class Preset:
    """A grid and its timing; ``cpu_threads`` (``None``: torch's default) is set on CPU."""

    shapes: Tuple[Shape, ...]
    dtypes: Tuple[str, ...]
    timing: Timing
    cpu_threads: Optional[int] = None


def cartesian_shapes(batch_sizes: Iterable[int], seq_lens: Iterable[int], hidden_sizes: Iterable[int],
                     input_size: int = 0) -> Tuple[Shape, ...]:
    """Every ``(B, T, I, H)`` of the product; ``I = H`` unless ``input_size`` is given."""
    return tuple((b, t, input_size or h, h) for b, t, h in itertools.product(batch_sizes, seq_lens, hidden_sizes))


#: The LSTM issue's GPU grid, I = H.
LSTM_ISSUE_SHAPES: Tuple[Shape, ...] = (
    (16, 512, 256, 256), (64, 256, 512, 512), (64, 256, 1024, 1024),
    (256, 256, 1024, 1024), (16, 1024, 768, 768), (8, 1024, 128, 128),
)

PRESETS = {
    "gpu": Preset(LSTM_ISSUE_SHAPES, ("float16", "bfloat16", "float32"),
                  Timing(warmup_s=0.025, budget_s=0.1, min_reps=10, max_reps=1000)),
    # A few minutes on a 2-core CPU; B and H vary so that the chart has lines.
    "cpu": Preset(cartesian_shapes((4, 16, 64), (64,), (64, 128, 256)), ("float32",),
                  Timing(warmup_s=0.05, budget_s=0.4, min_reps=5, max_reps=200)),
    # Well under a minute on a 2-core CPU: keeps the command from rotting in CI. One thread,
    # because two OpenMP threads on a busy 2-core machine stall each other (10-100x slower).
    "quick": Preset(((4, 16, 32, 32), (16, 16, 32, 32), (16, 16, 64, 64)), ("float32",),
                    Timing(warmup_s=0.01, budget_s=0.05, min_reps=3, max_reps=50), cpu_threads=1),
}


def default_preset(device: torch.device) -> str:
    """The LSTM issue's grid on CUDA, small sizes elsewhere."""
    return "gpu" if device.type == "cuda" else "cpu"


def parse_shape(text: str) -> Shape:
    """``"16x512x256x256"`` (B x T x I x H) as a tuple of four positive ints."""
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"a shape must be BxTxIxH with four positive integers, got {text!r}")
    return tuple(int(part) for part in parts)


def configs(cells: Sequence[str], shapes: Sequence[Shape], dtypes: Sequence[str]) -> List[Config]:
    """Every configuration of the product, cell-major (the order of the table)."""
    for cell in cells:
        if cell not in CELLS:
            raise ValueError(f"cells must be among {CELLS}, got {cell!r}")
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise ValueError(f"dtypes must be among {tuple(DTYPES)}, got {dtype!r}")
    return [Config(cell, b, t, i, h, dtype)
            for cell in cells for (b, t, i, h) in shapes for dtype in dtypes]
