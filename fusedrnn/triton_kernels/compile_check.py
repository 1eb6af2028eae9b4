"""Compiles every sweep kernel variant for NVIDIA GPUs with the installed Triton, no GPU needed.

The proof, in CPU-only CI, that a Triton release accepts our kernels: CI runs it under
the oldest Triton we support, under our GPU machine's and under the newest, for sm_90
and sm_80. Any compile error fails it (exit 1), and so does an LSTM layout of the grid below
that the heuristic picks within its register budget and that spills in a loop. What it compiles:

- **flags**: every flag combination a launch can make, on one layout per code path
  (``h`` on chip, a resident ``W_hh`` slice with an exchange, a chunked slice) for the
  LSTM/G2, and on the GPU tile layout for the Mogrifier (at 2 rounds, one of each kind;
  both low rank with and without saving, either direction);
- **dtypes**: each LSTM code path in every dtype, the chunked one also with ``H`` a multiple of
  8 but not of 16 (``H_ALIGN``);
- **rounds**: the Mogrifier with 0 to ``MAX_ROUNDS`` rounds, every option on, and 5 rounds
  mixing low-rank and full-rank ones in every dtype (and bfloat16 at ``H = 8``, whose
  gradient buffers stay float32);
- **layouts** (``--layouts``): every layout the heuristic picks over a grid of hidden
  sizes 16 to 2048 and batches 1 to 512 (non-powers of two included), in every dtype,
  with every option on, for the first architecture; the LSTM's as a launch at that size
  specialises it (what decides vector loads and asynchronous copies, and so registers).

Flags and rounds change which code is traced, so they are compiled for every Triton
and architecture; the layout grid changes sizes, tiles and warps, and which layouts the
heuristic picks depends on the Triton too (``layout.narrowest_dot``, ``layout.FLOAT32_BLOCK_K``),
so CI compiles it under every Triton it checks. ``python -m fusedrnn.triton_kernels.compile_check
--arch 90 80 --layouts --jobs 2`` (run with ``TRITON_INTERPRET`` unset).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import multiprocessing
import sys
import time

import torch
import triton

from . import common, layout, lstm, mogrifier, offline

DTYPES = common.DTYPES
GRID_HIDDEN_SIZES = (16, 24, 100, 128, 256, 500, 768, 1024, 2048)
GRID_BATCH_SIZES = (1, 3, 16, 37, 64, 256, 512)
#: Multiprocessors of the GPUs we launch on (H100 SXM and H200: 132; H100 PCIe: 114).
MULTIPROCESSORS = 132

#: One LSTM layout per code path of ``exchanged_product``/``HIDDEN_ON_CHIP``.
LSTM_PATHS = {
    "on-chip": layout.SweepConfig(16, 64, 64, 1, 1, hidden_on_chip=True),
    "resident": layout.SweepConfig(16, 16, 256, 16, 1, num_warps=8),
    "chunked": layout.SweepConfig(16, 16, 1024, 64, 1, num_warps=8, block_k=128),
}
#: The LSTM/G2 flag combinations a launch makes: hard gates only at evaluation, without noise.
LSTM_NOISE_GATES = ((lstm.NO_NOISE.value, False), (lstm.NO_NOISE.value, True), (lstm.NOISE_TENSOR.value, False),
                    (lstm.NOISE_PHILOX.value, False))
FLAG_ROUNDS = 2


def _mogrifier_layout(batch_size):
    """The GPU layout at this batch size, a program per SM (features enough to fill them)."""
    return mogrifier.gpu_config(batch_size, MULTIPROCESSORS * mogrifier.GPU_BLOCK_N, 1, MULTIPROCESSORS)


def _booleans(count):
    return itertools.product((False, True), repeat=count)


def flag_variants():
    """``(label, cell, config, dtype, kernel flags)`` for every flag combination, in bfloat16."""
    dtype = torch.bfloat16
    for (path, config), (noise, hard), (lengths, save, reverse) in itertools.product(
            LSTM_PATHS.items(), LSTM_NOISE_GATES, _booleans(3)):
        flags = dict(noise=noise, hard_gates=hard, lengths=lengths, save=save, reverse=reverse)
        yield f"lstm {path}", "lstm", config, dtype, flags
    for lengths, bias, round_bias, save, reverse in _booleans(5):
        flags = dict(lengths=lengths, bias=bias, round_bias=round_bias, save=save, reverse=reverse)
        yield "mogrifier", "mogrifier", _mogrifier_layout(64), dtype, {"rounds": FLAG_ROUNDS, **flags}
    for save, reverse in _booleans(2):  # the low-rank phases change only with the buffers' slots
        flags = dict(low_rank=0b11, save=save, reverse=reverse)
        yield "mogrifier low rank", "mogrifier", _mogrifier_layout(64), dtype, {"rounds": FLAG_ROUNDS, **flags}


def dtype_variants():
    """Every code path in every dtype and the Mogrifier with 0 to ``MAX_ROUNDS`` rounds, every option on."""
    for (path, config), dtype in itertools.product(LSTM_PATHS.items(), DTYPES):
        yield f"lstm {path}", "lstm", config, dtype, {}
    for dtype in DTYPES:  # H a multiple of 8, not of 16 (layout.hidden_alignment)
        yield "lstm chunked H_ALIGN=8", "lstm", dataclasses.replace(LSTM_PATHS["chunked"], hidden_align=8), dtype, {}
    for rounds in range(mogrifier.MAX_ROUNDS + 1):
        yield f"mogrifier r={rounds}", "mogrifier", _mogrifier_layout(64), torch.bfloat16, {"rounds": rounds}
    for dtype in (torch.float32, torch.float16):
        yield "mogrifier r=5", "mogrifier", _mogrifier_layout(64), dtype, {"rounds": 5}
    # bfloat16 products over fewer than 16 terms split their operand: float32 gradient buffers
    yield "mogrifier r=5 H=8", "mogrifier", _mogrifier_layout(64), torch.bfloat16, {"rounds": 5, "hidden_size": 8}
    for dtype in DTYPES:  # rounds 1, 2 and 4 low rank: both kinds of each, full rank between
        yield "mogrifier r=5 mixed rank", "mogrifier", _mogrifier_layout(64), dtype, {"rounds": 5, "low_rank": 0b01011}


def layout_variants():
    """Every layout the heuristic picks first over the grid (what a launch compiles first), the
    LSTM's as a launch at that ``B`` and ``H`` specialises it (``offline.launch_attributes``)."""
    seen = set()
    for dtype, hidden_size, batch_size in itertools.product(DTYPES, GRID_HIDDEN_SIZES, GRID_BATCH_SIZES):
        configs = layout._gpu_configs(hidden_size, batch_size, dtype.itemsize, MULTIPROCESSORS)
        key = (configs and configs[0], dtype, batch_size % 16 == 0, hidden_size % 16 == 0)
        if configs and key not in seen:
            seen.add(key)
            sizes = {"B": batch_size, "H": hidden_size}
            yield f"lstm H={hidden_size} B={batch_size}", "lstm", configs[0], dtype, {}, sizes
    for dtype, block_b in itertools.product(DTYPES, sorted({_mogrifier_layout(b).block_b for b in GRID_BATCH_SIZES})):
        yield f"mogrifier block_b={block_b}", "mogrifier", _mogrifier_layout(block_b), dtype, {"rounds": 5}


