"""The ``"torch"`` backend: the plain LSTM through PyTorch's own kernel, the one ``nn.LSTM``
calls (``torch._VF.lstm``: oneDNN on the CPU, cuDNN on a GPU).

A drop-in must never be slower than what it replaces: for the plain LSTM, ``"auto"`` tries
this backend first and it takes the calls that :func:`faster` says PyTorch's kernel runs
faster than fusedrnn's own backends, a rule measured on a grid of calls (not a timing per
call). Named explicitly, it runs every plain LSTM call it can.
"""
from __future__ import annotations

import functools
import re
import warnings
from typing import NamedTuple, Optional

import torch
from torch import _VF
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .. import dispatch
from ..sweep import Sweep

# fusedrnn's modules keep each weight a parameter of its own, not a view of the one buffer cuDNN
# takes (what nn.LSTM.flatten_parameters makes, and never in bfloat16), so cuDNN copies them into
# one at every call and warns, telling an nn.LSTM user to flatten: nothing a fusedrnn user can do.
# The copy is one pass over the weights: 16 MB at H 1024 in float16, some 8 µs at an H200's copy
# bandwidth (not timed apart).
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk",
                        category=UserWarning, module=re.escape(__name__) + r"\Z")

#: Short float32 calls stay on fusedrnn's backends: under ``SMALL_CALL`` elements (``T·B·H``), or
#: of at most ``SHORT_CALL_STEPS`` steps over at most ``SHORT_CALL_ROWS`` rows. oneDNN's steps
#: are the faster, but each call pays a fixed cost that grows with ``H²`` (at T = 1, B = 1,
#: H = 1024: 6-9 ms forward, 46-61 ms forward+backward, against 2.3 and 6-7 ms for the ``cpu``
#: backend). The bounds are conservative: a drop-in must never be slower than ``nn.LSTM``, so a
#: call goes to ``cpu`` only where ``cpu`` won the runs of `bench/results/cpu-auto/` (T 1 to 100,
#: B 1 to 256, H 32 to 1024, 1 and 2 threads; one outlier row aside, which its README shows is
#: one; ``bench/dispatch_rule.py``).
SMALL_CALL = 1024
SHORT_CALL_STEPS = 2
SHORT_CALL_ROWS = 32
#: So do calls of one row over at most ``ONE_ROW_STEPS`` steps of a layer at least
#: ``ONE_ROW_WIDTH`` wide, since the ``cpu`` backend's products go through its weights in
#: panels (``bench/results/cpu-auto/after-panels/``: 0.11-0.75× oneDNN's time on the rows of 1 and 4
#: steps there, 1 and 2 threads; at 16 steps H = 1024 was even at one thread).
ONE_ROW_STEPS = 8
ONE_ROW_WIDTH = 512


def _onednn_float32(sweep: Sweep) -> bool:
    steps, rows, width = sweep.seq_len, sweep.batch_size, sweep.hidden_size  # each a property: read once
    short = steps <= SHORT_CALL_STEPS and rows <= SHORT_CALL_ROWS
    small = steps * rows * width < SMALL_CALL
    one_wide_row = rows == 1 and steps <= ONE_ROW_STEPS and width >= ONE_ROW_WIDTH
    return not (short or small or one_wide_row)


#: bfloat16 on a CPU with bfloat16 dot products (AVX512-BF16; `bench/results/cpu-auto/bf16/`):
#: oneDNN multiplies in bfloat16 there, the ``cpu`` backend in float32, so oneDNN's forward is
#: about twice as fast and takes every call that no backward follows (the few one-step rows the
#: ``cpu`` backend won were not won at both thread counts). Its backward is the slower for one
#: row of a layer at least ``BF16_ONE_ROW_WIDTH`` wide, and for at most ``BF16_WIDE_ROWS`` rows
#: of a layer at least ``BF16_WIDE`` wide: those training calls stay on ``cpu`` (0.23-0.98×
#: oneDNN's time there, on a grid and held-out calls timed twice at 1 and at 2 threads; at 16
#: rows, H = 1024, the two were even). CPUs without those instructions were not measured:
#: ``cpu`` runs all their calls, as before.
BF16_ONE_ROW_WIDTH = 128
BF16_WIDE = 768
BF16_WIDE_ROWS = 4


