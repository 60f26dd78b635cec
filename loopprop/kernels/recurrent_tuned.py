"""The tuned twins of the RNN, LSTM and GRU kernels (:mod:`loopprop.kernels.recurrent` has the
formulas as loops): the same sums, regrouped around the packed product
(:func:`loopprop.kernels.gemm._gemm`).

Every array is seen as a matrix with the features first and the columns ``c = t·m + k`` (time
step ``t``, example ``k``): ``X2 (d, T·m)``, ``H2 (h, T·m)``, the LSTM's cells ``C2 (h, T·m)``,
the gates ``G2 (rows, T·m)`` -- the public arrays' own layout ``(·, T, m)``, and the buffers a
layer's rows keep, with no copy and no transposition.

* The input projection of every time step is one product, ``A = b + W_x·X2``, written where
  the step will read it (the LSTM's gates, the GRU's first three gate blocks, the RNN's states).
* The recurrence is one product per step, ``Z = W_h·h_{t−1}``, into a contiguous ``(rows, m)``
  block ``Z`` from the running state ``hp (h, m)`` (the product wants contiguous operands; the
  step's columns of a ``(rows, T·m)`` matrix are not); the gates add ``A[:, t]`` where they
  read it and zero ``Z`` for the next step.
* The gates are computed unit by unit, the units split over the threads (each element is one
  thread's: the bits do not depend on the thread count).
* Backward, each step's ``δ_t`` is written into the ``(rows, T·m)`` matrix ``D``; the carried
  gradient is one product per step, ``W_hᵀ·δ_t``; after the loop ``dW_h += D·H_prevᵀ``,
  ``dW_x += D·Xᵀ`` and ``dX = W_xᵀ·D`` are one product each; ``dx`` says whether ``dX`` is
  skipped (0: the layer's input is the data), written (1) or added into (2).

The elementwise steps (the nonlinearity, the gates, the carried ``dc``) are the naive kernels'
expressions, a register at a time in the arrays' own dtype (:mod:`loopprop.kernels.simd`: 16
float32 lanes): ``σ(x) = 1/(1 + e^{−x})`` and ``tanh x = 2/(1 + e^{−2x}) − 1`` with
:func:`~loopprop.kernels.simd.vexp` (both exact in their tails, where ``e^{…}`` overflows).
The sums are regrouped and the exponentials are float32's in float32, so the results equal the
naive kernels' to rounding, not bit for bit (tests/test_recurrent.py holds them to 1e-12 in
float64, 2e-5 in float32).
"""

from __future__ import annotations

from .._jit import kernel, prange, runtime_flag
from .dense import _transpose
from .gemm import _gemm
from .simd import (lanes, like, vadd, vdiv, vexp, vfma, vload, vloadn, vmul, vprefetch, vsplat,
                   vstore, vstoren, vsub, vzero)


@kernel
def _input_projection(A, W_x, b, X2, threads):
    """``A[r, c] = b[r] + Σ_j W_x[r, j]·X2[j, c]`` for every step's columns ``c = t·m + k``."""
    for r in range(A.shape[0]):
        for c in range(A.shape[1]):
            A[r, c] = b[r]
    _gemm(A, W_x, X2, runtime_flag(False), runtime_flag(False), threads)


@kernel
def _zero(Z):
    """``Z[r, k] = 0``."""
    for r in range(Z.shape[0]):
        for k in range(Z.shape[1]):
            Z[r, k] = 0.0


@kernel
def _copy(dst, src):
    """``dst[i, k] = src[i, k]``."""
    for i in range(dst.shape[0]):
        for k in range(dst.shape[1]):
            dst[i, k] = src[i, k]


@kernel
def _units(n_h, threads, part):
    """The units ``[u0, u1)`` of thread ``part`` of ``threads``."""
    chunk = (n_h + threads - 1) // threads
    return part * chunk, min(n_h, (part + 1) * chunk)


