"""What a Mogrifier round and a low rank cost on a backend: full rank at several round counts
(the slope is one round per step: its product phase and its grid barrier), and the most rounds
at rank ``H/8`` beside them (the Mogrifier issue asks low rank ``k = H/8`` to be at least 1.5×
faster than full rank at ``H ≥ 512``). Each variant is checked against the float64 reference
and timed through the benchmark's own path (``fusedrnn.bench.measure``), side by side in one
run; ``bash bench/gpu_run.sh`` runs it:

    python bench/mogrifier_variants.py --shapes 64x256x512x512 --json variants.json

On a CPU it runs the Triton interpreter (``TRITON_INTERPRET=1``) or ``--backend cpu``: a dry run.
"""
import argparse
import sys

import torch

from fusedrnn.bench.cli import parse_shape
from fusedrnn.bench.implementations import implementation
from fusedrnn.bench.measure import DTYPES, Config, measure
from fusedrnn.bench.report import results_document, save, table
from fusedrnn.cells import MOGRIFY_STEPS
from fusedrnn.testing import ground_truth, random_problem


def variants(hidden_size, rounds):
    """``(name, random_weights options)``: full rank at each of ``rounds``, then the most
    rounds at rank ``H/8``."""
    most, rank = max(rounds), max(1, hidden_size // 8)
    return [(f"r={r}", dict(mogrify_steps=r)) for r in rounds] + [
        (f"r={most} k={rank}", dict(mogrify_steps=most, mogrify_rank=rank))]


def measure_variants(config: Config, device, rounds, backend, directions=("fwd", "fwdbwd")):
    """A benchmark row per variant and direction, ``implementation`` naming the variant."""
    shape = (config.seq_len, config.batch_size, config.input_size, config.hidden_size)
    rows = []
    for name, weights in variants(config.hidden_size, rounds):
        torch.manual_seed(1)
        truth = ground_truth(random_problem("mogrifier", shape, weight_options=weights), DTYPES[config.dtype], device)
        for direction in directions:
            rows.append({**measure(implementation(backend), config, truth, direction),
                         "implementation": f"{backend} {name}", "mogrify_steps": weights["mogrify_steps"],
                         "mogrify_rank": weights.get("mogrify_rank")})
    return rows


def summary(rows) -> str:
    """Per shape, dtype and direction: µs per step that one round adds (full rank, from the
    fewest rounds to the most), and how many times faster the low rank is than full rank."""
    lines, groups = [], {}
    for r in rows:
        if r["median_ms"] is not None:
            groups.setdefault((r["batch_size"], r["seq_len"], r["hidden_size"], r["dtype"], r["direction"]), []).append(r)
    for (b, t, h, dtype, direction), timed in groups.items():
        full = sorted((r for r in timed if r["mogrify_rank"] is None), key=lambda r: r["mogrify_steps"])
        low = [r for r in timed if r["mogrify_rank"] is not None]
        if len(full) >= 2:
            fewest, most = full[0], full[-1]
            per_round = (most["us_per_step"] - fewest["us_per_step"]) / (most["mogrify_steps"] - fewest["mogrify_steps"])
            line = f"B{b} T{t} H{h} {dtype} {direction}: one round {per_round:.1f} µs per step"
            if low and low[0]["mogrify_steps"] == most["mogrify_steps"]:
                line += f"; rank {low[0]['mogrify_rank']} {most['median_ms'] / low[0]['median_ms']:.2f}× full rank"
            lines.append(line)
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", type=parse_shape, metavar="BxTxIxH", required=True)
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["bfloat16"])
    parser.add_argument("--rounds", nargs="+", type=int, default=[0, MOGRIFY_STEPS.default],
                        help="full-rank round counts (default: 0 and the default)")
    parser.add_argument("--backend", default="triton", choices=("triton", "cuda", "cpu", "reference"))
    parser.add_argument("--json", help="write the rows (the benchmark's schema), the command and the machine")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if min(args.rounds) < 0 or len(set(args.rounds)) < 2:
        parser.error("--rounds takes two or more different counts, none negative")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    document = results_document(["python", "bench/mogrifier_variants.py"] + argv, device, rows)
    for (b, t, i, h) in args.shapes:
        for dtype in args.dtypes:
            rows += measure_variants(Config("mogrifier", b, t, i, h, dtype), device, sorted(args.rounds), args.backend)
            if args.json:  # after every shape
                save(document, args.json)
    print(table(rows))
    print(summary(rows))
    return 1 if any(r["status"] in ("wrong", "error") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
