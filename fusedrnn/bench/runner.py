"""The benchmark loop: per configuration, check every implementation against the float64
reference, then time the ones that passed, in each direction.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..dispatch import BackendUnavailableError
from .check import check, ground_truth
from .grid import Config, Timing
from .implementations import BASELINES, Implementation
from .problem import random_problem
from .timing import measure, peak_memory, rotation_count

@dataclass
class Result:
    """One row of the table: an implementation on a configuration in one direction.

    ``status`` is ``"ok"`` (checked, then timed), ``"n/a"`` (not run: ``reason`` says why),
    ``"wrong"`` (failed the correctness check, not timed) or ``"error"`` (a fusedrnn
    backend raised). ``error``/``tolerance`` are the check's worst relative error and bound.
    """

    config: Config
    direction: str
    implementation: str
    kind: str
    status: str
    reason: Optional[str] = None
    median_ms: Optional[float] = None
    repetitions: Optional[int] = None
    peak_memory_bytes: Optional[int] = None
    error: Optional[float] = None
    tolerance: Optional[float] = None
    speedups: Dict[str, float] = field(default_factory=dict)

    @property
    def us_per_step(self) -> Optional[float]:
        return None if self.median_ms is None else self.median_ms * 1e3 / self.config.seq_len

    @property
    def failed(self) -> bool:
        """A fusedrnn backend that gave a wrong answer or crashed: the run must fail."""
        return self.kind == "fusedrnn" and self.status in ("wrong", "error")


def timed_call(implementation: Implementation, config: Config, device: torch.device, direction: str):
    """``fn()`` running one call, rotating through input sets that would otherwise stay cached."""
    backward = direction == "fwdbwd"
    first = random_problem(config, device, seed=100)
    count = rotation_count(first.nbytes(), device)
    calls = []
    for k in range(count):
        problem = first if k == 0 else random_problem(config, device, seed=100 + k)
        forward, leaves = implementation.prepare(problem.cast(problem.x.dtype, requires_grad=backward))
        seeds = None
        if backward:
            state = (config.batch_size, config.hidden_size)
            shapes = [(config.seq_len,) + state, state, state]  # ∂L/∂output, ∂L/∂h_n, ∂L/∂c_n
            seeds = [torch.randn(shape, device=device, dtype=config.torch_dtype) for shape in shapes]
        calls.append((forward, leaves, seeds))
    turns = itertools.cycle(calls)

    def fn():
        forward, leaves, seeds = next(turns)
        if seeds is None:
            with torch.no_grad():
                forward()
        else:
            torch.autograd.grad(forward(), leaves, seeds, allow_unused=True)

    return fn


def _attempt(implementation: Implementation, action: Callable[[], object]):
    """``(value, None)``, or ``(None, (status, reason))`` when ``action`` could not run."""
    try:
        return action(), None
    except BackendUnavailableError as declined:
        return None, ("n/a", str(declined))
    except torch.cuda.OutOfMemoryError:
        return None, ("n/a", "out of memory")
    except Exception as crash:  # a baseline's or competitor's limits are not a fusedrnn failure
        return None, ("error" if implementation.kind == "fusedrnn" else "n/a", f"{type(crash).__name__}: {crash}")


def _time(implementation: Implementation, config: Config, direction: str, timing: Timing, device):
    fn = timed_call(implementation, config, device, direction)
    return peak_memory(fn, device), measure(fn, timing, device)


def _rows(implementation: Implementation, config: Config, truth, directions: Sequence[str], timing: Timing,
          device: torch.device) -> List[Result]:
    """Checks one implementation on one configuration, then times it in each direction."""
    reason = implementation.unsupported(config, device)
    if reason is not None:
        verdict, refusal = None, ("n/a", reason)
    else:
        verdict, refusal = _attempt(implementation, lambda: check(implementation, truth))
    if verdict is not None and not verdict.passed:
        refusal = ("wrong", f"{verdict.worst}: relative error {verdict.error:.3g} > {verdict.tolerance:.3g}")
    rows = []
    for direction in directions:
        row = Result(config, direction, implementation.name, implementation.kind, "ok")
        if verdict is not None:
            row.error, row.tolerance = verdict.error, verdict.tolerance
        failure = refusal
        if failure is None:
            timed, failure = _attempt(implementation, lambda: _time(implementation, config, direction, timing, device))
            if timed is not None:
                row.peak_memory_bytes, measured = timed
                row.median_ms, row.repetitions = measured.median_ms, measured.repetitions
        if failure is not None:
            row.status, row.reason = failure
        rows.append(row)
    return rows


def run_config(config: Config, implementations: Sequence[Implementation], directions: Sequence[str],
               timing: Timing, device: torch.device,
               on_implementation: Callable[[Implementation], None] = lambda implementation: None) -> List[Result]:
    """Checks, then times, every implementation on one configuration; calls
    ``on_implementation`` as each one starts."""
    try:
        truth = ground_truth(config, device, with_grads="fwdbwd" in directions)
    except torch.cuda.OutOfMemoryError:
        truth = None
    results = []
    for implementation in implementations:
        on_implementation(implementation)
        if truth is None:
            results += [Result(config, direction, implementation.name, implementation.kind, "n/a",
                               "the float64 reference ran out of memory: nothing to check against")
                        for direction in directions]
        else:
            results += _rows(implementation, config, truth, directions, timing, device)
    truth = None  # frees the reference's tensors before the cache is emptied
    if device.type == "cuda":
        torch.cuda.empty_cache()
    _add_speedups(results)
    return results


def _add_speedups(results: List[Result]) -> None:
    """``baseline time / time`` for every baseline timed on the same configuration and direction."""
    for result in results:
        if result.median_ms is None:
            continue
        for baseline in results:
            if (baseline.implementation in BASELINES and baseline.direction == result.direction
                    and baseline.median_ms is not None):
                result.speedups[baseline.implementation] = baseline.median_ms / result.median_ms


def run(configs: Sequence[Config], implementations: Sequence[Implementation], directions: Sequence[str],
        timing: Timing, device: torch.device,
        progress: Callable[[Config, Implementation], None] = lambda config, implementation: None) -> List[Result]:
    """Every configuration in turn; ``progress(config, implementation)`` is called as each
    implementation starts on a configuration."""
    results = []
    for config in configs:
        results += run_config(config, implementations, directions, timing, device,
                              lambda implementation: progress(config, implementation))
    return results