@kernel(inline=True)
def _prefetch(row, c0, c1):
    """Ask for the cache lines of ``row[c0:c1]`` (:func:`~loopprop.kernels.simd.vprefetch`,
    one per register: a register is a 64-byte line). The steps' columns of a ``(rows, T·m)``
    matrix are ``T·m`` values apart from row to row, a pattern the CPU's prefetchers do not
    follow: the gates ask for the next step's columns while they work on this one's."""
    if c0 < 0 or c1 > row.shape[0]:
        return
    for c in range(c0, c1, lanes(row)):
        vprefetch(row, c)


@kernel(inline=True)
def _registers(row):
    """What a loop over a unit's ``m`` values a register at a time needs, from one row of the
    arrays (their dtype): the lanes ``L``, the values in whole registers ``m − m mod L``, and
    the constants 1, −1, −2 in every lane."""
    m = row.shape[0]
    L = lanes(row)
    return (L, m - m % L, vsplat(like(row, 1.0)), vsplat(like(row, -1.0)),
            vsplat(like(row, -2.0)))


# -- the vanilla RNN --------------------------------------------------------------------------


@kernel(parallel=True)
def _rnn_units(Z, H2, hp, t, relu, threads):
    """``h_t = f(a_t + Z)`` into ``H2``'s step-``t`` columns (which hold the input projection
    ``a_t``) and the running state ``hp``, ``Z = W_h·h_{t−1}`` zeroed for the next step's
    product: each unit's ``m`` values a register at a time in the arrays' dtype
    (:func:`_tanh_register`), the last partial register by masked loads and stores. (Rows are
    taken before the loop: a ``[u, t·m + k]`` index inside it kept LLVM from vectorizing, 6×
    slower.)"""
    n_h, m = hp.shape
    c0 = t * m
    L, full, one, _, m2 = _registers(hp[0])
    zero = vzero(hp[0])
    for part in prange(threads):
        u0, u1 = _units(n_h, threads, part)
        for i in range(u0, u1):
            z, out, h = Z[i], H2[i, c0:c0 + m], hp[i]
            if relu:  # no exp: LLVM vectorizes the plain loop
                for k in range(m):
                    y = max(out[k] + z[k], 0.0)
                    out[k] = y
                    h[k] = y
                    z[k] = 0.0
                continue
            for p in range(0, full, L):
                y = _tanh_register(vadd(vload(out, p), vload(z, p)), one, m2)
                vstore(out, p, y)
                vstore(h, p, y)
                vstore(z, p, zero)
            if full < m:
                r = m - full
                y = _tanh_register(vadd(vloadn(out, full, r), vloadn(z, full, r)), one, m2)
                vstoren(out, full, y, r)
                vstoren(h, full, y, r)
                vstoren(z, full, zero, r)

@kernel(separate=True)
def _rnn_forward_tuned(H2, Z, hp, W_x, W_h, b, X2, h0, relu, threads):
    """:func:`~loopprop.kernels.recurrent._rnn_forward_naive` with the sums as products:
    ``H2 (h, T·m)`` every state (written; it holds the input projection until each step
    replaces its columns). Scratch ``Z, hp (h, m)``; ``X2 (d, T·m)`` is ``X``'s view."""
    n_h, m = hp.shape
    T = H2.shape[1] // m
    _input_projection(H2, W_x, b, X2, threads)
    _copy(hp, h0)
    _zero(Z)
    for t in range(T):
        _gemm(Z, W_h, hp, runtime_flag(False), runtime_flag(False), threads)
        _rnn_units(Z, H2, hp, t, relu, threads)


@kernel(parallel=True)
def _rnn_deltas(delta, D, dh, dH2, H2, t, relu, threads):
    """``δ_t = (dH[:, t] + dh) ⊙ f′`` into ``delta`` and ``D``'s step-``t`` columns; ``dh``
    zeroed for the product that carries the gradient on."""
    n_h, m = dh.shape
    c0 = t * m
    for part in prange(threads):
        u0, u1 = _units(n_h, threads, part)
        for i in range(u0, u1):
            dy, y, d_row, dl, dhi = (dH2[i, c0:c0 + m], H2[i, c0:c0 + m], D[i, c0:c0 + m],
                                     delta[i], dh[i])
            for k in range(m):
                g = dy[k] + dhi[k]
                if relu:
                    v = g if y[k] > 0.0 else 0.0
                else:
                    v = g * (1.0 - y[k] * y[k])
                dl[k] = v
                d_row[k] = v
                dhi[k] = 0.0

