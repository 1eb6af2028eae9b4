"""Which layout of a Triton sweep is fastest for a shape: the LSTM's candidates (every layout
the heuristic lists, then its pick with other warps and reduction chunks) and the Mogrifier's
(its default tiles, and each with one setting changed), each forced in turn, checked against
the float64 reference and timed through the benchmark's own path (``fusedrnn.bench.measure``).
The heuristic's pick is marked ``*``. The LSTM issue asks the heuristic to pick the fastest
layout; this is how to find it on a GPU (``ONLY=layouts bash bench/gpu_run.sh``):

    python bench/layouts.py --shapes 256x256x1024x1024 --dtypes bfloat16 --json layouts.json

A candidate runs only once its kernels compile and fit an SM (``layout.first_launchable``), so
that no grid barrier waits for a program that cannot be resident. On a CPU it runs the one
interpreter layout (``TRITON_INTERPRET=1``): a dry run.
"""
import argparse
import dataclasses
import functools
import sys
from unittest import mock

import torch

from fusedrnn.cells import MOGRIFY_STEPS
from fusedrnn.bench.cli import parse_shape
from fusedrnn.bench.implementations import implementation
from fusedrnn.bench.measure import DTYPES, Config, measure, truth_for
from fusedrnn.bench.report import results_document, save, table
from fusedrnn.triton_kernels import layout, lstm, mogrifier
from fusedrnn.triton_kernels.mogrifier import GPU_BLOCK_K, GPU_BLOCK_N, GPU_NUM_WARPS


def lstm_candidates(hidden_size, batch_size, dtype, multiprocessors):
    """The heuristic's layouts, best first; its pick with the warps and reduction chunks it did
    not try (it takes the first that fits its budgets), the whole slice at every warp count;
    and where ``H`` is not a multiple of 16, what it would pick if its register estimate
    counted ``H_ALIGN`` rows as vector loads (as the compiled kernels load them).

    The whole slice: the register estimate counts it in registers, but Triton (3.3 to 3.9)
    keeps a ``tl.dot`` operand loaded before the time loop in shared memory, and the forward
    then compiles without spilling where the heuristic rejects it (bfloat16 B 16 H 768 with
    8 warps: 86 registers, 160 KiB shared; B 64 H 512: 181, 128 KiB). The backward's
    ``dz`` operand over all ``4H`` does not fit (320 KiB at B 64 H 512): such a layout is
    timed forward only."""
    listed = list(layout._gpu_configs(hidden_size, batch_size, dtype.itemsize, multiprocessors))
    if not listed:
        return []
    pick = listed[0]
    chunks = [k for k in (32, 64, 128, pick.hidden_pad) if k <= pick.hidden_pad]
    variants = [dataclasses.replace(pick, num_warps=warps) for warps in (4, 8, 16)] + [
        dataclasses.replace(pick, block_k=k, hidden_on_chip=pick.hidden_on_chip and k == pick.hidden_pad) for k in chunks]
    variants += [dataclasses.replace(pick, block_k=pick.hidden_pad, num_warps=warps) for warps in (4, 8, 16)]
    vector_picks = layout._gpu_configs(hidden_size, batch_size, dtype.itemsize, multiprocessors, vector=True)[:1]
    return list(dict.fromkeys(listed + variants + list(vector_picks)))


