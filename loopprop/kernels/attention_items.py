"""Causal self-attention one example at a time ("items"): each head's ``(d_head, T)`` block
of one example is copied out of the batch layout, the products run on the packed product's
micro-kernel, the softmax a register of keys at a time, and the results are copied back; one
head per thread. The formulas, layout and index names are in :mod:`loopprop.kernels.attention`
(docs/formulas.md, "Embeddings and causal self-attention")."""

from __future__ import annotations

import math

import numpy as np

from .._jit import kernel, prange, runtime_flag
from .exp import _exp, _exp_f32
from .gemm import MR, _micro, _pack_x_trans, _pack_y
from .simd import (
    lanes,
    like,
    vadd,
    vexp,
    vfma,
    vhmax,
    vhsum,
    vkeep,
    vload,
    vmax,
    vmerge,
    vmul,
    vsplat,
    vsplit,
    vstore,
    vsub,
    vzero,
)
from .views import borrowed_flat


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
    same bits as :func:`~loopprop.kernels.exp._exp_f32` and
    :func:`~loopprop.kernels.exp._exp`). No reassociation here (``fast="contract"``): it
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
