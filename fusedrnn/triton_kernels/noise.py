"""The G2 noise inside the Triton kernels: the Philox draw of :mod:`fusedrnn.noise`.

The noise of element ``(t, b, gate, j)`` is a pure function of a seed and those indices,
so the kernels draw it where they need it, and the backward draws it again from the saved
seed. :func:`fusedrnn.noise.sample_noise` computes the same values as a tensor.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def philox_words(seed, t, o_b, o_j, H):
    """The four Philox words of the elements ``(t, o_b, o_j)``, each ``(len(o_b), len(o_j))``
    uint32: ``U`` and the Bernoulli draw of ``m`` for the i gate, then for the f gate."""
    counter = (o_b[:, None] * H + o_j[None, :]).to(tl.uint32)
    step = tl.zeros_like(counter) + t.to(tl.uint32)
    zero = tl.zeros_like(counter)
    return tl.philox(seed, counter, step, zero, zero)


@triton.jit
def logistic_noise(seed, t, o_b, o_j, H, noise_prob, EPS: tl.constexpr):
    """``m ⊙ ℓ`` of the i and f gates at step ``t``: two ``(len(o_b), len(o_j))`` float32."""
    r_ui, r_mi, r_uf, r_mf = philox_words(seed, t, o_b, o_j, H)
    u_i = tl.clamp(tl.uint_to_uniform_float(r_ui), EPS, 1.0 - EPS)
    u_f = tl.clamp(tl.uint_to_uniform_float(r_uf), EPS, 1.0 - EPS)
    n_i = tl.where(tl.uint_to_uniform_float(r_mi) < noise_prob, tl.log(u_i) - tl.log(1.0 - u_i), 0.0)
    n_f = tl.where(tl.uint_to_uniform_float(r_mf) < noise_prob, tl.log(u_f) - tl.log(1.0 - u_f), 0.0)
    return n_i, n_f
