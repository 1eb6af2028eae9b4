"""The Triton Mogrifier sweep beyond the shared parity suite: every round count, tiles
that do not divide the sizes, the inference path, declined calls, the kernels' sm_90
compile (no GPU needed), and (on a GPU) the multi-program split with its grid barriers.

On CPU the kernels run on the Triton interpreter with one program (conftest sets
``TRITON_INTERPRET=1``); :func:`small_tiles` makes that program walk many tiles.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fusedrnn
from conftest import assert_matches_reference, map_tensors, needs_interpreter, random_weights
from interpreter_threads import concurrent_programs
from fusedrnn import functional
from fusedrnn.testing import random_problem
from fusedrnn.triton_kernels import common, layout, mogrifier

ROOT = Path(__file__).resolve().parents[1]
DTYPES = common.DTYPES


def dtype_id(dtype):
    return str(dtype).replace("torch.", "")


def compare(case, shape, dtype, device, lengths, reverse):
    """Runs ``case = (options for random_weights, options for the call)`` through the
    harness (``fusedrnn.testing``) and checks every output and gradient."""
    weight_options, options = case
    assert_matches_reference("triton", "mogrifier", shape, dtype, device, lengths=lengths, reverse=reverse,
                             weight_options=weight_options, **options)


@pytest.fixture
def small_tiles(monkeypatch):
    """One program, 16 x 16 tiles and 32-column reduction chunks, whatever the sizes."""
    monkeypatch.setattr(mogrifier, "config_for", lambda *sizes: mogrifier.MogrifierConfig(1, 16, 16, 32))


@pytest.mark.parametrize("rounds", range(mogrifier.MAX_ROUNDS + 1), ids=lambda r: f"r{r}")
def test_every_round_count(rounds):
    case = ({"mogrify_steps": rounds, "mogrify_bias": rounds % 2 == 1, "bias": rounds != 2}, {})
    compare(case, (4, 3, 5, 7), torch.float32, "cpu", lengths=rounds % 2 == 0, reverse=rounds % 3 == 0)


MANY_TILES = [  # (T, B, I, H), rounds, dtype: every shape, round parity and dtype kind once
    pytest.param((3, 20, 33, 40), 5, torch.float32, id="T3-B20-I33-H40-r5-float32"),
    pytest.param((3, 20, 33, 40), 4, torch.bfloat16, id="T3-B20-I33-H40-r4-bfloat16"),
    pytest.param((3, 17, 40, 18), 4, torch.float32, id="T3-B17-I40-H18-r4-float32"),
    pytest.param((3, 17, 40, 18), 5, torch.bfloat16, id="T3-B17-I40-H18-r5-bfloat16"),
]
#: Rounds' ranks by round count: all of rank 3 for 4 rounds; for 5, low rank mixed with full
#: rank, of ranks over the 16-column tile (the k-wide phases walk several tiles too) and
#: differing (the kernels pad to the largest).
RANKS = {4: 3, 5: [17, None, 5, 18, None]}


@pytest.mark.parametrize("shape, rounds, dtype", MANY_TILES)
def test_many_tiles(shape, rounds, dtype, small_tiles):
    case = ({"mogrify_steps": rounds, "mogrify_rank": RANKS[rounds]}, {})
    compare(case, shape, dtype, "cpu", lengths=True, reverse=rounds == 5)


@pytest.mark.parametrize("rank", [None, 16, 8], ids=["full-rank", "rank16", "rank8"])
def test_bfloat16_rounds_once_only_where_the_bound_holds(rank):
    """A bfloat16 product over at least ``SPLIT_BELOW_K`` = 16 terms rounds its float32 operand
    once, full rank or low: every product here but the rank-8 rounds' 8-term ones, which keep
    ``hi + lo`` (their buffers then stay float32). One rounding gave 4.5-7.7e-3 with low-rank
    rounds against 2.7-3.4e-3 split (bench/results/bf16-mogrifier/)."""
    compare(({"mogrify_steps": 5, "mogrify_rank": rank}, {}), (4, 16, 64, 64), torch.bfloat16, "cpu", lengths=True,
            reverse=False)


def test_a_rank_padded_past_its_terms_keeps_every_product_split():
    """Rounds of mixed ranks share one padded rank (``_round_tensors``): a rank-5 round's
    products then run over ``K`` = 18, zeros included, and ``K`` no longer says how few terms
    they sum; such a call splits every bfloat16 product, a call of one rank only the short ones."""
    def rounds(*ranks):
        return [torch.zeros(4, 4) if rank is None else (torch.zeros(4, rank), torch.zeros(rank, 4)) for rank in ranks]

    every = mogrifier.SPLIT_EVERY
    assert mogrifier.split_below_k(rounds(17, None, 5, 18, None)) == every
    assert mogrifier.split_below_k(rounds(8, 8, None)) == mogrifier.split_below_k(rounds(16, 32)) == 16
    assert mogrifier.split_below_k(rounds(None, None)) == 16
    assert mogrifier.buffer_dtype(torch.bfloat16, every, 64, 64, 64, 18) == torch.float32
    assert mogrifier.buffer_dtype(torch.bfloat16, 16, 64, 64, 64, 8) == torch.float32
    assert mogrifier.buffer_dtype(torch.bfloat16, 16, 64, 64, 64, 16) == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_saves_about_half_the_bytes_of_float32(dtype):
    """A half-precision call over 16 rows or more keeps what its backward reads in its dtype, all
    but ``c`` (``mogrifier.buffer_dtype``): autograd holds about half a float32 call's bytes at
    this shape, inputs and weights included (0.74 when the buffers were float32 for every dtype)."""
    def saved_bytes(dtype):
        problem = random_problem("mogrifier", (4, 4, 16, 16), lengths=True).to(dtype)
        problem.x.requires_grad_()
        sizes = []

        def pack(tensor):
            sizes.append(tensor.numel() * tensor.element_size())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            problem.call("triton")
        return sum(sizes)

    ratio = saved_bytes(dtype) / saved_bytes(torch.float32)
    assert ratio <= 0.55, f"a {dtype} call saves {ratio:.2f} of the bytes a float32 call saves for the backward"


@pytest.mark.parametrize("seq_len", [5, 6], ids=lambda t: f"T{t}")
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_inference_path(seq_len, reverse):
    """Without gradients the forward keeps two time slots instead of all ``T + 1``."""
    assert_matches_reference("triton", "mogrifier", (seq_len, 3, 6, 5), torch.float32, "cpu", lengths=True,
                             reverse=reverse, with_grads=False)


def test_declines_more_rounds_than_unrolled():
    weights = random_weights("mogrifier", 4, 4, mogrify_steps=mogrifier.MAX_ROUNDS + 1)
    x = torch.randn(2, 1, 4, dtype=torch.float64)
    with pytest.raises(fusedrnn.BackendUnavailableError, match="unrolls at most"):
        functional.mogrifier_lstm(x.float(), **map_tensors(weights, torch.Tensor.float), backend="triton")


def test_declines_a_layout_that_does_not_fit(monkeypatch):
    """When no layout fits an SM per program, the backend declines instead of launching."""
    monkeypatch.setattr(mogrifier, "layout_for", lambda sweep: layout.Layout(None))
    weights = random_weights("mogrifier", 4, 4, mogrify_steps=2)
    x = torch.randn(2, 1, 4)
    with pytest.raises(fusedrnn.BackendUnavailableError, match="does not fit one SM"):
        functional.mogrifier_lstm(x, **map_tensors(weights, torch.Tensor.float), backend="triton")


# --------------------------------------------------------------------------- offline GPU compilation


@pytest.mark.parametrize("dtype, rounds, low_rank", [("float32", 5, 0), ("bfloat16", 8, 0), ("float16", 0, 0),
                                                     ("bfloat16", 5, 0b01011)],
                         ids=["float32-r5", "bfloat16-r8", "float16-r0", "bfloat16-r5-mixed-rank"])
def test_kernels_compile_for_h100(dtype, rounds, low_rank):
    """The sm_90 compiler accepts both kernels in the layout a GPU gets, as a launch at B = 64,
    I = 96, H = 256 specialises them (the interpreter is laxer); in a subprocess, since the
    interpreter replaces the kernels in this one."""
    config = dict(programs=64, block_b=mogrifier.GPU_BLOCK_B, block_n=mogrifier.GPU_BLOCK_N,
                  block_k=mogrifier.GPU_BLOCK_K, num_warps=mogrifier.GPU_NUM_WARPS)
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "fusedrnn.triton_kernels.offline", "--cell", "mogrifier", "--dtype", dtype,
               "--rounds", str(rounds), "--low-rank", str(low_rank), "--config", json.dumps(config),
               "--launch-shape", "64", "96", "256"]
    result = subprocess.run(command, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for kernel, used in json.loads(result.stdout).items():
        assert used["shared_bytes"] <= 227 * 1024, f"{kernel}: {used}"
        assert 0 < used["registers"] <= 255, f"{kernel}: {used}"


MIXED_RANK = [3, None, 10, 3, None]  # rank 10 spans two 8-column tiles of the k-wide phases
MULTI_PROGRAM_CASES = [  # programs, dtype, reverse, rounds, ranks
    pytest.param(2, torch.float32, False, 5, MIXED_RANK, id="P2-float32-r5-mixed-rank"),
    pytest.param(3, torch.bfloat16, True, 5, MIXED_RANK, id="P3-bfloat16-reverse-r5-mixed-rank"),
    pytest.param(7, torch.float32, True, 5, MIXED_RANK, id="P7-float32-reverse-r5-mixed-rank"),
    pytest.param(7, torch.bfloat16, False, 5, MIXED_RANK, id="P7-bfloat16-r5-mixed-rank"),
    pytest.param(5, torch.float32, False, 0, None, id="P5-float32-r0"),
    pytest.param(3, torch.float32, True, 1, None, id="P3-float32-reverse-r1"),
    pytest.param(3, torch.float16, False, 2, None, id="P3-float16-r2"),
    pytest.param(3, torch.bfloat16, False, 8, None, id="P3-bfloat16-r8"),
]


@needs_interpreter
@pytest.mark.parametrize("programs, dtype, reverse, rounds, ranks", MULTI_PROGRAM_CASES)
def test_programs_meet_at_grid_barriers(programs, dtype, reverse, rounds, ranks, monkeypatch):
    """The GPU's multi-program split, on the interpreter with a thread per program
    (``interpreter_threads``): every phase's tiles dealt over the programs (two batch tiles of
    8 rows), a barrier after each, the low-rank rounds' k-wide phases, and the backward's g_x
    tiles dealt after its g_h tiles."""
    monkeypatch.setattr(mogrifier, "config_for", lambda *sizes: mogrifier.MogrifierConfig(programs, 8, 8, 8))
    case = ({"mogrify_steps": rounds, "mogrify_rank": ranks, "mogrify_bias": rounds != 2}, {})
    with concurrent_programs():
        compare(case, (3, 12, 20, 28), dtype, "cpu", lengths=True, reverse=reverse)


# --------------------------------------------------------------------------- GPU


GPU_SHAPES = {  # (T, B, I, H): several programs, batch tiles, sizes that are not powers of two
    "T33-B37-I100-H300": (33, 37, 100, 300),
    "T17-B130-I64-H48": (17, 130, 64, 48),
    "T9-B16-I256-H256": (9, 16, 256, 256),
}


@pytest.mark.gpu
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("rounds", [0, 1, 2, 5, 8], ids=lambda r: f"r{r}")
@pytest.mark.parametrize("shape", list(GPU_SHAPES.values()), ids=list(GPU_SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_gpu_matches_reference(dtype, shape, rounds, reverse):
    case = ({"mogrify_steps": rounds, "mogrify_bias": rounds != 2}, {})
    compare(case, shape, dtype, "cuda", lengths=True, reverse=reverse)


@pytest.mark.gpu
@pytest.mark.parametrize("programs", [2, 7, 32], ids=lambda p: f"P{p}")
def test_gpu_barrier_with_many_programs(programs, monkeypatch):
    """More programs than the default layout picks for this size: small tiles, many barriers
    (low-rank rounds add theirs, and their k-wide phases span two tiles at rank 20)."""
    monkeypatch.setattr(mogrifier, "config_for", lambda *sizes: mogrifier.MogrifierConfig(programs, 16, 16, 16))
    case = ({"mogrify_steps": 5, "mogrify_rank": [8, None, 20, 8, None]}, {})
    compare(case, (20, 24, 40, 56), torch.float32, "cuda", lengths=True, reverse=False)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_gpu_inference_path(dtype):
    assert_matches_reference("triton", "mogrifier", (40, 33, 70, 90), dtype, "cuda", lengths=True, with_grads=False)
