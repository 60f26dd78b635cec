"""A 2-D convolution layer, forward and backward, as explicit loops (cross-correlation, as
PyTorch's ``conv2d`` computes it; docs/formulas.md, "Convolution" derives the sums).

Images keep loopprop's layout, examples on the last axis: ``A_prev (c_in, H, W, m)``,
``Z (c_out, H_out, W_out, m)``, ``W (c_out, c_in, kh, kw)``, ``b (c_out,)``. Index names: ``i``
output channel, ``c`` input channel, ``y, x`` output pixel, ``p, q`` kernel offset, ``k`` batch
item; ``s_h, s_w`` the stride, ``pad_h, pad_w`` the zero padding, and
``u = y·s_h + p − pad_h``, ``v = x·s_w + q − pad_w`` the input pixel that offset ``(p, q)`` of
output pixel ``(y, x)`` reads (zero outside the image).

Forward::

    Z[i, y, x, k] = b[i] + Σ_c Σ_p Σ_q W[i, c, p, q] · A_prev[c, u, v, k]

Backward (each term of the forward sum, differentiated by the array it came from)::

    dW[i, c, p, q]  += Σ_y Σ_x Σ_k dZ[i, y, x, k] · A_prev[c, u, v, k]
    db[i]           += Σ_y Σ_x Σ_k dZ[i, y, x, k]
    dA_prev[c, u, v, k] += Σ_i Σ_p Σ_q W[i, c, p, q] · dZ[i, y, x, k]   (over every (y, p), (x, q)
                                                                      that reach (u, v))

``H_out = (H + 2·pad_h − kh) // s_h + 1`` and likewise ``W_out``.

The *naive* kernels are these sums typed as loops. The *tuned* kernels compute the same sums as
matrix products on the packed SIMD kernel of :mod:`loopprop.kernels.gemm`, through the
"im2col" matrix, stored transposed: one row per output position and example ``t = (y, x, k)``,
one column per weight ``r = (c, p, q)``::

    colsT[(y, x, k), (c, p, q)] = A_prev[c, u, v, k]

    Zᵀ  = colsT · Wᵀ                   then Z[i, t] = b[i] + Zᵀ[t, i]   (W seen as (c_out, K))
    dWᵀ = cols · dZᵀ                    (cols = colsTᵀ, built again from A_prev: the cache of
                                        the forward pass is its input, docs/formulas.md §14)
    dcolsT = dZᵀ · W, then dA_prev[c, u, v, k] += dcolsT[(y, x, k), (c, p, q)]   ("col2im")

Why transposed: a convolution has few output channels (8–32) and many positions × examples.
The packed kernel splits the rows of its result between threads and packs its right-hand
operand; with the many positions as rows, the threads share the work evenly and pack only the
small weight matrix, and every operand is read row-major (measured on LeNet's second layer,
``Zᵀ = colsT · Wᵀ`` ran at 40 GFLOP/s on two threads where ``Z = W · cols`` ran at 13). ``dW``,
a long sum over ``t`` into a small result, runs as ``dWᵀ = cols · dZᵀ``: the big operand is
read in place and only the small one packed (:func:`_conv2d_backward_tuned`).

Small convolutions (below ``DIRECT_MAX_WORK`` multiply-adds) skip all of that and run the
naive sums with the batch index innermost: one weight times ``m`` contiguous examples per step
(:func:`_conv2d_direct_forward`), which the copies and packing of the matrix path cannot beat
at that size.

**Register-blocked direct loops.** When the batch fills a register tile (two vectors: 16
float64 or 32 float32 examples, the training case) the tuned kernels need neither im2col nor
col2im: with examples on the last axis, ``A_prev[c, u, v, k : k + L]`` is one vector load. The
forward pass keeps ``Z[i : i + 4, y, x, k : k + 4L]`` in sixteen registers
(:func:`_fwd_tile4`); the input gradient sums ``Σ_i W[i, c, p, q] · dZ[i, y, x, k : k + 4L]``
for four input channels in registers and adds it into ``dA_prev`` once per ``(p, q)``
(:func:`_dx_tile4`); ``dW`` keeps per-lane partial sums of 4 × 4 channel tiles for one
``(p, q)``, output rows outermost (:func:`_dw_tile`). Channels and examples that fill no tile
run the same sums as plain loops. These are the sums of the naive kernels, regrouped; the
tests hold them to the naive twin and to PyTorch.
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from .._jit import PARALLEL_MIN_WORK, kernel, prange, runtime_flag, use_threads
from .dense import _transpose
from .gemm import _gemm
from .simd import vadd, vfma, vload, vsplat, vstore, vzero
from .views import borrowed_flat

# ---------------------------------------------------------------------------------------------
# naive kernels: the formulas, typed as loops
# ---------------------------------------------------------------------------------------------


@kernel
def _conv2d_forward_naive(Z, W, b, A_prev, s_h, s_w, pad_h, pad_w):
    """``Z[i, y, x, k] = b[i] + Σ_c Σ_p Σ_q W[i, c, p, q] · A_prev[c, u, v, k]`` with
    ``u = y·s_h + p − pad_h``, ``v = x·s_w + q − pad_w`` (zero outside the image).

    Shapes: Z (c_out, H_out, W_out, m) written; W (c_out, c_in, kh, kw); b (c_out,);
    A_prev (c_in, H, W, m).
    """
    c_out, c_in, kh, kw = W.shape
    H, Wd, m = A_prev.shape[1], A_prev.shape[2], A_prev.shape[3]
    H_out, W_out = Z.shape[1], Z.shape[2]
    for i in range(c_out):
        for y in range(H_out):
            for x in range(W_out):
                for k in range(m):
                    z = b[i]
                    for c in range(c_in):
                        for p in range(kh):
                            u = y * s_h + p - pad_h
                            if u < 0 or u >= H:
                                continue  # a padded row: A_prev is zero there
                            for q in range(kw):
                                v = x * s_w + q - pad_w
                                if v < 0 or v >= Wd:
                                    continue
                                z += W[i, c, p, q] * A_prev[c, u, v, k]
                    Z[i, y, x, k] = z


@kernel
def _conv2d_backward_naive(dW, db, dA_prev, dZ, W, A_prev, s_h, s_w, pad_h, pad_w):
    """The backward sums as loops; every gradient *accumulates* (``+=``).

    ``dW[i, c, p, q] += Σ_y Σ_x Σ_k dZ[i, y, x, k] · A_prev[c, u, v, k]``
    ``db[i] += Σ_y Σ_x Σ_k dZ[i, y, x, k]``
    ``dA_prev[c, u, v, k] += W[i, c, p, q] · dZ[i, y, x, k]`` for every (i, y, x, p, q)

    Shapes: dW (c_out, c_in, kh, kw); db (c_out,); dA_prev (c_in, H, W, m);
    dZ (c_out, H_out, W_out, m); W (c_out, c_in, kh, kw); A_prev (c_in, H, W, m).
    """
    c_out, c_in, kh, kw = W.shape
    H, Wd, m = A_prev.shape[1], A_prev.shape[2], A_prev.shape[3]
    H_out, W_out = dZ.shape[1], dZ.shape[2]
    for i in range(c_out):
        for y in range(H_out):
            for x in range(W_out):
                for k in range(m):
                    g = dZ[i, y, x, k]
                    # forward: Z[i, y, x, k] = b[i] + ...  ->  ∂Z/∂b[i] = 1
                    db[i] += g
                    for c in range(c_in):
                        for p in range(kh):
                            u = y * s_h + p - pad_h
                            if u < 0 or u >= H:
                                continue
                            for q in range(kw):
                                v = x * s_w + q - pad_w
                                if v < 0 or v >= Wd:
                                    continue
                                # forward: ... + W[i, c, p, q] · A_prev[c, u, v, k]
                                dW[i, c, p, q] += g * A_prev[c, u, v, k]
                                dA_prev[c, u, v, k] += W[i, c, p, q] * g


# ---------------------------------------------------------------------------------------------
# tuned kernels: im2col / col2im around the packed product
# ---------------------------------------------------------------------------------------------


@kernel(fast=True)
def _im2col_rows(colsT, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, y0, y1):
    """``colsT[(y, x, k), (c, p, q)] = A_prev[c, u, v, k]`` (0 outside the image) for the
    output rows ``y0 ≤ y < y1``."""
    c_in, H, Wd, m = A_prev.shape
    for y in range(y0, y1):
        for x in range(W_out):
            base = (y * W_out + x) * m
            for c in range(c_in):
                for p in range(kh):
                    u = y * s_h + p - pad_h
                    for q in range(kw):
                        v = x * s_w + q - pad_w
                        r = (c * kh + p) * kw + q
                        if u < 0 or u >= H or v < 0 or v >= Wd:
                            for k in range(m):
                                colsT[base + k, r] = 0.0
                        else:
                            for k in range(m):
                                colsT[base + k, r] = A_prev[c, u, v, k]


@kernel(fast=True)
def _im2col_channels(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, c0, c1):
    """``cols[(c, p, q), (y, x, k)] = A_prev[c, u, v, k]`` (0 outside the image) for the input
    channels ``c0 ≤ c < c1``: the im2col matrix untransposed, each row ``H_out·W_out``
    contiguous copies of ``m`` values (what ``dW``'s product reads in place)."""
    H, Wd, m = A_prev.shape[1], A_prev.shape[2], A_prev.shape[3]
    for c in range(c0, c1):
        for p in range(kh):
            for q in range(kw):
                r = (c * kh + p) * kw + q
                for y in range(H_out):
                    u = y * s_h + p - pad_h
                    for x in range(W_out):
                        v = x * s_w + q - pad_w
                        base = (y * W_out + x) * m
                        if u < 0 or u >= H or v < 0 or v >= Wd:
                            for k in range(m):
                                cols[r, base + k] = 0.0
                        else:
                            for k in range(m):
                                cols[r, base + k] = A_prev[c, u, v, k]


@kernel(parallel=True, separate=True)
def _im2col_untransposed(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads):
    """:func:`_im2col_channels` over every input channel, one range of channels per thread."""
    c_in = A_prev.shape[0]
    if threads > 1 and c_in > 1 and cols.size >= PARALLEL_MIN_WORK:
        chunks = min(threads, c_in)
        for t in prange(chunks):
            _im2col_channels(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out,
                             t * c_in // chunks, (t + 1) * c_in // chunks)
    else:
        _im2col_channels(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, int(0),
                         c_in)


@kernel(fast=True)
def _col2im_channels(dA_prev, dcolsT, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, c0, c1):
    """``dA_prev[c, u, v, k] += dcolsT[(y, x, k), (c, p, q)]`` for the input channels
    ``c0 ≤ c < c1`` (a channel's columns only ever write that channel)."""
    H, Wd, m = dA_prev.shape[1], dA_prev.shape[2], dA_prev.shape[3]
    for c in range(c0, c1):
        for y in range(H_out):
            for x in range(W_out):
                base = (y * W_out + x) * m
                for p in range(kh):
                    u = y * s_h + p - pad_h
                    if u < 0 or u >= H:
                        continue
                    for q in range(kw):
                        v = x * s_w + q - pad_w
                        if v < 0 or v >= Wd:
                            continue
                        r = (c * kh + p) * kw + q
                        for k in range(m):
                            dA_prev[c, u, v, k] += dcolsT[base + k, r]


@kernel(parallel=True, separate=True)
def _im2col(colsT, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads):
    """:func:`_im2col_rows` over every output row, one contiguous range of rows per thread
    when the copy is large enough to pay."""
    if threads > 1 and H_out > 1 and colsT.size >= PARALLEL_MIN_WORK:
        chunks = min(threads, H_out)
        for t in prange(chunks):
            _im2col_rows(colsT, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out,
                         t * H_out // chunks, (t + 1) * H_out // chunks)
    else:
        _im2col_rows(colsT, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, int(0),
                     H_out)


@kernel(parallel=True, separate=True)
def _col2im(dA_prev, dcolsT, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads):
    """:func:`_col2im_channels` over every input channel; threads own whole channels of
    dA_prev, so no two write one element and the sums do not depend on the thread count."""
    c_in = dA_prev.shape[0]
    if threads > 1 and c_in > 1 and dcolsT.size >= PARALLEL_MIN_WORK:
        chunks = min(threads, c_in)
        for t in prange(chunks):
            _col2im_channels(dA_prev, dcolsT, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out,
                             t * c_in // chunks, (t + 1) * c_in // chunks)
    else:
        _col2im_channels(dA_prev, dcolsT, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, int(0),
                         c_in)


#: below this many multiply-adds a convolution runs as direct loops (:func:`_conv2d_direct`):
#: the im2col copy, the transposes and the packing would cost more than the product
DIRECT_MAX_WORK = 1 << 19


@kernel
def _direct(c_out, K, T):
    """Whether a convolution with ``c_out`` outputs, ``K`` weights each and ``T`` positions ×
    examples runs as direct loops; forward and backward ask the same question."""
    return c_out * K * T < DIRECT_MAX_WORK


@kernel(fast=True, separate=True)
def _conv2d_direct_forward(Z, W, b, A_prev, s_h, s_w, pad_h, pad_w):
    """``Z[i, y, x, k] = b[i] + Σ_c Σ_p Σ_q W[i, c, p, q] · A_prev[c, u, v, k]``: the naive
    kernel's sum with the batch index ``k`` innermost, so each step is one weight times a
    contiguous vector of ``m`` examples (examples on the last axis make this free).

    Shapes: Z (c_out, H_out, W_out, m) written; W (c_out, c_in, kh, kw); b (c_out,);
    A_prev (c_in, H, W, m).
    """
    c_out, c_in, kh, kw = W.shape
    H, Wd, m = A_prev.shape[1], A_prev.shape[2], A_prev.shape[3]
    H_out, W_out = Z.shape[1], Z.shape[2]
    mu = np.uint64(m)
    for i in range(c_out):
        for y in range(H_out):
            for x in range(W_out):
                z = Z[i, y, x]
                for k in range(mu):
                    z[k] = b[i]
                for c in range(c_in):
                    for p in range(kh):
                        u = y * s_h + p - pad_h
                        if u < 0 or u >= H:
                            continue
                        for q in range(kw):
                            v = x * s_w + q - pad_w
                            if v < 0 or v >= Wd:
                                continue
                            w = W[i, c, p, q]
                            a = A_prev[c, u, v]
                            for k in range(mu):
                                z[k] += w * a[k]


@kernel(fast=True, separate=True)
def _conv2d_direct_backward(dW, db, dA_prev, dZ, W, A_prev, s_h, s_w, pad_h, pad_w,
                            need_dA_prev):
    """The naive kernel's backward sums with ``k`` innermost; every gradient accumulates.

    Shapes: dW (c_out, c_in, kh, kw); db (c_out,); dA_prev (c_in, H, W, m);
    dZ (c_out, H_out, W_out, m); W (c_out, c_in, kh, kw); A_prev (c_in, H, W, m).
    """
    c_out, c_in, kh, kw = W.shape
    H, Wd, m = A_prev.shape[1], A_prev.shape[2], A_prev.shape[3]
    H_out, W_out = dZ.shape[1], dZ.shape[2]
    mu = np.uint64(m)
    for i in range(c_out):
        sb = dZ.dtype.type(0)
        for y in range(H_out):
            for x in range(W_out):
                g = dZ[i, y, x]
                for k in range(mu):
                    sb += g[k]
                for c in range(c_in):
                    for p in range(kh):
                        u = y * s_h + p - pad_h
                        if u < 0 or u >= H:
                            continue
                        for q in range(kw):
                            v = x * s_w + q - pad_w
                            if v < 0 or v >= Wd:
                                continue
                            a = A_prev[c, u, v]
                            acc = dZ.dtype.type(0)
                            for k in range(mu):
                                acc += g[k] * a[k]
                            dW[i, c, p, q] += acc
                            if need_dA_prev:
                                w = W[i, c, p, q]
                                d = dA_prev[c, u, v]
                                for k in range(mu):
                                    d[k] += w * g[k]
        db[i] += sb


# ---------------------------------------------------------------------------------------------
# register-blocked direct loops (no im2col): 4 channels × 2 vectors of examples in registers
# ---------------------------------------------------------------------------------------------

#: channels per register tile of the SIMD direct kernels
SIMD_CH = 4


@kernel
def _simd(m, itemsize):
    """Whether the register-blocked direct kernels take the convolution: a batch of at least
    one tile of examples (two registers: 16 float64 or 32 float32)."""
    return m >= 2 * (64 // itemsize)


@kernel(fast=True)
def _fwd_tile(Zf, Wf, b, Af, i0, y, x, k0, c_in, H, Wd, m, kh, kw, s_h, s_w, pad_h, pad_w,
              H_out, W_out):
    """``Z[i0 + a, y, x, k0 : k0 + 2L]`` for ``a < 4`` (L lanes per register) in eight
    registers: ``Σ_c Σ_p Σ_q W[i, c, p, q] · A_prev[c, u, v, k]`` with one load of two vectors
    of examples and four broadcast weights per eight fused multiply-adds. Flat arrays."""
    L = 64 // Af.itemsize
    K = c_in * kh * kw
    z00 = vsplat(b[i0])
    z01 = z00
    z10 = vsplat(b[i0 + 1])
    z11 = z10
    z20 = vsplat(b[i0 + 2])
    z21 = z20
    z30 = vsplat(b[i0 + 3])
    z31 = z30
    for c in range(c_in):
        for p in range(kh):
            u = y * s_h + p - pad_h
            if u < 0 or u >= H:
                continue  # zero padding: nothing to add
            for q in range(kw):
                v = x * s_w + q - pad_w
                if v < 0 or v >= Wd:
                    continue
                a = ((c * H + u) * Wd + v) * m + k0
                a0 = vload(Af, a)
                a1 = vload(Af, a + L)
                w = (i0 * c_in + c) * kh * kw + p * kw + q
                w0 = vsplat(Wf[w])
                z00 = vfma(w0, a0, z00)
                z01 = vfma(w0, a1, z01)
                w1 = vsplat(Wf[w + K])
                z10 = vfma(w1, a0, z10)
                z11 = vfma(w1, a1, z11)
                w2 = vsplat(Wf[w + 2 * K])
                z20 = vfma(w2, a0, z20)
                z21 = vfma(w2, a1, z21)
                w3 = vsplat(Wf[w + 3 * K])
                z30 = vfma(w3, a0, z30)
                z31 = vfma(w3, a1, z31)
    plane = H_out * W_out * m
    z = ((i0 * H_out + y) * W_out + x) * m + k0
    vstore(Zf, z, z00)
    vstore(Zf, z + L, z01)
    vstore(Zf, z + plane, z10)
    vstore(Zf, z + plane + L, z11)
    vstore(Zf, z + 2 * plane, z20)
    vstore(Zf, z + 2 * plane + L, z21)
    vstore(Zf, z + 3 * plane, z30)
    vstore(Zf, z + 3 * plane + L, z31)


@kernel(fast=True)
def _fwd_tile4(Zf, Wf, b, Af, i0, y, x, k0, c_in, H, Wd, m, kh, kw, s_h, s_w, pad_h, pad_w,
               H_out, W_out):
    """:func:`_fwd_tile` with four vectors of examples (``k0 : k0 + 4L``) in sixteen
    registers: enough independent sums to keep both FMA units busy through their latency
    (with eight, float32 ran 2.5× slower at the benchmark's shape)."""
    L = 64 // Af.itemsize
    K = c_in * kh * kw
    z00 = vsplat(b[i0])
    z01 = z00
    z02 = z00
    z03 = z00
    z10 = vsplat(b[i0 + 1])
    z11 = z10
    z12 = z10
    z13 = z10
    z20 = vsplat(b[i0 + 2])
    z21 = z20
    z22 = z20
    z23 = z20
    z30 = vsplat(b[i0 + 3])
    z31 = z30
    z32 = z30
    z33 = z30
    for c in range(c_in):
        for p in range(kh):
            u = y * s_h + p - pad_h
            if u < 0 or u >= H:
                continue
            for q in range(kw):
                v = x * s_w + q - pad_w
                if v < 0 or v >= Wd:
                    continue
                a = ((c * H + u) * Wd + v) * m + k0
                a0 = vload(Af, a)
                a1 = vload(Af, a + L)
                a2 = vload(Af, a + 2 * L)
                a3 = vload(Af, a + 3 * L)
                w = (i0 * c_in + c) * kh * kw + p * kw + q
                w0 = vsplat(Wf[w])
                z00 = vfma(w0, a0, z00)
                z01 = vfma(w0, a1, z01)
                z02 = vfma(w0, a2, z02)
                z03 = vfma(w0, a3, z03)
                w1 = vsplat(Wf[w + K])
                z10 = vfma(w1, a0, z10)
                z11 = vfma(w1, a1, z11)
                z12 = vfma(w1, a2, z12)
                z13 = vfma(w1, a3, z13)
                w2 = vsplat(Wf[w + 2 * K])
                z20 = vfma(w2, a0, z20)
                z21 = vfma(w2, a1, z21)
                z22 = vfma(w2, a2, z22)
                z23 = vfma(w2, a3, z23)
                w3 = vsplat(Wf[w + 3 * K])
                z30 = vfma(w3, a0, z30)
                z31 = vfma(w3, a1, z31)
                z32 = vfma(w3, a2, z32)
                z33 = vfma(w3, a3, z33)
    plane = H_out * W_out * m
    z = ((i0 * H_out + y) * W_out + x) * m + k0
    vstore(Zf, z, z00)
    vstore(Zf, z + L, z01)
    vstore(Zf, z + 2 * L, z02)
    vstore(Zf, z + 3 * L, z03)
    z += plane
    vstore(Zf, z, z10)
    vstore(Zf, z + L, z11)
    vstore(Zf, z + 2 * L, z12)
    vstore(Zf, z + 3 * L, z13)
    z += plane
    vstore(Zf, z, z20)
    vstore(Zf, z + L, z21)
    vstore(Zf, z + 2 * L, z22)
    vstore(Zf, z + 3 * L, z23)
    z += plane
    vstore(Zf, z, z30)
    vstore(Zf, z + L, z31)
    vstore(Zf, z + 2 * L, z32)
    vstore(Zf, z + 3 * L, z33)


@kernel(fast=True, separate=True)
def _fwd_plain(Z, W, b, A_prev, i0, i1, k0, k1, y0, y1, s_h, s_w, pad_h, pad_w):
    """``Z[i, y, x, k]`` for ``i0 ≤ i < i1``, ``y0 ≤ y < y1``, ``k0 ≤ k < k1``: the sums with
    the examples innermost (what the register tiles leave over)."""
    c_out, c_in, kh, kw = W.shape
    H, Wd = A_prev.shape[1], A_prev.shape[2]
    W_out = Z.shape[2]
    w = k1 - k0
    for i in range(i0, i1):
        for y in range(y0, y1):
            for x in range(W_out):
                z = Z[i, y, x, k0:k1]
                for k in range(w):
                    z[k] = b[i]
                for c in range(c_in):
                    for p in range(kh):
                        u = y * s_h + p - pad_h
                        if u < 0 or u >= H:
                            continue
                        for q in range(kw):
                            v = x * s_w + q - pad_w
                            if v < 0 or v >= Wd:
                                continue
                            wt = W[i, c, p, q]
                            a = A_prev[c, u, v, k0:k1]
                            for k in range(w):
                                z[k] += wt * a[k]


@kernel(fast=True, separate=True)
def _fwd_row_tiles(Zf, Wf, b, Af, i0, y, n4, two, c_in, H, Wd, m, kh, kw, s_h, s_w, pad_h,
                   pad_w, H_out, W_out):
    """Every register tile of output row ``y``, channels ``i0 : i0 + 4``."""
    L = 64 // Af.itemsize
    for x in range(W_out):
        for kk in range(n4):
            _fwd_tile4(Zf, Wf, b, Af, i0, y, x, kk * 4 * L, c_in, H, Wd, m, kh, kw, s_h, s_w,
                       pad_h, pad_w, H_out, W_out)
        if two:
            _fwd_tile(Zf, Wf, b, Af, i0, y, x, n4 * 4 * L, c_in, H, Wd, m, kh, kw, s_h, s_w,
                      pad_h, pad_w, H_out, W_out)


@kernel(fast=True, parallel=True, separate=True)
def _conv2d_simd_forward(Z, W, b, A_prev, s_h, s_w, pad_h, pad_w, threads):
    """Forward without im2col: tiles of 4 output channels × 2L examples
    (:func:`_fwd_tile`) over every output pixel, threads splitting (channel tile, output row)
    pairs; leftover channels and examples by :func:`_fwd_plain`. Shapes as
    :func:`_conv2d_forward_naive`."""
    c_out, c_in, kh, kw = W.shape
    H, Wd, m = A_prev.shape[1], A_prev.shape[2], A_prev.shape[3]
    H_out, W_out = Z.shape[1], Z.shape[2]
    Zf = borrowed_flat(Z)
    Wf = borrowed_flat(W)
    Af = borrowed_flat(A_prev)
    L = 64 // A_prev.itemsize
    n_i = c_out // SIMD_CH
    n4 = m // (4 * L)  # tiles of four vectors of examples,
    two = m - n4 * 4 * L >= 2 * L  # then one of two
    done = n4 * 4 * L + (2 * L if two else 0)
    jobs = n_i * H_out
    if threads > 1 and jobs > 1:
        for t in prange(jobs):
            _fwd_row_tiles(Zf, Wf, b, Af, (t // H_out) * SIMD_CH, t % H_out, n4, two, c_in, H,
                           Wd, m, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out)
    else:
        for t in range(jobs):
            _fwd_row_tiles(Zf, Wf, b, Af, (t // H_out) * SIMD_CH, t % H_out, n4, two, c_in, H,
                           Wd, m, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out)
    if done < m:  # examples left over, main channels
        _fwd_plain(Z, W, b, A_prev, 0, n_i * SIMD_CH, done, m, 0, H_out, s_h, s_w, pad_h,
                   pad_w)
    if n_i * SIMD_CH < c_out:  # channels left over, every example
        _fwd_plain(Z, W, b, A_prev, n_i * SIMD_CH, c_out, 0, m, 0, H_out, s_h, s_w, pad_h,
                   pad_w)


@kernel(fast=True)
def _dx_tile(dAf, Wf, dZf, c0, y, x, k0, c_out, c_in, H, Wd, m, kh, kw, s_h, s_w, pad_h,
             pad_w, H_out, W_out):
    """For output pixel ``(y, x)``, examples ``k0 : k0 + 2L`` and input channels
    ``c0 : c0 + 4``: ``dA_prev[c, u, v, k] += Σ_i W[i, c, p, q] · dZ[i, y, x, k]`` for every
    kernel offset ``(p, q)`` inside the image, the sum over ``i`` in eight registers."""
    L = 64 // dAf.itemsize
    K = c_in * kh * kw
    plane = H_out * W_out * m
    g = ((y * W_out) + x) * m + k0  # dZ[0, y, x, k0]
    for p in range(kh):
        u = y * s_h + p - pad_h
        if u < 0 or u >= H:
            continue
        for q in range(kw):
            v = x * s_w + q - pad_w
            if v < 0 or v >= Wd:
                continue
            d00 = vzero(dAf)
            d01 = d00
            d10 = d00
            d11 = d00
            d20 = d00
            d21 = d00
            d30 = d00
            d31 = d00
            w = c0 * kh * kw + p * kw + q  # W[0, c0, p, q]
            for i in range(c_out):
                g0 = vload(dZf, g + i * plane)
                g1 = vload(dZf, g + i * plane + L)
                wi = w + i * K
                w0 = vsplat(Wf[wi])
                d00 = vfma(w0, g0, d00)
                d01 = vfma(w0, g1, d01)
                w1 = vsplat(Wf[wi + kh * kw])
                d10 = vfma(w1, g0, d10)
                d11 = vfma(w1, g1, d11)
                w2 = vsplat(Wf[wi + 2 * kh * kw])
                d20 = vfma(w2, g0, d20)
                d21 = vfma(w2, g1, d21)
                w3 = vsplat(Wf[wi + 3 * kh * kw])
                d30 = vfma(w3, g0, d30)
                d31 = vfma(w3, g1, d31)
            a = ((c0 * H + u) * Wd + v) * m + k0
            step = H * Wd * m  # one input channel
            vstore(dAf, a, vadd(vload(dAf, a), d00))
            vstore(dAf, a + L, vadd(vload(dAf, a + L), d01))
            vstore(dAf, a + step, vadd(vload(dAf, a + step), d10))
            vstore(dAf, a + step + L, vadd(vload(dAf, a + step + L), d11))
            vstore(dAf, a + 2 * step, vadd(vload(dAf, a + 2 * step), d20))
            vstore(dAf, a + 2 * step + L, vadd(vload(dAf, a + 2 * step + L), d21))
            vstore(dAf, a + 3 * step, vadd(vload(dAf, a + 3 * step), d30))
            vstore(dAf, a + 3 * step + L, vadd(vload(dAf, a + 3 * step + L), d31))


@kernel(fast=True)
def _dx_tile4(dAf, Wf, dZf, c0, y, x, k0, c_out, c_in, H, Wd, m, kh, kw, s_h, s_w, pad_h,
              pad_w, H_out, W_out):
    """:func:`_dx_tile` with four vectors of examples (``k0 : k0 + 4L``), sixteen sums."""
    L = 64 // dAf.itemsize
    K = c_in * kh * kw
    plane = H_out * W_out * m
    g = ((y * W_out) + x) * m + k0
    for p in range(kh):
        u = y * s_h + p - pad_h
        if u < 0 or u >= H:
            continue
        for q in range(kw):
            v = x * s_w + q - pad_w
            if v < 0 or v >= Wd:
                continue
            d00 = vzero(dAf)
            d01 = d00
            d02 = d00
            d03 = d00
            d10 = d00
            d11 = d00
            d12 = d00
            d13 = d00
            d20 = d00
            d21 = d00
            d22 = d00
            d23 = d00
            d30 = d00
            d31 = d00
            d32 = d00
            d33 = d00
            w = c0 * kh * kw + p * kw + q
            for i in range(c_out):
                gi = g + i * plane
                g0 = vload(dZf, gi)
                g1 = vload(dZf, gi + L)
                g2 = vload(dZf, gi + 2 * L)
                g3 = vload(dZf, gi + 3 * L)
                wi = w + i * K
                w0 = vsplat(Wf[wi])
                d00 = vfma(w0, g0, d00)
                d01 = vfma(w0, g1, d01)
                d02 = vfma(w0, g2, d02)
                d03 = vfma(w0, g3, d03)
                w1 = vsplat(Wf[wi + kh * kw])
                d10 = vfma(w1, g0, d10)
                d11 = vfma(w1, g1, d11)
                d12 = vfma(w1, g2, d12)
                d13 = vfma(w1, g3, d13)
                w2 = vsplat(Wf[wi + 2 * kh * kw])
                d20 = vfma(w2, g0, d20)
                d21 = vfma(w2, g1, d21)
                d22 = vfma(w2, g2, d22)
                d23 = vfma(w2, g3, d23)
                w3 = vsplat(Wf[wi + 3 * kh * kw])
                d30 = vfma(w3, g0, d30)
                d31 = vfma(w3, g1, d31)
                d32 = vfma(w3, g2, d32)
                d33 = vfma(w3, g3, d33)
            a = ((c0 * H + u) * Wd + v) * m + k0
            step = H * Wd * m
            vstore(dAf, a, vadd(vload(dAf, a), d00))
            vstore(dAf, a + L, vadd(vload(dAf, a + L), d01))
            vstore(dAf, a + 2 * L, vadd(vload(dAf, a + 2 * L), d02))
            vstore(dAf, a + 3 * L, vadd(vload(dAf, a + 3 * L), d03))
            a += step
            vstore(dAf, a, vadd(vload(dAf, a), d10))
            vstore(dAf, a + L, vadd(vload(dAf, a + L), d11))
            vstore(dAf, a + 2 * L, vadd(vload(dAf, a + 2 * L), d12))
            vstore(dAf, a + 3 * L, vadd(vload(dAf, a + 3 * L), d13))
            a += step
            vstore(dAf, a, vadd(vload(dAf, a), d20))
            vstore(dAf, a + L, vadd(vload(dAf, a + L), d21))
            vstore(dAf, a + 2 * L, vadd(vload(dAf, a + 2 * L), d22))
            vstore(dAf, a + 3 * L, vadd(vload(dAf, a + 3 * L), d23))
            a += step
            vstore(dAf, a, vadd(vload(dAf, a), d30))
            vstore(dAf, a + L, vadd(vload(dAf, a + L), d31))
            vstore(dAf, a + 2 * L, vadd(vload(dAf, a + 2 * L), d32))
            vstore(dAf, a + 3 * L, vadd(vload(dAf, a + 3 * L), d33))


@kernel(fast=True, separate=True)
def _dx_plain(dA_prev, W, dZ, c0, c1, k0, k1, s_h, s_w, pad_h, pad_w):
    """``dA_prev[c, u, v, k] += Σ_i W[i, c, p, q] · dZ[i, y, x, k]`` for ``c0 ≤ c < c1`` and
    ``k0 ≤ k < k1`` (what the register tiles leave over), examples innermost."""
    c_out, c_in, kh, kw = W.shape
    H, Wd = dA_prev.shape[1], dA_prev.shape[2]
    H_out, W_out = dZ.shape[1], dZ.shape[2]
    w = k1 - k0
    for c in range(c0, c1):
        for y in range(H_out):
            for x in range(W_out):
                for p in range(kh):
                    u = y * s_h + p - pad_h
                    if u < 0 or u >= H:
                        continue
                    for q in range(kw):
                        v = x * s_w + q - pad_w
                        if v < 0 or v >= Wd:
                            continue
                        d = dA_prev[c, u, v, k0:k1]
                        for i in range(c_out):
                            wt = W[i, c, p, q]
                            g = dZ[i, y, x, k0:k1]
                            for k in range(w):
                                d[k] += wt * g[k]


@kernel(fast=True, separate=True)
def _dx_job(dAf, Wf, dZf, c0, kt, n4, c_out, c_in, H, Wd, m, kh, kw, s_h, s_w, pad_h, pad_w,
            H_out, W_out):
    """Input channels ``c0 : c0 + 4``, example tile ``kt`` (of four vectors below ``n4``, else
    the one of two), over every output pixel."""
    L = 64 // dAf.itemsize
    for y in range(H_out):
        for x in range(W_out):
            if kt < n4:
                _dx_tile4(dAf, Wf, dZf, c0, y, x, kt * 4 * L, c_out, c_in, H, Wd, m, kh, kw,
                          s_h, s_w, pad_h, pad_w, H_out, W_out)
            else:
                _dx_tile(dAf, Wf, dZf, c0, y, x, n4 * 4 * L, c_out, c_in, H, Wd, m, kh, kw,
                         s_h, s_w, pad_h, pad_w, H_out, W_out)


@kernel(fast=True, parallel=True, separate=True)
def _conv2d_simd_backward_dx(dA_prev, W, dZ, s_h, s_w, pad_h, pad_w, threads):
    """``dA_prev += `` the input gradient without im2col or col2im: tiles of 4 input channels
    × 2L examples (:func:`_dx_tile`). Examples never mix, so threads split (channel tile,
    example tile) pairs and each owns what it writes. Leftovers by :func:`_dx_plain`."""
    c_out, c_in, kh, kw = W.shape
    H, Wd, m = dA_prev.shape[1], dA_prev.shape[2], dA_prev.shape[3]
    H_out, W_out = dZ.shape[1], dZ.shape[2]
    dAf = borrowed_flat(dA_prev)
    Wf = borrowed_flat(W)
    dZf = borrowed_flat(dZ)
    L = 64 // dA_prev.itemsize
    n_c = c_in // SIMD_CH
    n4 = m // (4 * L)  # tiles of four vectors of examples, then one of two
    n_k = n4 + (1 if m - n4 * 4 * L >= 2 * L else 0)
    done = n4 * 4 * L + (n_k - n4) * 2 * L
    jobs = n_c * n_k
    if threads > 1 and jobs > 1:
        for t in prange(jobs):
            _dx_job(dAf, Wf, dZf, (t // n_k) * SIMD_CH, t % n_k, n4, c_out, c_in, H, Wd, m, kh,
                    kw, s_h, s_w, pad_h, pad_w, H_out, W_out)
    else:
        for t in range(jobs):
            _dx_job(dAf, Wf, dZf, (t // n_k) * SIMD_CH, t % n_k, n4, c_out, c_in, H, Wd, m, kh,
                    kw, s_h, s_w, pad_h, pad_w, H_out, W_out)
    if done < m:
        _dx_plain(dA_prev, W, dZ, 0, n_c * SIMD_CH, done, m, s_h, s_w, pad_h, pad_w)
    if n_c * SIMD_CH < c_in:
        _dx_plain(dA_prev, W, dZ, n_c * SIMD_CH, c_in, 0, m, s_h, s_w, pad_h, pad_w)


@kernel(fast=True)
def _dw_tile(Pf, dZf, Af, i0, c0, p, q, y, c_in, H, Wd, m, kh, kw, s_h, s_w, pad_h, pad_w,
             H_out, W_out, nv):
    """Output row ``y``'s share of ``dW[i0 : i0 + 4, c0 : c0 + 4, p, q]``: sixteen sums
    ``Σ_x Σ_k dZ[i, y, x, k] · A_prev[c, u, v, k]``, each a register of ``L`` partial sums over
    the examples, kept between rows in ``Pf`` (``dW``'s layout × ``L``). Four loads of ``dZ``
    and four of ``A_prev`` per sixteen fused multiply-adds; the four channels share ``(u, v)``,
    so one bounds test serves them all. ``nv`` whole vectors of examples."""
    L = 64 // Af.itemsize
    u = y * s_h + p - pad_h
    if u < 0 or u >= H:
        return
    sc = kh * kw * L  # next input channel in Pf
    si = c_in * sc  # next output channel in Pf
    base = ((i0 * c_in + c0) * kh * kw + p * kw + q) * L
    s00 = vload(Pf, base + 0 * si + 0 * sc)
    s01 = vload(Pf, base + 0 * si + 1 * sc)
    s02 = vload(Pf, base + 0 * si + 2 * sc)
    s03 = vload(Pf, base + 0 * si + 3 * sc)
    s10 = vload(Pf, base + 1 * si + 0 * sc)
    s11 = vload(Pf, base + 1 * si + 1 * sc)
    s12 = vload(Pf, base + 1 * si + 2 * sc)
    s13 = vload(Pf, base + 1 * si + 3 * sc)
    s20 = vload(Pf, base + 2 * si + 0 * sc)
    s21 = vload(Pf, base + 2 * si + 1 * sc)
    s22 = vload(Pf, base + 2 * si + 2 * sc)
    s23 = vload(Pf, base + 2 * si + 3 * sc)
    s30 = vload(Pf, base + 3 * si + 0 * sc)
    s31 = vload(Pf, base + 3 * si + 1 * sc)
    s32 = vload(Pf, base + 3 * si + 2 * sc)
    s33 = vload(Pf, base + 3 * si + 3 * sc)
    zplane = H_out * W_out * m
    aplane = H * Wd * m
    for x in range(W_out):
        v = x * s_w + q - pad_w
        if v < 0 or v >= Wd:
            continue
        g = ((i0 * H_out + y) * W_out + x) * m
        a = ((c0 * H + u) * Wd + v) * m
        for kv in range(nv):
            o = kv * L
            g0 = vload(dZf, g + o)
            g1 = vload(dZf, g + zplane + o)
            g2 = vload(dZf, g + 2 * zplane + o)
            g3 = vload(dZf, g + 3 * zplane + o)
            a0 = vload(Af, a + o)
            a1 = vload(Af, a + aplane + o)
            a2 = vload(Af, a + 2 * aplane + o)
            a3 = vload(Af, a + 3 * aplane + o)
            s00 = vfma(g0, a0, s00)
            s01 = vfma(g0, a1, s01)
            s02 = vfma(g0, a2, s02)
            s03 = vfma(g0, a3, s03)
            s10 = vfma(g1, a0, s10)
            s11 = vfma(g1, a1, s11)
            s12 = vfma(g1, a2, s12)
            s13 = vfma(g1, a3, s13)
            s20 = vfma(g2, a0, s20)
            s21 = vfma(g2, a1, s21)
            s22 = vfma(g2, a2, s22)
            s23 = vfma(g2, a3, s23)
            s30 = vfma(g3, a0, s30)
            s31 = vfma(g3, a1, s31)
            s32 = vfma(g3, a2, s32)
            s33 = vfma(g3, a3, s33)
    vstore(Pf, base + 0 * si + 0 * sc, s00)
    vstore(Pf, base + 0 * si + 1 * sc, s01)
    vstore(Pf, base + 0 * si + 2 * sc, s02)
    vstore(Pf, base + 0 * si + 3 * sc, s03)
    vstore(Pf, base + 1 * si + 0 * sc, s10)
    vstore(Pf, base + 1 * si + 1 * sc, s11)
    vstore(Pf, base + 1 * si + 2 * sc, s12)
    vstore(Pf, base + 1 * si + 3 * sc, s13)
    vstore(Pf, base + 2 * si + 0 * sc, s20)
    vstore(Pf, base + 2 * si + 1 * sc, s21)
    vstore(Pf, base + 2 * si + 2 * sc, s22)
    vstore(Pf, base + 2 * si + 3 * sc, s23)
    vstore(Pf, base + 3 * si + 0 * sc, s30)
    vstore(Pf, base + 3 * si + 1 * sc, s31)
    vstore(Pf, base + 3 * si + 2 * sc, s32)
    vstore(Pf, base + 3 * si + 3 * sc, s33)


@kernel(fast=True)
def _dw_tile1(Pf, dZf, Af, i0, c, p, q, y, c_in, H, Wd, m, kh, kw, s_h, s_w, pad_h, pad_w,
              H_out, W_out, n4):
    """:func:`_dw_tile` for one input channel (the channels beyond the last tile of four: an
    image's 1 or 3): ``dW[i0 : i0 + 4, c, p, q]``, four vectors of examples at a time
    (``n4`` groups), sixteen sums folded into ``Pf`` at the end of the row."""
    L = 64 // Af.itemsize
    u = y * s_h + p - pad_h
    if u < 0 or u >= H:
        return
    s00 = vzero(Af)
    s01 = vzero(Af)
    s02 = vzero(Af)
    s03 = vzero(Af)
    s10 = vzero(Af)
    s11 = vzero(Af)
    s12 = vzero(Af)
    s13 = vzero(Af)
    s20 = vzero(Af)
    s21 = vzero(Af)
    s22 = vzero(Af)
    s23 = vzero(Af)
    s30 = vzero(Af)
    s31 = vzero(Af)
    s32 = vzero(Af)
    s33 = vzero(Af)
    zplane = H_out * W_out * m
    for x in range(W_out):
        v = x * s_w + q - pad_w
        if v < 0 or v >= Wd:
            continue
        g = ((i0 * H_out + y) * W_out + x) * m
        a = ((c * H + u) * Wd + v) * m
        for kg in range(n4):
            o = kg * 4 * L
            a0 = vload(Af, a + o)
            a1 = vload(Af, a + o + L)
            a2 = vload(Af, a + o + 2 * L)
            a3 = vload(Af, a + o + 3 * L)
            g00 = vload(dZf, g + 0 * zplane + o + 0 * L)
            g01 = vload(dZf, g + 0 * zplane + o + 1 * L)
            g02 = vload(dZf, g + 0 * zplane + o + 2 * L)
            g03 = vload(dZf, g + 0 * zplane + o + 3 * L)
            g10 = vload(dZf, g + 1 * zplane + o + 0 * L)
            g11 = vload(dZf, g + 1 * zplane + o + 1 * L)
            g12 = vload(dZf, g + 1 * zplane + o + 2 * L)
            g13 = vload(dZf, g + 1 * zplane + o + 3 * L)
            g20 = vload(dZf, g + 2 * zplane + o + 0 * L)
            g21 = vload(dZf, g + 2 * zplane + o + 1 * L)
            g22 = vload(dZf, g + 2 * zplane + o + 2 * L)
            g23 = vload(dZf, g + 2 * zplane + o + 3 * L)
            g30 = vload(dZf, g + 3 * zplane + o + 0 * L)
            g31 = vload(dZf, g + 3 * zplane + o + 1 * L)
            g32 = vload(dZf, g + 3 * zplane + o + 2 * L)
            g33 = vload(dZf, g + 3 * zplane + o + 3 * L)
            s00 = vfma(g00, a0, s00)
            s01 = vfma(g01, a1, s01)
            s02 = vfma(g02, a2, s02)
            s03 = vfma(g03, a3, s03)
            s10 = vfma(g10, a0, s10)
            s11 = vfma(g11, a1, s11)
            s12 = vfma(g12, a2, s12)
            s13 = vfma(g13, a3, s13)
            s20 = vfma(g20, a0, s20)
            s21 = vfma(g21, a1, s21)
            s22 = vfma(g22, a2, s22)
            s23 = vfma(g23, a3, s23)
            s30 = vfma(g30, a0, s30)
            s31 = vfma(g31, a1, s31)
            s32 = vfma(g32, a2, s32)
            s33 = vfma(g33, a3, s33)
    si = c_in * kh * kw * L
    base = ((i0 * c_in + c) * kh * kw + p * kw + q) * L
    vstore(Pf, base, vadd(vload(Pf, base), vadd(vadd(s00, s01), vadd(s02, s03))))
    vstore(Pf, base + si, vadd(vload(Pf, base + si), vadd(vadd(s10, s11), vadd(s12, s13))))
    vstore(Pf, base + 2 * si, vadd(vload(Pf, base + 2 * si),
                                   vadd(vadd(s20, s21), vadd(s22, s23))))
    vstore(Pf, base + 3 * si, vadd(vload(Pf, base + 3 * si),
                                   vadd(vadd(s30, s31), vadd(s32, s33))))


@kernel(fast=True)
def _dw_tile1_2(Pf, dZf, Af, i0, c, p, q, y, c_in, H, Wd, m, kh, kw, s_h, s_w, pad_h, pad_w,
                H_out, W_out, k0):
    """:func:`_dw_tile1` for one group of two vectors of examples at ``k0`` (a float32 batch
    of 32 has no group of four)."""
    L = 64 // Af.itemsize
    u = y * s_h + p - pad_h
    if u < 0 or u >= H:
        return
    s00 = vzero(Af)
    s01 = vzero(Af)
    s10 = vzero(Af)
    s11 = vzero(Af)
    s20 = vzero(Af)
    s21 = vzero(Af)
    s30 = vzero(Af)
    s31 = vzero(Af)
    zplane = H_out * W_out * m
    for x in range(W_out):
        v = x * s_w + q - pad_w
        if v < 0 or v >= Wd:
            continue
        g = ((i0 * H_out + y) * W_out + x) * m
        a = ((c * H + u) * Wd + v) * m + k0
        a0 = vload(Af, a)
        a1 = vload(Af, a + L)
        g00 = vload(dZf, g + 0 * zplane + k0 + 0 * L)
        g01 = vload(dZf, g + 0 * zplane + k0 + 1 * L)
        g10 = vload(dZf, g + 1 * zplane + k0 + 0 * L)
        g11 = vload(dZf, g + 1 * zplane + k0 + 1 * L)
        g20 = vload(dZf, g + 2 * zplane + k0 + 0 * L)
        g21 = vload(dZf, g + 2 * zplane + k0 + 1 * L)
        g30 = vload(dZf, g + 3 * zplane + k0 + 0 * L)
        g31 = vload(dZf, g + 3 * zplane + k0 + 1 * L)
        s00 = vfma(g00, a0, s00)
        s01 = vfma(g01, a1, s01)
        s10 = vfma(g10, a0, s10)
        s11 = vfma(g11, a1, s11)
        s20 = vfma(g20, a0, s20)
        s21 = vfma(g21, a1, s21)
        s30 = vfma(g30, a0, s30)
        s31 = vfma(g31, a1, s31)
    si = c_in * kh * kw * L
    base = ((i0 * c_in + c) * kh * kw + p * kw + q) * L
    vstore(Pf, base, vadd(vload(Pf, base), vadd(s00, s01)))
    vstore(Pf, base + si, vadd(vload(Pf, base + si), vadd(s10, s11)))
    vstore(Pf, base + 2 * si, vadd(vload(Pf, base + 2 * si), vadd(s20, s21)))
    vstore(Pf, base + 3 * si, vadd(vload(Pf, base + 3 * si), vadd(s30, s31)))


@kernel(fast=True, separate=True)
def _dw_plain(dW, dZ, A_prev, i0, i1, c0, c1, k0, k1, s_h, s_w, pad_h, pad_w):
    """``dW[i, c, p, q] += Σ_y Σ_x Σ_k dZ[i, y, x, k] · A_prev[c, u, v, k]`` for
    ``i0 ≤ i < i1``, ``c0 ≤ c < c1``, ``k0 ≤ k < k1`` (what the register tiles leave over)."""
    kh, kw = dW.shape[2], dW.shape[3]
    H, Wd = A_prev.shape[1], A_prev.shape[2]
    H_out, W_out = dZ.shape[1], dZ.shape[2]
    w = k1 - k0
    for i in range(i0, i1):
        for c in range(c0, c1):
            for p in range(kh):
                for q in range(kw):
                    acc = 0.0
                    for y in range(H_out):
                        u = y * s_h + p - pad_h
                        if u < 0 or u >= H:
                            continue
                        for x in range(W_out):
                            v = x * s_w + q - pad_w
                            if v < 0 or v >= Wd:
                                continue
                            g = dZ[i, y, x, k0:k1]
                            a = A_prev[c, u, v, k0:k1]
                            for k in range(w):
                                acc += g[k] * a[k]
                    dW[i, c, p, q] += acc


@kernel(fast=True, parallel=True, separate=True)
def _conv2d_simd_backward_dw(dW, db, dZ, A_prev, partial, s_h, s_w, pad_h, pad_w, threads):
    """``dW += Σ_y Σ_x Σ_k dZ · A_prev`` and ``db += Σ dZ`` without im2col: the output rows
    outermost (one row of ``dZ`` and the input rows it reads stay in L2), every tile of
    :func:`_dw_tile` per row, the tiles split between threads (each owns its sums), and the
    lanes of ``partial`` (``dW``'s layout × ``L``, scratch) summed at the end. Examples beyond
    the last whole vector and channels beyond the last tile of four by :func:`_dw_plain`."""
    c_out, c_in, kh, kw = dW.shape
    H, Wd, m = A_prev.shape[1], A_prev.shape[2], A_prev.shape[3]
    H_out, W_out = dZ.shape[1], dZ.shape[2]
    L = 64 // A_prev.itemsize
    nv = m // L
    n4 = nv // 4  # groups of four vectors, for the channels left over, then one of two
    two = nv - 4 * n4 >= 2
    done1 = (4 * n4 + (2 if two else 0)) * L
    n_i = c_out // SIMD_CH
    n_c = c_in // SIMD_CH
    n_c1 = c_in - n_c * SIMD_CH  # input channels beyond the last tile of four
    per_i = (n_c + n_c1) * kh * kw
    tiles = n_i * per_i
    Pf = borrowed_flat(partial)
    dZf = borrowed_flat(dZ)
    Af = borrowed_flat(A_prev)
    for j in range(c_out * c_in * kh * kw * L):
        Pf[j] = 0.0
    chunks = min(threads, tiles) if threads > 1 else 1
    for t in prange(chunks):
        for y in range(H_out):
            for tile in range(t * tiles // chunks, (t + 1) * tiles // chunks):
                pq = tile % (kh * kw)
                cb = (tile % per_i) // (kh * kw)  # a tile of four channels, or one left over
                i0 = (tile // per_i) * SIMD_CH
                if cb < n_c:
                    _dw_tile(Pf, dZf, Af, i0, cb * SIMD_CH, pq // kw, pq % kw, y, c_in, H, Wd,
                             m, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, nv)
                else:
                    c = n_c * SIMD_CH + cb - n_c
                    _dw_tile1(Pf, dZf, Af, i0, c, pq // kw, pq % kw, y, c_in, H, Wd, m, kh, kw,
                              s_h, s_w, pad_h, pad_w, H_out, W_out, n4)
                    if two:
                        _dw_tile1_2(Pf, dZf, Af, i0, c, pq // kw, pq % kw, y, c_in, H, Wd, m,
                                    kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, n4 * 4 * L)
    for i in range(n_i * SIMD_CH):
        for c in range(c_in):
            for p in range(kh):
                for q in range(kw):
                    o = (((i * c_in + c) * kh + p) * kw + q) * L
                    acc = 0.0
                    for lane in range(L):
                        acc += Pf[o + lane]
                    dW[i, c, p, q] += acc
    if nv * L < m:  # examples beyond the last whole vector
        _dw_plain(dW, dZ, A_prev, 0, n_i * SIMD_CH, 0, n_c * SIMD_CH, nv * L, m, s_h, s_w,
                  pad_h, pad_w)
    if n_c1 and done1 < m:  # the lone channels' examples beyond their groups
        _dw_plain(dW, dZ, A_prev, 0, n_i * SIMD_CH, n_c * SIMD_CH, c_in, done1, m, s_h, s_w,
                  pad_h, pad_w)
    if n_i * SIMD_CH < c_out:
        _dw_plain(dW, dZ, A_prev, n_i * SIMD_CH, c_out, 0, c_in, 0, m, s_h, s_w, pad_h, pad_w)
    for i in range(c_out):
        g = dZ[i].reshape(H_out * W_out * m)
        acc = 0.0
        for j in range(g.shape[0]):
            acc += g[j]
        db[i] += acc


@kernel(fast=True, separate=True)
def _conv2d_forward_tuned(Z2, W2, b, A_prev, colsT, ZT, WT, kh, kw, s_h, s_w, pad_h, pad_w,
                          H_out, W_out, threads):
    """``Zᵀ = colsT · Wᵀ``, ``Z[i, t] = b[i] + Zᵀ[t, i]`` (see the module docstring).

    Shapes: Z2 (c_out, T) written, T = H_out·W_out·m -- Z seen flat per output channel;
    W2 (c_out, K), K = c_in·kh·kw -- W seen flat per output channel; b (c_out,);
    A_prev (c_in, H, W, m); workspaces colsT (T, K) (the transposed im2col matrix), ZT
    (T, c_out) and WT (K, c_out).
    """
    c_out, K = W2.shape
    T = Z2.shape[1]
    m = A_prev.shape[3]
    c_in = A_prev.shape[0]
    if _simd(m, A_prev.itemsize):
        _conv2d_simd_forward(Z2.reshape(c_out, H_out, W_out, m),
                             W2.reshape(c_out, c_in, kh, kw), b, A_prev, s_h, s_w, pad_h, pad_w,
                             threads)
        return
    if _direct(c_out, K, T):
        _conv2d_direct_forward(Z2.reshape(c_out, H_out, W_out, m),
                               W2.reshape(c_out, c_in, kh, kw), b, A_prev, s_h, s_w, pad_h,
                               pad_w)
        return
    _im2col(colsT, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads)
    _transpose(WT, W2)
    T, c_out = ZT.shape
    for t in range(T):
        for i in range(c_out):
            ZT[t, i] = 0.0
    _gemm(ZT, colsT, WT, runtime_flag(False), runtime_flag(False), threads)
    for t0 in range(0, T, 16):  # Z = b + Zᵀᵀ, in 16-wide tiles of t
        t1 = min(t0 + 16, T)
        for i in range(c_out):
            bi = b[i]
            for t in range(t0, t1):
                Z2[i, t] = bi + ZT[t, i]


@kernel(fast=True, separate=True)
def _conv2d_backward_tuned(dW2, db, dA_prev, dZ2, W2, A_prev, dcolsT, dZT, dWT, kh, kw, s_h,
                           s_w, pad_h, pad_w, H_out, W_out, need_dA_prev, threads):
    """The backward sums as products; every gradient accumulates (``+=``).

    ``dW[i, r] += Σ_t dZ[i, t] · colsT[t, r]``; ``db[i] += Σ_t dZ[i, t]``;
    ``dcolsT = dZᵀ · W`` and ``dA_prev[c, u, v, k] += dcolsT[(y, x, k), (c, p, q)]`` (skipped
    without ``need_dA_prev``).

    Shapes: dW2 (c_out, K); db (c_out,); dA_prev (c_in, H, W, m); dZ2 (c_out, T);
    W2 (c_out, K); A_prev (c_in, H, W, m), the forward pass's input; workspaces dcolsT (T, K),
    dZT (T, c_out) and dWT (16·K, c_out): ``dWᵀ`` in its first K rows on the im2col path, the
    register tiles' partial sums (``dW`` × 8 or 16 lanes) on the direct one.

    ``dW`` is a long sum over ``t`` into a small result. It runs as ``dWᵀ = cols · dZᵀ``: the
    rows are the ``K`` weights (split between threads), the big operand ``cols`` -- built in the
    dcolsT workspace before dcolsT is needed -- is read in place, and only the small ``dZᵀ`` is
    packed. (Packing the big operand costs as much as the arithmetic when
    the other side has only 8–32 rows: measured 2× slower.)
    """
    c_out, T = dZ2.shape
    K = W2.shape[1]
    m = A_prev.shape[3]
    c_in = A_prev.shape[0]
    simd_dx = need_dA_prev and _simd(m, A_prev.itemsize)
    if _direct(c_out, K, T):
        _conv2d_direct_backward(dW2.reshape(c_out, c_in, kh, kw), db, dA_prev,
                                dZ2.reshape(c_out, H_out, W_out, m),
                                W2.reshape(c_out, c_in, kh, kw), A_prev, s_h, s_w, pad_h, pad_w,
                                need_dA_prev and not simd_dx)
        if simd_dx:
            _conv2d_simd_backward_dx(dA_prev, W2.reshape(c_out, c_in, kh, kw),
                                     dZ2.reshape(c_out, H_out, W_out, m), s_h, s_w, pad_h,
                                     pad_w, threads)
        return
    if _simd(m, A_prev.itemsize):  # register tiles: no im2col, no col2im
        dZ4 = dZ2.reshape(c_out, H_out, W_out, m)
        _conv2d_simd_backward_dw(dW2.reshape(c_out, c_in, kh, kw), db, dZ4, A_prev, dWT, s_h,
                                 s_w, pad_h, pad_w, threads)
        if need_dA_prev:
            _conv2d_simd_backward_dx(dA_prev, W2.reshape(c_out, c_in, kh, kw), dZ4, s_h, s_w,
                                     pad_h, pad_w, threads)
        return
    dWT = dWT[:K]  # (the rest of the scratch holds the register tiles' partial sums)
    _transpose(dZT, dZ2)
    # cols, untransposed, in the dcolsT workspace until dcolsT is computed: built again from
    # A_prev, each row a run of contiguous copies, which is 5–6× faster than transposing
    # colsT (measured at 43 264 × 144: 16 ms to transpose)
    cols = dcolsT.reshape(K, T)
    _im2col_untransposed(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads)
    for r in range(K):
        for i in range(c_out):
            dWT[r, i] = 0.0
    _gemm(dWT, cols, dZT, runtime_flag(False), runtime_flag(False), threads)
    for i in range(c_out):
        for r in range(K):
            dW2[i, r] += dWT[r, i]
    for i in range(c_out):
        s = dZ2.dtype.type(0)
        for t in range(T):
            s += dZ2[i, t]
        db[i] += s
    if not need_dA_prev:
        return
    for t in range(T):
        for r in range(K):
            dcolsT[t, r] = 0.0
    _gemm(dcolsT, dZT, W2, runtime_flag(False), runtime_flag(False), threads)
    _col2im(dA_prev, dcolsT, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads)


# ---------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------

IMPLS = ("tuned", "naive")


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or an ``(h, w)`` pair of ints, each at least ``minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or an (h, w) pair, got {value!r}")
        return (_checks.check_int(value[0], name, minimum),
                _checks.check_int(value[1], name, minimum))
    v = _checks.check_int(value, name, minimum)
    return v, v


def output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """``(size + 2·padding − kernel) // stride + 1``: output pixels along one axis."""
    return (size + 2 * padding - kernel_size) // stride + 1


def conv_geometry(W_shape, A_shape, stride, padding, w_name="W", a_name="A_prev"):
    """Check a convolution's shapes; return ``(stride pair, padding pair, H_out, W_out)``."""
    s_h, s_w = pair(stride, "stride", 1)
    pad_h, pad_w = pair(padding, "padding", 0)
    c_out, c_in, kh, kw = W_shape
    if min(W_shape) < 1:
        raise ValueError(f"{w_name}: expected a kernel (c_out, c_in, kh, kw) with every side ≥ 1, "
                         f"got shape {tuple(W_shape)}: a convolution needs at least one output "
                         "channel, one input channel and a 1×1 window")
    if min(A_shape) < 1:
        raise ValueError(f"{a_name}: expected images (channels, height, width, m) with every "
                         f"side ≥ 1, got shape {tuple(A_shape)}")
    if A_shape[0] != c_in:
        raise ValueError(
            f"{a_name} has {A_shape[0]} channels (shape {tuple(A_shape)}) but {w_name} expects "
            f"{c_in} (shape {tuple(W_shape)}: (c_out, c_in, kh, kw)); images are "
            "(channels, height, width, m)"
        )
    H, Wd = A_shape[1], A_shape[2]
    if kh > H + 2 * pad_h or kw > Wd + 2 * pad_w:
        raise ValueError(
            f"the kernel ({kh}×{kw}) is larger than the padded image ({H + 2 * pad_h}×"
            f"{Wd + 2 * pad_w}: {H}×{Wd} with padding ({pad_h}, {pad_w})); use a smaller "
            "kernel or more padding"
        )
    return (s_h, s_w), (pad_h, pad_w), output_size(H, kh, s_h, pad_h), \
        output_size(Wd, kw, s_w, pad_w)


_IMAGE_HINT = "images are (channels, height, width, m), examples on the last axis"


def conv2d_forward(W, b, A_prev, stride=1, padding=0, *, impl: str = "tuned",
                   check_finite: bool = True, parallel: bool = True) -> np.ndarray:
    """Forward pass of a 2-D convolution (cross-correlation, as PyTorch's ``conv2d``).

    ``Z[i, y, x, k] = b[i] + Σ_c Σ_p Σ_q W[i, c, p, q] · A_prev[c, y·s_h + p − pad_h,
    x·s_w + q − pad_w, k]``

    Parameters
    ----------
    W : (c_out, c_in, kh, kw) float32 or float64
    b : (c_out,) same dtype
    A_prev : (c_in, H, W, m) same dtype; examples on the last axis
    stride, padding : an int or an ``(h, w)`` pair; stride ≥ 1, padding ≥ 0 (zeros)
    impl : ``"tuned"`` (im2col + packed SIMD product) or ``"naive"`` (the formula as loops)

    Returns
    -------
    Z : (c_out, H_out, W_out, m) with ``H_out = (H + 2·pad_h − kh) // s_h + 1``
    """
    _checks.check_choice(impl, "impl", IMPLS)
    W = _checks.as_float_array(W, "W", 4, check_finite=check_finite,
                               hint="W has shape (c_out, c_in, kh, kw)")
    b = _checks.as_float_array(b, "b", 1, check_finite=check_finite,
                               hint="b is a vector of shape (c_out,)")
    A_prev = _checks.as_float_array(A_prev, "A_prev", 4, check_finite=check_finite,
                                    hint=_IMAGE_HINT)
    _checks.same_dtype(W=W, b=b, A_prev=A_prev)
    if b.shape[0] != W.shape[0]:
        raise ValueError(f"b has shape {b.shape} but W has shape {W.shape}: b needs one entry "
                         f"per output channel, shape ({W.shape[0]},)")
    (s_h, s_w), (pad_h, pad_w), H_out, W_out = conv_geometry(W.shape, A_prev.shape, stride,
                                                             padding)
    c_out, c_in, kh, kw = W.shape
    m = A_prev.shape[3]
    Z = np.empty((c_out, H_out, W_out, m), W.dtype)
    if impl == "naive":
        _conv2d_forward_naive(Z, W, b, A_prev, s_h, s_w, pad_h, pad_w)
    else:
        T, K = H_out * W_out * m, c_in * kh * kw
        _conv2d_forward_tuned(Z.reshape(c_out, -1), W.reshape(c_out, -1), b, A_prev,
                              np.empty((T, K), W.dtype), np.empty((T, c_out), W.dtype),
                              np.empty((K, c_out), W.dtype), kh, kw, s_h, s_w, pad_h, pad_w,
                              H_out, W_out, use_threads(parallel))
    return Z


def conv2d_backward(dZ, W, A_prev, stride=1, padding=0, *, impl: str = "tuned",
                    check_finite: bool = True, parallel: bool = True):
    """Backward pass of a 2-D convolution: ``(dW, db, dA_prev)``.

    ``dW[i, c, p, q] = Σ_y Σ_x Σ_k dZ[i, y, x, k] · A_prev[c, u, v, k]``,
    ``db[i] = Σ_y Σ_x Σ_k dZ[i, y, x, k]``,
    ``dA_prev[c, u, v, k] = Σ W[i, c, p, q] · dZ[i, y, x, k]`` over every ``(i, y, x, p, q)``
    with ``u = y·s_h + p − pad_h``, ``v = x·s_w + q − pad_w``.

    Parameters
    ----------
    dZ : (c_out, H_out, W_out, m) gradient of the loss w.r.t. Z
    W : (c_out, c_in, kh, kw); A_prev : (c_in, H, W, m) the forward pass's input
    stride, padding : as in :func:`conv2d_forward`
    """
    _checks.check_choice(impl, "impl", IMPLS)
    dZ = _checks.as_float_array(dZ, "dZ", 4, check_finite=check_finite, hint=_IMAGE_HINT)
    W = _checks.as_float_array(W, "W", 4, check_finite=check_finite,
                               hint="W has shape (c_out, c_in, kh, kw)")
    A_prev = _checks.as_float_array(A_prev, "A_prev", 4, check_finite=check_finite,
                                    hint=_IMAGE_HINT)
    _checks.same_dtype(dZ=dZ, W=W, A_prev=A_prev)
    (s_h, s_w), (pad_h, pad_w), H_out, W_out = conv_geometry(W.shape, A_prev.shape, stride,
                                                             padding)
    c_out, c_in, kh, kw = W.shape
    m = A_prev.shape[3]
    want = (c_out, H_out, W_out, m)
    if dZ.shape != want:
        raise ValueError(f"dZ: expected shape {want} (the output of W on A_prev with stride "
                         f"({s_h}, {s_w}) and padding ({pad_h}, {pad_w})), got {dZ.shape}")
    dW = np.zeros_like(W)
    db = np.zeros(c_out, W.dtype)
    dA_prev = np.zeros_like(A_prev)
    if impl == "naive":
        _conv2d_backward_naive(dW, db, dA_prev, dZ, W, A_prev, s_h, s_w, pad_h, pad_w)
    else:
        threads = use_threads(parallel)
        T, K = H_out * W_out * m, c_in * kh * kw
        _conv2d_backward_tuned(dW.reshape(c_out, -1), db, dA_prev, dZ.reshape(c_out, -1),
                               W.reshape(c_out, -1), A_prev, np.empty((T, K), W.dtype),
                               np.empty((T, c_out), W.dtype), np.empty((16 * K, c_out), W.dtype),
                               kh,
                               kw, s_h, s_w, pad_h, pad_w, H_out, W_out, True, threads)
    return dW, db, dA_prev
