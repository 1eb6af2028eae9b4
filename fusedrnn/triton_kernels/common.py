"""Machinery shared by the Triton persistent sweeps (one file per cell beside it).

A sweep is one kernel launch that loops over all time steps. Hidden units are split
over ``programs_h`` programs that each keep their slice of ``W_hh`` on chip; every
step they exchange ``h`` through global memory and meet at a grid barrier. When one
program holds all of ``W_hh`` (``programs_h == 1``), ``h`` stays in registers and no
barrier is needed; programs then only split the batch (``programs_b``).

Gate layout inside a program: a product with the ``4 * BLOCK_H`` columns of a slice
puts unit ``j``'s four gates next to each other (column ``4 j + gate``), so that
:func:`split_gates` separates them without moving data between threads.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

#: dtypes the Triton sweeps compute in (SPEC §6).
DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: Bytes of shared memory a program may use for its ``h`` tile and weight slice
#: (H100: 227 KB per block; the rest is left to Triton's layout conversions).
SHARED_MEMORY_BUDGET = 192 * 1024

#: Hidden units per program on a GPU: 16 was the fastest slice on our H100 for
#: H = 128, 256 and 512 (PERF_NOTES.md); narrower only when 16 does not fit.
PREFERRED_BLOCK_H = 16


def interpreting() -> bool:
    """Whether Triton runs kernels on the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unavailable_reason() -> Optional[str]:
    """Why no Triton sweep can run on this machine, or ``None``."""
    if not torch.cuda.is_available() and not interpreting():
        return "needs a CUDA device or the Triton CPU interpreter (TRITON_INTERPRET=1)"
    return None


def device_unsupported(device: torch.device, dtype: torch.dtype, explicit: bool) -> Optional[str]:
    """Why a sweep on ``device`` in ``dtype`` cannot run here, or ``None``.

    CPU tensors run only under the interpreter and only when the Triton backend is
    named explicitly: ``"auto"`` never picks the (slow) interpreter.
    """
    if dtype not in DTYPES:
        return f"dtype {dtype} is not supported (float32, bfloat16, float16)"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and interpreting():
        return None if explicit else "CPU tensors run on the Triton interpreter only when named explicitly"
    return f"device {device} is not supported (CUDA, or CPU under TRITON_INTERPRET=1)"


def next_power_of_2(n: int, at_least: int = 16) -> int:
    """``tl.arange`` lengths are powers of two; 16 is the smallest ``tl.dot`` operand size."""
    return max(at_least, triton.next_power_of_2(n))


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
    """

    block_b: int
    block_h: int
    hidden_pad: int
    programs_h: int
    programs_b: int
    num_warps: int = 4
    hidden_on_chip: bool = False

    def __post_init__(self):
        if self.hidden_on_chip and (self.programs_h != 1 or self.block_h != self.hidden_pad):
            raise ValueError("hidden_on_chip needs one program holding every hidden unit")

    @property
    def programs(self) -> int:
        return self.programs_h * self.programs_b

    @property
    def grid(self):
        return (self.programs_h, self.programs_b)

    def shared_memory_bytes(self, element_size: int) -> int:
        """Estimate of what Triton stages in shared memory: the ``h`` tile and the slice."""
        return (self.block_b * self.hidden_pad + self.hidden_pad * 4 * self.block_h) * element_size

    def constexprs(self):
        """The layout as the kernels' constexpr arguments."""
        return {"BLOCK_B": self.block_b, "BLOCK_H": self.block_h, "H_PAD": self.hidden_pad,
                "PROGRAMS_H": self.programs_h, "HIDDEN_ON_CHIP": self.hidden_on_chip}

    def launch_options(self):
        """Keyword arguments of the launch. With more than one program the driver must
        make the whole grid resident at once (cooperative launch), or the barrier could
        wait forever for a program queued behind another kernel's."""
        return {"num_warps": self.num_warps, "launch_cooperative_grid": self.programs > 1}


