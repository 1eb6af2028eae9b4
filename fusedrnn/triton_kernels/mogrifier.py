"""The Mogrifier LSTM sweep (SPEC §3) as Triton persistent kernels, forward and backward.

Shape letters as in :mod:`fusedrnn.sweep`; ``r`` rounds, of which ``r_x = ⌈r/2⌉`` are
odd (they gate ``x`` with an ``(I, H)`` matrix ``Q_j``) and ``r_h = ⌊r/2⌋`` even (they gate
``h`` with an ``(H, I)`` matrix ``R_j``).

Work split. ``x⁽ʲ⁾`` needs all of ``h⁽ʲ⁻¹⁾`` and the other way round, and the LSTM step
needs all of the last ``x`` and ``h``: a step is ``r + 1`` phases that each need the whole
result of the one before. ``P`` programs split every phase into ``(batch tile, feature
tile)`` pairs, dealt round-robin, and meet at one grid barrier after each phase: ``r + 1``
barriers per step, forward and backward (one more per low-rank round, below), the fewest
these dependencies allow without recomputing a round in every program. Phases exchange
their results through the buffers the backward reads anyway (one slot per step and round),
so no buffer is overwritten while another program may still read it. A program always gets
the same tiles of the same phase, so the state ``c`` and the backward's carried gradients
need no barrier of their own. The LSTM step's feature tiles are ``BLOCK_N / 4`` units with
their four gates side by side (column ``4u + gate``, as in the LSTM sweep's slices): one
product over ``[x | h]`` gives every gate of a unit, instead of eight products that each
re-read ``x`` or ``h``, and the step, the heaviest phase, spreads over ``4H / BLOCK_N``
tiles. With ``P = 1`` (the CPU interpreter) the code path is the same and every barrier
opens at once. No matrix stays in registers or shared memory: every
phase re-reads its weight tiles in ``BLOCK_K`` chunks (from L2 once warm, copied a few chunks
ahead where the sizes are multiples of 16), the simplest split that runs any ``I``, ``H`` and
``r``. Resident slices would save those copies, about 1.7 MB a step from L2 at ``H = 256``;
whether that is much of a step is for a GPU run to say (``bench/mogrifier_variants.py``
times a round).

Backward (SPEC §3): per step the LSTM backward gives ``dz``; the phases after it form
``g_x = dz W_ih``, ``g_h = dz W_hh`` and undo the rounds ``j = r..1``, each phase doing one
round's product and the elementwise part of the round below it. Weight gradients are
products over all ``T·B`` rows after the sweep.

Low rank (SPEC §3.2): a round ``W_j = left (m, k) @ right (k, n)`` is never multiplied
out. Its gate is ``(v rightᵀ) leftᵀ``, and every tile of the gate needs all ``k`` columns
of the intermediate ``v rightᵀ``, which in turn needs all of ``v``: so the round takes two
phases, one forming the ``(B, k)`` intermediate into ``thin`` and, after a barrier, the
round's own phase reading it in place of ``v``. Likewise in the backward ``da left`` gets
a phase before ``δv += (da left) right``. Computing the intermediate inside each gate tile
instead would save that barrier but repeat the ``B·n·k`` product once per feature tile of
the round (``m / BLOCK_N`` times): ``(m / BLOCK_N)·B·n·k``, more than the full-rank
``B·m·n`` as soon as ``k ≥ BLOCK_N`` (32 on a GPU; ``k = H/8`` is 32 at ``H = 256``). Per
step and low-rank round the products then cost ``2·B·k·(m + n)`` flops instead of
``2·B·m·n``, at one more barrier each way. The intermediates of every step stay in
``thin`` (forward) and ``d_thin`` (backward), so the factors' gradients ``daᵀ (v rightᵀ)``
and ``(da left)ᵀ v`` are products over ``T·B`` rows after the sweep, like the others. All
rounds sit in one ``w_round`` buffer, a row per round, every low-rank round padded with
zeros to the largest rank of the call (exact, and a mix of ranks is rare); which rounds
are low rank is the constexpr bit mask ``LOW_RANK``.

Operators: ``fusedrnn::triton_mogrifier_forward`` and ``fusedrnn::triton_mogrifier_backward``,
opaque ``torch.library.custom_op`` operators for the reasons given in :mod:`.lstm` (a
``triton_op`` compiled by inductor would lose the cooperative launch the barriers need).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..precision import autocast_off, summed_bias
from ..reference.double_backward import recomputed_gradients
from ..reference.mogrifier import mogrifier_lstm as reference_mogrifier_lstm
from ..sweep import (Sweep, call_operator, call_validated, checking_devices, flatten_rounds, join_round_weights,
                     split_round_weights, unflatten_rounds)
from . import checks, common, layout
from .common import dot, grid_barrier, input_guard, sigmoid, split_gates, tanh

#: The most rounds the kernels unroll (the paper tunes ``r`` in 4..6).
MAX_ROUNDS = 8

#: The kernels' ``SPLIT_BELOW_K``: a bfloat16 product over fewer terms takes its float32
#: operand as ``hi + lo``, two products (bfloat16 keeps 8 bits, and over a handful of terms one
#: rounding can cost twice SPEC's 2e-2); from 16 terms on it rounds the operand once. One
#: rounding keeps 2e-2 from 8 terms on at full rank, and gave at most 7.7e-3 with low-rank
#: rounds (ranks 8 to 32; bench/results/bf16-mogrifier/).
SPLIT_BELOW_K = 16
#: ``SPLIT_BELOW_K`` for a call whose every bfloat16 product splits (:func:`split_below_k`).
SPLIT_EVERY = 2 ** 31 - 1


# --------------------------------------------------------------------------- device functions


@triton.jit
def _tile(tile, B, N, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """The ``tile``-th ``(batch, feature)`` tile of a row-major ``(B, N)`` phase: its row and
    column offsets, the ``(BLOCK_B, BLOCK_N)`` element offsets and which are in range."""
    n_tiles = tl.cdiv(N, BLOCK_N)
    offs_b = (tile // n_tiles) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = (tile % n_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    o_bn = offs_b[:, None] * N + offs_n[None, :]
    mask = (offs_b[:, None] < B) & (offs_n[None, :] < N)
    return offs_b, offs_n, o_bn, mask


@triton.jit
def _step_strides(B, I, H, RANK, stride_w):
    """Elements per step of a ``(B, I)``, a ``(B, H)`` and a ``(B, RANK)`` buffer, and per
    round in ``w_round``, in int64."""
    return (tl.cast(B, tl.int64) * I, tl.cast(B, tl.int64) * H, tl.cast(B, tl.int64) * RANK,
            tl.cast(stride_w, tl.int64))


@triton.jit
def _active(lengths, t, offs_b, B, HAS_LENGTHS: tl.constexpr):
    """``(BLOCK_B, 1)``: whether each row takes step ``t`` (SPEC §5)."""
    if HAS_LENGTHS:
        active = t < tl.load(lengths + offs_b, mask=offs_b < B, other=0)
    else:
        active = offs_b >= 0
    return active[:, None]


@triton.jit
def _product(acc, p_a, p_w, o_w, m_w, stride_wk, offs_b, B, K, BLOCK_K: tl.constexpr,
             INPUT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr, SPLIT_BELOW_K: tl.constexpr):
    """``acc + A[offs_b, :K] @ W_tileᵀ``, ``W_tile[n, k]`` at ``p_w + o_w[n] + k·stride_wk``
    (zero where ``m_w[n]`` is false), so a matrix and its transpose share code.

    ``A`` is a row-major ``(B, K)`` block that other programs wrote during this sweep (read
    through L2, rounded to the weights' dtype for the product).
    """
    mask_b = offs_b[:, None] < B
    # A half-precision product rounds A to 8 or 11 bits. A bfloat16 one over fewer than
    # SPLIT_BELOW_K terms takes A as hi + lo: two products, both on tensor cores.
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        b_a = tl.load(p_a + offs_b[:, None] * K + offs_k[None, :], mask=mask_b & (offs_k[None, :] < K),
                      other=0.0, cache_modifier=".cg")
        b_w = tl.load(p_w + o_w[None, :] + offs_k[:, None] * stride_wk, mask=m_w[None, :] & (offs_k[:, None] < K),
                      other=0.0)
        b_a_hi = b_a.to(b_w.dtype)
        acc += dot(b_a_hi, b_w, INPUT_PRECISION, UPCAST_DOT)
        if b_w.dtype == tl.bfloat16:
            if K < SPLIT_BELOW_K:
                acc += dot((b_a - b_a_hi.to(tl.float32)).to(b_w.dtype), b_w, INPUT_PRECISION, UPCAST_DOT)
    return acc


@triton.jit
def _product_phase(p_out, p_a, p_w, stride_wn, stride_wk, B, N, K, i_p, n_programs, BLOCK_B: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                   UPCAST_DOT: tl.constexpr, SPLIT_BELOW_K: tl.constexpr):
    """A phase that only multiplies: the row-major ``(B, N)`` at ``p_out`` gets
    ``A[:, :K] @ W[:N, :K]ᵀ`` (as :func:`_product`), its tiles dealt round-robin. The
    ``RANK``-wide half of a low-rank round."""
    for tile in range(i_p, tl.cdiv(B, BLOCK_B) * tl.cdiv(N, BLOCK_N), n_programs):
        offs_b, offs_n, o_bn, mask = _tile(tile, B, N, BLOCK_B, BLOCK_N)
        b_out = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
        b_out = _product(b_out, p_a, p_w, offs_n * stride_wn, offs_n < N, stride_wk, offs_b, B, K, BLOCK_K,
                         INPUT_PRECISION, UPCAST_DOT, SPLIT_BELOW_K)
        tl.store(p_out + o_bn, b_out.to(p_out.dtype.element_ty), mask=mask)


@triton.jit
def _x_chain(x, xs, t, slot, J: tl.constexpr, stride_x, T_BUF):
    """Pointer to ``x⁽ᴶ⁾`` of step ``t``: ``J`` odd, or ``-1`` for the input ``x_t``."""
    if J < 0:
        p = x + t * stride_x
    else:
        p = xs + ((J // 2) * T_BUF + slot) * stride_x
    return p


@triton.jit
def _h_chain(hs, enter, slot, J: tl.constexpr, stride_h, T_BUF):
    """Pointer to ``h⁽ᴶ⁾``, ``J`` even; ``h⁽⁰⁾ = h_{t-1}`` is the state, at slot ``enter``."""
    if J == 0:
        p = hs + enter * stride_h
    else:
        p = hs + ((J // 2) * T_BUF + slot) * stride_h
    return p


@triton.jit
def _round_bias(q_bias, r_bias, J: tl.constexpr, offs_n, I, H):
    """Round ``J``'s bias on a feature tile, ``(1, BLOCK_N)`` float32."""
    if J % 2 == 1:
        b = tl.load(q_bias + (J // 2) * I + offs_n, mask=offs_n < I, other=0.0)
    else:
        b = tl.load(r_bias + (J // 2 - 1) * H + offs_n, mask=offs_n < H, other=0.0)
    return b.to(tl.float32)[None, :]


@triton.jit
def _round_gates(s_x, s_h, J: tl.constexpr, t, T, stride_x, stride_h):
    """Pointer to round ``J``'s saved gates ``s_J`` of step ``t``."""
    if J % 2 == 1:
        p = s_x + ((J // 2) * T + t) * stride_x
    else:
        p = s_h + ((J // 2 - 1) * T + t) * stride_h
    return p


@triton.jit
def _undo_round(g, J: tl.constexpr, t, slot, enter, offs_b, offs_n, mask, x, xs, hs, s_x, s_h, da_x, da_h,
                T, I, H, stride_x, stride_h, T_BUF):
    """Elementwise backward of round ``J`` on a tile of ``g`` (``g_x`` for odd ``J``, ``g_h``
    for even): stores ``da = g ⊙ 2·chain⁽ᴶ⁻²⁾ ⊙ s_J(1 - s_J)`` and returns ``g ⊙ 2s_J``."""
    if J % 2 == 1:
        N = I
        p_gated = _x_chain(x, xs, t, slot, J - 2, stride_x, T_BUF)
    else:
        N = H
        p_gated = _h_chain(hs, enter, slot, J - 2, stride_h, T_BUF)
    o_bn = offs_b[:, None] * N + offs_n[None, :]
    p_da = _round_gates(da_x, da_h, J, t, T, stride_x, stride_h)
    b_s = tl.load(_round_gates(s_x, s_h, J, t, T, stride_x, stride_h) + o_bn, mask=mask, other=0.0).to(tl.float32)
    b_gated = tl.load(p_gated + o_bn, mask=mask, other=0.0).to(tl.float32)
    tl.store(p_da + o_bn, (g * 2 * b_gated * b_s * (1 - b_s)).to(p_da.dtype.element_ty), mask=mask)
    return g * 2 * b_s


# --------------------------------------------------------------------------- kernels


@triton.heuristics({
    "HAS_LENGTHS": lambda args: args["lengths"] is not None,
    "HAS_BIAS": lambda args: args["bias"] is not None,
    "HAS_ROUND_BIAS": lambda args: args["q_bias"] is not None,
    "SAVE": lambda args: args["gates"] is not None,
})
@triton.jit(do_not_specialize=["T"])
def _mogrifier_fwd_kernel(
    x, lengths, w_ih, w_hh, bias, w_round, q_bias, r_bias,
    out, hs, xs, cs, s_x, s_h, gates, thin, counter,
    T, B, I, H, T_BUF, RANK, stride_w,
    ROUNDS: tl.constexpr, LOW_RANK: tl.constexpr, REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_ROUND_BIAS: tl.constexpr, SAVE: tl.constexpr, BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, INPUT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
    SPLIT_BELOW_K: tl.constexpr,
):
    """Forward sweep. ``w_round`` holds round ``j``'s matrix or factors at ``(j - 1)·stride_w``
    (:func:`_round_tensors`); bit ``j - 1`` of ``LOW_RANK`` says round ``j`` is low rank.
    Buffers in :func:`buffer_dtype` but ``cs`` (float32) (``T_BUF = T + 1`` when saving
    for the backward, else 2):

    - ``hs (r_h + 1, T_BUF, B, H)``: slot 0 is the state ``h`` (entering step ``t`` at
      ``t + REVERSE``, leaving at ``t + 1 - REVERSE``), slot ``k`` is ``h⁽²ᵏ⁾`` of step ``t``;
    - ``xs (r_x, T_BUF, B, I)``: slot ``k`` is ``x⁽²ᵏ⁺¹⁾``; ``cs (T_BUF, B, H)`` the state ``c``
      (indexed like ``hs`` slot 0);
    - ``thin (r, T_BUF, B, RANK)``: round ``j``'s ``v rightᵀ`` when it is low rank (``None``
      when no round is);
    - when ``SAVE``: ``s_x (r_x, T, B, I)``, ``s_h (r_h, T, B, H)`` the round gates ``s_j``
      and ``gates (T, B, 4H)`` the LSTM gates ``i, f, g, o``.
    """
    i_p = tl.program_id(0)
    n_programs = tl.num_programs(0)
    SAVED = hs.dtype.element_ty
    stride_x, stride_h, stride_thin, stride_w = _step_strides(B, I, H, RANK, stride_w)
    n_b = tl.cdiv(B, BLOCK_B)
    phase = 0
    for step in range(T):
        t = T - 1 - step if REVERSE else step
        slot = t % T_BUF
        enter = (t + REVERSE) % T_BUF
        leave = (t + 1 - REVERSE) % T_BUF
        # Rounds: odd j gates x by h (I tiles), even j gates h by x (H tiles).
        for j in tl.static_range(1, ROUNDS + 1):
            if j % 2 == 1:
                p_in = _h_chain(hs, enter, slot, j - 1, stride_h, T_BUF)
                p_gated = _x_chain(x, xs, t, slot, j - 2, stride_x, T_BUF)
                p_new = _x_chain(x, xs, t, slot, j, stride_x, T_BUF)
                N, K = I, H
            else:
                p_in = _x_chain(x, xs, t, slot, j - 1, stride_x, T_BUF)
                p_gated = _h_chain(hs, enter, slot, j - 2, stride_h, T_BUF)
                p_new = _h_chain(hs, enter, slot, j, stride_h, T_BUF)
                N, K = H, I
            p_w = w_round + (j - 1) * stride_w
            if (LOW_RANK >> (j - 1)) & 1:
                # v rightᵀ (B, RANK) first, in a phase of its own: every gate tile needs all of it.
                p_thin = thin + ((j - 1) * T_BUF + slot) * stride_thin
                _product_phase(p_thin, p_in, p_w + N * RANK, K, 1, B, RANK, K, i_p, n_programs, BLOCK_B, BLOCK_N,
                               BLOCK_K, INPUT_PRECISION, UPCAST_DOT, SPLIT_BELOW_K)
                phase += 1
                grid_barrier(counter, phase * n_programs)
                p_in, K = p_thin, RANK  # the gate's product is then (v rightᵀ) leftᵀ
            for tile in range(i_p, n_b * tl.cdiv(N, BLOCK_N), n_programs):
                offs_b, offs_n, o_bn, mask = _tile(tile, B, N, BLOCK_B, BLOCK_N)
                b_a = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
                b_a = _product(b_a, p_in, p_w, offs_n * K, offs_n < N, 1, offs_b, B, K, BLOCK_K, INPUT_PRECISION,
                               UPCAST_DOT, SPLIT_BELOW_K)
                if HAS_ROUND_BIAS:
                    b_a += _round_bias(q_bias, r_bias, j, offs_n, I, H)
                b_s = sigmoid(b_a)
                b_gated = tl.load(p_gated + o_bn, mask=mask, other=0.0, cache_modifier=".cg").to(tl.float32)
                tl.store(p_new + o_bn, (2 * b_s * b_gated).to(p_new.dtype.element_ty), mask=mask)
                if SAVE:
                    p_s = _round_gates(s_x, s_h, j, t, T, stride_x, stride_h)
                    tl.store(p_s + o_bn, b_s.to(p_s.dtype.element_ty), mask=mask)
            phase += 1
            grid_barrier(counter, phase * n_programs)
        # The LSTM step on the last x and h, per (batch, BLOCK_N / 4 units) tile: one product over
        # [x | h] gives all four gates of the tile's units (column 4u + gate, rows gate·H + unit).
        p_x = _x_chain(x, xs, t, slot, 2 * ((ROUNDS + 1) // 2) - 1, stride_x, T_BUF)
        p_h = _h_chain(hs, enter, slot, 2 * (ROUNDS // 2), stride_h, T_BUF)
        o_c = tl.arange(0, BLOCK_N)
        for tile in range(i_p, n_b * tl.cdiv(H, BLOCK_N // 4), n_programs):
            offs_b, offs_n, o_bn, mask = _tile(tile, B, H, BLOCK_B, BLOCK_N // 4)
            unit = (tile % tl.cdiv(H, BLOCK_N // 4)) * (BLOCK_N // 4) + o_c // 4
            o_w, m_w = (o_c % 4) * H + unit, unit < H
            z = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
            z = _product(z, p_x, w_ih, o_w * I, m_w, 1, offs_b, B, I, BLOCK_K, INPUT_PRECISION, UPCAST_DOT,
                         SPLIT_BELOW_K)
            z = _product(z, p_h, w_hh, o_w * H, m_w, 1, offs_b, B, H, BLOCK_K, INPUT_PRECISION, UPCAST_DOT,
                         SPLIT_BELOW_K)
            if HAS_BIAS:
                z += tl.load(bias + o_w, mask=m_w, other=0.0)[None, :]
            z_i, z_f, z_g, z_o = split_gates(z, BLOCK_B, BLOCK_N // 4)
            b_i, b_f, b_g, b_o = sigmoid(z_i), sigmoid(z_f), tanh(z_g), sigmoid(z_o)
            b_c_prev = tl.load(cs + enter * stride_h + o_bn, mask=mask, other=0.0)
            b_h_prev = tl.load(hs + enter * stride_h + o_bn, mask=mask, other=0.0, cache_modifier=".cg").to(tl.float32)
            b_c = b_f * b_c_prev + b_i * b_g
            b_h = b_o * tanh(b_c)
            # SPEC §5: a row past its length keeps its state and outputs zero.
            active = _active(lengths, t, offs_b, B, HAS_LENGTHS)
            tl.store(cs + leave * stride_h + o_bn, tl.where(active, b_c, b_c_prev), mask=mask)
            tl.store(hs + leave * stride_h + o_bn, tl.where(active, b_h, b_h_prev).to(SAVED), mask=mask)
            tl.store(out + t * stride_h + o_bn, tl.where(active, b_h, 0.0).to(out.dtype.element_ty), mask=mask)
            if SAVE:
                p_gates = gates + t * 4 * stride_h + offs_b[:, None] * 4 * H + offs_n[None, :]
                tl.store(p_gates, b_i.to(SAVED), mask=mask)
                tl.store(p_gates + H, b_f.to(SAVED), mask=mask)
                tl.store(p_gates + 2 * H, b_g.to(SAVED), mask=mask)
                tl.store(p_gates + 3 * H, b_o.to(SAVED), mask=mask)
        phase += 1
        grid_barrier(counter, phase * n_programs)


@triton.heuristics({"HAS_LENGTHS": lambda args: args["lengths"] is not None})
@triton.jit(do_not_specialize=["T"])
def _mogrifier_bwd_kernel(
    x, lengths, w_ih, w_hh, w_round, d_out, hs, xs, cs, s_x, s_h, gates,
    dz, da_x, da_h, d_thin, g_x, g_h, d_h, d_c, d_x, counter,
    T, B, I, H, T_BUF, RANK, stride_w,
    ROUNDS: tl.constexpr, LOW_RANK: tl.constexpr, REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr, SPLIT_BELOW_K: tl.constexpr,
):
    """Backward sweep over the forward's saved buffers (``T_BUF = T + 1``).

    Float32 ``d_h, d_c (B, H)`` carry ``∂L/∂h``, ``∂L/∂c`` from step to step (in: those of
    ``h_n, c_n``; out: those of ``h_0, c_0``); ``g_x (B, I)``, ``g_h (B, H)`` hold the
    gradients w.r.t. the current round's ``x`` and ``h`` between phases. Writes, in
    :func:`buffer_dtype`, ``dz (T, B, 4H)``, ``da_x (r_x, T, B, I)``, ``da_h (r_h, T, B, H)``
    and, for the low-rank rounds, ``d_thin (r, T, B, RANK)`` holding ``da_j left`` for the
    weight gradients; and ``d_x (T, B, I)``. Rounds as in the forward.
    """
    i_p = tl.program_id(0)
    n_programs = tl.num_programs(0)
    GRAD = dz.dtype.element_ty
    stride_x, stride_h, stride_thin, stride_w = _step_strides(B, I, H, RANK, stride_w)
    n_b = tl.cdiv(B, BLOCK_B)
    n_tiles_h = n_b * tl.cdiv(H, BLOCK_N)
    n_tiles_i = n_b * tl.cdiv(I, BLOCK_N)
    phase = 0
    for step in range(T):
        t = step if REVERSE else T - 1 - step
        slot = t % T_BUF
        enter = (t + REVERSE) % T_BUF
        leave = (t + 1 - REVERSE) % T_BUF
        # The LSTM step's backward (SPEC §2), per (batch, H) tile.
        for tile in range(i_p, n_tiles_h, n_programs):
            offs_b, offs_n, o_bn, mask = _tile(tile, B, H, BLOCK_B, BLOCK_N)
            active = _active(lengths, t, offs_b, B, HAS_LENGTHS)
            b_dout = tl.load(d_out + t * stride_h + o_bn, mask=mask, other=0.0).to(tl.float32)
            b_dh = tl.load(d_h + o_bn, mask=mask, other=0.0) + tl.where(active, b_dout, 0.0)
            b_dc = tl.load(d_c + o_bn, mask=mask, other=0.0)
            p_gates = gates + t * 4 * stride_h + offs_b[:, None] * 4 * H + offs_n[None, :]
            b_i = tl.load(p_gates, mask=mask, other=0.0).to(tl.float32)
            b_f = tl.load(p_gates + H, mask=mask, other=0.0).to(tl.float32)
            b_g = tl.load(p_gates + 2 * H, mask=mask, other=0.0).to(tl.float32)
            b_o = tl.load(p_gates + 3 * H, mask=mask, other=0.0).to(tl.float32)
            b_c_prev = tl.load(cs + enter * stride_h + o_bn, mask=mask, other=0.0)
            b_tanh_c = tanh(tl.load(cs + leave * stride_h + o_bn, mask=mask, other=0.0))
            b_dc_hat = b_dc + b_dh * b_o * (1 - b_tanh_c * b_tanh_c)
            p_dz = dz + t * 4 * stride_h + offs_b[:, None] * 4 * H + offs_n[None, :]
            tl.store(p_dz, tl.where(active, b_dc_hat * b_g * b_i * (1 - b_i), 0.0).to(GRAD), mask=mask)
            tl.store(p_dz + H, tl.where(active, b_dc_hat * b_c_prev * b_f * (1 - b_f), 0.0).to(GRAD), mask=mask)
            tl.store(p_dz + 2 * H, tl.where(active, b_dc_hat * b_i * (1 - b_g * b_g), 0.0).to(GRAD), mask=mask)
            tl.store(p_dz + 3 * H, tl.where(active, b_dh * b_tanh_c * b_o * (1 - b_o), 0.0).to(GRAD), mask=mask)
            # A row past its length passes its gradients through; an active row gets its
            # recurrent ∂L/∂h_{t-1} added by the last phase of this step.
            tl.store(d_c + o_bn, tl.where(active, b_dc_hat * b_f, b_dc), mask=mask)
            tl.store(d_h + o_bn, tl.where(active, 0.0, b_dh), mask=mask)
        phase += 1
        grid_barrier(counter, phase * n_programs)
        # g_x = dz W_ih and g_h = dz W_hh, then the elementwise part of round r. The H tiles are
        # dealt as in the LSTM backward (whose d_h they may add to), the I tiles after them, so
        # that the two products spread over n_tiles_h + n_tiles_i programs instead of sharing them.
        p_dz = dz + t * 4 * stride_h
        for tile in range((i_p + n_programs - n_tiles_h % n_programs) % n_programs, n_tiles_i, n_programs):
            offs_b, offs_n, o_bn, mask = _tile(tile, B, I, BLOCK_B, BLOCK_N)
            b_g = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
            b_g = _product(b_g, p_dz, w_ih, offs_n, offs_n < I, I, offs_b, B, 4 * H, BLOCK_K, INPUT_PRECISION,
                           UPCAST_DOT, SPLIT_BELOW_K)
            if ROUNDS % 2 == 1:
                b_g = _undo_round(b_g, ROUNDS, t, slot, enter, offs_b, offs_n, mask, x, xs, hs, s_x, s_h, da_x, da_h,
                                  T, I, H, stride_x, stride_h, T_BUF)
            if ROUNDS <= 1:
                tl.store(d_x + t * stride_x + o_bn, b_g.to(d_x.dtype.element_ty), mask=mask)
            else:
                tl.store(g_x + o_bn, b_g, mask=mask)
        for tile in range(i_p, n_tiles_h, n_programs):
            offs_b, offs_n, o_bn, mask = _tile(tile, B, H, BLOCK_B, BLOCK_N)
            b_g = tl.zeros((BLOCK_B, BLOCK_N), tl.float32)
            b_g = _product(b_g, p_dz, w_hh, offs_n, offs_n < H, H, offs_b, B, 4 * H, BLOCK_K, INPUT_PRECISION,
                           UPCAST_DOT, SPLIT_BELOW_K)
            if ROUNDS >= 2 and ROUNDS % 2 == 0:
                b_g = _undo_round(b_g, ROUNDS, t, slot, enter, offs_b, offs_n, mask, x, xs, hs, s_x, s_h, da_x, da_h,
                                  T, I, H, stride_x, stride_h, T_BUF)
            if ROUNDS == 0:
                tl.store(d_h + o_bn, tl.load(d_h + o_bn, mask=mask, other=0.0) + b_g, mask=mask)
            else:
                tl.store(g_h + o_bn, b_g, mask=mask)
        # Rounds j = r..1: round j's product, then round j-1's elementwise part.
        for j in tl.static_range(ROUNDS, 0, -1):
            phase += 1
            grid_barrier(counter, phase * n_programs)
            if j % 2 == 0:
                p_da, M = da_h + ((j // 2 - 1) * T + t) * stride_h, H
            else:
                p_da, M = da_x + ((j // 2) * T + t) * stride_x, I
            p_w, K = w_round + (j - 1) * stride_w, M
            if (LOW_RANK >> (j - 1)) & 1:
                # da_j left (B, RANK) first, in a phase of its own: every tile below needs all of it.
                p_thin = d_thin + ((j - 1) * T + t) * stride_thin
                _product_phase(p_thin, p_da, p_w, 1, RANK, B, RANK, M, i_p, n_programs, BLOCK_B, BLOCK_N, BLOCK_K,
                               INPUT_PRECISION, UPCAST_DOT, SPLIT_BELOW_K)
                phase += 1
                grid_barrier(counter, phase * n_programs)
                p_da, p_w, K = p_thin, p_w + M * RANK, RANK  # the product below is then (da_j left) right
            if j % 2 == 0:  # g_x += da_j R_j
                for tile in range(i_p, n_tiles_i, n_programs):
                    offs_b, offs_n, o_bn, mask = _tile(tile, B, I, BLOCK_B, BLOCK_N)
                    b_g = tl.load(g_x + o_bn, mask=mask, other=0.0)
                    b_g = _product(b_g, p_da, p_w, offs_n, offs_n < I, I, offs_b, B, K, BLOCK_K, INPUT_PRECISION,
                                   UPCAST_DOT, SPLIT_BELOW_K)
                    b_g = _undo_round(b_g, j - 1, t, slot, enter, offs_b, offs_n, mask, x, xs, hs, s_x, s_h, da_x,
                                      da_h, T, I, H, stride_x, stride_h, T_BUF)
                    if j == 2:
                        tl.store(d_x + t * stride_x + o_bn, b_g.to(d_x.dtype.element_ty), mask=mask)
                    else:
                        tl.store(g_x + o_bn, b_g, mask=mask)
            else:  # g_h += da_j Q_j
                for tile in range(i_p, n_tiles_h, n_programs):
                    offs_b, offs_n, o_bn, mask = _tile(tile, B, H, BLOCK_B, BLOCK_N)
                    b_g = tl.load(g_h + o_bn, mask=mask, other=0.0)
                    b_g = _product(b_g, p_da, p_w, offs_n, offs_n < H, H, offs_b, B, K, BLOCK_K, INPUT_PRECISION,
                                   UPCAST_DOT, SPLIT_BELOW_K)
                    if j == 1:
                        tl.store(d_h + o_bn, tl.load(d_h + o_bn, mask=mask, other=0.0) + b_g, mask=mask)
                    else:
                        b_g = _undo_round(b_g, j - 1, t, slot, enter, offs_b, offs_n, mask, x, xs, hs, s_x, s_h,
                                          da_x, da_h, T, I, H, stride_x, stride_h, T_BUF)
                        tl.store(g_h + o_bn, b_g, mask=mask)
        # The next step's LSTM backward reads d_h tiles this program wrote itself.
        tl.debug_barrier()


# --------------------------------------------------------------------------- launch layout


@dataclass(frozen=True)
class MogrifierConfig:
    """How a sweep is split: ``programs`` programs deal out ``(block_b, block_n)`` tiles
    of every phase; products run over ``block_k`` columns at a time."""

    programs: int
    block_b: int
    block_n: int
    block_k: int
    num_warps: int = 4

    def constexprs(self):
        return {"BLOCK_B": self.block_b, "BLOCK_N": self.block_n, "BLOCK_K": self.block_k}

    def launch_options(self):
        # With more than one program the whole grid must be resident at once, or the
        # barrier could wait forever for a program that is not scheduled. A program has its
        # SM to itself, and `maxnreg` says so: without it ptxas aims at several per SM and caps
        # a thread at 72 to 128 registers, which spills in the time loop (B ≤ 16 in float16 and
        # float32, sm_90, Triton 3.6 to 3.9; tests/test_triton_resources.py).
        return {"num_warps": self.num_warps, "maxnreg": layout.thread_registers(self.num_warps),
                "launch_cooperative_grid": self.programs > 1, "enable_fp_fusion": layout.FP_FUSION}


#: Tile layout on a GPU: at most 64 batch rows, 32 feature columns (8 units of the LSTM
#: step), 32-column reduction chunks, 8 warps. Not timed on a GPU yet. Compiled for sm_90 as
#: launched (r = 5), it spills nothing in a loop (tests/test_triton_resources.py); 64-column
#: chunks spill nothing at 64 rows either (fewer, wider loads: a candidate for the first GPU run).
GPU_BLOCK_B, GPU_BLOCK_N, GPU_BLOCK_K, GPU_NUM_WARPS = 64, 32, 32, 8


def layout_for(sweep: Sweep) -> layout.Layout:
    """One program for everything on the interpreter (programs run one after another);
    on a GPU as many programs as the widest phase has tiles, at most one per SM, or no
    config when the kernels of that layout would not fit an SM or do not compile (the
    backend then declines, so that a grid barrier never waits for a program that is
    not resident)."""
    _, low_rank, _ = split_round_weights(sweep.mogrify_weights)
    return _layout(sweep.batch_size, sweep.input_size, sweep.hidden_size, low_rank, sweep.dtype, sweep.device)


def config_for(batch_size: int, input_size: int, hidden_size: int, low_rank, dtype: torch.dtype,
               device: torch.device) -> Optional[MogrifierConfig]:
    """The layout a sweep of these sizes launches with, ``low_rank`` saying which rounds are
    (see :func:`layout_for`): the operators find it again from their arguments."""
    return _layout(batch_size, input_size, hidden_size, low_rank, dtype, device).config


# torch.compile calls it when it traces the backend's choice, rather than tracing into it
# (on a GPU it compiles the kernels); the operators call it when they run.
@torch.compiler.assume_constant_result
def _layout(batch_size, input_size, hidden_size, low_rank, dtype, device):
    features = max(input_size, hidden_size)
    if device.type != "cuda":
        # The interpreter's cost is per operation, not per element: whole-width products.
        return layout.Layout(MogrifierConfig(1, common.next_power_of_2(batch_size), common.next_power_of_2(features),
                                             common.next_power_of_2(max(features, 4 * hidden_size))))
    device_index = device.index if device.index is not None else torch.cuda.current_device()
    return _launchable_layout(batch_size, input_size, hidden_size, len(low_rank), low_rank_mask(low_rank), dtype,
                              device_index)


def split_below_k(weights) -> int:
    """The kernels' ``SPLIT_BELOW_K`` for a call with these rounds (full-rank matrices and
    ``(left, right)`` pairs): :data:`SPLIT_BELOW_K`, unless a round of a rank under it is padded
    to a larger one (:func:`_round_tensors`, mixed ranks): its products then sum fewer terms
    than their ``K`` says, so every product keeps ``hi + lo``."""
    ranks = [weight[0].shape[1] for weight in weights if isinstance(weight, tuple)]  # SymInts in a fake call: no set
    mixed = any(rank != ranks[0] for rank in ranks)
    return SPLIT_EVERY if mixed and min(ranks) < SPLIT_BELOW_K else SPLIT_BELOW_K


def buffer_dtype(dtype: torch.dtype, split_below: int, *terms: int) -> torch.dtype:
    """The dtype of every buffer the sweeps keep but ``cs``: the forward's chains, round and LSTM
    gates, and the backward's ``dz``, round gradients and low-rank intermediates, given the call's
    :func:`split_below_k` and the lengths of the sums that read them: ``I``, ``H``, the ``T·B``
    rows and, with low-rank rounds, the rank. Products read them (in the sweeps, and the weight
    gradients after them), and a product over at least ``split_below`` terms rounds its operands
    to ``dtype`` anyway; a shorter bfloat16 one splits them, which needs float32. The bias
    gradients, sums over the rows, add rounded terms: fewer than ``split_below`` rows keep float32
    too (bfloat16 took the worst round-bias gradient from 1.0e-2 to 1.5e-2 there, with the
    interpreter truncating). Rounded as a GPU rounds, bfloat16 buffers in place of float32 ones
    took the worst error from 6.1e-3 to 1.4e-2 at ``I = H = 16`` and to at most 8.3e-3 at 32 and
    64 (SPEC §6.1), against 2e-2."""
    if dtype == torch.bfloat16 and min(terms) < split_below:
        return torch.float32
    return dtype


def _summed_terms(seq_len, batch_size, input_size, hidden_size, rank):
    """The lengths of the sums that read a call's buffers (:func:`buffer_dtype`); ``rank`` 0 for full rank."""
    return (input_size, hidden_size, seq_len * batch_size) + ((rank,) if rank else ())


def low_rank_mask(low_rank) -> int:
    """The kernels' ``LOW_RANK``: bit ``j - 1`` set where round ``j`` is low rank."""
    return sum(1 << j for j, factored in enumerate(low_rank) if factored)


def gpu_config(batch_size: int, input_size: int, hidden_size: int, multiprocessors: int, block_n: int = GPU_BLOCK_N,
               block_k: int = GPU_BLOCK_K, num_warps: int = GPU_NUM_WARPS) -> MogrifierConfig:
    """The GPU layout with these tiles: as many programs as the widest phase has tiles, at
    most one per SM (``bench/layouts.py`` times other tiles than the defaults)."""
    block_b = min(common.next_power_of_2(batch_size), GPU_BLOCK_B)
    # The widest phase: a round's I or H columns, or the LSTM step's 4H (4 gates of BLOCK_N / 4 units a tile).
    tiles = triton.cdiv(batch_size, block_b) * triton.cdiv(max(input_size, 4 * hidden_size), block_n)
    return MogrifierConfig(min(tiles, multiprocessors), block_b, block_n, block_k, num_warps)


@functools.lru_cache(maxsize=None)
def _launchable_layout(batch_size, input_size, hidden_size, rounds, low_rank, dtype, device_index):
    config = gpu_config(batch_size, input_size, hidden_size, layout.multiprocessor_count(device_index))
    with torch.cuda.device(device_index):
        return layout.first_launchable(
            [config], functools.partial(_compile, batch_size, input_size, hidden_size, rounds, low_rank, dtype))


def _compile(batch_size, input_size, hidden_size, rounds, low_rank, dtype, config):
    """Compiles (without launching) both kernels with every optional input, as a call
    that saves for the backward would launch them (over at least 16 rows, full rank or of rank
    16 or more: otherwise the launch compiles its :func:`buffer_dtype` variant itself)."""
    f32, i32, i64 = torch.float32, torch.int32, torch.int64
    kept = buffer_dtype(dtype, SPLIT_BELOW_K, input_size, hidden_size, 16)
    x_rounds, h_rounds = (dtype if (rounds + 1) // 2 else None), (dtype if rounds // 2 else None)
    x_buffers, h_buffers = (kept if x_rounds else None), (kept if h_rounds else None)
    w_round, thin = (dtype if rounds else None), (kept if low_rank else None)
    sizes = (2, batch_size, input_size, hidden_size, 3, 16, input_size * hidden_size)  # ..., T_BUF, RANK, stride_w
    launch = dict(grid=(config.programs,), ROUNDS=rounds, LOW_RANK=low_rank, REVERSE=False,
                  SPLIT_BELOW_K=SPLIT_BELOW_K, **config.constexprs(), **config.launch_options(),
                  **common.dot_options(dtype))
    forward = _mogrifier_fwd_kernel.warmup(
        dtype, i64, dtype, dtype, f32, w_round, x_rounds, h_rounds,
        dtype, kept, x_buffers, f32, x_buffers, h_buffers, kept, thin, i32, *sizes, **launch)
    backward = _mogrifier_bwd_kernel.warmup(
        dtype, i64, dtype, dtype, w_round, dtype, kept, x_buffers, f32, x_buffers, h_buffers, kept,
        kept, x_buffers, h_buffers, thin, f32, f32, f32, f32, dtype, i32, *sizes, **launch)
    return forward, backward


# --------------------------------------------------------------------------- host functions


def _buffer(*shape, dtype, device):
    """A buffer, or ``None`` when it would be empty (no rounds of that kind)."""
    return torch.empty(shape, dtype=dtype, device=device) if all(shape) else None


def _chain_x(x, xs, j, seq_len):
    """``x⁽ʲ⁾`` of every step, ``(T, B, I)`` in time order; ``j = -1`` is the input."""
    return x if j < 0 else xs[j // 2, :seq_len]


def _chain_h(hs, j, seq_len, reverse):
    """``h⁽ʲ⁾`` of every step, ``(T, B, H)`` in time order; ``j = 0`` is ``h_{t-1}``."""
    if j == 0:
        return hs[0, int(reverse):int(reverse) + seq_len]
    return hs[j // 2, :seq_len]


def _round_tensors(weights, biases):
    """The rounds as the kernels read them: ``w_round (r, stride_w)`` in the weights' dtype,
    row ``j - 1`` holding round ``j``'s matrix ``(m, n)`` row-major, or for a low-rank round its
    left factor ``(m, RANK)`` then its right factor ``(RANK, n)``; ``RANK`` the largest rank,
    to which every low-rank round is padded with zeros (exact: they add nothing to either
    product); ``q_bias (r_x, I)``, ``r_bias (r_h, H)`` (``None`` where there are none).

    Returns ``w_round, RANK, q_bias, r_bias``.
    """
    def stack(tensors):
        return torch.stack(tensors) if tensors else None

    rank = max((weight[0].shape[1] for weight in weights if isinstance(weight, tuple)), default=0)

    def flat(weight):
        if not isinstance(weight, tuple):
            return weight.reshape(-1)
        left, right = weight
        pad = rank - left.shape[1]
        return torch.cat([F.pad(left, (0, pad)).reshape(-1), F.pad(right, (0, 0, 0, pad)).reshape(-1)])

    rows = [flat(weight) for weight in weights]
    stride_w = max((row.numel() for row in rows), default=0)
    w_round = stack([F.pad(row, (0, stride_w - row.numel())) for row in rows])
    q_bias = r_bias = None
    if biases is not None:
        q_bias, r_bias = stack(biases[0::2]), stack(biases[1::2])
    return w_round, rank, q_bias, r_bias


def _stride(w_round):
    """``stride_w``: elements per round in ``w_round``."""
    return 0 if w_round is None else w_round.stride(0)


def _row_product(grad, chain, dtype, split_below):
    """A weight gradient ``gradᵀ chain`` over all ``T·B`` rows of ``(T, B, M)``, ``(T, B, N)``.

    The product runs in ``dtype`` with float32 accumulation (SPEC §6); a bfloat16 one over
    fewer than ``split_below`` rows (:func:`split_below_k`) takes the float32 ``chain`` as
    ``hi + lo``, two bfloat16 products, as :func:`_product` does.
    """
    grad = grad.reshape(-1, grad.shape[-1]).to(dtype).t()
    chain = chain.reshape(-1, chain.shape[-1])
    chain_hi = chain.to(dtype)
    product = grad @ chain_hi
    if dtype == torch.bfloat16 and chain.shape[0] < split_below:
        product = product + grad @ (chain - chain_hi.float()).to(dtype)
    return product


def _forward_buffers(x, hidden_size, rounds, rank, split_below, save):
    """The buffers of a forward on ``x (T, B, I)``, ``hs, xs, cs, thin, s_x, s_h, gates`` (see
    :func:`_mogrifier_fwd_kernel`), ``None`` where there would be none (no rounds of a kind,
    no low-rank round, or not ``save``). Allocation only, so the fake forward shares it."""
    seq_len, batch_size, input_size = x.shape
    n_x, n_h = (rounds + 1) // 2, rounds // 2
    t_buf = seq_len + 1 if save else 2
    kept = seq_len if save else 0
    dtype = buffer_dtype(x.dtype, split_below, *_summed_terms(seq_len, batch_size, input_size, hidden_size, rank))
    buffer = functools.partial(_buffer, dtype=dtype, device=x.device)
    hs = buffer(n_h + 1, t_buf, batch_size, hidden_size)
    xs = buffer(n_x, t_buf, batch_size, input_size)
    thin = buffer(rounds, t_buf, batch_size, rank)
    if save:  # an operator's outputs are all written: zeros where no step writes (slot T, which
        # only the state uses, and the intermediates of full-rank rounds)
        hs[1:, seq_len].zero_()
        if xs is not None:
            xs[:, seq_len].zero_()
        if thin is not None:
            thin.zero_()
    cs = _buffer(t_buf, batch_size, hidden_size, dtype=torch.float32, device=x.device)
    return (hs, xs, cs, thin, buffer(n_x, kept, batch_size, input_size), buffer(n_h, kept, batch_size, hidden_size),
            buffer(kept, batch_size, 4 * hidden_size))


@input_guard
def mogrifier_fwd(x, h0, c0, weight_ih, weight_hh, bias, w_round, rank, q_bias, r_bias, lengths, *, reverse,
                  rounds, low_rank, split_below, save, config):
    """Launches the forward sweep.

    Args:
        x: ``(T, B, I)``; h0, c0: ``(B, H)``; weight_ih: ``(4H, I)``; weight_hh: ``(4H, H)``.
        bias: float32 ``b_ih + b_hh (4H,)`` or ``None``.
        w_round, rank, q_bias, r_bias: as from :func:`_round_tensors` (``rank`` 0 when no
            round is low rank).
        lengths: ``(B,)`` int64 or ``None``.
        low_rank: :func:`low_rank_mask` of the rounds; split_below: their :func:`split_below_k`.
        save: keep the buffers the backward reads.
    Returns:
        ``output (T, B, H), h_n, c_n (B, H)`` and the buffers of :func:`_forward_buffers`.
    """
    seq_len, batch_size, input_size = x.shape
    hidden_size = h0.shape[1]
    buffers = _forward_buffers(x, hidden_size, rounds, rank, split_below, save)
    hs, xs, cs, thin, s_x, s_h, gates = buffers
    t_buf = cs.shape[0]
    first, last = (seq_len, 0) if reverse else (0, seq_len)
    hs[0, first % t_buf], cs[first % t_buf] = h0, c0
    out = x.new_empty(seq_len, batch_size, hidden_size)
    _mogrifier_fwd_kernel[(config.programs,)](
        x, lengths, weight_ih, weight_hh, bias, w_round, q_bias, r_bias,
        out, hs, xs, cs, s_x, s_h, gates, thin, torch.zeros(1, dtype=torch.int32, device=x.device),
        seq_len, batch_size, input_size, hidden_size, t_buf, rank, _stride(w_round),
        ROUNDS=rounds, LOW_RANK=low_rank, REVERSE=reverse, SPLIT_BELOW_K=split_below,
        **common.dot_options(x.dtype), **config.constexprs(), **config.launch_options())
    # Copies: an operator's outputs must not share storage, and hs and cs are saved.
    h_n, c_n = hs[0, last % t_buf].to(x.dtype, copy=True), cs[last % t_buf].to(x.dtype, copy=True)
    return out, h_n, c_n, buffers


@input_guard
def mogrifier_bwd(x, lengths, weight_ih, weight_hh, w_round, rank, saved, d_out, d_h_n, d_c_n, *, reverse, rounds,
                  low_rank, split_below, config):
    """Launches the backward sweep, then forms the weight gradients over all ``T·B`` rows.

    ``saved``: the forward's buffers (:func:`_forward_buffers`); other arguments as in
    :func:`mogrifier_fwd`. Returns ``d_x, d_h0, d_c0, d_weight_ih,
    d_weight_hh``, ``d_bias (4H,)`` and the lists ``d_rounds`` (one per round: ``(I, H)`` or
    ``(H, I)``, or for a low-rank round the pair of its factors' gradients, padded to ``rank``)
    and ``d_round_biases``.
    """
    seq_len, batch_size, input_size = x.shape
    hidden_size = weight_hh.shape[1]
    n_x, n_h = (rounds + 1) // 2, rounds // 2
    hs, xs, cs, thin, s_x, s_h, gates = saved
    sums = _summed_terms(seq_len, batch_size, input_size, hidden_size, rank)
    grad_buffer = functools.partial(_buffer, dtype=buffer_dtype(x.dtype, split_below, *sums), device=x.device)
    float32 = functools.partial(_buffer, dtype=torch.float32, device=x.device)
    dz = grad_buffer(seq_len, batch_size, 4 * hidden_size)
    da_x = grad_buffer(n_x, seq_len, batch_size, input_size)
    da_h = grad_buffer(n_h, seq_len, batch_size, hidden_size)
    d_thin = grad_buffer(rounds, seq_len, batch_size, rank) if low_rank else None
    d_h = float32(batch_size, hidden_size).copy_(d_h_n)
    d_c = float32(batch_size, hidden_size).copy_(d_c_n)
    d_x = torch.empty_like(x)
    _mogrifier_bwd_kernel[(config.programs,)](
        x, lengths, weight_ih, weight_hh, w_round, d_out, hs, xs, cs, s_x, s_h, gates, dz, da_x, da_h, d_thin,
        float32(batch_size, input_size), float32(batch_size, hidden_size), d_h, d_c, d_x,
        torch.zeros(1, dtype=torch.int32, device=x.device),
        seq_len, batch_size, input_size, hidden_size, seq_len + 1, rank, _stride(w_round),
        ROUNDS=rounds, LOW_RANK=low_rank, REVERSE=reverse, SPLIT_BELOW_K=split_below,
        **common.dot_options(x.dtype), **config.constexprs(), **config.launch_options())

    row_product = functools.partial(_row_product, dtype=x.dtype, split_below=split_below)
    d_weight_ih = row_product(dz, _chain_x(x, xs, 2 * n_x - 1, seq_len))
    d_weight_hh = row_product(dz, _chain_h(hs, 2 * n_h, seq_len, reverse))
    d_rounds, d_round_biases = [], []
    for j in range(1, rounds + 1):
        if j % 2 == 1:
            da, read = da_x[j // 2], _chain_h(hs, j - 1, seq_len, reverse)
        else:
            da, read = da_h[j // 2 - 1], _chain_x(x, xs, j - 1, seq_len)
        if (low_rank >> (j - 1)) & 1:
            # ∂L/∂left = daᵀ (v rightᵀ), ∂L/∂right = (da left)ᵀ v, from the k-wide values the sweeps kept.
            d_rounds.append((row_product(da, thin[j - 1, :seq_len]), row_product(d_thin[j - 1], read)))
        else:
            d_rounds.append(row_product(da, read))
        d_round_biases.append(da.sum((0, 1), dtype=torch.float32).to(x.dtype))
    return (d_x, d_h.to(x.dtype), d_c.to(x.dtype), d_weight_ih, d_weight_hh,
            dz.sum((0, 1), dtype=torch.float32).to(x.dtype), d_rounds, d_round_biases)


# --------------------------------------------------------------------------- operators
# The rounds travel as :func:`fusedrnn.sweep.split_round_weights` gives them, as the C++
# operators take them.


@torch.library.custom_op(
    "fusedrnn::triton_mogrifier_forward", mutates_args=(),
    schema="(Tensor x, Tensor h0, Tensor c0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
           "Tensor[] mogrify_weights, bool[] mogrify_low_rank, Tensor[] mogrify_right_factors, "
           "Tensor[] mogrify_biases, Tensor? lengths, bool reverse, bool save) "
           "-> (Tensor output, Tensor h_n, Tensor c_n, Tensor[] saved)")
def _forward_op(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, mogrify_weights, mogrify_low_rank,
                mogrify_right_factors, mogrify_biases, lengths, reverse, save):
    """``mogrify_biases`` empty or one per round. Besides ``output, h_n, c_n`` returns ``saved``,
    the buffers the backward reads (:func:`_forward_buffers`), each empty, ``(0,)``, where there
    is none. Without ``save`` (no backward can follow, ``Sweep.needs_backward``) it keeps none,
    and the sweep two time slots instead of ``T + 1``."""
    checks.check_mogrifier_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, mogrify_weights,
                                   mogrify_low_rank, mogrify_right_factors, mogrify_biases, lengths, reverse,
                                   MAX_ROUNDS)
    with autocast_off(x):
        weights = join_round_weights(mogrify_weights, mogrify_low_rank, mogrify_right_factors)
        w_round, rank, q_bias, r_bias = _round_tensors(weights, mogrify_biases or None)
        out, h_n, c_n, buffers = mogrifier_fwd(
            x, h0, c0, weight_ih, weight_hh, summed_bias(bias_ih, bias_hh), w_round, rank, q_bias, r_bias, lengths,
            reverse=reverse, rounds=len(weights), low_rank=low_rank_mask(mogrify_low_rank),
            split_below=split_below_k(weights), save=save,
            config=config_for(x.shape[1], x.shape[2], weight_hh.shape[1], mogrify_low_rank, x.dtype, x.device))
    return out, h_n, c_n, [_or_empty(buffer if save else None, x) for buffer in buffers]


def _fake_forward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, mogrify_weights, mogrify_low_rank,
                  mogrify_right_factors, mogrify_biases, lengths, reverse, save):
    weights = join_round_weights(mogrify_weights, mogrify_low_rank, mogrify_right_factors)
    rank = max((right.shape[0] for right in mogrify_right_factors), default=0)
    buffers = _forward_buffers(x, weight_hh.shape[1], len(mogrify_weights), rank, split_below_k(weights), save)
    return (x.new_empty(x.shape[0], x.shape[1], weight_hh.shape[1]), torch.empty_like(h0), torch.empty_like(c0),
            [_or_empty(buffer if save else None, x) for buffer in buffers])


def _or_empty(tensor, like):
    """``tensor``, or for ``None`` an empty ``(0,)`` tensor (an operator returns no ``None``)."""
    return like.new_empty(0, dtype=torch.float32) if tensor is None else tensor


@torch.library.custom_op(
    "fusedrnn::triton_mogrifier_backward", mutates_args=(),
    schema="(Tensor d_out, Tensor d_h_n, Tensor d_c_n, Tensor x, Tensor weight_ih, Tensor weight_hh, "
           "Tensor[] mogrify_weights, bool[] mogrify_low_rank, Tensor[] mogrify_right_factors, Tensor? lengths, "
           "Tensor[] saved, bool reverse) -> (Tensor d_x, Tensor d_h0, Tensor d_c0, Tensor d_weight_ih, "
           "Tensor d_weight_hh, Tensor d_bias, Tensor[] d_mogrify_weights, Tensor[] d_mogrify_right_factors, "
           "Tensor[] d_mogrify_biases)")
def _backward_op(d_out, d_h_n, d_c_n, x, weight_ih, weight_hh, mogrify_weights, mogrify_low_rank,
                 mogrify_right_factors, lengths, saved, reverse):
    """The backward sweep and every weight gradient, the rounds' as the forward takes them
    (``d_bias`` is that of ``b_ih`` and of ``b_hh`` alike, ``d_mogrify_biases`` one per round)."""
    checks.check_mogrifier_backward(_fake_forward, d_out, d_h_n, d_c_n, x, weight_ih, weight_hh, mogrify_weights,
                                    mogrify_low_rank, mogrify_right_factors, lengths, saved, reverse, MAX_ROUNDS)
    with autocast_off(x):
        weights = join_round_weights(mogrify_weights, mogrify_low_rank, mogrify_right_factors)
        w_round, rank, _, _ = _round_tensors(weights, None)
        *grads, d_rounds, d_round_biases = mogrifier_bwd(
            x, lengths, weight_ih, weight_hh, w_round, rank, [buffer if buffer.numel() else None for buffer in saved],
            d_out, d_h_n, d_c_n, reverse=reverse, rounds=len(weights), low_rank=low_rank_mask(mogrify_low_rank),
            split_below=split_below_k(weights),
            config=config_for(x.shape[1], x.shape[2], weight_hh.shape[1], mogrify_low_rank, x.dtype, x.device))
    # A low-rank round's factors' gradients without the padding to the largest rank.
    d_rounds = [(d_round[0][:, :weight[0].shape[1]], d_round[1][:weight[0].shape[1]])
                if isinstance(weight, tuple) else d_round for weight, d_round in zip(weights, d_rounds)]
    d_weights, _, d_right_factors = split_round_weights(d_rounds)
    return (*grads, list(d_weights), list(d_right_factors), d_round_biases)


def _fake_backward(d_out, d_h_n, d_c_n, x, weight_ih, weight_hh, mogrify_weights, mogrify_low_rank,
                   mogrify_right_factors, lengths, saved, reverse):
    batch_size, hidden_size = x.shape[1], weight_hh.shape[1]
    return (torch.empty_like(x), x.new_empty(batch_size, hidden_size), x.new_empty(batch_size, hidden_size),
            x.new_empty(weight_ih.shape), x.new_empty(weight_hh.shape), x.new_empty(4 * hidden_size),
            [x.new_empty(weight.shape) for weight in mogrify_weights],
            [x.new_empty(right.shape) for right in mogrify_right_factors],
            [x.new_empty(weight.shape[0]) for weight in mogrify_weights])


# Behind a device check: a meta tensor among others reaches the fake, past the operator's checks.
_forward_op.register_fake(checking_devices("triton_mogrifier_forward", _fake_forward))
_backward_op.register_fake(checking_devices("triton_mogrifier_backward", _fake_backward))


def _setup_context(ctx, inputs, output):
    (x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, mogrify_weights, low_rank, right_factors, biases, lengths,
     reverse, _) = inputs
    saved = output[3]
    ctx.mark_non_differentiable(*saved)
    ctx.save_for_backward(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, *mogrify_weights,
                          *right_factors, *biases, *saved)
    ctx.low_rank, ctx.has_round_bias, ctx.reverse = tuple(low_rank), bool(biases), reverse


def _backward(ctx, d_out, d_h_n, d_c_n, *_):
    x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, *rest = ctx.saved_tensors
    weights, biases, saved = unflatten_rounds(rest, ctx.low_rank, ctx.has_round_bias)
    if torch.is_grad_enabled():  # create_graph: the gradient must be differentiable too
        def run(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, *round_tensors):
            weights, biases, _ = unflatten_rounds(round_tensors, ctx.low_rank, ctx.has_round_bias)
            return reference_mogrifier_lstm(x, weight_ih, weight_hh, bias_ih, bias_hh, h0, c0,
                                            mogrify_weights=weights, mogrify_biases=biases, lengths=lengths,
                                            reverse=ctx.reverse)

        round_tensors, _ = flatten_rounds(weights, biases)
        with autocast_off(x):
            grads = recomputed_gradients(run, [x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, *round_tensors],
                                         (d_out, d_h_n, d_c_n))
        d_rounds, d_round_biases, _ = unflatten_rounds(grads[7:], ctx.low_rank, ctx.has_round_bias)
        d_weights, _, d_right_factors = split_round_weights(d_rounds)
        grads = grads[:7]
    else:
        matrices, _, right_factors = split_round_weights(weights)
        *grads, d_bias, d_weights, d_right_factors, d_round_biases = call_validated(  # the forward's saved tensors
            torch.ops.fusedrnn.triton_mogrifier_backward, d_out, d_h_n, d_c_n, x, weight_ih, weight_hh, matrices,
            ctx.low_rank, right_factors, lengths, saved, ctx.reverse)
        # Two gradients must not share storage.
        grads += [None, None] if bias_ih is None else [d_bias, d_bias.clone()]
    # bool[] gets no gradient; but torch.library reads an empty list as an empty tensor list.
    no_grad_low_rank = None if ctx.low_rank else []
    return (*grads, list(d_weights), no_grad_low_rank, list(d_right_factors),
            list(d_round_biases) if ctx.has_round_bias else [], None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------- backend entry points


def unsupported(sweep: Sweep) -> Optional[str]:
    """Why the Mogrifier sweep cannot run ``sweep`` (device and dtype already checked), or ``None``."""
    if sweep.mogrify_steps > MAX_ROUNDS:
        return f"mogrify_steps = {sweep.mogrify_steps}: the Triton sweep unrolls at most {MAX_ROUNDS} rounds"
    chosen = layout_for(sweep)
    if chosen.config is None:
        return chosen.reason or "the Mogrifier kernels' layout does not fit one SM per program on this GPU"
    return None


def run(sweep: Sweep):
    """Runs a Mogrifier ``sweep``; returns ``output (T, B, H), h_n, c_n (B, H)``, differentiable."""
    matrices, low_rank, right_factors = split_round_weights(sweep.mogrify_weights)
    save = sweep.needs_backward
    output, h_n, c_n, _ = call_operator(
        torch.ops.fusedrnn.triton_mogrifier_forward, sweep.x, sweep.h0, sweep.c0, sweep.weight_ih, sweep.weight_hh,
        sweep.bias_ih, sweep.bias_hh, matrices, low_rank, right_factors, sweep.mogrify_biases or (), sweep.lengths,
        sweep.reverse, save, save=save)
    return output, h_n, c_n
