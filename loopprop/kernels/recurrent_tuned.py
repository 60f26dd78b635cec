"""The tuned twins of the RNN, LSTM and GRU kernels (:mod:`loopprop.kernels.recurrent` has the
formulas as loops): the same sums, regrouped around the packed product
(:func:`loopprop.kernels.gemm._gemm`).

* The input projection of every time step is one product, ``A = b + W_x·X`` on the ``(d, T·m)``
  view of ``X`` (features first, then time and examples: one matrix, no copy).
* The recurrence is one product per step, ``a_t = A[:, t] + W_h·h_{t−1}``, on time-major
  states (``Hs (T, h, m)``, ``Gs (T, rows, m)``: each step's block is contiguous, as the
  product wants). The kernels here read and write the time-major arrays; the public functions
  (:mod:`loopprop.kernels.recurrent`) convert to and from ``(h, T, m)``, and a layer's rows
  keep them in its cache as they are.
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

from .._jit import kernel, runtime_flag
from .gemm import _gemm
from .activations import _sigmoid_fast, _tanh_fast
from .dense import _transpose


@kernel
def _input_projection(A, W_x, b, X2, threads):
    """``A[r, c] = b[r] + Σ_j W_x[r, j]·X2[j, c]`` for every step's columns ``c = t·m + k``."""
    for r in range(A.shape[0]):
        for c in range(A.shape[1]):
            A[r, c] = b[r]
    _gemm(A, W_x, X2, runtime_flag(False), runtime_flag(False), threads)


@kernel
def _unstack(H2, Hs):
    """``H2[i, t·m + k] = Hs[t, i, k]``: time-major states ``(T, h, m)`` to the ``(h, T·m)``
    layout (features first) that the layer's output and the public ``H`` have."""
    T, n_h, m = Hs.shape
    for i in range(n_h):
        for t in range(T):
            for k in range(m):
                H2[i, t * m + k] = Hs[t, i, k]


@kernel
def _stack(Hs, H2):
    """``Hs[t, i, k] = H2[i, t·m + k]``: the inverse of :func:`_unstack`."""
    T, n_h, m = Hs.shape
    for i in range(n_h):
        for t in range(T):
            for k in range(m):
                Hs[t, i, k] = H2[i, t * m + k]


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


@kernel(separate=True)
def _rnn_forward_tuned(Hs, A, W_x, W_h, b, X2, h0, relu, threads):
    """:func:`~loopprop.kernels.recurrent._rnn_forward_naive` with the sums as products:
    ``Hs (T, h, m)`` every state, time-major (written). Scratch ``A (h, T·m)``; ``X2 (d,
    T·m)`` is ``X``'s view."""
    T = Hs.shape[0]
    _input_projection(A, W_x, b, X2, threads)
    for t in range(T):
        z = Hs[t]
        _step_start(z, A, t)
        _gemm(z, W_h, h0 if t == 0 else Hs[t - 1], runtime_flag(False), runtime_flag(False),
              threads)
        for i in range(z.shape[0]):
            for k in range(z.shape[1]):
                z[i, k] = max(z[i, k], 0.0) if relu else _tanh_fast(z[i, k])


@kernel(separate=True)
def _rnn_backward_tuned(dW_x, dW_h, db, dX2, dh0, dH2, Hs, X2, h0, W_x, W_h, dh_T, relu, D,
                        delta, dh, W_hT, Hprev, dx, threads):
    """:func:`~loopprop.kernels.recurrent._rnn_backward_naive` with the sums as products.
    ``dH2 (h, T·m)`` and ``dX2 (d, T·m)`` are ``dH``'s and ``dX``'s views, ``Hs (T, h, m)``
    the forward's states. Scratch: ``D (h, T·m)``, ``delta, dh (h, m)``, ``W_hT (h, h)``,
    ``Hprev (h, T·m)``."""
    T, n_h, m = Hs.shape
    _transpose(W_hT, W_h)  # once: each step's W_hᵀ·δ reads it row-major
    _copy(dh, dh_T)
    for t in range(T - 1, -1, -1):
        for i in range(n_h):
            for k in range(m):
                g = dH2[i, t * m + k] + dh[i, k]
                y = Hs[t, i, k]
                if relu:
                    v = g if y > 0.0 else 0.0
                else:
                    v = g * (1.0 - y * y)
                delta[i, k] = v
                D[i, t * m + k] = v
                dh[i, k] = 0.0
        _gemm(dh, W_hT, delta, runtime_flag(False), runtime_flag(False), threads)
    _copy(dh0, dh)
    _recurrent_weight_gradient(dW_h, D, Hs, h0, Hprev, threads)
    _finish_input_side(dW_x, db, dX2, D, X2, W_x, dx, threads)


