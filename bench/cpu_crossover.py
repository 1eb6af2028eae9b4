"""Where the compiled ``cpu`` backend beats PyTorch's own kernel (oneDNN) on small calls: the
data behind ``fusedrnn.native.backend.SMALL_CALL``. Host time per functional call, no autograd,
median of three rounds; ``python bench/cpu_crossover.py`` (2 threads)."""
import itertools
import statistics
import time

import torch

from fusedrnn import functional


def per_call_us(backend, x, weights, calls=300):
    for _ in range(20):
        functional.lstm(x, *weights, backend=backend)
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            functional.lstm(x, *weights, backend=backend)
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(rounds)


def main():
    torch.set_num_threads(2)
    print("| H | B | T | T·B·H | torch µs | cpu µs | faster |\n|---|---|---|---|---|---|---|")
    with torch.no_grad():
        for hidden, batch, steps in itertools.product((32, 256), (1, 16), (1, 4, 16)):
            x = torch.randn(steps, batch, hidden)
            weights = (torch.randn(4 * hidden, hidden) / hidden ** 0.5, torch.randn(4 * hidden, hidden) / hidden ** 0.5,
                       torch.zeros(4 * hidden), torch.zeros(4 * hidden))
            times = {backend: per_call_us(backend, x, weights) for backend in ("torch", "cpu")}
            print(f"| {hidden} | {batch} | {steps} | {steps * batch * hidden} | {times['torch']:.0f} | {times['cpu']:.0f} "
                  f"| {min(times, key=times.get)} |")


if __name__ == "__main__":
    main()
