"""The raw operators ``torch.ops.fusedrnn.*`` check their arguments (csrc/checks.h).

Each row of ``CHECKS`` starts from a valid call of one operator, spoils one argument and
names the error the call must raise: together, a specification of what the operators
accept. The calls go straight to ``torch.ops``, past the validation of fusedrnn.functional.
"""
import re

import pytest
import torch

import fusedrnn
from fusedrnn.ext import build
from fusedrnn.noise import sample_noise
from fusedrnn.sweep import join_round_weights

from conftest import assert_close, tolerance

T, B, I, H = 5, 64, 16, 32  # all distinct, so that no swapped dimension passes
ROUNDS = 3
RANK = 4  # round 3 is low rank, (I, RANK) @ (RANK, H); rounds 1 and 2 full rank
LOW_RANK = [False, False, True]
FORWARD_OUTPUTS = {
    "lstm": ["output", "h_n", "c_n", "gates", "cells", "h_prev"],
    "mogrifier": ["output", "h_n", "c_n", "gates", "cells", "h_prev", "chains", "round_gates"],
}


@pytest.fixture(scope="module", autouse=True)
def cpu_library():
    reason = build.load_error("cpu")
    if reason is not None:
        pytest.skip(f"the cpu extension is unavailable: {reason}")


def operator(name):
    return getattr(torch.ops.fusedrnn, name)


