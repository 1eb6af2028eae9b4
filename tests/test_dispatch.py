"""One dispatch point: "auto" always finds a backend; a named one runs or says why not."""
import warnings
from pathlib import Path

import pytest
import torch

import fusedrnn
from fusedrnn import dispatch, functional
from fusedrnn.bench.report import timed_calls
from fusedrnn.native import backend as native_backend

from conftest import DTYPES, skip_unless_available


def test_available_backends_always_include_reference_in_auto_order():
    available = fusedrnn.available_backends()
    assert "reference" in available
    assert available == [name for name in fusedrnn.BACKENDS if name in available]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("module", [fusedrnn.LSTM, fusedrnn.MogrifierLSTM, fusedrnn.G2LSTM])
def test_auto_runs_every_cell_and_dtype_on_cpu(module, dtype):
    model = module(4, 5, dtype=dtype)
    out, (h_n, c_n) = model(torch.randn(3, 2, 4, dtype=dtype))
    assert out.dtype == h_n.dtype == c_n.dtype == dtype
    assert torch.isfinite(out.float()).all()


class Declines:
    """A backend that this machine runs but that declines every call, for ``reason``."""

    def __init__(self, name, device_type, reason):
        self.name, self.device_type, self.reason = name, device_type, reason

    def unavailable(self):
        return None

    def unsupported(self, sweep, explicit):
        return self.reason

    def run(self, sweep):
        raise AssertionError("auto must not run a backend that declined")


def _install(monkeypatch, backend):
    monkeypatch.setattr(dispatch, "_loaded", {**dispatch._loaded, backend.name: backend})
    monkeypatch.setattr(dispatch, "_missing", {k: v for k, v in dispatch._missing.items() if k != backend.name})
    monkeypatch.setattr(dispatch, "_reasons", {})


def test_auto_skips_backends_that_decline(monkeypatch):
    reference = dispatch._load("reference")
    _install(monkeypatch, Declines("triton", "cuda", "never"))
    x, w_ih, w_hh = torch.randn(2, 1, 3), torch.randn(8, 3), torch.randn(8, 2)
    assert functional.lstm(x, w_ih, w_hh)[0].shape == (2, 1, 2)
    sweep = functional._validated_call("lstm", x, w_ih, w_hh, None, None, None, None, None, False)
    assert dispatch.select("auto", sweep) is not dispatch._loaded["triton"]
    assert dispatch.select("auto", sweep) in (reference, *[dispatch._loaded.get(n) for n in ("torch", "cuda", "cpu")])
    with pytest.raises(fusedrnn.BackendUnavailableError, match="backend 'triton' cannot run this lstm call: never"):
        functional.lstm(x, w_ih, w_hh, backend="triton")


def test_named_backend_that_is_missing_says_why(monkeypatch):
    monkeypatch.setitem(dispatch._MODULES, "cuda", "fusedrnn.no_such_module")
    monkeypatch.setattr(dispatch, "_loaded", {k: v for k, v in dispatch._loaded.items() if k != "cuda"})
    monkeypatch.setattr(dispatch, "_missing", {k: v for k, v in dispatch._missing.items() if k != "cuda"})
    monkeypatch.setattr(dispatch, "_reasons", {})
    with pytest.raises(fusedrnn.BackendUnavailableError, match="backend 'cuda' cannot run .*not installed"):
        functional.lstm(torch.randn(2, 1, 3), torch.randn(8, 3), torch.randn(8, 2), backend="cuda")
    assert "cuda" not in fusedrnn.available_backends()


@pytest.mark.parametrize("backend", ["auto", "cpu", "reference"])
def test_an_empty_batch_runs_on_every_backend_as_nn_lstm(backend):
    skip_unless_available(backend)
    reference = torch.nn.LSTM(3, 4)
    model = fusedrnn.LSTM.from_torch(reference, backend=backend)
    x = torch.randn(5, 0, 3, requires_grad=True)
    output, (h_n, c_n) = model(x)
    expected, (expected_h, expected_c) = reference(x)
    assert output.shape == expected.shape and h_n.shape == expected_h.shape and c_n.shape == expected_c.shape
    output.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("call", ["module", "functional"])
