"""The modules are drop-in ``torch.nn.LSTM``s: same arguments, shapes, parameter names,
state_dict and (in float64) the same numbers, for every layout ``nn.LSTM`` accepts."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedrnn
from fusedrnn.native import backend as native_backend

from conftest import assert_close, skip_unless_available, tolerance

CONFIGS = {  # nn.LSTM keyword arguments
    "1layer": dict(num_layers=1),
    "2layers-bidir": dict(num_layers=2, bidirectional=True),
    "3layers-batch_first": dict(num_layers=3, batch_first=True),
    "nobias-bidir": dict(bias=False, bidirectional=True),
}
INPUT_SIZE, HIDDEN_SIZE, SEQ_LEN, BATCH_SIZE = 5, 6, 7, 4


def _pair(backend="reference", **config):
    torch_lstm = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, dtype=torch.float64, **config)
    return torch_lstm, fusedrnn.LSTM.from_torch(torch_lstm, backend=backend)


def _grads(module, loss, extra):
    params = [p for _, p in sorted(module.named_parameters())]
    return torch.autograd.grad(loss, extra + params)


def _outputs_and_grads(module, x, hx, leaves):
    """``module(x, hx)``'s output and final states, and the gradients of ``leaves`` and every
    parameter for a loss weighting them by fixed random seeds (drawn in float64, so that every
    dtype sees the same ones)."""
    out, (h_n, c_n) = module(x, hx)
    seeds = torch.Generator().manual_seed(0)
    loss = sum((t * torch.randn(t.shape, dtype=torch.float64, generator=seeds).to(t.dtype)).sum()
               for t in (out, h_n, c_n))
    return [out, h_n, c_n, *_grads(module, loss, leaves)]


@pytest.mark.parametrize("backend", ["reference", "torch"])  # torch: a stack in one call of its kernel
@pytest.mark.parametrize("given_state", [False, True], ids=["no-hx", "hx"])
@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_lstm_matches_torch(config, given_state, backend):
    torch_lstm, fused = _pair(backend, **config)
    directions = 2 if config.get("bidirectional") else 1
    shape = (BATCH_SIZE, SEQ_LEN, INPUT_SIZE) if config.get("batch_first") else (SEQ_LEN, BATCH_SIZE, INPUT_SIZE)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    state_shape = (config.get("num_layers", 1) * directions, BATCH_SIZE, HIDDEN_SIZE)
    hx = tuple(torch.randn(state_shape, dtype=torch.float64, requires_grad=True) for _ in range(2))
    results = [_outputs_and_grads(module, x, hx if given_state else None, [x, *hx] if given_state else [x])
               for module in (torch_lstm, fused)]
    for index, (expected, actual) in enumerate(zip(*results)):
        assert_close(f"tensor {index}", actual, expected, 1e-12)


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_sequence_matches_torch(bidirectional, enforce_sorted):
    torch_lstm, fused = _pair(num_layers=2, bidirectional=bidirectional)
    lengths = torch.tensor([7, 5, 5, 2]) if enforce_sorted else torch.tensor([3, 7, 1, 5])
    x = torch.randn(SEQ_LEN, BATCH_SIZE, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
    hx = tuple(torch.randn(2 * (1 + bidirectional), BATCH_SIZE, HIDDEN_SIZE, dtype=torch.float64) for _ in range(2))
    results = []
    for module in (torch_lstm, fused):
        out, (h_n, c_n) = module(pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted), hx)
        assert isinstance(out, PackedSequence)
        loss = (out.data ** 2).sum() + (h_n * 1.5).sum() + c_n.sum()
        results.append([out.data, out.batch_sizes, h_n, c_n, *_grads(module, loss, [x])])
    torch.testing.assert_close(results[1][1], results[0][1])
    for index, (expected, actual) in enumerate(zip(*results)):
        assert_close(f"tensor {index}", actual, expected, 1e-12)


def test_lengths_keyword_equals_packed_input():
    _, fused = _pair(bidirectional=True)
    lengths = torch.tensor([3, 7, 1, 5])
    x = torch.randn(SEQ_LEN, BATCH_SIZE, INPUT_SIZE, dtype=torch.float64)
    out, (h_n, c_n) = fused(x, lengths=lengths)
    packed_out, (packed_h, packed_c) = fused(pack_padded_sequence(x, lengths, enforce_sorted=False))
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, total_length=SEQ_LEN)
    assert_close("output", out, padded, 1e-14)
    assert_close("h_n", h_n, packed_h, 1e-14)
    assert_close("c_n", c_n, packed_c, 1e-14)


def test_unbatched_input_matches_torch():
    torch_lstm, fused = _pair(num_layers=2)
    x = torch.randn(SEQ_LEN, INPUT_SIZE, dtype=torch.float64)
    hx = tuple(torch.randn(2, HIDDEN_SIZE, dtype=torch.float64) for _ in range(2))
    for expected, actual in zip(torch.utils._pytree.tree_leaves(torch_lstm(x, hx)),
                                torch.utils._pytree.tree_leaves(fused(x, hx))):
        assert actual.shape == expected.shape
        assert_close("unbatched", actual, expected, 1e-12)


def test_dropout_between_layers_only_in_training():
    fused = fusedrnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, dropout=0.5, dtype=torch.float64)
    x = torch.randn(SEQ_LEN, BATCH_SIZE, INPUT_SIZE, dtype=torch.float64)
    torch.manual_seed(1)
    first = fused(x)[0]
    torch.manual_seed(2)
    assert not torch.allclose(first, fused(x)[0]), "training mode must apply dropout"
    fused.eval()
    assert torch.equal(fused(x)[0], fused(x)[0])
    assert_close("eval", fused(x)[0], fused.to_torch().eval()(x)[0], 1e-12)


def _count_kernel_calls(monkeypatch):
    """The calls of PyTorch's LSTM kernel the ``torch`` backend makes, counted from now on."""
    calls = []

    class CountingVF:
        def lstm(self, *args):
            calls.append(args)
            return torch._VF.lstm(*args)

    monkeypatch.setattr(native_backend, "_VF", CountingVF())
    return calls


