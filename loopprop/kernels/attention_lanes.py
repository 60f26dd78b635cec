"""Causal self-attention with the examples in the lanes: when ``m`` is a whole number of
registers, every number of the formula is a register of ``L`` examples, read where it lies in
the batch layout (no copies, no transposes). The formulas, layout and index names are in
:mod:`loopprop.kernels.attention` (docs/formulas.md, "Embeddings and causal self-attention")."""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel, prange
from .simd import (
    lanes,
    like,
    vadd,
    vdiv,
    vexp,
    vfma,
    vload,
    vmax,
    vmul,
    vsplat,
    vstore,
    vsub,
    vzero,
)
from .views import borrowed_flat

# ---------------------------------------------------------------------------------------------
# examples in the lanes: when m is a whole number of registers, every number of the formula is
# a register of L examples, read where it lies in the batch layout (no copies, no transposes)
# ---------------------------------------------------------------------------------------------

#: queries/features (``a``) and keys/times (``b``) per register tile of :func:`_lane_tile`
LT = 4


@kernel(inline=True)
def _put(Cf, o, acc, scale, add):
    """``C[o : o + L] = scale·acc``, or ``+=`` when ``add``."""
    v = vmul(acc, scale)
    if add:
        v = vadd(vload(Cf, o), v)
    vstore(Cf, o, v)


@kernel(inline=True)
def _put_row(Cf, o, cb, nb, v0, v1, v2, v3, scale, add):
    """The first ``nb`` registers of one row of a tile: ``C[o + b·cb] (+)= scale·v_b``."""
    _put(Cf, o, v0, scale, add)
    if nb > 1:
        _put(Cf, o + cb, v1, scale, add)
    if nb > 2:
        _put(Cf, o + 2 * cb, v2, scale, add)
    if nb > 3:
        _put(Cf, o + 3 * cb, v3, scale, add)


@kernel(fast=True)
def _lane_tile(Cf, c0, ca, cb, Xf, x0, xa, xc, Yf, y0, yb, yc, na, nb, p0, p1, scale, add):
    """One tile of up to 4 × 4 registers: ``C[a, b] (+)= scale · Σ_{p0 ≤ p < p1} X[a, p] ⊙
    Y[b, p]`` for ``a < na``, ``b < nb``, where each "number" is a register of L examples
    (``⊙`` lane by lane: example ``k`` with example ``k``). Flat offsets: ``C[a, b]`` at
    ``c0 + a·ca + b·cb``, ``X[a, p]`` at ``x0 + a·xa + p·xc``, ``Y[b, p]`` at ``y0 + b·yb +
    p·yc``. Sixteen accumulators stay in registers over the whole sum; per step four loads of
    X, four of Y, sixteen fused multiply-adds. Rows past ``na``/``nb`` repeat the last one
    (read, never written), so no load leaves the arrays."""
    xa1 = x0 + min(1, na - 1) * xa
    xa2 = x0 + min(2, na - 1) * xa
    xa3 = x0 + min(3, na - 1) * xa
    yb1 = y0 + min(1, nb - 1) * yb
    yb2 = y0 + min(2, nb - 1) * yb
    yb3 = y0 + min(3, nb - 1) * yb
    c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = vzero(Cf)
    c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = vzero(Cf)
    for p in range(p0, p1):
        xo = p * xc
        yo = p * yc
        u0 = vload(Xf, x0 + xo)
        u1 = vload(Xf, xa1 + xo)
        u2 = vload(Xf, xa2 + xo)
        u3 = vload(Xf, xa3 + xo)
        w = vload(Yf, y0 + yo)
        c00 = vfma(u0, w, c00)
        c10 = vfma(u1, w, c10)
        c20 = vfma(u2, w, c20)
        c30 = vfma(u3, w, c30)
        w = vload(Yf, yb1 + yo)
        c01 = vfma(u0, w, c01)
        c11 = vfma(u1, w, c11)
        c21 = vfma(u2, w, c21)
        c31 = vfma(u3, w, c31)
        w = vload(Yf, yb2 + yo)
        c02 = vfma(u0, w, c02)
        c12 = vfma(u1, w, c12)
        c22 = vfma(u2, w, c22)
        c32 = vfma(u3, w, c32)
        w = vload(Yf, yb3 + yo)
        c03 = vfma(u0, w, c03)
        c13 = vfma(u1, w, c13)
        c23 = vfma(u2, w, c23)
        c33 = vfma(u3, w, c33)
    vs = vsplat(like(Cf, scale))
    _put_row(Cf, c0, cb, nb, c00, c01, c02, c03, vs, add)
    if na > 1:
        _put_row(Cf, c0 + ca, cb, nb, c10, c11, c12, c13, vs, add)
    if na > 2:
        _put_row(Cf, c0 + 2 * ca, cb, nb, c20, c21, c22, c23, vs, add)
    if na > 3:
        _put_row(Cf, c0 + 3 * ca, cb, nb, c30, c31, c32, c33, vs, add)


