"""Random inputs of one configuration, in the form ``fusedrnn.functional`` takes them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from ..noise import sample_noise

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
MOGRIFY_STEPS = 5  # Mogrifier rounds: the paper's tuned models use 4 to 6
G2_TEMPERATURE = 1.0  # G2-LSTM's τ (SPEC §4): the default


@dataclass(frozen=True)
class Config:
    """One problem: a cell on a ``(T, B, I)`` input with hidden size ``H`` (SPEC's letters)."""

    cell: str
    batch_size: int
    seq_len: int
    input_size: int
    hidden_size: int
    dtype: str

    @property
    def shape(self) -> str:
        return f"B{self.batch_size}-T{self.seq_len}-I{self.input_size}-H{self.hidden_size}"


@dataclass
class Problem:
    """One call's tensors: ``x (T, B, I)``, ``h0``/``c0 (B, H)``, the weights as
    ``fusedrnn.functional`` names them (the Mogrifier's ``mogrify_weights``/``mogrify_biases``
    are lists, SPEC §3), and G2's ``noise (T, B, 2, H)`` float32, or ``None`` to draw it."""

    cell: str
    x: torch.Tensor
    h0: torch.Tensor
    c0: torch.Tensor
    weights: Dict[str, object]
    noise: Optional[torch.Tensor] = None

    def weight_list(self) -> List[torch.Tensor]:
        """The weights in a fixed order, lists flattened."""
        return [t for value in self.weights.values() for t in (value if isinstance(value, list) else [value])]

    def leaves(self) -> List[torch.Tensor]:
        return [self.x, self.h0, self.c0] + self.weight_list()

    def cast(self, dtype: torch.dtype, requires_grad: bool = False) -> "Problem":
        """A copy in ``dtype`` whose leaves are fresh (optionally differentiable) tensors."""
        def fresh(t):
            return t.detach().to(dtype).requires_grad_(requires_grad)
        weights = {k: [fresh(t) for t in v] if isinstance(v, list) else fresh(v) for k, v in self.weights.items()}
        return dataclasses.replace(self, x=fresh(self.x), h0=fresh(self.h0), c0=fresh(self.c0), weights=weights)


def random_problem(config: Config, device: torch.device, *, dtype: Optional[torch.dtype] = None,
                   seed: int = 0, with_noise: bool = False) -> Problem:
    """Fresh random inputs (never zeros): weights scaled as the modules initialise them,
    ``x ~ N(0, 1)``, states ``~ N(0, 0.25)``, small nonzero biases; ``dtype`` defaults to the
    configuration's; ``with_noise`` draws G2's noise explicitly."""
    dtype = dtype or DTYPES[config.dtype]
    generator = torch.Generator(device=device).manual_seed(seed)
    batch, steps, inputs, hidden = config.batch_size, config.seq_len, config.input_size, config.hidden_size

    def uniform(*shape, bound):
        return ((torch.rand(shape, device=device, generator=generator) * 2 - 1) * bound).to(dtype)

    def normal(*shape, std):
        return (torch.randn(shape, device=device, generator=generator) * std).to(dtype)

    bound = hidden ** -0.5
    weights = {"weight_ih": uniform(4 * hidden, inputs, bound=bound),
               "weight_hh": uniform(4 * hidden, hidden, bound=bound),
               "bias_ih": uniform(4 * hidden, bound=bound), "bias_hh": uniform(4 * hidden, bound=bound)}
    if config.cell == "mogrifier":
        shapes = [(inputs, hidden) if j % 2 else (hidden, inputs) for j in range(1, MOGRIFY_STEPS + 1)]
        weights["mogrify_weights"] = [normal(rows, cols, std=cols ** -0.5) for rows, cols in shapes]
        weights["mogrify_biases"] = [uniform(rows, bound=0.1) for rows, _ in shapes]
    noise = None
    if with_noise and config.cell == "g2":
        noise = sample_noise(steps, batch, hidden, device=device, generator=generator)
    return Problem(config.cell, normal(steps, batch, inputs, std=1.0), normal(batch, hidden, std=0.5),
                   normal(batch, hidden, std=0.5), weights, noise)
