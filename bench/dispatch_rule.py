"""How ``auto``'s choice between PyTorch's LSTM kernel and the ``cpu`` backend
(``fusedrnn.native.backend.faster``) fares on results files that timed both (``--backends torch
cpu``), beside the rule it replaced (float32 calls from ``T·B·H = 1024``, no bfloat16)::

    python bench/dispatch_rule.py bench/results/cpu-auto/dispatch-*.json

Per file and rule, over its calls (configuration and direction): those where the choice is
slower than ``nn.LSTM``'s kernel (``cpu`` chosen, more than 5 % slower: what a drop-in must
never be), those where it leaves a faster ``cpu`` unused (more than 5 %), and the geometric
mean of the chosen backend's time over the faster one's.
"""
import argparse
import math
from pathlib import Path

import torch

from fusedrnn.bench.report import timed_calls
from fusedrnn.native.backend import Call, faster


def takes_torch(dtype, direction, batch_size, seq_len, hidden_size):
    return faster(Call("cpu", getattr(torch, dtype), seq_len, batch_size, hidden_size,
                       needs_backward=direction != "fwd"), "cpu")


RULES = {"auto (native.faster)": takes_torch,
         "before (float32 from T·B·H = 1024)": lambda dtype, direction, batch_size, seq_len, hidden_size:
         dtype == "float32" and seq_len * batch_size * hidden_size >= 1024}


def times(path):
    """``{(dtype, direction, B, T, H): {"torch": ms, "cpu": ms}}`` over the file's LSTM calls timed on both."""
    return {call[1:]: both for call, both in timed_calls(path).items()
            if call[0] == "lstm" and {"torch", "cpu"} <= both.keys()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("::")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="fusedrnn.bench JSON files timing torch and cpu")
    for path in parser.parse_args().files:
        calls = times(path)
        print(f"{path}: {len(calls)} calls")
        for name, rule in RULES.items():
            slower, unused, logs = [], 0, 0.0
            for call, both in calls.items():
                on_torch = rule(*call)
                chosen = both["torch"] if on_torch else both["cpu"]
                logs += math.log(chosen / min(both.values()))
                if not on_torch and both["cpu"] > 1.05 * both["torch"]:
                    slower.append(f"{call[1]} B{call[2]} T{call[3]} H{call[4]} {both['cpu'] / both['torch']:.2f}x")
                unused += on_torch and both["torch"] > 1.05 * both["cpu"]
            print(f"  {name:24s} slower than nn.LSTM's kernel: {len(slower)} {slower}; faster cpu unused: {unused}; "
                  f"geometric mean {math.exp(logs / len(calls)):.3f}x")


if __name__ == "__main__":
    main()
