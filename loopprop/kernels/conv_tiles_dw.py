"""The convolution's register-blocked weight gradient (no im2col): per-lane partial sums of
4 × 4 channel tiles for one kernel offset, output rows outermost (docs/formulas.md,
"Convolution"; the layout and index names are in :mod:`loopprop.kernels.conv`)::

    dW[i, c, p, q] += Σ_y Σ_x Σ_k dZ[i, y, x, k] · A_prev[c, u, v, k]
    db[i]          += Σ_y Σ_x Σ_k dZ[i, y, x, k]
"""

from __future__ import annotations

from .._jit import kernel, prange
from .conv_tiles import SIMD_CH
from .simd import vadd, vfma, vload, vstore, vzero
from .views import borrowed_flat


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
