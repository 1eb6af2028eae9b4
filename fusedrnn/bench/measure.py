"""One case, checked and timed: the one code path of the command and the pytest-benchmark suite.

Directions: ``fwd`` (forward under ``no_grad``), ``fwdbwd`` (forward, then the gradients of
the input, the initial state and every weight), ``decode`` (forward under ``no_grad`` as T
calls of one step each in a Python loop, the state fed back: the per-call host cost).
Timing: ``triton.testing.do_bench`` on CUDA (CUDA events, L2 flushed before every
repetition), ``torch.utils.benchmark.Timer.blocked_autorange`` on CPU; both the median.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Dict

import torch

from ..dispatch import BackendUnavailableError
from ..testing import Truth, check, ground_truth, random_problem
from .implementations import Implementation

DIRECTIONS = ("fwd", "fwdbwd", "decode")
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
CUDA_WARMUP_MS, CUDA_REP_MS, CPU_MIN_RUN_S = 25, 100, 0.2


@dataclasses.dataclass(frozen=True)
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


def truth_for(config: Config, device: torch.device, seed: int = 1) -> Truth:
    """Fresh inputs of ``config`` (the cell's default options: G2 noisy, 5 Mogrifier rounds)
    and the float64 reference on them, gradients included (``fusedrnn.testing``)."""
    torch.manual_seed(seed)
    shape = (config.seq_len, config.batch_size, config.input_size, config.hidden_size)
    return ground_truth(random_problem(config.cell, shape), DTYPES[config.dtype], device)


def _one_step_calls(run):
    def forward(x, h, c, noise):
        outputs = []
        for t in range(x.shape[0]):
            output, h, c = run(x[t:t + 1], h, c, None if noise is None else noise[t:t + 1])
            outputs.append(output)
        return torch.cat(outputs), h, c
    return forward


def cost(fn, device: torch.device):
    """``(median ms, repetitions, peak MiB)`` of ``fn()``. The peak, on CUDA (else ``None``), is what
    one call holds beyond the tensors before it, as the allocator counts them (on the host)."""
    if device.type == "cuda":
        from triton.testing import do_bench
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
        times = do_bench(fn, warmup=CUDA_WARMUP_MS, rep=CUDA_REP_MS, return_mode="all")
        return statistics.median(times), len(times), peak
    from torch.utils.benchmark import Timer
    measured = Timer("fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=CPU_MIN_RUN_S)
    return measured.median * 1e3, len(measured.times) * measured.number_per_run, None


def measure(impl: Implementation, config: Config, truth: Truth, direction: str) -> Dict[str, object]:
    """Checks ``impl`` on the truth's inputs in ``direction`` (the first call, compiles included,
    timed apart as ``first_call_s``), then times it on the same inputs. Returns a JSON row: the
    config's fields, ``direction``, ``implementation``, ``kind``, ``status`` (``ok``: timed;
    ``wrong``: a fusedrnn backend beyond tolerance, not timed; ``error``: it raised; ``n/a``:
    declined, out of memory, or a baseline that raised) and ``reason``, ``median_ms``,
    ``us_per_step``, ``repetitions``, ``peak_mib`` (:func:`cost`), ``error``/``tolerance`` (against float64)."""
    row = {**dataclasses.asdict(config), "direction": direction, "implementation": impl.name, "kind": impl.kind,
           "status": "ok", "reason": None, **dict.fromkeys(("median_ms", "us_per_step", "repetitions", "peak_mib"))}
    built = {}

    def run(problem):
        forward, weights = impl.make(problem)
        forward = _one_step_calls(forward) if direction == "decode" else forward
        built.update(forward=forward, problem=problem, leaves=[problem.x, problem.h0, problem.c0] + list(weights))
        return forward(problem.x, problem.h0, problem.c0, problem.noise), built["leaves"]

    try:
        start = time.perf_counter()
        verdict = check(run, truth if direction == "fwdbwd" else truth.forward_only())
        if truth.device.type == "cuda":
            torch.cuda.synchronize()
        row.update(first_call_s=time.perf_counter() - start, error=verdict.error, tolerance=verdict.tolerance)
        if impl.kind == "fusedrnn" and not verdict.passed:
            return {**row, "status": "wrong", "reason": str(verdict)}
        p = built["problem"]

        def call():  # G2 draws fresh noise, as in training
            if direction == "fwdbwd":
                torch.autograd.grad(built["forward"](p.x, p.h0, p.c0, None), built["leaves"], truth.grad_seeds,
                                    allow_unused=True)
            else:
                with torch.no_grad():
                    built["forward"](p.x, p.h0, p.c0, None)

        row["median_ms"], row["repetitions"], row["peak_mib"] = cost(call, p.x.device)
        row["us_per_step"] = row["median_ms"] * 1e3 / config.seq_len
    except BackendUnavailableError as declined:
        row.update(status="n/a", reason=str(declined))
    except torch.cuda.OutOfMemoryError:
        row.update(status="n/a", reason="out of memory")
    except Exception as crash:  # a baseline's limits are not a fusedrnn failure
        row.update(status="error" if impl.kind == "fusedrnn" else "n/a", reason=f"{type(crash).__name__}: {crash}")
    return row
