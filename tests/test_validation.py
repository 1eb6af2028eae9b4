"""Bad input gets a clear ValueError/TypeError that names the argument."""
import math

import numpy
import pytest
import torch

import fusedrnn
from fusedrnn import functional

from conftest import CELLS, MODULES

T, B, I, H = 5, 3, 4, 6


def _args(dtype=torch.float32):
    return dict(input=torch.randn(T, B, I, dtype=dtype), weight_ih=torch.randn(4 * H, I, dtype=dtype),
                weight_hh=torch.randn(4 * H, H, dtype=dtype), bias_ih=torch.randn(4 * H, dtype=dtype),
                bias_hh=torch.randn(4 * H, dtype=dtype))


FUNCTIONAL_CASES = {
    "input rank": (dict(input=torch.randn(T, B)), ValueError, "input must have 3 dimensions"),
    "input without steps": (dict(input=torch.randn(0, B, I)), ValueError, "at least one time step"),
    "input dtype": (dict(input=torch.randn(T, B, I).int()), TypeError, "input must be float"),
    "input feature size": (dict(input=torch.randn(T, B, I + 1)), ValueError, "weight_ih must have shape"),
    "weight_hh shape": (dict(weight_hh=torch.randn(4 * H, H + 1)), ValueError, "weight_hh must have shape"),
    "weight dtype": (dict(weight_ih=torch.randn(4 * H, I, dtype=torch.float64)), TypeError, "weight_ih must have"),
    "bias shape": (dict(bias_hh=torch.randn(H)), ValueError, "bias_hh must have shape"),
    "one bias": (dict(bias_hh=None), ValueError, "bias_ih and bias_hh"),
    "h0 batch": (dict(h0=torch.randn(B + 1, H)), ValueError, "h0 must have shape"),
    "c0 dtype": (dict(c0=torch.randn(B, H, dtype=torch.float64)), TypeError, "c0 must have the input's dtype"),
    "h0 not tensor": (dict(h0=[[0.0] * H] * B), TypeError, "h0 must be a torch.Tensor"),
    "lengths too long": (dict(lengths=torch.tensor([T + 1, 1, 1])), ValueError, "lengths must lie in"),
    "lengths negative": (dict(lengths=torch.tensor([-1, 1, 1])), ValueError, "lengths must lie in"),
    "lengths size": (dict(lengths=torch.tensor([1, 1])), ValueError, "lengths must have shape"),
    "lengths float": (dict(lengths=torch.tensor([1.0, 1.0, 1.0])), TypeError, "lengths must be an integer"),
    "lengths of None": (dict(lengths=[None, 1, 1]), TypeError, "lengths must be an integer tensor or a sequence"),
    "lengths beyond int64": (dict(lengths=[2 ** 70, 1, 1]), TypeError, "lengths must be an integer tensor or a"),
    "lengths on meta": (dict(lengths=torch.ones(B, dtype=torch.long, device="meta")), ValueError,
                        "lengths must be on the CPU or on the input's device"),
    "no input features": (dict(input=torch.randn(T, B, 0), weight_ih=torch.randn(4 * H, 0)), ValueError,
                          r"input must have at least one feature \(I >= 1\)"),
    "no hidden units": (dict(weight_ih=torch.randn(0, I), weight_hh=torch.randn(0, 0), bias_ih=None, bias_hh=None),
                        ValueError, "hidden_size >= 1"),
    "weight_hh None": (dict(weight_hh=None), TypeError, "weight_hh must be a torch.Tensor, got NoneType"),
    "reverse not a bool": (dict(reverse="no"), TypeError, "reverse must be a bool, got str"),
    "unknown backend": (dict(backend="fast"), ValueError, "backend must be 'auto' or one of"),
    "backend not a str": (dict(backend=["cpu"]), TypeError, "backend must be a str"),
}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("case", list(FUNCTIONAL_CASES))
def test_functional_rejects(cell, case):
    change, error, message = FUNCTIONAL_CASES[case]
    args = {**_args(), **change}
    function = functional.FUNCTIONS[cell]
    with pytest.raises(error, match=message):
        function(**args)


