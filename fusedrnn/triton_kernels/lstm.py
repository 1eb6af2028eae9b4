"""The LSTM sweep (SPEC §2) as Triton persistent kernels, forward and backward.

The G2-LSTM (SPEC §4) is this same sweep with flags: noise on the input and forget
gate pre-activations (a tensor, or drawn in the kernel from a Philox seed), a
temperature, and hard gates.

Shape letters: T steps, B batch, I input size, H hidden size.

Operators. The forward and backward sweeps are ``torch.library.custom_op`` operators
(``fusedrnn::triton_lstm_forward``, ``fusedrnn::triton_lstm_backward``) with fake
implementations and registered autograd: ``torch.compile`` keeps each as one opaque call in
its graph, and the call launches the kernels exactly as eager does. Not
``torch.library.triton_op``/``wrap_triton``: inductor would generate those launches itself and
keep only the kernel's own arguments and ``num_warps``/``num_stages``
(``torch/_higher_order_ops/triton_kernel_wrap.py``, ``SPECIAL_CONFIG_NAMES``;
``torch/_inductor/codegen/wrapper.py``, ``define_user_defined_triton_kernel`` builds the
signature from ``kernel.params`` and a ``triton_meta`` without launch options, which
``torch/_inductor/runtime/triton_heuristics.py``, ``_create_compile_options``, compiles with
``launch_cooperative_grid=False``). A grid of several programs would then lose its cooperative
launch and could deadlock at a grid barrier, and ``enable_fp_fusion`` would be Triton's default
instead of :data:`layout.FP_FUSION`. Operators take only schema types, so they find their
layout again from their arguments' shapes (:func:`config_for`, cached).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..noise import EPS, sample_noise
from ..precision import autocast_off, summed_bias
from ..reference.double_backward import recomputed_gradients
from ..reference.g2 import g2_lstm as reference_g2_lstm
from ..sweep import Sweep, call_operator, call_validated, checking_devices
from . import checks, common, layout
from .common import (concat_gates, dot, exchanged_product, grid_barrier, input_guard, load_resident_slice,
                     sigmoid, split_gates, tanh)
from .noise import logistic_noise

# Where the G2 gate noise comes from (the NOISE constexpr).
NO_NOISE, NOISE_TENSOR, NOISE_PHILOX = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)


@triton.jit
def _program_tile(i_h, i_b, B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """Program ``(i_h, i_b)``'s batch rows ``o_b`` and hidden units ``o_j``, which of each are
    in range, and their ``(BLOCK_B, BLOCK_H)`` mask."""
    o_b = i_b * BLOCK_B + tl.arange(0, BLOCK_B)
    o_j = i_h * BLOCK_H + tl.arange(0, BLOCK_H)
    m_b, m_j = o_b < B, o_j < H
    return o_b, o_j, m_b, m_j, m_b[:, None] & m_j[None, :]


@triton.jit
def _aligned(H, H_ALIGN: tl.constexpr):
    """``H``, known to the compiler as a multiple of ``H_ALIGN`` (``layout.hidden_alignment``),
    so that it can load rows in vectors: the same value, as ``H // H_ALIGN * H_ALIGN``."""
    if H_ALIGN > 1:
        H = H // H_ALIGN * H_ALIGN
    return H


