"""Every backend computes SPEC's functions: outputs, final states and every gradient
match the float64 reference within SPEC §6's tolerance, for every call the support table
(conftest.SUPPORT) says it runs; it declines the others.

Uninitialised memory is NaN here, so an output element a backend never writes fails.
"""
import pytest
import torch

import fusedrnn
from fusedrnn import dispatch
from fusedrnn.testing import compare, ground_truth, random_problem

from conftest import CELLS, DEVICES, DTYPES, SUPPORT, assert_close, supports, tolerance

pytestmark = pytest.mark.usefixtures("uninitialized_memory_is_nan")

# name: (cell, options of random_weights, call options)
CASES = {
    "lstm": ("lstm", {}, {}),
    "lstm-nobias": ("lstm", {"bias": False}, {}),
    "mogrifier-r5": ("mogrifier", {"mogrify_steps": 5}, {}),
    "mogrifier-r4-rank2-nobias": ("mogrifier", {"mogrify_steps": 4, "mogrify_rank": 2, "mogrify_bias": False}, {}),
    # Full-rank and low-rank rounds of both parities mixed, ranks differing.
    "mogrifier-r5-mixed-rank": ("mogrifier", {"mogrify_steps": 5, "mogrify_rank": [3, None, None, 2, 3]}, {}),
    "mogrifier-r0": ("mogrifier", {"mogrify_steps": 0}, {}),
    "g2-noisy": ("g2", {}, {"gate_mode": "noisy", "temperature": 0.7, "noise_prob": 0.6}),
    "g2-soft": ("g2", {}, {"gate_mode": "soft", "temperature": 1.5}),
    "g2-hard": ("g2", {}, {"gate_mode": "hard"}),
}
SHAPES = {  # (T, B, I, H)
    "T7-B3-I5-H6": (7, 3, 5, 6),
    "T1-B1-I4-H4": (1, 1, 4, 4),
    "T9-B2-I16-H16": (9, 2, 16, 16),
}


def dtype_id(dtype):
    return str(dtype).replace("torch.", "")


def ill_conditioned(case, shape, dtype):
    """Inputs on which SPEC's relative tolerance cannot be met by any backend (the reference
    computed in ``dtype`` included), so they are not test cases:

    - half precision, a rank-2 Mogrifier factor, one row: the factor's gradient is a
      projection of a gradient rounded to 8 (11) bits that cancels below bfloat16's
      (float16's) resolution (float16 measured at 5.02e-3 against its 5e-3);
    - hard G2 gates, one step and one row, below float64: most gradient entries are exactly
      0 (closed gates) and the rest sums of a few terms that can cancel.
    """
    one_row = shape == SHAPES["T1-B1-I4-H4"]
    return one_row and (("rank" in case and dtype in (torch.bfloat16, torch.float16))
                        or (case == "g2-hard" and dtype != torch.float64))


def supported_calls(shapes):
    """``(backend, device, dtype, case, shape)`` the support table promises, on this machine's
    devices; the reference in float64 is the truth itself and is left out."""
    return [pytest.param(backend, device, dtype, case, shape, id=f"{backend}-{device}-{dtype_id(dtype)}-{case}-{name}")
            for backend in fusedrnn.BACKENDS for device in DEVICES for dtype in DTYPES for case in CASES
            for name, shape in shapes.items()
            if supports(backend, CASES[case][0], device, dtype)
            and not (backend == "reference" and dtype == torch.float64) and not ill_conditioned(case, shape, dtype)]


def problem_of(case, shape, lengths, reverse):
    cell, weight_options, options = CASES[case]
    return random_problem(cell, shape, lengths=lengths, reverse=reverse, weight_options=weight_options, **options)


