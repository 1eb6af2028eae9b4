"""Issue 4's benchmark grid: the Triton LSTM against ``torch.nn.LSTM`` (cuDNN), and the
Triton G2-LSTM against the Triton LSTM (issue 5), on one CUDA device.

Times are medians of ``triton.testing.do_bench`` in milliseconds, for the forward alone
(under ``torch.no_grad``) and for forward + backward (all weights and ``x`` need grads).
One layer, one direction, ``input_size == hidden_size``.

Usage: ``python bench/triton_vs_cudnn.py --out results.json [--quick]``.
"""
from __future__ import annotations

import argparse
import json
import platform

import torch
import triton
import triton.testing

import fusedrnn

#: (B, T, H) of issue 4.
GRID = [(16, 512, 256), (64, 256, 512), (64, 256, 1024), (256, 256, 1024), (16, 1024, 768), (8, 1024, 128)]
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def fwd_bwd(module, x, grad):
    out, (h_n, c_n) = module(x)
    torch.autograd.backward([out, h_n, c_n], [grad, torch.ones_like(h_n), torch.ones_like(c_n)])


def forward_only(module, x):
    with torch.no_grad():
        module(x)


def median_ms(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def measure(batch_size, seq_len, hidden_size, dtype):
    """Times of cuDNN, Triton LSTM and Triton G2 for one shape and dtype, and the Triton
    LSTM output's relative difference from cuDNN's (a sanity check, not the parity test)."""
    torch.manual_seed(0)
    cudnn = torch.nn.LSTM(hidden_size, hidden_size, device="cuda", dtype=dtype)
    triton_lstm = fusedrnn.LSTM.from_torch(cudnn, backend="triton")
    triton_g2 = fusedrnn.G2LSTM(hidden_size, hidden_size, device="cuda", dtype=dtype, backend="triton")
    triton_g2.load_state_dict(cudnn.state_dict())
    x = torch.randn(seq_len, batch_size, hidden_size, device="cuda", dtype=dtype, requires_grad=True)
    grad = torch.randn(seq_len, batch_size, hidden_size, device="cuda", dtype=dtype)
    with torch.no_grad():
        expected, actual = cudnn(x)[0].float(), triton_lstm(x)[0].float()
    row = {"B": batch_size, "T": seq_len, "H": hidden_size, "dtype": str(dtype).replace("torch.", ""),
           "relative_difference_vs_cudnn": ((actual - expected).norm() / expected.norm()).item()}
    for name, module in (("cudnn", cudnn), ("triton", triton_lstm), ("triton_g2", triton_g2)):
        row[f"{name}_fwd_ms"] = median_ms(lambda: forward_only(module, x))
        row[f"{name}_fwd_bwd_ms"] = median_ms(lambda: fwd_bwd(module, x, grad))
    return row


def cudnn_fp16_fwd_bwd(rows, row):
    """cuDNN float16 forward + backward of the same shape (issue 4 compares against it)."""
    match = [r for r in rows if r["dtype"] == "float16" and (r["B"], r["T"], r["H"]) == (row["B"], row["T"], row["H"])]
    return match[0]["cudnn_fwd_bwd_ms"] if match else None


def verdicts(rows):
    """Issue 4 and 5 targets per row: speed-ups and whether each target is met."""
    for row in rows:
        speedup = row["cudnn_fwd_bwd_ms"] / row["triton_fwd_bwd_ms"]
        row["speedup_vs_cudnn_same_dtype"] = speedup
        if row["dtype"] == "float32":
            row["meets_issue4"] = speedup >= 2.0
        else:
            fp16 = cudnn_fp16_fwd_bwd(rows, row)
            meets = fp16 is not None and row["triton_fwd_bwd_ms"] <= fp16
            if row["dtype"] == "bfloat16" and row["B"] <= 64:
                meets = meets and speedup >= 3.0
            row["meets_issue4"] = meets
        row["g2_over_lstm"] = row["triton_g2_fwd_bwd_ms"] / row["triton_fwd_bwd_ms"]
        row["meets_issue5_g2"] = row["g2_over_lstm"] <= 1.15
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="first two shapes only")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    rows = []
    for batch_size, seq_len, hidden_size in GRID[:2] if args.quick else GRID:
        for dtype in DTYPES.values():
            try:
                rows.append(measure(batch_size, seq_len, hidden_size, dtype))
            except fusedrnn.BackendUnavailableError as error:  # a declined shape is a result too
                rows.append({"B": batch_size, "T": seq_len, "H": hidden_size,
                             "dtype": str(dtype).replace("torch.", ""), "declined": str(error)})
            print(json.dumps(rows[-1]), flush=True)
    measured = verdicts([row for row in rows if "declined" not in row])
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "python": platform.python_version(), "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
              "rows": measured + [row for row in rows if "declined" in row]}
    with open(args.out, "w") as file:
        json.dump(result, file, indent=1)
    for row in measured:
        print(f"B{row['B']:<4} T{row['T']:<5} H{row['H']:<5} {row['dtype']:<9} "
              f"cuDNN {row['cudnn_fwd_bwd_ms']:8.3f} ms  triton {row['triton_fwd_bwd_ms']:8.3f} ms  "
              f"x{row['speedup_vs_cudnn_same_dtype']:5.2f}  issue4 {'ok' if row['meets_issue4'] else 'MISS'}  "
              f"G2/LSTM {row['g2_over_lstm']:4.2f} {'ok' if row['meets_issue5_g2'] else 'MISS'}")


if __name__ == "__main__":
    main()
