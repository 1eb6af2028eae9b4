"""The Triton sweeps beyond the parity suite: every layout of the persistent kernels,
G2 noise (reproducibility), and on a GPU multi-program
grids, awkward sizes, long sequences, concurrent streams and CUDA-graph capture.

On CPU the kernels run on the Triton interpreter (``conftest.py`` sets
``TRITON_INTERPRET=1``), one program after another: there, only layouts whose grid
barrier has a single program per batch group can run (they still take the barrier), but
for ``interpreter_threads``, which runs each program in a thread of its own.
"""
import copy
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import types
import warnings

import pytest
import torch

pytest.importorskip("triton")

import fusedrnn  # noqa: E402
from fusedrnn import cells, dispatch, functional  # noqa: E402
from fusedrnn.sweep import Sweep  # noqa: E402
from fusedrnn.triton_kernels import backend as triton_backend, common, layout, lstm  # noqa: E402

from conftest import (assert_close, assert_matches_reference, needs_interpreter, random_weights,  # noqa: E402
                      skip_unless_available, tolerance)
from interpreter_threads import concurrent_programs  # noqa: E402

CUDA = torch.cuda.is_available()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
G2_DEVICES = ["cuda"] if CUDA else ["cpu"]

SweepConfig = layout.SweepConfig
# Layouts the interpreter can run, for (T, B, I, H) = (5, 20, 24, 40): H_PAD = 64.
CPU_LAYOUTS = {
    "registers": SweepConfig(32, 64, 64, 1, 1, hidden_on_chip=True),
    "exchange": SweepConfig(32, 64, 64, 1, 1),
    "chunked": SweepConfig(32, 64, 64, 1, 1, block_k=16),
    "batch-groups": SweepConfig(16, 64, 64, 1, 2, hidden_on_chip=True),
    "batch-groups-chunked": SweepConfig(16, 64, 64, 1, 2, block_k=32),
}
# The GPU's multi-program layouts, for the same shape: the interpreter runs them with a thread
# per program (interpreter_threads); H = 40 is a multiple of 8, as hidden_alignment says.
MULTI_PROGRAM_LAYOUTS = {
    "programs": SweepConfig(32, 16, 64, 3, 1, hidden_align=8),
    "programs-chunked": SweepConfig(32, 16, 64, 3, 1, block_k=16),
    "programs-batch-groups": SweepConfig(16, 32, 64, 2, 2, block_k=32, hidden_align=8),
    "many-programs": SweepConfig(32, 8, 64, 5, 1, block_k=16, hidden_align=8),
}
VARIANTS = {"forward": (False, False), "reverse-lengths": (True, True)}  # (lengths, reverse)
CASES = {  # name: (cell, call options)
    "lstm": ("lstm", {}),
    "g2-noisy": ("g2", {"gate_mode": "noisy", "temperature": 0.7, "noise_prob": 0.6}),
    "g2-soft": ("g2", {"gate_mode": "soft", "temperature": 1.5}),
    "g2-hard": ("g2", {"gate_mode": "hard"}),
}


def check_case(case, shape, dtype, device, lengths, reverse):
    cell, options = CASES[case]
    assert_matches_reference("triton", cell, shape, dtype, device, lengths=lengths, reverse=reverse, **options)


def force_layout(monkeypatch, config):
    monkeypatch.setattr(lstm, "config_for", lambda *sizes: config)


