"""Host time per call when decoding one step at a time (T = 1), fusedrnn against nn.LSTM:
``python bench/host_overhead.py`` (CPU, one thread, no autograd; median of three rounds)."""
import statistics
import time

import torch

import fusedrnn


def per_call_us(module, x, state, calls=3000):
    for _ in range(50):
        module(x, state)
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            module(x, state)
        rounds.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(rounds)


def main():
    torch.set_num_threads(1)
    reference = torch.nn.LSTM(32, 32, num_layers=2)
    x, state = torch.randn(1, 1, 32), (torch.zeros(2, 1, 32), torch.zeros(2, 1, 32))
    with torch.no_grad():
        baseline = per_call_us(reference, x, state)
        print(f"nn.LSTM: {baseline:.0f} µs per call (2 layers, H = 32, B = 1, T = 1)")
        for backend in ("auto", "cpu", "reference"):
            fused = per_call_us(fusedrnn.LSTM.from_torch(reference, backend=backend), x, state)
            print(f"fusedrnn.LSTM backend={backend}: {fused:.0f} µs ({fused / baseline:.2f}x nn.LSTM)")


if __name__ == "__main__":
    main()
