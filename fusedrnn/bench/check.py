"""The correctness gate: outputs, final states and (when the backward is timed) every
gradient against the float64 reference, as SPEC §6's relative error, on fresh random
inputs; G2 gets the reference's explicit noise.

It takes a plain callable ``run(problem) -> ((output, h_n, c_n), leaves)``: ``leaves`` are
the tensors whose gradients count, in the order of ``problem.leaves()``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional

import torch

from ..functional import FUNCTIONS
from ..precision import relative_error, tolerance
from .problem import DTYPES, G2_TEMPERATURE, Config, Problem, random_problem


@dataclass
class Truth:
    """The float64 reference on ``problem`` (inputs rounded to the configuration's dtype):
    ``expected`` is output, h_n, c_n, then every leaf's gradient for ``grad_seeds`` (∂L/∂output,
    ∂L/∂h_n, ∂L/∂c_n in that dtype; ``None``: no gradients); ``names`` says what each is."""

    problem: Problem
    grad_seeds: Optional[List[torch.Tensor]]
    names: List[str]
    expected: List[torch.Tensor]

    def forward_only(self) -> "Truth":
        return dataclasses.replace(self, grad_seeds=None, names=self.names[:3], expected=self.expected[:3])


@dataclass(frozen=True)
class Verdict:
    error: float
    tolerance: float
    worst: str

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance  # NaN and inf never pass


def functional_call(problem: Problem, backend: str, x, h0, c0, noise):
    """``fusedrnn.functional``'s cell on the problem's weights: ``output, h_n, c_n``."""
    options = {"gate_mode": "noisy", "temperature": G2_TEMPERATURE, "noise": noise} if problem.cell == "g2" else {}
    output, (h_n, c_n) = FUNCTIONS[problem.cell](x, h0=h0, c0=c0, **problem.weights, **options, backend=backend)
    return output, h_n, c_n


def _evaluate(run, problem: Problem, grad_seeds) -> List[torch.Tensor]:
    with torch.set_grad_enabled(grad_seeds is not None):
        outputs, leaves = run(problem)
    results = [t.detach() for t in outputs]
    if grad_seeds is not None:
        grads = torch.autograd.grad(outputs, leaves, grad_seeds, allow_unused=True)
        results += [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]
    return results


def ground_truth(config: Config, device: torch.device, seed: int = 1) -> Truth:
    """Fresh inputs for ``config`` and the float64 reference on them, gradients included."""
    problem = random_problem(config, device, dtype=torch.float64, seed=seed, with_noise=True).cast(DTYPES[config.dtype])
    generator = torch.Generator(device=device).manual_seed(seed + 1)
    shapes = [problem.x.shape[:2] + problem.h0.shape[1:], problem.h0.shape, problem.h0.shape]
    grad_seeds = [torch.randn(shape, device=device, generator=generator).to(problem.x.dtype) for shape in shapes]
    expected = _evaluate(lambda p: (functional_call(p, "reference", p.x, p.h0, p.c0, p.noise), p.leaves()),
                         problem.cast(torch.float64, requires_grad=True), [s.double() for s in grad_seeds])
    names = ["x", "h0", "c0"] + [f"{k}[{i}]" if isinstance(v, list) else k
                                 for k, v in problem.weights.items() for i in range(len(v) if isinstance(v, list) else 1)]
    return Truth(problem, grad_seeds, ["output", "h_n", "c_n"] + [f"grad {n}" for n in names], expected)


def check(run, truth: Truth) -> Verdict:
    """``run`` on the truth's inputs (under ``no_grad`` without gradients): its worst relative
    error. Raises whatever ``run`` raises."""
    problem = truth.problem.cast(truth.problem.x.dtype, requires_grad=truth.grad_seeds is not None)
    errors = [relative_error(a, e) for a, e in zip(_evaluate(run, problem, truth.grad_seeds), truth.expected)]
    worst = max(range(len(errors)), key=errors.__getitem__)
    return Verdict(errors[worst], tolerance(problem.x.dtype, problem.x.device), truth.names[worst])
