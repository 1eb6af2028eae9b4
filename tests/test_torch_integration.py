"""fusedrnn inside PyTorch's machinery: ``torch.compile`` without graph breaks, the registered
operators (``torch.library.opcheck``), second-order gradients (the reference's against finite
differences; every backend's against the reference in test_parity), autocast."""
import pytest
import torch

import fusedrnn
from conftest import MODULES, assert_close, random_weights, skip_unless_available, supports, tolerance
from fusedrnn import functional
from fusedrnn.sweep import join_round_weights, split_round_weights
from fusedrnn.testing import compare, ground_truth, on_backend, random_problem

#: (backend, compiler) pairs checked under torch.compile on CPU tensors. Inductor over the
#: reference backend's Python loop compiles for minutes and tests nothing of ours that
#: aot_eager does not. The Triton sweeps run CPU tensors on the interpreter (on a GPU:
#: test_gpu_compiled_triton_model_matches_eager).
COMPILE_CASES = [("auto", "aot_eager"), ("cpu", "aot_eager"), ("cpu", "inductor"), ("reference", "aot_eager"),
                 ("triton", "aot_eager"), ("triton", "inductor")]
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _model(cell, backend, device="cpu"):
    torch.manual_seed(0)
    model = MODULES[cell](6, 8, num_layers=2, bidirectional=True, backend=backend, device=device)
    with torch.no_grad():  # the Mogrifier's round biases start at zero, which would hide their use
        for name, parameter in model.named_parameters():
            if name.startswith("mogrify_bias"):
                parameter.uniform_(-0.3, 0.3)
    # G2 in training draws fresh noise per call; its evaluation gates are deterministic.
    return model.eval() if cell == "g2" else model


def _forward_backward(model, x):
    model.zero_grad()
    x = x.detach().requires_grad_()
    output, (h_n, c_n) = model(x)
    (output.square().sum() + h_n.sum() + c_n.sum()).backward()
    return [output, h_n, c_n, x.grad] + [p.grad for p in model.parameters()]


def _check_compiled_matches_eager(cell, backend, compiler, device):
    skip_unless_available(backend)
    torch._dynamo.reset()
    model = _model(cell, backend, device)
    x = torch.randn(5, 3, 6, device=device)
    eager = _forward_backward(model, x)
    compiled = _forward_backward(torch.compile(model, fullgraph=True, backend=compiler), x)
    names = ["output", "h_n", "c_n", "input gradient"] + [f"{name} gradient" for name, _ in model.named_parameters()]
    for name, actual, expected in zip(names, compiled, eager):
        assert_close(f"{cell}/{backend}/{compiler} on {device}: {name}", actual, expected, 1e-5)


@pytest.mark.parametrize("cell, backend, compiler", [
    pytest.param(cell, backend, compiler, id=f"{cell}-{backend}-{compiler}") for backend, compiler in COMPILE_CASES
    for cell in MODULES if backend == "auto" or supports(backend, cell, "cpu", torch.float32)])
def test_compiled_model_has_no_graph_break_and_matches_eager(cell, backend, compiler):
    _check_compiled_matches_eager(cell, backend, compiler, "cpu")


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("cell", list(MODULES))
def test_compiled_model_takes_lengths_without_a_graph_break(cell, backend):
    """The lengths' range check runs in the graph (a traced graph has no values to read on the
    host): the same result as eager, and lengths beyond T still refused."""
    skip_unless_available(backend)
    torch._dynamo.reset()
    model = _model(cell, backend)
    x, lengths = torch.randn(5, 3, 6), torch.tensor([5, 2, 3])
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    for name, actual, expected in zip(("output", "h_n", "c_n"), _flat(compiled(x, lengths=lengths)),
                                      _flat(model(x, lengths=lengths))):
        assert_close(f"{cell}/{backend} compiled with lengths: {name}", actual, expected, 1e-6)
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[0, 5\]"):
        compiled(x, lengths=torch.tensor([6, 2, 3]))


def _flat(result):
    output, (h_n, c_n) = result
    return output, h_n, c_n


