"""Every backend computes SPEC's functions: outputs, final states and every gradient
match the float64 reference within SPEC §6's tolerance.

A backend joins by being listed in ``fusedrnn.BACKENDS``; calls it does not support
(device, dtype, shape) are skipped with its own reason.
"""
import pytest
import torch

import fusedrnn
from fusedrnn.noise import sample_noise

from conftest import (DEVICES, DTYPES, assert_close, cell_function, flat_tensors, map_tensors,
                      random_weights, tolerance)

# (cell, options for random_weights, options for the call)
CASES = {
    "lstm": ("lstm", {}, {}),
    "lstm-nobias": ("lstm", {"bias": False}, {}),
    "mogrifier-r5": ("mogrifier", {"mogrify_steps": 5}, {}),
    "mogrifier-r4-rank2-nobias": ("mogrifier", {"mogrify_steps": 4, "mogrify_rank": 2, "mogrify_bias": False}, {}),
    "mogrifier-r0": ("mogrifier", {"mogrify_steps": 0}, {}),
    "g2-noisy": ("g2", {}, {"gate_mode": "noisy", "temperature": 0.7}),
    "g2-soft": ("g2", {}, {"gate_mode": "soft", "temperature": 1.5}),
    "g2-hard": ("g2", {}, {"gate_mode": "hard"}),
}
# The "torch" backend (PyTorch's own kernel) has only the plain LSTM: no rows for other cells.
BACKEND_CASES = [pytest.param(backend, case, id=f"{backend}-{case}") for backend in fusedrnn.BACKENDS
                 for case in CASES if backend != "torch" or CASES[case][0] == "lstm"]
SHAPES = {  # (T, B, I, H)
    "T7-B3-I5-H6": (7, 3, 5, 6),
    "T1-B1-I4-H4": (1, 1, 4, 4),
    "T9-B2-I16-H16": (9, 2, 16, 16),
}


def with_hard_gate_margin(x, h0, weights):
    """Makes every input- and forget-gate pre-activation of the sweep at least 1/2 away from 0.

    A hard gate ``1[z ≥ 0]`` is discontinuous: where ``z`` is within rounding of 0 (about
    0.2% of the gates at T=20, B=64, H=256 with :func:`random_weights`) a float32/TF32 or
    bfloat16 kernel and the float64 reference take different branches, and each flip
    moves ``c`` by ``g`` for the rest of the sequence. The gates still depend on the data:
    ``x[..., 0]`` is ``±1`` and each i/f row reads it with weight ``±1``, while the rest of
    the row (other inputs, ``W_hh``, biases) is scaled so that it adds at most 1/2 in
    magnitude (``|h_t| < 1`` for ``t ≥ 1``). Changes ``x`` and ``weights`` in place.
    """
    hidden_size = h0.shape[-1]
    rows = slice(0, 2 * hidden_size)  # i and f (SPEC §1)
    sign = lambda shape: torch.randint(0, 2, shape, dtype=torch.float64) * 2 - 1  # noqa: E731
    x[..., 0] = sign(x.shape[:-1])
    w_ih, w_hh = weights["weight_ih"], weights["weight_hh"]
    w_ih[rows, 0] = sign((2 * hidden_size,))
    biases = [weights[name] for name in ("bias_ih", "bias_hh") if weights.get(name) is not None]
    x_max = x[..., 1:].abs().max().item() if x.shape[-1] > 1 else 0.0
    rest = (w_ih[rows, 1:].abs().sum(1) * x_max
            + w_hh[rows].abs().sum(1) * max(1.0, h0.abs().max().item())
            + sum(b[rows].abs() for b in biases))
    scale = 0.5 / rest.clamp(min=0.5)
    w_ih[rows, 1:] *= scale[:, None]
    w_hh[rows] *= scale[:, None]
    for b in biases:
        b[rows] *= scale


def case_inputs(case, shape, dtype, lengths):
    """Fresh random inputs of ``case``: ``(cell, (x, h0, c0, weights), call options, lengths)``,
    float64 tensors already rounded to ``dtype`` so that the reference sees the same values."""
    cell, weight_options, call_options = CASES[case]
    seq_len, batch_size, input_size, hidden_size = shape
    weights = random_weights(cell, input_size, hidden_size, **weight_options)
    x = torch.randn(seq_len, batch_size, input_size, dtype=torch.float64)
    h0 = torch.randn(batch_size, hidden_size, dtype=torch.float64) * 0.5
    c0 = torch.randn(batch_size, hidden_size, dtype=torch.float64) * 0.5
    call_options = dict(call_options)
    if call_options.get("gate_mode") == "hard":
        with_hard_gate_margin(x, h0, weights)
    if call_options.get("gate_mode") == "noisy":
        call_options["noise"] = sample_noise(seq_len, batch_size, hidden_size, noise_prob=0.6)
    if lengths:
        lengths = torch.randint(1, seq_len + 1, (batch_size,))
        lengths[0] = seq_len
    else:
        lengths = None
    inputs = map_tensors((x, h0, c0, weights), lambda t: t.to(dtype).double())
    return cell, inputs, call_options, lengths