@triton.heuristics({
    "HAS_LENGTHS": lambda args: args["lengths"] is not None,
    "SAVE": lambda args: args["gates"] is not None,
    "NOISE": lambda args: (NOISE_TENSOR if args["noise"] is not None
                           else NOISE_PHILOX if args["seed"] is not None else NO_NOISE),
})
@triton.jit(do_not_specialize=["T"])
def _lstm_fwd_kernel(
    gx, w_hh, h0, c0, lengths, noise, seed,
    states, out, cells, gates, h_n, c_n, counters,
    T, B, H, inv_temperature, noise_prob,
    REVERSE: tl.constexpr, HARD_GATES: tl.constexpr, HAS_LENGTHS: tl.constexpr, SAVE: tl.constexpr,
    NOISE: tl.constexpr, EPS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    H_PAD: tl.constexpr, PROGRAMS_H: tl.constexpr, HIDDEN_ON_CHIP: tl.constexpr, BLOCK_K: tl.constexpr,
    H_ALIGN: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    """Program ``(i_h, i_b)``: hidden units ``[i_h·BLOCK_H, +BLOCK_H)`` of rows ``[i_b·BLOCK_B, +BLOCK_B)``.

    ``gx (T, B, 4H)`` holds ``x W_ihᵀ + b_ih + b_hh``. Writes the carried state
    ``states (T, B, H)`` (frozen past a row's length), ``out`` (zero past it) when
    there are lengths, and for the backward ``cells (T, B, H)`` (float32) and the activated
    gates ``gates (T, B, 4H)`` in the input's dtype (SPEC §6.1: a bfloat16 or float16 gradient
    stays within its bound; in float32 the gates were three quarters of what the sweep keeps).
    """
    i_h, i_b = tl.program_id(0), tl.program_id(1)
    H = _aligned(H, H_ALIGN)
    DTYPE = states.dtype.element_ty
    o_b, o_j, m_b, m_j, m_bj = _program_tile(i_h, i_b, B, H, BLOCK_B, BLOCK_H)

    # This program's slice of W_hh, transposed: (H_PAD, 4·BLOCK_H), column 4j + gate.
    o_n = tl.arange(0, 4 * BLOCK_H)
    n_unit = i_h * BLOCK_H + o_n // 4
    m_n = n_unit < H
    p_w = w_hh + ((o_n % 4) * H + n_unit)[None, :] * H
    b_w = load_resident_slice(p_w, m_n[None, :], 1, H, BLOCK_K, H_PAD)

    p_own = o_b[:, None] * H + o_j[None, :]
    b_h = tl.load(h0 + p_own, mask=m_bj, other=0.0).to(tl.float32)
    b_c = tl.load(c0 + p_own, mask=m_bj, other=0.0).to(tl.float32)
    if HAS_LENGTHS:
        b_len = tl.load(lengths + o_b, mask=m_b, other=0)
    if NOISE == NOISE_PHILOX:
        b_seed = tl.load(seed)
    for s in range(T):
        t = T - 1 - s if REVERSE else s
        t_prev = t + 1 if REVERSE else t - 1
        row = (t * B + o_b).to(tl.int64)
        # Everything that does not depend on h_{t-1} is loaded before the barrier.
        p_gx = gx + row[:, None] * (4 * H) + o_j[None, :]
        z_i = tl.load(p_gx, mask=m_bj, other=0.0).to(tl.float32)
        z_f = tl.load(p_gx + H, mask=m_bj, other=0.0).to(tl.float32)
        z_g = tl.load(p_gx + 2 * H, mask=m_bj, other=0.0).to(tl.float32)
        z_o = tl.load(p_gx + 3 * H, mask=m_bj, other=0.0).to(tl.float32)
        if NOISE == NOISE_TENSOR:
            p_noise = noise + row[:, None] * (2 * H) + o_j[None, :]
            z_i += tl.load(p_noise, mask=m_bj, other=0.0)
            z_f += tl.load(p_noise + H, mask=m_bj, other=0.0)
        elif NOISE == NOISE_PHILOX:
            n_i, n_f = logistic_noise(b_seed, t, o_b, o_j, H, noise_prob, EPS)
            z_i += n_i
            z_f += n_f

        # h_{t-1} of every hidden unit: in registers, or from the other programs.
        if HIDDEN_ON_CHIP:
            z = dot(b_h.to(DTYPE), b_w, INPUT_PRECISION, UPCAST_DOT)
        else:
            grid_barrier(counters + i_b, (s + 1) * PROGRAMS_H)
            p_prev = tl.where(s == 0, h0 + o_b[:, None] * H, states + (t_prev * B + o_b).to(tl.int64)[:, None] * H)
            z = exchanged_product(p_prev, m_b[:, None], p_w, m_n[None, :], b_w, 1, H, BLOCK_B, 4 * BLOCK_H,
                                  BLOCK_K, H_PAD, INPUT_PRECISION, UPCAST_DOT)
        r_i, r_f, r_g, r_o = split_gates(z, BLOCK_B, BLOCK_H)
        z_i += r_i
        z_f += r_f
        z_g += r_g
        z_o += r_o

        if HARD_GATES:
            b_i = (z_i >= 0).to(tl.float32)
            b_f = (z_f >= 0).to(tl.float32)
        else:
            b_i = sigmoid(z_i * inv_temperature)
            b_f = sigmoid(z_f * inv_temperature)
        b_g = tanh(z_g)
        b_o = sigmoid(z_o)
        c_new = b_f * b_c + b_i * b_g
        h_new = b_o * tanh(c_new)
        p_t = row[:, None] * H + o_j[None, :]
        if HAS_LENGTHS:
            active = (t < b_len)[:, None]
            b_c = tl.where(active, c_new, b_c)
            b_h = tl.where(active, h_new, b_h)
            tl.store(out + p_t, tl.where(active, h_new, 0.0).to(DTYPE), mask=m_bj)
        else:
            b_c, b_h = c_new, h_new
        tl.store(states + p_t, b_h.to(DTYPE), mask=m_bj)
        if SAVE:
            tl.store(cells + p_t, b_c, mask=m_bj)
            p_gates = gates + row[:, None] * (4 * H) + o_j[None, :]
            tl.store(p_gates, b_i.to(DTYPE), mask=m_bj)
            tl.store(p_gates + H, b_f.to(DTYPE), mask=m_bj)
            tl.store(p_gates + 2 * H, b_g.to(DTYPE), mask=m_bj)
            tl.store(p_gates + 3 * H, b_o.to(DTYPE), mask=m_bj)
    tl.store(h_n + p_own, b_h.to(DTYPE), mask=m_bj)
    tl.store(c_n + p_own, b_c.to(DTYPE), mask=m_bj)


@triton.heuristics({"HAS_LENGTHS": lambda args: args["lengths"] is not None})
@triton.jit(do_not_specialize=["T"])
def _lstm_bwd_kernel(
    w_hh, gates, cells, c0, lengths, d_out, d_h_n, d_c_n,
    dz, d_h0, d_c0, counters,
    T, B, H, inv_temperature,
    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr,
    H_PAD: tl.constexpr, PROGRAMS_H: tl.constexpr, HIDDEN_ON_CHIP: tl.constexpr, BLOCK_K: tl.constexpr,
    H_ALIGN: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
):
    """The reverse sweep (SPEC §2): writes ``dz (T, B, 4H)``, ``d_h0``, ``d_c0 (B, H)`` float32.

    ``c0`` is float32 like ``cells``, so that ``c_{t-1}`` is one load from either.

    Each program keeps the ``W_hh`` columns of its hidden units; ``δh`` of its units
    needs every unit's ``dz`` of the step after, exchanged like ``h`` in the forward.
    """
    i_h, i_b = tl.program_id(0), tl.program_id(1)
    H = _aligned(H, H_ALIGN)
    DTYPE = dz.dtype.element_ty
    o_b, o_j, m_b, m_j, m_bj = _program_tile(i_h, i_b, B, H, BLOCK_B, BLOCK_H)

    # W_hh columns of this program's units: (4·H_PAD, BLOCK_H), row gate·H_PAD + k.
    p_w = w_hh + o_j[None, :]
    b_w = load_resident_slice(p_w, m_j[None, :], 4, H, BLOCK_K, H_PAD)

    p_own = o_b[:, None] * H + o_j[None, :]
    b_dh = tl.load(d_h_n + p_own, mask=m_bj, other=0.0).to(tl.float32)
    b_dc = tl.load(d_c_n + p_own, mask=m_bj, other=0.0).to(tl.float32)
    b_dz = tl.zeros((BLOCK_B, 4 * BLOCK_H), dtype=DTYPE)
    if HAS_LENGTHS:
        b_len = tl.load(lengths + o_b, mask=m_b, other=0)
    for s in range(T):
        t = s if REVERSE else T - 1 - s
        t_prev = t + 1 if REVERSE else t - 1  # the step before t in the forward's order
        t_next = t - 1 if REVERSE else t + 1  # the step handled just before in this sweep
        row = (t * B + o_b).to(tl.int64)
        p_t = row[:, None] * H + o_j[None, :]
        p_gates = gates + row[:, None] * (4 * H) + o_j[None, :]
        g_i = tl.load(p_gates, mask=m_bj, other=0.0).to(tl.float32)
        g_f = tl.load(p_gates + H, mask=m_bj, other=0.0).to(tl.float32)
        g_g = tl.load(p_gates + 2 * H, mask=m_bj, other=0.0).to(tl.float32)
        g_o = tl.load(p_gates + 3 * H, mask=m_bj, other=0.0).to(tl.float32)
        c_t = tl.load(cells + p_t, mask=m_bj, other=0.0)
        p_c_prev = tl.where(s == T - 1, c0 + p_own, cells + (t_prev * B + o_b).to(tl.int64)[:, None] * H + o_j[None, :])
        c_prev = tl.load(p_c_prev, mask=m_bj, other=0.0)
        d_y = tl.load(d_out + p_t, mask=m_bj, other=0.0).to(tl.float32)

        # δh from step t_next: dz_{t_next} W_hh over every unit's dz.
        if HIDDEN_ON_CHIP:
            b_dh += dot(b_dz, b_w, INPUT_PRECISION, UPCAST_DOT)
        else:
            grid_barrier(counters + i_b, (s + 1) * PROGRAMS_H)
            p_next = dz + (t_next * B + o_b).to(tl.int64)[:, None] * (4 * H)
            b_dh += exchanged_product(p_next, m_b[:, None] & (s > 0), p_w, m_j[None, :], b_w, 4, H, BLOCK_B,
                                      BLOCK_H, BLOCK_K, H_PAD, INPUT_PRECISION, UPCAST_DOT)

        if HAS_LENGTHS:
            active = (t < b_len)[:, None]
            d_y = tl.where(active, d_y, 0.0)
        d_h = b_dh + d_y
        tanh_c = tanh(c_t)
        d_o = d_h * tanh_c
        d_c = b_dc + d_h * g_o * (1.0 - tanh_c * tanh_c)
        dz_i = d_c * g_g * g_i * (1.0 - g_i) * inv_temperature
        dz_f = d_c * c_prev * g_f * (1.0 - g_f) * inv_temperature
        dz_g = d_c * g_i * (1.0 - g_g * g_g)
        dz_o = d_o * g_o * (1.0 - g_o)
        d_c_prev = d_c * g_f
        if HAS_LENGTHS:  # a frozen row passes δh and δc through and has no dz
            dz_i = tl.where(active, dz_i, 0.0)
            dz_f = tl.where(active, dz_f, 0.0)
            dz_g = tl.where(active, dz_g, 0.0)
            dz_o = tl.where(active, dz_o, 0.0)
            b_dc = tl.where(active, d_c_prev, b_dc)
            b_dh = tl.where(active, 0.0, d_h)
        else:
            b_dc = d_c_prev
            b_dh = tl.zeros_like(d_h)
        p_dz_own = dz + row[:, None] * (4 * H) + o_j[None, :]
        tl.store(p_dz_own, dz_i.to(DTYPE), mask=m_bj)
        tl.store(p_dz_own + H, dz_f.to(DTYPE), mask=m_bj)
        tl.store(p_dz_own + 2 * H, dz_g.to(DTYPE), mask=m_bj)
        tl.store(p_dz_own + 3 * H, dz_o.to(DTYPE), mask=m_bj)
        b_dz = concat_gates(dz_i.to(DTYPE), dz_f.to(DTYPE), dz_g.to(DTYPE), dz_o.to(DTYPE), BLOCK_B, BLOCK_H)

    # δh_0 from the first forward step's dz.
    if HIDDEN_ON_CHIP:
        b_dh += dot(b_dz, b_w, INPUT_PRECISION, UPCAST_DOT)
    else:
        grid_barrier(counters + i_b, (T + 1) * PROGRAMS_H)
        p_first = dz + ((T - 1 if REVERSE else 0) * B + o_b).to(tl.int64)[:, None] * (4 * H)
        b_dh += exchanged_product(p_first, m_b[:, None], p_w, m_j[None, :], b_w, 4, H, BLOCK_B,
                                  BLOCK_H, BLOCK_K, H_PAD, INPUT_PRECISION, UPCAST_DOT)
    tl.store(d_h0 + p_own, b_dh, mask=m_bj)
    tl.store(d_c0 + p_own, b_dc, mask=m_bj)


@input_guard
def lstm_fwd(gx, weight_hh, h0, c0, lengths, noise, seed, *, reverse, inv_temperature, noise_prob, hard_gates,
             save, config):
    """Launches the forward sweep on ``gx (T, B, 4H)``.

    Returns ``out, states (T, B, H)``, ``h_n, c_n (B, H)`` and, when ``save``, the float32
    ``cells (T, B, H)`` and the ``gates (T, B, 4H)`` (in ``gx``'s dtype) the backward reads
    (else ``None``).
    """
    seq_len, batch_size, hidden_size = gx.shape[0], gx.shape[1], weight_hh.shape[1]
    states = gx.new_empty(seq_len, batch_size, hidden_size, dtype=h0.dtype)
    out = states if lengths is None else torch.empty_like(states)
    cells = torch.empty_like(states, dtype=torch.float32) if save else None
    gates = gx.new_empty(seq_len, batch_size, 4 * hidden_size) if save else None
    h_n, c_n = torch.empty_like(h0), torch.empty_like(c0)
    _lstm_fwd_kernel[config.grid](
        gx, weight_hh, h0, c0, lengths, noise, seed,
        states, out, cells, gates, h_n, c_n, layout.new_barrier_counters(config, gx.device),
        seq_len, batch_size, hidden_size, inv_temperature, noise_prob,
        REVERSE=reverse, HARD_GATES=hard_gates, EPS=EPS, **common.dot_options(h0.dtype),
        **config.constexprs(), **config.launch_options())
    return out, states, h_n, c_n, cells, gates


@input_guard
def lstm_bwd(weight_hh, gates, cells, c0, lengths, d_out, d_h_n, d_c_n, *, reverse, inv_temperature, config):
    """Launches the reverse sweep; returns ``dz (T, B, 4H)`` and float32 ``d_h0, d_c0 (B, H)``."""
    seq_len, batch_size, hidden_size = d_out.shape
    dz = d_out.new_empty(seq_len, batch_size, 4 * hidden_size)
    d_h0 = d_out.new_empty(batch_size, hidden_size, dtype=torch.float32)
    d_c0 = torch.empty_like(d_h0)
    _lstm_bwd_kernel[config.grid](
        weight_hh, gates, cells, c0.float(), lengths, d_out, d_h_n, d_c_n,
        dz, d_h0, d_c0, layout.new_barrier_counters(config, d_out.device),
        seq_len, batch_size, hidden_size, inv_temperature,
        REVERSE=reverse, **common.dot_options(d_out.dtype),
        **config.constexprs(), **config.launch_options())
    return dz, d_h0, d_c0


def _weight_hh_gradient(dz, states, h0, reverse):
    """``Σ_t dz_tᵀ h_{t-1}`` over the steps in the forward's order (``h0`` before the first), as
    two products rather than one over a shifted copy of ``states`` (``T·B·H`` more at the peak)."""
    first, later, earlier = (-1, slice(None, -1), slice(1, None)) if reverse else (0, slice(1, None), slice(None, -1))
    return torch.addmm(dz[first].t() @ h0, dz[later].flatten(0, 1).t(), states[earlier].flatten(0, 1))


# --------------------------------------------------------------------------- operators


@torch.library.custom_op(
    "fusedrnn::triton_lstm_forward", mutates_args=(),
    schema="(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
           "Tensor? lengths, Tensor? noise, Tensor? seed, bool reverse, float inv_temperature, float noise_prob, "
           "bool hard_gates, bool save) -> (Tensor output, Tensor h_n, Tensor c_n, Tensor states, Tensor cells, "
           "Tensor gates)")
def _forward_op(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, noise, seed, reverse, inv_temperature,
                noise_prob, hard_gates, save):
    """One layer, one direction; G2 options as in :func:`run`. Besides ``output, h_n, c_n`` returns
    what the backward reads: ``states (T, B, H)`` (only with lengths: without, they are ``output``),
    ``cells`` and ``gates`` (see :func:`lstm_fwd`); each is empty, ``(0,)``, when not kept."""
    checks.check_lstm_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, noise, seed, reverse,
                              inv_temperature, noise_prob)
    with autocast_off(x):
        bias = summed_bias(bias_ih, bias_hh)
        # The input projection does not depend on the recurrence: one product over T·B rows.
        gx = F.linear(x, weight_ih, None if bias is None else bias.to(x.dtype))
        out, states, h_n, c_n, cells, gates = lstm_fwd(
            gx, weight_hh, h0, c0, lengths, noise, seed, reverse=reverse, inv_temperature=inv_temperature,
            noise_prob=noise_prob, hard_gates=hard_gates, save=save,
            config=config_for(weight_hh.shape[1], x.shape[1], x.dtype, x.device))
    states = states if save and lengths is not None else None
    return (out, h_n, c_n, *(x.new_empty(0) if tensor is None else tensor for tensor in (states, cells, gates)))


