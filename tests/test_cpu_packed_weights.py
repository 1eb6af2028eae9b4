"""The ``cpu`` backend's rule for its per-step products (``fusedrnn/csrc/step_product.h``): in
float32, a sweep of at least 4 steps over 2 rows or more (16 steps over one row) copies each weight
it multiplies at every step once into panels and multiplies through ATen's batch-reduce GEMM;
anything else goes through ATen's addmm.
Parity through both paths is in ``test_parity.py``; here, which path runs, seen as the
``fusedrnn::pack_step_weight`` events the profiler records, and the panels split among threads."""
import platform

import pytest
import torch
from torch.profiler import profile

from conftest import MODULES, assert_close, tolerance
from fusedrnn.ext import build
from fusedrnn.testing import compare, ground_truth, on_backend, random_problem

PACK = "fusedrnn::pack_step_weight"
#: The panels are built for x86-64 only (where ATen's float32 brgemm is oneDNN's micro-kernel).
PANELS = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture(autouse=True)
def cpu_extension():
    reason = build.load_error("cpu")
    if reason is not None:
        pytest.fail(f"the cpu extension does not build here: {reason}")


def packs(cell, seq_len, batch_size, hidden_size, train=False, dtype=torch.float32, **options):
    """How many weights a call of ``cell`` on the ``cpu`` backend (I = H) copies into panels."""
    module = MODULES[cell](hidden_size, hidden_size, backend="cpu", dtype=dtype, **options)
    x = torch.randn(seq_len, batch_size, hidden_size, dtype=dtype, requires_grad=train)
    with profile() as trace:
        output, _ = module(x)
        if train:
            output.sum().backward()
    return sum(event.count for event in trace.key_averages() if event.key == PACK)


@pytest.mark.parametrize("cell, seq_len, batch_size, train, options, expected", [
    ("lstm", 4, 2, False, {}, 1),   # W_hh: from 4 steps over 2 rows
    ("lstm", 3, 2, False, {}, 0),   # a step short: the copy would not repay itself
    ("lstm", 16, 1, False, {}, 1),  # one row gains less a step: from 16 steps
    ("lstm", 15, 1, False, {}, 0),
    ("lstm", 4, 2, True, {}, 2),    # and W_hhᵀ in the backward
    ("g2", 4, 2, True, {}, 2),      # the same sweep
    # W_ih and W_hh each step (I = H), and the 5 rounds, each in both directions
    ("mogrifier", 4, 2, True, {}, 14),
    ("mogrifier", 4, 2, False, {"mogrify_steps": 2, "mogrify_rank": 2}, 6),  # a low-rank round's two factors
], ids=["lstm", "lstm-short", "lstm-one-row", "lstm-one-row-short", "lstm-backward", "g2", "mogrifier", "mogrifier-low-rank"])
def test_weights_of_sweeps_of_a_few_steps_are_packed(cell, seq_len, batch_size, train, options, expected):
    assert packs(cell, seq_len, batch_size, 8, train, **options) == expected * PANELS


def test_only_float32_is_packed():
    assert packs("lstm", 8, 2, 8, train=True, dtype=torch.float64) == 0


@pytest.mark.parametrize("mode, seq_len, expected", [("always", 1, 3), ("never", 32, 0)])
def test_the_environment_overrides_the_rule(monkeypatch, mode, seq_len, expected):
    """``always``: W_ih (the input projection, one block here), W_hh, and W_hhᵀ in the backward."""
    monkeypatch.setenv("FUSEDRNN_CPU_PACKED_WEIGHTS", mode)
    assert packs("lstm", seq_len, 1, 8, train=True) == expected * PANELS


def test_disabling_onednn_in_torch_disables_packing(monkeypatch):
    """``torch.backends.mkldnn.enabled = False`` turns off oneDNN's GEMM kernel: addmm, as before."""
    monkeypatch.setenv("FUSEDRNN_CPU_PACKED_WEIGHTS", "always")
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert packs("lstm", 3, 1, 8, train=True) == 0


def test_a_misspelled_mode_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("FUSEDRNN_CPU_PACKED_WEIGHTS", "sometimes")
    with pytest.raises(ValueError, match="FUSEDRNN_CPU_PACKED_WEIGHTS must be 'always', 'never' or unset"):
        packs("lstm", 3, 1, 8)


@pytest.mark.parametrize("cell", ["lstm", "mogrifier"])
def test_panels_split_among_threads_match(cell):
    """Wide enough products split their panels among threads (csrc/step_product.cpp's grain:
    64 rows by 256 columns by 64 gives each panel a thread); each thread's share is right."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        truth = ground_truth(random_problem(cell, (4, 64, 256, 256)), torch.float32)
        for name, actual, expected in compare(on_backend("cpu"), truth):
            assert_close(f"cpu/{cell} on 2 threads: {name}", actual, expected, tolerance(torch.float32, "cpu"))
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("cell", ["lstm", "g2"])
@pytest.mark.parametrize("train", [False, True], ids=["forward", "training"])
@pytest.mark.parametrize("lengths, reverse", [(False, False), (True, True)], ids=["plain", "reverse-lengths"])
def test_the_input_projection_runs_block_by_block(cell, train, lengths, reverse):
    """Past 256 KB of pre-activations the forward projects the input a block of steps at a time,
    as the sweep reaches each block (csrc/sweep.cpp, ``projection_block``): B 16, H 128 take
    32 KB a step, so 21 steps are blocks of 8, 8 and 5, the last entered from its end in reverse,
    into a ring of 8 steps without a backward to come. Results and gradients match."""
    truth = ground_truth(random_problem(cell, (21, 16, 128, 128), lengths=lengths, reverse=reverse), torch.float32)
    truth = truth if train else truth.forward_only()
    for name, actual, expected in compare(on_backend("cpu"), truth):
        assert_close(f"cpu/{cell} in blocks of 8 steps: {name}", actual, expected, tolerance(torch.float32, "cpu"))


def test_many_blocks_multiply_by_panels_of_the_input_weight():
    """From 4 blocks, W_ih goes into panels too (the rule of the per-step products), with W_hh."""
    assert packs("lstm", 32, 16, 128) == 2 * PANELS
