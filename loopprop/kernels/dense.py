"""A fully connected layer, forward and backward, as explicit loops (docs/formulas.md §5).

Forward (§5)::

    Z[i, k] = b[i] + Σ_j W[i, j] · A_prev[j, k]

Backward, the four rows of the §5 table (the first, ``dZ = dA ⊙ f'(Z)``, lives in
:mod:`loopprop.kernels.activations`)::

    dW[i, j]      = Σ_k dZ[i, k] · A_prev[j, k]      # dW = dZ · A_prevᵀ
    db[i]         = Σ_k dZ[i, k]                     # db = sum(dZ, axis=1)
    dA_prev[j, k] = Σ_i W[i, j] · dZ[i, k]           # dA_prev = Wᵀ · dZ

Shapes: ``W (n_out, n_in)``, ``b (n_out,)``, ``A_prev (n_in, m)``, ``Z, dZ (n_out, m)``; ``i`` is
the output neuron, ``j`` the input neuron, ``k`` the batch item.

Two kernels compute each pass. The *naive* kernels are the formulas typed as loops and nothing
more; they are the reference. The *tuned* kernels compute the same sums with one of three
register-blocked loop nests, chosen per layer by its size and by the length of each sum:

* a large layer (``_packed``): :func:`~loopprop.kernels.gemm._gemm`, ``C += op(X)·op(Y)`` with
  packed panels and a SIMD micro-kernel, reading transposed operands in place;
* a short sum: :func:`_ab`, ``C[r, s] += Σ_p X[r, p] · Y[p, s]`` as rank-4 updates with the
  lanes along the output columns ``s``;
* a long sum: :func:`_abt`, ``C[r, s] += Σ_p X[r, p] · Y[s, p]`` as 4×4 blocks of dot products
  over a contiguous ``p``.

The last two need the operand that runs the wrong way transposed into a workspace (``O(n·m)``
work beside ``O(n_out·n_in·m)``).
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from .. import _checks
from .._jit import PRODUCT_MIN_WORK, kernel, prange, runtime_flag, use_threads
from .gemm import _gemm
from .simd import lanes, vfma, vloadn, vsplat, vstoren

# ---------------------------------------------------------------------------------------------
# naive kernels: the formulas, typed as loops (the algorithmic reference)
# ---------------------------------------------------------------------------------------------


@kernel
def _dense_forward_naive(Z, W, b, A_prev):
    """``Z = W·A_prev + b`` (docs/formulas.md §5), one output at a time.

    ``Z[i, k] = b[i] + Σ_j W[i, j] · A_prev[j, k]``

    Shapes: Z (n_out, m) written; W (n_out, n_in); b (n_out,); A_prev (n_in, m).
    """
    n_out, n_in = W.shape
    m = A_prev.shape[1]
    for i in range(n_out):
        for k in range(m):
            z = b[i]
            for j in range(n_in):
                z += W[i, j] * A_prev[j, k]
            Z[i, k] = z


@kernel
def _dense_backward_naive(dW, db, dA_prev, dZ, W, A_prev):
    """The dense layer's backward formulas as loops (§5); every gradient *accumulates* (§12; an
    input gradient adds up the contributions of every branch that read the input).

    ``dW[i, j] += Σ_k dZ[i, k] · A_prev[j, k]``   (dW = dZ · A_prevᵀ: the transpose of §12)
    ``db[i]    += Σ_k dZ[i, k]``                  (the sum over the batch of §12)
    ``dA_prev[j, k] += Σ_i W[i, j] · dZ[i, k]``   (dA_prev = Wᵀ · dZ)

    Shapes: dW (n_out, n_in); db (n_out,); dA_prev (n_in, m); dZ (n_out, m); W (n_out, n_in);
    A_prev (n_in, m).
    """
    n_out, n_in = W.shape
    m = dZ.shape[1]
    # forward: Z[i, k] = ... + W[i, j] * A_prev[j, k]  ->  ∂Z[i, k]/∂W[i, j] = A_prev[j, k]
    for i in range(n_out):
        for j in range(n_in):
            for k in range(m):
                dW[i, j] += dZ[i, k] * A_prev[j, k]
    # forward: Z[i, k] = b[i] + ...  ->  ∂Z[i, k]/∂b[i] = 1, summed over every k
    for i in range(n_out):
        for k in range(m):
            db[i] += dZ[i, k]
    # forward: Z[i, k] = ... + W[i, j] * A_prev[j, k]  ->  ∂Z[i, k]/∂A_prev[j, k] = W[i, j]
    for i in range(n_out):
        for j in range(n_in):
            for k in range(m):
                dA_prev[j, k] += W[i, j] * dZ[i, k]


# ---------------------------------------------------------------------------------------------
# tuned kernels: register-blocked loop nests for small layers (large ones go to kernels/gemm.py)
# ---------------------------------------------------------------------------------------------

#: rows of X (and of Y) held in registers by the micro-kernel
_MR = 4
#: length of the contiguous index ``p`` swept per pass: the 8 rows it reads (32 KiB in float64)
#: fit in L1, and each 4×4 block pays its 16 horizontal sums once per 512 products, not 256
_PB = 512
#: rows of Y per pass: a _JB × _PB panel of Y stays in L2 while all rows of X stream past it
_JB = 64
#: sums of up to this many terms (the batch in dW) run as rank-4
#: updates (:func:`_ab`), which need no horizontal sums; longer sums amortize those and run as
#: blocked dot products (:func:`_abt`), which reload C less often
_RANK4_MAX_SUM = 128
#: from this many multiply-adds a layer's products run on the packed SIMD kernel (kernels/gemm.py)
PACKED_MIN_WORK = 1 << 18


@kernel(fast=True)
def _abt_rows(C, X, Y, r, s0, s1, p0, p1):
    """Micro-kernel: ``C[r:r+4, s0:s1] += X[r:r+4, p0:p1] · Y[s0:s1, p0:p1]ᵀ``.

    A 4×4 block of C lives in 16 scalar accumulators while ``p`` runs; ``p`` is contiguous in
    both X and Y, so LLVM turns the sixteen sums into SIMD registers (``reassoc``). Rows past the
    end of X (the last, partial block of 4) and the last columns of a block fall back to single
    dot products over the same contiguous ``p``.
    """
    nr = X.shape[0]
    # unsigned p: Numba then emits no negative-index wraparound, and the loads stay contiguous
    p0 = np.uint64(p0)
    p1 = np.uint64(p1)
    if r + 4 <= nr:
        s = s0
        while s + 4 <= s1:
            c00 = c01 = c02 = c03 = C.dtype.type(0)
            c10 = c11 = c12 = c13 = C.dtype.type(0)
            c20 = c21 = c22 = c23 = C.dtype.type(0)
            c30 = c31 = c32 = c33 = C.dtype.type(0)
            for p in range(p0, p1):
                x0 = X[r, p]
                x1 = X[r + 1, p]
                x2 = X[r + 2, p]
                x3 = X[r + 3, p]
                y0 = Y[s, p]
                y1 = Y[s + 1, p]
                y2 = Y[s + 2, p]
                y3 = Y[s + 3, p]
                c00 += x0 * y0
                c01 += x0 * y1
                c02 += x0 * y2
                c03 += x0 * y3
                c10 += x1 * y0
                c11 += x1 * y1
                c12 += x1 * y2
                c13 += x1 * y3
                c20 += x2 * y0
                c21 += x2 * y1
                c22 += x2 * y2
                c23 += x2 * y3
                c30 += x3 * y0
                c31 += x3 * y1
                c32 += x3 * y2
                c33 += x3 * y3
            C[r, s] += c00
            C[r, s + 1] += c01
            C[r, s + 2] += c02
            C[r, s + 3] += c03
            C[r + 1, s] += c10
            C[r + 1, s + 1] += c11
            C[r + 1, s + 2] += c12
            C[r + 1, s + 3] += c13
            C[r + 2, s] += c20
            C[r + 2, s + 1] += c21
            C[r + 2, s + 2] += c22
            C[r + 2, s + 3] += c23
            C[r + 3, s] += c30
            C[r + 3, s + 1] += c31
            C[r + 3, s + 2] += c32
            C[r + 3, s + 3] += c33
            s += 4
        # the last columns (s1 - s < 4) of this 4-row block
        for rr in range(r, r + 4):
            for ss in range(s, s1):
                acc = C.dtype.type(0)
                for p in range(p0, p1):
                    acc += X[rr, p] * Y[ss, p]
                C[rr, ss] += acc
    else:
        # the last, partial block of rows (nr - r < 4)
        for rr in range(r, nr):
            for ss in range(s0, s1):
                acc = C.dtype.type(0)
                for p in range(p0, p1):
                    acc += X[rr, p] * Y[ss, p]
                C[rr, ss] += acc


@kernel(fast=True, separate=True)
def _abt_blocks(C, X, Y, b0, b1):
    """``C[r, s] += Σ_p X[r, p] · Y[s, p]`` (C += X·Yᵀ) for the 4-row blocks ``b0 ≤ r/4 < b1``.

    Shapes: C (nr, ns); X (nr, P); Y (ns, P); all C-contiguous.

    Blocking: ``p`` is cut into panels of ``_PB`` so the 8 rows the micro-kernel reads stay in
    L1; ``s`` into panels of ``_JB`` rows so Y's panel stays in L2 while every 4-row block of X
    streams past it; inside, :func:`_abt_rows` keeps a 4×4 block of C in registers.
    """
    P = X.shape[1]
    ns = Y.shape[0]
    if P == 0:
        return  # an empty sum adds nothing (n_in = 0: Z is the bias)
    # panels of (nearly) equal length: 1100 = 3 × 368, not 2 × 512 + a 76-long tail that would
    # pay a panel's horizontal sums for a few vectors of work
    n_panels = max(1, (P + _PB - 1) // _PB)
    pb = ((P + n_panels - 1) // n_panels + 7) // 8 * 8
    for p0 in range(0, P, pb):
        p1 = min(p0 + pb, P)
        for s0 in range(0, ns, _JB):
            s1 = min(s0 + _JB, ns)
            for rb in range(b0, b1):
                _abt_rows(C, X, Y, rb * _MR, s0, s1, p0, p1)


@kernel(fast=True, parallel=True, separate=True)
def _abt(C, X, Y, threads):
    """``C += X·Yᵀ`` on ``threads`` threads when the product is large enough to pay.

    Threaded, the 4-row blocks of C are cut into one contiguous range per thread and the
    ranges run under ``prange``: each thread owns whole rows of C (no two threads write one
    element) and there is one thread launch per product, not one per panel. Below
    ``PRODUCT_MIN_WORK`` multiply-adds the launch costs more than it saves and one thread runs
    :func:`_abt_blocks` over all rows. Each row's sums are the same whatever the thread count,
    so results are bitwise identical across thread counts.

    Shapes: C (nr, ns); X (nr, P); Y (ns, P); all C-contiguous.
    """
    nr, P = X.shape
    ns = Y.shape[0]
    nb = (nr + _MR - 1) // _MR
    if threads > 1 and nb > 1 and nr * ns * P >= PRODUCT_MIN_WORK:
        chunks = min(threads, nb)
        for c in prange(chunks):
            _abt_blocks(C, X, Y, c * nb // chunks, (c + 1) * nb // chunks)
    else:
        _abt_blocks(C, X, Y, int(0), nb)  # int(0): see _jit.runtime_flag


#: columns of C swept per pass of the rank-4 kernel :func:`_ab_rows`: four rows of C (8 KiB in
#: float64) stay in L1 while the whole sum over ``p`` runs past them
_CB = 256


@kernel(fast=True)
def _ab_rows(C, X, Y, r, s0, s1):
    """Micro-kernel: ``C[r:r+4, s0:s1] += X[r:r+4, :] · Y[:, s0:s1]`` (rows r … r+3 exist).

    The sum over ``p`` is taken four terms at a time as a *rank-4 update* of four rows of C::

        C[r + a, s] += X[r + a, p] · Y[p, s] + … + X[r + a, p + 3] · Y[p + 3, s]

    with ``s`` innermost and contiguous in C and Y. The 16 coefficients ``X[r + a, p + t]`` sit
    in registers for the whole sweep over ``s``; LLVM vectorizes ``s`` (lanes along the output
    columns), so each vector of four Y rows feeds 16 fused multiply-adds and no horizontal sum
    is ever needed. This is what makes short sums -- a batch of 32 in ``dW`` -- fast.
    """
    P = X.shape[1]
    c0 = C[r]
    c1 = C[r + 1]
    c2 = C[r + 2]
    c3 = C[r + 3]
    # unsigned s: Numba then emits no negative-index wraparound and the loads stay contiguous
    su0 = np.uint64(s0)
    su1 = np.uint64(s1)
    p = 0
    while p + 4 <= P:
        y0 = Y[p]
        y1 = Y[p + 1]
        y2 = Y[p + 2]
        y3 = Y[p + 3]
        x00, x01, x02, x03 = X[r, p], X[r, p + 1], X[r, p + 2], X[r, p + 3]
        x10, x11, x12, x13 = X[r + 1, p], X[r + 1, p + 1], X[r + 1, p + 2], X[r + 1, p + 3]
        x20, x21, x22, x23 = X[r + 2, p], X[r + 2, p + 1], X[r + 2, p + 2], X[r + 2, p + 3]
        x30, x31, x32, x33 = X[r + 3, p], X[r + 3, p + 1], X[r + 3, p + 2], X[r + 3, p + 3]
        for s in range(su0, su1):
            v0 = y0[s]
            v1 = y1[s]
            v2 = y2[s]
            v3 = y3[s]
            c0[s] += x00 * v0 + x01 * v1 + x02 * v2 + x03 * v3
            c1[s] += x10 * v0 + x11 * v1 + x12 * v2 + x13 * v3
            c2[s] += x20 * v0 + x21 * v1 + x22 * v2 + x23 * v3
            c3[s] += x30 * v0 + x31 * v1 + x32 * v2 + x33 * v3
        p += 4
    # the last P mod 4 terms, one rank-1 update at a time
    for q in range(p, P):
        yq = Y[q]
        x0, x1, x2, x3 = X[r, q], X[r + 1, q], X[r + 2, q], X[r + 3, q]
        for s in range(su0, su1):
            v = yq[s]
            c0[s] += x0 * v
            c1[s] += x1 * v
            c2[s] += x2 * v
            c3[s] += x3 * v


@kernel(fast=True)
def _ab_row(C, X, Y, r, s0, s1):
    """``C[r, s0:s1] += X[r, :] · Y[:, s0:s1]`` for one row (the rows past the last block of 4),
    as rank-4 updates of that row like :func:`_ab_rows`."""
    P = X.shape[1]
    cr = C[r]
    su0 = np.uint64(s0)
    su1 = np.uint64(s1)
    p = 0
    while p + 4 <= P:
        y0 = Y[p]
        y1 = Y[p + 1]
        y2 = Y[p + 2]
        y3 = Y[p + 3]
        x0, x1, x2, x3 = X[r, p], X[r, p + 1], X[r, p + 2], X[r, p + 3]
        for s in range(su0, su1):
            cr[s] += x0 * y0[s] + x1 * y1[s] + x2 * y2[s] + x3 * y3[s]
        p += 4
    for q in range(p, P):
        yq = Y[q]
        x = X[r, q]
        for s in range(su0, su1):
            cr[s] += x * yq[s]


@kernel(fast=True, separate=True)
def _ab_blocks(C, X, Y, b0, b1):
    """``C[r, s] += Σ_p X[r, p] · Y[p, s]`` (C += X·Y) for the 4-row blocks ``b0 ≤ r/4 < b1``.

    Shapes: C (nr, ns); X (nr, P); Y (P, ns); all C-contiguous.

    Blocking: ``s`` is cut into panels of ``_CB`` columns so that a ``P × _CB`` panel of Y stays
    in L2 while every 4-row block of X and C passes over it; inside, :func:`_ab_rows` runs the
    whole sum as rank-4 updates of four rows of C.
    """
    nr = X.shape[0]
    ns = Y.shape[1]
    for s0 in range(0, ns, _CB):
        s1 = min(s0 + _CB, ns)
        for rb in range(b0, b1):
            r = rb * _MR
            if r + _MR <= nr:
                _ab_rows(C, X, Y, r, s0, s1)
            else:
                for rr in range(r, nr):
                    _ab_row(C, X, Y, rr, s0, s1)


@kernel(fast=True, parallel=True, separate=True)
def _ab(C, X, Y, threads):
    """``C[r, s] += Σ_p X[r, p] · Y[p, s]`` (C += X·Y) on ``threads`` threads when the product
    is large enough to pay; one contiguous range of 4-row blocks per thread, as in :func:`_abt`
    (each thread owns whole rows of C, so the bits do not depend on the thread count).

    Shapes: C (nr, ns); X (nr, P); Y (P, ns); all C-contiguous.
    """
    nr, P = X.shape
    ns = Y.shape[1]
    nb = (nr + _MR - 1) // _MR
    if threads > 1 and nb > 1 and nr * ns * P >= PRODUCT_MIN_WORK:
        chunks = min(threads, nb)
        for c in prange(chunks):
            _ab_blocks(C, X, Y, c * nb // chunks, (c + 1) * nb // chunks)
    else:
        _ab_blocks(C, X, Y, int(0), nb)  # int(0): see _jit.runtime_flag


@kernel
def _transpose(out, a):
    """``out[c, r] = a[r, c]`` in 16×16 tiles, so both sides stay in cache lines while a tile
    is copied; the inner loop writes ``out`` contiguously, and unsigned indices spare Numba's
    negative-index checks (3× faster than 32×32 tiles with signed indices at 1024×1024).

    Shapes: a (R, C); out (C, R).
    """
    R, Cn = a.shape
    for r0 in range(0, R, 16):
        r1 = min(r0 + 16, R)
        for c0 in range(0, Cn, 16):
            c1 = min(c0 + 16, Cn)
            for c in range(np.uint64(c0), np.uint64(c1)):
                for r in range(np.uint64(r0), np.uint64(r1)):
                    out[c, r] = a[r, c]


@kernel(fast=True)
def _wt_dz_rows(dA_prev, W, dZ):
    """``dA_prev[j, k] += Σ_i W[i, j] · dZ[i, k]`` summed one output neuron ``i`` at a time.

    Shapes: dA_prev (n_in, m) accumulated, C-contiguous; W (n_out, n_in); dZ (n_out, m),
    C-contiguous.

    For a short sum (few output neurons, e.g. the 10 classes of the last layer) each row of
    dA_prev is built from whole rows of dZ, ``k`` along the lanes of a register: no transposes
    and no horizontal sums, which the blocked dot products would spend more time on than on
    products. Four rows of dA_prev stay in registers for a whole sum over ``i`` (a
    ``vfma`` per row per ``i``, the row's register loaded and stored once): the plain loop
    stored every row back after each ``i`` and ran 3–7× slower (10 × 32 × 32: 3.5 → 0.5 µs,
    AMD Zen 4). The terms are added in the same order, ``i`` = 0, 1, …: the same bits.
    """
    n_out, n_in = W.shape
    m = dZ.shape[1]
    if n_in == 0 or m == 0:
        return
    L = lanes(dA_prev[0])
    j = 0
    while j + 4 <= n_in:
        r0, r1, r2, r3 = dA_prev[j], dA_prev[j + 1], dA_prev[j + 2], dA_prev[j + 3]
        for k in range(0, m, L):
            n = min(L, m - k)  # the last register may be part-full: masked loads and stores
            c0, c1 = vloadn(r0, k, n), vloadn(r1, k, n)
            c2, c3 = vloadn(r2, k, n), vloadn(r3, k, n)
            for i in range(n_out):
                d = vloadn(dZ[i], k, n)
                c0 = vfma(vsplat(W[i, j]), d, c0)
                c1 = vfma(vsplat(W[i, j + 1]), d, c1)
                c2 = vfma(vsplat(W[i, j + 2]), d, c2)
                c3 = vfma(vsplat(W[i, j + 3]), d, c3)
            vstoren(r0, k, c0, n)
            vstoren(r1, k, c1, n)
            vstoren(r2, k, c2, n)
            vstoren(r3, k, c3, n)
        j += 4
    for jj in range(j, n_in):  # the last n_in % 4 rows, one at a time
        r0 = dA_prev[jj]
        for k in range(0, m, L):
            n = min(L, m - k)
            c0 = vloadn(r0, k, n)
            for i in range(n_out):
                c0 = vfma(vsplat(W[i, jj]), vloadn(dZ[i], k, n), c0)
            vstoren(r0, k, c0, n)


@kernel
def _packed(n_out, n_in, m):
    """Whether a layer's products go to the packed SIMD kernel :func:`~loopprop.kernels.gemm._gemm`
    (at least ``PACKED_MIN_WORK`` multiply-adds each); smaller ones use the loop nests above,
    which have no packing to pay for. Forward and backward ask the same question, so a small
    layer's forward pass always leaves ``A_prevᵀ`` behind for its backward pass."""
    return n_out * n_in * m >= PACKED_MIN_WORK


@register_jitable
def transposed_rows(n_out, n_in, positions, m):
    """The rows of the ``A_prevᵀ`` cache (one per position per example) a layer of ``n_out ×
    n_in`` weights on ``positions`` positions of ``m`` examples writes: ``positions·m`` when
    its products are small enough for the loop nests with one example, else 0 -- a layer the
    packed kernel takes for one example it takes for any batch (:func:`_packed`), and never
    writes the cache. Plain Python for the layer classes' sizes, inlined in the rows."""
    return 0 if n_out * n_in * positions >= PACKED_MIN_WORK else positions * m


@kernel(fast=True)
def _bias_columns(Z, b):
    """``Z[i, k] = b[i]``: every column of Z starts as the bias."""
    n_out, m = Z.shape
    for i in range(n_out):
        for k in range(m):
            Z[i, k] = b[i]


@kernel(fast=True)
def _dense_forward_from_T(Z, W, b, A_T, threads):
    """``Z[i, k] = b[i] + Σ_j W[i, j] · A_T[k, j]``: the forward pass from an input that is
    already transposed (§5). Shapes: Z (n_out, m) written; W (n_out, n_in); b (n_out,);
    A_T (m, n_in)."""
    n_out, m = Z.shape
    _bias_columns(Z, b)
    if _packed(n_out, W.shape[1], m):
        _gemm(Z, W, A_T, runtime_flag(False), runtime_flag(True), threads)
    else:
        _abt(Z, W, A_T, threads)


@kernel(fast=True, separate=True)
def _dense_forward_tuned(Z, W, b, A_prev, A_T, threads):
    """``Z[i, k] = b[i] + Σ_j W[i, j] · A_prev[j, k]`` (docs/formulas.md §5), register-blocked.

    Shapes: Z (n_out, m) written; W (n_out, n_in); b (n_out,); A_prev (n_in, m);
    A_T (m, n_in) written with ``A_prevᵀ`` when the layer is small (:func:`_packed`), which its
    backward pass reads again (docs/formulas.md §14).

    Blocking: a large layer runs :func:`~loopprop.kernels.gemm._gemm` on W and A_prev as they
    are. A small one transposes A_prev into A_T so that ``j`` is contiguous in both operands;
    Z starts as the broadcast bias and :func:`_abt` adds ``W · A_Tᵀ`` with 4×4 register blocks.
    """
    n_out, n_in = W.shape
    if _packed(n_out, n_in, Z.shape[1]):
        _bias_columns(Z, b)
        _gemm(Z, W, A_prev, runtime_flag(False), runtime_flag(False), threads)
    else:
        _transpose(A_T, A_prev)
        _dense_forward_from_T(Z, W, b, A_T, threads)


@kernel(fast=True, separate=True)
def _dense_backward_tuned(dW, db, dA_prev, dZ, W, A_prev, A_T, need_dA_prev, a_t_valid,
                          threads):
    """The dense layer's backward formulas, register-blocked; every gradient accumulates.

    ``dW[i, j] += Σ_k dZ[i, k] · A_prev[j, k]``; ``db[i] += Σ_k dZ[i, k]``;
    ``dA_prev[j, k] += Σ_i W[i, j] · dZ[i, k]`` (skipped when ``need_dA_prev`` is false: the
    first layer's input needs no gradient).

    Shapes: dW (n_out, n_in); db (n_out,); dA_prev (n_in, m); dZ (n_out, m); W (n_out, n_in);
    A_prev (n_in, m); A_T (m, n_in) holds ``A_prevᵀ`` when ``a_t_valid`` -- the forward pass
    of a small layer leaves it there (:func:`_dense_forward_tuned`), and a large layer reads
    whichever is valid; A_prev must be valid unless the layer is large and ``a_t_valid``.

    Blocking: a large layer (:func:`_packed`) sends all three products to
    :func:`~loopprop.kernels.gemm._gemm`, which reads the transposed operands in place. A small
    layer picks its loop nest by the length of each sum. ``dW`` sums over the batch ``k``: up to
    ``_RANK4_MAX_SUM`` terms as rank-4 updates, ``dW += dZ · A_T`` (:func:`_ab`, lanes along
    ``j``), beyond as dot products, ``dW += dZ · A_prevᵀ`` (:func:`_abt`, ``k`` contiguous in
    both). ``dA_prev`` sums over the output neurons ``i``, which run down the columns of W:
    :func:`_wt_dz_rows` takes whole rows of dZ, four rows of dA_prev in registers, with no
    transpose (it beat transposing W for rank-4 updates or both operands for dot products at
    every small shape measured, 32 to 500 output neurons). The packed products are parallel
    over the rows or columns of their output; the small ones run on one thread.
    """
    n_out, m = dZ.shape
    n_in = W.shape[1]
    packed = _packed(n_out, n_in, m)
    if packed and a_t_valid:
        _gemm(dW, dZ, A_T, runtime_flag(False), runtime_flag(False), threads)
    elif packed:
        _gemm(dW, dZ, A_prev, runtime_flag(False), runtime_flag(True), threads)
    elif m <= _RANK4_MAX_SUM:
        _ab(dW, dZ, A_T, threads)
    else:
        _abt(dW, dZ, A_prev, threads)
    for i in range(n_out):
        s = dZ.dtype.type(0)
        for k in range(m):
            s += dZ[i, k]
        db[i] += s
    if not need_dA_prev:
        return
    if packed:
        _gemm(dA_prev, W, dZ, runtime_flag(True), runtime_flag(False), threads)
    else:
        _wt_dz_rows(dA_prev, W, dZ)


@kernel
def _dense_layer_forward(Z, W, b, A_prev, A_T, threads):
    """The forward kernel of a ``Dense`` layer in the epoch: :func:`_dense_forward_tuned`.

    Shapes: Z (n_out, m) written; W (n_out, n_in); b (n_out,); A_prev (n_in, m);
    A_T (m, n_in), the layer's cache (written for small layers).
    """
    _dense_forward_tuned(Z, W, b, A_prev, A_T, threads)


@kernel
def _dense_layer_backward(dW, db, dA_prev, dZ, W, A_prev, A_T, need_dA_prev, threads):
    """The backward kernel of a ``Dense`` layer in the epoch: :func:`_dense_backward_tuned`,
    reading the ``A_prevᵀ`` its forward pass left in A_T when the layer is small (a large
    layer's packed product reads A_prev in place and leaves A_T unwritten).

    Shapes: as :func:`_dense_backward_tuned`; every gradient accumulates.
    """
    n_out, n_in = W.shape
    a_t_valid = not _packed(n_out, n_in, dZ.shape[1])
    _dense_backward_tuned(dW, db, dA_prev, dZ, W, A_prev, A_T, need_dA_prev, a_t_valid,
                          threads)


# ---------------------------------------------------------------------------------------------
# public functions: validate, allocate, call the kernel, return fresh arrays
# ---------------------------------------------------------------------------------------------

IMPLS = ("tuned", "naive")


def _layer_args(W, b, A_prev, check_finite):
    W = _checks.as_float_array(W, "W", 2, check_finite=check_finite)
    b = _checks.as_float_array(b, "b", 1, check_finite=check_finite,
                               hint="b is a vector of shape (n_out,); use b.ravel()")
    A_prev = _checks.as_float_array(
        A_prev, "A_prev", 2, check_finite=check_finite,
        hint="examples are columns: A_prev has shape (n_in, m); use A_prev.reshape(-1, 1) "
        "for one example",
    )
    _checks.same_dtype(W=W, b=b, A_prev=A_prev)
    if b.shape[0] != W.shape[0]:
        raise ValueError(
            f"b has shape {b.shape} but W has shape {W.shape}: b needs one entry per output "
            f"neuron, shape ({W.shape[0]},)"
        )
    if A_prev.shape[0] != W.shape[1]:
        hint = (
            "; examples are columns in loopprop, so A_prev looks transposed: pass A_prev.T"
            if A_prev.shape[1] == W.shape[1]
            else ""
        )
        raise ValueError(
            f"W has shape {W.shape} and A_prev has shape {A_prev.shape}: W·A_prev needs "
            f"A_prev.shape[0] == W.shape[1] == {W.shape[1]}{hint}"
        )
    return W, b, A_prev


def dense_forward(W, b, A_prev, *, impl: str = "tuned", check_finite: bool = True,
                  parallel: bool = True) -> np.ndarray:
    """Forward pass of a dense layer: ``Z = W·A_prev + b`` (docs/formulas.md §5).

    Parameters
    ----------
    W : (n_out, n_in) float32 or float64
    b : (n_out,) same dtype
    A_prev : (n_in, m) same dtype; examples are columns
    impl : ``"tuned"`` (register-blocked, default) or ``"naive"`` (the formula as loops)
    check_finite : refuse NaN/Inf inputs (set False to skip the scan)
    parallel : allow two or more threads on large layers

    Returns
    -------
    Z : (n_out, m) new array, ``Z[i, k] = b[i] + Σ_j W[i, j]·A_prev[j, k]``
    """
    _checks.check_choice(impl, "impl", IMPLS)
    W, b, A_prev = _layer_args(W, b, A_prev, check_finite)
    Z = np.empty((W.shape[0], A_prev.shape[1]), dtype=W.dtype)
    if impl == "naive":
        _dense_forward_naive(Z, W, b, A_prev)
    else:
        A_T = np.empty((A_prev.shape[1], A_prev.shape[0]), dtype=W.dtype)
        _dense_forward_tuned(Z, W, b, A_prev, A_T, use_threads(parallel))
    return Z


def dense_backward(dZ, W, A_prev, *, impl: str = "tuned", check_finite: bool = True,
                   parallel: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of a dense layer: the formulas of docs/formulas.md §5.

    Parameters
    ----------
    dZ : (n_out, m) gradient of the loss w.r.t. Z (already ``dA ⊙ f'(Z)``)
    W : (n_out, n_in) the layer's weights
    A_prev : (n_in, m) the activations cached by the forward pass

    Returns
    -------
    dW : (n_out, n_in) ``dZ · A_prevᵀ``
    db : (n_out,) ``sum(dZ, axis=1)`` -- summed over the batch
    dA_prev : (n_in, m) ``Wᵀ · dZ`` -- the error passed to the previous layer
    """
    _checks.check_choice(impl, "impl", IMPLS)
    dZ = _checks.as_float_array(dZ, "dZ", 2, check_finite=check_finite,
                                hint="dZ has shape (n_out, m), one column per example")
    W = _checks.as_float_array(W, "W", 2, check_finite=check_finite)
    A_prev = _checks.as_float_array(A_prev, "A_prev", 2, check_finite=check_finite,
                                    hint="A_prev has shape (n_in, m), one column per example")
    _checks.same_dtype(dZ=dZ, W=W, A_prev=A_prev)
    n_out, n_in = W.shape
    if dZ.shape[0] != n_out:
        raise ValueError(
            f"dZ has shape {dZ.shape} and W has shape {W.shape}: dZ needs one row per output "
            f"neuron (dZ.shape[0] == W.shape[0] == {n_out})"
        )
    if A_prev.shape[0] != n_in:
        raise ValueError(
            f"W has shape {W.shape} and A_prev has shape {A_prev.shape}: dW = dZ·A_prevᵀ needs "
            f"A_prev.shape[0] == W.shape[1] == {n_in}"
            + ("; A_prev looks transposed: pass A_prev.T" if A_prev.shape[1] == n_in else "")
        )
    if A_prev.shape[1] != dZ.shape[1]:
        raise ValueError(
            f"dZ has shape {dZ.shape} and A_prev has shape {A_prev.shape}: both need one column "
            f"per example, the same batch size m"
        )
    m = dZ.shape[1]
    dW = np.zeros_like(W)
    db = np.zeros(n_out, dtype=W.dtype)
    dA_prev = np.zeros((n_in, m), dtype=W.dtype)
    if impl == "naive":
        _dense_backward_naive(dW, db, dA_prev, dZ, W, A_prev)
    else:
        A_T = np.empty((m, n_in), dtype=W.dtype)
        a_t_valid = not _packed(n_out, n_in, m)  # the packed kernel reads A_prev in place
        if a_t_valid:
            _transpose(A_T, A_prev)
        _dense_backward_tuned(dW, db, dA_prev, dZ, W, A_prev, A_T, True, a_t_valid,
                              use_threads(parallel))
    return dW, db, dA_prev