@kernel
def _recurrent_weight_gradient(dW_h, Dy, Hs, h0, Hprev, threads):
    """``dW_h += Σ_t δ_t·h_{t−1}ᵀ`` as one product after the loop over steps: ``Dy (rows,
    T·m)`` holds every step's ``δ`` (column ``t·m + k``) and ``Hprev (h, T·m)`` the state each
    step read, ``h0`` then ``Hs[t − 1]`` -- one long sum (``P = T·m``) instead of ``T`` short
    ones."""
    T, n_h, m = Hs.shape
    for j in range(n_h):
        for k in range(m):
            Hprev[j, k] = h0[j, k]
        for t in range(1, T):
            for k in range(m):
                Hprev[j, t * m + k] = Hs[t - 1, j, k]
    _gemm(dW_h, Dy, Hprev, runtime_flag(False), runtime_flag(True), threads)


@kernel
def _finish_input_side(dW_x, db, dX2, D, X2, W_x, dx, threads):
    """After the loop over steps: ``dW_x += D·Xᵀ``, ``db += Σ_c D[:, c]``, and ``dX = W_xᵀ·D``
    written (``dx`` 1), added (2) or skipped (0)."""
    _gemm(dW_x, D, X2, runtime_flag(False), runtime_flag(True), threads)
    for r in range(D.shape[0]):
        acc = 0.0
        for c in range(D.shape[1]):
            acc += D[r, c]
        db[r] += acc
    if dx == 0:
        return
    if dx == 1:
        for j in range(dX2.shape[0]):
            for c in range(dX2.shape[1]):
                dX2[j, c] = 0.0
    _gemm(dX2, W_x, D, runtime_flag(True), runtime_flag(False), threads)


@kernel(separate=True)
def _lstm_forward_tuned(Hs, Cs, Gs, A, W_x, W_h, b, X2, h0, c0, threads):
    """:func:`~loopprop.kernels.recurrent._lstm_forward_naive` with the sums as products:
    ``Hs, Cs (T, h, m)`` and the gates' values ``Gs (T, 4h, m)``, time-major (written).
    Scratch ``A (4h, T·m)``."""
    T, n_h, m = Hs.shape
    _input_projection(A, W_x, b, X2, threads)
    for t in range(T):
        a = Gs[t]
        _step_start(a, A, t)
        _gemm(a, W_h, h0 if t == 0 else Hs[t - 1], runtime_flag(False), runtime_flag(False),
              threads)
        for u in range(n_h):
            for k in range(m):
                i_ = _sigmoid_fast(a[u, k])
                f_ = _sigmoid_fast(a[n_h + u, k])
                g_ = _tanh_fast(a[2 * n_h + u, k])
                o_ = _sigmoid_fast(a[3 * n_h + u, k])
                a[u, k] = i_
                a[n_h + u, k] = f_
                a[2 * n_h + u, k] = g_
                a[3 * n_h + u, k] = o_
                c_prev = c0[u, k] if t == 0 else Cs[t - 1, u, k]
                c = f_ * c_prev + i_ * g_
                Cs[t, u, k] = c
                Hs[t, u, k] = o_ * _tanh_fast(c)


@kernel(separate=True)
def _lstm_backward_tuned(dW_x, dW_h, db, dX2, dh0, dc0, dH2, Hs, Cs, Gs, X2, h0, c0, W_x, W_h,
                         dh_T, dc_T, D, delta, dh, dc, W_hT, Hprev, dx, threads):
    """:func:`~loopprop.kernels.recurrent._lstm_backward_naive` with the sums as products, on
    the forward's time-major ``Hs, Cs (T, h, m)``, ``Gs (T, 4h, m)``; ``dH2 (h, T·m)`` and
    ``dX2 (d, T·m)`` are ``dH``'s and ``dX``'s views. Scratch: ``D (4h, T·m)``, ``delta (4h,
    m)``, ``dh, dc (h, m)``, ``W_hT (h, 4h)``, ``Hprev (h, T·m)``."""
    T, n_h, m = Hs.shape
    _transpose(W_hT, W_h)  # once: each step's W_hᵀ·δ reads it row-major
    _copy(dh, dh_T)
    _copy(dc, dc_T)
    for t in range(T - 1, -1, -1):
        for u in range(n_h):
            for k in range(m):
                i_ = Gs[t, u, k]
                f_ = Gs[t, n_h + u, k]
                g_ = Gs[t, 2 * n_h + u, k]
                o_ = Gs[t, 3 * n_h + u, k]
                tc = _tanh_fast(Cs[t, u, k])
                c_prev = c0[u, k] if t == 0 else Cs[t - 1, u, k]
                dh_t = dH2[u, t * m + k] + dh[u, k]
                dc_t = dc[u, k] + dh_t * o_ * (1.0 - tc * tc)
                delta[u, k] = dc_t * g_ * i_ * (1.0 - i_)
                delta[n_h + u, k] = dc_t * c_prev * f_ * (1.0 - f_)
                delta[2 * n_h + u, k] = dc_t * i_ * (1.0 - g_ * g_)
                delta[3 * n_h + u, k] = dh_t * tc * o_ * (1.0 - o_)
                dc[u, k] = dc_t * f_
                dh[u, k] = 0.0
        for r in range(4 * n_h):
            for k in range(m):
                D[r, t * m + k] = delta[r, k]
        _gemm(dh, W_hT, delta, runtime_flag(False), runtime_flag(False), threads)
    _copy(dh0, dh)
    _copy(dc0, dc)
    _recurrent_weight_gradient(dW_h, D, Hs, h0, Hprev, threads)
    _finish_input_side(dW_x, db, dX2, D, X2, W_x, dx, threads)