@pytest.mark.parametrize("config", [dict(num_layers=1), dict(num_layers=2, bidirectional=True, batch_first=True)],
                         ids=["one_layer", "stack"])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_layers_on_pytorchs_kernel_run_in_one_call_and_match_the_reference(monkeypatch, backend, config):
    """Layers and directions that PyTorch's kernel runs (named, or ``auto``'s float32 rule for a
    call this size) go to it in one call, as nn.LSTM makes it, with no validation and dispatch
    per layer; the result is still held to the float32 bound against the float64 reference:
    outputs, states and every gradient."""
    reference = fusedrnn.LSTM(INPUT_SIZE, 32, **config, dtype=torch.float64, backend="reference")
    x = torch.randn(64, BATCH_SIZE, INPUT_SIZE, dtype=torch.float64)
    x = (x.transpose(0, 1) if reference.batch_first else x).requires_grad_()
    states = config["num_layers"] * reference.num_directions
    hx = tuple(torch.randn(states, BATCH_SIZE, 32, dtype=torch.float64, requires_grad=True) for _ in range(2))
    fused = fusedrnn.LSTM(INPUT_SIZE, 32, **config, backend=backend)
    fused.load_state_dict(reference.state_dict())
    expected = _outputs_and_grads(reference, x, hx, [x, *hx])
    inputs = [t.detach().float().requires_grad_() for t in (x, *hx)]
    calls, dispatched, dispatch_run = _count_kernel_calls(monkeypatch), [], fusedrnn.dispatch.run
    monkeypatch.setattr(fusedrnn.dispatch, "run", lambda *args: dispatched.append(args) or dispatch_run(*args))
    actual = _outputs_and_grads(fused, inputs[0], tuple(inputs[1:]), inputs)
    assert len(calls) == 1, f"expected one call of PyTorch's kernel for the whole module, got {len(calls)}"
    assert not dispatched, f"expected no dispatch per layer, got {len(dispatched)}"
    for index, (wanted, got) in enumerate(zip(expected, actual)):
        assert_close(f"tensor {index}", got, wanted, tolerance(torch.float32))


