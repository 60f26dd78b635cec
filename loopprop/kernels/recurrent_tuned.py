"""The tuned twins of the RNN, LSTM and GRU kernels (:mod:`loopprop.kernels.recurrent` has the
formulas as loops): the same sums, regrouped around the packed product
(:func:`loopprop.kernels.gemm._gemm`).

Every array is seen as a matrix with the features first and the columns ``c = t·m + k`` (time
step ``t``, example ``k``): ``X2 (d, T·m)``, ``H2 (h, T·m)``, the LSTM's cells ``C2 (h, T·m)``,
the gates ``G2 (rows, T·m)`` -- the public arrays' own layout ``(·, T, m)``, and the buffers a
layer's rows keep, with no copy and no transposition.

* The input projection of every time step is one product, ``A = b + W_x·X2``, written where
  the step will read it (the LSTM's gates, the GRU's first three gate blocks, the RNN's states).
* The recurrence is one product per step, ``z_t = A[:, t] + W_h·h_{t−1}``, on a contiguous
  ``(rows, m)`` block ``Z`` and the running state ``hp (h, m)`` (the product wants contiguous
  operands; the step's columns of a ``(rows, T·m)`` matrix are not).
* The gates are computed unit by unit, the units split over the threads (each element is one
  thread's: the bits do not depend on the thread count).
* Backward, each step's ``δ_t`` is written into the ``(rows, T·m)`` matrix ``D``; the carried
  gradient is one product per step, ``W_hᵀ·δ_t``; after the loop ``dW_h += D·H_prevᵀ``,
  ``dW_x += D·Xᵀ`` and ``dX = W_xᵀ·D`` are one product each; ``dx`` says whether ``dX`` is
  skipped (0: the layer's input is the data), written (1) or added into (2).

The elementwise steps (the nonlinearity, the gates, the carried ``dc``) are the naive kernels'
expressions, with the vectorizable ``σ`` and ``tanh`` of :mod:`loopprop.kernels.activations`
(within 2 ulp of libm's). The sums are regrouped, so the results equal the naive kernels' to
rounding, not bit for bit (tests/test_recurrent.py holds them to 1e-12).
"""

from __future__ import annotations

from .._jit import kernel, prange, runtime_flag
from .activations import _sigmoid_fast, _tanh_fast
from .dense import _transpose
from .gemm import _gemm


@kernel
def _input_projection(A, W_x, b, X2, threads):
    """``A[r, c] = b[r] + Σ_j W_x[r, j]·X2[j, c]`` for every step's columns ``c = t·m + k``."""
    for r in range(A.shape[0]):
        for c in range(A.shape[1]):
            A[r, c] = b[r]
    _gemm(A, W_x, X2, runtime_flag(False), runtime_flag(False), threads)


@kernel
def _step_start(Z, A, t):
    """``Z[r, k] = A[r, t·m + k]``: step ``t``'s input projection, contiguous."""
    m = Z.shape[1]
    for r in range(Z.shape[0]):
        for k in range(m):
            Z[r, k] = A[r, t * m + k]


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


# -- the vanilla RNN --------------------------------------------------------------------------


@kernel(parallel=True)
def _rnn_units(Z, H2, hp, t, relu, threads):
    """``h_t = f(z_t)`` into ``H2``'s step-``t`` columns and the running state ``hp``. Each
    unit's ``m`` values are taken as rows first (a ``[u, t·m + k]`` index in the loop over
    ``k`` keeps LLVM from vectorizing it: 6× slower)."""
    n_h, m = hp.shape
    c0 = t * m
    for part in prange(threads):
        u0, u1 = _units(n_h, threads, part)
        for i in range(u0, u1):
            z, out, h = Z[i], H2[i, c0:c0 + m], hp[i]
            for k in range(m):
                y = max(z[k], 0.0) if relu else _tanh_fast(z[k])
                out[k] = y
                h[k] = y

@kernel(separate=True)
def _rnn_forward_tuned(H2, Z, hp, W_x, W_h, b, X2, h0, relu, threads):
    """:func:`~loopprop.kernels.recurrent._rnn_forward_naive` with the sums as products:
    ``H2 (h, T·m)`` every state (written; it holds the input projection until each step
    replaces its columns). Scratch ``Z, hp (h, m)``; ``X2 (d, T·m)`` is ``X``'s view."""
    n_h, m = hp.shape
    T = H2.shape[1] // m
    _input_projection(H2, W_x, b, X2, threads)
    _copy(hp, h0)
    for t in range(T):
        _step_start(Z, H2, t)
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


