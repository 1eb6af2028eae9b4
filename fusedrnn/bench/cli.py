"""``python -m fusedrnn.bench`` (console script ``fusedrnn-bench``): how much faster is
fusedrnn than what you run now, for your sizes?"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from ..sweep import CELLS
from . import grid, report, runner
from .implementations import NAMES, implementations

EPILOG = """examples:
  python -m fusedrnn.bench --quick
  python -m fusedrnn.bench --cells lstm --shapes 16x512x256x256 --dtypes bfloat16 --json out.json --plot out.png
  python -m fusedrnn.bench --batch-sizes 8 32 128 --hidden-sizes 256 512 --seq-lens 256 --directions fwd
"""


def _shape(text: str):
    try:
        return grid.parse_shape(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fusedrnn.bench", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Times forward and forward+backward of every available fusedrnn backend next to "
                    "torch.nn.LSTM, an eager Python loop and the reference backend, after checking each "
                    "against the float64 reference. The default grid fits the machine: the LSTM issue's "
                    "GPU grid on CUDA, small sizes on CPU.")
    parser.add_argument("--quick", action="store_true",
                        help="the 'quick' preset: a small grid, one CPU thread, well under a minute on 2 cores")
    parser.add_argument("--preset", choices=sorted(grid.PRESETS), help="a named grid (default: by device)")
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS), help="default: all three")
    parser.add_argument("--shapes", nargs="+", type=_shape, metavar="BxTxIxH", help="explicit sizes")
    parser.add_argument("--batch-sizes", nargs="+", type=_positive, metavar="B",
                        help="with --seq-lens/--hidden-sizes: a product grid (I = H unless --input-size)")
    parser.add_argument("--seq-lens", nargs="+", type=_positive, metavar="T")
    parser.add_argument("--hidden-sizes", nargs="+", type=_positive, metavar="H")
    parser.add_argument("--input-size", type=_positive, metavar="I")
    parser.add_argument("--dtypes", nargs="+", choices=list(grid.DTYPES), help="default: the preset's")
    parser.add_argument("--backends", nargs="+", choices=NAMES, metavar="NAME",
                        help=f"implementations to time, among {', '.join(NAMES)} "
                             "(default: every available fusedrnn backend, nn.LSTM, eager, and flashrnn if installed)")
    parser.add_argument("--directions", nargs="+", choices=grid.DIRECTIONS, default=list(grid.DIRECTIONS),
                        help="fwd: inference forward (no autograd); fwdbwd: forward, then the gradients "
                             "of the input, the initial state and every weight")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--threads", type=_positive, metavar="N", help="CPU threads for torch (default: torch's)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every result as JSON")
    parser.add_argument("--plot", type=Path, metavar="PATH", help="draw time per step against B and H (PNG)")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the table as Markdown")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def _settings(args, parser) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.quick and args.preset not in (None, "quick"):
        parser.error("--quick is the 'quick' preset; do not combine it with --preset")
    preset_name = "quick" if args.quick else args.preset or grid.default_preset(device)
    preset = grid.PRESETS[preset_name]
    sizes = (args.batch_sizes, args.seq_lens, args.hidden_sizes, args.input_size)
    if args.shapes and any(sizes):
        parser.error("give --shapes or --batch-sizes/--seq-lens/--hidden-sizes/--input-size, not both")
    shapes = args.shapes or preset.shapes
    if any(sizes):
        b, t, i, h = preset.shapes[0]
        shapes = grid.cartesian_shapes(args.batch_sizes or [b], args.seq_lens or [t], args.hidden_sizes or [h],
                                       args.input_size or 0)
    return {"device": device, "preset": preset_name, "timing": preset.timing, "cpu_threads": preset.cpu_threads,
            "configs": grid.configs(args.cells, shapes, args.dtypes or preset.dtypes),
            "implementations": implementations(args.backends), "directions": list(args.directions)}


def _progress_bar(total: int, disable: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        raise SystemExit("the benchmark needs tqdm and matplotlib: pip install 'fusedrnn[bench]'") from None
    return tqdm(total=total, file=sys.stderr, disable=disable, unit="impl", dynamic_ncols=True)


def _run(args, argv: List[str], s: dict):
    """Runs the grid, prints the table and writes the files asked for; returns the results."""
    device, configs, chosen = s["device"], s["configs"], s["implementations"]
    machine = report.machine_info(device)
    print(f"# fusedrnn benchmark on {report.machine_summary(machine)}", flush=True)
    bar = _progress_bar(len(configs) * len(chosen), args.no_progress)
    started = []

    def progress(config, implementation):
        if started:
            bar.update(1)
        started.append(implementation)
        bar.set_description_str(f"{config.label} | {implementation.name}")

    results = runner.run(configs, chosen, s["directions"], s["timing"], device, progress)
    bar.update(1)
    bar.close()
    print(report.format_table(results))
    if args.json:
        command = "python -m fusedrnn.bench" + ("" if not argv else " " + shlex.join(argv))
        settings = {"preset": s["preset"], "device": device.type, "directions": s["directions"],
                    "implementations": [impl.name for impl in chosen], "timing": vars(s["timing"])}
        report.write_json(args.json, report.to_json(results, machine, command, settings))
    if args.markdown:
        args.markdown.write_text(report.format_table(results, markdown=True))
    if args.plot:
        report.plot(results, args.plot, f"fusedrnn benchmark: {report.machine_summary(machine)}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the benchmark; returns 1 when a fusedrnn backend failed its correctness check."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    s = _settings(args, parser)
    threads = args.threads or (s["cpu_threads"] if s["device"].type == "cpu" else None)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or previous_threads)
    try:
        results = _run(args, argv, s)
    finally:  # main() may be called from Python: leave the thread count as it was
        torch.set_num_threads(previous_threads)
    failures = [r for r in results if r.failed]
    for r in failures:
        print(f"FAILED {r.config.label} {r.direction} {r.implementation}: {r.status}: {r.reason}", file=sys.stderr)
    return 1 if failures else 0
