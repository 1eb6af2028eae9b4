"""The C++ ``torch.ops.fusedrnn`` operators (schemas in csrc/fusedrnn.cpp) as PyTorch sees them:
fake implementations (shapes and dtypes without running, for ``torch.compile``) and
autograd, registered through ``torch.library`` once the C++ library is loaded. (The Triton
sweeps' operators, ``fusedrnn::triton_*``, are defined with theirs in
:mod:`fusedrnn.triton_kernels.lstm` and :mod:`fusedrnn.triton_kernels.mogrifier`.)

The operators take contiguous tensors of one dtype on one device; shapes as
:class:`fusedrnn.sweep.Sweep`, with ``bias = bias_ih + bias_hh`` (4H) or ``None`` in the
accumulation type (float32 for half types, else the input's). The forward returns, besides
``output, h_n, c_n``, what the backward needs (gate activations, cell states, the ``h``
each step read, the Mogrifier's round chains and gates), so the G2 backward sees exactly
the forward's noise. Without ``save`` (no backward can follow, ``Sweep.needs_backward``)
those are a ring of one or two steps instead of all ``T``.

Called directly they are public API too, so each checks its arguments first (csrc/checks.h):
a bad shape, value, device or layout raises ``ValueError``, a bad dtype ``TypeError``, with a
message naming the argument, what was expected and what was got (in C++,
``TORCH_CHECK_VALUE``/``TORCH_CHECK_TYPE``, which PyTorch raises as these Python types).

The C++ backward is not itself differentiable: a backward that must be (``create_graph``)
goes through :mod:`fusedrnn.reference.double_backward` instead.
"""
from __future__ import annotations

import torch

from ..noise import draw_seed
from ..precision import accumulation_dtype
from ..reference.double_backward import recomputed_gradients
from ..reference.g2 import g2_lstm
from ..reference.mogrifier import mogrifier_lstm
from ..sweep import call_operator, checking_devices, flatten_rounds, split_round_weights, unflatten_rounds


# --------------------------------------------------------------------------- LSTM and G2-LSTM


def _fake_lstm_forward(x, h0, c0, weight_ih, weight_hh, bias, lengths, noise, reverse, temperature, gate_mode,
                       save):
    seq_len, batch_size, hidden_size = x.shape[0], x.shape[1], weight_hh.shape[1]
    accumulation, slots = accumulation_dtype(x.dtype), seq_len if save else 2
    return (x.new_empty(seq_len, batch_size, hidden_size), torch.empty_like(h0), c0.new_empty(c0.shape, dtype=x.dtype),
            x.new_empty(seq_len if save else 0, batch_size, 4 * hidden_size, dtype=accumulation),
            x.new_empty(slots, batch_size, hidden_size, dtype=accumulation), x.new_empty(slots, batch_size, hidden_size))


def _fake_lstm_backward(grad_output, grad_h_n, grad_c_n, x, c0, weight_ih, weight_hh, gates, cells, h_prev, lengths,
                        reverse, temperature, gate_mode):
    batch_size, hidden_size = c0.shape
    return (grad_output.new_empty(x.shape), grad_output.new_empty(batch_size, hidden_size),
            grad_output.new_empty(batch_size, hidden_size), grad_output.new_empty(weight_ih.shape),
            grad_output.new_empty(weight_hh.shape), gates.new_empty(4 * hidden_size))


def _refuse_unsaved(op, save):
    """Without ``save`` the forward keeps one or two steps, not the T a backward reads."""
    if not save:
        raise ValueError(f"fusedrnn::{op}: an input requires grad, so the forward must run with save=True "
                         "(save=False keeps too little for a backward)")


def _setup_lstm(ctx, inputs, output):
    x, h0, c0, weight_ih, weight_hh, bias, lengths, noise, reverse, temperature, gate_mode, save = inputs
    _refuse_unsaved("lstm_forward", save)
    _, _, _, gates, cells, h_prev = output
    ctx.mark_non_differentiable(gates, cells, h_prev)
    ctx.save_for_backward(x, h0, c0, weight_ih, weight_hh, bias, lengths, noise, gates, cells, h_prev)
    ctx.reverse, ctx.temperature, ctx.gate_mode = reverse, temperature, gate_mode


