"""How a Triton sweep is laid out on the GPU: the candidate layouts for a shape (a heuristic
under shared-memory and register budgets, nothing timed per call), and the first of them
whose kernels compile and fit an SM. Host code only; the kernels' device helpers are in
``common.py``."""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import triton
from triton.runtime.errors import OutOfResources

from . import common
from .common import next_power_of_2

#: Bytes of shared memory a program may use for its ``h`` tile and weight slice
#: (H100: 227 KB per block; the rest is left to Triton's layout conversions).
SHARED_MEMORY_BUDGET = 192 * 1024

#: Largest ``SweepConfig.register_pressure`` a config should have, and the most it may
#: have when no config is within budget (its kernels then spill registers).
REGISTER_BUDGET = 0.5
REGISTER_LIMIT = 1.0

#: Software-pipeline stages of a chunked product (more would multiply shared memory).
NUM_STAGES = 2

#: Fused multiply-add in the kernels' arithmetic, set explicitly: it is Triton's default up to
#: 3.9, and 3.10 turns the default off, which would change results without a word.
FP_FUSION = True

#: Hidden units per program on a GPU: 16 was the fastest slice for H = 128, 256 and 512 in
#: the team's H100 notes (not yet a file under bench/results/: bench/layouts.py re-times it);
#: narrower only when 16 does not fit.
PREFERRED_BLOCK_H = 16

TRITON_VERSION = tuple(int(part) for part in re.findall(r"\d+", triton.__version__)[:2])

#: The widest float32 reduction chunk. Triton 3.3's float32 backward needs far more registers
#: per chunk than later releases' (sm_90, B = 16, H = 256, 8 warps: 128-wide chunks spilled 92
#: accesses a step at 255 registers, where 3.4 used 255 without a spill in a loop and 3.7.1
#: 128); 64-wide chunks spill nothing there.
FLOAT32_BLOCK_K = 64 if TRITON_VERSION < (3, 4) else None


@functools.lru_cache(maxsize=None)
def narrowest_dot() -> int:
    """The narrowest ``tl.dot`` output this Triton lowers for NVIDIA GPUs: 16 up to 3.4, 1
    since 3.5. The backward's product is ``block_h`` wide, so narrower slices wait for 3.5."""
    try:
        import triton.language as tl
        from triton.backends.compiler import GPUTarget
        from triton.backends.nvidia.compiler import min_dot_size
        return min_dot_size(GPUTarget("cuda", 90, 32))(tl.float16, tl.float16)[1]
    except (ImportError, AttributeError, TypeError):  # a release that moved it: the old bound is safe
        return 16