@pytest.mark.gpu
@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
@pytest.mark.parametrize("cell", list(MODULES))
def test_gpu_compiled_triton_model_matches_eager(cell, compiler):
    """The Triton operators in a compiled graph launch as in eager (cooperative grids included)."""
    _check_compiled_matches_eager(cell, "triton", compiler, "cuda")


def _op_inputs(cell, dtype=torch.float32, requires_grad=True):
    torch.manual_seed(1)
    T, B, I, H = 4, 3, 5, 6
    weights = random_weights(cell, I, H, mogrify_steps=3, mogrify_rank=[None, 2, None])  # a mix, one low-rank round

    def make(tensor):
        return tensor.to(dtype).requires_grad_(requires_grad)

    x, h0, c0 = make(torch.randn(T, B, I)), make(torch.randn(B, H)), make(torch.randn(B, H))
    w_ih, w_hh = make(weights["weight_ih"]), make(weights["weight_hh"])
    bias = make(weights["bias_ih"] + weights["bias_hh"])
    lengths = torch.tensor([4, 2, 3])
    if cell == "mogrifier":
        matrices, low_rank, right_factors = split_round_weights(weights["mogrify_weights"])
        rounds, right_factors = [make(w) for w in matrices], [make(w) for w in right_factors]
        biases = [make(b) for b in weights["mogrify_biases"]]
        return (x, h0, c0, w_ih, w_hh, bias, rounds, list(low_rank), right_factors, biases, lengths, True, True)
    noise = torch.randn(T, B, 2, H, dtype=dtype)
    return (x, h0, c0, w_ih, w_hh, bias, lengths, noise, True, 0.7, "noisy", True)


@pytest.mark.parametrize("cell", ["lstm", "mogrifier"])
def test_operators_pass_opcheck(cell):
    skip_unless_available("cpu")
    forward = torch.ops.fusedrnn.mogrifier_forward if cell == "mogrifier" else torch.ops.fusedrnn.lstm_forward
    torch.library.opcheck(forward, _op_inputs(cell))
    torch.library.opcheck(forward, _op_inputs(cell, requires_grad=False)[:-1] + (False,))


