"""Forward+backward time of the ``"cpu"`` backend against ``"reference"``, per cell.

float32, (B, T, H) = (32, 128, 256), I = H, mogrify_steps = 5, two threads; prints the
median of ``--repeats`` runs per backend and the speed-up, and exits non-zero below
``--min-speedup``. Run from the repository root: ``python bench/cpu_ext_vs_reference.py``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fusedrnn import functional  # noqa: E402

CELLS = {"lstm": functional.lstm, "mogrifier": functional.mogrifier_lstm, "g2": functional.g2_lstm}


def make_inputs(cell, batch, seq_len, hidden, mogrify_steps):
    """Random leaves of one layer (inputs, state and weights) with ``nn.LSTM``'s init scale."""
    scale = hidden ** -0.5

    def rand(*shape):
        return ((torch.rand(shape) * 2 - 1) * scale).requires_grad_()

    args = dict(input=torch.randn(seq_len, batch, hidden).requires_grad_(), weight_ih=rand(4 * hidden, hidden),
                weight_hh=rand(4 * hidden, hidden), bias_ih=rand(4 * hidden), bias_hh=rand(4 * hidden),
                h0=rand(batch, hidden), c0=rand(batch, hidden))
    if cell == "mogrifier":
        args["mogrify_weights"] = [rand(hidden, hidden) for _ in range(mogrify_steps)]
        args["mogrify_biases"] = [rand(hidden) for _ in range(mogrify_steps)]
    return args


def time_forward_backward(cell, backend, args, repeats):
    leaves = [t for v in args.values() for t in (v if isinstance(v, list) else [v])]
    times = []
    for _ in range(repeats + 1):  # the first run warms up (and builds the extension)
        start = time.perf_counter()
        out, (h_n, c_n) = CELLS[cell](**args, backend=backend)
        torch.autograd.grad(out.sum() + h_n.sum() + c_n.sum(), leaves)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--mogrify-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-speedup", type=float, default=0.0)
    parser.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    options = parser.parse_args(argv)
    torch.set_num_threads(options.threads)
    torch.manual_seed(0)
    print(f"float32, B={options.batch} T={options.seq_len} H=I={options.hidden}, "
          f"mogrify_steps={options.mogrify_steps}, {options.threads} threads, median of {options.repeats}")
    print(f"{'cell':<10} {'reference ms':>13} {'cpu ms':>8} {'speed-up':>9}")
    slowest = float("inf")
    for cell in options.cells:
        args = make_inputs(cell, options.batch, options.seq_len, options.hidden, options.mogrify_steps)
        reference = time_forward_backward(cell, "reference", args, options.repeats)
        compiled = time_forward_backward(cell, "cpu", args, options.repeats)
        slowest = min(slowest, reference / compiled)
        print(f"{cell:<10} {reference * 1e3:13.1f} {compiled * 1e3:8.1f} {reference / compiled:8.2f}x")
    return 0 if slowest >= options.min_speedup else 1


if __name__ == "__main__":
    sys.exit(main())
