"""The ``cpu`` backend's rule for its per-step products (``fusedrnn/csrc/step_product.h``):
a float32 weight of at least 4·512² elements, over at least 2 rows and 16 steps (32 for the
backward's transposed weights), is reordered once per sweep into oneDNN's layout and multiplied
through oneDNN; anything else goes through ATen's addmm. Parity through both paths is in
``test_parity.py``; here, which path runs, seen as the oneDNN operators the profiler records."""
import pytest
import torch
from torch.profiler import profile

from conftest import MODULES
from fusedrnn.ext import build

REORDER = "mkldnn::_reorder_linear_weight"


@pytest.fixture(autouse=True)
def cpu_extension_and_onednn():
    reason = build.load_error("cpu")
    if reason is not None:
        pytest.fail(f"the cpu extension does not build here: {reason}")
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN: every product is addmm")


def reorders(cell, seq_len, batch_size, hidden_size, train=False, **options):
    """How many weights a call of ``cell`` on the ``cpu`` backend (I = H) reorders for oneDNN."""
    module = MODULES[cell](hidden_size, hidden_size, backend="cpu", **options)
    x = torch.randn(seq_len, batch_size, hidden_size, requires_grad=train)
    with profile() as trace:
        output, _ = module(x)
        if train:
            output.sum().backward()
    return sum(event.count for event in trace.key_averages() if event.key == REORDER)


@pytest.mark.parametrize("cell, seq_len, batch_size, hidden_size, train, expected", [
    ("lstm", 16, 2, 512, False, 1),  # W_hh (4H x H = 4·512²): from 16 steps and 2 rows
    ("lstm", 15, 2, 512, False, 0),  # a step short
    ("lstm", 16, 1, 512, False, 0),  # one row: oneDNN's linear is no faster than addmm
    ("lstm", 16, 2, 511, False, 0),  # under 4·512² elements
    ("lstm", 16, 2, 512, True, 1),   # the backward's W_hhᵀ needs 32 steps to repay its copy
    ("lstm", 32, 2, 512, True, 2),
    ("g2", 32, 2, 512, True, 2),     # the same sweep
    # W_ih and W_hh both (I = H), each in both directions; the rounds' H x H matrices are 512²
    ("mogrifier", 32, 2, 512, True, 4),
])
def test_wide_weights_over_long_calls_are_packed(cell, seq_len, batch_size, hidden_size, train, expected):
    assert reorders(cell, seq_len, batch_size, hidden_size, train) == expected


@pytest.mark.parametrize("mode, expected", [("always", 2), ("never", 0)])
def test_the_environment_overrides_the_rule(monkeypatch, mode, expected):
    monkeypatch.setenv("FUSEDRNN_CPU_PACKED_WEIGHTS", mode)
    assert reorders("lstm", 3, 1, 8, train=True) == expected


def test_disabling_onednn_in_torch_disables_packing(monkeypatch):
    monkeypatch.setenv("FUSEDRNN_CPU_PACKED_WEIGHTS", "always")
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert reorders("lstm", 3, 1, 8, train=True) == 0


def test_a_misspelled_mode_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("FUSEDRNN_CPU_PACKED_WEIGHTS", "sometimes")
    with pytest.raises(ValueError, match="FUSEDRNN_CPU_PACKED_WEIGHTS must be 'always', 'never' or unset"):
        reorders("lstm", 3, 1, 8)