@kernel(separate=True)
def _rnn_backward_tuned(dW_x, dW_h, db, dX2, dh0, dH2, H2, X2, h0, W_x, W_h, dh_T, relu, D,
                        delta, dh, W_hT, Hprev, dx, threads):
    """:func:`~loopprop.kernels.recurrent._rnn_backward_naive` with the sums as products.
    ``dH2``, ``H2 (h, T·m)`` and ``dX2 (d, T·m)`` are ``dH``'s, ``H``'s and ``dX``'s views.
    Scratch: ``D (h, T·m)``, ``delta, dh (h, m)``, ``W_hT (h, h)``, ``Hprev (h, T·m)``.
    ``dh0`` may be ``dh_T`` itself (read first, written last)."""
    n_h, m = dh.shape
    T = H2.shape[1] // m
    _transpose(W_hT, W_h)  # once: each step's W_hᵀ·δ reads it row-major
    _copy(dh, dh_T)
    for t in range(T - 1, -1, -1):
        _rnn_deltas(delta, D, dh, dH2, H2, t, relu, threads)
        _gemm(dh, W_hT, delta, runtime_flag(False), runtime_flag(False), threads)
    _copy(dh0, dh)
    _recurrent_weight_gradient(dW_h, D, H2, h0, Hprev, threads)
    _finish_input_side(dW_x, db, dX2, D, X2, W_x, dx, threads)


@kernel
def _recurrent_weight_gradient(dW_h, Dy, H2, h0, Hprev, threads):
    """``dW_h += Σ_t δ_t·h_{t−1}ᵀ`` as one product after the loop over steps: ``Dy (rows,
    T·m)`` holds every step's ``δ`` (column ``t·m + k``) and ``Hprev (h, T·m)`` the state each
    step read -- ``h0``, then ``H2`` one step later -- one long sum (``P = T·m``) instead of
    ``T`` short ones."""
    n_h, m = h0.shape
    N = H2.shape[1]
    for j in range(n_h):
        for k in range(m):
            Hprev[j, k] = h0[j, k]
        for c in range(m, N):
            Hprev[j, c] = H2[j, c - m]
    _gemm(dW_h, Dy, Hprev, runtime_flag(False), runtime_flag(True), threads)


@kernel(parallel=True)
def _row_sums(db, D, threads):
    """``db[r] += Σ_c D[r, c]``, the rows split over the threads (each row one thread's sum,
    in one order: the bits do not depend on the thread count)."""
    rows = D.shape[0]
    for part in prange(threads):
        r0, r1 = _units(rows, threads, part)
        for r in range(r0, r1):
            row = D[r]
            acc = 0.0
            for c in range(row.shape[0]):
                acc += row[c]
            db[r] += acc


@kernel
def _finish_input_side(dW_x, db, dX2, D, X2, W_x, dx, threads):
    """After the loop over steps: ``dW_x += D·Xᵀ``, ``db += Σ_c D[:, c]``, and ``dX = W_xᵀ·D``
    written (``dx`` 1), added (2) or skipped (0)."""
    _gemm(dW_x, D, X2, runtime_flag(False), runtime_flag(True), threads)
    _row_sums(db, D, threads)
    if dx == 0:
        return
    if dx == 1:
        for j in range(dX2.shape[0]):
            for c in range(dX2.shape[1]):
                dX2[j, c] = 0.0
    _gemm(dX2, W_x, D, runtime_flag(True), runtime_flag(False), threads)


# -- the LSTM ---------------------------------------------------------------------------------


@kernel(inline=True)
def _sigmoid_register(x, one, minus_one):
    """``σ(x) = 1/(1 + e^{−x})`` on one register, in its dtype (:func:`~loopprop.kernels.simd.
    vexp`: 16 float32 lanes, degree 5; 8 float64 lanes, degree 13). Both tails are exact
    limits: ``e^{−x}`` is clamped, not infinite."""
    return vdiv(one, vadd(one, vexp(vmul(minus_one, x))))


