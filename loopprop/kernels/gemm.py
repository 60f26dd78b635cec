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
  ``KC × NR`` contiguous, zero-padded past the last column. It stays in L2.
* ``r`` is cut into tiles of ``MR`` = 6 rows. X is packed too, eight tiles at a time, ``KC ×
  MR`` per tile with the six values of one ``p`` side by side (:func:`_pack_x`, or
  :func:`_pack_x_trans` for a transposed X, which reads a row of its source at a time); a
  tile's packed X stays in L1 while the tile meets every strip of the panel. Packed, both
  operands are read through one pointer each with constant steps: X read in place through six
  row pointers with run-time steps held the micro-kernel to 45 % of its packed speed.
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

from .._jit import PARALLEL_MIN_WORK, kernel, prange
from .simd import lanes, vadd, vfma, vload, vsplat, vstore, vzero
from .views import borrowed_flat

#: rows of C per micro-kernel tile (six broadcasts of X per step of p)
MR = 6
#: length of the p panels: an MR × KC strip of X (12 KiB in float64) stays in L1
KC = 256
#: columns of Y packed per panel: KC × NC (1 MiB in float64) stays in L2
NC = 512
#: tiles of a transposed X copied together (48 rows: each step reads 384 contiguous bytes)
XT_TILES = 8


@kernel
def _pack_y(Yp, Y, y_trans, p0, p1, s0, s1, nr_cols):
    """``Yp[t, p − p0, c] = Y[p, s0 + t·nr_cols + c]`` (0 past s1): strips of ``nr_cols``
    columns, each ``(p1 − p0) × nr_cols`` contiguous. ``Y[p, s]`` is ``Ysrc[s, p]`` when
    ``y_trans``; the loops then run along the rows of Ysrc, which are contiguous. Y is read
    through one flat borrowed view (a row view per strip and row cost as much as the copy)."""
    kc = p1 - p0
    n_strips = (s1 - s0 + nr_cols - 1) // nr_cols
    ld = Y.shape[1]
    Yf = borrowed_flat(Y)
    for t in range(n_strips):
        base = t * kc * nr_cols
        first = s0 + t * nr_cols
        width = min(nr_cols, s1 - first)
        if y_trans:
            for c in range(width):
                src = (first + c) * ld + p0
                for p in range(kc):
                    Yp[base + p * nr_cols + c] = Yf[src + p]
        else:
            for p in range(kc):
                src = (p0 + p) * ld + first
                o = base + p * nr_cols
                for c in range(width):
                    Yp[o + c] = Yf[src + c]
        if width < nr_cols:
            for p in range(kc):
                for c in range(width, nr_cols):
                    Yp[base + p * nr_cols + c] = 0.0