def test_a_stack_on_pytorchs_kernel_drops_out_as_nn_lstm(monkeypatch):
    """Dropout between layers in training mode: nn.LSTM's own, the same values from the same seed."""
    torch_lstm = nn.LSTM(INPUT_SIZE, 32, num_layers=3, dropout=0.5)
    fused = fusedrnn.LSTM.from_torch(torch_lstm, backend="torch")
    calls = _count_kernel_calls(monkeypatch)
    x = torch.randn(SEQ_LEN, BATCH_SIZE, INPUT_SIZE)
    outputs = []
    for module in (torch_lstm, fused):
        torch.manual_seed(3)
        outputs.append(module(x)[0])
    assert len(calls) == 1
    assert torch.equal(outputs[0], outputs[1])
    torch.manual_seed(4)
    assert not torch.equal(fused(x)[0], outputs[1]), "training mode must apply dropout"
    fused.eval()
    assert torch.equal(fused(x)[0], fused(x)[0])


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("swap", ["functional_call", "data_parallel_replica"])
def test_the_module_runs_the_parameters_it_is_given(swap, backend):
    """torch.func.functional_call swaps tensors into ``_parameters``; a DataParallel replica
    keeps them as plain attributes with ``_parameters`` empty. Either way those tensors run,
    one sweep per layer or the whole stack in one call of PyTorch's kernel."""
    fused = fusedrnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, dtype=torch.float64, backend=backend)
    given = {name: torch.randn_like(p, requires_grad=True) for name, p in fused.named_parameters()}
    x = torch.randn(SEQ_LEN, BATCH_SIZE, INPUT_SIZE, dtype=torch.float64)
    if swap == "functional_call":
        out, _ = torch.func.functional_call(fused, given, (x,))
    else:
        replica = fused._replicate_for_data_parallel()
        for name, tensor in given.items():
            setattr(replica, name, tensor)
        out, _ = replica(x)
    expected = fusedrnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, dtype=torch.float64, backend="reference")
    expected.load_state_dict({name: tensor.detach() for name, tensor in given.items()})
    expected_out = expected(x)[0]
    assert_close("output", out, expected_out, 1e-12)
    seed = torch.randn_like(out)
    grads = torch.autograd.grad(out, list(given.values()), seed)
    for name, actual, wanted in zip(given, grads, torch.autograd.grad(expected_out, list(expected.parameters()), seed)):
        assert_close(f"gradient of {name}", actual, wanted, 1e-12)


def test_state_dict_round_trip_with_torch():
    torch_lstm = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    fused = fusedrnn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    assert list(fused.state_dict()) == list(torch_lstm.state_dict())
    fused.load_state_dict(torch_lstm.state_dict())
    back = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    back.load_state_dict(fused.state_dict())
    for name, tensor in torch_lstm.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    converted = fused.to_torch()
    assert isinstance(converted, nn.LSTM) and converted.bidirectional and converted.num_layers == 2
    for name, tensor in torch_lstm.state_dict().items():
        assert torch.equal(converted.state_dict()[name], tensor), name


def test_default_init_is_uniform_in_inverse_sqrt_hidden():
    hidden_size = 64
    fused = fusedrnn.LSTM(8, hidden_size, num_layers=2)
    bound = hidden_size ** -0.5
    for name, parameter in fused.named_parameters():
        assert parameter.abs().max() <= bound, name
        assert parameter.abs().max() > 0.9 * bound, f"{name} does not fill Uniform(-1/√H, 1/√H)"


@pytest.mark.parametrize("module", [fusedrnn.LSTM, fusedrnn.MogrifierLSTM, fusedrnn.G2LSTM])
def test_every_cell_has_lstm_parameters_and_shapes(module):
    model = module(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True, batch_first=True)
    lstm_names = list(nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True).state_dict())
    assert [n for n in model.state_dict() if not n.startswith("mogrify")] == lstm_names
    out, (h_n, c_n) = model(torch.randn(BATCH_SIZE, SEQ_LEN, INPUT_SIZE))
    assert out.shape == (BATCH_SIZE, SEQ_LEN, 2 * HIDDEN_SIZE)
    assert h_n.shape == c_n.shape == (4, BATCH_SIZE, HIDDEN_SIZE)