def _lstm_backward(ctx, grad_output, grad_h_n, grad_c_n, *_):
    x, h0, c0, weight_ih, weight_hh, bias, lengths, noise, gates, cells, h_prev = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: the gradient must be differentiable too
        def run(x, h0, c0, weight_ih, weight_hh, bias):  # the plain LSTM is G2 with soft gates at τ = 1
            return g2_lstm(x, weight_ih, weight_hh, bias, None, h0, c0, temperature=ctx.temperature,
                           gate_mode=ctx.gate_mode, noise=noise, lengths=lengths, reverse=ctx.reverse)

        grads = recomputed_gradients(run, [x, h0, c0, weight_ih, weight_hh, bias], (grad_output, grad_h_n, grad_c_n))
    else:
        grads = torch.ops.fusedrnn.lstm_backward(
            grad_output.contiguous(), grad_h_n.contiguous(), grad_c_n.contiguous(), x, c0, weight_ih, weight_hh,
            gates, cells, h_prev, lengths, ctx.reverse, ctx.temperature, ctx.gate_mode)
        grads = list(grads[:5]) + [grads[5] if bias is not None else None]
    return (*grads, None, None, None, None, None, None)


# --------------------------------------------------------------------------- Mogrifier LSTM


def _fake_mogrifier_forward(x, h0, c0, weight_ih, weight_hh, bias, mogrify_weights, mogrify_low_rank,
                            mogrify_right_factors, mogrify_biases, lengths, reverse, save):
    seq_len, batch_size, hidden_size = x.shape[0], x.shape[1], weight_hh.shape[1]
    accumulation = accumulation_dtype(x.dtype)
    steps, states = (seq_len, seq_len) if save else (1, 2)
    chains = [x.new_empty(steps, batch_size, weight.shape[0]) for weight in mogrify_weights]
    round_gates = [chain.new_empty(chain.shape, dtype=accumulation) for chain in chains]
    return (x.new_empty(seq_len, batch_size, hidden_size), torch.empty_like(h0), c0.new_empty(c0.shape, dtype=x.dtype),
            x.new_empty(steps, batch_size, 4 * hidden_size, dtype=accumulation),
            x.new_empty(states, batch_size, hidden_size, dtype=accumulation),
            x.new_empty(states, batch_size, hidden_size), chains, round_gates)


def _fake_mogrifier_backward(grad_output, grad_h_n, grad_c_n, x, c0, weight_ih, weight_hh, gates, cells, h_prev,
                             mogrify_weights, mogrify_low_rank, mogrify_right_factors, chains, round_gates, lengths,
                             reverse):
    batch_size, hidden_size = c0.shape
    return (grad_output.new_empty(x.shape), grad_output.new_empty(batch_size, hidden_size),
            grad_output.new_empty(batch_size, hidden_size), grad_output.new_empty(weight_ih.shape),
            grad_output.new_empty(weight_hh.shape), gates.new_empty(4 * hidden_size),
            [grad_output.new_empty(weight.shape) for weight in mogrify_weights],
            [grad_output.new_empty(right.shape) for right in mogrify_right_factors],
            [grad_output.new_empty(weight.shape[0]) for weight in mogrify_weights])


def _setup_mogrifier(ctx, inputs, output):
    (x, h0, c0, weight_ih, weight_hh, bias, mogrify_weights, low_rank, right_factors, mogrify_biases, lengths,
     reverse, save) = inputs
    _refuse_unsaved("mogrifier_forward", save)
    _, _, _, gates, cells, h_prev, chains, round_gates = output
    ctx.mark_non_differentiable(gates, cells, h_prev, *chains, *round_gates)
    ctx.rounds, ctx.low_rank, ctx.has_round_biases = len(mogrify_weights), tuple(low_rank), bool(mogrify_biases)
    ctx.save_for_backward(x, h0, c0, weight_ih, weight_hh, bias, lengths, gates, cells, h_prev,
                          *mogrify_weights, *right_factors, *mogrify_biases, *chains, *round_gates)
    ctx.reverse = reverse