@needs_interpreter
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("case", ["lstm", "g2-noisy"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("layout", list(CPU_LAYOUTS))
def test_every_layout_matches_reference(monkeypatch, layout, dtype, case, variant):
    force_layout(monkeypatch, CPU_LAYOUTS[layout])
    lengths, reverse = VARIANTS[variant]
    check_case(case, (5, 20, 24, 40), dtype, "cpu", lengths, reverse)


@needs_interpreter
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("layout", list(MULTI_PROGRAM_LAYOUTS))
def test_programs_meet_at_grid_barriers(monkeypatch, layout, case, variant):
    """Several programs exchange h (and dz) through memory and meet at a grid barrier each step,
    in float32 and bfloat16 (the backward's natural-order reduction reads the other programs' dz)."""
    force_layout(monkeypatch, MULTI_PROGRAM_LAYOUTS[layout])
    with concurrent_programs():
        for dtype in (torch.float32, torch.bfloat16):
            check_case(case, (5, 20, 24, 40), dtype, "cpu", *VARIANTS[variant])


def test_declines_what_it_cannot_run(monkeypatch):
    def sweep(cell, dtype=torch.float32):
        weights = [torch.randn(16, 4, dtype=dtype), torch.randn(16, 4, dtype=dtype), None, None]
        state = torch.zeros(2, 4, dtype=dtype)
        return Sweep(cell, torch.randn(3, 2, 4, dtype=dtype), state, state, *weights)

    skip_unless_available("triton")
    # A cell whose definition does not list the backend is declined, not run.
    monkeypatch.setitem(cells.CELLS, "mogrifier", dataclasses.replace(cells.MOGRIFIER, backends=("reference",)))
    with pytest.raises(fusedrnn.BackendUnavailableError, match="does not implement the mogrifier cell"):
        dispatch.select("triton", sweep("mogrifier"))
    with pytest.raises(fusedrnn.BackendUnavailableError, match="dtype"):
        dispatch.select("triton", sweep("lstm", torch.float64))
    # "auto" never picks the interpreter for CPU tensors.
    assert dispatch.select("auto", sweep("lstm")).name != "triton"


def _compilation_error(message):
    """A ``CompilationError`` shaped as Triton raises one: the call site's source excerpt,
    wrapping the error that says what went wrong."""
    import ast

    from triton.compiler.errors import CompilationError

    node = ast.parse("b_w = load_resident_slice(p_w)").body[0]
    inner = CompilationError("b_w = load_resident_slice(p_w)", node, message)
    outer = CompilationError("b_w = load_resident_slice(p_w)", node, None)
    outer.__cause__ = inner
    return outer


def test_a_layout_no_config_compiles_declines_with_the_first_compiler_message(monkeypatch):
    """Compiler failures never escape: when every layout fails, the first one's message says why."""
    def compile_kernels(config):
        raise _compilation_error(f"cannot convert None of type NoneType to tensor (block_k={config.block_k})")

    monkeypatch.setattr(common, "interpreting", lambda: False)
    chosen = layout.first_launchable([CPU_LAYOUTS["chunked"], CPU_LAYOUTS["exchange"]], compile_kernels)
    assert chosen.config is None
    assert chosen.reason == ("the Triton compiler failed: CompilationError: "
                             "cannot convert None of type NoneType to tensor (block_k=16)"), chosen.reason


def test_a_layout_the_compiler_rejects_makes_way_for_the_next(monkeypatch):
    """As Triton 3.3 rejects the float32 backward's 8-unit tiles (no tl.dot narrower than 16)."""
    class Compiled:
        n_regs = 128

        def _init_handles(self):
            pass

    def compile_kernels(config):
        if config.block_k is not None:
            raise _compilation_error("Input shapes should have M >= 16, N >= 16 and K >= 16")
        return Compiled(), Compiled()

    monkeypatch.setattr(common, "interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: types.SimpleNamespace(
        regs_per_multiprocessor=65536))
    chosen = layout.first_launchable([CPU_LAYOUTS["chunked"], CPU_LAYOUTS["exchange"]], compile_kernels)
    assert chosen == layout.Layout(CPU_LAYOUTS["exchange"]), chosen


def test_a_compile_failure_falls_back_under_auto_and_raises_when_named(monkeypatch):
    failure = "the Triton compiler failed: CompilationError: forced in test_a_compile_failure_falls_back"
    monkeypatch.setattr(lstm, "layout_for", lambda sweep: layout.Layout(None, failure))
    # Make this CPU call one that Triton would otherwise take under "auto".
    monkeypatch.setattr(common, "device_unsupported", lambda device, dtype, explicit: None)
    monkeypatch.setattr(triton_backend.backend, "device_type", "cpu")
    weights = {k: v.float() for k, v in random_weights("lstm", 4, 6).items()}
    x = torch.randn(3, 2, 4)
    with pytest.raises(fusedrnn.BackendUnavailableError, match="forced in test_a_compile_failure"):
        functional.lstm(x, **weights, backend="triton")
    with pytest.warns(RuntimeWarning, match="falls back from the 'triton' backend.*forced in test_a_compile"):
        out, _ = functional.lstm(x, **weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per reason, not one per call
        again, _ = functional.lstm(x, **weights)
    expected, _ = functional.lstm(x, **weights, backend="reference")
    assert_close("auto after the fallback", out, expected, tolerance(torch.float32, "cpu"))
    assert torch.equal(out, again)


@needs_interpreter
def test_the_interpreter_rounds_bfloat16_as_a_gpu_does():
    """``conftest`` has the interpreter round float32 → bfloat16 to nearest even, as ``cvt.rn`` on
    a GPU and torch do (it truncates otherwise), so that interpreted bfloat16 errors are a GPU's."""
    import triton
    import triton.language as tl

    @triton.jit
    def to_bfloat16(x, y, N: tl.constexpr):
        tl.store(y + tl.arange(0, N), tl.load(x + tl.arange(0, N)).to(tl.bfloat16))

    torch.manual_seed(0)
    x = torch.randn(1024) * torch.logspace(-40, 38, 1024)  # subnormal to near overflow
    x[:8] = torch.tensor([1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 3.4e38, float("inf"), -0.0, 1e-40, 0.1])
    y = torch.empty(1024, dtype=torch.bfloat16)
    to_bfloat16[(1,)](x, y, N=1024)
    expected = x.to(torch.bfloat16)
    differs = (y.view(torch.int16) != expected.view(torch.int16)).nonzero().flatten().tolist()
    assert not differs, f"x = {x[differs[:4]].tolist()}: {y[differs[:4]].tolist()}, torch {expected[differs[:4]].tolist()}"


@needs_interpreter
def test_module_layers_and_directions_match_torch():
    """Two layers, both directions, batch first: against nn.LSTM in float64 on the same weights."""
    torch_lstm = torch.nn.LSTM(6, 10, num_layers=2, bidirectional=True, batch_first=True)
    fused = fusedrnn.LSTM.from_torch(torch_lstm, backend="triton")
    x = torch.randn(3, 5, 6)
    results = []
    for module, dtype in ((fused, torch.float32), (copy.deepcopy(torch_lstm).double(), torch.float64)):
        x_ = x.to(dtype, copy=True).requires_grad_()
        out, (h_n, c_n) = module(x_)
        (out.square().sum() + h_n.sum() + c_n.sum()).backward()
        results.append([out, h_n, c_n, x_.grad] + [p.grad for p in module.parameters()])
    names = ["output", "h_n", "c_n", "grad x"] + [f"grad {name}" for name, _ in fused.named_parameters()]
    for name, actual, expected in zip(names, *results):
        assert_close(name, actual, expected, tolerance(torch.float32))


# G2 noise ---------------------------------------------------------------------------

def g2_inputs(device, shape=(6, 4, 8, 24), dtype=torch.float32):
    seq_len, batch_size, input_size, hidden_size = shape
    weights = {k: v.to(device, dtype) for k, v in random_weights("g2", input_size, hidden_size).items()}
    x = torch.randn(seq_len, batch_size, input_size, device=device, dtype=dtype)
    return x, weights


def g2_run(x, weights, backend, **options):
    """Output, final states and the gradients of every input of one G2 call."""
    leaves = [x.clone().requires_grad_()] + [w.clone().requires_grad_() for w in weights.values()]
    out, (h_n, c_n) = functional.g2_lstm(leaves[0], **dict(zip(weights, leaves[1:])), backend=backend, **options)
    loss = (out.double() * torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)).sum() + h_n.sum()
    return [out, h_n, c_n] + list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("device", G2_DEVICES)
def test_g2_same_seed_is_bitwise_identical(device):
    x, weights = g2_inputs(device)
    options = dict(gate_mode="noisy", noise_prob=0.7, temperature=0.8)
    torch.manual_seed(1234)
    first = g2_run(x, weights, "triton", **options)
    torch.manual_seed(1234)
    again = g2_run(x, weights, "triton", **options)
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    other = g2_run(x, weights, "triton", **options)  # the generator moved on: new noise
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_the_backward_keeps_the_cells_in_float32_and_the_gates_in_the_input_dtype(dtype):
    """SPEC §6.1: the cell state stays float32; the activated gates, most of what a training
    step keeps, are in the input's half dtype (the parity suite holds them to its bounds)."""
    device = "cuda" if CUDA else "cpu"
    seq_len, batch_size, input_size, hidden_size = 5, 3, 11, 8  # I ≠ H: only states are (T, B, H)
    x = torch.randn(seq_len, batch_size, input_size, device=device, dtype=dtype, requires_grad=True)
    weights = {k: w.to(device, dtype) for k, w in random_weights("lstm", input_size, hidden_size).items()}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        functional.lstm(x, **weights, backend="triton")[0].sum().backward()
    kept = {}
    for tensor in saved:
        kept.setdefault(tuple(tensor.shape), set()).add(tensor.dtype)
    assert kept[(seq_len, batch_size, 4 * hidden_size)] == {dtype}, f"the gates: {kept}"
    assert torch.float32 in kept[(seq_len, batch_size, hidden_size)], f"the cells: {kept}"


# Offline GPU compilation (CPU CI) ------------------------------------------------------

@pytest.mark.parametrize("dtype, config", [
    ("bfloat16", dict(block_b=16, block_h=16, hidden_pad=256, programs_h=16, programs_b=1, num_warps=8)),
    ("float32", dict(block_b=16, block_h=16, hidden_pad=256, programs_h=16, programs_b=1, num_warps=8, block_k=64)),
    ("float16", dict(block_b=16, block_h=64, hidden_pad=64, programs_h=1, programs_b=1, hidden_on_chip=True)),
], ids=["bfloat16-exchange", "float32-chunked", "float16-registers"])
def test_kernels_compile_for_h100(dtype, config):
    """The GPU compiler accepts the kernels (the interpreter is laxer); in a subprocess,
    since the interpreter replaces the kernels in this one."""
    environment = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "fusedrnn.triton_kernels.offline", "--dtype", dtype,
               "--config", json.dumps(config)]
    result = subprocess.run(command, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for kernel, used in json.loads(result.stdout).items():
        assert used["shared_bytes"] <= 227 * 1024, f"{kernel}: {used}"
        assert 0 < used["registers"] <= 255, f"{kernel}: {used}"


# GPU ------------------------------------------------------------------------------------

GPU_SHAPES = {  # (T, B, I, H)
    "T33-B5-I24-H40": (33, 5, 24, 40),
    "T17-B1-I7-H100": (17, 1, 7, 100),
    "T1-B8-I16-H64": (1, 8, 16, 64),
    "T20-B64-I96-H256": (20, 64, 96, 256),
    "T9-B3-I5-H1024": (9, 3, 5, 1024),
    "T6-B130-I8-H48": (6, 130, 8, 48),
}
GPU_DTYPES = common.DTYPES


@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_issue_shapes_have_a_layout_on_an_h100(dtype):
    """Issue 4's benchmark shapes (B, H) get a persistent layout on 132 SMs (pure Python)."""
    for batch_size, hidden_size in [(16, 256), (64, 512), (64, 1024), (256, 1024), (16, 768), (8, 128)]:
        assert layout._gpu_configs(hidden_size, batch_size, dtype.itemsize, 132), f"B={batch_size} H={hidden_size}"


def _layout_sweep():
    """``bench/layouts.py``, the GPU tool that times every candidate layout."""
    spec = importlib.util.spec_from_file_location("layouts", os.path.join(ROOT, "bench", "layouts.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layout_sweep_candidates_are_resident_grids_led_by_the_heuristic_pick():
    """Forced layouts must still have every program resident (at most one per SM), whatever
    warps, chunks or tiles the sweep tries (pure Python, 132 SMs)."""
    sweep = _layout_sweep()
    for batch_size, hidden_size in [(16, 256), (256, 1024), (37, 200), (1, 24)]:
        listed = layout._gpu_configs(hidden_size, batch_size, 2, 132)
        candidates = sweep.lstm_candidates(hidden_size, batch_size, torch.bfloat16, 132)
        assert candidates[:len(listed)] == list(listed) and len(set(candidates)) == len(candidates)
        assert {c.num_warps for c in candidates} >= {4, 8, 16}
        assert all(c.programs <= 132 and c.block_h * c.programs_h >= hidden_size for c in candidates)
        mogrifier_candidates = sweep.mogrifier_candidates(batch_size, hidden_size, hidden_size, 132)
        assert len(mogrifier_candidates) == (5 if batch_size <= 16 else 4), mogrifier_candidates
        assert all(c.programs <= 132 for c in mogrifier_candidates)


@needs_interpreter
def test_layout_sweep_runs_each_candidate_it_times(monkeypatch):
    sweep = _layout_sweep()
    config = sweep.Config("lstm", batch_size=3, seq_len=4, input_size=8, hidden_size=32, dtype="float32")
    on_chip = lstm.config_for(32, 3, torch.float32, torch.device("cpu"))
    chunked = dataclasses.replace(on_chip, hidden_on_chip=False, block_k=16)

    # As on a GPU where the chunked layout's backward does not fit an SM: its forward is still timed.
    def launches(candidate, direction):
        return candidate == on_chip or direction == "fwd"

    monkeypatch.setattr(sweep, "candidates", lambda config, device: ([on_chip, chunked], on_chip, launches))
    launched, launch = [], lstm.lstm_fwd
    monkeypatch.setattr(lstm, "lstm_fwd", lambda *args, config, **kw: launched.append(config) or launch(*args, config=config, **kw))
    rows = sweep.measure_layouts(config, torch.device("cpu"))
    assert [(r["status"], r["direction"], r["layout"]) for r in rows] == [
        ("ok", "fwd", repr(on_chip)), ("ok", "fwdbwd", repr(on_chip)), ("ok", "fwd", repr(chunked)),
        ("n/a", "fwdbwd", repr(chunked))]
    assert set(launched) == {on_chip, chunked}
    assert [r["implementation"].endswith(" *") for r in rows] == [True, True, False, False]


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("shape", list(GPU_SHAPES.values()), ids=list(GPU_SHAPES))
@pytest.mark.gpu
def test_gpu_awkward_sizes(shape, dtype, variant):
    lengths, reverse = VARIANTS[variant]
    assert_matches_reference("triton", "lstm", shape, dtype, "cuda", lengths=lengths, reverse=reverse)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("case", ["g2-noisy", "g2-soft", "g2-hard"])
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.gpu
def test_gpu_g2_multi_program(dtype, case, variant):
    lengths, reverse = VARIANTS[variant]
    check_case(case, GPU_SHAPES["T20-B64-I96-H256"], dtype, "cuda", lengths, reverse)


@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.gpu
def test_gpu_every_candidate_layout(monkeypatch, dtype):
    shape = (12, 24, 32, 200)
    configs = layout.sweep_configs(shape[3], shape[1], dtype, torch.device("cuda"))
    assert any(config.programs_h > 1 for config in configs)
    for config in configs:
        monkeypatch.setattr(lstm, "config_for", lambda *sizes, config=config: config)
        assert_matches_reference("triton", "lstm", shape, dtype, "cuda", lengths=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.gpu
def test_gpu_layout_past_the_register_budget(dtype):
    """B = 256, H = 1024 only has layouts past ``REGISTER_BUDGET`` (they spill)."""
    assert_matches_reference("triton", "lstm", (4, 256, 32, 1024), dtype, "cuda", lengths=True, reverse=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.gpu
def test_gpu_long_sequence(dtype):
    assert_matches_reference("triton", "lstm", (4096, 2, 8, 32), dtype, "cuda", lengths=True)


@pytest.mark.gpu
def test_gpu_two_streams_at_once():
    """Two sweeps whose grids together exceed the SMs, on two streams, both finish right."""
    hidden_size = 2048
    inputs = []
    for _ in range(2):
        x = torch.randn(64, 4, 32, device="cuda")
        weights = {k: v.float().cuda() for k, v in random_weights("lstm", 32, hidden_size).items()}
        inputs.append((x, weights))
    config = lstm.config_for(hidden_size, 4, torch.float32, torch.device("cuda"))
    assert config is not None and 2 * config.programs > torch.cuda.get_device_properties(0).multi_processor_count
    expected = [functional.lstm(x, **w, backend="triton")[0] for x, w in inputs]
    streams = [torch.cuda.Stream() for _ in inputs]
    torch.cuda.synchronize()
    results = []
    for stream, (x, w) in zip(streams, inputs):
        with torch.cuda.stream(stream):
            results.append(functional.lstm(x, **w, backend="triton")[0])
    torch.cuda.synchronize()
    for actual, reference in zip(results, expected):
        assert torch.equal(actual, reference)


@pytest.mark.gpu
def test_gpu_cuda_graph_capture():
    x, weights = g2_inputs("cuda", shape=(16, 8, 32, 128))
    lengths = torch.tensor([16, 3, 9, 16, 1, 12, 16, 5], device="cuda")

    def step():
        lstm_out = functional.lstm(x, **weights, lengths=lengths, backend="triton")[0]
        g2_out = functional.g2_lstm(x, **weights, gate_mode="noisy", backend="triton")[0]
        return lstm_out, g2_out

    eager_lstm, _ = step()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()  # warm-up: compiles outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured_lstm, captured_g2 = step()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured_lstm, eager_lstm)
    first_g2 = captured_g2.clone()
    graph.replay()
    torch.cuda.synchronize()
    assert not torch.equal(captured_g2, first_g2), "each replay must draw fresh noise"
