"""Token embeddings, learned positions and causal self-attention, forward and backward, as
explicit loops (docs/formulas.md, "Embeddings and causal self-attention"), with tuned twins
tested against them; the layers are in :mod:`loopprop.layers.sequence`.

Layout: features first, time ``t`` next, the batch item ``k`` last -- ``X (d, T, m)``;
attention's heads ``(n_head, d_head, T, m)``. Index names: ``h`` head, ``e`` feature of a head,
``t`` query time, ``s`` key time, ``k`` batch item.

Embedding (one column of ``E (d, V)`` per token)::

    X[j, t, k] = E[j, ids[t, k]]                    dE[j, v] += Σ_{t,k: ids[t,k] = v} dX[j, t, k]

Attention, with scale ``α = 1/√d_head`` and, when causal, only keys ``s ≤ t``::

    S[h, t, s, k] = α · Σ_e Q[h, e, t, k] · K[h, e, s, k]
    P[h, t, s, k] = exp(S[h, t, s, k] − max_s S) / Σ_s exp(S[h, t, s, k] − max_s S)
    O[h, e, t, k] = Σ_s P[h, t, s, k] · V[h, e, s, k]

Backward (each line the chain rule through the line above it)::

    dP[h, t, s, k] = Σ_e dO[h, e, t, k] · V[h, e, s, k]
    dV[h, e, s, k] = Σ_t P[h, t, s, k] · dO[h, e, t, k]
    dS[h, t, s, k] = P[h, t, s, k] · (dP[h, t, s, k] − Σ_s' P[h, t, s', k] · dP[h, t, s', k])
    dQ[h, e, t, k] = α · Σ_s dS[h, t, s, k] · K[h, e, s, k]
    dK[h, e, s, k] = α · Σ_t dS[h, t, s, k] · Q[h, e, t, k]

The softmax backward is written out (``dS = P ⊙ (dP − Σ_s P·dP)``): the row sum is the
Jacobian of softmax applied to ``dP``. Masked entries have ``P = 0``, so they get no
gradient.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks
from .._jit import kernel, prange, runtime_flag, use_threads
from .activations import _exp, _exp_f32
from .gemm import MR, _micro, _pack_x_trans, _pack_y
from .simd import (lanes, like, vadd, vdiv, vexp, vfma, vhmax, vhsum, vkeep, vload, vmax, vmerge,
                   vmul, vsplat, vsplit, vstore, vsub, vzero)
from .views import borrowed_flat


@kernel
def _embedding_forward_naive(X, E, ids):
    """``X[j, t, k] = E[j, ids[t, k]]``. Shapes: X (d, T, m) written; E (d, V); ids (T, m)."""
    d, T, m = X.shape
    for j in range(d):
        for t in range(T):
            for k in range(m):
                X[j, t, k] = E[j, ids[t, k]]


@kernel
def _embedding_backward_naive(dE, dX, ids):
    """``dE[j, ids[t, k]] += dX[j, t, k]``: repeated tokens add. Shapes: dE (d, V); dX (d, T, m);
    ids (T, m)."""
    d, T, m = dX.shape
    for j in range(d):
        for t in range(T):
            for k in range(m):
                dE[j, ids[t, k]] += dX[j, t, k]


@kernel
def _attention_forward_naive(O, P, Q, K, V, causal):
    """The three lines of the module docstring's forward pass, as loops. Shapes: O, Q, K, V
    (n_head, d_head, T, m); P (n_head, T, T, m) written (0 where masked)."""
    n_head, d_head, T, m = Q.shape
    alpha = 1.0 / math.sqrt(d_head)
    for h in range(n_head):
        for k in range(m):
            for t in range(T):
                last = t + 1 if causal else T  # keys s < last are visible
                top = -np.inf
                for s in range(last):
                    acc = 0.0
                    for e in range(d_head):
                        acc += Q[h, e, t, k] * K[h, e, s, k]
                    P[h, t, s, k] = alpha * acc  # the score S, for now
                    if P[h, t, s, k] > top:
                        top = P[h, t, s, k]
                total = 0.0
                for s in range(last):
                    P[h, t, s, k] = math.exp(P[h, t, s, k] - top)
                    total += P[h, t, s, k]
                for s in range(T):
                    P[h, t, s, k] = P[h, t, s, k] / total if s < last else 0.0
                for e in range(d_head):
                    acc = 0.0
                    for s in range(last):
                        acc += P[h, t, s, k] * V[h, e, s, k]
                    O[h, e, t, k] = acc


@kernel
def _attention_backward_naive(dQ, dK, dV, dO, Q, K, V, P):
    """The five lines of the module docstring's backward pass, as loops; ``dQ, dK, dV`` add.
    Shapes: all (n_head, d_head, T, m) but P (n_head, T, T, m)."""
    n_head, d_head, T, m = Q.shape
    alpha = 1.0 / math.sqrt(d_head)
    for h in range(n_head):
        for k in range(m):
            for t in range(T):
                # dP[t, s] = Σ_e dO[e, t] · V[e, s], and the softmax's row sum Σ_s P·dP
                row = 0.0
                for s in range(T):
                    if P[h, t, s, k] != 0.0:
                        dp = 0.0
                        for e in range(d_head):
                            dp += dO[h, e, t, k] * V[h, e, s, k]
                        row += P[h, t, s, k] * dp
                for s in range(T):
                    p = P[h, t, s, k]
                    if p == 0.0:
                        continue  # masked (or underflowed): no gradient through it
                    dp = 0.0
                    for e in range(d_head):
                        dp += dO[h, e, t, k] * V[h, e, s, k]
                        dV[h, e, s, k] += p * dO[h, e, t, k]
                    ds = p * (dp - row)
                    for e in range(d_head):
                        dQ[h, e, t, k] += alpha * ds * K[h, e, s, k]
                        dK[h, e, s, k] += alpha * ds * Q[h, e, t, k]


# ---------------------------------------------------------------------------------------------
# tuned twins: the same sums with the batch item ``k`` innermost (contiguous in memory), one
# head per thread
# ---------------------------------------------------------------------------------------------


@kernel(fast=True)
def _embedding_forward_tuned(X, E, ids):
    """``X[j, n] = E[j, ids[n]]`` for every position ``n = t·m + k`` of the flat ``(d, T·m)``
    view: row ``j`` of E is read once per pass over the positions, X written in order.
    ``ids`` may hold integers or integral floats (the epoch keeps them in its float buffer).
    Shapes: X (d, N) written; E (d, V); ids (N,)."""
    d, N = X.shape
    for j in range(d):
        row = E[j]
        out = X[j]
        for n in range(N):
            out[n] = row[int(ids[n])]


@kernel(fast=True, parallel=True, separate=True)
def _embedding_backward_tuned(dE, dX, ids, threads):
    """``dE[j, ids[n]] += dX[j, n]``: the thread of row ``j`` owns ``dE[j]``, so repeated
    tokens add in a fixed order (bitwise reproducible). Shapes: dE (d, V); dX (d, N); ids (N,).
    """
    d, N = dX.shape
    if threads > 1:
        for j in prange(d):
            _scatter_row(dE[j], dX[j], ids)
    else:
        for j in range(d):
            _scatter_row(dE[j], dX[j], ids)


@kernel(fast=True)
def _scatter_row(dst, src, ids):
    for n in range(src.shape[0]):
        dst[int(ids[n])] += src[n]


@kernel(inline=True)
def _split(d, d0, dstep, s, s0, m):
    """``d[d0 + k·dstep + r] = s[s0 + r·m + k]`` for ``r < lanes``, ``k < m``: one block of
    ``lanes`` rows transposed in registers (:func:`~loopprop.kernels.simd.vsplit`, whose ``m``
    must be a constant of the compiled code: one branch per power of two ``m ≤ 32``)."""
    if m == 1:
        vsplit(d, d0, dstep, s, s0, 1)
    elif m == 2:
        vsplit(d, d0, dstep, s, s0, 2)
    elif m == 4:
        vsplit(d, d0, dstep, s, s0, 4)
    elif m == 8:
        vsplit(d, d0, dstep, s, s0, 8)
    elif m == 16:
        vsplit(d, d0, dstep, s, s0, 16)
    else:
        vsplit(d, d0, dstep, s, s0, 32)


@kernel(inline=True)
def _merge(d, d0, s, s0, sstep, m, add):
    """``d[d0 + r·m + k] (+)= s[s0 + k·sstep + r]`` for ``r < lanes``, ``k < m``: the inverse of
    :func:`_split` (:func:`~loopprop.kernels.simd.vmerge`), one branch per ``m``; ``add``
    is chosen at run time."""
    if m == 1:
        vmerge(d, d0, s, s0, sstep, 1, add)
    elif m == 2:
        vmerge(d, d0, s, s0, sstep, 2, add)
    elif m == 4:
        vmerge(d, d0, s, s0, sstep, 4, add)
    elif m == 8:
        vmerge(d, d0, s, s0, sstep, 8, add)
    elif m == 16:
        vmerge(d, d0, s, s0, sstep, 16, add)
    else:
        vmerge(d, d0, s, s0, sstep, 32, add)


@kernel(inline=True)
def _in_registers(r0, r1, m, L):
    """End of the part of rows ``r0 … r1 − 1`` that :func:`_split`/:func:`_merge` move, whole
    blocks of ``L`` rows (``L`` lanes), when ``m`` is a power of two up to 32; the rest (the
    tail, or every row for another ``m``) is moved one number at a time."""
    if m > 32 or m & (m - 1) != 0:
        return r0
    return r1 - (r1 - r0) % L


@kernel(fast=True)
def _to_items(dst, src):
    """``dst[k, r] = src[r, k]``: a head's values for every example, ``(rows, m)`` with the
    batch last, turned into one contiguous block per example. Shapes: dst (m, rows); src
    (rows, m). Blocks of ``lanes`` rows are transposed in registers (:func:`_split`); the
    tail, and every row for an ``m`` that is not a power of two up to 32, one number at a
    time in blocks of 16 rows (contiguous in src: read from L1 m times)."""
    rows, m = src.shape
    d, s = borrowed_flat(dst), borrowed_flat(src)
    full = _in_registers(0, rows, m, lanes(d))
    for r0 in range(0, full, lanes(d)):
        _split(d, r0, rows, s, r0 * m, m)
    for r0 in range(full, rows, 16):
        r1 = min(r0 + 16, rows)
        for k in range(m):
            for r in range(r0, r1):
                d[k * rows + r] = s[r * m + k]


@kernel(fast=True)
def _from_items(dst, src, add):
    """``dst[r, k] (+)= src[k, r]``, the inverse of :func:`_to_items` (:func:`_merge` on
    whole blocks)."""
    rows, m = dst.shape
    d, s = borrowed_flat(dst), borrowed_flat(src)
    full = _in_registers(0, rows, m, lanes(d))
    for r0 in range(0, full, lanes(d)):
        _merge(d, r0 * m, s, r0, rows, m, add)
    for r0 in range(full, rows, 16):
        r1 = min(r0 + 16, rows)
        for k in range(m):
            if add:
                for r in range(r0, r1):
                    d[r * m + k] += s[k * rows + r]
            else:
                for r in range(r0, r1):
                    d[r * m + k] = s[k * rows + r]


@kernel(inline=True)
def _row_end(t, T, itemsize, causal):
    """One past the last entry of row ``t`` of a ``(T, T)`` per-example P or dS that the
    packed products read (:func:`_pack_square`): every key when not causal; causal, the keys
    up to the end of the strip of ``NR`` that holds the diagonal -- beyond ``t`` they must be 0
    (the diagonal strips are summed whole), beyond the strip they are never read and are left
    as they are."""
    if not causal:
        return T
    NR = 128 // itemsize
    return min(T, (t // NR + 1) * NR)


@kernel(fast=True)
def _to_items_causal(dst, src, T):
    """:func:`_to_items` for probabilities ``src (T·T, m)`` that are zero for every key after
    its query (``s ≤ t``): only ``s ≤ t`` is read, and each row is written as 0 beyond ``t`` up
    to :func:`_row_end` (nothing after that is ever read) -- half the reads and a little over
    half the writes of the full copy. Shapes: dst (m, T·T); src (T·T, m)."""
    m = src.shape[1]
    d, s_ = borrowed_flat(dst), borrowed_flat(src)
    for t in range(T):
        base = t * T
        full = _in_registers(base, base + t + 1, m, lanes(d))
        for r0 in range(base, full, lanes(d)):
            _split(d, r0, T * T, s_, r0 * m, m)
        for k in range(m):
            for r in range(full, base + t + 1):
                d[k * T * T + r] = s_[r * m + k]
        end = _row_end(t, T, src.itemsize, True)
        for k in range(m):
            d[k * T * T + base + t + 1:k * T * T + base + end] = 0.0


@kernel(fast=True)
def _from_items_causal(dst, src, T):
    """:func:`_from_items` (written, not added) for probabilities that are zero after each
    query: ``dst[t·T + s, k] = src[k, t·T + s]`` for ``s ≤ t``, 0 beyond, without reading the
    zeros. Shapes: dst (T·T, m); src (m, T·T)."""
    m = dst.shape[1]
    d, s_ = borrowed_flat(dst), borrowed_flat(src)
    for t in range(T):
        base = t * T
        full = _in_registers(base, base + t + 1, m, lanes(d))
        for r0 in range(base, full, lanes(d)):
            _merge(d, r0 * m, s_, r0, T * T, m, runtime_flag(False))
        for r in range(full, base + t + 1):
            for k in range(m):
                d[r * m + k] = s_[k * T * T + r]
        d[(base + t + 1) * m:(base + T) * m] = 0.0


@kernel(inline=True)
def _row_max(a, o, n):
    """``max_s a[o + s]`` over ``s < n`` (n ≥ 1), a register of lanes at a time
    (:func:`~loopprop.kernels.simd.vmax`); a NaN is skipped here and still reaches the row's
    exponentials. ``a`` is flat: a row view per row costs reference counting."""
    L = lanes(a)
    top = a[o]
    if n >= L:
        acc = vload(a, o)
        for s in range(o + L, o + n - L + 1, L):
            acc = vmax(acc, vload(a, s))
        top = vhmax(vmax(acc, vload(a, o + n - L)))  # the tail overlaps: max does not mind
    else:
        for s in range(o + 1, o + n):
            top = max(top, a[s])
    return top


@kernel(inline=True)
def _row_sum(a, o, n):
    """``Σ_s a[o + s]`` over ``s < n``: a register of partial sums, then its lanes in order and
    the tail (the same order for every caller; no reassociation needed to vectorize it)."""
    L = lanes(a)
    acc = vzero(a)
    full = n - n % L
    for s in range(o, o + full, L):
        acc = vadd(acc, vload(a, s))
    total = vhsum(acc)
    for s in range(o + full, o + n):
        total += a[s]
    return total


@kernel(inline=True)
def _padded(last, n, L):
    """``last`` rounded up to whole registers of ``L`` lanes, at most ``n`` (the row's length):
    a row's loops run over whole registers, with no remainder to branch into, when it fits."""
    return min((last + L - 1) // L * L, n)


@kernel(inline=True)
def _zero_tail(a, o, last, pad):
    """``a[o + last : o + pad] = 0``, ``pad`` from :func:`_padded`: one masked register when
    the lanes from ``pad − L`` are whole, else one number at a time."""
    L = lanes(a)
    if pad % L == 0 and pad >= L:
        vkeep(a, o + pad - L, last - (pad - L))
    else:
        for s in range(o + last, o + pad):
            a[s] = 0.0


@kernel(fast="contract")
def _softmax_rows(S, alpha, causal):
    """Row ``t`` of ``S (T, T)`` becomes ``softmax_s(α·S[t, s])`` over the visible keys (``s ≤
    t`` when causal), 0 beyond up to :func:`_row_end`: the maximum and the sum a register at a
    time (:func:`_row_max`, :func:`_row_sum`). The exponentials, the sum and the scaling run
    over whole registers up to :func:`_padded` (the keys after ``t`` in the last register set
    to 0 by a mask before the sum), the exponentials a register at a time
    (:func:`~loopprop.kernels.simd.vexp`: float32 scores in float32 arithmetic, 16 lanes; the
    same bits as :func:`~loopprop.kernels.activations._exp_f32` and
    :func:`~loopprop.kernels.activations._exp`). No reassociation here (``fast="contract"``): it
    would regroup the exponentials' argument reduction."""
    T = S.shape[0]
    single = S.itemsize == 4
    a = borrowed_flat(S)
    L = lanes(a)
    alpha_ = like(a, alpha)
    va = vsplat(alpha_)
    for t in range(T):
        last = t + 1 if causal else T
        o = t * T
        pad = _padded(last, T, L)
        full = pad - pad % L
        top = alpha_ * _row_max(a, o, last)  # α > 0: max_s α·S = α·max_s S, in S's dtype
        vtop = vsplat(-top)
        for s in range(o, o + full, L):
            vstore(a, s, vexp(vfma(va, vload(a, s), vtop)))
        for s in range(o + full, o + pad):  # a row that ends inside a register
            a[s] = _exp_f32(alpha_ * a[s] - top) if single else _exp(alpha_ * a[s] - top)
        _zero_tail(a, o, last, pad)
        inv = like(a, 1) / _row_sum(a, o, pad)
        vinv = vsplat(inv)
        for s in range(o, o + full, L):
            vstore(a, s, vmul(vload(a, s), vinv))
        for s in range(o + full, o + pad):
            a[s] *= inv
        for s in range(o + pad, o + _row_end(t, T, S.itemsize, causal)):
            a[s] = 0.0


@kernel(fast=True)
def _softmax_backward_rows(G, P, T, alpha, causal):
    """Row ``t`` of ``G (T·T)`` (``dP``) becomes ``dS[t, s] = α·P[t, s]·(dP[t, s] − Σ_s'
    P[t, s']·dP[t, s'])`` over the visible keys, 0 beyond up to :func:`_row_end`. The row sum
    and the update run over whole registers up to :func:`_padded`: ``P`` is 0 after ``t``
    (:func:`_to_items_causal`), so those keys add nothing to the sum and get 0."""
    L = lanes(G)
    alpha_ = like(G, alpha)
    va = vsplat(alpha_)
    for t in range(T):
        last = t + 1 if causal else T
        o = t * T
        pad = _padded(last, T, L)
        full = pad - pad % L
        acc = vzero(G)
        for s in range(o, o + full, L):
            acc = vfma(vload(P, s), vload(G, s), acc)
        dot = vhsum(acc)
        for s in range(o + full, o + pad):
            dot += P[s] * G[s]
        vdot = vsplat(dot)
        for s in range(o, o + full, L):
            vstore(G, s, vmul(vmul(va, vload(P, s)), vsub(vload(G, s), vdot)))
        for s in range(o + full, o + pad):
            G[s] = alpha_ * P[s] * (G[s] - dot)
        for s in range(o + pad, o + _row_end(t, T, P.itemsize, causal)):
            G[s] = 0.0


@kernel(fast=True)
def _scores(S, Xp, Yp, d, T, causal, tile):
    """``S[t, s] += Σ_e X[e, t] · Y[e, s]`` for one example (``S = Xᵀ·Y``, ``(T, T)`` flat,
    row ``t`` at ``t·T``); causal, only the strips of keys that hold some ``s ≤ t``. ``Xp`` is X
    packed by :func:`~loopprop.kernels.gemm._pack_x_trans` (six queries side by side per step
    of ``e``), ``Yp`` is Y packed in strips of ``NR`` keys
    (:func:`~loopprop.kernels.gemm._pack_y`); :func:`~loopprop.kernels.gemm._micro` sums each
    ``6 × NR`` tile in registers."""
    NR = 128 // S.itemsize
    Sb, Xb, Yb, tb = borrowed_flat(S), borrowed_flat(Xp), borrowed_flat(Yp), borrowed_flat(tile)
    for u in range((T + MR - 1) // MR):
        t0 = u * MR
        rows = min(MR, T - t0)
        n_strips = (t0 + rows - 1) // NR + 1 if causal else (T + NR - 1) // NR
        for j in range(n_strips):
            _micro(Sb, T, Xb, u * d * MR, 1, MR, rows, Yb, j * d * NR, d, t0, j * NR,
                   min(NR, T - j * NR), tb)


@kernel
def _strip_sum(c0, NR, T, causal, upper):
    """The range ``p0 ≤ p < p1`` of a ``(T, T)`` operand's rows that can be non-zero in the
    strip of columns ``c0 … c0 + NR − 1``: all of them, or, causal, up to the strip's last
    column (``upper``: zero for ``p > c``) or from its first (zero for ``p < c``)."""
    if causal and upper:
        return 0, min(T, c0 + NR)
    if causal:
        return c0, T
    return 0, T


@kernel(fast=True)
def _times_square(C, X, Yp, d, T, causal, upper, tile):
    """``C[e, c] += Σ_p X[e, p] · Y[p, c]`` for one example: ``C, X (d, T)`` flat and
    row-major, ``Y (T, T)`` packed in strips of ``NR`` columns (``Yp``,
    :func:`~loopprop.kernels.gemm._pack_y`). Causal, Y is zero on one side of its diagonal
    and the sum over ``p`` runs over the other side only: ``upper`` (``Y[p, c] = 0`` for ``p >
    c``) stops at the strip's last column, otherwise (``Y[p, c] = 0`` for ``p < c``) it starts
    at the strip's first column."""
    NR = 128 // C.itemsize
    Cb, Xb, Yb, tb = borrowed_flat(C), borrowed_flat(X), borrowed_flat(Yp), borrowed_flat(tile)
    for j in range((T + NR - 1) // NR):
        c0 = j * NR
        p0, p1 = _strip_sum(c0, NR, T, causal, upper)
        for u in range((d + MR - 1) // MR):
            e0 = u * MR
            _micro(Cb, T, Xb, e0 * T + p0, T, 1, min(MR, d - e0), Yb, j * T * NR + p0 * NR,
                   p1 - p0, e0, c0, min(NR, T - c0), tb)


@kernel(fast=True)
def _pack_square(Yp, Y, y_trans, causal, upper):
    """``Y (T, T)`` (``Y[p, c]``, or ``Ysrc[c, p]`` when ``y_trans``) packed in strips of
    ``NR`` columns as :func:`_times_square` reads it (strip ``j`` at ``j·T·NR``, row ``p`` at
    ``p·NR`` inside it; :func:`~loopprop.kernels.gemm._pack_y` one strip at a time). Causal,
    only the rows of each strip that its sum reads: ``p`` up to the strip's last column
    (``upper``) or from its first."""
    T = Y.shape[0]
    NR = 128 // Y.itemsize
    for j in range((T + NR - 1) // NR):
        c0 = j * NR
        p0, p1 = _strip_sum(c0, NR, T, causal, upper)
        o = j * T * NR + p0 * NR
        _pack_y(Yp[o:o + (p1 - p0) * NR], Y, y_trans, p0, p1, c0, min(T, c0 + NR), NR)


@kernel(fast=True)
def _attention_item_forward(O, S, Q, K, V, d, T, causal, Xp, Yp, Pp, tile):
    """One head of one example: ``S = QᵀK`` (:func:`_scores`), the scaled causal softmax of its
    rows (:func:`_softmax_rows`), ``O = V·Pᵀ`` (:func:`_times_square`; causal, only ``s ≤
    t``). Shapes, flat in C order: O, Q, K, V ``(d, T)``; S ``(T, T)``, left holding P;
    workspaces Xp ``⌈T/6⌉·6·d``, Yp ``⌈T/NR⌉·NR·d``, Pp ``⌈T/NR⌉·NR·T``, tile ``6·NR``."""
    NR = 128 // S.itemsize
    _pack_x_trans(Xp, Q.reshape(d, T), 0, T, 0, d)
    _pack_y(Yp, K.reshape(d, T), runtime_flag(False), 0, d, 0, T, NR)
    S[:] = 0.0
    _scores(S, Xp, Yp, d, T, causal, tile)
    _softmax_rows(S.reshape(T, T), 1.0 / math.sqrt(d), causal)
    _pack_square(Pp, S.reshape(T, T), runtime_flag(True), causal, runtime_flag(True))  # P[t, s]
    O[:] = 0.0
    _times_square(O, V, Pp, d, T, causal, runtime_flag(True), tile)


@kernel(fast=True)
def _attention_item_backward(dQ, dK, dV, dS, dO, Q, K, V, P, d, T, causal, Xp, Yp, Pp, tile):
    """The backward of one head of one example into ``dQ, dK, dV`` (written): ``dP = dOᵀ·V``
    (:func:`_scores`), ``dS = α·P ⊙ (dP − Σ_s P·dP)`` row by row in place, then ``dV = dO·P``,
    ``dQ = K·dSᵀ``, ``dK = Q·dS`` (:func:`_times_square`, each cut to the causal triangle).
    Shapes as :func:`_attention_item_forward`; dS ``(T, T)`` workspace."""
    NR = 128 // P.itemsize
    alpha = 1.0 / math.sqrt(d)
    _pack_x_trans(Xp, dO.reshape(d, T), 0, T, 0, d)
    _pack_y(Yp, V.reshape(d, T), runtime_flag(False), 0, d, 0, T, NR)
    dS[:] = 0.0
    _scores(dS, Xp, Yp, d, T, causal, tile)
    _softmax_backward_rows(dS, P, T, alpha, causal)
    dQ[:] = 0.0
    dK[:] = 0.0
    dV[:] = 0.0
    _pack_square(Pp, P.reshape(T, T), runtime_flag(False), causal, runtime_flag(False))
    _times_square(dV, dO, Pp, d, T, causal, runtime_flag(False), tile)
    _pack_square(Pp, dS.reshape(T, T), runtime_flag(True), causal, runtime_flag(True))
    _times_square(dQ, K, Pp, d, T, causal, runtime_flag(True), tile)
    _pack_square(Pp, dS.reshape(T, T), runtime_flag(False), causal, runtime_flag(False))
    _times_square(dK, Q, Pp, d, T, causal, runtime_flag(False), tile)


@kernel
def _item_workspaces(d, T, dtype_of):
    """The per-thread workspaces of :func:`_attention_item_forward` and
    :func:`_attention_item_backward`: Xp, Yp, Pp, tile, dS."""
    NR = 128 // dtype_of.itemsize
    strips = (T + NR - 1) // NR
    return (np.empty(((T + MR - 1) // MR) * MR * d, dtype_of.dtype),
            np.empty(strips * NR * d, dtype_of.dtype), np.empty(strips * NR * T, dtype_of.dtype),
            np.empty(MR * NR, dtype_of.dtype), np.empty(T * T, dtype_of.dtype))


@kernel(fast=True, separate=True)
def _attention_head_forward(O, P, Q, K, V, causal, Qt, Kt, Vt, Ot, S, Xp, Yp, Pp, tile):
    """One head for every example of the batch: each example's ``(d_head, T)`` block copied
    out contiguously (:func:`_to_items`), attention per example
    (:func:`_attention_item_forward`: the packed micro-kernel on the causal triangle), the
    results copied back. Shapes: O, Q, K, V (d_head, T, m); P (T, T, m) written; workspaces
    Qt, Kt, Vt, Ot (m, d_head·T), S (m, T·T) and those of the item."""
    d_head, T, m = Q.shape
    _to_items(Qt, Q.reshape(d_head * T, m))
    _to_items(Kt, K.reshape(d_head * T, m))
    _to_items(Vt, V.reshape(d_head * T, m))
    for k in range(m):
        _attention_item_forward(Ot[k], S[k], Qt[k], Kt[k], Vt[k], d_head, T, causal, Xp, Yp,
                                Pp, tile)
    if causal:
        _from_items_causal(P.reshape(T * T, m), S, T)
    else:
        _from_items(P.reshape(T * T, m), S, runtime_flag(False))
    _from_items(O.reshape(d_head * T, m), Ot, runtime_flag(False))


@kernel(fast=True, parallel=True, separate=True)
def _attention_forward_items(O, P, Q, K, V, causal, threads):
    """:func:`_attention_forward_naive` as packed products on the causal triangle, one head per
    thread (:func:`_attention_head_forward`): each example's block copied out, its products
    by the packed micro-kernel, copied back. Shapes: O, Q, K, V (n_head, d_head, T, m); P
    (n_head, T, T, m) written."""
    n_head, d_head, T, m = Q.shape
    chunks = max(1, min(threads, n_head))
    for c in prange(chunks):
        Qt = np.empty((m, d_head * T), Q.dtype)
        Kt = np.empty((m, d_head * T), Q.dtype)
        Vt = np.empty((m, d_head * T), Q.dtype)
        Ot = np.empty((m, d_head * T), Q.dtype)
        S = np.empty((m, T * T), Q.dtype)
        Xp, Yp, Pp, tile, _ = _item_workspaces(d_head, T, Q)
        for h in range(c * n_head // chunks, (c + 1) * n_head // chunks):
            _attention_head_forward(O[h], P[h], Q[h], K[h], V[h], causal, Qt, Kt, Vt, Ot, S,
                                    Xp, Yp, Pp, tile)


@kernel(fast=True, separate=True)
def _attention_head_backward(dQ, dK, dV, dO, Q, K, V, P, causal, add, Qt, Kt, Vt, dOt, G, Pk,
                             dS, Xp, Yp, Pp, tile):
    """The backward of one head for every example, on contiguous ``(d_head, T)`` copies
    (:func:`_attention_item_backward` per example), each gradient added back into the batch
    layout (``add``) or written into it. Workspaces Qt, Kt, Vt, dOt (m, d_head·T); G (3, m,
    d_head·T); Pk (m, T·T); dS (T·T) and those of the item."""
    d_head, T, m = Q.shape
    _to_items(Qt, Q.reshape(d_head * T, m))
    _to_items(Kt, K.reshape(d_head * T, m))
    _to_items(Vt, V.reshape(d_head * T, m))
    _to_items(dOt, dO.reshape(d_head * T, m))
    if causal:
        _to_items_causal(Pk, P.reshape(T * T, m), T)
    else:
        _to_items(Pk, P.reshape(T * T, m))
    for k in range(m):
        _attention_item_backward(G[0, k], G[1, k], G[2, k], dS, dOt[k], Qt[k], Kt[k], Vt[k],
                                 Pk[k], d_head, T, causal, Xp, Yp, Pp, tile)
    _from_items(dQ.reshape(d_head * T, m), G[0], add)
    _from_items(dK.reshape(d_head * T, m), G[1], add)
    _from_items(dV.reshape(d_head * T, m), G[2], add)


@kernel(fast=True, parallel=True, separate=True)
def _attention_backward_items(dQ, dK, dV, dO, Q, K, V, P, causal, add, threads):
    """:func:`_attention_backward_naive` as packed products on the causal triangle (``causal``:
    P is zero above its diagonal), one head per thread (:func:`_attention_head_backward`);
    ``dQ, dK, dV`` add (``add``) or are written. Shapes: as the naive."""
    n_head, d_head, T, m = Q.shape
    chunks = max(1, min(threads, n_head))
    for c in prange(chunks):
        Qt = np.empty((m, d_head * T), Q.dtype)
        Kt = np.empty((m, d_head * T), Q.dtype)
        Vt = np.empty((m, d_head * T), Q.dtype)
        dOt = np.empty((m, d_head * T), Q.dtype)
        G = np.empty((3, m, d_head * T), Q.dtype)
        Pk = np.empty((m, T * T), Q.dtype)
        Xp, Yp, Pp, tile, dS = _item_workspaces(d_head, T, Q)
        for h in range(c * n_head // chunks, (c + 1) * n_head // chunks):
            _attention_head_backward(dQ[h], dK[h], dV[h], dO[h], Q[h], K[h], V[h], P[h], causal,
                                     add, Qt, Kt, Vt, dOt, G, Pk, dS, Xp, Yp, Pp, tile)



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


#: the longest ``T · d_head`` the lanes kernels take (float32, 2 threads, against the items
#: kernels; measured runs in docs/performance.md): 1.1-2.4x faster up to 8192 (T 64-256,
#: d_head 32-128); at T 256 ×
#: d_head 64 0.85-0.92x -- a head's P no longer fits L2 and the sums over t read it a 16 KiB
#: step at a time
LANES_MAX_TD = 8192


@kernel(inline=True)
def _use_lanes(Q):
    """Whether the lanes kernels take ``Q (n_head, d_head, T, m)``: ``m`` a whole number of
    registers and ``T · d_head`` at most :data:`LANES_MAX_TD`."""
    return Q.shape[3] % lanes(borrowed_flat(Q)) == 0 and Q.shape[1] * Q.shape[2] <= LANES_MAX_TD


@kernel(separate=True)
def _attention_forward_tuned(O, P, Q, K, V, causal, threads):
    """The tuned forward: the examples in the lanes when ``m`` is a whole number of registers
    (:func:`_attention_forward_lanes`; :func:`_use_lanes`), otherwise one example's block at a
    time (:func:`_attention_forward_items`). Shapes: as :func:`_attention_forward_naive`."""
    if _use_lanes(Q):
        _attention_forward_lanes(O, P, Q, K, V, causal, threads)
    else:
        _attention_forward_items(O, P, Q, K, V, causal, threads)


@kernel(separate=True)
def _attention_backward_tuned(dQ, dK, dV, dO, Q, K, V, P, causal, add, threads):
    """The tuned backward, dispatched as :func:`_attention_forward_tuned`; ``dQ, dK, dV`` add
    (``add``) or are written. Shapes: as :func:`_attention_backward_naive`."""
    if _use_lanes(Q):
        _attention_backward_lanes(dQ, dK, dV, dO, Q, K, V, P, causal, add, threads)
    else:
        _attention_backward_items(dQ, dK, dV, dO, Q, K, V, P, causal, add, threads)

def _ids(ids, name: str, V: int) -> np.ndarray:
    """Token ids: an integer array ``(T, m)`` with every value in ``[0, V)``."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise TypeError(f"{name}: expected integer token ids, got dtype {arr.dtype}; convert "
                        f"with {name}.astype(np.int64) (ids are column indices of E)")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected shape (T, m), got {arr.ndim}-D with shape "
                         f"{arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= V):
        bad = arr[(arr < 0) | (arr >= V)].flat[0]
        raise ValueError(f"{name}: token id {int(bad)} is outside the vocabulary [0, {V}); "
                         "encode the text with the same vocabulary as the embedding")
    return np.ascontiguousarray(arr, dtype=np.int64)


IMPLS = ("tuned", "naive")


def embedding_forward(E, ids, *, impl: str = "tuned", check_finite: bool = True) -> np.ndarray:
    """``X[j, t, k] = E[j, ids[t, k]]``: ``E (d, V)`` one column per token, ``ids (T, m)``
    integers in ``[0, V)``; returns ``X (d, T, m)``. ``impl``: ``"tuned"`` or ``"naive"``."""
    _checks.check_choice(impl, "impl", IMPLS)
    E = _checks.as_float_array(E, "E", 2, check_finite=check_finite,
                               hint="E has shape (d, V): one column per token")
    ids = _ids(ids, "ids", E.shape[1])
    X = np.empty((E.shape[0], *ids.shape), E.dtype)
    if impl == "naive":
        _embedding_forward_naive(X, E, ids)
    else:
        _embedding_forward_tuned(X.reshape(E.shape[0], -1), E, ids.reshape(-1))
    return X


def embedding_backward(dX, ids, V: int, *, impl: str = "tuned",
                       check_finite: bool = True) -> np.ndarray:
    """``dE (d, V)``: column ``v`` sums ``dX[:, t, k]`` over every position holding token ``v``
    (repeated tokens add). ``impl``: ``"tuned"`` or ``"naive"``."""
    _checks.check_choice(impl, "impl", IMPLS)
    dX = _checks.as_float_array(dX, "dX", 3, check_finite=check_finite,
                                hint="dX has shape (d, T, m)")
    V = _checks.check_positive_int(V, "V")
    ids = _ids(ids, "ids", V)
    _checks.require_shape(ids, "ids", dX.shape[1:], "one id per position of dX")
    dE = np.zeros((dX.shape[0], V), dX.dtype)
    if impl == "naive":
        _embedding_backward_naive(dE, dX, ids)
    else:
        _embedding_backward_tuned(dE, np.ascontiguousarray(dX).reshape(dX.shape[0], -1),
                                  ids.reshape(-1), use_threads(True))
    return dE


def _heads(arrays: dict, ref: str, check_finite: bool) -> dict:
    out = {}
    for name, a in arrays.items():
        out[name] = _checks.as_float_array(a, name, 4, check_finite=check_finite,
                                           hint="heads have shape (n_head, d_head, T, m)")
    _checks.same_dtype(**out)
    for name, a in out.items():
        _checks.require_shape(a, name, out[ref].shape, f"the shape of {ref}")
    return out


def attention_forward(Q, K, V, causal: bool = True, *, impl: str = "tuned",
                      check_finite: bool = True):
    """Scaled dot-product attention per head: ``(O, P)`` with ``O (n_head, d_head, T, m)`` and
    the probabilities ``P (n_head, T, T, m)`` (``P[h, t, s, k]``: query ``t`` attends to key
    ``s``; scale ``1/√d_head``; causal: ``s ≤ t``, the rest 0). ``impl``: ``"tuned"`` or
    ``"naive"``."""
    _checks.check_choice(impl, "impl", IMPLS)
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected True or False, got {_checks._describe(causal)}")
    a = _heads({"Q": Q, "K": K, "V": V}, "Q", check_finite)
    n_head, d_head, T, m = a["Q"].shape
    O = np.empty_like(a["Q"])
    P = np.empty((n_head, T, T, m), a["Q"].dtype)
    if impl == "naive":
        _attention_forward_naive(O, P, a["Q"], a["K"], a["V"], causal)
    else:
        _attention_forward_tuned(O, P, a["Q"], a["K"], a["V"], causal, use_threads(True))
    return O, P


@kernel(fast=True)
def _zero_above_diagonal(P):
    """Whether ``P[h, t, s, k] == 0`` for every ``s > t`` (the causal mask), stopping at the
    first entry that is not. Shape: P (n_head, T, T, m)."""
    n_head, T, _, m = P.shape
    for h in range(n_head):
        for t in range(T):
            row = P[h, t, t + 1:].reshape((T - t - 1) * m)
            for i in range(row.shape[0]):
                if row[i] != 0.0:
                    return False
    return True


def attention_backward(dO, Q, K, V, P, *, causal: bool | None = None, impl: str = "tuned",
                       check_finite: bool = True):
    """Gradients of :func:`attention_forward`: ``(dQ, dK, dV)``; ``P`` is the one it returned.
    The tuned kernel skips the keys after each query when the attention was causal: say so with
    ``causal`` or leave it ``None`` and P's zeros decide (a scan of the part above the
    diagonal). ``impl``: ``"tuned"`` or ``"naive"`` (which skips each zero of P)."""
    _checks.check_choice(impl, "impl", IMPLS)
    if causal is not None and not isinstance(causal, bool):
        raise TypeError(f"causal: expected True, False or None, got {_checks._describe(causal)}")
    a = _heads({"dO": dO, "Q": Q, "K": K, "V": V}, "Q", check_finite)
    n_head, d_head, T, m = a["Q"].shape
    P = _checks.as_float_array(P, "P", 4, check_finite=check_finite,
                               hint="P has shape (n_head, T, T, m)")
    _checks.same_dtype(Q=a["Q"], P=P)
    _checks.require_shape(P, "P", (n_head, T, T, m), "the probabilities attention_forward "
                          "returned")
    if impl == "naive":
        dQ, dK, dV = (np.zeros_like(a["Q"]) for _ in range(3))
        _attention_backward_naive(dQ, dK, dV, a["dO"], a["Q"], a["K"], a["V"], P)
    else:
        if causal is None:
            causal = bool(_zero_above_diagonal(P))
        dQ, dK, dV = (np.empty_like(a["Q"]) for _ in range(3))
        _attention_backward_tuned(dQ, dK, dV, a["dO"], a["Q"], a["K"], a["V"], P, causal,
                                  runtime_flag(False), use_threads(True))
    return dQ, dK, dV


# ---------------------------------------------------------------------------------------------
# learned positions: a column of P (d, T_max) added at each time step
# ---------------------------------------------------------------------------------------------


@kernel(fast=True)
def _position_forward(Y, X, W, T):
    """``Y[j, t, k] = X[j, t, k] + W[j, t]`` on the flat views. Shapes: Y, X (d·T, m) (row
    ``j·T + t``); W (d, T_max) with T ≤ T_max."""
    rows, m = X.shape
    for r in range(rows):
        w = W[r // T, r % T]
        for k in range(m):
            Y[r, k] = X[r, k] + w


@kernel(fast=True)
def _position_backward(dW, dX, dY, T, need_dx):
    """``dW[j, t] += Σ_k dY[j, t, k]`` and ``dX[j, t, k] += dY[j, t, k]`` (the input passes
    straight through an addition). Shapes as :func:`_position_forward`."""
    rows, m = dY.shape
    for r in range(rows):
        s = 0.0
        for k in range(m):
            s += dY[r, k]
        dW[r // T, r % T] += s
        if need_dx:
            for k in range(m):
                dX[r, k] += dY[r, k]
