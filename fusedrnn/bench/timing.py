"""Timing done one way for every implementation: warm-up, many repetitions, the median.

CUDA: ``triton.testing.do_bench`` (CUDA events, L2 flushed before every repetition).
CPU: ``time.perf_counter`` around each call. On both, a caller rotates through several
input sets when one set would fit in the last-level cache (see :func:`rotation_count`).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from .grid import Timing

#: Most input sets rotated through; beyond this the extra memory buys nothing measurable.
MAX_ROTATION = 8
_FALLBACK_CPU_CACHE = 32 * 2 ** 20


@dataclass(frozen=True)
class Measurement:
    median_ms: float
    repetitions: int


def cache_bytes(device: torch.device) -> int:
    """The last-level cache: the GPU's L2, or the CPU's largest cache level."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).L2_cache_size
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes, default=_FALLBACK_CPU_CACHE)


def rotation_count(set_bytes: int, device: torch.device) -> int:
    """How many input sets to rotate through so that they do not all sit in cache."""
    return max(1, min(MAX_ROTATION, math.ceil(2 * cache_bytes(device) / max(set_bytes, 1))))


def measure(fn: Callable[[], None], timing: Timing, device: torch.device) -> Measurement:
    """The median time of ``fn()`` in milliseconds, after a warm-up."""
    if device.type == "cuda":
        return _measure_cuda(fn, timing)
    return _measure_cpu(fn, timing)


def _measure_cpu(fn, timing: Timing) -> Measurement:
    start = time.perf_counter()
    while True:
        call_start = time.perf_counter()
        fn()
        last = time.perf_counter() - call_start
        if call_start + last - start >= timing.warmup_s:
            break
    repetitions = min(timing.max_reps, max(timing.min_reps, int(timing.budget_s / max(last, 1e-9))))
    times = []
    for _ in range(repetitions):
        call_start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - call_start)
    return Measurement(statistics.median(times) * 1e3, repetitions)


def _measure_cuda(fn, timing: Timing) -> Measurement:
    from triton.testing import do_bench

    # One timed call sizes the run so that even slow implementations get min_reps repetitions.
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    estimate_ms = max(start.elapsed_time(end), 1e-3)
    rep_ms = min(max(timing.budget_s * 1e3, timing.min_reps * estimate_ms), timing.max_reps * estimate_ms)
    median_ms = do_bench(fn, warmup=timing.warmup_s * 1e3, rep=rep_ms, return_mode="median")
    return Measurement(median_ms, max(1, int(rep_ms / estimate_ms)))


def peak_memory(fn: Callable[[], None], device: torch.device) -> Optional[int]:
    """Bytes ``fn()`` allocates at its peak beyond what was allocated before it (CUDA only;
    ``None`` on CPU, where the allocator gives no honest per-call figure)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
