"""Shared test helpers: the support table, tolerances, random inputs (from the harness,
``fusedrnn.testing``)."""
import os
import zlib

import torch

if not torch.cuda.is_available():
    # Lets the Triton backend run its kernels on CPU tensors, one program at a time.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fusedrnn  # noqa: E402
from fusedrnn import functional  # noqa: E402
from fusedrnn.cells import CELLS as CELL_OBJECTS  # noqa: E402
from fusedrnn.precision import relative_error, tolerance  # noqa: E402,F401 (re-exported to the tests)
from fusedrnn.testing import (compare, flat_tensors, ground_truth, map_tensors, on_backend,  # noqa: E402,F401
                              random_problem, random_weights, round_like_a_gpu_in_the_interpreter)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
CELLS = list(CELL_OBJECTS)
#: Each cell's module.
MODULES = {"lstm": fusedrnn.LSTM, "mogrifier": fusedrnn.MogrifierLSTM, "g2": fusedrnn.G2LSTM}
_HALF_AND_FLOAT = (torch.float32, torch.bfloat16, torch.float16)
INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
if INTERPRETING:  # bfloat16 results as a GPU rounds them, not truncated
    round_like_a_gpu_in_the_interpreter()
#: For tests of the interpreter's CPU runs (on a GPU machine the GPU tests cover those paths).
needs_interpreter = pytest.mark.skipif(not INTERPRETING, reason="needs TRITON_INTERPRET=1 (no CUDA)")

#: What each backend promises to run, by device type: the dtypes (the cells it runs are
#: ``fusedrnn.cells.CELLS[cell].backends``). A backend that this machine can run and that
#: declines a call listed here fails the parity tests; one that runs a call not listed
#: here fails ``test_declines_what_it_does_not_support``.
SUPPORT = {
    "torch": {"cpu": (torch.float64, torch.float32, torch.bfloat16), "cuda": tuple(DTYPES)},
    # The interpreter runs CPU tensors when the backend is named (conftest turns it on without a GPU).
    "triton": {"cuda": _HALF_AND_FLOAT, **({"cpu": _HALF_AND_FLOAT} if INTERPRETING else {})},
    "cuda": {"cuda": tuple(DTYPES)},
    "cpu": {"cpu": tuple(DTYPES)},
    "reference": {"cpu": tuple(DTYPES), "cuda": tuple(DTYPES)},
}


def supports(backend, cell, device, dtype):
    """Whether ``backend`` promises to run ``cell`` in ``dtype`` on ``device`` (see SUPPORT)."""
    return backend in CELL_OBJECTS[cell].backends and dtype in SUPPORT[backend].get(torch.device(device).type, ())


def skip_unless_available(backend):
    """Skips with the reason when this machine lacks ``backend`` (no compiler, no GPU): the
    machine's limit, not the backend's fault. ``"auto"`` is always available."""
    reason = None if backend == "auto" else fusedrnn.dispatch.unavailable_reason(backend)
    if reason is not None:
        pytest.skip(f"backend {backend!r} is unavailable here: {reason}")


def assert_close(name, actual, expected, tol):
    error = relative_error(actual, expected)
    assert error <= tol, f"{name}: relative error {error:.3g} > tolerance {tol:.3g}"


def assert_matches_reference(backend, cell, shape, dtype, device, *, lengths=False, reverse=False,
                             weight_options=None, with_grads=True, **options):
    """Runs fresh random inputs of ``cell`` (``fusedrnn.testing.random_problem``) on ``backend``
    and checks outputs, final states and (``with_grads``; else under ``no_grad``) every gradient
    against the float64 reference."""
    problem = random_problem(cell, shape, lengths=lengths, reverse=reverse, weight_options=weight_options, **options)
    pairs = compare(on_backend(backend), ground_truth(problem, dtype, device, with_grads=with_grads))
    for name, actual, expected in pairs:
        assert_close(f"{backend}/{cell}/{str(dtype).replace('torch.', '')} {options}: {name}", actual, expected,
                     tolerance(dtype, device))


def cell_function(cell):
    return functional.FUNCTIONS[cell]


@pytest.fixture
def uninitialized_memory_is_nan():
    """Every ``torch.empty``-like allocation (Python and C++ ``at::empty`` alike) is filled
    with NaN, so an output element a kernel never writes fails the comparison loudly."""
    was_on, was_warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.utils.deterministic.fill_uninitialized_memory = fill
    torch.use_deterministic_algorithms(was_on, warn_only=was_warn_only)


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Every test starts from its own seed, derived from its id: random, yet repeatable."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
