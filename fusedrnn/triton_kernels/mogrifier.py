"""Triton persistent Mogrifier LSTM (SPEC §3): forward and backward sweeps.

Shape letters as in :mod:`fusedrnn.sweep`; ``r`` is the number of rounds, ``r_x = ⌈r/2⌉``
odd rounds (they gate ``x``), ``r_h = ⌊r/2⌋`` even rounds (they gate ``h``).

Work split. ``x⁽ʲ⁾`` needs all of ``h⁽ʲ⁻¹⁾`` and the other way round, and the LSTM step
needs all of the last ``x`` and ``h``, so a step is ``r + 1`` phases that each need the
whole result of the one before. ``P`` programs split every phase into ``(batch tile,
feature tile)`` pairs, taken round-robin, and meet at one grid barrier after each phase:
``r + 1`` barriers per step, forward and backward, the fewest these dependencies allow
without recomputing a round in every program. Phase outputs are exchanged through the
buffers that are saved for the backward anyway (one slot per step and round), so no
buffer is written while another program may still read it. With ``P = 1`` (the CPU
interpreter) every barrier is passed at once, and the code path is the same.

Backward (SPEC §3): per step the LSTM backward gives ``dz``; the phases after it multiply
``dz`` by ``W_ih`` and ``W_hh`` and then undo the rounds ``j = r..1``, each phase doing
one round's product and the next round's elementwise part. The weight gradients are
products over all ``T·B`` rows after the sweep.

Low-rank rounds need nothing here: the functional layer passes ``Q_j = Q_jᴸ Q_jᴿ``
already multiplied out, and autograd carries the gradient back to the factors.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..sweep import Sweep

#: Rounds the kernels accept (the paper tunes ``r`` in 4..6).
MAX_ROUNDS = 8


# --------------------------------------------------------------------------- TEMPORARY (until common.py)
from dataclasses import dataclass
import os


@triton.jit
def _sigmoid(x):
    return 1 / (1 + tl.exp(-x))


@triton.jit
def _tanh(x):
    return 2 * _sigmoid(2 * x) - 1


@triton.jit
def _grid_sync(barrier, phase, n_programs):
    tl.debug_barrier()
    if n_programs > 1:
        tl.atomic_add(barrier, 1, sem="release")
        while tl.atomic_add(barrier, 0, sem="acquire") < phase * n_programs:
            pass
    tl.debug_barrier()


@dataclass(frozen=True)
class LaunchConfig:
    programs: int
    block_b: int
    block_n: int
    block_k: int
    num_warps: int
    acc_dtype: object
    dot_dtype: object
    dot_precision: str


def launch_config(x, batch_size, input_size, hidden_size):
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    tl_types = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32,
                torch.float64: tl.float64}
    dot = tl_types[x.dtype]
    if interpret and x.dtype == torch.bfloat16:
        dot = tl.float32
    acc = tl.float64 if x.dtype == torch.float64 else tl.float32
    precision = "tf32" if (x.dtype == torch.float32 and x.is_cuda and torch.backends.cudnn.allow_tf32) else "ieee"
    if interpret:
        return LaunchConfig(1, 16, 16, 32, 4, acc, dot, precision)
    block_b = min(64, triton.next_power_of_2(max(batch_size, 16)))
    tiles = triton.cdiv(batch_size, block_b) * triton.cdiv(max(input_size, hidden_size), 32)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    return LaunchConfig(min(sms, tiles), block_b, 32, 64, 4, acc, dot, precision)


# --------------------------------------------------------------------------- kernels


@triton.jit
def _tile(tile, N, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr):
    """Offsets of the ``tile``-th ``(batch, feature)`` tile, feature tiles fastest."""
    n_tiles = tl.cdiv(N, BLOCK_N)
    offs_b = (tile // n_tiles) * BLOCK_B + tl.arange(0, BLOCK_B)
    offs_n = (tile % n_tiles) * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_b, offs_n


@triton.jit
def _product(acc, p_a, p_w, stride_wn, stride_wk, offs_b, offs_n, B, N, K,
             BLOCK_K: tl.constexpr, DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """``acc += A[offs_b, :K] @ Wᵀ[:K, offs_n]``.

    ``A`` is a row-major ``(B, K)`` block written by other programs in this sweep (loaded
    through L2); ``W[n, k]`` lies at ``p_w + n·stride_wn + k·stride_wk``, so a weight and
    its transpose are read with the same code.
    """
    mask_b = offs_b[:, None] < B
    mask_n = offs_n[None, :] < N
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        b_a = tl.load(p_a + offs_b[:, None] * K + offs_k[None, :], mask=mask_b & (offs_k[None, :] < K),
                      other=0.0, cache_modifier=".cg")
        b_w = tl.load(p_w + offs_n[None, :] * stride_wn + offs_k[:, None] * stride_wk,
                      mask=mask_n & (offs_k[:, None] < K), other=0.0)
        acc = tl.dot(b_a.to(DOT_DTYPE), b_w.to(DOT_DTYPE), acc, input_precision=DOT_PRECISION)
    return acc


@triton.jit
def _round_gate(acc, p_bias, offs_n, N, HAS_ROUND_BIAS: tl.constexpr):
    """``s = σ(a)`` of a round from its product ``acc`` and optional bias."""
    if HAS_ROUND_BIAS:
        acc += tl.load(p_bias + offs_n, mask=offs_n < N, other=0.0).to(acc.dtype)[None, :]
    return _sigmoid(acc)


@triton.jit
def _x_chain(x, xs, t, slot, J: tl.constexpr, stride_x, T_BUF):
    """Pointer to ``x⁽ᴶ⁾`` of step ``t``, ``J`` odd or ``-1`` (the input ``x_t``)."""
    if J < 0:
        p = x + t * stride_x
    else:
        p = xs + ((J // 2) * T_BUF + slot) * stride_x
    return p


@triton.jit
def _h_chain(hs, enter, slot, J: tl.constexpr, stride_h, T_BUF):
    """Pointer to ``h⁽ᴶ⁾``, ``J`` even; ``h⁽⁰⁾ = h_{t-1}`` is the state slot ``enter``."""
    if J == 0:
        p = hs + enter * stride_h
    else:
        p = hs + ((J // 2) * T_BUF + slot) * stride_h
    return p


@triton.jit(do_not_specialize=["T"])
def mogrifier_fwd_kernel(
    x, lengths, w_ih, w_hh, bias, q, r, q_bias, r_bias,
    out, hs, xs, cs, s_x, s_h, gates, barrier,
    T, B, I, H, T_BUF, ROUNDS: tl.constexpr,
    REVERSE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_ROUND_BIAS: tl.constexpr, SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Forward sweep. Buffers (``T_BUF = T + 1`` when saving for the backward, else 2):

    - ``hs (r_h + 1, T_BUF, B, H)``: slot 0 is the state ``h`` (entering step ``t`` at
      ``t + REVERSE``, leaving at ``t + 1 - REVERSE``), slot ``k`` is ``h⁽²ᵏ⁾`` of step ``t``;
    - ``xs (r_x, T_BUF, B, I)``: slot ``k`` is ``x⁽²ᵏ⁺¹⁾``; ``cs (T_BUF, B, H)`` the state ``c``;
    - when ``SAVE``: ``s_x (r_x, T, B, I)``, ``s_h (r_h, T, B, H)`` the round gates and
      ``gates (T, B, 4H)`` the LSTM gates ``i, f, g, o``.
    """
    i_p = tl.program_id(0)
    n_programs = tl.num_programs(0)
    # Elements per step of a (B, I) or (B, H) buffer and per round matrix, in int64.
    stride_x = tl.cast(B, tl.int64) * I
    stride_h = tl.cast(B, tl.int64) * H
    stride_w = tl.cast(I, tl.int64) * H
    n_b = tl.cdiv(B, BLOCK_B)
    phase = 0
    for step in range(T):
        t = T - 1 - step if REVERSE else step
        slot = t % T_BUF
        enter = (t + REVERSE) % T_BUF
        leave = (t + 1 - REVERSE) % T_BUF
        # The rounds: odd j gates an I tile of x, even j an H tile of h.
        for j in tl.static_range(1, ROUNDS + 1):
            if j % 2 == 1:
                p_in = _h_chain(hs, enter, slot, j - 1, stride_h, T_BUF)
                p_gated = _x_chain(x, xs, t, slot, j - 2, stride_x, T_BUF)
                p_new = _x_chain(x, xs, t, slot, j, stride_x, T_BUF)
                p_s = s_x + ((j // 2) * T + t) * stride_x
                p_w, p_bias, N, K = q + (j // 2) * stride_w, q_bias + (j // 2) * I, I, H
            else:
                p_in = _x_chain(x, xs, t, slot, j - 1, stride_x, T_BUF)
                p_gated = _h_chain(hs, enter, slot, j - 2, stride_h, T_BUF)
                p_new = _h_chain(hs, enter, slot, j, stride_h, T_BUF)
                p_s = s_h + ((j // 2 - 1) * T + t) * stride_h
                p_w, p_bias, N, K = r + (j // 2 - 1) * stride_w, r_bias + (j // 2 - 1) * H, H, I
            for tile in range(i_p, n_b * tl.cdiv(N, BLOCK_N), n_programs):
                offs_b, offs_n = _tile(tile, N, BLOCK_B, BLOCK_N)
                o_bn = offs_b[:, None] * N + offs_n[None, :]
                mask = (offs_b[:, None] < B) & (offs_n[None, :] < N)
                acc = tl.zeros((BLOCK_B, BLOCK_N), ACC_DTYPE)
                acc = _product(acc, p_in, p_w, K, 1, offs_b, offs_n, B, N, K, BLOCK_K, DOT_DTYPE, DOT_PRECISION)
                b_s = _round_gate(acc, p_bias, offs_n, N, HAS_ROUND_BIAS)
                b_gated = tl.load(p_gated + o_bn, mask=mask, other=0.0, cache_modifier=".cg").to(ACC_DTYPE)
                tl.store(p_new + o_bn, (2 * b_s * b_gated).to(p_new.dtype.element_ty), mask=mask)
                if SAVE:
                    tl.store(p_s + o_bn, b_s.to(p_s.dtype.element_ty), mask=mask)
            phase += 1
            _grid_sync(barrier, phase, n_programs)
        # The LSTM step on the last x and h, per (batch, H) tile: c stays with its tile.
        p_x = _x_chain(x, xs, t, slot, 2 * ((ROUNDS + 1) // 2) - 1, stride_x, T_BUF)
        p_h = _h_chain(hs, enter, slot, 2 * (ROUNDS // 2), stride_h, T_BUF)
        for tile in range(i_p, n_b * tl.cdiv(H, BLOCK_N), n_programs):
            offs_b, offs_n = _tile(tile, H, BLOCK_B, BLOCK_N)
            o_bn = offs_b[:, None] * H + offs_n[None, :]
            mask = (offs_b[:, None] < B) & (offs_n[None, :] < H)
            z_i = tl.zeros((BLOCK_B, BLOCK_N), ACC_DTYPE)
            z_f = tl.zeros((BLOCK_B, BLOCK_N), ACC_DTYPE)
            z_g = tl.zeros((BLOCK_B, BLOCK_N), ACC_DTYPE)
            z_o = tl.zeros((BLOCK_B, BLOCK_N), ACC_DTYPE)
            z_i = _product(z_i, p_x, w_ih, I, 1, offs_b, offs_n, B, H, I, BLOCK_K, DOT_DTYPE, DOT_PRECISION)
            z_f = _product(z_f, p_x, w_ih + H * I, I, 1, offs_b, offs_n, B, H, I, BLOCK_K, DOT_DTYPE, DOT_PRECISION)
            z_g = _product(z_g, p_x, w_ih + 2 * H * I, I, 1, offs_b, offs_n, B, H, I, BLOCK_K, DOT_DTYPE,
                           DOT_PRECISION)
            z_o = _product(z_o, p_x, w_ih + 3 * H * I, I, 1, offs_b, offs_n, B, H, I, BLOCK_K, DOT_DTYPE,
                           DOT_PRECISION)
            z_i = _product(z_i, p_h, w_hh, H, 1, offs_b, offs_n, B, H, H, BLOCK_K, DOT_DTYPE, DOT_PRECISION)
            z_f = _product(z_f, p_h, w_hh + H * H, H, 1, offs_b, offs_n, B, H, H, BLOCK_K, DOT_DTYPE, DOT_PRECISION)
            z_g = _product(z_g, p_h, w_hh + 2 * H * H, H, 1, offs_b, offs_n, B, H, H, BLOCK_K, DOT_DTYPE,
                           DOT_PRECISION)
            z_o = _product(z_o, p_h, w_hh + 3 * H * H, H, 1, offs_b, offs_n, B, H, H, BLOCK_K, DOT_DTYPE,
                           DOT_PRECISION)
            if HAS_BIAS:
                mask_n = offs_n < H
                z_i += tl.load(bias + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
                z_f += tl.load(bias + H + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
                z_g += tl.load(bias + 2 * H + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
                z_o += tl.load(bias + 3 * H + offs_n, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
            b_i, b_f, b_g, b_o = _sigmoid(z_i), _sigmoid(z_f), _tanh(z_g), _sigmoid(z_o)
            b_c_prev = tl.load(cs + enter * stride_h + o_bn, mask=mask, other=0.0)
            b_h_prev = tl.load(hs + enter * stride_h + o_bn, mask=mask, other=0.0, cache_modifier=".cg")
            b_c = b_f * b_c_prev + b_i * b_g
            b_h = (b_o * _tanh(b_c)).to(b_h_prev.dtype)
            # SPEC §5: a row past its length keeps its state and outputs zero.
            active = (t < tl.load(lengths + offs_b, mask=offs_b < B, other=0))[:, None]
            tl.store(cs + leave * stride_h + o_bn, tl.where(active, b_c, b_c_prev), mask=mask)
            tl.store(hs + leave * stride_h + o_bn, tl.where(active, b_h, b_h_prev), mask=mask)
            tl.store(out + t * stride_h + o_bn, tl.where(active, b_h, 0.0), mask=mask)
            if SAVE:
                p_gates = gates + t * 4 * stride_h + offs_b[:, None] * 4 * H + offs_n[None, :]
                tl.store(p_gates, b_i.to(gates.dtype.element_ty), mask=mask)
                tl.store(p_gates + H, b_f.to(gates.dtype.element_ty), mask=mask)
                tl.store(p_gates + 2 * H, b_g.to(gates.dtype.element_ty), mask=mask)
                tl.store(p_gates + 3 * H, b_o.to(gates.dtype.element_ty), mask=mask)
        phase += 1
        _grid_sync(barrier, phase, n_programs)


@triton.jit
def _undo_round(g, J: tl.constexpr, t, slot, enter, offs_b, offs_n, mask, x, xs, hs, s_x, s_h, da_x, da_h, T, I, H,
                stride_x, stride_h, T_BUF, ACC_DTYPE: tl.constexpr):
    """The elementwise part of round ``J``'s backward on a tile of ``g`` (``g_x`` for odd
    ``J``, ``g_h`` for even ``J``): stores ``da`` and returns ``g ⊙ 2s_J``."""
    if J % 2 == 1:
        N = I
        p_gated = _x_chain(x, xs, t, slot, J - 2, stride_x, T_BUF)
        p_s = s_x + ((J // 2) * T + t) * stride_x
        p_da = da_x + ((J // 2) * T + t) * stride_x
    else:
        N = H
        p_gated = _h_chain(hs, enter, slot, J - 2, stride_h, T_BUF)
        p_s = s_h + ((J // 2 - 1) * T + t) * stride_h
        p_da = da_h + ((J // 2 - 1) * T + t) * stride_h
    o_bn = offs_b[:, None] * N + offs_n[None, :]
    b_s = tl.load(p_s + o_bn, mask=mask, other=0.0).to(ACC_DTYPE)
    b_gated = tl.load(p_gated + o_bn, mask=mask, other=0.0).to(ACC_DTYPE)
    tl.store(p_da + o_bn, (g * 2 * b_gated * b_s * (1 - b_s)).to(p_da.dtype.element_ty), mask=mask)
    return g * 2 * b_s


@triton.jit(do_not_specialize=["T"])
def mogrifier_bwd_kernel(
    x, lengths, w_ih, w_hh, q, r, d_out, hs, xs, cs, s_x, s_h, gates,
    dz, da_x, da_h, g_x, g_h, d_h, d_c, d_x, barrier,
    T, B, I, H, T_BUF, ROUNDS: tl.constexpr,
    REVERSE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ACC_DTYPE: tl.constexpr, DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Backward sweep over the forward's saved buffers (``T_BUF = T + 1``).

    ``d_h, d_c (B, H)`` carry ``∂L/∂h``, ``∂L/∂c`` from step to step (in: the gradients of
    ``h_n, c_n``; out: those of ``h_0, c_0``); ``g_x (B, I)``, ``g_h (B, H)`` hold the
    gradients w.r.t. the current round's ``x`` and ``h`` between phases. Writes
    ``dz (T, B, 4H)``, ``da_x (r_x, T, B, I)``, ``da_h (r_h, T, B, H)`` for the weight
    gradients and ``d_x (T, B, I)``.
    """
    i_p = tl.program_id(0)
    n_programs = tl.num_programs(0)
    # Elements per step of a (B, I) or (B, H) buffer and per round matrix, in int64.
    stride_x = tl.cast(B, tl.int64) * I
    stride_h = tl.cast(B, tl.int64) * H
    stride_w = tl.cast(I, tl.int64) * H
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
            offs_b, offs_n = _tile(tile, H, BLOCK_B, BLOCK_N)
            o_bn = offs_b[:, None] * H + offs_n[None, :]
            mask = (offs_b[:, None] < B) & (offs_n[None, :] < H)
            active = (t < tl.load(lengths + offs_b, mask=offs_b < B, other=0))[:, None]
            b_dout = tl.load(d_out + t * stride_h + o_bn, mask=mask, other=0.0).to(ACC_DTYPE)
            b_dh = tl.load(d_h + o_bn, mask=mask, other=0.0) + tl.where(active, b_dout, 0.0)
            b_dc = tl.load(d_c + o_bn, mask=mask, other=0.0)
            p_gates = gates + t * 4 * stride_h + offs_b[:, None] * 4 * H + offs_n[None, :]
            b_i = tl.load(p_gates, mask=mask, other=0.0).to(ACC_DTYPE)
            b_f = tl.load(p_gates + H, mask=mask, other=0.0).to(ACC_DTYPE)
            b_g = tl.load(p_gates + 2 * H, mask=mask, other=0.0).to(ACC_DTYPE)
            b_o = tl.load(p_gates + 3 * H, mask=mask, other=0.0).to(ACC_DTYPE)
            b_c_prev = tl.load(cs + enter * stride_h + o_bn, mask=mask, other=0.0)
            b_tanh_c = _tanh(tl.load(cs + leave * stride_h + o_bn, mask=mask, other=0.0))
            b_dc_hat = b_dc + b_dh * b_o * (1 - b_tanh_c * b_tanh_c)
            p_dz = dz + t * 4 * stride_h + offs_b[:, None] * 4 * H + offs_n[None, :]
            dz_type = dz.dtype.element_ty
            tl.store(p_dz, tl.where(active, b_dc_hat * b_g * b_i * (1 - b_i), 0.0).to(dz_type), mask=mask)
            tl.store(p_dz + H, tl.where(active, b_dc_hat * b_c_prev * b_f * (1 - b_f), 0.0).to(dz_type), mask=mask)
            tl.store(p_dz + 2 * H, tl.where(active, b_dc_hat * b_i * (1 - b_g * b_g), 0.0).to(dz_type), mask=mask)
            tl.store(p_dz + 3 * H, tl.where(active, b_dh * b_tanh_c * b_o * (1 - b_o), 0.0).to(dz_type), mask=mask)
            # A row past its length passes its gradients through; an active one gets its
            # recurrent ∂L/∂h_{t-1} from the last phase below.
            tl.store(d_c + o_bn, tl.where(active, b_dc_hat * b_f, b_dc), mask=mask)
            tl.store(d_h + o_bn, tl.where(active, 0.0, b_dh), mask=mask)
        phase += 1
        _grid_sync(barrier, phase, n_programs)
        # g_x = dz W_ih and g_h = dz W_hh, then the elementwise part of round r.
        p_dz = dz + t * 4 * stride_h
        for tile in range(i_p, n_tiles_i, n_programs):
            offs_b, offs_n = _tile(tile, I, BLOCK_B, BLOCK_N)
            o_bn = offs_b[:, None] * I + offs_n[None, :]
            mask = (offs_b[:, None] < B) & (offs_n[None, :] < I)
            b_g = tl.zeros((BLOCK_B, BLOCK_N), ACC_DTYPE)
            b_g = _product(b_g, p_dz, w_ih, 1, I, offs_b, offs_n, B, I, 4 * H, BLOCK_K, DOT_DTYPE, DOT_PRECISION)
            if ROUNDS % 2 == 1:
                b_g = _undo_round(b_g, ROUNDS, t, slot, enter, offs_b, offs_n, mask, x, xs, hs, s_x, s_h, da_x,
                                  da_h, T, I, H, stride_x, stride_h, T_BUF, ACC_DTYPE)
            if ROUNDS <= 1:
                tl.store(d_x + t * stride_x + o_bn, b_g.to(d_x.dtype.element_ty), mask=mask)
            else:
                tl.store(g_x + o_bn, b_g, mask=mask)
        for tile in range(i_p, n_tiles_h, n_programs):
            offs_b, offs_n = _tile(tile, H, BLOCK_B, BLOCK_N)
            o_bn = offs_b[:, None] * H + offs_n[None, :]
            mask = (offs_b[:, None] < B) & (offs_n[None, :] < H)
            b_g = tl.zeros((BLOCK_B, BLOCK_N), ACC_DTYPE)
            b_g = _product(b_g, p_dz, w_hh, 1, H, offs_b, offs_n, B, H, 4 * H, BLOCK_K, DOT_DTYPE, DOT_PRECISION)
            if ROUNDS >= 2 and ROUNDS % 2 == 0:
                b_g = _undo_round(b_g, ROUNDS, t, slot, enter, offs_b, offs_n, mask, x, xs, hs, s_x, s_h, da_x,
                                  da_h, T, I, H, stride_x, stride_h, T_BUF, ACC_DTYPE)
            if ROUNDS == 0:
                tl.store(d_h + o_bn, tl.load(d_h + o_bn, mask=mask, other=0.0) + b_g, mask=mask)
            else:
                tl.store(g_h + o_bn, b_g, mask=mask)
        # Rounds j = r..1: round j's product, then round j-1's elementwise part.
        for done in tl.static_range(ROUNDS):
            j: tl.constexpr = ROUNDS - done
            phase += 1
            _grid_sync(barrier, phase, n_programs)
            if j % 2 == 0:  # g_x += da_j R_j
                p_da = da_h + ((j // 2 - 1) * T + t) * stride_h
                p_w = r + (j // 2 - 1) * stride_w
                for tile in range(i_p, n_tiles_i, n_programs):
                    offs_b, offs_n = _tile(tile, I, BLOCK_B, BLOCK_N)
                    o_bn = offs_b[:, None] * I + offs_n[None, :]
                    mask = (offs_b[:, None] < B) & (offs_n[None, :] < I)
                    b_g = tl.load(g_x + o_bn, mask=mask, other=0.0)
                    b_g = _product(b_g, p_da, p_w, 1, I, offs_b, offs_n, B, I, H, BLOCK_K, DOT_DTYPE, DOT_PRECISION)
                    b_g = _undo_round(b_g, j - 1, t, slot, enter, offs_b, offs_n, mask, x, xs, hs, s_x, s_h, da_x,
                                      da_h, T, I, H, stride_x, stride_h, T_BUF, ACC_DTYPE)
                    if j == 2:
                        tl.store(d_x + t * stride_x + o_bn, b_g.to(d_x.dtype.element_ty), mask=mask)
                    else:
                        tl.store(g_x + o_bn, b_g, mask=mask)
            else:  # g_h += da_j Q_j
                p_da = da_x + ((j // 2) * T + t) * stride_x
                p_w = q + (j // 2) * stride_w
                for tile in range(i_p, n_tiles_h, n_programs):
                    offs_b, offs_n = _tile(tile, H, BLOCK_B, BLOCK_N)
                    o_bn = offs_b[:, None] * H + offs_n[None, :]
                    mask = (offs_b[:, None] < B) & (offs_n[None, :] < H)
                    b_g = tl.load(g_h + o_bn, mask=mask, other=0.0)
                    b_g = _product(b_g, p_da, p_w, 1, H, offs_b, offs_n, B, H, I, BLOCK_K, DOT_DTYPE, DOT_PRECISION)
                    if j == 1:
                        tl.store(d_h + o_bn, tl.load(d_h + o_bn, mask=mask, other=0.0) + b_g, mask=mask)
                    else:
                        b_g = _undo_round(b_g, j - 1, t, slot, enter, offs_b, offs_n, mask, x, xs, hs, s_x, s_h,
                                          da_x, da_h, T, I, H, stride_x, stride_h, T_BUF, ACC_DTYPE)
                        tl.store(g_h + o_bn, b_g, mask=mask)
        # The next step's LSTM backward reads d_h tiles this program wrote itself.
        tl.debug_barrier()


# --------------------------------------------------------------------------- host functions


def _chain_x(x, xs, j, seq_len):
    """``x⁽ʲ⁾`` for all steps, ``(T, B, I)`` in time order; ``j = -1`` is the input."""
    return x if j < 0 else xs[j // 2, :seq_len]


def _chain_h(hs, j, seq_len, reverse):
    """``h⁽ʲ⁾`` for all steps, ``(T, B, H)`` in time order; ``j = 0`` is ``h_{t-1}``."""
    if j == 0:
        return hs[0, int(reverse):int(reverse) + seq_len]
    return hs[j // 2, :seq_len]


def _accumulator_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _buffer_factory(x):
    """Allocates sweep buffers in the accumulator dtype: SPEC §6 keeps half-precision
    activations, gates and ``c`` in float32 between products."""
    dtype = _accumulator_dtype(x.dtype)
    return lambda *shape: torch.empty(shape, dtype=dtype, device=x.device)


def _stack(tensors, like):
    """Round matrices or biases stacked into one tensor (a dummy when there are none)."""
    return torch.stack(tensors).contiguous() if tensors else like.new_empty(1)


def mogrifier_fwd(x, h0, c0, weight_ih, weight_hh, bias, q, r, q_bias, r_bias, lengths, reverse, rounds,
                  save):
    """Launches the forward sweep.

    Args:
        x: ``(T, B, I)``; h0, c0: ``(B, H)``; weight_ih ``(4H, I)``, weight_hh ``(4H, H)``.
        bias: ``(4H,)`` ``b_ih + b_hh`` in the accumulator dtype, or ``None``.
        q, r: ``(r_x, I, H)``, ``(r_h, H, I)`` stacked round matrices; q_bias, r_bias:
            ``(r_x, I)``, ``(r_h, H)`` or ``None``.
        lengths: ``(B,)`` int64 (``T`` for full rows).
        save: keep what the backward needs.
    Returns:
        ``output (T, B, H), h_n, c_n (B, H)`` and the saved buffers (a dict, empty
        unless ``save``).
    """
    seq_len, batch_size, input_size = x.shape
    hidden_size = h0.shape[1]
    n_x, n_h = (rounds + 1) // 2, rounds // 2
    t_buf = seq_len + 1 if save else 2
    buffer = _buffer_factory(x)
    first, last = (seq_len, 0) if reverse else (0, seq_len)
    hs = buffer(n_h + 1, t_buf, batch_size, hidden_size)
    hs[0, first % t_buf] = h0
    xs = buffer(max(n_x, 1), t_buf, batch_size, input_size)
    cs = buffer(t_buf, batch_size, hidden_size)
    cs[first % t_buf] = c0
    out = x.new_empty(seq_len, batch_size, hidden_size)
    if save:
        s_x = buffer(max(n_x, 1), seq_len, batch_size, input_size)
        s_h = buffer(max(n_h, 1), seq_len, batch_size, hidden_size)
        gates = buffer(seq_len, batch_size, 4 * hidden_size)
    else:
        s_x = s_h = gates = buffer(1)
    config = launch_config(x, batch_size, input_size, hidden_size)
    barrier = torch.zeros(1, dtype=torch.int32, device=x.device)
    mogrifier_fwd_kernel[(config.programs,)](
        x, lengths, weight_ih, weight_hh, bias if bias is not None else cs, q, r,
        q_bias if q_bias is not None else q, r_bias if r_bias is not None else r,
        out, hs, xs, cs, s_x, s_h, gates, barrier,
        seq_len, batch_size, input_size, hidden_size, t_buf,
        ROUNDS=rounds, REVERSE=reverse, HAS_BIAS=bias is not None, HAS_ROUND_BIAS=q_bias is not None, SAVE=save,
        BLOCK_B=config.block_b, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        ACC_DTYPE=config.acc_dtype, DOT_DTYPE=config.dot_dtype, DOT_PRECISION=config.dot_precision,
        num_warps=config.num_warps,
    )
    h_n, c_n = hs[0, last % t_buf].to(x.dtype), cs[last % t_buf].to(x.dtype)
    saved = dict(hs=hs, xs=xs, cs=cs, s_x=s_x, s_h=s_h, gates=gates) if save else {}
    return out, h_n, c_n, saved


def mogrifier_bwd(x, lengths, weight_ih, weight_hh, q, r, reverse, rounds, saved, d_out, d_h_n, d_c_n):
    """Launches the backward sweep, then forms the weight gradients over all ``T·B`` rows.

    Returns ``d_x, d_h0, d_c0, d_weight_ih, d_weight_hh, d_bias (4H,)`` and the lists
    ``d_rounds`` (one ``(I, H)`` or ``(H, I)`` per round) and ``d_round_biases``.
    """
    seq_len, batch_size, input_size = x.shape
    hidden_size = weight_hh.shape[1]
    n_x, n_h = (rounds + 1) // 2, rounds // 2
    buffer = _buffer_factory(x)
    hs, xs = saved["hs"], saved["xs"]
    dz = buffer(seq_len, batch_size, 4 * hidden_size)
    da_x = buffer(max(n_x, 1), seq_len, batch_size, input_size)
    da_h = buffer(max(n_h, 1), seq_len, batch_size, hidden_size)
    g_x = buffer(batch_size, input_size)
    g_h = buffer(batch_size, hidden_size)
    d_h = buffer(batch_size, hidden_size).copy_(d_h_n)
    d_c = buffer(batch_size, hidden_size).copy_(d_c_n)
    d_x = torch.empty_like(x)
    config = launch_config(x, batch_size, input_size, hidden_size)
    barrier = torch.zeros(1, dtype=torch.int32, device=x.device)
    mogrifier_bwd_kernel[(config.programs,)](
        x, lengths, weight_ih, weight_hh, q, r, d_out, hs, xs, saved["cs"], saved["s_x"], saved["s_h"],
        saved["gates"], dz, da_x, da_h, g_x, g_h, d_h, d_c, d_x, barrier,
        seq_len, batch_size, input_size, hidden_size, seq_len + 1,
        ROUNDS=rounds, REVERSE=reverse, BLOCK_B=config.block_b, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        ACC_DTYPE=config.acc_dtype, DOT_DTYPE=config.dot_dtype, DOT_PRECISION=config.dot_precision,
        num_warps=config.num_warps,
    )
    rows = seq_len * batch_size

    def flat(tensor):
        """``(T·B, N)`` rows in the input dtype: SPEC §6 products (float32 accumulation)."""
        return tensor.reshape(rows, tensor.shape[-1]).to(x.dtype)

    dz_rows = flat(dz)
    d_weight_ih = dz_rows.t() @ flat(_chain_x(x, xs, 2 * n_x - 1, seq_len))
    d_weight_hh = dz_rows.t() @ flat(_chain_h(hs, 2 * n_h, seq_len, reverse))
    d_bias = dz.sum((0, 1))
    d_rounds, d_round_biases = [], []
    for j in range(1, rounds + 1):
        if j % 2 == 1:
            da = flat(da_x[j // 2])
            d_rounds.append(da.t() @ flat(_chain_h(hs, j - 1, seq_len, reverse)))
        else:
            da = flat(da_h[j // 2 - 1])
            d_rounds.append(da.t() @ flat(_chain_x(x, xs, j - 1, seq_len)))
        d_round_biases.append((da_x[j // 2] if j % 2 else da_h[j // 2 - 1]).sum((0, 1)))
    return d_x, d_h.to(x.dtype), d_c.to(x.dtype), d_weight_ih, d_weight_hh, d_bias, d_rounds, d_round_biases


# --------------------------------------------------------------------------- autograd


class MogrifierLSTMFunction(torch.autograd.Function):
    """``(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, has_round_bias,
    *round_weights, *round_biases) -> (output, h_n, c_n)``."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, reverse, has_round_bias,
                *round_params):
        rounds = len(round_params) // 2 if has_round_bias else len(round_params)
        weights, biases = round_params[:rounds], round_params[rounds:]
        q, r = _stack(weights[0::2], x), _stack(weights[1::2], x)
        q_bias = _stack(biases[0::2], x) if has_round_bias else None
        r_bias = _stack(biases[1::2], x) if has_round_bias else None
        out, h_n, c_n, saved = mogrifier_fwd(
            x, h0, c0, weight_ih, weight_hh, _lstm_bias(bias_ih, bias_hh, x), q, r, q_bias, r_bias, lengths,
            reverse, rounds, save=True)
        ctx.save_for_backward(x, lengths, weight_ih, weight_hh, q, r, *saved.values())
        ctx.saved_names = tuple(saved)
        ctx.reverse, ctx.rounds, ctx.has_bias, ctx.has_round_bias = reverse, rounds, bias_ih is not None, has_round_bias
        return out, h_n, c_n

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, d_out, d_h_n, d_c_n):
        x, lengths, weight_ih, weight_hh, q, r, *buffers = ctx.saved_tensors
        saved = dict(zip(ctx.saved_names, buffers))
        d_x, d_h0, d_c0, d_weight_ih, d_weight_hh, d_bias, d_rounds, d_round_biases = mogrifier_bwd(
            x, lengths, weight_ih, weight_hh, q, r, ctx.reverse, ctx.rounds, saved, d_out.contiguous(), d_h_n, d_c_n)
        d_bias = d_bias.to(x.dtype) if ctx.has_bias else None
        d_round_biases = [d.to(x.dtype) for d in d_round_biases] if ctx.has_round_bias else []
        return (d_x, d_h0, d_c0, d_weight_ih, d_weight_hh, d_bias, d_bias, None, None, None,
                *d_rounds, *d_round_biases)


def _lstm_bias(bias_ih, bias_hh, x):
    """``b_ih + b_hh`` in the accumulator dtype (they always enter ``z`` together), or ``None``."""
    if bias_ih is None:
        return None
    acc_dtype = _accumulator_dtype(x.dtype)
    return (bias_ih.to(acc_dtype) + bias_hh.to(acc_dtype)).contiguous()


# --------------------------------------------------------------------------- backend entry points


def unsupported(sweep: Sweep):
    """Why the Mogrifier kernels cannot run ``sweep`` (beyond the backend's own checks), or ``None``."""
    if sweep.mogrify_steps > MAX_ROUNDS:
        return f"mogrify_steps = {sweep.mogrify_steps} > {MAX_ROUNDS}, the most the Triton kernels unroll"
    if sweep.seq_len == 0 or sweep.batch_size == 0:
        return "empty sequence or batch"
    return None


def run(sweep: Sweep):
    """Runs a Mogrifier ``sweep``; returns ``output (T, B, H), h_n, c_n (B, H)``, differentiable."""
    x = sweep.x.contiguous()
    lengths = sweep.lengths
    if lengths is None:
        lengths = torch.full((sweep.batch_size,), sweep.seq_len, dtype=torch.int64, device=sweep.device)
    weights = [w.contiguous() for w in sweep.mogrify_weights]
    biases = [] if sweep.mogrify_biases is None else [b.contiguous() for b in sweep.mogrify_biases]
    tensors = (x, sweep.h0.contiguous(), sweep.c0.contiguous(), sweep.weight_ih.contiguous(),
               sweep.weight_hh.contiguous(), sweep.bias_ih, sweep.bias_hh)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (*tensors, *weights, *biases)):
        return MogrifierLSTMFunction.apply(*tensors, lengths.contiguous(), sweep.reverse,
                                           sweep.mogrify_biases is not None, *weights, *biases)
    x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh = tensors
    q, r = _stack(weights[0::2], x), _stack(weights[1::2], x)
    q_bias = _stack(biases[0::2], x) if biases else None
    r_bias = _stack(biases[1::2], x) if biases else None
    out, h_n, c_n, _ = mogrifier_fwd(x, h0, c0, weight_ih, weight_hh, _lstm_bias(bias_ih, bias_hh, x), q, r,
                                     q_bias, r_bias, lengths.contiguous(), sweep.reverse, len(weights), save=False)
    return out, h_n, c_n