def _kernels(cell, dtype, flags):
    if cell == "lstm":
        return offline.lstm_kernels(dtype, **flags)
    return offline.mogrifier_kernels(dtype, **flags)


def jobs(plan):
    """One job per kernel (forward and backward apart) and architecture, for each
    ``(variants, archs)`` of ``plan``; a kernel with the same flags (the backward has
    fewer), argument types, layout and launch attributes compiles once. A variant is
    ``(label, cell, config, dtype, flags)``, then the integer arguments of a launch to
    compile as (default: none, the least the compiler may assume)."""
    seen = set()
    for variants, archs in plan:
        for label, cell, config, dtype, flags, *launch in variants:
            for (kernel, signature, kernel_flags), arch in itertools.product(_kernels(cell, dtype, flags), archs):
                name = offline._jit_function(kernel).fn.__name__  # jobs cross processes by name
                sizes = launch[0] if launch else None
                attributes = sizes and offline.launch_attributes(kernel, signature, sizes)
                key = (name, config, dtype, tuple(sorted(kernel_flags.items())), tuple(signature.values()), arch,
                       repr(attributes))
                if key not in seen:
                    seen.add(key)
                    yield label, name, signature, kernel_flags, config, dtype, arch, sizes


def must_not_spill(job) -> bool:
    """Whether ``job`` is an LSTM layout the heuristic picks within its register budget, compiled
    as launched: such a kernel must not spill in a loop (past the budget it may: slower, still right)."""
    label, name, signature, flags, config, dtype, arch, sizes = job
    return bool(sizes) and name.startswith("_lstm") and (
        config.register_pressure(dtype.itemsize, layout.vector_loads(sizes["H"])) <= layout.REGISTER_BUDGET)


def _run(job):
    label, name, signature, flags, config, dtype, arch, sizes = job
    kernel = getattr(lstm if name.startswith("_lstm") else mogrifier, name)
    description = f"{label} {name} {str(dtype).replace('torch.', '')} sm_{arch} {config} {flags}"
    values = {**flags, **config.constexprs(), **offline.precision_constexprs(dtype)}
    attributes = sizes and offline.launch_attributes(kernel, signature, sizes)
    try:
        resources = offline.compile_kernel(kernel, signature, values, config.launch_options(), arch, attributes)
        return description, resources, None
    except Exception as error:  # noqa: BLE001 - every failure is reported, then the check fails
        return description, None, layout.compiler_message(error)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80],
                        help="compute capabilities (90 = H100); flags and layouts for the first only")
    parser.add_argument("--layouts", action="store_true",
                        help="also every layout the heuristic picks over the grid (first arch)")
    parser.add_argument("--jobs", type=int, default=2, help="compiler processes")
    args = parser.parse_args(argv)
    if common.interpreting():
        parser.error("unset TRITON_INTERPRET: the interpreter does not compile kernels")
    plan = [(flag_variants(), args.arch[:1]), (dtype_variants(), args.arch)]
    if args.layouts:
        plan.append((layout_variants(), args.arch[:1]))
    work = list(jobs(plan))
    print(f"triton {triton.__version__}: compiling {len(work)} kernels for sm_{', sm_'.join(map(str, args.arch))} "
          f"in {args.jobs} processes", flush=True)
    start, failures, most_spilled = time.perf_counter(), [], None
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for job, (description, resources, error) in zip(work, pool.imap(_run, work)):
            if error is not None:
                failures.append(f"{description}: {error}")
            elif resources.spills_in_loops and must_not_spill(job):
                failures.append(f"{description}: {resources.spills_in_loops} spill accesses in loops, within the "
                                f"register budget ({resources})")
            elif most_spilled is None or resources.spill_bytes > most_spilled[1].spill_bytes:
                most_spilled = (description, resources)
    print(f"{len(work) - len(failures)} compiled, {len(failures)} failed in {time.perf_counter() - start:.0f} s")
    if most_spilled is not None:
        print(f"most spilled: {most_spilled[1]} ({most_spilled[0]})")
    for failure in failures:
        print(f"FAILED {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