def test_a_fallback_warning_names_the_callers_line(monkeypatch, call):
    """The warning points at the user's call, not at fusedrnn's or torch's internals."""
    reason = f"declined in test_a_fallback_warning_names_the_callers_line[{call}]"  # new: warned once per reason
    _install(monkeypatch, Declines("cpu", "cpu", reason))
    model, x = fusedrnn.G2LSTM(3, 2), torch.randn(2, 1, 3)
    with pytest.warns(RuntimeWarning, match="falls back from the 'cpu' backend") as record:
        if call == "module":
            model(x)
        else:
            functional.g2_lstm(x, model.weight_ih_l0, model.weight_hh_l0)
    assert [(w.filename, reason in str(w.message)) for w in record] == [(__file__, True)]


def _picks_pytorchs_kernel(cell, shape, dtype, training=False):
    """Whether ``auto`` runs a ``cell`` call of ``(T, B, H)`` on nn.LSTM's kernel."""
    seq_len, batch_size, hidden_size = shape
    x = torch.randn(seq_len, batch_size, 3, dtype=dtype, requires_grad=training)
    w_ih, w_hh = torch.randn(4 * hidden_size, 3, dtype=dtype), torch.randn(4 * hidden_size, hidden_size, dtype=dtype)
    sweep = functional._validated_call(cell, x, w_ih, w_hh, None, None, None, None, None, False)
    return dispatch.select("auto", sweep).name == "torch"


