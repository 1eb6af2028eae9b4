"""Random inputs of one configuration, in the form ``fusedrnn.functional`` takes them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from ..noise import sample_noise
from .grid import Config

#: Mogrifier rounds: the paper's tuned models use 4 to 6.
MOGRIFY_STEPS = 5
#: G2-LSTM's temperature τ (SPEC §4): the default.
G2_TEMPERATURE = 1.0


@dataclass
class Problem:
    """One call's tensors.

    Attributes:
        cell: ``"lstm"``, ``"mogrifier"`` or ``"g2"``.
        x: ``(T, B, I)``; h0, c0: ``(B, H)``.
        weights: ``weight_ih (4H, I)``, ``weight_hh (4H, H)``, ``bias_ih``/``bias_hh (4H,)``
            and, for the Mogrifier, ``mogrify_weights``/``mogrify_biases`` (lists, SPEC §3).
        noise: G2's ``(T, B, 2, H)`` float32 gate noise for a correctness check, or
            ``None`` to let each implementation draw its own (SPEC §4).
    """

    cell: str
    x: torch.Tensor
    h0: torch.Tensor
    c0: torch.Tensor
    weights: Dict[str, object]
    noise: Optional[torch.Tensor] = None

    def leaves(self) -> List[torch.Tensor]:
        """Every input tensor in a fixed order: x, h0, c0, then the weights."""
        tensors = [self.x, self.h0, self.c0]
        for value in self.weights.values():
            tensors += list(value) if isinstance(value, (list, tuple)) else [value]
        return tensors

    def call_options(self) -> Dict[str, object]:
        """The cell's keyword arguments besides tensors: G2 trains with noisy gates."""
        return {"gate_mode": "noisy", "temperature": G2_TEMPERATURE, "noise": self.noise} if self.cell == "g2" else {}

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Problem":
        """A copy with ``fn`` applied to every leaf (the noise stays as it is)."""
        weights = {key: [fn(t) for t in value] if isinstance(value, list) else fn(value)
                   for key, value in self.weights.items()}
        return dataclasses.replace(self, x=fn(self.x), h0=fn(self.h0), c0=fn(self.c0), weights=weights)

    def cast(self, dtype: torch.dtype, requires_grad: bool = False) -> "Problem":
        """A copy in ``dtype`` whose leaves are fresh (optionally differentiable) tensors."""
        return self.map(lambda t: t.detach().to(dtype).requires_grad_(requires_grad))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.leaves())


def random_problem(config: Config, device: torch.device, *, dtype: Optional[torch.dtype] = None,
                   seed: int = 0, with_noise: bool = False) -> Problem:
    """Fresh random inputs (never zeros): weights scaled as the modules initialise them,
    ``x ~ N(0, 1)``, states ``~ N(0, 0.25)``, small nonzero biases.

    ``dtype`` defaults to the configuration's; ``with_noise`` draws G2's noise explicitly.
    """
    dtype = dtype or config.torch_dtype
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
