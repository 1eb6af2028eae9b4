"""The layouts the launch heuristics pick compile for an H100 (sm_90) without spilling registers
in a loop.

``layout._gpu_configs`` chooses the LSTM's layouts from an estimate
(``SweepConfig.register_pressure``), ``mogrifier.gpu_config`` the Mogrifier's by rule; this
checks both against the GPU compiler that ships with the installed Triton, so that a kernel
change that makes a chosen layout spill fails on CPU CI (``compile_check --layouts`` checks the
LSTM's picks over a larger grid under each Triton CI installs). Each kernel is compiled as a launch
specialises it: pointers 16-byte aligned, sizes marked divisible by 16 where they are (what
decides whether rows load in 16-byte vectors and chunks copy asynchronously).
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (B, H): issue 4's benchmark shapes, then awkward ones (H not a multiple of 16, one row).
SHAPES = [(16, 256), (64, 512), (64, 1024), (256, 1024), (16, 768), (8, 128),
          (1, 24), (37, 24), (3, 100), (37, 100), (1, 200), (100, 200), (1, 384), (37, 500), (1, 1000)]
DTYPES = ["bfloat16", "float16", "float32"]

# Runs in a subprocess without TRITON_INTERPRET (the interpreter replaces the kernels in
# this one): compiles each distinct layout a cell's heuristic picks once (the Mogrifier with
# its default rounds and I = H), prints one JSON list.
COMPILE_CHOSEN_LAYOUTS = r"""
import dataclasses, json, sys
import torch
from fusedrnn.cells import MOGRIFY_STEPS
from fusedrnn.triton_kernels import layout, mogrifier, offline

cell = json.loads(sys.argv[1])
layouts = {}
for dtype_name in json.loads(sys.argv[2]):
    dtype = getattr(torch, dtype_name)
    for batch_size, hidden_size in json.loads(sys.argv[3]):
        if cell == "lstm":
            config = next(iter(layout._gpu_configs(hidden_size, batch_size, dtype.itemsize, 132)), None)
        else:
            config = mogrifier.gpu_config(batch_size, hidden_size, hidden_size, 132)
        compiled_as = config and sorted({**config.constexprs(), **config.launch_options()}.items())
        key = (repr(compiled_as), dtype_name, batch_size % 16 == 0, hidden_size % 16 == 0)
        layouts.setdefault(key, (config, dtype, batch_size, hidden_size, []))[4].append(f"B={batch_size} H={hidden_size}")
results = []
for config, dtype, batch_size, hidden_size, shapes in layouts.values():
    entry = {"dtype": str(dtype).removeprefix("torch."), "shapes": shapes, "config": repr(config)}
    if config is not None:
        used = (offline.compile_lstm(config, dtype, launch_shape=(batch_size, hidden_size)) if cell == "lstm" else
                offline.compile_mogrifier(config, dtype, MOGRIFY_STEPS.default,
                                          launch_shape=(batch_size, hidden_size, hidden_size)))
        entry.update({name: dataclasses.asdict(resources) for name, resources in used.items()})
    results.append(entry)
print(json.dumps(results))
"""


# The heuristic's pick at B = 256, H = 1024 in bfloat16 with 4 warps instead of its 16: four
# times the registers per thread, past the 255 ptxas allows.
COMPILE_TOO_FEW_WARPS = r"""
import dataclasses, json
import torch
from fusedrnn.triton_kernels import layout, offline

config = dataclasses.replace(layout._gpu_configs(1024, 256, 2, 132)[0], num_warps=4)
used = offline.compile_lstm(config, torch.bfloat16, launch_shape=(256, 1024))
print(json.dumps({name: dataclasses.asdict(resources) for name, resources in used.items()}))
"""


def compiled(script, *arguments):
    """The last line ``script`` prints, as JSON."""
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-c", script, *map(json.dumps, arguments)]
    result = subprocess.run(command, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def chosen_layouts():
    return compiled(COMPILE_CHOSEN_LAYOUTS, "lstm", DTYPES, SHAPES)


@pytest.fixture(scope="module")
def chosen_mogrifier_layouts():
    return compiled(COMPILE_CHOSEN_LAYOUTS, "mogrifier", DTYPES, SHAPES)


@pytest.mark.parametrize("layouts", ["chosen_layouts", "chosen_mogrifier_layouts"])
def test_chosen_layouts_fit_an_h100_without_spilling(layouts, request):
    """No local-memory load or store inside a loop, no more shared memory than an SM has.
    A few LSTM layouts keep a stack of 8 to 24 bytes, none of it used in a loop: ptxas parks a
    value across the time loop (a store before it, a load after), at no cost per step. Which
    layouts do varies with Triton: the 16-bit forward at B = 1, H = 384 (3.6, 3.7.1), the
    float16 sweeps at B = 16, H = 768 (3.6, 3.7.1, 3.9), the bfloat16 backward at B = 1,
    H = 200 and 1000 (3.7.1), the float32 forward at B = 8, H = 128 (3.9). The Mogrifier's
    spilled 2 to 8 accesses per step at B ≤ 16 in float16 and float32 until it launched with
    ``maxnreg``."""
    problems = []
    for entry in request.getfixturevalue(layouts):
        where = f"{entry['dtype']} {', '.join(entry['shapes'])}: {entry['config']}"
        if entry["config"] == "None":
            problems.append(f"{where}: no layout")
            continue
        for kernel in ("forward", "backward"):
            used = entry[kernel]
            if used["spills_in_loops"] or used["shared_bytes"] > 227 * 1024:
                problems.append(f"{where}: {kernel} {used}")
    assert not problems, "chosen layouts that spill in a loop or do not fit sm_90:\n" + "\n".join(problems)


def test_spills_in_loops_are_found_in_a_layout_past_the_register_budget():
    """What the test above counts is there to be found: with too few warps, the spills sit in
    the time loop (Triton 3.7.1: 49 local loads and stores in the forward's loops, 40 in the
    backward's)."""
    for kernel, used in compiled(COMPILE_TOO_FEW_WARPS).items():
        assert used["spill_bytes"] > 0 and used["spills_in_loops"] > 0, f"{kernel}: {used}"


def test_rows_load_as_vectors_where_h_is_a_multiple_of_8(chosen_layouts):
    """16-bit rows load in 16-byte vectors where ``H`` is a multiple of 8: the launch marks
    multiples of 16, ``H_ALIGN`` tells the compiler the rest. What still loads one element at a
    time are tiles with one element per thread (``gx``, gates, ``h0``, ``c0``, ``d_out``). Rows
    loaded element by element took 40 to 137 such loads per kernel at H = 24, 200 and 1000."""
    counts = {}
    for entry in chosen_layouts:
        aligned = [shape for shape in entry["shapes"] if int(shape.split("H=")[1]) % 8 == 0]
        if entry["dtype"] != "float32" and entry["config"] != "None" and aligned:
            for kernel in ("forward", "backward"):
                counts[f"{entry['dtype']} {', '.join(aligned)} {kernel}"] = entry[kernel]["element_loads"]
    assert any("H=24" in case for case in counts) and any("H=1000" in case for case in counts), counts
    assert all(count <= 10 for count in counts.values()), counts
