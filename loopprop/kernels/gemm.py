"""``C += op(X) · op(Y)`` with packed panels and a register-blocked SIMD micro-kernel.

The formula is the one every dense-layer product shares::

    C[r, s] += Σ_p X[r, p] · Y[p, s]                    (op = identity)

with either operand read transposed in place (``x_trans``: ``X[r, p]`` is ``Xsrc[p, r]``;
``y_trans``: ``Y[p, s]`` is ``Ysrc[s, p]``), so that the three products of a layer need no
transposed copies (docs/formulas.md §5)::

    forward   Z  = W · A_prev        C = Z,       X = W,             Y = A_prev
    backward  dW = dZ · A_prevᵀ      C = dW,      X = dZ,            Y = A_prev (y_trans)
    backward  dA = Wᵀ · dZ           C = dA_prev, X = W (x_trans),   Y = dZ

Blocking (the loop order of BLIS/GotoBLAS, written as Numba loops):

* ``p`` is cut into panels of ``KC``; for each, ``s`` into panels of ``NC`` columns. The
  ``KC × NC`` panel of Y is *packed*: copied into ``Yp`` as strips of ``NR`` columns, each strip
  ``KC × NR`` contiguous, zero-padded past the last column (a register at a time:
  :func:`_pack_y`). The panel stays in L2, one strip at a time in L1.
* ``r`` is cut into tiles of ``MR`` = 6 rows, which go past one strip of the panel before
  the next strip is taken (BLIS's order: the strip, the larger operand of a tile, stays in L1;
  the six rows stream from L2). A row-major X is read in place, six rows each contiguous along
  ``p``. A transposed X is first copied into ``Xp``, eight tiles at a time, ``KC × MR`` per
  tile with the six values of one ``p`` side by side (read in place, its steps are a whole
  source row apart and collide in one L1 set).
* The micro-kernel :func:`_micro` computes one ``MR × NR`` tile of C: 6 rows × 2 registers
  (16 float64 or 32 float32 columns), twelve vector accumulators that live in registers for the
  whole sum over ``p``. Per ``p`` it loads two registers of Y, broadcasts six values of X and
  issues twelve fused multiply-adds, with no horizontal sums and no stores.

Threads take contiguous ranges of row tiles (each packs its own panels of Y and owns its rows
of C) or, when C has more columns than rows, contiguous ranges of whole strips of columns (each
packs only its own part of Y: split by rows, every thread would pack all of it). Either way
every element of C is summed by one thread in one order, by the same micro-kernel steps: the
bits do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np

from .._jit import PRODUCT_MIN_WORK, kernel, prange
from .simd import (lanes, vadd, vfma, vload, vloadn, vprefetch, vsplat, vsplit, vstore,
                   vstoren, vzero)
from .views import borrowed_flat

#: rows of C per micro-kernel tile (six broadcasts of X per step of p)
MR = 6
#: length of the p panels: an MR × KC strip of X (12 KiB in float64) stays in L1
KC = 256
#: columns of Y packed per panel: KC × NC (1 MiB in float64) stays in L2
NC = 512
#: tiles of a transposed X copied together (48 rows: each step reads 384 contiguous bytes)
XT_TILES = 8


#: values of p per register-transposed block of a transposed Y (:func:`_pack_y`)
TB = 16


@kernel
def _pack_y(Yp, Y, y_trans, p0, p1, s0, s1, nr_cols):
    """``Yp[t, p − p0, c] = Y[p, s0 + t·nr_cols + c]`` (0 past s1): strips of ``nr_cols``
    columns, each ``(p1 − p0) × nr_cols`` contiguous. ``Y[p, s]`` is ``Ysrc[s, p]`` when
    ``y_trans``.

    A copy, a register at a time where it can be (``nr_cols`` = two registers, as
    :func:`_gemm` asks): a row-major Y goes row by row, ``p`` outer, two loads and two stores
    per strip; a transposed Y goes in blocks of ``lanes`` source rows × ``TB`` values, gathered
    into a small contiguous block and transposed in registers
    (:func:`~loopprop.kernels.simd.vsplit`). The last, partial strip and the last ``p`` that do
    not fill a block are copied a value at a time. (Value by value throughout, the pack took
    20-30 % of a product's time at ``P`` = 512: docs/performance.md.)"""
    kc = p1 - p0
    n_strips = (s1 - s0 + nr_cols - 1) // nr_cols
    w = np.uint64(nr_cols)
    L = lanes(Yp)
    full = (s1 - s0) // nr_cols if nr_cols == 2 * L else 0  # strips copied by registers
    Yf = borrowed_flat(Y)
    ld = np.uint64(Y.shape[1])
    if y_trans:
        kb_end = kc - kc % TB
        if full > 0 and kb_end > 0:  # no block allocated for a panel without one
            _pack_y_blocks(Yp, Yf, ld, p0, s0, kc, kb_end, full, nr_cols)
        for t in range(full):
            base = np.uint64(t * kc * nr_cols)
            for c in range(w):  # the last p, fewer than a block
                src = Y[s0 + t * nr_cols + c]
                for p in range(np.uint64(kb_end), np.uint64(kc)):
                    Yp[base + p * w + c] = src[p0 + p]
        for t in range(full, n_strips):
            base = np.uint64(t * kc * nr_cols)
            first = s0 + t * nr_cols
            for c in range(np.uint64(min(nr_cols, s1 - first))):
                src = Y[first + c]
                for p in range(np.uint64(kc)):
                    Yp[base + p * w + c] = src[p0 + p]
    else:
        stride = np.uint64(kc) * w
        for p in range(np.uint64(kc)):
            src = np.uint64(p0 + p) * ld + np.uint64(s0)
            o = p * w
            for _ in range(full):
                vstore(Yp, o, vload(Yf, src))
                vstore(Yp, o + np.uint64(L), vload(Yf, src + np.uint64(L)))
                o += stride
                src += w
        for t in range(full, n_strips):
            base = np.uint64(t * kc * nr_cols)
            first = s0 + t * nr_cols
            width = np.uint64(min(nr_cols, s1 - first))
            for p in range(np.uint64(kc)):
                row = Y[p0 + p]
                o = base + p * w
                for c in range(width):
                    Yp[o + c] = row[first + c]
    for t in range(full, n_strips):  # zeros past s1
        base = np.uint64(t * kc * nr_cols)
        width = np.uint64(min(nr_cols, s1 - s0 - t * nr_cols))
        for p in range(np.uint64(kc)):
            for c in range(width, w):
                Yp[base + p * w + c] = 0.0


@kernel
def _pack_y_blocks(Yp, Yf, ld, p0, s0, kc, kb_end, full, nr_cols):
    """The register part of :func:`_pack_y` for a transposed Y: ``Yp[t·kc·nr_cols + q·nr_cols +
    c] = Yf[(s0 + t·nr_cols + c)·ld + p0 + q]`` for the ``full`` whole strips ``t`` and ``q <
    kb_end`` (a multiple of ``TB``). ``lanes`` source rows × ``TB`` values at a time are
    gathered into a contiguous block (``lanes · TB`` values) and transposed in registers.
    Shapes: Yf the flat source, rows of ``ld``; Yp flat, as :func:`_pack_y`."""
    L = lanes(Yp)
    block = np.empty(L * TB, Yp.dtype)  # L source rows of TB values, contiguous
    for t in range(full):
        for half in range(2):
            c0 = s0 + t * nr_cols + half * L
            for kb in range(0, kb_end, TB):
                src = np.uint64(c0) * ld + np.uint64(p0 + kb)
                for rr in range(L):
                    for j in range(0, TB, L):
                        vstore(block, rr * TB + j, vload(Yf, src + np.uint64(j)))
                    src += ld
                # Yp[t, kb + k, half·L + r] = block[r·TB + k]
                _vsplit16(Yp, t * kc * nr_cols + kb * nr_cols + half * L, nr_cols, block)


@kernel
def _vsplit16(d, d0, dstep, block):
    """``d[d0 + k·dstep + r] = block[r·TB + k]``: :func:`~loopprop.kernels.simd.vsplit` with
    its block length a constant."""
    vsplit(d, d0, dstep, block, 0, 16)


@kernel
def _micro(cf, ldc, Xf, x0, xrs, xps, rows, Yp, yo, kc, r, s, cols, tile):
    """One tile: ``C[r : r+rows, s : s+cols] += Σ_p X[r + a, p] · Y[p, s : s+cols]``.

    C comes flat, ``C[r, s] = cf[r·ldc + s]``. Every array argument is a borrowed view
    (kernels/views.py): a function's array arguments are reference-counted on entry and exit,
    and this one runs once per tile.

    X is read in place from its flat buffer ``Xf``: ``X[r + a, p0 + q]`` is
    ``Xf[x0 + a·xrs + q·xps]`` (row-major X: ``xrs`` = row length, ``xps`` = 1; X read
    transposed: ``xrs`` = 1, ``xps`` = row length of the source). Y comes from its packed strip,
    ``Y[p0 + q, s + c] = Yp[yo + q·2L + c]``.

    Six rows × two registers of C are summed in twelve vector accumulators (``cAB``: row A,
    register B) over the ``kc`` steps of ``p``::

        c_a0 += X[r + a, p] · Y[p, s : s + L]        c_a1 += X[r + a, p] · Y[p, s + L : s + 2L]

    (L lanes per register). A whole tile is added to C straight from the registers; a partial
    one (the last rows or columns) goes through ``tile`` (MR × 2L). Rows past ``rows`` repeat
    the last row (read, never written back) so no load leaves X.

    The tile of C is prefetched before the loop (:func:`~loopprop.kernels.simd.vprefetch`).
    Per step: two loads of Y, six broadcasts, twelve FMAs, and two offsets advanced by steps
    that are loop constants (docs/kernels.md: with six row pointers advanced one by one and the
    lane count read from the array, this loop ran at 45 % of its present speed).
    """
    L = lanes(Yp)  # 8 float64 or 16 float32: a constant, so every offset below is one too
    c00 = c01 = c10 = c11 = c20 = c21 = vzero(Yp)
    c30 = c31 = c40 = c41 = c50 = c51 = vzero(Yp)
    # the six rows' starts stay fixed and one shared offset q walks along p: each broadcast is
    # a load at (row start + q), with no pointer of its own to advance; unsigned, so that Numba
    # adds no negative-index wraparound
    x_0 = np.uint64(x0)
    x_1 = np.uint64(x0 + min(1, rows - 1) * xrs)
    x_2 = np.uint64(x0 + min(2, rows - 1) * xrs)
    x_3 = np.uint64(x0 + min(3, rows - 1) * xrs)
    x_4 = np.uint64(x0 + min(4, rows - 1) * xrs)
    x_5 = np.uint64(x0 + min(5, rows - 1) * xrs)
    q = np.uint64(0)
    step = np.uint64(xps)
    y = np.uint64(yo)
    o = r * ldc + s
    for _ in range(rows):  # the tile of C: in L1 by the time the sums are added to it
        vprefetch(cf, o)
        vprefetch(cf, o + L)
        o += ldc
    for _ in range(kc):
        b0 = vload(Yp, y)
        b1 = vload(Yp, y + np.uint64(L))
        a = vsplat(Xf[x_0 + q])
        c00 = vfma(a, b0, c00)
        c01 = vfma(a, b1, c01)
        a = vsplat(Xf[x_1 + q])
        c10 = vfma(a, b0, c10)
        c11 = vfma(a, b1, c11)
        a = vsplat(Xf[x_2 + q])
        c20 = vfma(a, b0, c20)
        c21 = vfma(a, b1, c21)
        a = vsplat(Xf[x_3 + q])
        c30 = vfma(a, b0, c30)
        c31 = vfma(a, b1, c31)
        a = vsplat(Xf[x_4 + q])
        c40 = vfma(a, b0, c40)
        c41 = vfma(a, b1, c41)
        a = vsplat(Xf[x_5 + q])
        c50 = vfma(a, b0, c50)
        c51 = vfma(a, b1, c51)
        y += np.uint64(2 * L)
        q += step
    if rows == MR and cols == 2 * L:
        o = r * ldc + s
        vstore(cf, o, vadd(vload(cf, o), c00))
        vstore(cf, o + L, vadd(vload(cf, o + L), c01))
        o += ldc
        vstore(cf, o, vadd(vload(cf, o), c10))
        vstore(cf, o + L, vadd(vload(cf, o + L), c11))
        o += ldc
        vstore(cf, o, vadd(vload(cf, o), c20))
        vstore(cf, o + L, vadd(vload(cf, o + L), c21))
        o += ldc
        vstore(cf, o, vadd(vload(cf, o), c30))
        vstore(cf, o + L, vadd(vload(cf, o + L), c31))
        o += ldc
        vstore(cf, o, vadd(vload(cf, o), c40))
        vstore(cf, o + L, vadd(vload(cf, o + L), c41))
        o += ldc
        vstore(cf, o, vadd(vload(cf, o), c50))
        vstore(cf, o + L, vadd(vload(cf, o + L), c51))
    else:
        vstore(tile, 0, c00)
        vstore(tile, L, c01)
        vstore(tile, 2 * L, c10)
        vstore(tile, 3 * L, c11)
        vstore(tile, 4 * L, c20)
        vstore(tile, 5 * L, c21)
        vstore(tile, 6 * L, c30)
        vstore(tile, 7 * L, c31)
        vstore(tile, 8 * L, c40)
        vstore(tile, 9 * L, c41)
        vstore(tile, 10 * L, c50)
        vstore(tile, 11 * L, c51)
        for a in range(rows):
            for c in range(cols):
                cf[(r + a) * ldc + s + c] += tile[a * 2 * L + c]


@kernel
def _pack_x_trans(Xp, X, r0, r1, p0, p1):
    """``Xp[g·kc·MR + q·MR + a] = X[p0 + q, r0 + g·MR + a]`` for ``r0 ≤ r0 + g·MR + a < r1``: a
    transposed X (``X`` is the source, ``(P, nr)``) copied as one strip per tile of six rows,
    the six values that a step of the micro-kernel broadcasts side by side. Each step ``q``
    reads one contiguous run ``X[p0 + q, r0:r1]``, six values (one tile) per masked load and
    store (1.05-1.1x on the small GPT's dA products against six scalar copies)."""
    kc = p1 - p0
    n = r1 - r0
    full = n // MR  # whole tiles: six values at a time, no division per value
    Xf = borrowed_flat(X)
    ld = X.shape[1]
    for q in range(kc):
        src = X[p0 + q]
        row = (p0 + q) * ld + r0
        for g in range(full):  # a masked load and store of six lanes per tile
            vstoren(Xp, g * kc * MR + q * MR, vloadn(Xf, row + g * MR, MR), MR)
        o = full * kc * MR + q * MR
        for a in range(n - full * MR):
            Xp[o + a] = src[r0 + full * MR + a]


@kernel
def _row_tiles(C, Xf, X, x_trans, P, Yp, Xp, tile, u0, u1, p0, p1, s0, s1):
    """Row tiles ``u0 ≤ r/MR < u1`` of C against one packed panel of Y (columns s0 … s1,
    sums p0 … p1): for each strip of the panel, every tile of six rows in turn, so the strip
    (``kc × NR``) stays in L1 while the rows of X stream from L2. (The order before, strips
    inside tiles, measured about 3 % slower on the small GPT's products, interleaved: its
    forward products a little faster, its backward ones slower; docs/kernels.md.)

    A row-major X is read in place (six rows, each contiguous along p). A transposed X is read
    as it lies, a row of the source at a time, into ``Xp`` for ``XT_TILES`` tiles at once
    (:func:`_pack_x_trans`): in place, the successive steps of one tile are a whole source row
    apart -- 8 KiB for 1024 float64 -- and fall into one L1 set.
    """
    nr, ldc = C.shape
    NR = 2 * lanes(Yp)  # two registers
    kc = p1 - p0
    # borrowed views for the micro-kernel's arguments: no reference counting per tile
    cf = borrowed_flat(C)
    Xpb = borrowed_flat(Xp)
    Ypb = borrowed_flat(Yp)
    tileb = borrowed_flat(tile)
    for g0 in range(u0, u1, XT_TILES if x_trans else max(1, u1 - u0)):
        g1 = min(g0 + XT_TILES, u1) if x_trans else u1
        if x_trans:
            _pack_x_trans(Xp, X, g0 * MR, min(g1 * MR, nr), p0, p1)
        for t in range((s1 - s0 + NR - 1) // NR):
            s = s0 + t * NR
            for u in range(g0, g1):
                r = u * MR
                rows = min(MR, nr - r)
                if x_trans:
                    xbuf, x0, xrs, xps = Xpb, (u - g0) * kc * MR, 1, MR
                else:  # X (nr, P), row-major
                    xbuf, x0, xrs, xps = Xf, r * P + p0, P, 1
                _micro(cf, ldc, xbuf, x0, xrs, xps, rows, Ypb, t * kc * NR, kc, r, s,
                       min(NR, s1 - s), tileb)


@kernel(separate=True)
def _gemm_rows(C, Xf, X, Y, x_trans, y_trans, P, Yp, Xp, tile, u0, u1, c0, c1):
    """Row tiles ``u0 ≤ r/MR < u1`` of C, columns ``c0 ≤ s < c1``, over the whole product: for
    each panel of p and of columns, pack the panel of Y into ``Yp``, then run the tiles
    (:func:`_row_tiles`)."""
    NR = 128 // C.itemsize
    for p0 in range(0, P, KC):
        p1 = min(p0 + KC, P)
        for s0 in range(c0, c1, NC):
            s1 = min(s0 + NC, c1)
            _pack_y(Yp, Y, y_trans, p0, p1, s0, s1, NR)
            _row_tiles(C, Xf, X, x_trans, P, Yp, Xp, tile, u0, u1, p0, p1, s0, s1)


@kernel(parallel=True, separate=True)
def _gemm(C, X, Y, x_trans, y_trans, threads):
    """``C += op(X) · op(Y)`` (see the module docstring for the blocking).

    Shapes: C (nr, ns) C-contiguous; X (nr, P), or (P, nr) when ``x_trans``; Y (P, ns), or
    (ns, P) when ``y_trans``; X and Y C-contiguous. ``threads`` > 1 splits C into one
    contiguous range per thread when the product has at least ``PRODUCT_MIN_WORK``
    multiply-adds: ranges of row tiles, each thread packing all of Y's panels (O(P·ns) against
    its share O(nr·P·ns / threads) of the products), or, when C has more columns than rows,
    ranges of strips of ``NR`` columns, each thread packing only its part of Y.
    """
    nr, ns = C.shape
    P = X.shape[0] if x_trans else X.shape[1]
    NR = 128 // C.itemsize
    n_tiles = (nr + MR - 1) // MR
    n_strips = (ns + NR - 1) // NR
    chunks = 1
    if threads > 1 and nr * ns * P >= PRODUCT_MIN_WORK:
        chunks = min(threads, n_tiles)
    # split the columns when C has more of them than rows: split by rows, each thread would
    # pack all of Y (P·ns values) for its share of fewer rows
    by_columns = chunks > 1 and ns > nr and n_strips >= 2 * threads
    if by_columns:
        chunks = min(threads, n_strips)
    Yp = np.empty((chunks, ((min(NC, ns) + NR - 1) // NR) * NR * min(KC, P)), C.dtype)
    Xp = np.empty((chunks, XT_TILES * MR * min(KC, P) if x_trans else 0), C.dtype)
    tile = np.empty((chunks, MR * NR), C.dtype)
    Xf = borrowed_flat(X)
    if by_columns:
        for c in prange(chunks):  # whole strips of NR columns per thread
            _gemm_rows(C, Xf, X, Y, x_trans, y_trans, P, Yp[c], Xp[c], tile[c], int(0),
                       n_tiles, c * n_strips // chunks * NR,
                       min(ns, (c + 1) * n_strips // chunks * NR))
    elif chunks > 1:
        for c in prange(chunks):
            _gemm_rows(C, Xf, X, Y, x_trans, y_trans, P, Yp[c], Xp[c], tile[c],
                       c * n_tiles // chunks, (c + 1) * n_tiles // chunks, int(0), ns)
    else:
        # int(0), not 0: a constant would compile a second specialization (_jit.runtime_flag)
        _gemm_rows(C, Xf, X, Y, x_trans, y_trans, P, Yp[0], Xp[0], tile[0], int(0), n_tiles,
                   int(0), ns)

