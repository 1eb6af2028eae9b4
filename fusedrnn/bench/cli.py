"""``python -m fusedrnn.bench`` (console script ``fusedrnn-bench``): how much faster is
fusedrnn than what you run now, for your sizes?"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from .. import cells
from ..cells import MOGRIFY_STEPS
from . import report
from .implementations import DEFAULT_NAMES, NAMES, implementation, unavailable
from .measure import DIRECTIONS, DTYPES, Config, measure, truth_for

CELLS = tuple(cells.CELLS)


@dataclass(frozen=True)
class Group:
    """Every cell × shape (B, T, I, H) × dtype × direction; ``compiled``: whether the compiled baseline runs."""

    cells: Tuple[str, ...]
    shapes: Tuple[Tuple[int, int, int, int], ...]
    dtypes: Tuple[str, ...]
    directions: Tuple[str, ...] = ("fwd", "fwdbwd")
    compiled: bool = True


ISSUE_SHAPES = ((16, 512, 256, 256), (64, 256, 512, 512), (64, 256, 1024, 1024),  # the LSTM issue's GPU grid
                (256, 256, 1024, 1024), (16, 1024, 768, 768), (8, 1024, 128, 128))
PRESETS = {  # gpu: under 10 minutes on an H100 by estimate_s; cpu: a few on 2 cores; quick: CI
    "gpu": (Group(("lstm",), ISSUE_SHAPES, ("float16", "bfloat16", "float32"), compiled=False),
            Group(("mogrifier", "g2"), ISSUE_SHAPES[:2], ("bfloat16",), compiled=False),
            Group(CELLS, ((64, 256, 512, 512),), ("bfloat16",)),
            Group(("lstm",), ((1, 64, 512, 512),), ("float16",), ("decode",), compiled=False)),
    "cpu": (Group(CELLS, ((4, 64, 64, 64), (16, 64, 128, 128)), ("float32",)),
            Group(CELLS, ((1, 32, 64, 64),), ("float32",), ("decode",))),
    "quick": (Group(CELLS, ((4, 16, 32, 32),), ("float32",), DIRECTIONS),),
}
#: Two OpenMP threads on a busy 2-core CI machine stall each other.
PRESET_THREADS = {"quick": 1}


def parse_shape(text: str) -> Tuple[int, int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"a shape must be BxTxIxH with four positive integers, got {text!r}")
    return tuple(int(part) for part in parts)


def cases(groups: Sequence[Group], names: Sequence[str], device: torch.device) -> Dict[Config, list]:
    """``{config: [(direction, implementation)]}``, without repeats or what cannot run on ``device``."""
    chosen = {}
    for g in groups:
        for cell, (b, t, i, h), dtype, direction, name in itertools.product(g.cells, g.shapes, g.dtypes,
                                                                            g.directions, names):
            impl = implementation(name)
            if cell in impl.cells and device.type in impl.device_types and (g.compiled or name != "compiled"):
                chosen.setdefault(Config(cell, b, t, i, h, dtype), {})[(direction, name)] = impl
    return {config: [(d, impl) for (d, _), impl in pairs.items()] for config, pairs in chosen.items()}


def estimate_s(c: Config, direction: str, name: str, device: torch.device) -> float:
    """A row's rough duration: ~9 calls (check, warm-up, timing) of a cost per step (host and
    launches, tens of µs when looped in Python) plus its products, and compile times."""
    gpu, passes = device.type == "cuda", 3 if direction == "fwdbwd" else 1
    looped = name in ("eager", "compiled", "reference") or direction == "decode"
    launch_s = (30e-6 * (1 + MOGRIFY_STEPS.default * (c.cell == "mogrifier")) if looped else 4e-6) * passes
    flops = 8 * c.batch_size * c.hidden_size * (c.input_size + c.hidden_size) * (1 + 2 * (c.cell == "mogrifier")) * passes
    compile_s = {"compiled": 30 if gpu else 4, "triton": 4 * gpu, "auto": 2 * gpu}.get(name, 0)
    return compile_s + 0.2 + 9 * c.seq_len * (launch_s + flops / (5e13 if gpu else 2e10))


def grid_estimate_s(grid: Dict[Config, list], device: torch.device) -> float:
    """The whole run: every row, and the float64 reference's forward and backward per configuration."""
    return sum(estimate_s(c, "fwdbwd", "reference", device) / 3 + sum(estimate_s(c, d, impl.name, device)
                                                                       for d, impl in pairs) for c, pairs in grid.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fusedrnn.bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Times fusedrnn's backends beside torch.nn.LSTM (flattened; cuDNN on a GPU), each cell's eager "
                    "per-step loop as users write it, that loop under torch.compile, and flashrnn if installed. "
                    "fusedrnn's backends must first match the float64 reference (SPEC §6), or are marked wrong, "
                    "not timed, and the command exits 1; baselines are timed, their error shown beside.",
        epilog="examples:\n  python -m fusedrnn.bench --quick\n  python -m fusedrnn.bench --cells lstm --shapes "
               "16x512x256x256 --dtypes bfloat16 --json out.json --plot out.png\n"
               "  python -m fusedrnn.bench --report bench/results/cpu/results.json")
    grid = parser.add_mutually_exclusive_group()
    grid.add_argument("--preset", choices=sorted(PRESETS), help="the grid (default: gpu on CUDA, else cpu)")
    grid.add_argument("--quick", dest="preset", action="store_const", const="quick",
                      help="--preset quick: well under a minute on 2 cores")
    add = parser.add_argument
    add("--cells", nargs="+", choices=CELLS, help="only these cells")
    add("--shapes", nargs="+", type=parse_shape, metavar="BxTxIxH", help="replace the preset's sizes")
    add("--dtypes", nargs="+", choices=list(DTYPES), help="replace the preset's dtypes")
    add("--directions", nargs="+", choices=DIRECTIONS, help="replace the preset's: fwd (no autograd), fwdbwd "
        "(gradients of input, initial state, weights), decode (T one-step calls, state fed back)")
    add("--backends", nargs="+", choices=NAMES, metavar="NAME", help=f"among {', '.join(NAMES)} (default: auto, "
        "fusedrnn's own backends for the device, nn.LSTM, eager, compiled, flashrnn if installed)")
    add("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    add("--threads", type=int, metavar="N", help="CPU threads for torch")
    add("--json", type=Path, metavar="PATH", help="write every row, the command and the machine")
    add("--plot", type=Path, metavar="PATH", help="draw µs per step (PNG)")
    add("--report", type=Path, metavar="JSON", help="print a results file's Markdown report; run nothing")
    add("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark; returns 1 when a fusedrnn backend failed its correctness check."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.report:
        document = json.loads(args.report.read_text())
        print(report.markdown_report(document), end="")
        if args.plot:
            report.plot(document, args.plot)
        return 0
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for invalid, message in ((device.type == "cuda" and not torch.cuda.is_available(), "CUDA is not available"),
                             (args.threads is not None and args.threads <= 0, "--threads must be positive")):
        if invalid:
            parser.error(message)
    for name in filter(unavailable, args.backends or []):  # one command line serves every machine (gpu_run.sh)
        print(f"# skipping {name}: {unavailable(name)}", file=sys.stderr)
    preset = args.preset or ("gpu" if device.type == "cuda" else "cpu")
    groups = [replace(g, cells=tuple(c for c in g.cells if c in (args.cells or CELLS)), shapes=args.shapes or g.shapes,
                      dtypes=args.dtypes or g.dtypes, directions=args.directions or g.directions) for g in PRESETS[preset]]
    grid = cases(groups, [n for n in args.backends or DEFAULT_NAMES if not unavailable(n)], device)
    from tqdm import tqdm  # a bench extra: imported once the arguments are known good

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads or PRESET_THREADS.get(preset) or previous_threads)
    rows = []
    document = report.results_document(["python", "-m", "fusedrnn.bench"] + argv, device, rows,
                                       planned_rows=sum(len(pairs) for pairs in grid.values()))

    def save():  # at the start and after every configuration
        if args.json:
            report.save(document, args.json)

    try:
        print(f"# fusedrnn benchmark on {report.machine_summary(document['machine'])}\n# {document['planned_rows']} "
              f"rows on {len(grid)} configurations: about {grid_estimate_s(grid, device) / 60:.1f} min (a rough "
              "estimate)", flush=True)
        save()
        with tqdm(total=document["planned_rows"], disable=args.no_progress, unit="row", dynamic_ncols=True) as bar:
            for config, pairs in grid.items():
                truth = truth_for(config, device)
                for direction, impl in pairs:
                    bar.set_description_str(f"{config.cell} {config.shape} {config.dtype} {direction} {impl.name}")
                    rows.append(measure(impl, config, truth, direction))
                    bar.update(1)
                del truth  # frees the reference's tensors before the cache is emptied
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                save()
    finally:  # main() may be called from Python: leave the thread count as it was
        torch.set_num_threads(previous_threads)
    print(report.table(rows))
    if args.plot:
        report.plot(document, args.plot)
    failures = [r for r in rows if r["kind"] == "fusedrnn" and r["status"] in ("wrong", "error")]
    for r in failures:
        print(f"FAILED {r['cell']} {r['dtype']} {r['direction']} {r['implementation']}: {r['reason']}", file=sys.stderr)
    return 1 if failures else 0
