"""Host time per call of ``fusedrnn.LSTM`` against ``torch.nn.LSTM`` when decoding: one time
step per call, batch 1 by default, the state fed back, under ``no_grad``. At this size the kernels
cost little and the module's Python path is what a user waits for (issue: at most 1.2× nn.LSTM's).

    python bench/module_overhead.py --json bench/results/cpu-overhead/results.json
    python bench/module_overhead.py --dtype bfloat16 --hidden-size 64 --backends auto torch cpu

Modules and rounds alternate (nn.LSTM, then each backend, per round) so that a busy machine
slows them alike; each figure is the median over rounds of ``torch.utils.benchmark``'s median.
"""
import argparse
import datetime
import json
import shlex
import statistics
import sys

import torch
from torch.utils.benchmark import Timer

import fusedrnn
from fusedrnn.bench.implementations import unavailable
from fusedrnn.bench.report import machine_info


def decode_us(module, x, state, min_run_time):
    """Median µs of one call ``module(x, state)``, the returned state fed to the next call."""
    def step():
        nonlocal state
        _, state = module(x, state)
    timer = Timer("step()", globals={"step": step}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e6


def profile_table(module, x, state, calls=50):
    """torch.profiler's table of ``calls`` one-step calls of ``module``, by host time."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if x.is_cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(calls):
            _, state = module(x, state)
        if x.is_cuda:
            torch.cuda.synchronize()
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backends", nargs="+", default=["auto", "cpu"] if not torch.cuda.is_available() else
                        ["auto", "triton", "cuda"])
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="write the rows, the command and the machine here")
    parser.add_argument("--profile", help="write here, per module, torch.profiler's table of 50 calls: where the "
                        "host time goes (operators, kernel launches)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name in list(filter(unavailable, args.backends)):  # as the benchmark command skips them
        print(f"# skipping {name}: {unavailable(name)}", file=sys.stderr)
        args.backends.remove(name)
    device, size, batch, rows = torch.device(args.device), args.hidden_size, args.batch_size, []
    factory = dict(device=device, dtype=getattr(torch, args.dtype))
    with torch.no_grad():
        for layers in args.layers:
            baseline = torch.nn.LSTM(size, size, num_layers=layers, **factory)
            modules = {"nn.LSTM": baseline, **{name: fusedrnn.LSTM.from_torch(baseline, backend=name)
                                               for name in args.backends}}
            x = torch.randn(1, batch, size, **factory)
            state = (torch.randn(layers, batch, size, **factory), torch.randn(layers, batch, size, **factory))
            for module in modules.values():  # compiles and first-call checks stay out of the timing
                module(x, state)
            times = {name: [] for name in modules}
            for _ in range(args.rounds):
                for name, module in modules.items():
                    times[name].append(decode_us(module, x, state, min_run_time=0.1))
            baseline_us = statistics.median(times["nn.LSTM"])
            for name, samples in times.items():
                us = statistics.median(samples)
                rows.append({"implementation": name, "layers": layers, "hidden_size": size, "batch_size": batch,
                             "dtype": args.dtype, "us_per_call": us, "x_nn_lstm": us / baseline_us})
                print(f"layers {layers}  {name:8s} {us:7.1f} µs per call  {us / baseline_us:.2f}× nn.LSTM's")
            if args.profile:
                with open(args.profile, "a") as file:
                    for name, module in modules.items():
                        file.write(f"== {name}, {layers} layer(s), {args.dtype}, B {batch}, H {size}\n"
                                   f"{profile_table(module, x, state)}\n")
    if args.json:
        document = {"command": shlex.join(["python"] + sys.argv), "date": datetime.date.today().isoformat(),
                    "machine": machine_info(device), "rows": rows}
        with open(args.json, "w") as file:
            json.dump(document, file, indent=1)
            file.write("\n")


if __name__ == "__main__":
    main()
