"""fusedrnn inside PyTorch's machinery: ``torch.compile`` without graph breaks, the registered
operators (``torch.library.opcheck``), and second-order gradients on every backend."""
import pytest
import torch

import fusedrnn
from conftest import assert_close, random_weights
from fusedrnn import dispatch, functional
from fusedrnn.sweep import join_round_weights, split_round_weights

MODULES = {"lstm": fusedrnn.LSTM, "mogrifier": fusedrnn.MogrifierLSTM, "g2": fusedrnn.G2LSTM}
COMPILED_BACKENDS = ["cpu", "reference"]


def _model(cell, backend):
    torch.manual_seed(0)
    model = MODULES[cell](6, 8, num_layers=2, bidirectional=True, backend=backend)
    # G2 in training draws fresh noise per call; its evaluation gates are deterministic.
    return model.eval() if cell == "g2" else model


def _forward_backward(model, x):
    model.zero_grad()
    x = x.detach().requires_grad_()
    output, (h_n, c_n) = model(x)
    (output.square().sum() + h_n.sum() + c_n.sum()).backward()
    return [output, h_n, c_n, x.grad] + [p.grad for p in model.parameters()]


# Inductor over the reference backend's Python loop compiles for minutes and tests nothing
# of ours that aot_eager does not.
@pytest.mark.parametrize("backend, compiler", [("auto", "aot_eager"), ("cpu", "aot_eager"), ("cpu", "inductor"),
                                               ("reference", "aot_eager")])
@pytest.mark.parametrize("cell", list(MODULES))
def test_compiled_model_has_no_graph_break_and_matches_eager(cell, backend, compiler):
    if backend != "auto" and dispatch.unavailable_reason(backend) is not None:
        pytest.skip(dispatch.unavailable_reason(backend))
    torch._dynamo.reset()
    model = _model(cell, backend)
    x = torch.randn(5, 3, 6)
    eager = _forward_backward(model, x)
    compiled = _forward_backward(torch.compile(model, fullgraph=True, backend=compiler), x)
    for index, (actual, expected) in enumerate(zip(compiled, eager)):
        assert_close(f"{cell}/{backend}/{compiler} tensor {index}", actual, expected, 1e-5)


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
    if dispatch.unavailable_reason("cpu") is not None:
        pytest.skip(dispatch.unavailable_reason("cpu"))
    forward = torch.ops.fusedrnn.mogrifier_forward if cell == "mogrifier" else torch.ops.fusedrnn.lstm_forward
    torch.library.opcheck(forward, _op_inputs(cell))
    torch.library.opcheck(forward, _op_inputs(cell, requires_grad=False)[:-1] + (False,))


@pytest.mark.parametrize("backend", COMPILED_BACKENDS)
@pytest.mark.parametrize("cell", list(MODULES))
def test_second_order_gradients_are_right(cell, backend):
    """``create_graph`` backward (e.g. a gradient penalty) is differentiable on every backend."""
    if dispatch.unavailable_reason(backend) is not None:
        pytest.skip(dispatch.unavailable_reason(backend))
    weights = random_weights(cell, 3, 4, mogrify_steps=2, mogrify_rank=[2, None])
    options, rounds = {}, []
    if cell == "mogrifier":  # a low-rank round and a full-rank one, their factors differentiated too
        matrices, low_rank, right_factors = split_round_weights(weights.pop("mogrify_weights"))
        rounds = [*matrices, *right_factors, *weights.pop("mogrify_biases")]
    elif cell == "g2":
        options = dict(temperature=0.8, gate_mode="noisy", noise=torch.randn(3, 2, 2, 4, dtype=torch.float64))
    function = getattr(functional, {"lstm": "lstm", "mogrifier": "mogrifier_lstm", "g2": "g2_lstm"}[cell])
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    parameters = [w.requires_grad_() for w in [*weights.values(), *rounds]]

    def outputs(x, *tensors):
        kwargs = dict(zip(weights, tensors))
        if cell == "mogrifier":
            matrices, right_factors, biases = tensors[-5:-3], tensors[-3:-2], tensors[-2:]
            kwargs.update(mogrify_weights=join_round_weights(matrices, low_rank, right_factors),
                          mogrify_biases=biases)
        output, (h_n, c_n) = function(x, **kwargs, **options, lengths=torch.tensor([3, 2]), backend=backend)
        return output, h_n, c_n

    assert torch.autograd.gradgradcheck(outputs, (x, *parameters))


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


@pytest.mark.parametrize("cell, options", [(cell, {}) for cell in MODULES] + [("mogrifier", {"mogrify_rank": 2})],
                         ids=list(MODULES) + ["mogrifier-rank2"])
def test_triton_second_order_gradients_match_the_reference(cell, options):
    """The Triton sweeps' ``create_graph`` backward (float32 here) against the float64 reference."""
    if dispatch.unavailable_reason("triton") is not None:
        pytest.skip(dispatch.unavailable_reason("triton"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = MODULES[cell](3, 4, backend="triton", device=device, **options)
    if cell == "g2":
        model.eval()
    x = torch.randn(4, 2, 3, device=device, generator=None)
    gradients = []
    for dtype, backend in ((torch.float32, "triton"), (torch.float64, "reference")):
        model.to(dtype).zero_grad()
        model.backend = backend
        inputs = x.to(dtype).requires_grad_()
        output, _ = model(inputs)
        (grad_x,) = torch.autograd.grad(output.sum(), inputs, create_graph=True)
        grad_x.square().sum().backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, expected in gradients[1].items():
        assert_close(f"{cell} {name}", gradients[0][name], expected, 1e-5)


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
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
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
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
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
