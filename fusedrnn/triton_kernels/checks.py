"""Argument checks of the Triton operators, ``torch.ops.fusedrnn.triton_*``.

Registered in ``torch.ops`` they are public, and their kernels index memory from the shapes
they are handed: a call whose tensors do not fit together would read and write out of bounds.
So each operator checks its tensors before it launches (the C++ operators' checks are
``csrc/checks.cpp``): a forward's inputs as :mod:`fusedrnn.functional` checks them (its
validation, reused); a backward's, that each tensor has the shape, dtype and device that the
forward returns for those inputs (its fake implementation, run on the meta device). Lengths are
range-checked as the functional API checks them (on a GPU by a device-side assert, no host
sync). Errors are ``ValueError``/``TypeError`` naming the operator and the argument. fusedrnn's own
calls, whose arguments it built and validated already, skip the checks
(:func:`fusedrnn.sweep.call_validated`).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Dict, NamedTuple, Sequence

import torch

from .. import functional
from ..cells import MIN_TEMPERATURE
from ..sweep import VALIDATED, join_round_weights
from .common import DTYPES


@contextlib.contextmanager
def _named(op: str):
    """Prefixes the checks' errors with the operator's name."""
    try:
        yield
    except (TypeError, ValueError) as error:
        raise type(error)(f"fusedrnn::{op}: {error}") from None


def _check_like(name: str, tensor, expected: torch.Tensor, device: torch.device) -> None:
    """``tensor`` has ``expected``'s shape and dtype, on ``device``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.shape != expected.shape:
        raise ValueError(f"{name} must have shape {tuple(expected.shape)}, got {tuple(tensor.shape)}")
    if tensor.dtype != expected.dtype:
        raise TypeError(f"{name} must be {expected.dtype}, got {tensor.dtype}")
    if tensor.device != device:
        raise ValueError(f"{name} must be on x's device {device}, got {tensor.device}")


def _check_sweep(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse):
    functional._validated_call("lstm", x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0, lengths, reverse,
                               input_name="x")
    if x.dtype not in DTYPES:
        raise TypeError(f"x must be one of {DTYPES} (the Triton kernels' types), got {x.dtype}")
    if lengths is not None and lengths.device != x.device:  # the functional API moves them; a kernel cannot
        raise ValueError(f"lengths must be on x's device {x.device}, got {lengths.device}")


def _check_rounds(x, weight_hh, mogrify_weights, mogrify_low_rank, mogrify_right_factors, mogrify_biases, max_rounds):
    """The rounds joined into :func:`fusedrnn.functional.mogrifier_lstm`'s form, checked there."""
    if len(mogrify_low_rank) != len(mogrify_weights) or sum(mogrify_low_rank) != len(mogrify_right_factors):
        raise ValueError(f"mogrify_low_rank must have one flag per round ({len(mogrify_weights)}) and "
                         f"mogrify_right_factors one factor per low-rank round, got {len(mogrify_low_rank)} flags "
                         f"and {len(mogrify_right_factors)} factors")
    if len(mogrify_weights) > max_rounds:
        raise ValueError(f"mogrify_weights must have at most {max_rounds} rounds, got {len(mogrify_weights)}")
    weights = join_round_weights(mogrify_weights, mogrify_low_rank, mogrify_right_factors)
    functional._validated_rounds(list(weights), list(mogrify_biases) or None, x, weight_hh.shape[1])


def check_lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, noise, seed, reverse,
                       inv_temperature, noise_prob) -> None:
    if VALIDATED.get():
        return
    with _named("triton_lstm_forward"):
        _check_sweep(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse)
        seq_len, batch_size, hidden_size = x.shape[0], x.shape[1], weight_hh.shape[1]
        if noise is not None and seed is not None:
            raise ValueError("noise and seed must not both be given (noise is given, or drawn from the seed)")
        meta = torch.device("meta")
        if noise is not None:
            _check_like("noise", noise, torch.empty(seq_len, batch_size, 2, hidden_size, dtype=torch.float32,
                                                    device=meta), x.device)
        if seed is not None:
            _check_like("seed", seed, torch.empty(1, dtype=torch.int64, device=meta), x.device)
        if not 0 < inv_temperature <= 1 / MIN_TEMPERATURE:  # NaN fails too
            raise ValueError(f"inv_temperature must be in (0, 2**126] (1/temperature), got {inv_temperature}")
        if not 0 < noise_prob <= 1:
            raise ValueError(f"noise_prob must be in (0, 1], got {noise_prob}")