@kernel(inline=True)
def _tanh_register(x, one, minus_two):
    """``tanh x = 2σ(2x) − 1 = 2/(1 + e^{−2x}) − 1`` on one register. Where ``e^{−2x}``
    overflows (x < −44 in float32, −355 in float64) the quotient is 0 and the result −1:
    written as ``(1 − e)/(1 + e)`` it was ``−inf/inf``, NaN. Within a few ulp of 1 in absolute
    error (near 0 the difference cancels: the *relative* error of a tiny ``tanh x`` is larger;
    no value here is used relative to itself)."""
    return vsub(vdiv(vadd(one, one), vadd(one, vexp(vmul(minus_two, x)))), one)


@kernel(inline=True)
def _lstm_unit_register(zi, zf, zg, zo, cp, one, minus_one, minus_two):
    """One register of a unit's gates and states from the step's pre-activations:
    ``(i, f, g, o, c_t, h_t)``."""
    i_ = _sigmoid_register(zi, one, minus_one)
    f_ = _sigmoid_register(zf, one, minus_one)
    g_ = _tanh_register(zg, one, minus_two)
    o_ = _sigmoid_register(zo, one, minus_one)
    cell = vfma(f_, cp, vmul(i_, g_))
    return i_, f_, g_, o_, cell, vmul(o_, _tanh_register(cell, one, minus_two))


@kernel(parallel=True)
def _lstm_units(Z, G2, C2, H2, hp, cp, t, threads):
    """Step ``t``'s gates from ``a_t + Z`` (``a_t`` in ``G2``'s step-``t`` columns, ``Z =
    W_h·h_{t−1}``): ``i, f, g, o`` into ``G2``, ``c_t`` into ``C2`` and ``cp``, ``h_t`` into
    ``H2`` and ``hp``, ``Z`` zeroed for the next step's product: each unit's ``m`` values a
    register at a time in the arrays' dtype (:func:`_lstm_unit_register`), the last partial
    register by masked loads and stores through the same instructions. (Adding ``a_t`` here,
    where its columns are read anyway, replaced a copy of them into ``Z`` before the product:
    ``G2``'s rows are ``T·m`` apart, 8 KiB at ``T·m = 2048`` float32, and without that copy the
    forward took 12.7 ms instead of 15.6, interleaved.)"""
    n_h, m = hp.shape
    c0 = t * m
    L, full, one, m1, m2 = _registers(hp[0])
    zero = vzero(hp[0])
    for part in prange(threads):
        u0, u1 = _units(n_h, threads, part)
        for u in range(u0, u1):
            zi, zf, zg, zo = Z[u], Z[n_h + u], Z[2 * n_h + u], Z[3 * n_h + u]
            gi, gf = G2[u, c0:c0 + m], G2[n_h + u, c0:c0 + m]
            gg, go = G2[2 * n_h + u, c0:c0 + m], G2[3 * n_h + u, c0:c0 + m]
            cell_t, h_t, cpu, hpu = C2[u, c0:c0 + m], H2[u, c0:c0 + m], cp[u], hp[u]
            for q in range(4):
                _prefetch(G2[q * n_h + u], c0 + m, c0 + 2 * m)
            _prefetch(C2[u], c0 + m, c0 + 2 * m)
            _prefetch(H2[u], c0 + m, c0 + 2 * m)
            for p in range(0, full, L):
                i_, f_, g_, o_, cell, h = _lstm_unit_register(
                    vadd(vload(gi, p), vload(zi, p)), vadd(vload(gf, p), vload(zf, p)),
                    vadd(vload(gg, p), vload(zg, p)), vadd(vload(go, p), vload(zo, p)),
                    vload(cpu, p), one, m1, m2)
                vstore(zi, p, zero)
                vstore(zf, p, zero)
                vstore(zg, p, zero)
                vstore(zo, p, zero)
                vstore(gi, p, i_)
                vstore(gf, p, f_)
                vstore(gg, p, g_)
                vstore(go, p, o_)
                vstore(cell_t, p, cell)
                vstore(cpu, p, cell)
                vstore(h_t, p, h)
                vstore(hpu, p, h)
            if full < m:
                r = m - full
                i_, f_, g_, o_, cell, h = _lstm_unit_register(
                    vadd(vloadn(gi, full, r), vloadn(zi, full, r)),
                    vadd(vloadn(gf, full, r), vloadn(zf, full, r)),
                    vadd(vloadn(gg, full, r), vloadn(zg, full, r)),
                    vadd(vloadn(go, full, r), vloadn(zo, full, r)), vloadn(cpu, full, r), one,
                    m1, m2)
                vstoren(zi, full, zero, r)
                vstoren(zf, full, zero, r)
                vstoren(zg, full, zero, r)
                vstoren(zo, full, zero, r)
                vstoren(gi, full, i_, r)
                vstoren(gf, full, f_, r)
                vstoren(gg, full, g_, r)
                vstoren(go, full, o_, r)
                vstoren(cell_t, full, cell, r)
                vstoren(cpu, full, cell, r)
                vstoren(h_t, full, h, r)
                vstoren(hpu, full, h, r)

