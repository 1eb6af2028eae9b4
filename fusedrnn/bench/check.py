"""The correctness check that runs before anything is timed: an implementation's outputs,
final states and (when the backward is timed) every gradient must match the float64
reference within SPEC §6's tolerance, on fresh random inputs. G2 gets the same explicit
noise as the reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import torch

from ..precision import relative_error, tolerance
from .grid import Config
from .implementations import Implementation, fusedrnn_backend
from .problem import Problem, random_problem


@dataclass
class Truth:
    """The float64 reference's results for one configuration.

    Attributes:
        problem: the inputs, rounded to the configuration's dtype (the reference saw
            exactly these values).
        grad_seeds: ``∂L/∂output (T, B, H)``, ``∂L/∂h_n``, ``∂L/∂c_n`` in that dtype, or
            ``None`` when gradients are not checked.
        names: what each entry of ``expected`` is.
        expected: output, h_n, c_n, then the gradient of every leaf, float64.
    """

    problem: Problem
    grad_seeds: Optional[List[torch.Tensor]]
    names: List[str]
    expected: List[torch.Tensor]


@dataclass(frozen=True)
class Verdict:
    error: float
    tolerance: float
    worst: str

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance  # NaN and inf never pass


def _evaluate(implementation: Implementation, problem: Problem, grad_seeds) -> List[torch.Tensor]:
    forward, leaves = implementation.prepare(problem)
    outputs = forward()
    results = [t.detach() for t in outputs]
    if grad_seeds is not None:
        grads = torch.autograd.grad(outputs, leaves, grad_seeds, allow_unused=True)
        results += [torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads)]
    return results


def _leaf_names(problem: Problem) -> List[str]:
    names = ["x", "h0", "c0"]
    for key, value in problem.weights.items():
        names += [f"{key}[{i}]" for i in range(len(value))] if isinstance(value, list) else [key]
    return [f"grad {name}" for name in names]


def ground_truth(config: Config, device: torch.device, with_grads: bool, seed: int = 1) -> Truth:
    """Draws fresh inputs for ``config`` and runs the float64 reference on them."""
    problem = random_problem(config, device, dtype=torch.float64, seed=seed, with_noise=True)
    problem = problem.cast(config.torch_dtype)
    grad_seeds = None
    if with_grads:
        generator = torch.Generator(device=device).manual_seed(seed + 1)
        shapes = [problem.x.shape[:2] + problem.h0.shape[1:], problem.h0.shape, problem.h0.shape]
        grad_seeds = [torch.randn(shape, device=device, generator=generator).to(config.torch_dtype)
                      for shape in shapes]
    reference_problem = problem.cast(torch.float64, requires_grad=with_grads)
    reference_seeds = None if grad_seeds is None else [seed.double() for seed in grad_seeds]
    expected = _evaluate(fusedrnn_backend("reference"), reference_problem, reference_seeds)
    names = ["output", "h_n", "c_n"] + (_leaf_names(problem) if with_grads else [])
    return Truth(problem, grad_seeds, names, expected)


def check(implementation: Implementation, truth: Truth) -> Verdict:
    """Runs ``implementation`` on the truth's inputs and returns its worst relative error.

    Raises whatever the implementation raises (``BackendUnavailableError`` when a
    fusedrnn backend declines the call).
    """
    problem = truth.problem.cast(truth.problem.x.dtype, requires_grad=truth.grad_seeds is not None)
    actual = _evaluate(implementation, problem, truth.grad_seeds)
    errors = [relative_error(a, e) for a, e in zip(actual, truth.expected)]
    worst = max(range(len(errors)), key=lambda k: errors[k])
    return Verdict(errors[worst], tolerance(problem.x.dtype, problem.x.device), truth.names[worst])
