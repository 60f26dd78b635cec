"""The rows of ``RNN``, ``LSTM`` and ``GRU`` (docs/formulas.md, "Recurrent networks",
"Backpropagation through time", "The LSTM", "The GRU"), and their decode rows: one sampled
position at a time, carrying the states from token to token.

The input ``X (d, T, mb)`` and the output ``H (h, T, mb)`` are the row's regions of the
activations, seen as ``(d, T·mb)`` and ``(h, T·mb)`` matrices, as the tuned kernels take them;
the cache keeps the LSTM's cells ``C`` and the gates ``G`` in the same layout, and the state each
sequence started from (``h0``, ``c0``): zeros, or -- when the pass continues the previous one
(``Step.carry``) -- the last states that pass left (``H``'s last step in the output region,
``C``'s in the cache). The backward row passes no gradient into the previous window (``dh_T =
0``).
"""

from __future__ import annotations

from .._jit import kernel
from ..kernels.recurrent_tuned import (_gru_backward_tuned, _gru_forward_tuned,
                                       _lstm_backward_tuned, _lstm_forward_tuned,
                                       _rnn_backward_tuned, _rnn_forward_tuned)
from ..layers.recurrent import GRU, LSTM, RNN
from ..plan import IN_OFF, OUT_OFF
from .common import _vec, _view, _zero

R_D, R_H, R_T, R_RELU = RNN.columns("d", "hidden", "T", "relu")
R_WX, R_WH, R_B = RNN.columns("W_x", "W_h", "b")
R_H0, R_Z, R_HP, R_DD, R_DELTA, R_DH, R_DH0, R_HPREV, R_WHT = RNN.columns(
    "h0", "Z", "hp", "D", "delta", "dh", "dh0", "Hprev", "W_hT")

L_D, L_H, L_T = LSTM.columns("d", "hidden", "T")
L_WX, L_WH, L_B = LSTM.columns("W_x", "W_h", "b")
L_H0, L_C0, L_C, L_G = LSTM.columns("h0", "c0", "C", "G")
L_Z, L_HP, L_CP, L_DD, L_DELTA, L_DH, L_DC, L_DH0, L_DC0, L_HPREV, L_WHT = LSTM.columns(
    "Z", "hp", "cp", "D", "delta", "dh", "dc", "dh0", "dc0", "Hprev", "W_hT")

G_D, G_H, G_T = GRU.columns("d", "hidden", "T")
G_WX, G_WH, G_BX, G_BH = GRU.columns("W_x", "W_h", "b_x", "b_h")
G_H0, G_G = GRU.columns("h0", "G")
G_Y, G_HP, G_DX, G_DY1, G_DH, G_DH0, G_DY, G_HPREV, G_WHT = GRU.columns(
    "Y", "hp", "Dx", "dy", "dh", "dh0", "Dy", "Hprev", "W_hT")


@kernel
def _start(s0, S2, carry):
    """The state a pass starts from: ``s0[i, k] = S2[i, (T − 1)·m + k]`` (the last step the
    previous pass on these buffers left) when it carries, else zeros."""
    m = s0.shape[1]
    last = S2.shape[1] - m
    for i in range(s0.shape[0]):
        for k in range(m):
            s0[i, k] = S2[i, last + k] if carry else 0.0


@kernel
def _dx_mode(r, fresh):
    """The tuned backward kernels' ``dx``: skip the data's gradient (row 0), write the input's
    gradient when this row is the first to reach it, else add into it."""
    if r == 0:
        return 0
    return 1 if fresh else 2


@kernel
def _keep(kv, off, S2, load):
    """Between sampled positions (one example, ``T = 1``): the state ``S2 (h, 1)`` from
    ``kv[off : off + h]`` (``load``) or back."""
    for i in range(S2.shape[0]):
        if load:
            S2[i, 0] = kv[off + i]
        else:
            kv[off + i] = S2[i, 0]


def rnn_forward(r, plan, fplan, b, s):
    """An ``RNN`` row: ``H[:, t] = f(W_x·X[:, t] + W_h·H[:, t − 1] + b)`` from ``h0``."""
    _rnn_run(r, plan, b, s.mb, s.carry, s.threads)


@kernel
def _rnn_run(r, plan, b, mb, carry, threads):
    """:func:`rnn_forward` on ``mb`` sequences (its decode row's too: one, carrying)."""
    d, n_h, T = plan[r, R_D], plan[r, R_H], plan[r, R_T]
    N = T * mb
    H2 = _view(b.acts, plan[r, OUT_OFF] * mb, n_h, N)
    h0 = _view(b.cache, plan[r, R_H0] * mb, n_h, mb)
    _start(h0, H2, carry)
    _rnn_forward_tuned(H2, _view(b.work, plan[r, R_Z] * mb, n_h, mb),
                       _view(b.work, plan[r, R_HP] * mb, n_h, mb),
                       _view(b.theta, plan[r, R_WX], n_h, d),
                       _view(b.theta, plan[r, R_WH], n_h, n_h), _vec(b.theta, plan[r, R_B], n_h),
                       _view(b.acts, plan[r, IN_OFF] * mb, d, N), h0, plan[r, R_RELU] != 0,
                       threads)