@kernel(separate=True)
def _lstm_forward_tuned(H2, C2, G2, Z, hp, cp, W_x, W_h, b, X2, h0, c0, threads):
    """:func:`~loopprop.kernels.recurrent._lstm_forward_naive` with the sums as products:
    ``H2, C2 (h, T·m)`` and the gates' values ``G2 (4h, T·m)`` (written; ``G2`` holds the input
    projection until each step replaces its columns). Scratch ``Z (4h, m)``, ``hp, cp (h,
    m)``."""
    n_h, m = hp.shape
    T = H2.shape[1] // m
    _input_projection(G2, W_x, b, X2, threads)
    _copy(hp, h0)
    _copy(cp, c0)
    _zero(Z)
    for t in range(T):
        _gemm(Z, W_h, hp, runtime_flag(False), runtime_flag(False), threads)
        _lstm_units(Z, G2, C2, H2, hp, cp, t, threads)


@kernel(inline=True)
def _lstm_delta_register(i_, f_, g_, o_, ct, cprev, dy, dh, dc, one, minus_two):
    """One register of a unit's backward step: ``(δ_i, δ_f, δ_g, δ_o, dc_t ⊙ f)`` from the
    gates, ``c_t``, ``c_{t−1}``, the gradient reaching ``h_t`` from above (``dy``) and the
    carried ``dh``, ``dc``."""
    tc = _tanh_register(ct, one, minus_two)
    dh_t = vadd(dy, dh)
    dc_t = vfma(vmul(dh_t, o_), vsub(one, vmul(tc, tc)), dc)
    d_i = vmul(vmul(dc_t, g_), vmul(i_, vsub(one, i_)))
    d_f = vmul(vmul(dc_t, cprev), vmul(f_, vsub(one, f_)))
    d_g = vmul(vmul(dc_t, i_), vsub(one, vmul(g_, g_)))
    d_o = vmul(vmul(dh_t, tc), vmul(o_, vsub(one, o_)))
    return d_i, d_f, d_g, d_o, vmul(dc_t, f_)