@dataclass(frozen=True)
class SweepConfig:
    """How a sweep is laid out on the grid ``(programs_h, programs_b)``.

    Attributes:
        block_b: batch rows per program.
        block_h: hidden units per program (its slice of ``W_hh``: ``4 * block_h`` rows).
        hidden_pad: ``H`` rounded up to a power of two (the reduction length).
        programs_h: programs that split the hidden units and meet at the grid barrier.
        programs_b: independent groups of batch rows.
        num_warps: warps per program.
        hidden_on_chip: ``h`` (and ``dz`` in the backward) stays in registers, no
            barrier; needs one program per batch group to hold every hidden unit.
        block_k: reduction chunk (hidden units); ``None`` or ``hidden_pad`` keeps the
            whole ``W_hh`` slice on chip (in shared memory, see ``common.load_resident_slice``),
            smaller re-reads it in chunks each step.
        hidden_align: what the kernels tell the compiler ``H`` is a multiple of
            (:func:`hidden_alignment`).
    """

    block_b: int
    block_h: int
    hidden_pad: int
    programs_h: int
    programs_b: int
    num_warps: int = 4
    hidden_on_chip: bool = False
    block_k: Optional[int] = None
    hidden_align: int = 1

    def __post_init__(self):
        if self.hidden_on_chip and (self.programs_h != 1 or self.block_h != self.hidden_pad or self.chunked):
            raise ValueError("hidden_on_chip needs one program holding every hidden unit and its whole slice")

    @property
    def chunked(self) -> bool:
        return self.block_k is not None and self.block_k != self.hidden_pad

    @property
    def programs(self) -> int:
        return self.programs_h * self.programs_b

    @property
    def grid(self):
        return (self.programs_h, self.programs_b)

    def _operand_elements(self) -> int:
        """Elements of the larger product's operands: ``h (block_b, K) @ slice (K, 4·block_h)``
        in the forward, ``dz (block_b, 4K) @ slice (4K, block_h)`` in the backward."""
        block_k = self.block_k or self.hidden_pad
        forward = self.block_b * block_k + block_k * 4 * self.block_h
        backward = self.block_b * 4 * block_k + 4 * block_k * self.block_h
        return max(forward, backward)

    def shared_memory_bytes(self, element_size: int) -> int:
        """Estimate of what Triton stages in shared memory for the product: the operands,
        or ``NUM_STAGES`` pipeline stages of their chunks."""
        return (NUM_STAGES if self.chunked else 1) * self._operand_elements() * element_size

    def register_pressure(self, element_size: int, vector_loads: bool = True) -> float:
        """Estimated 32-bit registers per thread as a fraction of what a thread may use:
        the product's operands (or chunks) and about sixteen float32 ``(block_b, block_h)``
        tiles (pre-activations, gates, state). Compiled kernels used about twice the
        estimate (ptxas on sm_90), so a config keeps this at most ``REGISTER_BUDGET``.

        ``vector_loads=False`` (``H`` not a multiple of 16, see :func:`vector_loads`) counts
        the operands twice: rows exchanged through memory are then loaded element by element,
        each with its own 64-bit address. Calibrated on sm_90 compiles of both kinds of ``H``
        for every layout ``_gpu_configs`` picks; with one count, e.g. B = 37, H = 100 in
        bfloat16 spilled 184 bytes in the backward, and B = 1, H = 500 336 in the forward.

        A whole slice (not chunked) counts here though it sits in shared memory (see
        ``common.load_resident_slice``): the estimate overstates those layouts, e.g. the
        bfloat16 forward at B = 16, H = 768 with 8 warps estimates 1.07 and compiled to 86
        registers. ``bench/layouts.py`` times them; the estimate stays until a GPU run says
        which is faster."""
        threads = 32 * self.num_warps
        operands = self._operand_elements() * element_size / 4 * (1 if vector_loads else 2)
        registers = operands + 16 * self.block_b * self.block_h
        return registers / threads / thread_registers(self.num_warps)

    def constexprs(self):
        """The layout as the kernels' constexpr arguments."""
        return {"BLOCK_B": self.block_b, "BLOCK_H": self.block_h, "H_PAD": self.hidden_pad,
                "PROGRAMS_H": self.programs_h, "HIDDEN_ON_CHIP": self.hidden_on_chip,
                "BLOCK_K": self.block_k or self.hidden_pad, "H_ALIGN": self.hidden_align}

    def launch_options(self):
        """Keyword arguments of the launch. With more than one program the driver must
        make the whole grid resident at once (cooperative launch), or the barrier could
        wait forever for a program queued behind another kernel's."""
        return {"num_warps": self.num_warps, "num_stages": NUM_STAGES, "launch_cooperative_grid": self.programs > 1,
                "enable_fp_fusion": FP_FUSION}