@kernel(separate=True)
def _gru_forward_tuned(Hs, Gs, A, Y, W_x, W_h, b_x, b_h, X2, h0, threads):
    """:func:`~loopprop.kernels.recurrent._gru_forward_naive` with the sums as products:
    ``Hs (T, h, m)`` and ``Gs (T, 4h, m)`` (``r, z, n`` and ``y_n``), time-major (written).
    Scratch: ``A (3h, T·m)`` (``b_x + W_x·X`` of every step), ``Y (3h, m)`` (``b_h +
    W_h·h_{t−1}`` of one step)."""
    T, n_h, m = Hs.shape
    _input_projection(A, W_x, b_x, X2, threads)
    for t in range(T):
        for q in range(3 * n_h):
            for k in range(m):
                Y[q, k] = b_h[q]
        prev = h0 if t == 0 else Hs[t - 1]
        _gemm(Y, W_h, prev, runtime_flag(False), runtime_flag(False), threads)
        g = Gs[t]
        for u in range(n_h):
            for k in range(m):
                c = t * m + k
                r = _sigmoid_fast(A[u, c] + Y[u, k])
                z = _sigmoid_fast(A[n_h + u, c] + Y[n_h + u, k])
                y_n = Y[2 * n_h + u, k]
                n = _tanh_fast(A[2 * n_h + u, c] + r * y_n)
                g[u, k] = r
                g[n_h + u, k] = z
                g[2 * n_h + u, k] = n
                g[3 * n_h + u, k] = y_n
                Hs[t, u, k] = (1.0 - z) * n + z * prev[u, k]


@kernel(separate=True)
def _gru_backward_tuned(dW_x, dW_h, db_x, db_h, dX2, dh0, dH2, Hs, Gs, X2, h0, W_x, W_h, dh_T,
                        Dx, dy, dh, W_hT, Dy, Hprev, dx, threads):
    """:func:`~loopprop.kernels.recurrent._gru_backward_naive` with the sums as products, on
    the forward's time-major ``Hs (T, h, m)``, ``Gs (T, 4h, m)``; ``dH2 (h, T·m)`` and ``dX2
    (d, T·m)`` are ``dH``'s and ``dX``'s views. Scratch: ``Dx (3h, T·m)`` (every step's
    ``δx``), ``dy (3h, m)`` (one step's ``δy``), ``dh (h, m)``, ``W_hT (h, 3h)``, ``Dy (3h,
    T·m)`` (every step's ``δy``), ``Hprev (h, T·m)``."""
    T, n_h, m = Hs.shape
    _transpose(W_hT, W_h)  # once: each step's W_hᵀ·δ reads it row-major
    _copy(dh, dh_T)
    for t in range(T - 1, -1, -1):
        prev = h0 if t == 0 else Hs[t - 1]
        for u in range(n_h):
            for k in range(m):
                r = Gs[t, u, k]
                z = Gs[t, n_h + u, k]
                n = Gs[t, 2 * n_h + u, k]
                y_n = Gs[t, 3 * n_h + u, k]
                dh_t = dH2[u, t * m + k] + dh[u, k]
                d_n = dh_t * (1.0 - z) * (1.0 - n * n)
                d_r = d_n * y_n * r * (1.0 - r)
                d_z = dh_t * (prev[u, k] - n) * z * (1.0 - z)
                c = t * m + k
                Dx[u, c] = d_r
                Dx[n_h + u, c] = d_z
                Dx[2 * n_h + u, c] = d_n
                dy[u, k] = d_r
                dy[n_h + u, k] = d_z
                dy[2 * n_h + u, k] = d_n * r
                Dy[u, c] = d_r
                Dy[n_h + u, c] = d_z
                Dy[2 * n_h + u, c] = d_n * r
                dh[u, k] = dh_t * z  # the direct path; the gates' paths are added below
        for q in range(3 * n_h):
            acc = 0.0
            for k in range(m):
                acc += dy[q, k]
            db_h[q] += acc
        _gemm(dh, W_hT, dy, runtime_flag(False), runtime_flag(False), threads)
    _copy(dh0, dh)
    _recurrent_weight_gradient(dW_h, Dy, Hs, h0, Hprev, threads)
    _finish_input_side(dW_x, db_x, dX2, Dx, X2, W_x, dx, threads)