@kernel(parallel=True)
def _lstm_deltas(delta, D, dh, dc, dH2, C2, G2, c0, t, threads):
    """Step ``t``'s ``δ`` of the four gates into ``delta`` and ``D``, from ``dh_t = dH[:, t] +
    dh`` and the cell's ``dc``; ``dc`` carried on (``dc_t ⊙ f``), ``dh`` zeroed for the
    product that adds the gates' paths. A register at a time, as :func:`_lstm_units`."""
    n_h, m = dh.shape
    s0 = t * m
    L, full, one, _, m2 = _registers(dh[0])
    zero = vzero(dh[0])
    for part in prange(threads):
        u0, u1 = _units(n_h, threads, part)
        for u in range(u0, u1):
            gi, gf = G2[u, s0:s0 + m], G2[n_h + u, s0:s0 + m]
            gg, go = G2[2 * n_h + u, s0:s0 + m], G2[3 * n_h + u, s0:s0 + m]
            ct = C2[u, s0:s0 + m]
            cprev = c0[u] if t == 0 else C2[u, s0 - m:s0]
            dy, dhu, dcu = dH2[u, s0:s0 + m], dh[u], dc[u]
            di_, df_ = delta[u], delta[n_h + u]
            dg_, do_ = delta[2 * n_h + u], delta[3 * n_h + u]
            Di, Df = D[u, s0:s0 + m], D[n_h + u, s0:s0 + m]
            Dg, Do = D[2 * n_h + u, s0:s0 + m], D[3 * n_h + u, s0:s0 + m]
            for q in range(4):
                _prefetch(G2[q * n_h + u], s0 - m, s0)
                _prefetch(D[q * n_h + u], s0 - m, s0)
            _prefetch(C2[u], s0 - 2 * m, s0 - m)
            _prefetch(dH2[u], s0 - m, s0)
            for p in range(0, full, L):
                d_i, d_f, d_g, d_o, dc_next = _lstm_delta_register(
                    vload(gi, p), vload(gf, p), vload(gg, p), vload(go, p), vload(ct, p),
                    vload(cprev, p), vload(dy, p), vload(dhu, p), vload(dcu, p), one, m2)
                vstore(di_, p, d_i)
                vstore(df_, p, d_f)
                vstore(dg_, p, d_g)
                vstore(do_, p, d_o)
                vstore(Di, p, d_i)
                vstore(Df, p, d_f)
                vstore(Dg, p, d_g)
                vstore(Do, p, d_o)
                vstore(dcu, p, dc_next)
                vstore(dhu, p, zero)
            if full < m:
                r = m - full
                d_i, d_f, d_g, d_o, dc_next = _lstm_delta_register(
                    vloadn(gi, full, r), vloadn(gf, full, r), vloadn(gg, full, r),
                    vloadn(go, full, r), vloadn(ct, full, r), vloadn(cprev, full, r),
                    vloadn(dy, full, r), vloadn(dhu, full, r), vloadn(dcu, full, r), one, m2)
                vstoren(di_, full, d_i, r)
                vstoren(df_, full, d_f, r)
                vstoren(dg_, full, d_g, r)
                vstoren(do_, full, d_o, r)
                vstoren(Di, full, d_i, r)
                vstoren(Df, full, d_f, r)
                vstoren(Dg, full, d_g, r)
                vstoren(Do, full, d_o, r)
                vstoren(dcu, full, dc_next, r)
                vstoren(dhu, full, zero, r)

@kernel(separate=True)
def _lstm_backward_tuned(dW_x, dW_h, db, dX2, dh0, dc0, dH2, H2, C2, G2, X2, h0, c0, W_x, W_h,
                         dh_T, dc_T, D, delta, dh, dc, W_hT, Hprev, dx, threads):
    """:func:`~loopprop.kernels.recurrent._lstm_backward_naive` with the sums as products, on
    the forward's ``H2, C2 (h, T·m)``, ``G2 (4h, T·m)``; ``dH2 (h, T·m)`` and ``dX2 (d, T·m)``
    are ``dH``'s and ``dX``'s views. Scratch: ``D (4h, T·m)``, ``delta (4h, m)``, ``dh, dc
    (h, m)``, ``W_hT (h, 4h)``, ``Hprev (h, T·m)``. ``dh0``, ``dc0`` may be ``dh_T``, ``dc_T``
    themselves (read first, written last)."""
    n_h, m = dh.shape
    T = H2.shape[1] // m
    _transpose(W_hT, W_h)  # once: each step's W_hᵀ·δ reads it row-major
    _copy(dh, dh_T)
    _copy(dc, dc_T)
    for t in range(T - 1, -1, -1):
        _lstm_deltas(delta, D, dh, dc, dH2, C2, G2, c0, t, threads)
        _gemm(dh, W_hT, delta, runtime_flag(False), runtime_flag(False), threads)
    _copy(dh0, dh)
    _copy(dc0, dc)
    _recurrent_weight_gradient(dW_h, D, H2, h0, Hprev, threads)
    _finish_input_side(dW_x, db, dX2, D, X2, W_x, dx, threads)