def _fake_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, noise, seed, reverse, inv_temperature,
                  noise_prob, hard_gates, save):
    seq_len, batch_size, hidden_size = x.shape[0], x.shape[1], weight_hh.shape[1]
    states = h0.new_empty(seq_len, batch_size, hidden_size)
    if not save:
        return states, torch.empty_like(h0), torch.empty_like(c0), x.new_empty(0), x.new_empty(0), x.new_empty(0)
    return (states, torch.empty_like(h0), torch.empty_like(c0),
            torch.empty_like(states) if lengths is not None else x.new_empty(0),
            torch.empty_like(states, dtype=torch.float32),
            x.new_empty(seq_len, batch_size, 4 * hidden_size))


@torch.library.custom_op(
    "fusedrnn::triton_lstm_backward", mutates_args=(),
    schema="(Tensor d_out, Tensor d_h_n, Tensor d_c_n, Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, "
           "Tensor weight_hh, Tensor? lengths, Tensor states, Tensor cells, Tensor gates, bool reverse, "
           "float inv_temperature) -> (Tensor d_x, Tensor d_h0, Tensor d_c0, Tensor d_weight_ih, "
           "Tensor d_weight_hh, Tensor d_bias)")
def _backward_op(d_out, d_h_n, d_c_n, x, h0, c0, weight_ih, weight_hh, lengths, states, cells, gates, reverse,
                 inv_temperature):
    """The reverse sweep and the weight gradients, from the forward's ``states (T, B, H)`` (its
    output when there are no lengths), ``cells`` and ``gates``. ``d_bias`` is that of ``b_ih``
    and of ``b_hh`` alike."""
    checks.check_lstm_backward(_fake_forward, d_out, d_h_n, d_c_n, x, h0, c0, weight_ih, weight_hh, lengths, states,
                               cells, gates, reverse)
    with autocast_off(x):
        dz, d_h0, d_c0 = lstm_bwd(weight_hh, gates, cells, c0, lengths, d_out, d_h_n, d_c_n, reverse=reverse,
                                  inv_temperature=inv_temperature,
                                  config=config_for(weight_hh.shape[1], x.shape[1], x.dtype, x.device))
        # Weight gradients as products over all T·B rows (SPEC §2).
        dz_rows = dz.flatten(0, 1)
        d_x = (dz_rows @ weight_ih).view_as(x)
        d_weight_ih = dz_rows.t() @ x.flatten(0, 1)
        d_weight_hh = _weight_hh_gradient(dz, states, h0, reverse)
        d_bias = dz_rows.sum(0, dtype=torch.float32).to(dz.dtype)
    return d_x, d_h0.to(h0.dtype), d_c0.to(c0.dtype), d_weight_ih, d_weight_hh, d_bias