def thread_registers(num_warps: int) -> int:
    """The registers a thread may use when its program has an SM to itself (64 K per SM on
    sm_80 and sm_90, at most 255 a thread)."""
    return min(255, 65536 // (32 * num_warps))


@functools.lru_cache(maxsize=None)
def multiprocessor_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def sweep_configs(hidden_size: int, batch_size: int, dtype: torch.dtype, device: torch.device):
    """Candidate layouts for a sweep, best first (a heuristic: nothing is timed per call).

    On the interpreter programs run one after another, so the only layout is one
    program for everything (a barrier with more programs would never open). On a GPU
    every candidate fits ``SHARED_MEMORY_BUDGET`` and has at most one program per
    SM; those past ``REGISTER_BUDGET`` come last. An empty list means the persistent
    sweep cannot run this shape.
    """
    hidden_pad = next_power_of_2(hidden_size)
    if device.type != "cuda":
        return [SweepConfig(next_power_of_2(batch_size), hidden_pad, hidden_pad, 1, 1, hidden_on_chip=True,
                            hidden_align=hidden_alignment(hidden_size))]
    return list(_gpu_configs(hidden_size, batch_size, dtype.itemsize, multiprocessor_count(device.index or 0)))


def vector_loads(hidden_size: int) -> bool:
    """Whether the kernels can load rows of ``h`` and ``dz`` in 16-byte vectors: the launch
    specialises an integer argument divisible by 16 (``H``, so every gate's offset ``gate·H``
    and row stride), and Triton vectorises only what it can prove aligned."""
    return hidden_size % 16 == 0


def hidden_alignment(hidden_size: int) -> int:
    """The kernels' ``H_ALIGN``: what they tell the compiler ``H`` is a multiple of where the
    launch does not (it marks 16 itself). A multiple of 8 then loads rows of 16-bit elements
    in 16-byte vectors, of 4 in 8-byte ones (e.g. H = 24, 200, 1000; 100, 500): without it
    they loaded element by element, as the register estimate (:func:`vector_loads`) still
    assumes, to be safe."""
    return 1 if hidden_size % 16 == 0 else math.gcd(hidden_size, 8)


@functools.lru_cache(maxsize=None)
def _gpu_configs(hidden_size, batch_size, element_size, multiprocessors, vector=None):
    """``vector``: overrides :func:`vector_loads` in the register estimate (``bench/layouts.py``
    times what counting ``H_ALIGN`` rows as vectors would pick)."""
    hidden_pad = next_power_of_2(hidden_size)
    vector = vector_loads(hidden_size) if vector is None else vector
    align = hidden_alignment(hidden_size)
    widths = [w for w in (PREFERRED_BLOCK_H, 8, 4, 32, 64, 128, 256) if narrowest_dot() <= w <= hidden_pad]
    if hidden_pad <= 64:
        widths.insert(0, hidden_pad)  # small H: one program, h in registers
    within_budget, over_budget = [], []
    for block_b in dict.fromkeys(min(next_power_of_2(batch_size), rows) for rows in (64, 128, 256)):
        programs_b = triton.cdiv(batch_size, block_b)
        for block_h in dict.fromkeys(widths):
            programs_h = triton.cdiv(hidden_size, block_h)
            if programs_h * programs_b <= multiprocessors:
                config = _fitting_config(block_b, block_h, hidden_pad, programs_h, programs_b, element_size, vector,
                                         align)
                if config is not None:
                    fits = config.register_pressure(element_size, vector) <= REGISTER_BUDGET
                    (within_budget if fits else over_budget).append(config)
    # Past the register budget a kernel spills (slower, still right): better than no sweep
    # when nothing fits, e.g. B = 256 with H = 1024.
    over_budget.sort(key=lambda config: config.register_pressure(element_size, vector))
    return tuple(within_budget + over_budget)


def _fitting_config(block_b, block_h, hidden_pad, programs_h, programs_b, element_size, vector=True, align=1):
    """The widest reduction chunk, then the fewest warps, that fit the budgets; failing the
    register budget, the one with the least register pressure within ``REGISTER_LIMIT``."""
    candidates = []
    widest = FLOAT32_BLOCK_K if element_size == 4 and FLOAT32_BLOCK_K else hidden_pad
    for block_k in dict.fromkeys(k for k in (hidden_pad, 128, 64, 32) if k <= min(hidden_pad, widest)):
        for num_warps in (4, 8, 16):
            config = SweepConfig(block_b, block_h, hidden_pad, programs_h, programs_b, num_warps,
                                 hidden_on_chip=programs_h == 1 and block_h == block_k == hidden_pad,
                                 block_k=block_k, hidden_align=align)
            pressure = config.register_pressure(element_size, vector)
            if config.shared_memory_bytes(element_size) <= SHARED_MEMORY_BUDGET and pressure <= REGISTER_LIMIT:
                if pressure <= REGISTER_BUDGET:
                    return config
                candidates.append(config)
    return min(candidates, key=lambda config: config.register_pressure(element_size, vector), default=None)


class Layout(NamedTuple):
    """The layout a sweep launches with; ``config`` is ``None`` when none can launch, and
    ``reason`` then says why if it is not the plain one (no layout fits the GPU)."""

    config: Optional[object]
    reason: Optional[str] = None


def first_launchable(configs, compile_kernels) -> Layout:
    """The first of ``configs`` whose kernels compile and fit one SM, or why none does.

    ``compile_kernels(config)`` returns the compiled kernels (``JITFunction.warmup``);
    a config is tried only when the ones before it failed, so a working shape compiles
    once. A config that needs more of an SM than there is, or that the compiler rejects,
    makes way for the next: a layout may be one that this Triton cannot lower, though the
    candidates already leave out what it is known not to (:func:`narrowest_dot`).
    When none compiles, the backend declines the call with the first compiler message
    instead of raising. On the interpreter nothing is compiled: the first config.
    """
    if not configs:
        return Layout(None)
    if common.interpreting():
        return Layout(configs[0])
    first_error = None
    for config in configs:
        try:
            kernels = compile_kernels(config)
            for kernel in kernels:
                kernel._init_handles()  # raises OutOfResources past the device's shared memory
        except OutOfResources:
            continue
        except Exception as error:  # noqa: BLE001 - any compiler failure: the next layout may compile
            first_error = first_error or error
            continue
        properties = torch.cuda.get_device_properties(torch.cuda.current_device())
        registers = getattr(properties, "regs_per_multiprocessor", 65536)
        if all(kernel.n_regs * 32 * config.num_warps <= registers for kernel in kernels):
            return Layout(config)
    return Layout(None, first_error and f"the Triton compiler failed: {compiler_message(first_error)}")


def compiler_message(error: BaseException) -> str:
    """The first line that says what went wrong: a Triton ``CompilationError`` opens with the
    source excerpt and keeps its message (or the error it wraps) apart."""
    cause = error
    while cause is not None:
        message = getattr(cause, "error_message", None)
        if message:
            return f"{type(cause).__name__}: {message.strip().splitlines()[0]}"
        cause = cause.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


def new_barrier_counters(config: SweepConfig, device: torch.device) -> torch.Tensor:
    """One zeroed counter per batch group, fresh for every launch (no host sync)."""
    return torch.zeros(config.programs_b, dtype=torch.int32, device=device)