# -- the GRU ----------------------------------------------------------------------------------


@kernel(inline=True)
def _gru_unit_register(xr, xz, xn, yr, yz, yn, hp, one, minus_one, minus_two):
    """One register of a unit's gates and state: ``(r, z, n, h_t)`` from the input projections
    ``x``, the recurrent ones ``y`` and ``h_{t−1}``."""
    r = _sigmoid_register(vadd(xr, yr), one, minus_one)
    z = _sigmoid_register(vadd(xz, yz), one, minus_one)
    n = _tanh_register(vfma(r, yn, xn), one, minus_two)
    return r, z, n, vfma(z, vsub(hp, n), n)


@kernel(parallel=True)
def _gru_units(Y, G2, H2, hp, t, threads):
    """Step ``t``'s gates from ``G2``'s input projections (rows ``r, z, n``) and ``Y = b_h +
    W_h·h_{t−1}``: ``r, z, n, y_n`` into ``G2``, ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}`` into ``H2``
    and ``hp``; a register at a time, as :func:`_lstm_units`."""
    n_h, m = hp.shape
    c0 = t * m
    L, full, one, m1, m2 = _registers(hp[0])
    for part in prange(threads):
        u0, u1 = _units(n_h, threads, part)
        for u in range(u0, u1):
            gr, gz = G2[u, c0:c0 + m], G2[n_h + u, c0:c0 + m]
            gn, gy = G2[2 * n_h + u, c0:c0 + m], G2[3 * n_h + u, c0:c0 + m]
            yr, yz, yn = Y[u], Y[n_h + u], Y[2 * n_h + u]
            h_t, hpu = H2[u, c0:c0 + m], hp[u]
            for p in range(0, full, L):
                y_n = vload(yn, p)
                r, z, n, h = _gru_unit_register(vload(gr, p), vload(gz, p), vload(gn, p),
                                                vload(yr, p), vload(yz, p), y_n, vload(hpu, p),
                                                one, m1, m2)
                vstore(gr, p, r)
                vstore(gz, p, z)
                vstore(gn, p, n)
                vstore(gy, p, y_n)
                vstore(h_t, p, h)
                vstore(hpu, p, h)
            if full < m:
                k = m - full
                y_n = vloadn(yn, full, k)
                r, z, n, h = _gru_unit_register(vloadn(gr, full, k), vloadn(gz, full, k),
                                                vloadn(gn, full, k), vloadn(yr, full, k),
                                                vloadn(yz, full, k), y_n, vloadn(hpu, full, k),
                                                one, m1, m2)
                vstoren(gr, full, r, k)
                vstoren(gz, full, z, k)
                vstoren(gn, full, n, k)
                vstoren(gy, full, y_n, k)
                vstoren(h_t, full, h, k)
                vstoren(hpu, full, h, k)

@kernel(separate=True)
def _gru_forward_tuned(H2, G2, A, Y, hp, W_x, W_h, b_x, b_h, X2, h0, threads):
    """:func:`~loopprop.kernels.recurrent._gru_forward_naive` with the sums as products:
    ``H2 (h, T·m)`` and ``G2 (4h, T·m)`` (``r, z, n`` and ``y_n``; written). ``A`` is ``G2``'s
    first ``3h`` rows, where ``b_x + W_x·X`` of every step goes first. Scratch: ``Y (3h, m)``
    (``b_h + W_h·h_{t−1}`` of one step), ``hp (h, m)``."""
    n_h, m = hp.shape
    T = H2.shape[1] // m
    _input_projection(A, W_x, b_x, X2, threads)
    _copy(hp, h0)
    for t in range(T):
        for q in range(3 * n_h):
            for k in range(m):
                Y[q, k] = b_h[q]
        _gemm(Y, W_h, hp, runtime_flag(False), runtime_flag(False), threads)
        _gru_units(Y, G2, H2, hp, t, threads)