@kernel
def _micro(cf, ldc, Xp, x0, rows, Yp, yo, kc, r, s, cols, tile):
    """One tile: ``C[r : r+rows, s : s+cols] += Σ_q X[r + a, p0 + q] · Y[p0 + q, s : s+cols]``.

    C comes flat, ``C[r, s] = cf[r·ldc + s]``. Every array argument is a borrowed view
    (kernels/views.py): a function's array arguments are reference-counted on entry and exit,
    and this one runs once per tile.

    Both operands come packed: X as ``X[r + a, p0 + q] = Xp[x0 + q·MR + a]`` -- the six values
    one step broadcasts side by side (:func:`_pack_x`, :func:`_pack_x_trans`; rows past
    ``rows`` are the packing's zeros) -- and Y from its strip, ``Y[p0 + q, s + c] = Yp[yo +
    q·2L + c]`` (:func:`_pack_y`). Both are read through one pointer each whose steps are
    constants of the compiled code (``MR``; ``2L`` from :func:`~loopprop.kernels.simd.lanes`):
    read in place through six row pointers with run-time steps, the same loop ran at 45 % of
    this speed (docs/kernels.md).

    Six rows × two registers of C are summed in twelve vector accumulators (``cAB``: row A,
    register B) over the ``kc`` steps of ``p``::

        c_a0 += X[r + a, p] · Y[p, s : s + L]        c_a1 += X[r + a, p] · Y[p, s + L : s + 2L]

    (L lanes per register). A whole tile is added to C straight from the registers; a partial
    one (the last rows or columns) goes through ``tile`` (MR × 2L).
    """
    L = lanes(Yp)  # 8 float64 or 16 float32: a constant, so every offset below is one too
    c00 = c01 = c10 = c11 = c20 = c21 = vzero(Yp)
    c30 = c31 = c40 = c41 = c50 = c51 = vzero(Yp)
    # unsigned offsets: Numba then adds no negative-index wraparound to the loads
    x = np.uint64(x0)
    y = np.uint64(yo)
    for _ in range(kc):
        b0 = vload(Yp, y)
        b1 = vload(Yp, y + np.uint64(L))
        a = vsplat(Xp[x])
        c00 = vfma(a, b0, c00)
        c01 = vfma(a, b1, c01)
        a = vsplat(Xp[x + np.uint64(1)])
        c10 = vfma(a, b0, c10)
        c11 = vfma(a, b1, c11)
        a = vsplat(Xp[x + np.uint64(2)])
        c20 = vfma(a, b0, c20)
        c21 = vfma(a, b1, c21)
        a = vsplat(Xp[x + np.uint64(3)])
        c30 = vfma(a, b0, c30)
        c31 = vfma(a, b1, c31)
        a = vsplat(Xp[x + np.uint64(4)])
        c40 = vfma(a, b0, c40)
        c41 = vfma(a, b1, c41)
        a = vsplat(Xp[x + np.uint64(5)])
        c50 = vfma(a, b0, c50)
        c51 = vfma(a, b1, c51)
        y += np.uint64(2 * L)
        x += np.uint64(MR)
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
def _pack_x(Xp, X, r0, r1, p0, p1):
    """``Xp[g·kc·MR + q·MR + a] = X[r0 + g·MR + a, p0 + q]``, 0 for rows past ``r1``: a
    row-major X (``(nr, P)``) cut into tiles of six rows, each stored step by step with the six
    values that one step of :func:`_micro` broadcasts side by side."""
    kc = p1 - p0
    ld = X.shape[1]
    Xf = borrowed_flat(X)  # one flat view: a row view per tile and row costs as much as a copy
    for g in range((r1 - r0 + MR - 1) // MR):
        base = g * kc * MR
        first = r0 + g * MR
        if first + MR <= r1:  # a whole tile: six rows read side by side, Xp written in order
            i = first * ld + p0
            for q in range(kc):
                o = base + q * MR
                Xp[o] = Xf[i + q]
                Xp[o + 1] = Xf[i + ld + q]
                Xp[o + 2] = Xf[i + 2 * ld + q]
                Xp[o + 3] = Xf[i + 3 * ld + q]
                Xp[o + 4] = Xf[i + 4 * ld + q]
                Xp[o + 5] = Xf[i + 5 * ld + q]
            continue
        for a in range(MR):
            if first + a < r1:
                src = X[first + a]
                for q in range(kc):
                    Xp[base + q * MR + a] = src[p0 + q]
            else:
                for q in range(kc):
                    Xp[base + q * MR + a] = 0.0


@kernel
def _pack_x_trans(Xp, X, r0, r1, p0, p1):
    """:func:`_pack_x` for an X read transposed (``X`` is the source, ``(P, nr)``: ``X[r, p]``
    is ``Xsrc[p, r]``): each step ``q`` reads one contiguous run ``Xsrc[p0 + q, r0:r1]``."""
    kc = p1 - p0
    n = r1 - r0
    full = n // MR  # whole tiles: six values at a time, no division per value
    for q in range(kc):
        src = X[p0 + q]
        for g in range(full):
            o, c = g * kc * MR + q * MR, r0 + g * MR
            for a in range(MR):
                Xp[o + a] = src[c + a]
        if full * MR < n:
            o = full * kc * MR + q * MR
            for a in range(n - full * MR):
                Xp[o + a] = src[r0 + full * MR + a]
            for a in range(n - full * MR, MR):
                Xp[o + a] = 0.0


@kernel
def _row_tiles(C, X, x_trans, Yp, Xp, tile, u0, u1, p0, p1, s0, s1):
    """Row tiles ``u0 ≤ r/MR < u1`` of C against one packed panel of Y (columns s0 … s1,
    sums p0 … p1), ``XT_TILES`` tiles of six rows at a time: their rows of X packed into ``Xp``
    (:func:`_pack_x`, or :func:`_pack_x_trans` reading a transposed X a row of the source at a
    time), then for each tile every strip of the panel in turn, so the tile's packed X stays in
    L1 while the strips stream from L2.
    """
    nr, ldc = C.shape
    NR = 2 * lanes(Yp)  # two registers
    kc = p1 - p0
    # borrowed views for the micro-kernel's arguments: no reference counting per tile
    cf = borrowed_flat(C)
    Xpb = borrowed_flat(Xp)
    Ypb = borrowed_flat(Yp)
    tileb = borrowed_flat(tile)
    for g0 in range(u0, u1, XT_TILES):
        g1 = min(g0 + XT_TILES, u1)
        if x_trans:
            _pack_x_trans(Xp, X, g0 * MR, min(g1 * MR, nr), p0, p1)
        else:
            _pack_x(Xp, X, g0 * MR, min(g1 * MR, nr), p0, p1)
        for u in range(g0, g1):
            r = u * MR
            rows = min(MR, nr - r)
            for t in range((s1 - s0 + NR - 1) // NR):
                s = s0 + t * NR
                _micro(cf, ldc, Xpb, (u - g0) * kc * MR, rows, Ypb, t * kc * NR, kc, r, s,
                       min(NR, s1 - s), tileb)


@kernel
def _gemm_rows(C, X, Y, x_trans, y_trans, P, Yp, Xp, tile, u0, u1, c0, c1):
    """Row tiles ``u0 ≤ r/MR < u1`` of C, columns ``c0 ≤ s < c1``, over the whole product: for
    each panel of p and of columns, pack the panel of Y into ``Yp``, then run the tiles
    (:func:`_row_tiles`)."""
    NR = 128 // C.itemsize
    for p0 in range(0, P, KC):
        p1 = min(p0 + KC, P)
        for s0 in range(c0, c1, NC):
            s1 = min(s0 + NC, c1)
            _pack_y(Yp, Y, y_trans, p0, p1, s0, s1, NR)
            _row_tiles(C, X, x_trans, Yp, Xp, tile, u0, u1, p0, p1, s0, s1)


@kernel(parallel=True)
def _gemm(C, X, Y, x_trans, y_trans, threads):
    """``C += op(X) · op(Y)`` (see the module docstring for the blocking).

    Shapes: C (nr, ns) C-contiguous; X (nr, P), or (P, nr) when ``x_trans``; Y (P, ns), or
    (ns, P) when ``y_trans``; X and Y C-contiguous. ``threads`` > 1 splits C into one
    contiguous range per thread when the product has at least ``PARALLEL_MIN_WORK``
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
    if threads > 1 and nr * ns * P >= PARALLEL_MIN_WORK:
        chunks = min(threads, n_tiles)
    # split the columns when C has more of them than rows: split by rows, each thread would
    # pack all of Y (P·ns values) for its share of fewer rows
    by_columns = chunks > 1 and ns > nr and n_strips >= 2 * threads
    if by_columns:
        chunks = min(threads, n_strips)
    Yp = np.empty((chunks, ((min(NC, ns) + NR - 1) // NR) * NR * min(KC, P)), C.dtype)
    Xp = np.empty((chunks, XT_TILES * MR * min(KC, P)), C.dtype)
    tile = np.empty((chunks, MR * NR), C.dtype)
    if by_columns:
        for c in prange(chunks):  # whole strips of NR columns per thread
            _gemm_rows(C, X, Y, x_trans, y_trans, P, Yp[c], Xp[c], tile[c], int(0),
                       n_tiles, c * n_strips // chunks * NR,
                       min(ns, (c + 1) * n_strips // chunks * NR))
    elif chunks > 1:
        for c in prange(chunks):
            _gemm_rows(C, X, Y, x_trans, y_trans, P, Yp[c], Xp[c], tile[c],
                       c * n_tiles // chunks, (c + 1) * n_tiles // chunks, int(0), ns)
    else:
        # int(0), not 0: a constant would compile a second specialization (_jit.runtime_flag)
        _gemm_rows(C, X, Y, x_trans, y_trans, P, Yp[0], Xp[0], tile[0], int(0), n_tiles,
                   int(0), ns)
