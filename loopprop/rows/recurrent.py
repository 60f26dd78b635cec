"""The rows of ``RNN``, ``LSTM`` and ``GRU`` (docs/formulas.md, "Recurrent networks",
"Backpropagation through time", "The LSTM", "The GRU"), and their decode rows: one sampled
position at a time, carrying the states from token to token.

The input ``X (d, T, mb)`` and the output ``H (h, T, mb)`` are the row's regions of the
activations, seen as ``(d, T·mb)`` and ``(h, T·mb)`` matrices; the cache keeps the states
time-major (``Hs (T, h, mb)``, as the tuned kernels read them), and the state each sequence
started from (``h0``, ``c0``): zeros, or -- when the pass continues the previous one
(``Step.carry``) -- the last states that pass left in the cache. The backward row passes no
gradient into the previous window (``dh_T = 0``).
"""

from __future__ import annotations

from .._jit import kernel
from ..kernels.recurrent_tuned import (_gru_backward_tuned, _gru_forward_tuned,
                                       _lstm_backward_tuned, _lstm_forward_tuned,
                                       _rnn_backward_tuned, _rnn_forward_tuned, _unstack)
from ..layers.recurrent import GRU, LSTM, RNN
from ..plan import IN_OFF, OUT_OFF
from .common import _cube, _vec, _view

R_D, R_H, R_T, R_RELU = RNN.columns("d", "hidden", "T", "relu")
R_WX, R_WH, R_B = RNN.columns("W_x", "W_h", "b")
R_H0, R_HS = RNN.columns("h0", "Hs")
R_A, R_DD, R_DELTA, R_DH, R_DH0, R_DHT, R_HPREV = RNN.columns(
    "A", "D", "delta", "dh", "dh0", "dh_T", "Hprev")
R_WHT = RNN.column("W_hT")

L_D, L_H, L_T = LSTM.columns("d", "hidden", "T")
L_WX, L_WH, L_B = LSTM.columns("W_x", "W_h", "b")
L_H0, L_C0, L_HS, L_CS, L_GS = LSTM.columns("h0", "c0", "Hs", "Cs", "Gs")
L_A, L_DD, L_DELTA, L_DH, L_DC, L_DH0, L_DC0, L_DHT, L_DCT, L_HPREV = LSTM.columns(
    "A", "D", "delta", "dh", "dc", "dh0", "dc0", "dh_T", "dc_T", "Hprev")
L_WHT = LSTM.column("W_hT")

G_D, G_H, G_T = GRU.columns("d", "hidden", "T")
G_WX, G_WH, G_BX, G_BH = GRU.columns("W_x", "W_h", "b_x", "b_h")
G_H0, G_HS, G_GS = GRU.columns("h0", "Hs", "Gs")
G_A, G_Y, G_DX, G_DY1, G_DH, G_DH0, G_DHT, G_DY, G_HPREV = GRU.columns(
    "A", "Y", "Dx", "dy", "dh", "dh0", "dh_T", "Dy", "Hprev")
G_WHT = GRU.column("W_hT")


@kernel
def _start(s0, Ss, carry):
    """The state a pass starts from: ``s0 = Ss[T − 1]`` (the last state of the previous pass
    on these buffers) when it carries, else zeros."""
    last = Ss.shape[0] - 1
    for i in range(s0.shape[0]):
        for k in range(s0.shape[1]):
            s0[i, k] = Ss[last, i, k] if carry else 0.0


@kernel
def _zeros(a):
    """``a[i, k] = 0``: no gradient reaches the last state from the next window."""
    for i in range(a.shape[0]):
        for k in range(a.shape[1]):
            a[i, k] = 0.0


@kernel
def _dx_mode(r, fresh):
    """The tuned backward kernels' ``dx``: skip the data's gradient (row 0), write the input's
    gradient when this row is the first to reach it, else add into it."""
    if r == 0:
        return 0
    return 1 if fresh else 2


@kernel
def _keep(kv, off, Ss, load):
    """Between sampled positions: ``Ss[T − 1]`` (one example) to ``kv[off : off + h]`` or back
    (``load``)."""
    last = Ss.shape[0] - 1
    for i in range(Ss.shape[1]):
        if load:
            Ss[last, i, 0] = kv[off + i]
        else:
            kv[off + i] = Ss[last, i, 0]


