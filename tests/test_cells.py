"""The reference cells against SPEC §3–§4 and against each other, on every backend that
can run them: relationships that must hold whatever the implementation."""

import pytest
import torch

import fusedrnn
from fusedrnn import functional
from fusedrnn.noise import sample_noise

from conftest import assert_close, random_weights, skip_unless_available, supports

T, B, I, H = 6, 3, 5, 4


def _inputs(dtype=torch.float64):
    x = torch.randn(T, B, I, dtype=dtype)
    h0, c0 = torch.randn(B, H, dtype=dtype), torch.randn(B, H, dtype=dtype)
    return x, h0, c0


def _lstm_weights(weights):
    return {k: weights[k] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def test_mogrifier_with_zero_rounds_is_the_lstm():
    x, h0, c0 = _inputs()
    weights = random_weights("mogrifier", I, H, mogrify_steps=0)
    expected = functional.lstm(x, h0=h0, c0=c0, **_lstm_weights(weights), backend="reference")
    actual = functional.mogrifier_lstm(x, h0=h0, c0=c0, **weights, backend="reference")
    for e, a in zip(torch.utils._pytree.tree_leaves(expected), torch.utils._pytree.tree_leaves(actual)):
        assert_close("mogrifier r=0", a, e, 1e-14)


def test_mogrifier_rounds_follow_spec_by_hand():
    """One step with r = 3, rounds spelled out as in SPEC §3."""
    x, h0, c0 = _inputs()
    x = x[:1]
    weights = random_weights("mogrifier", I, H, mogrify_steps=3)
    (q1, r2, q3), (b1, b2, b3) = weights["mogrify_weights"], weights["mogrify_biases"]
    x1 = 2 * torch.sigmoid(h0 @ q1.T + b1) * x[0]
    h2 = 2 * torch.sigmoid(x1 @ r2.T + b2) * h0
    x3 = 2 * torch.sigmoid(h2 @ q3.T + b3) * x1
    z = x3 @ weights["weight_ih"].T + weights["bias_ih"] + h2 @ weights["weight_hh"].T + weights["bias_hh"]
    i, f, g, o = z.chunk(4, 1)
    c = torch.sigmoid(f) * c0 + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    out, (h_n, c_n) = functional.mogrifier_lstm(x, h0=h0, c0=c0, **weights, backend="reference")
    assert_close("h", h_n, h, 1e-14)
    assert_close("c", c_n, c, 1e-14)
    assert_close("output", out[0], h, 1e-14)


def test_mogrifier_low_rank_applies_both_factors():
    """A low-rank round ``(left, right)`` gates with ``left (right · v)``: checked against a
    per-step loop written here from SPEC §3, which never forms the product."""
    x, h0, c0 = _inputs()
    weights = random_weights("mogrifier", I, H, mogrify_steps=4, mogrify_rank=2)
    out, (h_n, c_n) = functional.mogrifier_lstm(x, h0=h0, c0=c0, **weights, backend="reference")
    h, c, outputs = h0, c0, []
    for x_t in x:
        for j, ((left, right), bias) in enumerate(zip(weights["mogrify_weights"], weights["mogrify_biases"]), 1):
            if j % 2:
                x_t = 2 * torch.sigmoid((h @ right.T) @ left.T + bias) * x_t
            else:
                h = 2 * torch.sigmoid((x_t @ right.T) @ left.T + bias) * h
        z = x_t @ weights["weight_ih"].T + weights["bias_ih"] + h @ weights["weight_hh"].T + weights["bias_hh"]
        i, f, g, o = z.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        outputs.append(h)
    assert_close("output", out, torch.stack(outputs), 1e-12)
    assert_close("h_n", h_n, h, 1e-12)
    assert_close("c_n", c_n, c, 1e-12)


@pytest.mark.parametrize("rank", [None, 2], ids=["full-rank", "rank2"])
@pytest.mark.parametrize("reverse", [False, True])
def test_mogrifier_reference_gradcheck(rank, reverse):
    x, h0, c0 = _inputs()
    weights = random_weights("mogrifier", I, H, mogrify_steps=5, mogrify_rank=rank)
    lengths = torch.tensor([6, 2, 4])
    leaves = [x, h0, c0] + [t for t in torch.utils._pytree.tree_leaves(weights)]
    for leaf in leaves:
        leaf.requires_grad_()

    def run(*_):
        out, (h_n, c_n) = functional.mogrifier_lstm(x, h0=h0, c0=c0, **weights, lengths=lengths, reverse=reverse,
                                                    backend="reference")
        return out, h_n, c_n

    assert torch.autograd.gradcheck(run, leaves)


@pytest.mark.parametrize("gate_mode", ["noisy", "soft"])
def test_g2_reference_gradcheck(gate_mode):
    x, h0, c0 = _inputs()
    weights = random_weights("g2", I, H)
    leaves = [x, h0, c0, *weights.values()]
    for leaf in leaves:
        leaf.requires_grad_()
    noise = sample_noise(T, B, H, noise_prob=0.5).double() if gate_mode == "noisy" else None

    def run(*_):
        out, (h_n, c_n) = functional.g2_lstm(x, h0=h0, c0=c0, **weights, temperature=0.8, gate_mode=gate_mode,
                                             noise=noise, backend="reference")
        return out, h_n, c_n

    assert torch.autograd.gradcheck(run, leaves)


@pytest.mark.parametrize("backend", [b for b in fusedrnn.BACKENDS if supports(b, "g2", "cpu", torch.float32)])
def test_g2_without_noise_at_unit_temperature_is_the_lstm(backend):
    skip_unless_available(backend)
    x, h0, c0 = _inputs(torch.float32)
    weights = {k: v.float() for k, v in random_weights("g2", I, H).items()}
    lstm = functional.lstm(x, h0=h0, c0=c0, **weights, backend=backend)
    zero_noise = functional.g2_lstm(x, h0=h0, c0=c0, **weights, noise=torch.zeros(T, B, 2, H), backend=backend)
    soft = functional.g2_lstm(x, h0=h0, c0=c0, **weights, gate_mode="soft", backend=backend)
    for name, g2 in (("zero noise", zero_noise), ("soft", soft)):
        for e, a in zip(torch.utils._pytree.tree_leaves(lstm), torch.utils._pytree.tree_leaves(g2)):
            assert_close(f"{backend} {name}", a, e, 1e-6)


def test_g2_noise_is_reparameterised_into_gates():
    """SPEC §4 by hand for one step: i = σ((z_i + m ℓ_i)/τ), f likewise, g and o unchanged."""
    x, h0, c0 = _inputs()
    x = x[:1]
    weights = random_weights("g2", I, H)
    noise = sample_noise(1, B, H).double()
    tau = 0.6
    z = x[0] @ weights["weight_ih"].T + weights["bias_ih"] + h0 @ weights["weight_hh"].T + weights["bias_hh"]
    zi, zf, zg, zo = z.chunk(4, 1)
    i, f = torch.sigmoid((zi + noise[0, :, 0]) / tau), torch.sigmoid((zf + noise[0, :, 1]) / tau)
    c = f * c0 + i * torch.tanh(zg)
    h = torch.sigmoid(zo) * torch.tanh(c)
    _, (h_n, c_n) = functional.g2_lstm(x, h0=h0, c0=c0, **weights, temperature=tau, noise=noise,
                                       backend="reference")
    assert_close("h", h_n, h, 1e-14)
    assert_close("c", c_n, c, 1e-14)


def test_g2_hard_gates_are_binary_and_soft_approaches_them_at_low_temperature():
    x, h0, c0 = _inputs()
    weights = random_weights("g2", I, H)
    hard = functional.g2_lstm(x, h0=h0, c0=c0, **weights, gate_mode="hard", backend="reference")[0]
    cold = functional.g2_lstm(x, h0=h0, c0=c0, **weights, gate_mode="soft", temperature=1e-9,
                              backend="reference")[0]
    assert_close("hard vs τ→0", cold, hard, 1e-6)
    warm = functional.g2_lstm(x, h0=h0, c0=c0, **weights, gate_mode="soft", backend="reference")[0]
    assert (warm - hard).abs().max() > 1e-2


def test_g2_module_is_reproducible_under_manual_seed_and_differs_between_seeds():
    model = fusedrnn.G2LSTM(I, H, num_layers=2, noise_prob=0.5)
    x = torch.randn(T, B, I)

    def run(seed):
        torch.manual_seed(seed)
        return model(x)[0]

    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_g2_eval_modes():
    model = fusedrnn.G2LSTM(I, H, temperature=0.5)
    x = torch.randn(T, B, I)
    model.eval()
    soft = model(x)[0]
    assert torch.equal(soft, model(x)[0]), "soft mode is deterministic"
    expected = functional.g2_lstm(x, model.weight_ih_l0, model.weight_hh_l0, model.bias_ih_l0, model.bias_hh_l0,
                                  temperature=0.5, gate_mode="soft")[0]
    assert torch.equal(soft, expected)
    model.eval_gate_mode = "hard"
    hard = model(x)[0]
    assert torch.equal(hard, model(x)[0]), "hard mode is deterministic"
    assert not torch.allclose(hard, soft)
    model.eval_gate_mode = "noisy"
    assert not torch.allclose(model(x)[0], model(x)[0]), "noisy eval mode draws fresh noise"