def mogrifier_candidates(batch_size, input_size, hidden_size, multiprocessors):
    """The default tiles, then each with one of: 64 feature columns, 64-column chunks, 4 warps;
    at 16 rows or fewer also 128-column chunks. Where ``B``, ``I`` and ``H`` are multiples of 16
    a product's chunks are copied asynchronously, a few ahead (Triton's software pipeline, as
    the TTGIR shows), so wider chunks mean fewer, larger copies per phase. As launched (sm_90,
    Triton 3.6, r = 5, bfloat16, ``maxnreg``) none of these spills; 128-column chunks take 232
    and 201 registers at B 16, H 256, and 254 and 227 at B 64, H 512 (left out there to keep
    the layout stage within its time limit)."""
    config = functools.partial(mogrifier.gpu_config, batch_size, input_size, hidden_size, multiprocessors)
    wide = [config(block_k=4 * GPU_BLOCK_K)] if batch_size <= 16 else []
    return list(dict.fromkeys([config(), config(block_n=2 * GPU_BLOCK_N), config(block_k=2 * GPU_BLOCK_K),
                               config(num_warps=GPU_NUM_WARPS // 2)] + wide))


def candidates(config: Config, device: torch.device):
    """``(candidate layouts, the heuristic's pick, launches)``: ``launches(candidate, direction)``
    says whether the kernels that direction runs compile and fit an SM. Off a GPU: the
    interpreter's one layout, or none, and ``launches`` is ``None``."""
    b, i, h, dtype = config.batch_size, config.input_size, config.hidden_size, DTYPES[config.dtype]
    rounds = MOGRIFY_STEPS.default  # the Mogrifier at full rank: the problem truth_for draws
    if config.cell == "lstm":
        pick = lstm.config_for(h, b, dtype, device)

        def compile_kernels(candidate, direction):
            return lstm._compile(h, b, dtype, candidate, backward=direction != "fwd")
    else:
        pick = mogrifier.config_for(b, i, h, [False] * rounds, dtype, device)

        def compile_kernels(candidate, direction):
            return mogrifier._compile(b, i, h, rounds, 0, dtype, candidate)
    if device.type != "cuda":
        return [pick] if pick is not None else [], pick, None
    multiprocessors = layout.multiprocessor_count(device.index or 0)
    listed = (lstm_candidates(h, b, dtype, multiprocessors) if config.cell == "lstm" else
              mogrifier_candidates(b, i, h, multiprocessors))
    return listed, pick, lambda candidate, direction: layout.first_launchable(
        [candidate], functools.partial(compile_kernels, direction=direction)).config is not None


def short(config) -> str:
    fields = dataclasses.asdict(config)
    keep = ("programs", "programs_h", "programs_b", "block_b", "block_h", "block_n", "block_k", "num_warps")
    return " ".join(f"{name.replace('num_', '').replace('programs', 'p')}={fields[name]}" for name in keep if name in fields)


def measure_layouts(config: Config, device: torch.device, directions=("fwd", "fwdbwd")):
    """A benchmark row per candidate layout and direction, ``implementation`` naming the
    layout (``*``: the heuristic's pick), ``layout`` its full form."""
    listed, pick, launches = candidates(config, device)
    module = lstm if config.cell == "lstm" else mogrifier
    truth, rows = truth_for(config, device), []
    if not listed:  # the backend says why (no GPU and no interpreter, or no layout at all)
        return [measure(implementation("triton"), config, truth, d) for d in directions]
    for candidate in listed:
        name = f"triton {short(candidate)}" + (" *" if candidate == pick else "")
        for d in directions:
            if launches is not None and not launches(candidate, d):
                rows.append({**dataclasses.asdict(config), "direction": d, "implementation": name, "kind": "fusedrnn",
                             "status": "n/a", "reason": "does not compile or fit an SM", "median_ms": None,
                             "layout": repr(candidate)})
                continue
            # The operators ask config_for for their layout: every sweep of the module launches this one.
            with mock.patch.object(module, "config_for", lambda *sizes, candidate=candidate: candidate):
                rows.append({**measure(implementation("triton"), config, truth, d), "implementation": name,
                             "layout": repr(candidate)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", choices=("lstm", "mogrifier"), default=["lstm"])
    parser.add_argument("--shapes", nargs="+", type=parse_shape, metavar="BxTxIxH", required=True)
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["bfloat16"])
    parser.add_argument("--json", help="write the rows (the benchmark's schema), the command and the machine")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    document = results_document(["python", "bench/layouts.py"] + argv, device, rows)
    for cell in args.cells:
        for (b, t, i, h) in args.shapes:
            for dtype in args.dtypes:
                rows += measure_layouts(Config(cell, b, t, i, h, dtype), device)
                if args.json:  # after every shape
                    save(document, args.json)
    print(table(rows))
    return 1 if any(r["status"] in ("wrong", "error") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
