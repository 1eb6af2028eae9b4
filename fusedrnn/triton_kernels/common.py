"""Device helpers shared by the Triton persistent sweeps (one file per cell beside it), and
what a launch needs besides its layout (``layout.py`` chooses that).

A sweep is one kernel launch that loops over all time steps. Hidden units are split
over ``programs_h`` programs that each keep their slice of ``W_hh`` on chip; every
step they exchange ``h`` through global memory and meet at a grid barrier. When one
program holds all of ``W_hh`` (``programs_h == 1``), ``h`` stays in registers and no
barrier is needed; programs then only split the batch (``programs_b``).

Gate layout inside a program: a product with the ``4 * BLOCK_H`` columns of a slice
puts unit ``j``'s four gates next to each other (column ``4 j + gate``), so that
:func:`split_gates` separates them without moving data between threads. The backward
reduces over ``dz`` and the ``W_hh`` rows in their natural, gate-major order instead
(index ``gate·H + k``), so that the rows it reads from global memory are contiguous.
"""
from __future__ import annotations

import functools
import os
from typing import Optional

import torch
import triton
import triton.language as tl

#: dtypes the Triton sweeps compute in (SPEC §6).
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


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
def concat_gates(z_i, z_f, z_g, z_o, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Four ``(BLOCK_B, BLOCK_H)`` -> ``(BLOCK_B, 4 * BLOCK_H)`` with column ``gate·BLOCK_H + j``:
    gate-major like the ``4H`` axis of ``dz`` and ``W_hh``, the order of the backward's reduction."""
    z = tl.join(tl.join(z_i, z_g), tl.join(z_f, z_o))  # (BLOCK_B, BLOCK_H, 2, 2): [b, j, p, q] is gate 2p + q
    z = tl.permute(z, (0, 2, 3, 1))
    return tl.reshape(z, (BLOCK_B, 4 * BLOCK_H))


@triton.jit
def _reduction_offsets(o_r, k0, H, GATES: tl.constexpr, BLOCK: tl.constexpr):
    """Offsets in a row of ``h`` (``GATES == 1``) or ``dz`` (``GATES == 4``) of the reduction
    indices ``o_r`` of a chunk of ``BLOCK`` units from unit ``k0``, and which are in range.

    ``GATES == 4`` reduces in the natural order of ``dz`` and of the ``W_hh`` rows: index
    ``gate·BLOCK + kk`` is unit ``k = k0 + kk`` of that gate, at ``gate·H + k``. Each gate's
    units are then contiguous in memory, so neighbouring lanes load neighbouring elements
    (the order ``4k + gate`` put them ``H`` elements apart, one memory sector each).
    """
    if GATES == 1:
        unit = k0 + o_r
        return unit, unit < H
    else:
        unit = k0 + o_r % BLOCK
        return (o_r // BLOCK) * H + unit, unit < H


@triton.jit
def load_resident_slice(p_w, m_w, GATES: tl.constexpr, H, BLOCK_K: tl.constexpr, H_PAD: tl.constexpr):
    """A program's whole weight slice ``(GATES·H_PAD, N)``, loaded once for the sweep, when the
    reduction is not split (``BLOCK_K == H_PAD``); else a placeholder that
    :func:`exchanged_product` ignores (Triton 3.3-3.6 cannot return ``None`` from one branch).
    Triton (3.3 to 3.9, sm_90) stores a ``tl.dot`` operand that the time loop does not change
    in shared memory before the loop (``ttg.local_alloc``), and each step's product reads it
    from there: the slice costs shared memory, not registers.

    ``p_w`` ``(1, N)`` points at reduction index 0 of each column: ``W_hh`` rows for the
    forward (``GATES == 1``, the reduction runs along a row), ``W_hh`` columns for the
    backward (``GATES == 4``, the reduction runs down the ``4H`` rows, row ``gate·H_PAD + k``
    of the slice holding row ``gate·H + k`` of ``W_hh``).
    """
    if BLOCK_K == H_PAD:
        off, m_r = _reduction_offsets(tl.arange(0, GATES * H_PAD), 0, H, GATES, H_PAD)
        w_off = off * H if GATES == 4 else off
        return tl.load(p_w + w_off[:, None], mask=m_r[:, None] & m_w, other=0.0)
    else:
        return tl.zeros((1, 1), dtype=p_w.dtype.element_ty)


@triton.jit
def exchanged_product(p_rows, m_rows, p_w, m_w, b_w, GATES: tl.constexpr, H, BLOCK_M: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, H_PAD: tl.constexpr,
                      INPUT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """``v @ W_slice`` ``(BLOCK_M, BLOCK_N)`` float32, ``v`` read from global rows ``p_rows``
    ``(BLOCK_M, 1)`` that other programs wrote (``h_{t-1}`` or ``dz``).

    With ``BLOCK_K == H_PAD`` the slice is ``b_w`` (in shared memory, :func:`load_resident_slice`);
    otherwise the reduction runs in chunks of ``BLOCK_K`` units (``GATES·BLOCK_K`` indices)
    and re-reads the slice from L1/L2 every step.
    """
    if BLOCK_K == H_PAD:
        off, m_r = _reduction_offsets(tl.arange(0, GATES * H_PAD), 0, H, GATES, H_PAD)
        b_v = tl.load(p_rows + off[None, :], mask=m_rows & m_r[None, :], other=0.0, cache_modifier=".cg")
        return dot(b_v, b_w, INPUT_PRECISION, UPCAST_DOT)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k0 in range(0, H, BLOCK_K):
            off, m_r = _reduction_offsets(tl.arange(0, GATES * BLOCK_K), k0, H, GATES, BLOCK_K)
            w_off = off * H if GATES == 4 else off
            b_v = tl.load(p_rows + off[None, :], mask=m_rows & m_r[None, :], other=0.0, cache_modifier=".cg")
            b_wk = tl.load(p_w + w_off[:, None], mask=m_r[:, None] & m_w, other=0.0)
            acc += dot(b_v, b_wk, INPUT_PRECISION, UPCAST_DOT)
        return acc