@kernel(parallel=True)
def _lstm_units(Z, G2, C2, H2, hp, cp, t, threads):
    """Step ``t``'s gates from ``Z = a_t``: ``i, f, g, o`` into ``G2``, ``c_t`` into ``C2`` and
    ``cp``, ``h_t`` into ``H2`` and ``hp`` (each unit's rows taken first, as
    :func:`_rnn_units`)."""
    n_h, m = hp.shape
    c0 = t * m
    for part in prange(threads):
        u0, u1 = _units(n_h, threads, part)
        for u in range(u0, u1):
            zi, zf, zg, zo = Z[u], Z[n_h + u], Z[2 * n_h + u], Z[3 * n_h + u]
            gi, gf = G2[u, c0:c0 + m], G2[n_h + u, c0:c0 + m]
            gg, go = G2[2 * n_h + u, c0:c0 + m], G2[3 * n_h + u, c0:c0 + m]
            cell_t, h_t, cpu, hpu = C2[u, c0:c0 + m], H2[u, c0:c0 + m], cp[u], hp[u]
            for k in range(m):
                i_ = _sigmoid_fast(zi[k])
                f_ = _sigmoid_fast(zf[k])
                g_ = _tanh_fast(zg[k])
                o_ = _sigmoid_fast(zo[k])
                gi[k] = i_
                gf[k] = f_
                gg[k] = g_
                go[k] = o_
                cell = f_ * cpu[k] + i_ * g_
                cell_t[k] = cell
                cpu[k] = cell
                h = o_ * _tanh_fast(cell)
                h_t[k] = h
                hpu[k] = h

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
    for t in range(T):
        _step_start(Z, G2, t)
        _gemm(Z, W_h, hp, runtime_flag(False), runtime_flag(False), threads)
        _lstm_units(Z, G2, C2, H2, hp, cp, t, threads)


@kernel(parallel=True)
def _lstm_deltas(delta, D, dh, dc, dH2, C2, G2, c0, t, threads):
    """Step ``t``'s ``δ`` of the four gates into ``delta`` and ``D``, from ``dh_t = dH[:, t] +
    dh`` and the cell's ``dc``; ``dc`` carried on (``dc_t ⊙ f``), ``dh`` zeroed for the
    product that adds the gates' paths."""
    n_h, m = dh.shape
    s0 = t * m
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
            for k in range(m):
                i_, f_, g_, o_ = gi[k], gf[k], gg[k], go[k]
                tc = _tanh_fast(ct[k])
                dh_t = dy[k] + dhu[k]
                dc_t = dcu[k] + dh_t * o_ * (1.0 - tc * tc)
                d_i = dc_t * g_ * i_ * (1.0 - i_)
                d_f = dc_t * cprev[k] * f_ * (1.0 - f_)
                d_g = dc_t * i_ * (1.0 - g_ * g_)
                d_o = dh_t * tc * o_ * (1.0 - o_)
                di_[k] = d_i
                df_[k] = d_f
                dg_[k] = d_g
                do_[k] = d_o
                Di[k] = d_i
                Df[k] = d_f
                Dg[k] = d_g
                Do[k] = d_o
                dcu[k] = dc_t * f_
                dhu[k] = 0.0

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


@kernel(parallel=True)
def _gru_units(Y, G2, H2, hp, t, threads):
    """Step ``t``'s gates from ``G2``'s input projections (rows ``r, z, n``) and ``Y = b_h +
    W_h·h_{t−1}``: ``r, z, n, y_n`` into ``G2``, ``h_t`` into ``H2`` and ``hp``."""
    n_h, m = hp.shape
    c0 = t * m
    for part in prange(threads):
        u0, u1 = _units(n_h, threads, part)
        for u in range(u0, u1):
            gr, gz = G2[u, c0:c0 + m], G2[n_h + u, c0:c0 + m]
            gn, gy = G2[2 * n_h + u, c0:c0 + m], G2[3 * n_h + u, c0:c0 + m]
            yr, yz, yn = Y[u], Y[n_h + u], Y[2 * n_h + u]
            h_t, hpu = H2[u, c0:c0 + m], hp[u]
            for k in range(m):
                r = _sigmoid_fast(gr[k] + yr[k])
                z = _sigmoid_fast(gz[k] + yz[k])
                y_n = yn[k]
                n = _tanh_fast(gn[k] + r * y_n)
                gr[k] = r
                gz[k] = z
                gn[k] = n
                gy[k] = y_n
                h = (1.0 - z) * n + z * hpu[k]
                h_t[k] = h
                hpu[k] = h

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
