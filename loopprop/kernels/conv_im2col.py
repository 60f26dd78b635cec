"""The convolution's matrix path: the transposed im2col matrix and col2im around the packed
product, and the direct loops of small convolutions (docs/formulas.md, "Convolution"; the
layout, index names and the matrix products are in :mod:`loopprop.kernels.conv`)::

    colsT[(y, x, k), (c, p, q)] = A_prev[c, y·s_h + p − pad_h, x·s_w + q − pad_w, k]
"""

from __future__ import annotations

import numpy as np

from .._jit import PARALLEL_MIN_WORK, kernel, prange

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