def _triton_forward_call(cell, requires_grad, save=True):
    """The Triton forward operator of ``cell`` and its arguments, T3-B2-I4-H4: the LSTM reversed with
    lengths, G2 with noise from a Philox seed, the Mogrifier's two rounds one of them low rank."""
    torch.manual_seed(1)
    T, B, I, H = 3, 2, 4, 4
    weights = random_weights(cell, I, H, mogrify_steps=2, mogrify_rank=[2, None])

    def make(tensor):
        return tensor.float().to(TRITON_DEVICE).requires_grad_(requires_grad)

    lstm_inputs = [make(torch.randn(T, B, I)), make(torch.randn(B, H)), make(torch.randn(B, H))]
    lstm_inputs += [make(weights[name]) for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    lengths = torch.tensor([3, 2], device=TRITON_DEVICE)
    if cell == "mogrifier":
        matrices, low_rank, right_factors = split_round_weights(weights["mogrify_weights"])
        return torch.ops.fusedrnn.triton_mogrifier_forward, (
            *lstm_inputs, [make(w) for w in matrices], list(low_rank), [make(w) for w in right_factors],
            [make(b) for b in weights["mogrify_biases"]], lengths, True, save)
    if cell == "g2":  # noise, seed, reverse, 1/τ, noise_prob, hard gates
        options = (None, torch.tensor([7], device=TRITON_DEVICE), False, 1 / 0.7, 0.6, False)
        lengths = None
    else:
        options = (None, None, True, 1.0, 1.0, False)
    return torch.ops.fusedrnn.triton_lstm_forward, (*lstm_inputs, lengths, *options, save)


def _triton_backward_call(cell, forward_arguments, outputs):
    """The Triton backward operator of ``cell`` and its arguments for a forward's outputs."""
    x, h0, c0, weight_ih, weight_hh = forward_arguments[:5]
    grads = [torch.randn_like(tensor) for tensor in outputs[:3]]
    if cell == "mogrifier":
        matrices, low_rank, right_factors, _, lengths, reverse, _ = forward_arguments[7:]
        return torch.ops.fusedrnn.triton_mogrifier_backward, (
            *grads, x, weight_ih, weight_hh, matrices, low_rank, right_factors, lengths, outputs[3], reverse)
    lengths, _, _, reverse, inv_temperature = forward_arguments[7:12]
    states = outputs[0] if lengths is None else outputs[3]  # the operator returns them apart only with lengths
    return torch.ops.fusedrnn.triton_lstm_backward, (
        *grads, x, h0, c0, weight_ih, weight_hh, lengths, states, *outputs[4:], reverse, inv_temperature)


@pytest.mark.parametrize("cell", list(MODULES))
def test_triton_operators_pass_opcheck(cell):
    """Each Triton sweep's forward (saving for the backward, with and without gradients, and not
    saving) and backward operator: schema, fake tensors, autograd registration, AOT dispatch."""
    skip_unless_available("triton")
    forward, arguments = _triton_forward_call(cell, requires_grad=True)
    torch.library.opcheck(forward, arguments)
    forward, arguments = _triton_forward_call(cell, requires_grad=False)
    torch.library.opcheck(forward, arguments)
    torch.library.opcheck(forward, _triton_forward_call(cell, requires_grad=False, save=False)[1])
    backward, backward_arguments = _triton_backward_call(cell, arguments, forward(*arguments))
    torch.library.opcheck(backward, backward_arguments)


def _by_name(op, arguments):
    return {argument.name: value for argument, value in zip(op.default._schema.arguments, arguments)}


# (cell, forward or backward, argument, what is wrong, bad value from the valid ones, error, message)
TRITON_CHECKS = [
    ("lstm", "forward", "h0", "batch + 1", lambda a: torch.cat([a["h0"], a["h0"][:1]]), ValueError,
     r"fusedrnn::triton_lstm_forward: h0 must have shape \(2, 4\), got \(3, 4\)"),
    ("lstm", "forward", "weight_ih", "float64", lambda a: a["weight_ih"].double(), TypeError,
     "weight_ih must have the input's dtype torch.float32, got torch.float64"),
    ("lstm", "forward", "x", "float64 throughout", None, TypeError, r"x must be one of \(torch.float32"),
    ("lstm", "forward", "lengths", "on meta", lambda a: a["lengths"].to("meta"), ValueError,
     "fusedrnn::triton_lstm_forward: lengths must be on x's device .*, got meta"),
    ("lstm", "forward", "noise", "(T, B, H, 2)", lambda a: torch.zeros(3, 2, 4, 2, device=a["x"].device), ValueError,
     r"noise must have shape \(3, 2, 2, 4\), got \(3, 2, 4, 2\)"),
    ("g2", "forward", "seed", "int32", lambda a: a["seed"].int(), TypeError, "seed must be torch.int64"),
    ("g2", "forward", "noise", "with a seed", lambda a: torch.zeros(3, 2, 2, 4, device=a["x"].device), ValueError,
     "noise and seed must not both be given"),
    ("g2", "forward", "inv_temperature", "inf", lambda a: float("inf"), ValueError,
     r"inv_temperature must be in \(0, 2\*\*126\]"),
    ("lstm", "backward", "gates", "T - 1 steps", lambda a: a["gates"][1:], ValueError,
     r"fusedrnn::triton_lstm_backward: gates must have shape \(3, 2, 16\), got \(2, 2, 16\)"),
    ("lstm", "backward", "cells", "float64", lambda a: a["cells"].double(), TypeError,
     "cells must be torch.float32, got torch.float64"),
    ("lstm", "backward", "d_out", "hidden - 1", lambda a: a["d_out"][..., 1:], ValueError, "d_out must have shape"),
    ("mogrifier", "forward", "mogrify_low_rank", "a flag short", lambda a: a["mogrify_low_rank"][:1], ValueError,
     "fusedrnn::triton_mogrifier_forward: mogrify_low_rank must have one flag per round"),
    ("mogrifier", "forward", "mogrify_biases", "round 1 of width I - 1",
     lambda a: [a["mogrify_biases"][0][1:], *a["mogrify_biases"][1:]], ValueError,
     r"mogrify_biases\[0\] must have shape \(4,\), got \(3,\)"),
    ("mogrifier", "backward", "saved", "one buffer short", lambda a: a["saved"][:-1], ValueError,
     "fusedrnn::triton_mogrifier_backward: saved must hold the forward's"),
    ("mogrifier", "backward", "saved", "float64 buffers", lambda a: [t.double() for t in a["saved"]], TypeError,
     r"saved\[0\] must be torch"),
]


@pytest.mark.parametrize("cell, kind, argument, what, bad, error, message",
                         [pytest.param(*row, id=f"{row[0]}-{row[1]}-{row[2]}-{row[3]}") for row in TRITON_CHECKS])
def test_triton_operators_refuse_what_does_not_fit(cell, kind, argument, what, bad, error, message):
    """Public in torch.ops, the Triton operators check their tensors (triton_kernels/checks.py)
    before their kernels index memory with the shapes they are handed."""
    skip_unless_available("triton")
    op, arguments = _triton_forward_call(cell, requires_grad=False)
    if kind == "backward":
        op, arguments = _triton_backward_call(cell, arguments, op(*arguments))
    arguments = _by_name(op, arguments)
    if bad is None:  # every floating tensor
        arguments = {name: value.double() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
                     for name, value in arguments.items()}
    else:
        arguments[argument] = bad(arguments)
    with pytest.raises(error, match=message):
        op(**arguments)


@pytest.mark.parametrize("cell", list(MODULES))
def test_reference_second_order_gradients_pass_gradgradcheck(cell):
    """The reference's ``create_graph`` backward, the truth the fused backends' second-order
    gradients are compared with (test_parity), against finite differences in float64."""
    weights = random_weights(cell, 3, 4, mogrify_steps=2, mogrify_rank=[2, None])
    options, rounds = {}, []
    if cell == "mogrifier":  # a low-rank round and a full-rank one, their factors differentiated too
        matrices, low_rank, right_factors = split_round_weights(weights.pop("mogrify_weights"))
        rounds = [*matrices, *right_factors, *weights.pop("mogrify_biases")]
    elif cell == "g2":
        options = dict(temperature=0.8, gate_mode="noisy", noise=torch.randn(3, 2, 2, 4, dtype=torch.float64))
    function = getattr(functional, {"lstm": "lstm", "mogrifier": "mogrifier_lstm", "g2": "g2_lstm"}[cell])
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(2, 4, dtype=torch.float64, requires_grad=True) for _ in range(2))
    parameters = [w.requires_grad_() for w in [*weights.values(), *rounds]]

    def outputs(x, h0, c0, *tensors):
        kwargs = dict(zip(weights, tensors))
        if cell == "mogrifier":
            matrices, right_factors, biases = tensors[-5:-3], tensors[-3:-2], tensors[-2:]
            kwargs.update(mogrify_weights=join_round_weights(matrices, low_rank, right_factors),
                          mogrify_biases=biases)
        output, (h_n, c_n) = function(x, h0=h0, c0=c0, **kwargs, **options, lengths=torch.tensor([3, 2]),
                                      backend="reference")
        return output, h_n, c_n

    assert torch.autograd.gradgradcheck(outputs, (x, h0, c0, *parameters))