@pytest.mark.parametrize("shape, to_onednn", [
    ((1, 1, 8), False), ((16, 1, 32), False), ((1, 1, 1024), False), ((2, 32, 256), False),
    ((2, 64, 256), True), ((3, 2, 512), True), ((8, 1, 512), False), ((9, 1, 512), True), ((8, 1, 511), True),
    ((64, 4, 64), True)],
    ids=["decode-step", "under-1024-elements", "decode-step-H1024", "2-steps-32-rows", "2-steps-64-rows",
         "3-steps", "8-steps-one-wide-row", "9-steps-one-row", "8-steps-one-narrower-row", "sequence"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_auto_takes_pytorchs_kernel_for_float32_lstm_calls_but_small_and_short_ones(dtype, shape, to_onednn):
    """The plain LSTM's speed floor on the CPU: float32 LSTM calls run nn.LSTM's kernel
    (oneDNN), but those under T·B·H = 1024 elements, of at most 2 steps over at most 32 rows, or
    of at most 8 steps over one row of a layer at least 512 wide, where oneDNN's fixed cost per
    call made it the slower (bench/results/cpu-auto/); other cells and float64 run fusedrnn's own
    backends."""
    for cell in ("lstm", "g2"):
        expected = cell == "lstm" and dtype == torch.float32 and to_onednn
        assert _picks_pytorchs_kernel(cell, shape, dtype) == expected, f"{cell} {dtype} {shape}"


@pytest.mark.parametrize("shape, training, to_onednn", [
    ((1, 1, 1024), False, True), ((64, 64, 64), False, True), ((64, 64, 64), True, True),
    ((16, 1, 64), True, True), ((16, 1, 128), True, False), ((16, 4, 768), True, False),
    ((16, 5, 1024), True, True), ((16, 4, 767), True, True)],
    ids=["decode-step", "sequence", "training", "training-one-narrow-row", "training-one-row",
         "training-4-wide-rows", "training-5-wide-rows", "training-4-narrower-rows"])
@pytest.mark.parametrize("bfloat16_products", [True, False], ids=["avx512-bf16", "no-bf16-products"])
def test_auto_takes_pytorchs_kernel_for_bfloat16_lstm_calls_but_one_or_few_wide_training_rows(
        monkeypatch, bfloat16_products, shape, training, to_onednn):
    """bfloat16 on a CPU with bfloat16 dot products: oneDNN multiplies in bfloat16, so every LSTM
    call that no backward follows runs nn.LSTM's kernel; training calls of one row of a layer at
    least 128 wide, or of at most 4 rows of one at least 768 wide, run the ``cpu`` backend, whose
    backward was the faster there (bench/results/cpu-auto/bf16/). Without those instructions (not
    measured), and for the other cells, fusedrnn's own backends run every call."""
    monkeypatch.setattr(native_backend, "cpu_multiplies_bfloat16", lambda: bfloat16_products)
    assert _picks_pytorchs_kernel("lstm", shape, torch.bfloat16, training) == (to_onednn and bfloat16_products)
    assert not _picks_pytorchs_kernel("g2", shape, torch.bfloat16, training)


H200_RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "h200" / "results.json"


def _cuda_rule(dtype, seq_len, batch_size, hidden_size, training):
    """Whether ``auto`` takes cuDNN for such a call on a GPU (:data:`native_backend.FASTER`)."""
    rule = native_backend.FASTER.get(("cuda", dtype))
    call = native_backend.Call("cuda", dtype, seq_len, batch_size, hidden_size, needs_backward=training)
    return rule is not None and rule(call)


def _h200_lstm_calls():
    """``(dtype, direction, T, B, H, triton ms, nn.LSTM ms)`` of every plain-LSTM call the H200 run timed on both."""
    return [(dtype, direction, seq_len, batch_size, hidden_size, both["triton"], both["nn.LSTM"])
            for (cell, dtype, direction, batch_size, seq_len, hidden_size), both in timed_calls(H200_RESULTS).items()
            if cell == "lstm" and {"triton", "nn.LSTM"} <= both.keys()]


def test_the_gpu_rule_never_leaves_a_call_on_the_slower_kernel_of_the_h200_run():
    """The speed floor on a GPU: on every plain-LSTM call of the committed H200 run, ``auto``
    takes cuDNN wherever it was the faster (by more than 5 %, the run's noise), so that a drop-in
    is never slower than ``nn.LSTM``; and it keeps the Triton sweep where that was more than 1.5×
    faster, so that the rule is not "always cuDNN"."""
    calls = _h200_lstm_calls()
    assert len(calls) == 36, "the H200 run's 6 shapes × 3 dtypes × 2 directions"
    for dtype, direction, seq_len, batch_size, hidden_size, triton_ms, cudnn_ms in calls:
        takes_cudnn = _cuda_rule(getattr(torch, dtype), seq_len, batch_size, hidden_size, direction == "fwdbwd")
        where = (f"{dtype} {direction} T{seq_len} B{batch_size} H{hidden_size}: triton {triton_ms:.3f} ms, "
                 f"cuDNN {cudnn_ms:.3f} ms")
        if triton_ms > 1.05 * cudnn_ms:
            assert takes_cudnn, f"auto would be slower than nn.LSTM at {where}"
        if cudnn_ms > 1.5 * triton_ms:
            assert not takes_cudnn, f"auto would give up a faster Triton sweep at {where}"


@pytest.mark.parametrize("dtype, shape, training, to_cudnn", [
    (torch.float16, (512, 16, 256), False, True), (torch.float16, (256, 64, 512), True, True),
    (torch.bfloat16, (512, 16, 256), True, False), (torch.bfloat16, (256, 128, 1024), True, False),
    (torch.bfloat16, (256, 129, 1024), False, True), (torch.bfloat16, (16, 16, 256), True, True),
    (torch.float32, (256, 64, 512), False, False), (torch.float32, (256, 64, 1024), False, True),
    (torch.float32, (512, 16, 256), True, False), (torch.float32, (1024, 8, 128), True, True),
    (torch.float32, (512, 16, 255), True, True), (torch.float32, (17, 1, 256), True, False),
    (torch.float32, (16, 1, 256), True, True), (torch.float64, (512, 16, 256), True, False)],
    ids=["float16-forward", "float16-training", "bf16-16-rows", "bf16-128-rows", "bf16-129-rows", "bf16-16-steps",
         "f32-forward-64x512", "f32-forward-64x1024", "f32-training-16x256", "f32-training-8x128",
         "f32-training-16x255", "f32-17-steps", "f32-16-steps", "float64"])
def test_the_gpu_rule_by_case(dtype, shape, training, to_cudnn):
    """On a GPU, cuDNN takes every float16 call, bfloat16 calls of more than 128 rows, float32
    forward calls from B·H = 64·1024 and float32 training calls but those of at most 16 rows at
    least 256 wide, and every call of at most 16 steps; float64 stays on fusedrnn's backends."""
    assert _cuda_rule(dtype, *shape, training) == to_cudnn


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_auto_on_cudnn_does_not_tell_the_user_to_flatten(dtype):
    """cuDNN warns when a call's weights are not in one buffer, which fusedrnn's parameters never
    are; auto's float16 calls and bfloat16 calls of many rows run there, with no such warning."""
    model = fusedrnn.LSTM(32, 32, device="cuda", dtype=dtype)
    x = torch.randn(24, 256, 32, device="cuda", dtype=dtype)
    with warnings.catch_warnings(record=True) as caught:  # the filters as they are, the registries cleared
        model(x)[0].sum().backward()
    assert dispatch.select("auto", functional._validated_call(
        "lstm", x, model.weight_ih_l0, model.weight_hh_l0, None, None, None, None, None, False)).name == "torch"
    assert [str(w.message) for w in caught if "contiguous chunk" in str(w.message)] == []