def test_mogrifier_parameters_and_init():
    rounds, rank, input_size, hidden_size = 5, 24, 128, 256
    model = fusedrnn.MogrifierLSTM(input_size, hidden_size, mogrify_steps=rounds, mogrify_rank=rank)
    left, right = model.mogrify_weight_left_l0_r1, model.mogrify_weight_right_l0_r1
    assert left.shape == (input_size, rank) and right.shape == (rank, hidden_size)
    assert model.mogrify_weight_left_l0_r2.shape == (hidden_size, rank)
    assert torch.equal(model.mogrify_bias_l0_r3, torch.zeros(input_size))
    product = left @ right  # fan_in = hidden_size: variance 1/H
    assert abs(product.var().item() * hidden_size - 1) < 0.2
    full = fusedrnn.MogrifierLSTM(input_size, hidden_size, mogrify_steps=2, mogrify_bias=False)
    assert abs(full.mogrify_weight_l0_r2.std().item() * input_size ** 0.5 - 1) < 0.1
    assert not any("bias" in n and "mogrify" in n for n in full.state_dict())


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_low_rank_module_passes_the_factors(backend, monkeypatch):
    """A low-rank module hands each round to the backend as its (left, right) parameters,
    never their product, and the factors get gradients; state_dict names stay as SPEC §3.2."""
    skip_unless_available(backend)
    model = fusedrnn.MogrifierLSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True, mogrify_steps=3,
                                   mogrify_rank=2, backend=backend)
    sweeps, run = [], fusedrnn.dispatch.run
    monkeypatch.setattr(fusedrnn.dispatch, "run", lambda name, sweep: run(name, sweeps.append(sweep) or sweep))
    output, _ = model(torch.randn(SEQ_LEN, BATCH_SIZE, INPUT_SIZE))
    output.sum().backward()
    parameters = dict(model.named_parameters())
    for layer, tag in enumerate(["l0", "l0_reverse", "l1", "l1_reverse"]):
        for j, weight in enumerate(sweeps[layer].mogrify_weights, start=1):
            left, right = parameters[f"mogrify_weight_left_{tag}_r{j}"], parameters[f"mogrify_weight_right_{tag}_r{j}"]
            assert isinstance(weight, tuple) and weight[0] is left and weight[1] is right, f"{tag} round {j}"
            assert left.grad.abs().sum() > 0 and right.grad.abs().sum() > 0, f"{tag} round {j}"
    assert not [name for name in parameters if re.match(r"mogrify_weight_l\d", name)]  # no full-rank matrix


@settings(max_examples=25, deadline=None)
@given(seq_len=st.integers(1, 6), batch_size=st.integers(1, 4), input_size=st.integers(1, 5),
       hidden_size=st.integers(1, 5), num_layers=st.integers(1, 2), bidirectional=st.booleans(),
       data=st.data())
def test_any_shape_with_any_lengths_matches_torch(seq_len, batch_size, input_size, hidden_size, num_layers,
                                                  bidirectional, data):
    lengths = torch.tensor(data.draw(st.lists(st.integers(1, seq_len), min_size=batch_size, max_size=batch_size)))
    torch_lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                         dtype=torch.float64)
    fused = fusedrnn.LSTM.from_torch(torch_lstm, backend="reference")
    packed = pack_padded_sequence(torch.randn(seq_len, batch_size, input_size, dtype=torch.float64), lengths,
                                  enforce_sorted=False)
    expected, actual = torch_lstm(packed), fused(packed)
    assert_close("output", actual[0].data, expected[0].data, 1e-12)
    assert_close("h_n", actual[1][0], expected[1][0], 1e-12)
    assert_close("c_n", actual[1][1], expected[1][1], 1e-12)