@functools.lru_cache(maxsize=None)
def cpu_multiplies_bfloat16() -> bool:
    """Whether this CPU has the bfloat16 dot products the bfloat16 rule was measured with."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # not a public API: may go
    return probe is not None and bool(probe())


def _onednn_bfloat16(sweep: Sweep) -> bool:
    if not cpu_multiplies_bfloat16():
        return False
    if not sweep.needs_backward:
        return True
    one_row = sweep.batch_size == 1 and sweep.hidden_size >= BF16_ONE_ROW_WIDTH
    few_wide_rows = sweep.batch_size <= BF16_WIDE_ROWS and sweep.hidden_size >= BF16_WIDE
    return not (one_row or few_wide_rows)


#: On a GPU, from the first run on an H200 (`bench/results/h200/`: cuDNN 9.19, TF32 allowed, the
#: Triton sweeps on triton 3.6; ratios of one run). cuDNN's float16 is the faster at 10 of the 12
#: points of the benchmark grid (forward+backward 1.07-2.62× faster; the Triton forward wins two
#: by 9 % and 13 %), so it takes every float16 call. Its bfloat16 is 1.6-10× slower up to B = 64,
#: faster at B = 256 (0.88× and 0.84× its time); it takes calls of more than ``CUDA_BF16_ROWS``
#: rows (not measured between: by log-linear interpolation the two cross near B = 180). In
#: float32 (TF32 on both sides, as allowed) it takes forward calls of at least
#: ``CUDA_F32_FORWARD_ELEMENTS`` = B·H (the Triton forward 1.19× and 1.97× its time at 64 × 1024
#: and 256 × 1024, 0.32-0.96× below) and training calls but those of at most
#: ``CUDA_F32_NARROW_ROWS`` rows at least ``CUDA_F32_WIDE`` wide (0.32× and 0.81× its time there;
#: 1.07-2.77× at B ≥ 64, 2.09× at B 8, H 128, where cuDNN's own float32 is fast).
#: And every call of at most ``CUDA_SHORT_CALL_STEPS`` steps: a one-step module call costs
#: 228 µs of host time on the Triton path against 79 through nn.LSTM's (H 512,
#: `bench/results/h200/overhead.log`), which the Triton sweep's faster steps repay only over
#: about that many steps (bfloat16, B 16, H 256: 2.1 against 15.7 µs a step).
CUDA_SHORT_CALL_STEPS = 16
CUDA_BF16_ROWS = 128
CUDA_F32_FORWARD_ELEMENTS = 64 * 1024
CUDA_F32_NARROW_ROWS = 16
CUDA_F32_WIDE = 256


def _cudnn_float16(sweep: Sweep) -> bool:
    return True


def _cudnn_bfloat16(sweep: Sweep) -> bool:
    return sweep.seq_len <= CUDA_SHORT_CALL_STEPS or sweep.batch_size > CUDA_BF16_ROWS


def _cudnn_float32(sweep: Sweep) -> bool:
    rows, width = sweep.batch_size, sweep.hidden_size
    if sweep.seq_len <= CUDA_SHORT_CALL_STEPS:
        return True
    if sweep.needs_backward:
        return not (rows <= CUDA_F32_NARROW_ROWS and width >= CUDA_F32_WIDE)
    return rows * width >= CUDA_F32_FORWARD_ELEMENTS


#: ``(device type, dtype)`` where PyTorch's kernel beats fusedrnn's backends, and the rule that
#: says for which calls.
FASTER = {("cpu", torch.float32): _onednn_float32, ("cpu", torch.bfloat16): _onednn_bfloat16,
          ("cuda", torch.float16): _cudnn_float16, ("cuda", torch.bfloat16): _cudnn_bfloat16,
          ("cuda", torch.float32): _cudnn_float32}

#: The compiled backends the rule measures PyTorch's kernel against, by device type. Where none
#: of them runs here (no compiler, no GPU), ``auto`` would run the plain LSTM on the reference's
#: Python loop, one operation at a time, which PyTorch's single kernel call outruns.
OWN_BACKENDS = {"cpu": ("cpu",), "cuda": ("triton", "cuda")}


def faster(sweep: Sweep, device_type: str) -> bool:
    """Whether PyTorch's kernel is the faster backend for ``sweep`` on ``device_type`` (see :data:`FASTER`)."""
    rule = FASTER.get((device_type, sweep.dtype))
    if rule is not None and rule(sweep):
        return True
    return all(dispatch.unavailable_reason(name) for name in OWN_BACKENDS.get(device_type, ()))