def rnn_forward(r, plan, fplan, b, s):
    """An ``RNN`` row: ``H[:, t] = f(W_x·X[:, t] + W_h·H[:, t − 1] + b)`` from ``h0``."""
    _rnn_run(r, plan, b, s.mb, s.carry, s.threads)


@kernel
def _rnn_run(r, plan, b, mb, carry, threads):
    """:func:`rnn_forward` on ``mb`` sequences (its decode row's too: one, carrying)."""
    d, n_h, T = plan[r, R_D], plan[r, R_H], plan[r, R_T]
    N = T * mb
    Hs = _cube(b.cache, plan[r, R_HS] * mb, T, n_h, mb)
    h0 = _view(b.cache, plan[r, R_H0] * mb, n_h, mb)
    _start(h0, Hs, carry)
    _rnn_forward_tuned(Hs, _view(b.work, plan[r, R_A] * mb, n_h, N),
                       _view(b.theta, plan[r, R_WX], n_h, d),
                       _view(b.theta, plan[r, R_WH], n_h, n_h), _vec(b.theta, plan[r, R_B], n_h),
                       _view(b.acts, plan[r, IN_OFF] * mb, d, N), h0, plan[r, R_RELU] != 0,
                       threads)
    _unstack(_view(b.acts, plan[r, OUT_OFF] * mb, n_h, N), Hs)


def rnn_backward(r, plan, fplan, b, s):
    """Backpropagation through time for an ``RNN`` row: ``dW_x``, ``dW_h``, ``db`` added,
    ``dX`` written or added (not for row 0)."""
    mb = s.mb
    d, n_h, T = plan[r, R_D], plan[r, R_H], plan[r, R_T]
    N = T * mb
    work = b.work
    dh_T = _view(work, plan[r, R_DHT] * mb, n_h, mb)
    _zeros(dh_T)
    _rnn_backward_tuned(
        _view(b.grad, plan[r, R_WX], n_h, d), _view(b.grad, plan[r, R_WH], n_h, n_h),
        _vec(b.grad, plan[r, R_B], n_h), _view(b.dacts, plan[r, IN_OFF] * mb, d, N),
        _view(work, plan[r, R_DH0] * mb, n_h, mb), _view(b.dacts, plan[r, OUT_OFF] * mb, n_h, N),
        _cube(b.cache, plan[r, R_HS] * mb, T, n_h, mb), _view(b.acts, plan[r, IN_OFF] * mb, d, N),
        _view(b.cache, plan[r, R_H0] * mb, n_h, mb), _view(b.theta, plan[r, R_WX], n_h, d),
        _view(b.theta, plan[r, R_WH], n_h, n_h), dh_T, plan[r, R_RELU] != 0,
        _view(work, plan[r, R_DD] * mb, n_h, N), _view(work, plan[r, R_DELTA] * mb, n_h, mb),
        _view(work, plan[r, R_DH] * mb, n_h, mb), _view(b.fwork, plan[r, R_WHT], n_h, n_h),
        _view(work, plan[r, R_HPREV] * mb, n_h, N), _dx_mode(r, s.fresh), s.threads)


def lstm_forward(r, plan, fplan, b, s):
    """An ``LSTM`` row: the gates, ``c_t = f ⊙ c_{t−1} + i ⊙ g``, ``h_t = o ⊙ tanh c_t`` from
    ``h0``, ``c0``."""
    _lstm_run(r, plan, b, s.mb, s.carry, s.threads)