def run_case(backend, case, shape, dtype, device, lengths, reverse):
    """Runs ``case`` on ``backend`` and on the float64 reference with the same inputs.

    Returns ``[(name, actual, expected)]`` for output, final states and all gradients.
    """
    cell, inputs, call_options, lengths = case_inputs(case, shape, dtype, lengths)
    grad_seeds = None
    results = []
    for name, run_dtype, run_device, run_backend in (("actual", dtype, device, backend),
                                                     ("expected", torch.float64, "cpu", "reference")):
        leaves = map_tensors(inputs, lambda t: t.to(run_dtype).to(run_device).requires_grad_())
        x_, h0_, c0_, weights_ = leaves
        options = map_tensors(call_options, lambda t: t.to(run_device))
        lengths_ = None if lengths is None else lengths.to(run_device)
        out, (h_n, c_n) = cell_function(cell)(x_, h0=h0_, c0=c0_, **weights_, **options, lengths=lengths_,
                                              reverse=reverse, backend=run_backend)
        if grad_seeds is None:
            grad_seeds = [torch.randn(t.shape, dtype=torch.float64) for t in (out, h_n, c_n)]
        loss = sum((t.double() * g.to(run_device)).sum() for t, g in zip((out, h_n, c_n), grad_seeds))
        tensors = flat_tensors(leaves)
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
        results.append([out, h_n, c_n] + grads)
    names = ["output", "h_n", "c_n", "grad x", "grad h0", "grad c0"] + [
        f"grad {n}" for n in _weight_names(inputs[3])]
    return list(zip(names, *results))


def _weight_names(weights):
    names = []
    for key, value in weights.items():
        count = len(flat_tensors(value))
        names += [key] if count == 1 and isinstance(value, torch.Tensor) else [f"{key}[{i}]" for i in range(count)]
    return names


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend, case", BACKEND_CASES)
def test_matches_float64_reference(backend, device, dtype, case, shape, lengths, reverse):
    if dtype == torch.bfloat16 and "rank" in case and shape == SHAPES["T1-B1-I4-H4"]:
        pytest.skip("ill-conditioned in bfloat16: a rank-2 factor's gradient from a single row is a "
                    "projection of a gradient rounded to 8 bits that cancels below bfloat16's resolution "
                    "for every backend, the reference computed in bfloat16 included")
    if case == "g2-hard" and shape == SHAPES["T1-B1-I4-H4"] and dtype != torch.float64:
        pytest.skip("ill-conditioned below float64: with one step, one row and hard gates most gradient entries "
                    "are exactly 0 (closed gates) and the rest sums of a few terms that can cancel, so a rounding "
                    "of the inputs' precision can exceed the relative tolerance for every backend, the reference "
                    "computed in float32 included")
    try:
        pairs = run_case(backend, case, shape, dtype, device, lengths, reverse)
    except fusedrnn.BackendUnavailableError as error:
        pytest.skip(str(error))
    for name, actual, expected in pairs:
        assert_close(f"{backend}/{case}/{dtype}: {name}", actual, expected, tolerance(dtype, device))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend, case", BACKEND_CASES)
def test_forward_without_gradients_matches(backend, device, case, reverse):
    """Under ``torch.no_grad()`` a backend may keep less state (nothing is saved for a
    backward): outputs and final states still match, with lengths."""
    dtype = torch.float32
    cell, (x, h0, c0, weights), options, lengths = case_inputs(case, SHAPES["T7-B3-I5-H6"], dtype, lengths=True)
    results = []
    for run_dtype, run_device, run_backend in ((dtype, device, backend), (torch.float64, "cpu", "reference")):
        x_, h0_, c0_, weights_ = map_tensors((x, h0, c0, weights), lambda t: t.to(run_dtype).to(run_device))
        options_ = map_tensors(options, lambda t: t.to(run_device))
        with torch.no_grad():
            try:
                out, (h_n, c_n) = cell_function(cell)(x_, h0=h0_, c0=c0_, **weights_, **options_,
                                                      lengths=lengths.to(run_device), reverse=reverse,
                                                      backend=run_backend)
            except fusedrnn.BackendUnavailableError as error:
                pytest.skip(str(error))
        results.append((out, h_n, c_n))
    for name, actual, expected in zip(("output", "h_n", "c_n"), *results):
        assert_close(f"{backend}/{case} without gradients: {name}", actual, expected, tolerance(dtype, device))
