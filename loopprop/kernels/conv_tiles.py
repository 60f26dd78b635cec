"""The convolution's register-blocked direct loops for the forward pass and the input gradient
(no im2col): four channels × two vectors of examples in registers (docs/formulas.md,
"Convolution"; the layout and index names are in :mod:`loopprop.kernels.conv`)::

    Z[i, y, x, k]        = b[i] + Σ_c Σ_p Σ_q W[i, c, p, q] · A_prev[c, u, v, k]
    dA_prev[c, u, v, k] += Σ_i Σ_p Σ_q W[i, c, p, q] · dZ[i, y, x, k]
"""

from __future__ import annotations

from .._jit import kernel, prange
from .simd import vadd, vfma, vload, vsplat, vstore, vzero
from .views import borrowed_flat

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