@kernel
def _lstm_run(r, plan, b, mb, carry, threads):
    """:func:`lstm_forward` on ``mb`` sequences (its decode row's too: one, carrying)."""
    d, n_h, T = plan[r, L_D], plan[r, L_H], plan[r, L_T]
    N = T * mb
    cache = b.cache
    Hs = _cube(cache, plan[r, L_HS] * mb, T, n_h, mb)
    Cs = _cube(cache, plan[r, L_CS] * mb, T, n_h, mb)
    h0 = _view(cache, plan[r, L_H0] * mb, n_h, mb)
    c0 = _view(cache, plan[r, L_C0] * mb, n_h, mb)
    _start(h0, Hs, carry)
    _start(c0, Cs, carry)
    _lstm_forward_tuned(Hs, Cs, _cube(cache, plan[r, L_GS] * mb, T, 4 * n_h, mb),
                        _view(b.work, plan[r, L_A] * mb, 4 * n_h, N),
                        _view(b.theta, plan[r, L_WX], 4 * n_h, d),
                        _view(b.theta, plan[r, L_WH], 4 * n_h, n_h),
                        _vec(b.theta, plan[r, L_B], 4 * n_h),
                        _view(b.acts, plan[r, IN_OFF] * mb, d, N), h0, c0, threads)
    _unstack(_view(b.acts, plan[r, OUT_OFF] * mb, n_h, N), Hs)


def lstm_backward(r, plan, fplan, b, s):
    """Backpropagation through time for an ``LSTM`` row (the carried ``dh``, ``dc`` start at
    zero: the window's end)."""
    mb = s.mb
    d, n_h, T = plan[r, L_D], plan[r, L_H], plan[r, L_T]
    N = T * mb
    cache, work = b.cache, b.work
    dh_T = _view(work, plan[r, L_DHT] * mb, n_h, mb)
    dc_T = _view(work, plan[r, L_DCT] * mb, n_h, mb)
    _zeros(dh_T)
    _zeros(dc_T)
    _lstm_backward_tuned(
        _view(b.grad, plan[r, L_WX], 4 * n_h, d), _view(b.grad, plan[r, L_WH], 4 * n_h, n_h),
        _vec(b.grad, plan[r, L_B], 4 * n_h), _view(b.dacts, plan[r, IN_OFF] * mb, d, N),
        _view(work, plan[r, L_DH0] * mb, n_h, mb), _view(work, plan[r, L_DC0] * mb, n_h, mb),
        _view(b.dacts, plan[r, OUT_OFF] * mb, n_h, N),
        _cube(cache, plan[r, L_HS] * mb, T, n_h, mb), _cube(cache, plan[r, L_CS] * mb, T, n_h, mb),
        _cube(cache, plan[r, L_GS] * mb, T, 4 * n_h, mb),
        _view(b.acts, plan[r, IN_OFF] * mb, d, N), _view(cache, plan[r, L_H0] * mb, n_h, mb),
        _view(cache, plan[r, L_C0] * mb, n_h, mb), _view(b.theta, plan[r, L_WX], 4 * n_h, d),
        _view(b.theta, plan[r, L_WH], 4 * n_h, n_h), dh_T, dc_T,
        _view(work, plan[r, L_DD] * mb, 4 * n_h, N),
        _view(work, plan[r, L_DELTA] * mb, 4 * n_h, mb), _view(work, plan[r, L_DH] * mb, n_h, mb),
        _view(work, plan[r, L_DC] * mb, n_h, mb), _view(b.fwork, plan[r, L_WHT], n_h, 4 * n_h),
        _view(work, plan[r, L_HPREV] * mb, n_h, N), _dx_mode(r, s.fresh), s.threads)


def gru_forward(r, plan, fplan, b, s):
    """A ``GRU`` row: gates ``r, z``, candidate ``n``, ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}`` from
    ``h0``."""
    _gru_run(r, plan, b, s.mb, s.carry, s.threads)


@kernel
def _gru_run(r, plan, b, mb, carry, threads):
    """:func:`gru_forward` on ``mb`` sequences (its decode row's too: one, carrying)."""
    d, n_h, T = plan[r, G_D], plan[r, G_H], plan[r, G_T]
    N = T * mb
    cache = b.cache
    Hs = _cube(cache, plan[r, G_HS] * mb, T, n_h, mb)
    h0 = _view(cache, plan[r, G_H0] * mb, n_h, mb)
    _start(h0, Hs, carry)
    _gru_forward_tuned(Hs, _cube(cache, plan[r, G_GS] * mb, T, 4 * n_h, mb),
                       _view(b.work, plan[r, G_A] * mb, 3 * n_h, N),
                       _view(b.work, plan[r, G_Y] * mb, 3 * n_h, mb),
                       _view(b.theta, plan[r, G_WX], 3 * n_h, d),
                       _view(b.theta, plan[r, G_WH], 3 * n_h, n_h),
                       _vec(b.theta, plan[r, G_BX], 3 * n_h), _vec(b.theta, plan[r, G_BH], 3 * n_h),
                       _view(b.acts, plan[r, IN_OFF] * mb, d, N), h0, threads)
    _unstack(_view(b.acts, plan[r, OUT_OFF] * mb, n_h, N), Hs)