@pytest.mark.parametrize("change, error, message", [
    (dict(temperature=0.0), ValueError, r"temperature must be finite and >= 2\*\*-126"),
    (dict(temperature=-1.0), ValueError, r"temperature must be finite and >= 2\*\*-126"),
    # 1/τ overflows float32: the kernels' gradients would be NaN.
    (dict(temperature=1e-39), ValueError, r"temperature must be finite and >= 2\*\*-126 \(float32's smallest"),
    (dict(temperature=math.nan), ValueError, "temperature must be finite"),
    (dict(temperature=math.inf), ValueError, "temperature must be finite"),
    (dict(temperature="hot"), TypeError, "temperature must be a number"),
    (dict(noise_prob=0.0), ValueError, r"noise_prob must be in \(0, 1\]"),
    (dict(noise_prob=1.5), ValueError, r"noise_prob must be in \(0, 1\]"),
    (dict(gate_mode="sharp"), ValueError, "gate_mode must be one of"),
    (dict(noise=torch.zeros(T, B, 2, H + 1)), ValueError, "noise must have shape"),
    (dict(noise=torch.zeros(T, B, 2, H), gate_mode="soft"), ValueError, "noise is only used with"),
    (dict(noise=torch.zeros(T, B, 2, H, dtype=torch.long)), TypeError, "noise must be a floating-point"),
    (dict(noise=torch.zeros(T, B, 2, H, requires_grad=True)), ValueError, "noise must not require grad"),
])
def test_g2_rejects(change, error, message):
    with pytest.raises(error, match=message):
        functional.g2_lstm(**_args(), **change)


def test_g2_takes_numpy_numbers_as_options():
    args = dict(_args(), gate_mode="soft")
    expected = functional.g2_lstm(**args, temperature=0.5, noise_prob=0.25)
    got = functional.g2_lstm(**args, temperature=numpy.float32(0.5), noise_prob=numpy.float64(0.25))
    assert torch.equal(got[0], expected[0])


@pytest.mark.parametrize("change, error, message", [
    (dict(mogrify_weights=torch.randn(I, H)), TypeError, "mogrify_weights must be a list"),
    (dict(mogrify_weights=[torch.randn(H, I)]), ValueError, r"mogrify_weights\[0\] must have shape"),
    (dict(mogrify_weights=[torch.randn(I, H), torch.randn(I, H)]), ValueError, r"mogrify_weights\[1\]"),
    (dict(mogrify_weights=[(torch.randn(I, 2), torch.randn(3, H))]), ValueError, r"mogrify_weights\[0\]\[1\]"),
    (dict(mogrify_weights=[(None, torch.randn(2, H))]), TypeError, r"mogrify_weights\[0\]\[0\] must be a torch"),
    (dict(mogrify_weights=[(torch.randn(I, 0), torch.randn(0, H))]), ValueError, "with rank >= 1"),
    (dict(mogrify_weights=[torch.randn(I, H)], mogrify_biases=5), TypeError, "mogrify_biases must be a list"),
    (dict(mogrify_weights=[torch.randn(I, H)], mogrify_biases=[]), ValueError, "one bias per round"),
    (dict(mogrify_weights=[torch.randn(I, H)], mogrify_biases=[torch.randn(H)]), ValueError,
     r"mogrify_biases\[0\] must have shape"),
])
def test_mogrifier_rejects(change, error, message):
    with pytest.raises(error, match=message):
        functional.mogrifier_lstm(**_args(), **change)


MODULE_CASES = {
    "proj_size": (fusedrnn.LSTM, dict(proj_size=2), ValueError, "proj_size is not supported"),
    "hidden_size": (fusedrnn.LSTM, dict(hidden_size=0), ValueError, "hidden_size must be positive"),
    "input_size type": (fusedrnn.LSTM, dict(input_size=4.0), TypeError, "input_size must be an int"),
    "num_layers": (fusedrnn.LSTM, dict(num_layers=0), ValueError, "num_layers must be positive"),
    "dropout": (fusedrnn.LSTM, dict(dropout=1.5), ValueError, "dropout must be a number in"),
    "mogrify_steps": (fusedrnn.MogrifierLSTM, dict(mogrify_steps=-1), ValueError, "mogrify_steps must be >= 0"),
    "mogrify_rank zero": (fusedrnn.MogrifierLSTM, dict(mogrify_rank=0), ValueError, "mogrify_rank must be positive"),
    "mogrify_rank large": (fusedrnn.MogrifierLSTM, dict(mogrify_rank=I + 1), ValueError,
                           r"mogrify_rank must be at most min\(input_size, hidden_size\)"),
    "temperature": (fusedrnn.G2LSTM, dict(temperature=0), ValueError, r"temperature must be finite and >= 2\*\*-126"),
    "dtype": (fusedrnn.LSTM, dict(dtype=torch.complex64), TypeError, "dtype must be float16, bfloat16, float32"),
    "temperature nan": (fusedrnn.G2LSTM, dict(temperature=math.nan), ValueError, "temperature must be finite"),
    "noise_prob": (fusedrnn.G2LSTM, dict(noise_prob=0), ValueError, r"noise_prob must be in \(0, 1\]"),
    "eval_gate_mode": (fusedrnn.G2LSTM, dict(eval_gate_mode="binary"), ValueError, "eval_gate_mode must be one of"),
    "mogrify_rank type": (fusedrnn.MogrifierLSTM, dict(mogrify_rank=2.5), TypeError, "mogrify_rank must be an int"),
    "backend": (fusedrnn.G2LSTM, dict(backend="trition"), ValueError, "backend must be 'auto' or one of"),
}