@functools.lru_cache(maxsize=None)
def _multiprocessor_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def sweep_configs(hidden_size: int, batch_size: int, dtype: torch.dtype, device: torch.device):
    """Candidate layouts for a sweep, best first (a heuristic: nothing is timed per call).

    On the interpreter programs run one after another, so the only layout is one
    program for everything (a barrier with more programs would never open). On a GPU
    every candidate fits ``SHARED_MEMORY_BUDGET`` and has at most one program per
    SM; an empty list means the persistent sweep cannot run this shape.
    """
    hidden_pad = next_power_of_2(hidden_size)
    if device.type != "cuda":
        return [SweepConfig(next_power_of_2(batch_size), hidden_pad, hidden_pad, 1, 1, hidden_on_chip=True)]
    return list(_gpu_configs(hidden_size, batch_size, dtype.itemsize, _multiprocessor_count(device.index or 0)))


@functools.lru_cache(maxsize=None)
def _gpu_configs(hidden_size, batch_size, element_size, multiprocessors):
    hidden_pad = next_power_of_2(hidden_size)
    configs = []
    block_b = min(next_power_of_2(batch_size), 64)
    programs_b = triton.cdiv(batch_size, block_b)
    widths = [w for w in (PREFERRED_BLOCK_H, 8, 4, 32, 64, 128, 256) if w <= hidden_pad]
    if hidden_pad <= 64:
        widths.insert(0, hidden_pad)  # small H: one program, h in registers
    for block_h in dict.fromkeys(widths):
        programs_h = triton.cdiv(hidden_size, block_h)
        num_warps = 8 if block_b * block_h * 4 >= 4096 else 4
        config = SweepConfig(block_b, block_h, hidden_pad, programs_h, programs_b, num_warps,
                             hidden_on_chip=programs_h == 1 and block_h == hidden_pad)
        if config.programs <= multiprocessors and config.shared_memory_bytes(element_size) <= SHARED_MEMORY_BUDGET:
            configs.append(config)
    return tuple(configs)


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s ``input_precision``: TF32 for float32 only where cuDNN would use it."""
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 and not interpreting():
        return "tf32"
    return "ieee"


def dot_options(dtype: torch.dtype):
    """Constexpr arguments of :func:`dot` for operands of ``dtype``."""
    # The interpreter multiplies bfloat16 tiles as raw integers (numpy has no bfloat16);
    # float32 holds every bfloat16 exactly, so upcasting there gives the same products.
    upcast = interpreting() and dtype == torch.bfloat16
    return {"INPUT_PRECISION": dot_precision(dtype), "UPCAST_DOT": upcast}


def new_barrier_counters(config: SweepConfig, device: torch.device) -> torch.Tensor:
    """One zeroed counter per batch group, fresh for every launch (no host sync)."""
    return torch.zeros(config.programs_b, dtype=torch.int32, device=device)


def input_guard(fn):
    """Makes tensor arguments contiguous and runs ``fn`` on their CUDA device."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = [a.contiguous() if isinstance(a, torch.Tensor) else a for a in args]
        kwargs = {k: (v.contiguous() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        if device is not None and device.type == "cuda":
            with torch.cuda.device(device):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # 2σ(2x) - 1 stays finite for any x (exp overflows to inf, not NaN).
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def dot(a, b, INPUT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """``a @ b`` accumulated in float32 (arguments from :func:`dot_options`)."""
    if UPCAST_DOT:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=INPUT_PRECISION)


@triton.jit
def grid_barrier(counter, target):
    """Waits until ``target`` arrivals are counted; each program adds one per call.

    Everything this program stored before is visible to the others after it.
    """
    tl.debug_barrier()
    tl.atomic_add(counter, 1, sem="release", scope="gpu")
    while tl.atomic_add(counter, 0, sem="acquire", scope="gpu") < target:
        pass
    tl.debug_barrier()


@triton.jit
def split_gates(z, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """``(BLOCK_B, 4 * BLOCK_H)`` with column ``4 j + gate`` -> four ``(BLOCK_B, BLOCK_H)``."""
    z = tl.reshape(z, (BLOCK_B, BLOCK_H, 2, 2))
    z_ig, z_fo = tl.split(z)
    z_i, z_g = tl.split(z_ig)
    z_f, z_o = tl.split(z_fo)
    return z_i, z_f, z_g, z_o


@triton.jit
def join_gates(z_i, z_f, z_g, z_o, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Inverse of :func:`split_gates`."""
    z = tl.join(tl.join(z_i, z_g), tl.join(z_f, z_o))
    return tl.reshape(z, (BLOCK_B, 4 * BLOCK_H))

