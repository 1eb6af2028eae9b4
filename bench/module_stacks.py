"""``fusedrnn.LSTM`` against ``torch.nn.LSTM`` over stacks of layers and directions, where the
module's path (one call of PyTorch's kernel for the whole stack, or one sweep per layer and
direction) is what differs from the single layer the benchmark times::

    python bench/module_stacks.py --threads 2 --json bench/results/cpu-auto/stacks/results-2threads.json

Modules alternate within each round so that a busy machine slows them alike; each figure is the
median over rounds of ``torch.utils.benchmark``'s median. ``fwdbwd`` takes the gradients of the
input and every weight.
"""
import argparse
import statistics
import sys

import torch
from torch.utils.benchmark import Timer

import fusedrnn
from fusedrnn.bench.report import results_document, save

STACKS = [  # (T, B, H, layers, bidirectional), I = H
    (16, 4, 128, 2, True), (64, 16, 256, 2, False), (64, 16, 256, 2, True), (32, 64, 512, 3, False)]


#: What one call times: a forward without autograd, or a forward and backward.
STATEMENTS = {"fwd": "with torch.no_grad(): module(x)", "fwdbwd": "module(x)[0].sum().backward()"}


def call_ms(module, x, direction, threads):
    context = dict(module=module, x=x, torch=torch)
    timer = Timer(STATEMENTS[direction], globals=context, num_threads=threads)
    return timer.blocked_autorange(min_run_time=0.3).median * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("::")[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="write the rows, the command and the machine here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for dtype in args.dtypes:
        for seq_len, batch_size, hidden_size, layers, bidirectional in STACKS:
            baseline = torch.nn.LSTM(hidden_size, hidden_size, num_layers=layers, bidirectional=bidirectional,
                                     dtype=getattr(torch, dtype))
            modules = {"nn.LSTM": baseline, "auto": fusedrnn.LSTM.from_torch(baseline)}
            x = torch.randn(seq_len, batch_size, hidden_size, dtype=getattr(torch, dtype), requires_grad=True)
            for direction in STATEMENTS:
                times = {name: [] for name in modules}
                for _ in range(args.rounds):
                    for name, module in modules.items():
                        times[name].append(call_ms(module, x, direction, args.threads))
                medians = {name: statistics.median(samples) for name, samples in times.items()}
                row = dict(dtype=dtype, seq_len=seq_len, batch_size=batch_size, hidden_size=hidden_size,
                           layers=layers, bidirectional=bidirectional, direction=direction,
                           nn_lstm_ms=medians["nn.LSTM"], auto_ms=medians["auto"],
                           nn_lstm_over_auto=medians["nn.LSTM"] / medians["auto"])
                rows.append(row)
                print(f"{dtype:9s} T{seq_len} B{batch_size} H{hidden_size} layers {layers} "
                      f"{'bidirectional ' if bidirectional else ''}{direction:6s} nn.LSTM {row['nn_lstm_ms']:.3f} ms  "
                      f"auto {row['auto_ms']:.3f} ms  nn.LSTM/auto {row['nn_lstm_over_auto']:.2f}")
    if args.json:
        save(results_document(["python"] + sys.argv, torch.device("cpu"), rows), args.json)


if __name__ == "__main__":
    main()