@pytest.mark.parametrize("case", list(MODULE_CASES))
def test_module_constructor_rejects(case):
    module, change, error, message = MODULE_CASES[case]
    with pytest.raises(error, match=message):
        module(**{"input_size": I, "hidden_size": H, **change})


@pytest.mark.parametrize("input, hx, error, message", [
    (torch.randn(T, B, I + 1), None, ValueError, "input must have 4 features"),
    (torch.randn(T), None, ValueError, "input must have 3 dimensions"),
    (torch.randn(T, B, I, dtype=torch.float64), None, TypeError, "input must have the module's dtype"),
    ("text", None, TypeError, "input must be a torch.Tensor or PackedSequence"),
    (torch.randn(T, B, I), (torch.randn(1, B + 1, H), torch.randn(1, B, H)), ValueError, "h_0 must have shape"),
    (torch.randn(T, B, I), (torch.randn(1, B, H),), TypeError, r"hx must be a tuple \(h_0, c_0\)"),
    (torch.randn(T, B, I), (torch.randn(1, B, H), torch.randn(1, B, H, dtype=torch.float64)), TypeError,
     "c_0 must have the input's dtype"),
    (torch.randn(0, B, I), None, ValueError, "input must have at least one time step"),
])
@pytest.mark.parametrize("backend", ["auto", "torch"])  # torch: the module calls PyTorch's kernel itself
def test_module_call_rejects(input, hx, error, message, backend):
    with pytest.raises(error, match=message):
        fusedrnn.LSTM(I, H, backend=backend)(input, hx)


@pytest.mark.parametrize("state, message", [
    (torch.ones(1, B, H, dtype=torch.long), r"h_0 must have the input's dtype torch.bfloat16, got torch.int64"),
    ([[0.0] * H] * B, "h_0 must be a torch.Tensor, got list"),
], ids=["int64", "list"])
def test_module_under_autocast_refuses_states_it_cannot_cast(state, message):
    """Autocast casts floating states to its dtype, as nn.LSTM's; other states are still refused."""
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(TypeError, match=message):
        fusedrnn.LSTM(I, H)(torch.randn(T, B, I), (state, torch.zeros(1, B, H)))


@pytest.mark.parametrize("cell", CELLS)
def test_module_runs_on_the_meta_device_as_nn_lstm(cell):
    """Shapes without data (as ``nn.LSTM`` on ``meta``), forward and backward."""
    model = MODULES[cell](I, H, num_layers=2, bidirectional=True, device="meta")
    output, (h_n, c_n) = model(torch.randn(T, B, I, device="meta"))
    assert (output.shape, h_n.shape, output.device) == ((T, B, 2 * H), (4, B, H), torch.device("meta"))
    output.sum().backward()
    assert model.weight_hh_l1_reverse.grad.shape == (4 * H, H)


def test_module_rejects_lengths_with_packed_input():
    x = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(T, B, I), torch.tensor([5, 3, 2]))
    with pytest.raises(ValueError, match="lengths must not be given with a PackedSequence"):
        fusedrnn.LSTM(I, H)(x, lengths=torch.tensor([5, 3, 2]))


def test_backend_is_checked_when_set():
    model = fusedrnn.LSTM(I, H)
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        model.backend = "cuDNN"
    assert model.backend == "auto"


def test_dropout_with_one_layer_warns_as_nn_lstm():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        fusedrnn.LSTM(I, H, dropout=0.5)