#: What the kernel runs: oneDNN and ATen on the CPU have no float16 LSTM.
DTYPES = {"cpu": (torch.float32, torch.float64, torch.bfloat16),
          "cuda": (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


class TorchBackend:
    name = "torch"
    device_type = None  # it declines by table, not by device: no fallback warning

    def unavailable(self) -> Optional[str]:
        return None

    def unsupported(self, sweep: Sweep, explicit: bool) -> Optional[str]:
        if torch.compiler.is_compiling():  # the reason torch.compile graph-breaks on nn.LSTM
            return "PyTorch's LSTM kernel does not trace into a torch.compile graph"
        device_type = sweep.device_type
        if sweep.dtype not in DTYPES.get(device_type, ()):
            return f"PyTorch's LSTM kernel does not run {sweep.dtype} on {device_type}"
        if not explicit and not faster(sweep, device_type):
            return "fusedrnn's own backends are faster for this call"
        return None

    def run(self, sweep: Sweep):
        weights = [sweep.weight_ih, sweep.weight_hh]
        if sweep.bias_ih is not None:
            weights += [sweep.bias_ih, sweep.bias_hh]
        x, hx, train = sweep.x, (sweep.h0[None], sweep.c0[None]), sweep.needs_backward
        if sweep.lengths is None:
            x = x.flip(0) if sweep.reverse else x
            output, h_n, c_n = stacked_lstm(x, *hx, weights, 1, False, 0.0, train)  # a stack of one layer
            return (output.flip(0) if sweep.reverse else output), h_n[0], c_n[0]
        # Rows of other lengths: a PackedSequence, as nn.LSTM takes them. Reversed, each row
        # runs its own first L_b steps backwards (SPEC §5), then goes back in place.
        order = _row_reversal(sweep.lengths, x.shape[0]) if sweep.reverse else None
        x = x if order is None else x.gather(0, order[:, :, None].expand_as(x))
        lengths = sweep.lengths.cpu().clamp(min=1)  # packing needs L ≥ 1; rows of length 0 are reset below
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        hx = tuple(state.index_select(1, packed.sorted_indices) for state in hx)
        data, h_n, c_n = _VF.lstm(packed.data, packed.batch_sizes, hx, weights, sweep.bias_ih is not None, 1, 0.0,
                                  train, False)
        output, _ = pad_packed_sequence(packed._replace(data=data), total_length=x.shape[0])
        h_n, c_n = (state[0].index_select(0, packed.unsorted_indices) for state in (h_n, c_n))
        empty = (sweep.lengths == 0)[:, None]
        output = output.masked_fill(empty[None], 0.0)
        h_n, c_n = torch.where(empty, sweep.h0, h_n), torch.where(empty, sweep.c0, c_n)
        if order is not None:
            output = output.gather(0, order[:, :, None].expand_as(output))
        return output, h_n, c_n


class Call(NamedTuple):
    """What the rules and :meth:`TorchBackend.unsupported` read of a call; a :class:`Sweep` has
    the same attributes. For a decision before a call is built and validated."""
    device_type: str
    dtype: torch.dtype
    seq_len: int
    batch_size: int
    hidden_size: int
    needs_backward: bool


def runs_whole_stack(name: str, call: Call) -> bool:
    """Whether backend ``name`` runs a module's stack of plain LSTM layers on PyTorch's kernel,
    ``call`` describing its first layer (what :func:`dispatch.select` would answer for it,
    without building and validating that call: at T = 1 the host time is the cost)."""
    if name not in ("auto", "torch") or call.batch_size == 0:  # dispatch runs B = 0 on the reference
        return False
    return backend.unsupported(call, explicit=name == "torch") is None


def stacked_lstm(x, h0, c0, weights, num_layers: int, bidirectional: bool, dropout: float, train: bool):
    """Every layer and direction of a plain LSTM stack in one call of PyTorch's kernel, as
    ``nn.LSTM`` makes it (the modules' path when this backend runs the whole stack: one call,
    not one per layer and direction with the reversals and concatenations between them).
    ``x (T, B, I)``; ``h0``, ``c0 (layers · directions, B, H)``; ``weights`` in ``nn.LSTM``'s
    order (``w_ih, w_hh[, b_ih, b_hh]`` per layer and direction); ``dropout`` between layers
    where ``train``. Returns ``output (T, B, directions · H), h_n, c_n``."""
    has_biases = len(weights) == 4 * num_layers * (2 if bidirectional else 1)
    return _VF.lstm(x, (h0, c0), weights, has_biases, num_layers, dropout, train, bidirectional, False)


def _row_reversal(lengths, seq_len):
    """``(T, B)`` time indices that reverse each row's first ``L_b`` steps and keep the rest."""
    steps = torch.arange(seq_len, device=lengths.device)[:, None]
    return torch.where(steps < lengths[None], lengths[None] - 1 - steps, steps)


backend = TorchBackend()
