"""Autograd over the ``torch.ops.fusedrnn`` operators (schemas in csrc/fusedrnn.cpp).

The operators take contiguous tensors of one dtype on one device; shapes as
:class:`fusedrnn.sweep.Sweep`, with ``bias = bias_ih + bias_hh`` (4H) or ``None`` in the
accumulation type (float32 for half types, else the input's).
Called directly they are public API too, so each checks its arguments first (csrc/checks.h):
a bad shape, value, device or layout raises ``ValueError``, a bad dtype ``TypeError``, with a
message naming the argument, what was expected and what was got (in C++,
``TORCH_CHECK_VALUE``/``TORCH_CHECK_TYPE``, which PyTorch raises as these Python types).
Checking ``lengths`` against ``[0, T]`` reads it back, a host sync on CUDA (skipped while
the stream is captured into a CUDA graph).
The forward saves what the backward needs (gate activations, cell states, the h each
step read, the Mogrifier's round chains and gates), so the G2 backward sees exactly the
forward's noise. Without ``save`` (no backward can follow, ``Sweep.needs_backward``) the
operators keep a ring of one or two steps instead of all ``T`` and nothing is saved.
"""
from __future__ import annotations

import torch

from ..sweep import GATE_MODES


def gate_mode_code(gate_mode: str) -> int:
    """The C++ ``GateMode`` value of a gate mode (csrc/kernels.h)."""
    return GATE_MODES.index(gate_mode)


class LstmFunction(torch.autograd.Function):
    """LSTM or G2-LSTM sweep: ``(x, h0, c0, weight_ih, weight_hh, bias, lengths, noise, reverse,
    temperature, gate_mode, save) -> (output (T, B, H), h_n (B, H), c_n (B, H))``."""

    @staticmethod
    def forward(ctx, x, h0, c0, weight_ih, weight_hh, bias, lengths, noise, reverse, temperature, gate_mode, save):
        output, h_n, c_n, gates, cells, h_prev = torch.ops.fusedrnn.lstm_forward(
            x, h0, c0, weight_ih, weight_hh, bias, lengths, noise, reverse, temperature, gate_mode, save)
        if save:
            ctx.save_for_backward(x, c0, weight_ih, weight_hh, gates, cells, h_prev, lengths)
        ctx.reverse, ctx.temperature, ctx.gate_mode = reverse, temperature, gate_mode
        ctx.has_bias = bias is not None
        return output, h_n, c_n

    @staticmethod
    def backward(ctx, grad_output, grad_h_n, grad_c_n):
        x, c0, weight_ih, weight_hh, gates, cells, h_prev, lengths = ctx.saved_tensors
        grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias = torch.ops.fusedrnn.lstm_backward(
            grad_output.contiguous(), grad_h_n.contiguous(), grad_c_n.contiguous(), x, c0, weight_ih, weight_hh,
            gates, cells, h_prev, lengths, ctx.reverse, ctx.temperature, ctx.gate_mode)
        return (grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias if ctx.has_bias else None,
                None, None, None, None, None, None)


class MogrifierFunction(torch.autograd.Function):
    """Mogrifier LSTM sweep: ``(x, h0, c0, weight_ih, weight_hh, bias, lengths, reverse, save, rounds,
    *mogrify_weights, *mogrify_biases)``, the round biases all given or all left out;
    returns ``(output, h_n, c_n)``."""

    @staticmethod
    def forward(ctx, x, h0, c0, weight_ih, weight_hh, bias, lengths, reverse, save, rounds, *round_tensors):
        weights, biases = list(round_tensors[:rounds]), list(round_tensors[rounds:])
        output, h_n, c_n, gates, cells, h_prev, chains, round_gates = torch.ops.fusedrnn.mogrifier_forward(
            x, h0, c0, weight_ih, weight_hh, bias, weights, biases, lengths, reverse, save)
        if save:
            ctx.save_for_backward(x, c0, weight_ih, weight_hh, gates, cells, h_prev, lengths,
                                  *weights, *chains, *round_gates)
        ctx.reverse, ctx.rounds = reverse, rounds
        ctx.has_bias, ctx.has_round_biases = bias is not None, bool(biases)
        return output, h_n, c_n

    @staticmethod
    def backward(ctx, grad_output, grad_h_n, grad_c_n):
        x, c0, weight_ih, weight_hh, gates, cells, h_prev, lengths, *rest = ctx.saved_tensors
        rounds = ctx.rounds
        weights, chains, round_gates = rest[:rounds], rest[rounds:2 * rounds], rest[2 * rounds:]
        (grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias, grad_weights,
         grad_biases) = torch.ops.fusedrnn.mogrifier_backward(
            grad_output.contiguous(), grad_h_n.contiguous(), grad_c_n.contiguous(), x, c0, weight_ih, weight_hh,
            gates, cells, h_prev, weights, chains, round_gates, lengths, ctx.reverse)
        return (grad_x, grad_h0, grad_c0, grad_weight_ih, grad_weight_hh, grad_bias if ctx.has_bias else None,
                None, None, None, None, *grad_weights, *(grad_biases if ctx.has_round_biases else ()))