def run_on(backend):
    def run(problem):
        try:
            return problem.call(backend), problem.leaves()
        except fusedrnn.BackendUnavailableError as error:
            reason = dispatch.unavailable_reason(backend)
            if reason is not None:  # the machine lacks it (no compiler...): not the backend's fault
                pytest.skip(reason)
            raise AssertionError(f"backend {backend!r} declined a call the support table lists: {error}") from None
    return run


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("backend, device, dtype, case, shape", supported_calls(SHAPES))
def test_matches_float64_reference(backend, device, dtype, case, shape, lengths, reverse):
    truth = ground_truth(problem_of(case, shape, lengths, reverse), dtype, device)
    for name, actual, expected in compare(run_on(backend), truth):
        assert_close(f"{backend}/{case}/{dtype_id(dtype)}: {name}", actual, expected, tolerance(dtype, device))


#: Every backend and case in float32, on one shape.
FLOAT32_CALLS = [p for p in supported_calls({"T7-B3-I5-H6": SHAPES["T7-B3-I5-H6"]}) if p.values[2] == torch.float32]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("backend, device, dtype, case, shape", FLOAT32_CALLS)
def test_forward_without_gradients_matches(backend, device, dtype, case, shape, reverse):
    """Under ``torch.no_grad()`` a backend may keep less state (nothing is saved for a
    backward): outputs and final states still match, with lengths."""
    truth = ground_truth(problem_of(case, shape, lengths=True, reverse=reverse), dtype, device, with_grads=False)
    for name, actual, expected in compare(run_on(backend), truth):  # under no_grad: no gradients to check
        assert_close(f"{backend}/{case} without gradients: {name}", actual, expected, tolerance(dtype, device))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("backend, device, dtype, case, shape", FLOAT32_CALLS)
def test_second_order_gradients_match(backend, device, dtype, case, shape, reverse):
    """With ``create_graph`` (a gradient penalty), the gradients and the gradient of their inner
    product with a random direction match the reference's, for every leaf, with lengths: a
    backward that is not itself differentiable must recompute, not go silently wrong."""
    truth = ground_truth(problem_of(case, shape, lengths=True, reverse=reverse), dtype, device, second_order=True)
    for name, actual, expected in compare(run_on(backend), truth):
        assert_close(f"{backend}/{case} with create_graph: {name}", actual, expected, tolerance(dtype, device))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("case, shape", [
    pytest.param(case, shape, id=f"{case}-{name}") for case in CASES
    for name, shape in {**{name: SHAPES[name] for name in ("T9-B2-I16-H16", "T1-B1-I4-H4")},
                        "T5-B3-I20-H40": (5, 3, 20, 40)}.items()
    if not ill_conditioned(case, shape, torch.float32)])
def test_cpu_products_through_packed_weights_match(case, shape, lengths, reverse, monkeypatch):
    """The ``cpu`` backend's per-step products through weights packed into panels of 64 columns,
    which it takes for calls of a few steps (``csrc/step_product.h``), forced here for every call:
    one panel (4H = 64), a part-filled one (16), two and a part (160, and the Mogrifier's 20 x 40)."""
    monkeypatch.setenv("FUSEDRNN_CPU_PACKED_WEIGHTS", "always")
    truth = ground_truth(problem_of(case, shape, lengths, reverse), torch.float32)
    for name, actual, expected in compare(run_on("cpu"), truth):
        assert_close(f"cpu/{case} through packed weights: {name}", actual, expected, tolerance(torch.float32, "cpu"))


UNSUPPORTED = [pytest.param(backend, device, dtype, cell, id=f"{backend}-{device}-{dtype_id(dtype)}-{cell}")
               for backend in fusedrnn.BACKENDS for device in DEVICES for dtype in DTYPES
               for cell in CELLS if not supports(backend, cell, device, dtype)]


@pytest.mark.parametrize("backend, device, dtype, cell", UNSUPPORTED)
def test_declines_what_it_does_not_support(backend, device, dtype, cell):
    """Named explicitly, a backend refuses a call outside the support table with
    ``BackendUnavailableError`` (never runs it, never crashes)."""
    problem = random_problem(cell, SHAPES["T7-B3-I5-H6"]).to(dtype, device)
    with pytest.raises(fusedrnn.BackendUnavailableError, match=f"backend '{backend}' cannot run"):
        problem.call(backend)


def test_support_table_names_every_backend():
    assert set(SUPPORT) == set(fusedrnn.BACKENDS)