def forward_args(cell, dtype=torch.float32, device="cpu", save=True):
    """Valid keyword arguments of ``<cell>_forward``: for "lstm" a noisy G2 sweep, so that
    the noise is checked too; lengths from 0 (allowed: the row keeps its state) to T."""
    generator = torch.Generator().manual_seed(17)
    accumulate = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    def rand(*shape, scale=1.0, dtype=dtype):
        return ((torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * scale).to(device, dtype)

    lengths = torch.randint(0, T + 1, (B,), generator=generator)
    lengths[:2] = torch.tensor([0, T])
    args = dict(x=rand(T, B, I), h0=rand(B, H), c0=rand(B, H), weight_ih=rand(4 * H, I, scale=H ** -0.5),
                weight_hh=rand(4 * H, H, scale=H ** -0.5), bias=rand(4 * H, scale=0.1, dtype=accumulate))
    lengths = lengths.to(device)
    if cell == "lstm":
        noise = sample_noise(T, B, H, 0.5, generator=generator).to(device)
        return dict(args, lengths=lengths, noise=noise, reverse=False, temperature=0.8, gate_mode="noisy", save=save)
    sizes = [(I, H) if j % 2 else (H, I) for j in range(1, ROUNDS + 1)]
    weights = [rand(size[0], RANK, scale=0.7) if factored else rand(*size, scale=size[1] ** -0.5)
               for size, factored in zip(sizes, LOW_RANK)]
    right_factors = [rand(RANK, size[1], scale=0.7) for size, factored in zip(sizes, LOW_RANK) if factored]
    return dict(args, mogrify_weights=weights, mogrify_low_rank=LOW_RANK, mogrify_right_factors=right_factors,
                mogrify_biases=[rand(size[0], scale=0.3) for size in sizes], lengths=lengths, reverse=False,
                save=save)


def run_forward(cell, args):
    return dict(zip(FORWARD_OUTPUTS[cell], operator(f"{cell}_forward")(**args)))


def unsaved(cell, name):
    """A forward output without ``save``: scratch of one or two steps, not all T."""
    return run_forward(cell, forward_args(cell, save=False))[name]


def backward_args(cell, inputs, saved, grads):
    """Keyword arguments of ``<cell>_backward`` after ``<cell>_forward(**inputs)`` returned
    ``saved``, with ``grads`` of its output, h_n and c_n."""
    args = dict(grad_output=grads["output"], grad_h_n=grads["h_n"], grad_c_n=grads["c_n"],
                **{name: inputs[name] for name in ("x", "c0", "weight_ih", "weight_hh")},
                **{name: saved[name] for name in ("gates", "cells", "h_prev")})
    if cell == "lstm":
        return dict(args, lengths=inputs["lengths"], reverse=inputs["reverse"], temperature=inputs["temperature"],
                    gate_mode=inputs["gate_mode"])
    return dict(args, **{name: inputs[name] for name in ("mogrify_weights", "mogrify_low_rank",
                                                         "mogrify_right_factors")},
                chains=saved["chains"], round_gates=saved["round_gates"], lengths=inputs["lengths"],
                reverse=inputs["reverse"])


def output_grads(saved):
    generator = torch.Generator().manual_seed(71)
    return {name: torch.randn(saved[name].shape, generator=generator, dtype=torch.float64).to(saved[name])
            for name in ("output", "h_n", "c_n")}


def valid_args(op, dtype=torch.float32, device="cpu"):
    cell, direction = op.split("_")
    inputs = forward_args(cell, dtype, device)
    if direction == "forward":
        return inputs
    saved = run_forward(cell, inputs)
    return backward_args(cell, inputs, saved, output_grads(saved))


def strided(tensor):
    """``tensor``'s values and shape in a layout that is not contiguous."""
    return torch.empty(*tensor.shape, 2, dtype=tensor.dtype)[..., 0].copy_(tensor)


def replaced(tensors, index, value):
    return [value if k == index else tensor for k, tensor in enumerate(tensors)]


def lengths_with(args, value):
    lengths = args["lengths"].clone()
    lengths[3] = value
    return lengths


SHAPE = "(T, B, I from x, H from weight_hh), got"
TEMPERATURE = "temperature must be finite and >= 2**-126 (float32's smallest normal number)"

# (operator, argument, what is wrong, bad value from the valid arguments, error, message fragment)
CHECKS = [
    # x and weight_hh set T, B, I and H; every operator checks them first.
    ("lstm_forward", "x", "rank 2", lambda a: a["x"][0], ValueError,
     "fusedrnn.lstm_forward: x must have 3 dimensions (T, B, I), got shape (64, 16)"),
    ("lstm_forward", "x", "T=0", lambda a: a["x"][:0], ValueError,
     "x must have at least one time step (T >= 1), got shape (0, 64, 16)"),
    ("lstm_forward", "x", "float16", lambda a: a["x"].half(), TypeError,
     "x must be torch.float32 or torch.float64 (the CPU kernels' types), got torch.float16"),
    ("lstm_forward", "x", "int64", lambda a: a["x"].long(), TypeError, "x must be torch.float32 or torch.float64"),
    ("lstm_forward", "x", "strided", lambda a: strided(a["x"]), ValueError,
     "x must be contiguous, got strides (2048, 32, 2) for shape (5, 64, 16)"),
    ("lstm_forward", "weight_hh", "not 4H rows", lambda a: a["weight_hh"][:-1], ValueError,
     "weight_hh must have shape (4H, H), got (127, 32)"),
    ("lstm_forward", "weight_hh", "rank 3", lambda a: a["weight_hh"][None], ValueError,
     "weight_hh must have shape (4H, H), got (1, 128, 32)"),
    ("lstm_forward", "weight_hh", "float64", lambda a: a["weight_hh"].double(), TypeError,
     "weight_hh must be torch.float32 like x, got torch.float64"),
    ("lstm_forward", "weight_hh", "strided", lambda a: strided(a["weight_hh"]), ValueError,
     "weight_hh must be contiguous"),
    # lstm_forward: the crashes and silent wrong numbers first.
    ("lstm_forward", "h0", "batch 1 with batch 64 x (issue 17 abort)", lambda a: a["h0"][:1], ValueError,
     f"fusedrnn.lstm_forward: h0 must have shape (B, H) = (64, 32) {SHAPE} (1, 32)"),
    ("lstm_forward", "gate_mode", "unknown name (issue 17 uninitialised output)", lambda a: "gumbel", ValueError,
     "fusedrnn.lstm_forward: gate_mode must be one of ('noisy', 'soft', 'hard'), got 'gumbel'"),
    ("lstm_forward", "noise", "strided (issue 17)", lambda a: strided(a["noise"]), ValueError,
     "noise must be contiguous, got strides (8192, 128, 64, 2) for shape (5, 64, 2, 32)"),
    ("lstm_forward", "lengths", "above T (issue 17)", lambda a: lengths_with(a, T + 1), ValueError,
     "lengths must lie in [0, 5] (the sequence length T), got values in [0, 6]"),
    ("lstm_forward", "lengths", "one too many (issue 17)", lambda a: torch.cat([a["lengths"], a["lengths"][:1]]),
     ValueError, f"lengths must have shape (B,) = (64,) {SHAPE} (65,)"),
    ("lstm_forward", "lengths", "one too few", lambda a: a["lengths"][1:], ValueError,
     f"lengths must have shape (B,) = (64,) {SHAPE} (63,)"),
    ("lstm_forward", "lengths", "negative", lambda a: lengths_with(a, -1), ValueError,
     "lengths must lie in [0, 5] (the sequence length T), got values in [-1, 5]"),
    ("lstm_forward", "lengths", "rank 2", lambda a: a["lengths"][:, None], ValueError,
     f"lengths must have shape (B,) = (64,) {SHAPE} (64, 1)"),
    ("lstm_forward", "lengths", "int32", lambda a: a["lengths"].int(), TypeError,
     "lengths must be torch.int64 (steps per batch row), got torch.int32"),
    ("lstm_forward", "lengths", "float32", lambda a: a["lengths"].float(), TypeError,
     "lengths must be torch.int64 (steps per batch row), got torch.float32"),
    ("lstm_forward", "lengths", "strided", lambda a: strided(a["lengths"]), ValueError,
     "lengths must be contiguous"),
    ("lstm_forward", "h0", "float64", lambda a: a["h0"].double(), TypeError,
     "h0 must be torch.float32 like x, got torch.float64"),
    ("lstm_forward", "c0", "hidden + 1", lambda a: torch.cat([a["c0"], a["c0"][:, :1]], 1), ValueError,
     f"c0 must have shape (B, H) = (64, 32) {SHAPE} (64, 33)"),
    ("lstm_forward", "c0", "transposed", lambda a: a["c0"].t().contiguous().t(), ValueError,
     "c0 must be contiguous, got strides (1, 64) for shape (64, 32)"),
    ("lstm_forward", "weight_ih", "input + 1", lambda a: torch.zeros(4 * H, I + 1), ValueError,
     f"weight_ih must have shape (4H, I) = (128, 16) {SHAPE} (128, 17)"),
    ("lstm_forward", "weight_ih", "float64", lambda a: a["weight_ih"].double(), TypeError,
     "weight_ih must be torch.float32 like x, got torch.float64"),
    ("lstm_forward", "bias", "rank 2", lambda a: a["bias"][None], ValueError,
     f"bias must have shape (4H,) = (128,) {SHAPE} (1, 128)"),
    ("lstm_forward", "bias", "float64", lambda a: a["bias"].double(), TypeError,
     "bias must be torch.float32 (the accumulation type of x's torch.float32), got torch.float64"),
    ("lstm_forward", "noise", "(T, B, H, 2)", lambda a: a["noise"].transpose(2, 3).contiguous(), ValueError,
     f"noise must have shape (T, B, 2, H) = (5, 64, 2, 32) {SHAPE} (5, 64, 32, 2)"),
    ("lstm_forward", "noise", "float64", lambda a: a["noise"].double(), TypeError,
     "noise must be torch.float32 (the G2 noise is float32 for every dtype of x), got torch.float64"),
    ("lstm_forward", "noise", "missing with gate_mode noisy", lambda a: None, ValueError,
     "noise must be given exactly when gate_mode is 'noisy', got no noise with gate_mode 'noisy'"),
    ("lstm_forward", "gate_mode", "soft with noise", lambda a: "soft", ValueError,
     "noise must be given exactly when gate_mode is 'noisy', got noise with gate_mode 'soft'"),
    ("lstm_forward", "gate_mode", "a name in capitals", lambda a: "NOISY", ValueError,
     "gate_mode must be one of ('noisy', 'soft', 'hard'), got 'NOISY'"),
    ("lstm_forward", "temperature", "0", lambda a: 0.0, ValueError, f"{TEMPERATURE}, got 0"),
    ("lstm_forward", "temperature", "negative", lambda a: -0.5, ValueError, f"{TEMPERATURE}, got -0.5"),
    ("lstm_forward", "temperature", "nan", lambda a: float("nan"), ValueError, f"{TEMPERATURE}, got nan"),
    ("lstm_forward", "temperature", "inf", lambda a: float("inf"), ValueError, f"{TEMPERATURE}, got inf"),
    ("lstm_forward", "temperature", "1/τ beyond float32", lambda a: 1e-39, ValueError, f"{TEMPERATURE}, got 1e-39"),
    # As torch.nn.LSTM, no empty input or hidden size (the products would reshape nothing).
    ("lstm_forward", "x", "I=0", lambda a: a["x"][..., :0], ValueError,
     "fusedrnn.lstm_forward: x (T, B, I) and weight_hh (4H, H) must have I >= 1 and H >= 1, got I = 0 and H = 32"),
    ("lstm_forward", "weight_hh", "H=0", lambda a: torch.zeros(0, 0), ValueError,
     "must have I >= 1 and H >= 1, got I = 16 and H = 0"),
    # A meta tensor among CPU ones reaches the fake implementation, past the C++ checks.
    ("lstm_forward", "lengths", "on meta", lambda a: a["lengths"].to("meta"), ValueError,
     "fusedrnn::lstm_forward: lengths must be on x's device cpu, got meta"),
    ("lstm_forward", "noise", "on meta", lambda a: a["noise"].to("meta"), ValueError,
     "noise must be on x's device cpu, got meta"),
    # lstm_backward: the forward's saved tensors must hold all T steps.
    ("lstm_backward", "x", "rank 2", lambda a: a["x"][0], ValueError,
     "fusedrnn.lstm_backward: x must have 3 dimensions (T, B, I)"),
    ("lstm_backward", "weight_hh", "not 4H rows", lambda a: a["weight_hh"][:-1], ValueError,
     "weight_hh must have shape (4H, H), got (127, 32)"),
    ("lstm_backward", "grad_output", "hidden - 1", lambda a: a["grad_output"][..., 1:].contiguous(), ValueError,
     f"fusedrnn.lstm_backward: grad_output must have shape (T, B, H) = (5, 64, 32) {SHAPE} (5, 64, 31)"),
    ("lstm_backward", "grad_output", "float64", lambda a: a["grad_output"].double(), TypeError,
     "grad_output must be torch.float32 like x, got torch.float64"),
    ("lstm_backward", "grad_h_n", "batch 1", lambda a: a["grad_h_n"][:1], ValueError,
     f"grad_h_n must have shape (B, H) = (64, 32) {SHAPE} (1, 32)"),
    ("lstm_backward", "grad_c_n", "transposed", lambda a: a["grad_c_n"].t().contiguous().t(), ValueError,
     "grad_c_n must be contiguous"),
    ("lstm_backward", "c0", "batch 1", lambda a: a["c0"][:1], ValueError,
     f"c0 must have shape (B, H) = (64, 32) {SHAPE} (1, 32)"),
    ("lstm_backward", "weight_ih", "input + 1", lambda a: torch.zeros(4 * H, I + 1), ValueError,
     f"weight_ih must have shape (4H, I) = (128, 16) {SHAPE} (128, 17)"),
    ("lstm_backward", "gates", "T - 1 steps", lambda a: a["gates"][1:], ValueError,
     f"gates must have shape (T, B, 4H) = (5, 64, 128) {SHAPE} (4, 64, 128)"),
    ("lstm_backward", "gates", "float64", lambda a: a["gates"].double(), TypeError,
     "gates must be torch.float32 (the accumulation type of x's torch.float32), got torch.float64"),
    ("lstm_backward", "cells", "from a forward without save", lambda a: unsaved("lstm", "cells"), ValueError,
     f"cells must have shape (T, B, H) = (5, 64, 32) {SHAPE} (2, 64, 32)"),
    ("lstm_backward", "cells", "strided", lambda a: strided(a["cells"]), ValueError, "cells must be contiguous"),
    ("lstm_backward", "h_prev", "from a forward without save", lambda a: unsaved("lstm", "h_prev"), ValueError,
     f"h_prev must have shape (T, B, H) = (5, 64, 32) {SHAPE} (2, 64, 32)"),
    ("lstm_backward", "h_prev", "float64", lambda a: a["h_prev"].double(), TypeError,
     "h_prev must be torch.float32 like x, got torch.float64"),
    ("lstm_backward", "lengths", "above T", lambda a: lengths_with(a, T + 1), ValueError,
     "fusedrnn.lstm_backward: lengths must lie in [0, 5] (the sequence length T), got values in [0, 6]"),
    ("lstm_backward", "lengths", "one too many", lambda a: torch.cat([a["lengths"], a["lengths"][:1]]),
     ValueError, f"lengths must have shape (B,) = (64,) {SHAPE} (65,)"),
    ("lstm_backward", "lengths", "int32", lambda a: a["lengths"].int(), TypeError,
     "lengths must be torch.int64 (steps per batch row), got torch.int32"),
    ("lstm_backward", "gate_mode", "empty name", lambda a: "", ValueError,
     "fusedrnn.lstm_backward: gate_mode must be one of ('noisy', 'soft', 'hard'), got ''"),
    ("lstm_backward", "temperature", "0", lambda a: 0.0, ValueError, f"fusedrnn.lstm_backward: {TEMPERATURE}, got 0"),
    ("lstm_backward", "gates", "on meta", lambda a: a["gates"].to("meta"), ValueError,
     "fusedrnn::lstm_backward: gates must be on x's device cpu, got meta"),
    # mogrifier_forward: round j (1-based) maps the other chain to its own.
    ("mogrifier_forward", "x", "rank 2", lambda a: a["x"][0], ValueError,
     "fusedrnn.mogrifier_forward: x must have 3 dimensions (T, B, I)"),
    ("mogrifier_forward", "weight_hh", "not 4H rows", lambda a: a["weight_hh"][:-1], ValueError,
     "weight_hh must have shape (4H, H), got (127, 32)"),
    ("mogrifier_forward", "h0", "batch 1", lambda a: a["h0"][:1], ValueError,
     f"fusedrnn.mogrifier_forward: h0 must have shape (B, H) = (64, 32) {SHAPE} (1, 32)"),
    ("mogrifier_forward", "c0", "float64", lambda a: a["c0"].double(), TypeError,
     "c0 must be torch.float32 like x, got torch.float64"),
    ("mogrifier_forward", "weight_ih", "input + 1", lambda a: torch.zeros(4 * H, I + 1), ValueError,
     f"weight_ih must have shape (4H, I) = (128, 16) {SHAPE} (128, 17)"),
    ("mogrifier_forward", "bias", "4H - 1", lambda a: a["bias"][1:], ValueError,
     f"bias must have shape (4H,) = (128,) {SHAPE} (127,)"),
    ("mogrifier_forward", "mogrify_weights", "round 1 transposed",
     lambda a: replaced(a["mogrify_weights"], 0, a["mogrify_weights"][0].t().contiguous()), ValueError,
     f"mogrify_weights[0] (round 1) must have shape (I, H) = (16, 32) {SHAPE} (32, 16)"),
    ("mogrifier_forward", "mogrify_weights", "round 2 transposed",
     lambda a: replaced(a["mogrify_weights"], 1, a["mogrify_weights"][1].t().contiguous()), ValueError,
     f"mogrify_weights[1] (round 2) must have shape (H, I) = (32, 16) {SHAPE} (16, 32)"),
    ("mogrifier_forward", "mogrify_weights", "round 3 float64",
     lambda a: replaced(a["mogrify_weights"], 2, a["mogrify_weights"][2].double()), TypeError,
     "mogrify_weights[2] (round 3) must be torch.float32 like x, got torch.float64"),
    ("mogrifier_forward", "mogrify_weights", "round 1 strided",
     lambda a: replaced(a["mogrify_weights"], 0, strided(a["mogrify_weights"][0])), ValueError,
     "mogrify_weights[0] (round 1) must be contiguous"),
    # A low-rank round: its flag, its left factor in mogrify_weights, its right factor next in
    # mogrify_right_factors.
    ("mogrifier_forward", "mogrify_low_rank", "one too few", lambda a: LOW_RANK[:-1], ValueError,
     "mogrify_low_rank must hold one entry per round (3, as mogrify_weights), got 2"),
    ("mogrifier_forward", "mogrify_low_rank", "round 3 marked full rank", lambda a: [False] * ROUNDS, ValueError,
     "mogrify_right_factors must hold one tensor per low-rank round (0, as mogrify_low_rank), got 1"),
    ("mogrifier_forward", "mogrify_right_factors", "missing", lambda a: [], ValueError,
     "mogrify_right_factors must hold one tensor per low-rank round (1, as mogrify_low_rank), got 0"),
    ("mogrifier_forward", "mogrify_weights", "round 3 left factor transposed",
     lambda a: replaced(a["mogrify_weights"], 2, a["mogrify_weights"][2].t().contiguous()), ValueError,
     "mogrify_weights[2] (round 3) must have shape (I, k) = (16, k) (the left factor of a low-rank round; "
     "I from x), got (4, 16)"),
    ("mogrifier_forward", "mogrify_weights", "round 3 left factor a vector",
     lambda a: replaced(a["mogrify_weights"], 2, a["mogrify_weights"][2][:, 0].contiguous()), ValueError,
     "mogrify_weights[2] (round 3) must have shape (I, k) = (16, k)"),
    ("mogrifier_forward", "mogrify_weights", "round 3 left factor strided",
     lambda a: replaced(a["mogrify_weights"], 2, strided(a["mogrify_weights"][2])), ValueError,
     "mogrify_weights[2] (round 3) must be contiguous"),
    ("mogrifier_forward", "mogrify_weights", "round 3 left factor of rank 0",
     lambda a: replaced(a["mogrify_weights"], 2, torch.zeros(I, 0)), ValueError,
     "mogrify_weights[2] (round 3) must have rank k >= 1, got shape (16, 0)"),
    ("mogrifier_forward", "mogrify_weights", "round 1 on meta",
     lambda a: replaced(a["mogrify_weights"], 0, a["mogrify_weights"][0].to("meta")), ValueError,
     "fusedrnn::mogrifier_forward: mogrify_weights must be on x's device cpu, got meta"),
    ("mogrifier_forward", "mogrify_right_factors", "rank k - 1", lambda a: [a["mogrify_right_factors"][0][1:]],
     ValueError, "mogrify_right_factors[0] (round 3) must have shape (k, H) = (4, 32) (k from mogrify_weights[2] "
     "(round 3), H from weight_hh), got (3, 32)"),
    ("mogrifier_forward", "mogrify_right_factors", "transposed",
     lambda a: [a["mogrify_right_factors"][0].t().contiguous()], ValueError,
     "mogrify_right_factors[0] (round 3) must have shape (k, H) = (4, 32)"),
    ("mogrifier_forward", "mogrify_right_factors", "float64", lambda a: [a["mogrify_right_factors"][0].double()],
     TypeError, "mogrify_right_factors[0] (round 3) must be torch.float32 like x, got torch.float64"),
    ("mogrifier_forward", "mogrify_right_factors", "strided", lambda a: [strided(a["mogrify_right_factors"][0])],
     ValueError, "mogrify_right_factors[0] (round 3) must be contiguous"),
    ("mogrifier_forward", "mogrify_biases", "one too few", lambda a: a["mogrify_biases"][:-1], ValueError,
     "mogrify_biases must be empty or hold one tensor per round (3, as mogrify_weights), got 2"),
    ("mogrifier_forward", "mogrify_biases", "round 2 of width I",
     lambda a: replaced(a["mogrify_biases"], 1, a["mogrify_biases"][0]), ValueError,
     f"mogrify_biases[1] (round 2) must have shape (H,) = (32,) {SHAPE} (16,)"),
    ("mogrifier_forward", "mogrify_biases", "round 1 float64",
     lambda a: replaced(a["mogrify_biases"], 0, a["mogrify_biases"][0].double()), TypeError,
     "mogrify_biases[0] (round 1) must be torch.float32 like x, got torch.float64"),
    ("mogrifier_forward", "lengths", "above T", lambda a: lengths_with(a, T + 1), ValueError,
     "fusedrnn.mogrifier_forward: lengths must lie in [0, 5] (the sequence length T), got values in [0, 6]"),
    ("mogrifier_forward", "lengths", "one too few", lambda a: a["lengths"][1:], ValueError,
     f"lengths must have shape (B,) = (64,) {SHAPE} (63,)"),
    ("mogrifier_forward", "lengths", "int32", lambda a: a["lengths"].int(), TypeError,
     "lengths must be torch.int64 (steps per batch row), got torch.int32"),
    # mogrifier_backward: one chain and one round gate per round, all T steps.
    ("mogrifier_backward", "x", "strided", lambda a: strided(a["x"]), ValueError,
     "fusedrnn.mogrifier_backward: x must be contiguous"),
    ("mogrifier_backward", "weight_hh", "not 4H rows", lambda a: a["weight_hh"][:-1], ValueError,
     "weight_hh must have shape (4H, H), got (127, 32)"),
    ("mogrifier_backward", "grad_output", "batch - 1", lambda a: a["grad_output"][:, 1:].contiguous(), ValueError,
     f"grad_output must have shape (T, B, H) = (5, 64, 32) {SHAPE} (5, 63, 32)"),
    ("mogrifier_backward", "grad_h_n", "float64", lambda a: a["grad_h_n"].double(), TypeError,
     "grad_h_n must be torch.float32 like x, got torch.float64"),
    ("mogrifier_backward", "gates", "from a forward without save", lambda a: unsaved("mogrifier", "gates"),
     ValueError, f"gates must have shape (T, B, 4H) = (5, 64, 128) {SHAPE} (1, 64, 128)"),
    ("mogrifier_backward", "cells", "float64", lambda a: a["cells"].double(), TypeError,
     "cells must be torch.float32 (the accumulation type of x's torch.float32), got torch.float64"),
    ("mogrifier_backward", "h_prev", "from a forward without save", lambda a: unsaved("mogrifier", "h_prev"),
     ValueError, f"h_prev must have shape (T, B, H) = (5, 64, 32) {SHAPE} (2, 64, 32)"),
    ("mogrifier_backward", "mogrify_weights", "round 2 transposed",
     lambda a: replaced(a["mogrify_weights"], 1, a["mogrify_weights"][1].t().contiguous()), ValueError,
     f"mogrify_weights[1] (round 2) must have shape (H, I) = (32, 16) {SHAPE} (16, 32)"),
    ("mogrifier_backward", "mogrify_low_rank", "one too many", lambda a: LOW_RANK + [False], ValueError,
     "fusedrnn.mogrifier_backward: mogrify_low_rank must hold one entry per round (3, as mogrify_weights), got 4"),
    ("mogrifier_backward", "mogrify_right_factors", "rank k + 1",
     lambda a: [torch.cat([a["mogrify_right_factors"][0], a["mogrify_right_factors"][0][:1]])], ValueError,
     "mogrify_right_factors[0] (round 3) must have shape (k, H) = (4, 32) (k from mogrify_weights[2] (round 3), "
     "H from weight_hh), got (5, 32)"),
    ("mogrifier_backward", "chains", "one too few", lambda a: a["chains"][:-1], ValueError,
     "chains must hold one entry per round (3, as mogrify_weights), got 2"),
    ("mogrifier_backward", "round_gates", "one too many", lambda a: a["round_gates"] + a["round_gates"][:1],
     ValueError, "round_gates must hold one entry per round (3, as mogrify_weights), got 4"),
    ("mogrifier_backward", "chains", "round 1 from a forward without save",
     lambda a: replaced(a["chains"], 0, unsaved("mogrifier", "chains")[0]), ValueError,
     f"chains[0] (round 1) must have shape (T, B, I) = (5, 64, 16) {SHAPE} (1, 64, 16)"),
    ("mogrifier_backward", "chains", "round 2 float64",
     lambda a: replaced(a["chains"], 1, a["chains"][1].double()), TypeError,
     "chains[1] (round 2) must be torch.float32 like x, got torch.float64"),
    ("mogrifier_backward", "round_gates", "round 2 of width I",
     lambda a: replaced(a["round_gates"], 1, a["round_gates"][0]), ValueError,
     f"round_gates[1] (round 2) must have shape (T, B, H) = (5, 64, 32) {SHAPE} (5, 64, 16)"),
    ("mogrifier_backward", "round_gates", "round 3 float64",
     lambda a: replaced(a["round_gates"], 2, a["round_gates"][2].double()), TypeError,
     "round_gates[2] (round 3) must be torch.float32 (the accumulation type of x's torch.float32), "
     "got torch.float64"),
    ("mogrifier_backward", "round_gates", "round 1 strided",
     lambda a: replaced(a["round_gates"], 0, strided(a["round_gates"][0])), ValueError,
     "round_gates[0] (round 1) must be contiguous"),
    ("mogrifier_backward", "lengths", "above T", lambda a: lengths_with(a, T + 1), ValueError,
     "fusedrnn.mogrifier_backward: lengths must lie in [0, 5] (the sequence length T), got values in [0, 6]"),
    ("mogrifier_backward", "lengths", "one too many", lambda a: torch.cat([a["lengths"], a["lengths"][:1]]),
     ValueError, f"lengths must have shape (B,) = (64,) {SHAPE} (65,)"),
    ("mogrifier_backward", "chains", "round 2 on meta", lambda a: replaced(a["chains"], 1, a["chains"][1].to("meta")),
     ValueError, "fusedrnn::mogrifier_backward: chains must be on x's device cpu, got meta"),
]


@pytest.mark.parametrize("op, argument, what, bad, error, message",
                         [pytest.param(*row, id=f"{row[0]}-{row[1]}-{row[2]}") for row in CHECKS])
def test_bad_argument_is_refused(op, argument, what, bad, error, message):
    args = valid_args(op)
    args[argument] = bad(args)
    with pytest.raises(error, match=re.escape(message)):
        operator(op)(**args)


@pytest.mark.parametrize("cell", ["lstm", "mogrifier"])
def test_a_forward_without_save_refuses_inputs_that_require_grad(cell):
    """Without ``save`` the forward keeps a ring of steps that no backward could read: a call
    that autograd would record is refused at once, not at the backward."""
    args = forward_args(cell, save=False)
    args["x"].requires_grad_()
    with pytest.raises(ValueError, match=re.escape(f"fusedrnn::{cell}_forward: an input requires grad, so the "
                                                   "forward must run with save=True")):
        operator(f"{cell}_forward")(**args)
    with torch.no_grad():  # nothing recorded: allowed
        operator(f"{cell}_forward")(**args)


def test_every_check_starts_from_a_valid_call():
    for op in ("lstm_forward", "lstm_backward", "mogrifier_forward", "mogrifier_backward"):
        operator(op)(**valid_args(op))


@pytest.mark.parametrize("op, left_out", [
    ("lstm_forward", dict(bias=None, lengths=None, noise=None, gate_mode="soft")),
    ("lstm_backward", dict(lengths=None)),
    ("mogrifier_forward", dict(bias=None, lengths=None, mogrify_biases=[])),
    ("mogrifier_forward", dict(mogrify_weights=[], mogrify_low_rank=[], mogrify_right_factors=[],
                               mogrify_biases=[])),
    ("mogrifier_backward", dict(lengths=None)),
], ids=["lstm_forward", "lstm_backward", "mogrifier_forward", "mogrifier_forward-no-rounds", "mogrifier_backward"])
def test_optional_arguments_may_be_left_out(op, left_out):
    operator(op)(**dict(valid_args(op), **left_out))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("cell", ["lstm", "g2", "mogrifier"])
def test_valid_call_matches_reference(cell, reverse):
    """The checks pass a valid call through unchanged: forward and backward of the raw
    operators (float64, lengths from 0 to T) match the reference backend's autograd."""
    op_cell = "mogrifier" if cell == "mogrifier" else "lstm"
    inputs = dict(forward_args(op_cell, torch.float64), reverse=reverse)
    if cell == "lstm":
        inputs.update(noise=None, temperature=1.0, gate_mode="soft")
    saved = run_forward(op_cell, inputs)
    grads = output_grads(saved)
    got = operator(f"{op_cell}_backward")(**backward_args(op_cell, inputs, saved, grads))

    names = ["x", "h0", "c0", "weight_ih", "weight_hh", "bias"]
    leaves = {name: inputs[name].clone().requires_grad_() for name in names}
    options = dict(lengths=inputs["lengths"], reverse=reverse, backend="reference")
    if cell == "g2":
        options.update(gate_mode="noisy", temperature=inputs["temperature"], noise=inputs["noise"])
    rounds = []
    if cell == "mogrifier":
        weights, right_factors, biases = ([t.clone().requires_grad_() for t in inputs[name]]
                                          for name in ("mogrify_weights", "mogrify_right_factors", "mogrify_biases"))
        options.update(mogrify_weights=join_round_weights(weights, LOW_RANK, right_factors), mogrify_biases=biases)
        names += [f"mogrify_weights[{k}]" for k in range(ROUNDS)] + ["mogrify_right_factors[0]"]
        names += [f"mogrify_biases[{k}]" for k in range(ROUNDS)]
        rounds = weights + right_factors + biases
    # The operators take bias = bias_ih + bias_hh.
    output, (h_n, c_n) = fusedrnn.functional.FUNCTIONS[cell](
        leaves["x"], leaves["weight_ih"], leaves["weight_hh"], leaves["bias"], torch.zeros_like(leaves["bias"]),
        leaves["h0"], leaves["c0"], **options)
    expected = dict(output=output, h_n=h_n, c_n=c_n)
    loss = sum((expected[name] * grads[name]).sum() for name in grads)
    expected.update(zip(names, torch.autograd.grad(loss, [*leaves.values(), *rounds])))

    actual = {name: saved[name] for name in grads}
    grad_names = ["x", "h0", "c0", "weight_ih", "weight_hh", "bias"]
    actual.update(zip(grad_names, got[:6]))
    if cell == "mogrifier":
        for name, grads_of_list in zip(("mogrify_weights", "mogrify_right_factors", "mogrify_biases"), got[6:]):
            actual.update((f"{name}[{k}]", grad) for k, grad in enumerate(grads_of_list))
    assert actual.keys() == expected.keys()
    for name in expected:
        assert_close(f"{cell} {name}", actual[name], expected[name].detach(), tolerance(torch.float64))


def on_device(value, device):
    if isinstance(value, list):
        return [on_device(item, device) for item in value]
    return value.to(device) if isinstance(value, torch.Tensor) else value


@pytest.fixture
def cuda_library():
    reason = build.load_error("cuda")
    if reason is not None:
        pytest.skip(f"the cuda extension is unavailable: {reason}")


@pytest.mark.gpu
@pytest.mark.parametrize("op, argument, name", [
    ("lstm_forward", "h0", "h0"),
    ("lstm_forward", "lengths", "lengths"),
    ("lstm_forward", "noise", "noise"),
    ("lstm_backward", "gates", "gates"),
    ("mogrifier_forward", "mogrify_weights", "mogrify_weights[0] (round 1)"),
    ("mogrifier_forward", "mogrify_right_factors", "mogrify_right_factors[0] (round 3)"),
    ("mogrifier_backward", "chains", "chains[0] (round 1)"),
])
def test_gpu_tensor_on_another_device_is_refused(cuda_library, op, argument, name):
    args = valid_args(op, torch.float16, "cuda")
    args[argument] = on_device(args[argument], "cpu")
    device = torch.device("cuda", torch.cuda.current_device())
    with pytest.raises(ValueError, match=re.escape(f"{name} must be on x's device {device}, got cpu")):
        operator(op)(**args)


@pytest.mark.gpu
def test_gpu_lengths_check_lets_a_cuda_graph_capture_through(cuda_library):
    """Reading lengths back would break a capture: the check skips the range while capturing."""
    args = dict(valid_args("lstm_forward", torch.float16, "cuda"), save=False)
    expected = operator("lstm_forward")(**args)[0]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        operator("lstm_forward")(**args)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = operator("lstm_forward")(**args)[0]
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, expected)