@kernel(parallel=True)
def _gru_deltas(Dx, dy, Dy, dh, db_h, dH2, H2, G2, h0, t, threads):
    """Step ``t``'s ``δx`` (into ``Dx``) and ``δy`` (into ``dy`` and ``Dy``); ``db_h += Σ_k
    δy``; ``dh`` becomes the direct path ``dh_t ⊙ z`` (the gates' paths are added by the
    product)."""
    n_h, m = dh.shape
    s0 = t * m
    for part in prange(threads):
        u0, u1 = _units(n_h, threads, part)
        for u in range(u0, u1):
            gr, gz = G2[u, s0:s0 + m], G2[n_h + u, s0:s0 + m]
            gn, gy = G2[2 * n_h + u, s0:s0 + m], G2[3 * n_h + u, s0:s0 + m]
            prev = h0[u] if t == 0 else H2[u, s0 - m:s0]
            dHu, dhu = dH2[u, s0:s0 + m], dh[u]
            xr, xz, xn = Dx[u, s0:s0 + m], Dx[n_h + u, s0:s0 + m], Dx[2 * n_h + u, s0:s0 + m]
            yr, yz, yn = Dy[u, s0:s0 + m], Dy[n_h + u, s0:s0 + m], Dy[2 * n_h + u, s0:s0 + m]
            dr, dz, dn = dy[u], dy[n_h + u], dy[2 * n_h + u]
            acc_r = 0.0
            acc_z = 0.0
            acc_n = 0.0
            for k in range(m):
                r, z, n, y_n = gr[k], gz[k], gn[k], gy[k]
                dh_t = dHu[k] + dhu[k]
                d_n = dh_t * (1.0 - z) * (1.0 - n * n)
                d_r = d_n * y_n * r * (1.0 - r)
                d_z = dh_t * (prev[k] - n) * z * (1.0 - z)
                xr[k] = d_r
                xz[k] = d_z
                xn[k] = d_n
                dr[k] = d_r
                dz[k] = d_z
                dn[k] = d_n * r
                yr[k] = d_r
                yz[k] = d_z
                yn[k] = d_n * r
                acc_r += d_r
                acc_z += d_z
                acc_n += d_n * r
                dhu[k] = dh_t * z
            db_h[u] += acc_r
            db_h[n_h + u] += acc_z
            db_h[2 * n_h + u] += acc_n

@kernel(separate=True)
def _gru_backward_tuned(dW_x, dW_h, db_x, db_h, dX2, dh0, dH2, H2, G2, X2, h0, W_x, W_h, dh_T,
                        Dx, dy, dh, W_hT, Dy, Hprev, dx, threads):
    """:func:`~loopprop.kernels.recurrent._gru_backward_naive` with the sums as products, on
    the forward's ``H2 (h, T·m)``, ``G2 (4h, T·m)``; ``dH2 (h, T·m)`` and ``dX2 (d, T·m)`` are
    ``dH``'s and ``dX``'s views. Scratch: ``Dx (3h, T·m)`` (every step's ``δx``), ``dy (3h,
    m)`` (one step's ``δy``), ``dh (h, m)``, ``W_hT (h, 3h)``, ``Dy (3h, T·m)`` (every step's
    ``δy``), ``Hprev (h, T·m)``. ``dh0`` may be ``dh_T`` itself."""
    n_h, m = dh.shape
    T = H2.shape[1] // m
    _transpose(W_hT, W_h)  # once: each step's W_hᵀ·δ reads it row-major
    _copy(dh, dh_T)
    for t in range(T - 1, -1, -1):
        _gru_deltas(Dx, dy, Dy, dh, db_h, dH2, H2, G2, h0, t, threads)
        _gemm(dh, W_hT, dy, runtime_flag(False), runtime_flag(False), threads)
    _copy(dh0, dh)
    _recurrent_weight_gradient(dW_h, Dy, H2, h0, Hprev, threads)
    _finish_input_side(dW_x, db_x, dX2, Dx, X2, W_x, dx, threads)
