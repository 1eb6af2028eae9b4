"""``fusedrnn.reference.input_forget_gates``: the gates of a whole sequence from a layer's
own states equal the gates of a step-by-step run of SPEC §2 / §4."""
import pytest
import torch

from fusedrnn import functional
from fusedrnn.reference import input_forget_gates

from conftest import assert_close, random_weights, tolerance


@pytest.mark.parametrize("cell, temperature", [("lstm", 1.0), ("g2", 0.7)], ids=["lstm", "g2-tau0.7"])
def test_gates_from_shifted_states_match_a_step_loop(cell, temperature):
    seq_len, batch_size, input_size, hidden_size = 9, 3, 5, 6
    weights = random_weights(cell, input_size, hidden_size)
    x = torch.randn(seq_len, batch_size, input_size, dtype=torch.float64)
    h0 = torch.randn(batch_size, hidden_size, dtype=torch.float64) * 0.5
    c0 = torch.randn(batch_size, hidden_size, dtype=torch.float64) * 0.5
    options = {"temperature": temperature, "gate_mode": "soft"} if cell == "g2" else {}
    run = functional.g2_lstm if cell == "g2" else functional.lstm
    output, _ = run(x, h0=h0, c0=c0, **weights, **options, backend="reference")
    previous = torch.cat([h0.unsqueeze(0), output[:-1]])
    gate_options = {"temperature": temperature} if cell == "g2" else {}
    i, f = input_forget_gates(x, previous, **weights, cell=cell, **gate_options)

    # The SPEC's step, written out: z = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh; i = σ(z_i/τ), f = σ(z_f/τ).
    h, c = h0, c0
    for t in range(seq_len):
        z = x[t] @ weights["weight_ih"].T + weights["bias_ih"] + h @ weights["weight_hh"].T + weights["bias_hh"]
        z_i, z_f, z_g, z_o = z.chunk(4, dim=-1)
        expected_i, expected_f = torch.sigmoid(z_i / temperature), torch.sigmoid(z_f / temperature)
        assert_close(f"input gate t={t}", i[t], expected_i, tolerance(torch.float64))
        assert_close(f"forget gate t={t}", f[t], expected_f, tolerance(torch.float64))
        c = expected_f * c + expected_i * torch.tanh(z_g)
        h = torch.sigmoid(z_o) * torch.tanh(c)


def test_hard_g2_gates_are_binary():
    weights = random_weights("g2", 4, 5)
    x, h = torch.randn(7, 2, 4, dtype=torch.float64), torch.randn(7, 2, 5, dtype=torch.float64)
    i, f = input_forget_gates(x, h, **weights, cell="g2", gate_mode="hard")
    soft_i, soft_f = input_forget_gates(x, h, **weights, cell="g2")
    assert torch.equal(i, (soft_i >= 0.5).double()) and torch.equal(f, (soft_f >= 0.5).double())


@pytest.mark.parametrize("options, message", [({"cell": "mogrifier"}, "cell"),
                                               ({"cell": "g2", "gate_mode": "noisy"}, "gate_mode")])
def test_rejects_what_it_cannot_compute(options, message):
    weights = random_weights("lstm", 4, 5)
    x, h = torch.randn(3, 2, 4, dtype=torch.float64), torch.randn(3, 2, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match=message):
        input_forget_gates(x, h, **weights, **options)