def check_lstm_backward(fake_forward, d_out, d_h_n, d_c_n, x, h0, c0, weight_ih, weight_hh, lengths, states, cells,
                        gates, reverse) -> None:
    if VALIDATED.get():
        return
    with _named("triton_lstm_backward"):
        _check_sweep(x, h0, c0, weight_ih, weight_hh, None, None, lengths, reverse)
        out, h_n, c_n, _, saved_cells, saved_gates = _fake_outputs(
            fake_forward, x, h0, c0, weight_ih, weight_hh, None, None, lengths, None, None, reverse, 1.0, 1.0, False,
            True)
        _check_all(dict(d_out=(d_out, out), d_h_n=(d_h_n, h_n), d_c_n=(d_c_n, c_n), states=(states, out),
                        cells=(cells, saved_cells), gates=(gates, saved_gates)), x.device)


def check_mogrifier_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, mogrify_weights, mogrify_low_rank,
                            mogrify_right_factors, mogrify_biases, lengths, reverse, max_rounds) -> None:
    if VALIDATED.get():
        return
    with _named("triton_mogrifier_forward"):
        _check_sweep(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse)
        _check_rounds(x, weight_hh, mogrify_weights, mogrify_low_rank, mogrify_right_factors, mogrify_biases,
                      max_rounds)


def check_mogrifier_backward(fake_forward, d_out, d_h_n, d_c_n, x, weight_ih, weight_hh, mogrify_weights,
                             mogrify_low_rank, mogrify_right_factors, lengths, saved: Sequence[torch.Tensor], reverse,
                             max_rounds) -> None:
    if VALIDATED.get():
        return
    with _named("triton_mogrifier_backward"):
        _check_sweep(x, None, None, weight_ih, weight_hh, None, None, lengths, reverse)  # no states to check
        _check_rounds(x, weight_hh, mogrify_weights, mogrify_low_rank, mogrify_right_factors, [], max_rounds)
        state = _Spec((x.shape[1], weight_hh.shape[1]), x.dtype)
        out, h_n, c_n, buffers = _fake_outputs(fake_forward, x, state, state, weight_ih, weight_hh, None, None,
                                               mogrify_weights, mogrify_low_rank, mogrify_right_factors, [], lengths,
                                               reverse, True)
        if len(saved) != len(buffers):
            raise ValueError(f"saved must hold the forward's {len(buffers)} buffers, got {len(saved)}")
        expected = dict(d_out=(d_out, out), d_h_n=(d_h_n, h_n), d_c_n=(d_c_n, c_n))
        expected.update((f"saved[{k}]", pair) for k, pair in enumerate(zip(saved, buffers)))
        _check_all(expected, x.device)


class _Spec(NamedTuple):
    """A tensor's shape and dtype: what a fake implementation's outputs depend on."""

    shape: tuple
    dtype: torch.dtype


def _fake_outputs(fake_forward, *arguments):
    """``fake_forward``'s outputs (meta tensors) for arguments of these shapes and dtypes: the
    forward's saved tensors that a backward must be handed. Cached, as compiled graphs call the
    backward with the checks on (a fake forward costs about 180 µs)."""
    def spec(value):
        if isinstance(value, torch.Tensor):
            return _Spec(tuple(value.shape), value.dtype)
        return tuple(map(spec, value)) if isinstance(value, list) else value

    return _cached_fake_outputs(fake_forward, *map(spec, arguments))


@functools.lru_cache(maxsize=256)
def _cached_fake_outputs(fake_forward, *specs):
    def build(spec):
        if isinstance(spec, _Spec):
            return torch.empty(spec.shape, dtype=spec.dtype, device="meta")
        return [build(item) for item in spec] if isinstance(spec, tuple) else spec

    return fake_forward(*map(build, specs))


def _check_all(pairs: Dict[str, tuple], device: torch.device) -> None:
    for name, (tensor, expected) in pairs.items():
        _check_like(name, tensor, expected, device)
