"""Shared test helpers: tolerances, the relative error, random inputs for every cell."""
import os
import zlib

import torch

if not torch.cuda.is_available():
    # Lets the Triton backend run its kernels on CPU tensors, one program at a time.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import fusedrnn  # noqa: E402
from fusedrnn import functional  # noqa: E402
from fusedrnn.precision import relative_error, tolerance  # noqa: E402,F401 (re-exported to the tests)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
CELLS = ["lstm", "mogrifier", "g2"]


def assert_close(name, actual, expected, tol):
    error = relative_error(actual, expected)
    assert error <= tol, f"{name}: relative error {error:.3g} > tolerance {tol:.3g}"


def random_weights(cell, input_size, hidden_size, *, bias=True, mogrify_steps=5, mogrify_rank=None,
                   mogrify_bias=True, generator=None):
    """Float64 CPU weights of one layer as keyword arguments of ``fusedrnn.functional``."""
    def rand(*shape, scale=None):
        scale = scale if scale is not None else hidden_size ** -0.5
        return (torch.rand(shape, dtype=torch.float64, generator=generator) * 2 - 1) * scale

    gates = 4 * hidden_size
    weights = dict(weight_ih=rand(gates, input_size), weight_hh=rand(gates, hidden_size))
    if bias:
        weights.update(bias_ih=rand(gates), bias_hh=rand(gates))
    if cell == "mogrifier":
        rounds, biases = [], []
        for j in range(1, mogrify_steps + 1):
            rows, cols = (input_size, hidden_size) if j % 2 else (hidden_size, input_size)
            if mogrify_rank is None:
                rounds.append(rand(rows, cols, scale=cols ** -0.5))
            else:
                rounds.append((rand(rows, mogrify_rank, scale=0.7), rand(mogrify_rank, cols, scale=0.7)))
            biases.append(rand(rows, scale=0.3))
        weights.update(mogrify_weights=rounds, mogrify_biases=biases if mogrify_bias else None)
    return weights


def cell_function(cell):
    return functional.FUNCTIONS[cell]


def flat_tensors(value):
    """Every tensor inside nested lists, tuples and dicts, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in flat_tensors(item)]
    return []


def map_tensors(value, fn):
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(map_tensors(v, fn) for v in value)
    return value


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Every test starts from its own seed, derived from its id: random, yet repeatable."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))