def _mogrifier_backward(ctx, grad_output, grad_h_n, grad_c_n, *_):
    x, h0, c0, weight_ih, weight_hh, bias, lengths, gates, cells, h_prev, *rest = ctx.saved_tensors
    rounds, low_rank, has_biases = ctx.rounds, ctx.low_rank, ctx.has_round_biases
    weights, biases, saved_rounds = unflatten_rounds(rest, low_rank, has_biases)
    chains, round_gates = saved_rounds[:rounds], saved_rounds[rounds:]
    if torch.is_grad_enabled():  # create_graph: the gradient must be differentiable too
        def run(x, h0, c0, weight_ih, weight_hh, bias, *round_tensors):
            weights, biases, _ = unflatten_rounds(round_tensors, low_rank, has_biases)
            return mogrifier_lstm(x, weight_ih, weight_hh, bias, None, h0, c0, mogrify_weights=weights,
                                  mogrify_biases=biases, lengths=lengths, reverse=ctx.reverse)

        round_tensors, _ = flatten_rounds(weights, biases)
        grads = recomputed_gradients(run, [x, h0, c0, weight_ih, weight_hh, bias, *round_tensors],
                                     (grad_output, grad_h_n, grad_c_n))
        grad_rounds, grad_biases, _ = unflatten_rounds(grads[6:], low_rank, has_biases)
        grad_weights, _, grad_right_factors = split_round_weights(grad_rounds)
        grads = grads[:6]
    else:
        matrices, _, right_factors = split_round_weights(weights)
        *grads, grad_weights, grad_right_factors, grad_biases = torch.ops.fusedrnn.mogrifier_backward(
            grad_output.contiguous(), grad_h_n.contiguous(), grad_c_n.contiguous(), x, c0, weight_ih, weight_hh,
            gates, cells, h_prev, matrices, low_rank, right_factors, chains, round_gates, lengths, ctx.reverse)
        grads[5] = grads[5] if bias is not None else None
    # bool[] gets no gradient; but torch.library reads an empty list as an empty tensor list.
    no_grad_low_rank = None if low_rank else []
    return (*grads, list(grad_weights), no_grad_low_rank, list(grad_right_factors),
            list(grad_biases) if has_biases else [], None, None, None)


# --------------------------------------------------------------------------- G2 noise


def _fake_g2_noise(seq_len, batch_size, hidden_size, noise_prob, seed):
    return seed.new_empty(seq_len, batch_size, 2, hidden_size, dtype=torch.float32)


def g2_noise(seq_len, batch_size, hidden_size, noise_prob):
    """:func:`fusedrnn.noise.sample_noise` on the CPU, drawn in C++ (the seed drawn as it draws it)."""
    return torch.ops.fusedrnn.g2_noise(seq_len, batch_size, hidden_size, noise_prob, draw_seed("cpu"))


_registered = False


def register() -> None:
    """Registers the fake implementations and autograd of the operators (once, after the
    library that defines their schemas is loaded)."""
    global _registered
    if _registered:
        return
    for name, fake, backward, setup in (
            ("lstm_forward", _fake_lstm_forward, _lstm_backward, _setup_lstm),
            ("mogrifier_forward", _fake_mogrifier_forward, _mogrifier_backward, _setup_mogrifier)):
        torch.library.register_fake(f"fusedrnn::{name}", checking_devices(name, fake))
        torch.library.register_autograd(f"fusedrnn::{name}", backward, setup_context=setup)
    torch.library.register_fake("fusedrnn::lstm_backward", checking_devices("lstm_backward", _fake_lstm_backward))
    torch.library.register_fake("fusedrnn::mogrifier_backward",
                                checking_devices("mogrifier_backward", _fake_mogrifier_backward))
    torch.library.register_fake("fusedrnn::g2_noise", _fake_g2_noise)
    _registered = True


def lstm_sweep(x, h0, c0, weight_ih, weight_hh, bias, lengths, noise, reverse, temperature, gate_mode, save):
    """LSTM or G2-LSTM sweep (``gate_mode`` a name of ``fusedrnn.cells.GATE_MODES``); returns
    ``output (T, B, H), h_n (B, H), c_n (B, H)``, differentiable."""
    output, h_n, c_n, *_ = call_operator(torch.ops.fusedrnn.lstm_forward, x, h0, c0, weight_ih, weight_hh, bias,
                                         lengths, noise, reverse, temperature, gate_mode, save, save=save)
    return output, h_n, c_n


def mogrifier_sweep(x, h0, c0, weight_ih, weight_hh, bias, mogrify_weights, mogrify_low_rank, mogrify_right_factors,
                    mogrify_biases, lengths, reverse, save):
    """Mogrifier LSTM sweep; the rounds as :func:`fusedrnn.sweep.split_round_weights` gives
    them, ``mogrify_biases`` empty or one per round. Returns ``output, h_n, c_n``."""
    output, h_n, c_n, *_ = call_operator(torch.ops.fusedrnn.mogrifier_forward, x, h0, c0, weight_ih, weight_hh, bias,
                                         mogrify_weights, mogrify_low_rank, mogrify_right_factors, mogrify_biases,
                                         lengths, reverse, save, save=save)
    return output, h_n, c_n
