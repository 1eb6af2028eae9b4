"""Issue 5's Mogrifier targets on one CUDA device: the Triton Mogrifier LSTM
(``mogrify_steps = 5``, full rank) against an eager PyTorch loop (the reference backend)
in float32, and against ``torch.nn.LSTM`` float16 on the plain LSTM of the same shape.

Times are medians of ``triton.testing.do_bench`` in milliseconds for forward + backward
(all weights and ``x`` need grads). One layer, one direction, ``input_size == hidden_size``.

Usage: ``python bench/mogrifier_vs_eager.py --out results.json [--quick]``.
"""
from __future__ import annotations

import argparse
import json
import platform

import torch
import triton
import triton.testing

import fusedrnn

#: (B, T, H) of issue 5.
GRID = [(16, 512, 256), (64, 256, 512), (64, 256, 1024), (256, 256, 1024)]
ROUNDS = 5


def fwd_bwd(module, x, grad):
    out, (h_n, c_n) = module(x)
    torch.autograd.backward([out, h_n, c_n], [grad, torch.ones_like(h_n), torch.ones_like(c_n)])


def median_ms(fn, rep):
    return triton.testing.do_bench(fn, warmup=10, rep=rep, return_mode="median")


def measure(batch_size, seq_len, hidden_size):
    """Forward + backward times of the Triton Mogrifier and the eager loop (float32), and of
    ``nn.LSTM`` float16; plus the two Mogrifier outputs' relative difference (a sanity check,
    not the parity test)."""
    torch.manual_seed(0)
    triton_mogrifier = fusedrnn.MogrifierLSTM(hidden_size, hidden_size, mogrify_steps=ROUNDS, device="cuda",
                                              backend="triton")
    eager = fusedrnn.MogrifierLSTM(hidden_size, hidden_size, mogrify_steps=ROUNDS, device="cuda",
                                   backend="reference")
    eager.load_state_dict(triton_mogrifier.state_dict())
    cudnn_fp16 = torch.nn.LSTM(hidden_size, hidden_size, device="cuda", dtype=torch.float16)
    x = torch.randn(seq_len, batch_size, hidden_size, device="cuda", requires_grad=True)
    grad = torch.randn(seq_len, batch_size, hidden_size, device="cuda")
    x16, grad16 = x.detach().half().requires_grad_(), grad.half()
    with torch.no_grad():
        expected, actual = eager(x)[0], triton_mogrifier(x)[0]
    row = {"B": batch_size, "T": seq_len, "H": hidden_size, "mogrify_steps": ROUNDS,
           "relative_difference_vs_eager": ((actual - expected).norm() / expected.norm()).item(),
           "triton_fwd_bwd_ms": median_ms(lambda: fwd_bwd(triton_mogrifier, x, grad), rep=300),
           "eager_fwd_bwd_ms": median_ms(lambda: fwd_bwd(eager, x, grad), rep=1000),
           "cudnn_fp16_lstm_fwd_bwd_ms": median_ms(lambda: fwd_bwd(cudnn_fp16, x16, grad16), rep=300)}
    row["speedup_vs_eager"] = row["eager_fwd_bwd_ms"] / row["triton_fwd_bwd_ms"]
    row["over_cudnn_fp16_lstm"] = row["triton_fwd_bwd_ms"] / row["cudnn_fp16_lstm_fwd_bwd_ms"]
    row["meets_issue5"] = row["speedup_vs_eager"] >= 50 and row["over_cudnn_fp16_lstm"] <= 3
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="first two shapes only")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    rows = []
    for batch_size, seq_len, hidden_size in GRID[:2] if args.quick else GRID:
        rows.append(measure(batch_size, seq_len, hidden_size))
        print(json.dumps(rows[-1]), flush=True)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "python": platform.python_version(), "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
              "rows": rows}
    with open(args.out, "w") as file:
        json.dump(result, file, indent=1)
    for row in rows:
        print(f"B{row['B']:<4} T{row['T']:<4} H{row['H']:<5} triton {row['triton_fwd_bwd_ms']:8.3f} ms  "
              f"eager x{row['speedup_vs_eager']:6.1f}  nn.LSTM fp16 x{row['over_cudnn_fp16_lstm']:5.2f}  "
              f"issue5 {'ok' if row['meets_issue5'] else 'MISS'}")


if __name__ == "__main__":
    main()