def test_gradient_penalty_step_matches_nn_lstm():
    """A training step with a gradient penalty gives ``nn.LSTM``'s parameter gradients."""
    torch.manual_seed(2)
    reference = torch.nn.LSTM(3, 4, num_layers=2, dtype=torch.float64)
    fused = fusedrnn.LSTM.from_torch(reference)
    gradients = []
    for model in (reference, fused):
        x = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
        output, _ = model(x)
        (grad_x,) = torch.autograd.grad(output.sum(), x, create_graph=True)
        (output.square().mean() + grad_x.square().sum()).backward()
        gradients.append({name: p.grad for name, p in model.named_parameters()})
    for name, expected in gradients[0].items():
        assert_close(f"gradient-penalty {name}", gradients[1][name], expected, 1e-10)


@pytest.mark.parametrize("cell", list(MODULES))
@pytest.mark.parametrize("seq_len, batch_size", [(5, 3), (40, 4)], ids=["T5-B3", "T40-B4"])
def test_functional_computes_in_its_inputs_dtype_under_autocast(cell, seq_len, batch_size):
    """Whichever backend auto picks for the call (PyTorch's own LSTM kernel follows autocast):
    float32 in, float32 out, to float32's tolerance."""
    problem = random_problem(cell, (seq_len, batch_size, 3, 64), lengths=True)
    truth = ground_truth(problem, torch.float32, "cpu", with_grads=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pairs = compare(on_backend("auto"), truth)
    for name, actual, expected in pairs:
        assert actual.dtype == torch.float32, f"{name}: {actual.dtype}"
        assert_close(f"{cell} under autocast: {name}", actual, expected, tolerance(torch.float32))


AUTOCAST = [("cpu", torch.bfloat16)] + ([("cuda", torch.float16)] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device, dtype", AUTOCAST, ids=[device for device, _ in AUTOCAST])
@pytest.mark.parametrize("cell", list(MODULES))
def test_autocast_runs_in_the_autocast_dtype_like_nn_lstm(cell, device, dtype):
    model = _model(cell, "auto").to(device)
    x = torch.randn(5, 3, 6, device=device)
    expected, _ = model(x)
    linear = torch.nn.Linear(6, 6, device=device)
    with torch.autocast(device, dtype=dtype):
        output, (h_n, c_n) = model(x)
        chained, _ = model(linear(x))  # a half-precision input into a float32 module, as nn.LSTM takes it
        reference_dtype = torch.nn.LSTM(6, 8, device=device)(x)[0].dtype
    assert output.dtype == h_n.dtype == c_n.dtype == chained.dtype == reference_dtype == dtype
    assert_close(f"{cell} under autocast", output, expected, 2e-2)
    output.float().sum().backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters()), "gradients reach the float32 parameters"


@pytest.mark.gpu
@pytest.mark.parametrize("cell", list(MODULES))
def test_gpu_cuda_graph_of_a_training_step(cell):
    """Capture forward, backward and an optimizer step once; each replay is one eager step."""
    torch.manual_seed(3)
    model = MODULES[cell](16, 32, num_layers=2, device="cuda")
    if cell == "g2":
        model.eval()
    eager = MODULES[cell](16, 32, num_layers=2, device="cuda").train(model.training)
    eager.load_state_dict(model.state_dict())
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, eager)]
    static_x = torch.randn(12, 8, 16, device="cuda")

    def step(module, optimizer, x):
        optimizer.zero_grad(set_to_none=False)
        output, _ = module(x)
        loss = output.square().mean()
        loss.backward()
        optimizer.step()
        return loss

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step(model, optimizers[0], static_x)  # warm-up outside the capture (compiles, allocates grads)
        step(eager, optimizers[1], static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step(model, optimizers[0], static_x)
    for _ in range(3):
        static_x.copy_(torch.randn_like(static_x))
        graph.replay()
        expected = step(eager, optimizers[1], static_x)
        assert_close(f"{cell} loss of a replayed step", static_loss, expected, 1e-4)
    for (name, parameter), expected in zip(model.named_parameters(), eager.parameters()):
        assert_close(f"{cell} {name} after replays", parameter, expected, 1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("cell", list(MODULES))
def test_gpu_forward_and_backward_never_wait_for_the_device(cell):
    model = MODULES[cell](16, 32, num_layers=2, bidirectional=True, device="cuda")
    x = torch.randn(12, 8, 16, device="cuda", requires_grad=True)
    lengths = torch.tensor([12, 3, 9, 12, 1, 7, 12, 5], device="cuda")

    def step():
        output, (h_n, c_n) = model(x, lengths=lengths)
        (output.sum() + h_n.sum() + c_n.sum()).backward()

    step()  # compiles and caches layouts first
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