def rnn_backward(r, plan, fplan, b, s):
    """Backpropagation through time for an ``RNN`` row: ``dW_x``, ``dW_h``, ``db`` added,
    ``dX`` written or added (not for row 0)."""
    mb = s.mb
    d, n_h, T = plan[r, R_D], plan[r, R_H], plan[r, R_T]
    N = T * mb
    work = b.work
    dh0 = _view(work, plan[r, R_DH0] * mb, n_h, mb)
    _zero(_vec(work, plan[r, R_DH0] * mb, n_h * mb))  # as dh_T: nothing from the next window
    _rnn_backward_tuned(
        _view(b.grad, plan[r, R_WX], n_h, d), _view(b.grad, plan[r, R_WH], n_h, n_h),
        _vec(b.grad, plan[r, R_B], n_h), _view(b.dacts, plan[r, IN_OFF] * mb, d, N), dh0,
        _view(b.dacts, plan[r, OUT_OFF] * mb, n_h, N), _view(b.acts, plan[r, OUT_OFF] * mb, n_h, N),
        _view(b.acts, plan[r, IN_OFF] * mb, d, N), _view(b.cache, plan[r, R_H0] * mb, n_h, mb),
        _view(b.theta, plan[r, R_WX], n_h, d), _view(b.theta, plan[r, R_WH], n_h, n_h), dh0,
        plan[r, R_RELU] != 0, _view(work, plan[r, R_DD] * mb, n_h, N),
        _view(work, plan[r, R_DELTA] * mb, n_h, mb), _view(work, plan[r, R_DH] * mb, n_h, mb),
        _view(b.fwork, plan[r, R_WHT], n_h, n_h), _view(work, plan[r, R_HPREV] * mb, n_h, N),
        _dx_mode(r, s.fresh), s.threads)


def lstm_forward(r, plan, fplan, b, s):
    """An ``LSTM`` row: the gates, ``c_t = f ⊙ c_{t−1} + i ⊙ g``, ``h_t = o ⊙ tanh c_t`` from
    ``h0``, ``c0``."""
    _lstm_run(r, plan, b, s.mb, s.carry, s.threads)


@kernel
def _lstm_run(r, plan, b, mb, carry, threads):
    """:func:`lstm_forward` on ``mb`` sequences (its decode row's too: one, carrying)."""
    d, n_h, T = plan[r, L_D], plan[r, L_H], plan[r, L_T]
    N = T * mb
    cache, work = b.cache, b.work
    H2 = _view(b.acts, plan[r, OUT_OFF] * mb, n_h, N)
    C2 = _view(cache, plan[r, L_C] * mb, n_h, N)
    h0 = _view(cache, plan[r, L_H0] * mb, n_h, mb)
    c0 = _view(cache, plan[r, L_C0] * mb, n_h, mb)
    _start(h0, H2, carry)
    _start(c0, C2, carry)
    _lstm_forward_tuned(H2, C2, _view(cache, plan[r, L_G] * mb, 4 * n_h, N),
                        _view(work, plan[r, L_Z] * mb, 4 * n_h, mb),
                        _view(work, plan[r, L_HP] * mb, n_h, mb),
                        _view(work, plan[r, L_CP] * mb, n_h, mb),
                        _view(b.theta, plan[r, L_WX], 4 * n_h, d),
                        _view(b.theta, plan[r, L_WH], 4 * n_h, n_h),
                        _vec(b.theta, plan[r, L_B], 4 * n_h),
                        _view(b.acts, plan[r, IN_OFF] * mb, d, N), h0, c0, threads)