def gru_backward(r, plan, fplan, b, s):
    """Backpropagation through time for a ``GRU`` row."""
    mb = s.mb
    d, n_h, T = plan[r, G_D], plan[r, G_H], plan[r, G_T]
    N = T * mb
    cache, work = b.cache, b.work
    dh_T = _view(work, plan[r, G_DHT] * mb, n_h, mb)
    _zeros(dh_T)
    _gru_backward_tuned(
        _view(b.grad, plan[r, G_WX], 3 * n_h, d), _view(b.grad, plan[r, G_WH], 3 * n_h, n_h),
        _vec(b.grad, plan[r, G_BX], 3 * n_h), _vec(b.grad, plan[r, G_BH], 3 * n_h),
        _view(b.dacts, plan[r, IN_OFF] * mb, d, N), _view(work, plan[r, G_DH0] * mb, n_h, mb),
        _view(b.dacts, plan[r, OUT_OFF] * mb, n_h, N),
        _cube(cache, plan[r, G_HS] * mb, T, n_h, mb),
        _cube(cache, plan[r, G_GS] * mb, T, 4 * n_h, mb),
        _view(b.acts, plan[r, IN_OFF] * mb, d, N), _view(cache, plan[r, G_H0] * mb, n_h, mb),
        _view(b.theta, plan[r, G_WX], 3 * n_h, d), _view(b.theta, plan[r, G_WH], 3 * n_h, n_h),
        dh_T, _view(work, plan[r, G_DX] * mb, 3 * n_h, N),
        _view(work, plan[r, G_DY1] * mb, 3 * n_h, mb), _view(work, plan[r, G_DH] * mb, n_h, mb),
        _view(b.fwork, plan[r, G_WHT], n_h, 3 * n_h), _view(work, plan[r, G_DY] * mb, 3 * n_h, N),
        _view(work, plan[r, G_HPREV] * mb, n_h, N), _dx_mode(r, s.fresh), s.threads)


def rnn_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """One sampled position of an ``RNN`` row (a plan of ``T = 1``, one example): the state
    kept in ``kv[kv_off : kv_off + h]`` (zeros at ``pos = 0``) is the step's ``h0``; the new
    state goes back there."""
    n_h = plan[r, R_H]
    Hs = _cube(b.cache, plan[r, R_HS], 1, n_h, 1)
    _keep(kv, kv_off, Hs, True)
    _rnn_run(r, plan, b, 1, True, s.threads)
    _keep(kv, kv_off, Hs, False)


def lstm_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """One sampled position of an ``LSTM`` row: ``h`` kept at ``kv[kv_off : kv_off + h]``,
    ``c`` right after it."""
    n_h = plan[r, L_H]
    Hs = _cube(b.cache, plan[r, L_HS], 1, n_h, 1)
    Cs = _cube(b.cache, plan[r, L_CS], 1, n_h, 1)
    _keep(kv, kv_off, Hs, True)
    _keep(kv, kv_off + n_h, Cs, True)
    _lstm_run(r, plan, b, 1, True, s.threads)
    _keep(kv, kv_off, Hs, False)
    _keep(kv, kv_off + n_h, Cs, False)


def gru_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """One sampled position of a ``GRU`` row (as :func:`rnn_decode`)."""
    n_h = plan[r, G_H]
    Hs = _cube(b.cache, plan[r, G_HS], 1, n_h, 1)
    _keep(kv, kv_off, Hs, True)
    _gru_run(r, plan, b, 1, True, s.threads)
    _keep(kv, kv_off, Hs, False)