def _fake_backward(d_out, d_h_n, d_c_n, x, h0, c0, weight_ih, weight_hh, lengths, states, cells, gates, reverse,
                   inv_temperature):
    return (d_out.new_empty(x.shape), torch.empty_like(h0), torch.empty_like(c0), d_out.new_empty(weight_ih.shape),
            d_out.new_empty(weight_hh.shape), d_out.new_empty(weight_hh.shape[0]))


# Behind a device check: a meta tensor among others reaches the fake, past the operator's checks.
_forward_op.register_fake(checking_devices("triton_lstm_forward", _fake_forward))
_backward_op.register_fake(checking_devices("triton_lstm_backward", _fake_backward))


def _setup_context(ctx, inputs, output):
    (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, noise, seed, reverse, inv_temperature, noise_prob,
     hard_gates, save) = inputs
    out, _, _, states, cells, gates = output
    ctx.mark_non_differentiable(states, cells, gates)
    ctx.save_for_backward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, noise, seed,
                          out if lengths is None else states, cells, gates)
    ctx.reverse, ctx.inv_temperature, ctx.noise_prob, ctx.hard_gates = reverse, inv_temperature, noise_prob, hard_gates


def _backward(ctx, d_out, d_h_n, d_c_n, *_):
    x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, noise, seed, states, cells, gates = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph: the gradient must be differentiable too
        grads = _differentiable_backward(ctx, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, noise,
                                         seed, (d_out, d_h_n, d_c_n))
    else:
        *grads, d_bias = call_validated(  # the forward's own saved tensors
            torch.ops.fusedrnn.triton_lstm_backward, d_out, d_h_n, d_c_n, x, h0, c0, weight_ih, weight_hh, lengths,
            states, cells, gates, ctx.reverse, ctx.inv_temperature)
        # Two gradients must not share storage.
        grads += [None, None] if bias_ih is None else [d_bias, d_bias.clone()]
    return (*grads, None, None, None, None, None, None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def _differentiable_backward(ctx, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, noise, seed, grads):
    """The backward through the reference cell (see :mod:`fusedrnn.reference.double_backward`),
    with the forward's noise (regenerated from its seed when drawn in the kernel)."""
    if seed is not None:
        noise = sample_noise(x.shape[0], x.shape[1], h0.shape[1], ctx.noise_prob, seed=seed)
    gate_mode = "hard" if ctx.hard_gates else "noisy" if noise is not None else "soft"

    def run(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh):
        return reference_g2_lstm(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0,
                                 temperature=1.0 / ctx.inv_temperature, gate_mode=gate_mode, noise=noise,
                                 lengths=lengths, reverse=ctx.reverse)

    with autocast_off(x):
        return recomputed_gradients(run, [x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh], grads)


# --------------------------------------------------------------------------- layout and entry points


def layout_for(sweep: Sweep) -> layout.Layout:
    """The layout for ``sweep``: no config when none runs it on this device (see
    :func:`layout.first_launchable`)."""
    return _layout(sweep.hidden_size, sweep.batch_size, sweep.dtype, sweep.device)


def config_for(hidden_size: int, batch_size: int, dtype: torch.dtype,
               device: torch.device) -> Optional[layout.SweepConfig]:
    """The layout a sweep of these sizes launches with (see :func:`layout_for`): the operators
    find it again from their arguments' shapes (they take no config object)."""
    return _layout(hidden_size, batch_size, dtype, device).config


# torch.compile calls it when it traces the backend's choice, rather than tracing into it
# (on a GPU it compiles the kernels); the operators call it when they run.
@torch.compiler.assume_constant_result
def _layout(hidden_size, batch_size, dtype, device):
    device_index = device.index if device.type == "cuda" else None
    if device_index is None and device.type == "cuda":
        device_index = torch.cuda.current_device()
    return _launchable_layout(hidden_size, batch_size, dtype, device.type, device_index)


@functools.lru_cache(maxsize=None)
def _launchable_layout(hidden_size, batch_size, dtype, device_type, device_index):
    device = torch.device(device_type, device_index) if device_index is not None else torch.device(device_type)
    configs = layout.sweep_configs(hidden_size, batch_size, dtype, device)
    if device_type == "cuda":
        with torch.cuda.device(device):
            return layout.first_launchable(configs, functools.partial(_compile, hidden_size, batch_size, dtype))
    return layout.first_launchable(configs, None)


def _compile(hidden_size, batch_size, dtype, config, backward=True):
    """Compiles (without launching) the forward with every optional input and, unless
    ``backward`` is false (``bench/layouts.py`` times forwards alone), the backward."""
    f32, i32, i64 = torch.float32, torch.int32, torch.int64
    launch = dict(grid=config.grid, **config.constexprs(), **config.launch_options(), **common.dot_options(dtype))
    forward = _lstm_fwd_kernel.warmup(
        dtype, dtype, dtype, dtype, i64, None, i64, dtype, dtype, f32, f32, dtype, dtype, i32,
        2, batch_size, hidden_size, 1.0, 1.0, REVERSE=False, HARD_GATES=False, EPS=EPS, **launch)
    if not backward:
        return (forward,)
    return forward, _lstm_bwd_kernel.warmup(
        dtype, f32, f32, f32, i64, dtype, dtype, dtype, dtype, f32, f32, i32,
        2, batch_size, hidden_size, 1.0, REVERSE=False, **launch)


def unsupported(sweep: Sweep) -> Optional[str]:
    """Why the Triton sweep cannot run ``sweep`` (device and dtype already checked), or ``None``."""
    chosen = layout_for(sweep)
    if chosen.config is None:
        return chosen.reason or (f"W_hh of hidden size {sweep.hidden_size} does not fit on chip for batch "
                                 f"{sweep.batch_size} with at most one program per SM")
    return None


def run(sweep: Sweep, noise=None, seed=None, inv_temperature=1.0, noise_prob=1.0, hard_gates=False):
    """Runs ``sweep`` as an LSTM, or with the G2 options: ``noise (T, B, 2, H)`` float32 or a
    Philox ``seed (1,)`` int64, ``inv_temperature = 1/τ``, ``noise_prob`` (Philox only),
    ``hard_gates``. Returns ``output (T, B, H), h_n, c_n (B, H)``."""
    save = sweep.needs_backward
    output, h_n, c_n, *_ = call_operator(
        torch.ops.fusedrnn.triton_lstm_forward, sweep.x, sweep.h0, sweep.c0, sweep.weight_ih, sweep.weight_hh,
        sweep.bias_ih, sweep.bias_hh, sweep.lengths, noise, seed, sweep.reverse, inv_temperature, noise_prob,
        hard_gates, save, save=save)
    return output, h_n, c_n