#: the range of the sum in :func:`_lane_products`: every ``p``; causal, ``p`` up to the last
#: ``b`` of the tile (``Y[b, p] = 0`` for ``p > b``) or from its first (zero for ``p < b``)
SUM_ALL, SUM_UPTO, SUM_FROM = 0, 1, 2


@kernel(fast=True)
def _lane_products(Cf, c0, ca, cb, Xf, x0, xa, xc, Yf, y0, yb, yc, NA, NB, NP, causal, mode,
                   skip, scale, add):
    """``C[a, b] (+)= scale · Σ_p X[a, p] ⊙ Y[b, p]`` for every ``a < NA``, ``b < NB``, in
    tiles of :func:`_lane_tile` (offsets as there). Causal, the sum over ``p`` is cut to the
    side of the tile's diagonal where Y can be non-zero (``mode``: :data:`SUM_UPTO`,
    :data:`SUM_FROM`); ``skip``: the tiles whose every ``b`` is after every ``a`` (the scores
    of keys after all the tile's queries) are not computed."""
    for b0 in range(0, NB, LT):
        nb = min(LT, NB - b0)
        p0, p1 = 0, NP
        if causal and mode == SUM_UPTO:
            p1 = min(NP, b0 + nb)
        elif causal and mode == SUM_FROM:
            p0 = b0
        for a0 in range(0, NA, LT):
            na = min(LT, NA - a0)
            if causal and skip and b0 > a0 + na - 1:
                continue
            _lane_tile(Cf, c0 + a0 * ca + b0 * cb, ca, cb, Xf, x0 + a0 * xa, xa, xc, Yf,
                       y0 + b0 * yb, yb, yc, na, nb, p0, p1, scale, add)


@kernel(fast="contract")
def _lane_softmax(Pf, o0, T, m, causal):
    """Rows of scores ``S[t, s]`` (already scaled by α) at ``Pf[o0 + (t·T + s)·m]``, a
    register of examples each, become ``P[t, s] = exp(S[t, s] − max_s S) / Σ_s exp(…)`` over
    the visible keys and 0 after them: the maximum, the exponentials (:func:`~loopprop.kernels.
    simd.vexp`) and the sum lane by lane -- a sum over keys, never across lanes. No
    reassociation (``fast="contract"``): it would regroup the exponentials' reduction."""
    one = vsplat(like(Pf, 1))
    z = vzero(Pf)
    for t in range(T):
        last = t + 1 if causal else T
        o = o0 + t * T * m
        top = vload(Pf, o)
        for s in range(1, last):
            top = vmax(top, vload(Pf, o + s * m))
        total = vzero(Pf)
        for s in range(last):
            e = vexp(vsub(vload(Pf, o + s * m), top))
            vstore(Pf, o + s * m, e)
            total = vadd(total, e)
        inv = vdiv(one, total)
        for s in range(last):
            vstore(Pf, o + s * m, vmul(vload(Pf, o + s * m), inv))
        for s in range(last, T):
            vstore(Pf, o + s * m, z)


