"""How the ``cpu`` backend's rule for packing its per-step weights into panels
(``fusedrnn/csrc/step_product.h``) fares on results files of the same calls timed with
``FUSEDRNN_CPU_PACKED_WEIGHTS=never``, ``=always`` and unset (the rule), and ``nn.LSTM``'s
kernel beside them::

    python bench/packed_weights.py bench/results/cpu-panels/grid-{never,always,rule}-1threads.json

Per call (configuration and direction): each time in ms, the rule's over the faster of never
and always (what the rule loses, > 1), and the rule's over ``nn.LSTM``'s kernel (``torch``, the
median of the files' runs). Then the geometric mean of each ratio and the calls where the rule
is more than 5 % slower than the faster path. Files without ``always`` (held-out calls): never
against the rule, per cell.
"""
import argparse
import statistics
from pathlib import Path

from fusedrnn.bench.report import timed_calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("::")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("never", type=Path)
    parser.add_argument("always", type=Path, nargs="?", help="omit for held-out files: never against the rule")
    parser.add_argument("rule", type=Path)
    args = parser.parse_args()
    files = {name: timed_calls(path) for name, path in vars(args).items() if path is not None}
    calls = sorted(set.intersection(*(set(found) for found in files.values())),
                   key=lambda c: (c[0], c[1], c[4], c[2], c[3]))
    losses, against_torch, slower = [], [], []
    print("| cell | dir | B | T | H | " + " | ".join(f"{name} ms" for name in files)
          + " | rule / best | rule / nn.LSTM |")
    print("|---" * (7 + len(files)) + "|")
    for call in calls:
        cpu = {name: found[call]["cpu"] for name, found in files.items()}
        loss = cpu["rule"] / min(t for name, t in cpu.items() if name != "rule")
        torch_ms = [found[call]["torch"] for found in files.values() if "torch" in found[call]]
        versus = cpu["rule"] / statistics.median(torch_ms) if torch_ms else None
        losses.append(loss)
        if versus is not None:
            against_torch.append(versus)
        if loss > 1.05:
            slower.append(f"{call[0]} {call[1]} {call[2]} B{call[3]} T{call[4]} H{call[5]} {loss:.2f}x")
        print(f"| {' | '.join(map(str, call))} | " + " | ".join(f"{t:.3f}" for t in cpu.values())
              + f" | {loss:.2f} | " + (f"{versus:.2f} |" if versus is not None else "- |"))
    print(f"\n{len(calls)} calls; rule over the faster path: geometric mean {statistics.geometric_mean(losses):.3f}, "
          f"more than 5 % slower in {len(slower)}: {slower}")
    if against_torch:
        print(f"rule over nn.LSTM's kernel: geometric mean {statistics.geometric_mean(against_torch):.3f}, "
              f"range {min(against_torch):.2f}-{max(against_torch):.2f}")
    for cell in sorted({call[0] for call in calls}):
        gains = [files["never"][c]["cpu"] / files["rule"][c]["cpu"] for c in calls if c[0] == cell]
        print(f"{cell}: never over the rule (the speed-up), geometric mean {statistics.geometric_mean(gains):.2f}, "
              f"range {min(gains):.2f}-{max(gains):.2f}")


if __name__ == "__main__":
    main()