def lstm_backward(r, plan, fplan, b, s):
    """Backpropagation through time for an ``LSTM`` row (the carried ``dh``, ``dc`` start at
    zero: the window's end)."""
    mb = s.mb
    d, n_h, T = plan[r, L_D], plan[r, L_H], plan[r, L_T]
    N = T * mb
    cache, work = b.cache, b.work
    dh0 = _view(work, plan[r, L_DH0] * mb, n_h, mb)
    dc0 = _view(work, plan[r, L_DC0] * mb, n_h, mb)
    _zero(_vec(work, plan[r, L_DH0] * mb, n_h * mb))  # as dh_T and dc_T: nothing comes back
    _zero(_vec(work, plan[r, L_DC0] * mb, n_h * mb))  # from the next window
    _lstm_backward_tuned(
        _view(b.grad, plan[r, L_WX], 4 * n_h, d), _view(b.grad, plan[r, L_WH], 4 * n_h, n_h),
        _vec(b.grad, plan[r, L_B], 4 * n_h), _view(b.dacts, plan[r, IN_OFF] * mb, d, N), dh0,
        dc0, _view(b.dacts, plan[r, OUT_OFF] * mb, n_h, N),
        _view(b.acts, plan[r, OUT_OFF] * mb, n_h, N), _view(cache, plan[r, L_C] * mb, n_h, N),
        _view(cache, plan[r, L_G] * mb, 4 * n_h, N), _view(b.acts, plan[r, IN_OFF] * mb, d, N),
        _view(cache, plan[r, L_H0] * mb, n_h, mb), _view(cache, plan[r, L_C0] * mb, n_h, mb),
        _view(b.theta, plan[r, L_WX], 4 * n_h, d), _view(b.theta, plan[r, L_WH], 4 * n_h, n_h),
        dh0, dc0, _view(work, plan[r, L_DD] * mb, 4 * n_h, N),
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
    cache, work = b.cache, b.work
    H2 = _view(b.acts, plan[r, OUT_OFF] * mb, n_h, N)
    h0 = _view(cache, plan[r, G_H0] * mb, n_h, mb)
    _start(h0, H2, carry)
    g = plan[r, G_G] * mb
    _gru_forward_tuned(H2, _view(cache, g, 4 * n_h, N), _view(cache, g, 3 * n_h, N),
                       _view(work, plan[r, G_Y] * mb, 3 * n_h, mb),
                       _view(work, plan[r, G_HP] * mb, n_h, mb),
                       _view(b.theta, plan[r, G_WX], 3 * n_h, d),
                       _view(b.theta, plan[r, G_WH], 3 * n_h, n_h),
                       _vec(b.theta, plan[r, G_BX], 3 * n_h), _vec(b.theta, plan[r, G_BH], 3 * n_h),
                       _view(b.acts, plan[r, IN_OFF] * mb, d, N), h0, threads)


def gru_backward(r, plan, fplan, b, s):
    """Backpropagation through time for a ``GRU`` row."""
    mb = s.mb
    d, n_h, T = plan[r, G_D], plan[r, G_H], plan[r, G_T]
    N = T * mb
    cache, work = b.cache, b.work
    dh0 = _view(work, plan[r, G_DH0] * mb, n_h, mb)
    _zero(_vec(work, plan[r, G_DH0] * mb, n_h * mb))  # as dh_T: nothing from the next window
    _gru_backward_tuned(
        _view(b.grad, plan[r, G_WX], 3 * n_h, d), _view(b.grad, plan[r, G_WH], 3 * n_h, n_h),
        _vec(b.grad, plan[r, G_BX], 3 * n_h), _vec(b.grad, plan[r, G_BH], 3 * n_h),
        _view(b.dacts, plan[r, IN_OFF] * mb, d, N), dh0,
        _view(b.dacts, plan[r, OUT_OFF] * mb, n_h, N),
        _view(b.acts, plan[r, OUT_OFF] * mb, n_h, N), _view(cache, plan[r, G_G] * mb, 4 * n_h, N),
        _view(b.acts, plan[r, IN_OFF] * mb, d, N), _view(cache, plan[r, G_H0] * mb, n_h, mb),
        _view(b.theta, plan[r, G_WX], 3 * n_h, d), _view(b.theta, plan[r, G_WH], 3 * n_h, n_h),
        dh0, _view(work, plan[r, G_DX] * mb, 3 * n_h, N),
        _view(work, plan[r, G_DY1] * mb, 3 * n_h, mb), _view(work, plan[r, G_DH] * mb, n_h, mb),
        _view(b.fwork, plan[r, G_WHT], n_h, 3 * n_h), _view(work, plan[r, G_DY] * mb, 3 * n_h, N),
        _view(work, plan[r, G_HPREV] * mb, n_h, N), _dx_mode(r, s.fresh), s.threads)


def rnn_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """One sampled position of an ``RNN`` row (a plan of ``T = 1``, one example): the state
    kept in ``kv[kv_off : kv_off + h]`` (zeros before the first) is the step's ``h0``; the new
    state goes back there."""
    H2 = _view(b.acts, plan[r, OUT_OFF], plan[r, R_H], 1)
    _keep(kv, kv_off, H2, True)
    _rnn_run(r, plan, b, 1, True, s.threads)
    _keep(kv, kv_off, H2, False)


def lstm_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """One sampled position of an ``LSTM`` row: ``h`` kept at ``kv[kv_off : kv_off + h]``,
    ``c`` right after it."""
    n_h = plan[r, L_H]
    H2 = _view(b.acts, plan[r, OUT_OFF], n_h, 1)
    C2 = _view(b.cache, plan[r, L_C], n_h, 1)
    _keep(kv, kv_off, H2, True)
    _keep(kv, kv_off + n_h, C2, True)
    _lstm_run(r, plan, b, 1, True, s.threads)
    _keep(kv, kv_off, H2, False)
    _keep(kv, kv_off + n_h, C2, False)


def gru_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """One sampled position of a ``GRU`` row (as :func:`rnn_decode`)."""
    H2 = _view(b.acts, plan[r, OUT_OFF], plan[r, G_H], 1)
    _keep(kv, kv_off, H2, True)
    _gru_run(r, plan, b, 1, True, s.threads)
    _keep(kv, kv_off, H2, False)