@kernel(fast=True)
def _lane_softmax_backward(G, Pf, o0, T, m, alpha, causal):
    """``dP`` in ``G[(t·T + s)·L]`` becomes ``dS[t, s] = α·P[t, s]·(dP[t, s] − Σ_s' P[t, s']·
    dP[t, s'])`` over the visible keys, lane by lane (P at ``Pf[o0 + (t·T + s)·m]``); causal,
    the keys after ``t`` up to the end of its tile of :data:`LT` are set to 0 (the sums of dQ
    and dK read them)."""
    L = lanes(G)
    va = vsplat(like(G, alpha))
    z = vzero(G)
    for t in range(T):
        last = t + 1 if causal else T
        g = t * T * L
        o = o0 + t * T * m
        dot = vzero(G)
        for s in range(last):
            dot = vfma(vload(Pf, o + s * m), vload(G, g + s * L), dot)
        for s in range(last):
            vstore(G, g + s * L, vmul(vmul(va, vload(Pf, o + s * m)),
                                      vsub(vload(G, g + s * L), dot)))
        for s in range(last, min(T, (t // LT + 1) * LT)):
            vstore(G, g + s * L, z)


@kernel(fast=True)
def _lane_time_major(D, Xf, x0, d, T, m):
    """``D[t, e] = X[e, t]`` a register (L examples) at a time: ``X[e, t]`` at ``Xf[x0 +
    (e·T + t)·m]``, ``D[(t·d + e)·L]``, so the sum over ``e`` of the scores reads each
    query's (or key's) features contiguously -- in place they are a whole ``T·m`` row apart,
    a new page per step when T is long."""
    L = lanes(D)
    for t in range(T):
        for e in range(d):
            vstore(D, (t * d + e) * L, vload(Xf, x0 + (e * T + t) * m))


@kernel(inline=True)
def _lane_tasks(n_head, m, L, threads):
    """(head, group of L examples) tasks and the threads they are split between."""
    tasks = n_head * (m // L)
    return tasks, max(1, min(threads, tasks))


@kernel(fast=True, parallel=True, separate=True)
def _attention_forward_lanes(O, P, Q, K, V, causal, threads):
    """:func:`_attention_forward_naive` with the examples in the lanes (``m`` a multiple of
    the lane count L): for each head and group of L examples, ``S = α·QᵀK`` written into P
    (:func:`_lane_products`; causal, the tiles after the diagonal skipped), its softmax rows
    (:func:`_lane_softmax`), ``O = V·Pᵀ`` (the sum over keys cut at the diagonal). Every
    operand is read in place from the batch layout. Threads take contiguous ranges of tasks.
    docs/formulas.md, "Attention, one head". Shapes: O, Q, K, V (n_head, d_head, T, m); P
    (n_head, T, T, m) written."""
    n_head, d, T, m = Q.shape
    Of, Pf, Qf, Kf, Vf = (borrowed_flat(O), borrowed_flat(P), borrowed_flat(Q), borrowed_flat(K),
                          borrowed_flat(V))
    L = lanes(Qf)
    G = m // L
    alpha = 1.0 / math.sqrt(d)
    tasks, chunks = _lane_tasks(n_head, m, L, threads)
    for c in prange(chunks):
        Qt = np.empty(T * d * L, Q.dtype)  # time-major copies: Qt[t, e] at (t·d + e)·L
        Kt = np.empty(T * d * L, Q.dtype)
        for task in range(c * tasks // chunks, (c + 1) * tasks // chunks):
            h, g = task // G, task % G
            qo = h * d * T * m + g * L  # Q[h, e, t, k] at qo + (e·T + t)·m
            po = h * T * T * m + g * L  # P[h, t, s, k] at po + (t·T + s)·m
            _lane_time_major(Qt, Qf, qo, d, T, m)
            _lane_time_major(Kt, Kf, qo, d, T, m)
            # S[t, s] = α Σ_e Q[e, t] K[e, s]: a = t, b = s, p = e
            _lane_products(Pf, po, T * m, m, Qt, 0, d * L, L, Kt, 0, d * L, L, T, T, d,
                           causal, SUM_ALL, causal, alpha, False)
            _lane_softmax(Pf, po, T, m, causal)
            # O[e, t] = Σ_s V[e, s] P[t, s]: a = e, b = t, p = s
            _lane_products(Of, qo, T * m, m, Vf, qo, T * m, m, Pf, po, T * m, m, d, T, T,
                           causal, SUM_UPTO, False, 1.0, False)


@kernel(fast=True, parallel=True, separate=True)
def _attention_backward_lanes(dQ, dK, dV, dO, Q, K, V, P, causal, add, threads):
    """:func:`_attention_backward_naive` with the examples in the lanes (``m`` a multiple of
    L), per head and group of L examples: ``dP = dOᵀ·V`` into a workspace, ``dS`` row by row
    (:func:`_lane_softmax_backward`, α folded in), then ``dV = dO·P``, ``dQ = K·dSᵀ``,
    ``dK = Q·dS`` (:func:`_lane_products`, each sum cut to the causal triangle), added
    (``add``) or written. docs/formulas.md, "Attention, one head". Shapes: as the naive;
    workspace per thread ``(T·T·L)``."""
    n_head, d, T, m = Q.shape
    dQf, dKf, dVf, dOf = borrowed_flat(dQ), borrowed_flat(dK), borrowed_flat(dV), borrowed_flat(dO)
    Qf, Kf, Vf, Pf = borrowed_flat(Q), borrowed_flat(K), borrowed_flat(V), borrowed_flat(P)
    L = lanes(Qf)
    G = m // L
    alpha = 1.0 / math.sqrt(d)
    tasks, chunks = _lane_tasks(n_head, m, L, threads)
    for c in prange(chunks):
        # dP, then dS: Wf[t, s] at (t·T + s)·L (not a borrowed view: its owner would be freed)
        Wf = np.empty(T * T * L, Q.dtype)
        dOt = np.empty(T * d * L, Q.dtype)  # time-major copies (:func:`_lane_time_major`)
        Vt = np.empty(T * d * L, Q.dtype)
        for task in range(c * tasks // chunks, (c + 1) * tasks // chunks):
            h, g = task // G, task % G
            qo = h * d * T * m + g * L
            po = h * T * T * m + g * L
            _lane_time_major(dOt, dOf, qo, d, T, m)
            _lane_time_major(Vt, Vf, qo, d, T, m)
            # dP[t, s] = Σ_e dO[e, t] V[e, s]: a = t, b = s, p = e
            _lane_products(Wf, 0, T * L, L, dOt, 0, d * L, L, Vt, 0, d * L, L, T, T, d,
                           causal, SUM_ALL, causal, 1.0, False)
            _lane_softmax_backward(Wf, Pf, po, T, m, alpha, causal)
            # dV[e, s] = Σ_t dO[e, t] P[t, s]: a = e, b = s, p = t
            _lane_products(dVf, qo, T * m, m, dOf, qo, T * m, m, Pf, po, m, T * m, d, T, T,
                           causal, SUM_FROM, False, 1.0, add)
            # dQ[e, t] = Σ_s K[e, s] dS[t, s]: a = e, b = t, p = s
            _lane_products(dQf, qo, T * m, m, Kf, qo, T * m, m, Wf, 0, T * L, L, d, T, T,
                           causal, SUM_UPTO, False, 1.0, add)
            # dK[e, s] = Σ_t Q[e, t] dS[t, s]: a = e, b = s, p = t
            _lane_products(dKf, qo, T * m, m, Qf, qo, T * m, m, Wf, 0, L, T * L, d, T, T,
                           causal, SUM_FROM, False, 1.0, add)
