"""Recurrent layers as explicit loops over time steps, hidden units and batch items: the
vanilla RNN, the LSTM and the GRU, forward and backward through time (docs/formulas.md,
"Recurrent networks", "Backpropagation through time", "The LSTM", "The GRU").

Layouts put the features first, the time step ``t`` next and the batch item ``k`` last:
``X (d, T, m)``, ``H (h, T, m)``, states ``h0, c0 (h, m)``. Weights are PyTorch's
(``nn.RNN``/``nn.LSTM`` with one layer): ``W_x`` is ``weight_ih_l0``, ``W_h`` is
``weight_hh_l0``, ``b = bias_ih_l0 + bias_hh_l0`` (one bias: the two only ever appear summed);
the LSTM's four gates are stacked in PyTorch's order ``i, f, g, o``, so weights copy one to one.

The backward kernels run ``for t in reversed(range(T))`` with the gradient carried from step
``t + 1`` into step ``t`` in plain sight (``dh``, and the LSTM's ``dc``): the sum over time
steps that makes ``∂L/∂W_h`` is the loop, one step's contribution at a time. Parameter
gradients *add* into the arrays they are given (docs/formulas.md §12); ``dX``, ``dh0`` and
``dc0`` are written.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _checks
from .._jit import kernel, use_threads
from .activations import _sigmoid

#: the nonlinearities of the vanilla RNN, as PyTorch names them
NONLINEARITIES = ("tanh", "relu")
#: ``"tuned"``: :mod:`loopprop.kernels.recurrent_tuned`; ``"naive"``: the formulas here
IMPLS = ("tuned", "naive")
#: the tuned backward kernels' ``dx``: skip ``dX`` (0), write it (1) or add into it (2)
SKIP_DX, WRITE_DX, ADD_DX = 0, 1, 2


@kernel
def _input_sum(W_x, b, row, X, t, k):
    """``b[row] + Σ_j W_x[row, j]·X[j, t, k]``: one gate row's input side."""
    a = b[row]
    for j in range(X.shape[0]):
        a += W_x[row, j] * X[j, t, k]
    return a


@kernel
def _state_sum(W_h, row, H, h0, t, k):
    """``Σ_j W_h[row, j]·h_{t−1}[j, k]`` (``h_{−1} = h0``): one gate row's recurrent side."""
    a = 0.0
    for j in range(H.shape[0]):
        a += W_h[row, j] * (h0[j, k] if t == 0 else H[j, t - 1, k])
    return a


@kernel
def _rnn_forward_naive(H, W_x, W_h, b, X, h0, relu):
    """``H[i, t, k] = f(b[i] + Σ_j W_x[i, j]·X[j, t, k] + Σ_j W_h[i, j]·H[j, t − 1, k])`` with
    ``H[:, −1, :] = h0`` and ``f`` tanh (or ReLU when ``relu``): docs/formulas.md, "Recurrent
    networks". Shapes: ``H (h, T, m)`` written, ``W_x (h, d)``, ``W_h (h, h)``, ``b (h,)``,
    ``X (d, T, m)``, ``h0 (h, m)``."""
    n_h, T, m = H.shape
    for t in range(T):
        for i in range(n_h):
            for k in range(m):
                z = _input_sum(W_x, b, i, X, t, k) + _state_sum(W_h, i, H, h0, t, k)
                H[i, t, k] = max(z, 0.0) if relu else math.tanh(z)


@kernel
def _input_side(dW_x, db, dX, delta, X, W_x, t):
    """The input side of one step ``t`` of backpropagation through time, once the step's
    ``δ (rows, m)`` is known: ``db[r] += Σ_k δ[r, k]``, ``dW_x[r, j] += Σ_k δ[r, k]·X[j, t,
    k]`` and ``dX[j, t, k] = Σ_r W_x[r, j]·δ[r, k]``."""
    rows, m = delta.shape
    d = X.shape[0]
    for r in range(rows):
        for k in range(m):
            db[r] += delta[r, k]
        for j in range(d):
            for k in range(m):
                dW_x[r, j] += delta[r, k] * X[j, t, k]
    for j in range(d):
        for k in range(m):
            acc = 0.0
            for r in range(rows):
                acc += W_x[r, j] * delta[r, k]
            dX[j, t, k] = acc


@kernel
def _recurrent_side(dW_h, dh, delta, H, h0, W_h, t):
    """The recurrent side of step ``t``: ``dW_h[r, j] += Σ_k δ[r, k]·h_{t−1}[j, k]``
    (``h_{−1} = h0``) and, into the gradient carried to step ``t − 1``, ``dh[j, k] += Σ_r
    W_h[r, j]·δ[r, k]``."""
    rows, m = delta.shape
    n_h = H.shape[0]
    for r in range(rows):
        for j in range(n_h):
            for k in range(m):
                prev = h0[j, k] if t == 0 else H[j, t - 1, k]
                dW_h[r, j] += delta[r, k] * prev
    for j in range(n_h):
        for k in range(m):
            acc = 0.0
            for r in range(rows):
                acc += W_h[r, j] * delta[r, k]
            dh[j, k] += acc


@kernel
def _rnn_backward_naive(dW_x, dW_h, db, dX, dh0, dH, H, X, h0, W_x, W_h, dh_T, relu):
    """Backpropagation through time for :func:`_rnn_forward_naive`, from the last step back:

    ``dh[j, k]`` carries ``∂L/∂h_t`` from step ``t + 1`` (``dh_T`` after the last step);
    ``δ[i, k] = (dH[i, t, k] + dh[i, k]) · f'(z)`` with ``f'`` = ``1 − H[i, t, k]²`` (tanh) or
    ``[H[i, t, k] > 0]`` (ReLU); then ``dW_x[i, j] += Σ_k δ[i, k]·X[j, t, k]``, ``dW_h[i, j] +=
    Σ_k δ[i, k]·h_{t−1}[j, k]``, ``db[i] += Σ_k δ[i, k]``, ``dX[j, t, k] = Σ_i W_x[i, j]·δ[i,
    k]`` and the carried ``dh[j, k] = Σ_i W_h[i, j]·δ[i, k]`` for step ``t − 1``; at the end
    ``dh0 = dh``. Shapes as the forward's; ``dH (h, T, m)``, ``dh_T (h, m)``."""
    n_h, T, m = H.shape
    dh = dh_T.copy()
    delta = np.empty((n_h, m), H.dtype)
    for t in range(T - 1, -1, -1):
        for i in range(n_h):
            for k in range(m):
                g = dH[i, t, k] + dh[i, k]
                y = H[i, t, k]
                if relu:
                    delta[i, k] = g if y > 0.0 else 0.0
                else:
                    delta[i, k] = g * (1.0 - y * y)
                dh[i, k] = 0.0  # consumed: step t − 1's carried gradient is summed below
        _input_side(dW_x, db, dX, delta, X, W_x, t)
        _recurrent_side(dW_h, dh, delta, H, h0, W_h, t)
    for j in range(n_h):
        for k in range(m):
            dh0[j, k] = dh[j, k]


@kernel
def _lstm_forward_naive(H, C, G, W_x, W_h, b, X, h0, c0):
    """The LSTM, one time step after another (docs/formulas.md, "The LSTM"): with ``h`` hidden
    units and the gates stacked ``i, f, g, o`` (rows ``q·h + u`` of the weights for gate ``q``
    and unit ``u``),

    ``a[q·h + u, k] = b[q·h + u] + Σ_j W_x[q·h + u, j]·X[j, t, k] + Σ_j W_h[q·h + u, j]·
    h_{t−1}[j, k]``, ``i = σ(a_i)``, ``f = σ(a_f)``, ``g = tanh(a_g)``, ``o = σ(a_o)``,
    ``C[u, t, k] = f·c_{t−1}[u, k] + i·g``, ``H[u, t, k] = o·tanh(C[u, t, k])``.

    Shapes: ``H, C (h, T, m)`` and the gates' values ``G (4h, T, m)`` written (the backward
    pass reads them), ``W_x (4h, d)``, ``W_h (4h, h)``, ``b (4h,)``, ``X (d, T, m)``,
    ``h0, c0 (h, m)``."""
    n_h, T, m = H.shape
    for t in range(T):
        for r in range(4 * n_h):
            for k in range(m):
                a = _input_sum(W_x, b, r, X, t, k) + _state_sum(W_h, r, H, h0, t, k)
                G[r, t, k] = math.tanh(a) if 2 * n_h <= r < 3 * n_h else _sigmoid(a)
        for u in range(n_h):
            for k in range(m):
                c_prev = c0[u, k] if t == 0 else C[u, t - 1, k]
                c = G[n_h + u, t, k] * c_prev + G[u, t, k] * G[2 * n_h + u, t, k]
                C[u, t, k] = c
                H[u, t, k] = G[3 * n_h + u, t, k] * math.tanh(c)


@kernel
def _lstm_backward_naive(dW_x, dW_h, db, dX, dh0, dc0, dH, H, C, G, X, h0, c0, W_x, W_h, dh_T,
                         dc_T):
    """Backpropagation through time for :func:`_lstm_forward_naive`, every gate's derivative
    written out (docs/formulas.md, "The LSTM"). At step ``t``, with ``dh``, ``dc`` carried from
    step ``t + 1`` (``dh_T``, ``dc_T`` after the last step):

    ``dh_t = dH[:, t, :] + dh``;  ``dc_t = dc + dh_t ⊙ o ⊙ (1 − tanh² c_t)``;
    ``do = dh_t ⊙ tanh c_t``,  ``di = dc_t ⊙ g``,  ``dg = dc_t ⊙ i``,  ``df = dc_t ⊙ c_{t−1}``;
    through the nonlinearities ``δ_i = di·i(1 − i)``, ``δ_f = df·f(1 − f)``,
    ``δ_g = dg·(1 − g²)``, ``δ_o = do·o(1 − o)``; then ``dW_x += δ·X_tᵀ``,
    ``dW_h += δ·h_{t−1}ᵀ``, ``db += Σ_k δ``, ``dX_t = W_xᵀ·δ``, and carried back
    ``dh = W_hᵀ·δ``, ``dc = dc_t ⊙ f``. At the end ``dh0 = dh``, ``dc0 = dc``.
    Shapes as the forward's; ``dH (h, T, m)``, ``dh_T, dc_T (h, m)``."""
    n_h, T, m = H.shape
    dh = dh_T.copy()
    dc = dc_T.copy()
    delta = np.empty((4 * n_h, m), H.dtype)
    for t in range(T - 1, -1, -1):
        for u in range(n_h):
            for k in range(m):
                i_ = G[u, t, k]
                f_ = G[n_h + u, t, k]
                g_ = G[2 * n_h + u, t, k]
                o_ = G[3 * n_h + u, t, k]
                tc = math.tanh(C[u, t, k])
                c_prev = c0[u, k] if t == 0 else C[u, t - 1, k]
                dh_t = dH[u, t, k] + dh[u, k]
                dc_t = dc[u, k] + dh_t * o_ * (1.0 - tc * tc)
                delta[u, k] = dc_t * g_ * i_ * (1.0 - i_)                 # δ_i
                delta[n_h + u, k] = dc_t * c_prev * f_ * (1.0 - f_)       # δ_f
                delta[2 * n_h + u, k] = dc_t * i_ * (1.0 - g_ * g_)       # δ_g
                delta[3 * n_h + u, k] = dh_t * tc * o_ * (1.0 - o_)       # δ_o
                dc[u, k] = dc_t * f_                                      # carried to t − 1
                dh[u, k] = 0.0                   # consumed: step t − 1's is summed below
        _input_side(dW_x, db, dX, delta, X, W_x, t)
        _recurrent_side(dW_h, dh, delta, H, h0, W_h, t)
    for j in range(n_h):
        for k in range(m):
            dh0[j, k] = dh[j, k]
            dc0[j, k] = dc[j, k]


@kernel
def _gru_forward_naive(H, G, W_x, W_h, b_x, b_h, X, h0):
    """The GRU, one time step after another (docs/formulas.md, "The GRU"), as PyTorch's
    ``nn.GRU``: gates stacked ``r, z, n`` (rows ``q·h + u``),

    ``x_q = b_x[q] + Σ_j W_x[q, j]·X[j, t, k]`` and ``y_q = b_h[q] + Σ_j W_h[q, j]·
    h_{t−1}[j, k]`` for every gate row ``q``; ``r = σ(x_r + y_r)``, ``z = σ(x_z + y_z)``,
    ``n = tanh(x_n + r·y_n)``, ``H[u, t, k] = (1 − z)·n + z·h_{t−1}[u, k]``.

    The two biases stay apart: ``b_h``'s ``n`` rows sit inside ``r·(…)``. Shapes: ``H (h, T,
    m)`` and ``G (4h, T, m)`` written (``r, z, n`` and ``y_n``, which the backward pass reads),
    ``W_x (3h, d)``, ``W_h (3h, h)``, ``b_x, b_h (3h,)``, ``X (d, T, m)``, ``h0 (h, m)``."""
    n_h, T, m = H.shape
    for t in range(T):
        for u in range(n_h):
            for k in range(m):
                r = _sigmoid(_input_sum(W_x, b_x, u, X, t, k)
                             + (b_h[u] + _state_sum(W_h, u, H, h0, t, k)))
                z = _sigmoid(_input_sum(W_x, b_x, n_h + u, X, t, k)
                             + (b_h[n_h + u] + _state_sum(W_h, n_h + u, H, h0, t, k)))
                y_n = b_h[2 * n_h + u] + _state_sum(W_h, 2 * n_h + u, H, h0, t, k)
                n = math.tanh(_input_sum(W_x, b_x, 2 * n_h + u, X, t, k) + r * y_n)
                G[u, t, k] = r
                G[n_h + u, t, k] = z
                G[2 * n_h + u, t, k] = n
                G[3 * n_h + u, t, k] = y_n
        for u in range(n_h):  # then the state: h_t = (1 − z)·n + z·h_{t−1}
            for k in range(m):
                prev = h0[u, k] if t == 0 else H[u, t - 1, k]
                z = G[n_h + u, t, k]
                H[u, t, k] = (1.0 - z) * G[2 * n_h + u, t, k] + z * prev


@kernel
def _gru_backward_naive(dW_x, dW_h, db_x, db_h, dX, dh0, dH, H, G, X, h0, W_x, W_h, dh_T):
    """Backpropagation through time for :func:`_gru_forward_naive` (docs/formulas.md, "The
    GRU"). At step ``t``, with ``dh`` carried from step ``t + 1`` (``dh_T`` after the last):

    ``dh_t = dH[:, t, :] + dh``;  ``dn = dh_t ⊙ (1 − z)``,  ``dz = dh_t ⊙ (h_{t−1} − n)``;
    ``δ_n = dn ⊙ (1 − n²)``,  ``δ_r = δ_n ⊙ y_n ⊙ r(1 − r)``,  ``δ_z = dz ⊙ z(1 − z)``;
    the input side ``δx = (δ_r, δ_z, δ_n)``, the recurrent side ``δy = (δ_r, δ_z, δ_n ⊙ r)``:
    ``dW_x += δx·X_tᵀ``, ``db_x += Σ_k δx``, ``dW_h += δy·h_{t−1}ᵀ``, ``db_h += Σ_k δy``,
    ``dX_t = W_xᵀ·δx``, and carried back ``dh = dh_t ⊙ z + W_hᵀ·δy``; at the end ``dh0 = dh``.
    Shapes as the forward's; ``dH (h, T, m)``, ``dh_T (h, m)``."""
    n_h, T, m = H.shape
    dh = dh_T.copy()
    dx_ = np.empty((3 * n_h, m), H.dtype)  # δx
    dy_ = np.empty((3 * n_h, m), H.dtype)  # δy
    for t in range(T - 1, -1, -1):
        for u in range(n_h):
            for k in range(m):
                r = G[u, t, k]
                z = G[n_h + u, t, k]
                n = G[2 * n_h + u, t, k]
                y_n = G[3 * n_h + u, t, k]
                prev = h0[u, k] if t == 0 else H[u, t - 1, k]
                dh_t = dH[u, t, k] + dh[u, k]
                d_n = dh_t * (1.0 - z) * (1.0 - n * n)
                dx_[u, k] = d_n * y_n * r * (1.0 - r)                 # δ_r
                dx_[n_h + u, k] = dh_t * (prev - n) * z * (1.0 - z)   # δ_z
                dx_[2 * n_h + u, k] = d_n                             # δ_n
                dy_[u, k] = dx_[u, k]
                dy_[n_h + u, k] = dx_[n_h + u, k]
                dy_[2 * n_h + u, k] = d_n * r
                dh[u, k] = dh_t * z  # the direct path; the gates' paths are added below
        for q in range(3 * n_h):
            for k in range(m):
                db_h[q] += dy_[q, k]
        _input_side(dW_x, db_x, dX, dx_, X, W_x, t)
        _recurrent_side(dW_h, dh, dy_, H, h0, W_h, t)
    for j in range(n_h):
        for k in range(m):
            dh0[j, k] = dh[j, k]


# -- the public functions ----------------------------------------------------------------------


class RNNCache(NamedTuple):
    """What :func:`rnn_backward` reads: the forward pass's inputs and every hidden state."""
    W_x: np.ndarray
    W_h: np.ndarray
    X: np.ndarray
    h0: np.ndarray
    H: np.ndarray
    nonlinearity: str


class LSTMCache(NamedTuple):
    """What :func:`lstm_backward` reads: the inputs, every hidden and cell state, and the
    gates' values ``G (4h, T, m)`` (``i, f, g, o`` stacked)."""
    W_x: np.ndarray
    W_h: np.ndarray
    X: np.ndarray
    h0: np.ndarray
    c0: np.ndarray
    H: np.ndarray
    C: np.ndarray
    G: np.ndarray


class GRUCache(NamedTuple):
    """What :func:`gru_backward` reads: the inputs, every hidden state, and ``G (4h, T, m)``:
    the gates ``r, z, n`` and the recurrent product of the ``n`` rows, ``y_n``."""
    W_x: np.ndarray
    W_h: np.ndarray
    X: np.ndarray
    h0: np.ndarray
    H: np.ndarray
    G: np.ndarray


def _recurrent_args(W_x, W_h, b, X, gates: int, check_finite: bool):
    """The weights and the input of a recurrent layer of ``gates`` stacked blocks, checked:
    ``W_x (gates·h, d)``, ``W_h (gates·h, h)``, ``b (gates·h,)``, ``X (d, T, m)``."""
    W_x = _checks.as_float_array(W_x, "W_x", 2, check_finite=check_finite)
    W_h = _checks.as_float_array(W_h, "W_h", 2, check_finite=check_finite)
    b = _checks.as_float_array(b, "b", 1, check_finite=check_finite,
                               hint="b is a vector (one bias: PyTorch's bias_ih + bias_hh)")
    X = _checks.as_float_array(X, "X", 3, check_finite=check_finite,
                               hint="X has shape (d, T, m): features, time steps, examples; "
                               "a PyTorch batch_first input (m, T, d) is X.transpose(2, 1, 0)")
    _checks.same_dtype(W_x=W_x, W_h=W_h, b=b, X=X)
    rows, n_h = W_h.shape
    if n_h == 0:
        raise ValueError("W_h: the layer has no hidden units (shape "
                         f"{W_h.shape}); give it at least one")
    if rows != gates * n_h:
        order = {3: "r, z, n", 4: "i, f, g, o"}.get(gates, "")
        what = "(h, h)" if gates == 1 else f"({gates}h, h), the gates stacked {order}"
        raise ValueError(f"W_h: expected shape {what}, got {W_h.shape}")
    if W_x.shape[0] != rows:
        raise ValueError(f"W_x: expected {rows} rows (as W_h: {W_h.shape}), got shape "
                         f"{W_x.shape}")
    if b.shape != (rows,):
        raise ValueError(f"b: expected shape ({rows},), got {b.shape}")
    if X.shape[0] != W_x.shape[1]:
        hint = ("; X looks like PyTorch's batch_first (m, T, d): pass X.transpose(2, 1, 0)"
                if X.shape[2] == W_x.shape[1] else "")
        raise ValueError(f"X: expected {W_x.shape[1]} features on its first axis (W_x has shape "
                         f"{W_x.shape}), got shape {X.shape}{hint}")
    if X.shape[1] == 0:
        raise ValueError(f"X: no time steps (shape {X.shape}); a sequence needs T ≥ 1")
    if X.shape[2] == 0:
        raise ValueError(f"X: no examples (shape {X.shape})")
    return W_x, W_h, b, X


def _state(s, name: str, n_h: int, m: int, dtype, check_finite: bool) -> np.ndarray:
    """An initial state ``(h, m)`` (zeros when ``None``), checked."""
    if s is None:
        return np.zeros((n_h, m), dtype)
    s = _checks.as_float_array(s, name, 2, check_finite=check_finite,
                               hint=f"{name} has shape (h, m) = ({n_h}, {m})")
    if s.shape != (n_h, m):
        raise ValueError(f"{name}: expected shape (h, m) = ({n_h}, {m}), got {s.shape}"
                         + ("; it looks transposed: pass its .T" if s.shape == (m, n_h) else ""))
    if s.dtype != dtype:
        raise TypeError(f"{name} is {s.dtype} but the weights are {dtype}: convert with "
                        f"{name}.astype(np.{dtype})")
    return s


def _grad_like(x, name: str, shape: tuple, dtype, check_finite: bool) -> np.ndarray:
    x = _checks.as_float_array(x, name, len(shape), check_finite=check_finite)
    if x.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (as the forward pass's output), "
                         f"got {x.shape}")
    if x.dtype != dtype:
        raise TypeError(f"{name} is {x.dtype} but the forward pass ran in {dtype}")
    return x


def _backward_args(cache, cls, forward: str, dH, dh_T, impl: str, check_finite: bool):
    """A backward call's checks, shared by the three cells: ``cache`` from ``forward``,
    ``impl``, ``dH`` shaped as the forward pass's ``H``, ``dh_T`` (zeros when ``None``).
    Returns ``(dH, dh_T)``."""
    if not isinstance(cache, cls):
        raise TypeError(f"cache: expected the cache {forward} returned, got "
                        f"{_checks._describe(cache)}")
    _checks.check_choice(impl, "impl", IMPLS)
    H = cache.H
    dH = _grad_like(dH, "dH", H.shape, H.dtype, check_finite)
    return dH, _state(dh_T, "dh_T", H.shape[0], H.shape[2], H.dtype, check_finite)


def _flat(A: np.ndarray) -> np.ndarray:
    """``A (rows, T, m)`` as the tuned kernels' ``(rows, T·m)`` matrix (a view)."""
    return A.reshape(A.shape[0], -1)


def _zero_gradients(W_x, W_h, X, h0):
    """``dW_x``, ``dW_h``, a bias gradient (zeros: the kernels add into them), and ``dX``,
    ``dh0`` (written by the kernels)."""
    return (np.zeros_like(W_x), np.zeros_like(W_h), np.zeros(W_h.shape[0], W_h.dtype),
            np.empty_like(X), np.empty_like(h0))


def rnn_forward(W_x, W_h, b, X, h0=None, nonlinearity: str = "tanh", *, impl: str = "tuned",
                check_finite: bool = True, parallel: bool = True
                ) -> tuple[np.ndarray, RNNCache]:
    """A vanilla RNN over a sequence: ``H[:, t] = f(W_x·X[:, t] + W_h·H[:, t − 1] + b)``
    (docs/formulas.md, "Recurrent networks"), as PyTorch's ``nn.RNN``.

    Parameters
    ----------
    W_x : (h, d) input weights (``weight_ih_l0``); W_h : (h, h) recurrent weights
        (``weight_hh_l0``); b : (h,) the bias (``bias_ih_l0 + bias_hh_l0``)
    X : (d, T, m) features, time steps, examples
    h0 : (h, m) the initial state (zeros when ``None``)
    nonlinearity : ``"tanh"`` or ``"relu"``
    impl : ``"tuned"`` (the input projection of all steps in one packed product, one per step
        for the recurrence: :mod:`loopprop.kernels.recurrent_tuned`) or ``"naive"`` (the
        formula as loops)
    parallel : allow two threads in the products

    Returns
    -------
    H : (h, T, m) every hidden state (``H[:, -1]`` is the final one)
    cache : what :func:`rnn_backward` reads
    """
    _checks.check_choice(nonlinearity, "nonlinearity", NONLINEARITIES)
    _checks.check_choice(impl, "impl", IMPLS)
    W_x, W_h, b, X = _recurrent_args(W_x, W_h, b, X, 1, check_finite)
    n_h, (T, m) = W_h.shape[0], X.shape[1:]
    h0 = _state(h0, "h0", n_h, m, X.dtype, check_finite)
    H = np.empty((n_h, T, m), X.dtype)
    relu = nonlinearity == "relu"
    if impl == "naive":
        _rnn_forward_naive(H, W_x, W_h, b, X, h0, relu)
    else:
        _rnn_forward_tuned(_flat(H), np.empty((n_h, m), X.dtype), np.empty((n_h, m), X.dtype),
                           W_x, W_h, b, _flat(X), h0, relu, use_threads(parallel))
    return H, RNNCache(W_x, W_h, X, h0, H, nonlinearity)


def rnn_backward(dH, cache: RNNCache, dh_T=None, *, impl: str = "tuned",
                 check_finite: bool = True, parallel: bool = True):
    """Backpropagation through time for :func:`rnn_forward`.

    Parameters
    ----------
    dH : (h, T, m) the loss's gradient w.r.t. every hidden state (zeros where the loss does not
        read one)
    cache : from :func:`rnn_forward`
    dh_T : (h, m) a gradient reaching the final state from outside the sequence (the next
        window's, in truncated BPTT); zeros when ``None``
    impl, parallel : as :func:`rnn_forward`'s

    Returns
    -------
    dW_x (h, d), dW_h (h, h), db (h,), dX (d, T, m), dh0 (h, m)
    """
    dH, dh_T = _backward_args(cache, RNNCache, "rnn_forward", dH, dh_T, impl, check_finite)
    W_x, W_h, X, h0, H, nonlinearity = cache
    n_h, (d, T, m) = H.shape[0], X.shape
    dW_x, dW_h, db, dX, dh0 = _zero_gradients(W_x, W_h, X, h0)
    relu = nonlinearity == "relu"
    if impl == "naive":
        _rnn_backward_naive(dW_x, dW_h, db, dX, dh0, dH, H, X, h0, W_x, W_h, dh_T, relu)
    else:
        dt = H.dtype
        _rnn_backward_tuned(dW_x, dW_h, db, dX.reshape(d, T * m), dh0, dH.reshape(n_h, T * m),
                            _flat(H), _flat(X), h0, W_x, W_h, dh_T, relu,
                            np.empty((n_h, T * m), dt), np.empty((n_h, m), dt),
                            np.empty((n_h, m), dt), np.empty((n_h, n_h), dt),
                            np.empty((n_h, T * m), dt), WRITE_DX, use_threads(parallel))
    return dW_x, dW_h, db, dX, dh0


def lstm_forward(W_x, W_h, b, X, h0=None, c0=None, *, impl: str = "tuned",
                 check_finite: bool = True, parallel: bool = True
                 ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], LSTMCache]:
    """An LSTM over a sequence (docs/formulas.md, "The LSTM"), as PyTorch's ``nn.LSTM``: gates
    ``i, f, g, o`` from ``W_x·X[:, t] + W_h·h_{t−1} + b``, then ``c_t = f ⊙ c_{t−1} + i ⊙ g``,
    ``h_t = o ⊙ tanh(c_t)``.

    Parameters
    ----------
    W_x : (4h, d), W_h : (4h, h), b : (4h,) -- the gates stacked ``i, f, g, o`` as PyTorch's
        ``weight_ih_l0``, ``weight_hh_l0`` and ``bias_ih_l0 + bias_hh_l0``
    X : (d, T, m); h0, c0 : (h, m) initial states (zeros when ``None``)
    impl, parallel : as :func:`rnn_forward`'s

    Returns
    -------
    H : (h, T, m) every hidden state; (h_T, c_T) : the final states, (h, m) each;
    cache : what :func:`lstm_backward` reads
    """
    _checks.check_choice(impl, "impl", IMPLS)
    W_x, W_h, b, X = _recurrent_args(W_x, W_h, b, X, 4, check_finite)
    n_h, (T, m) = W_h.shape[1], X.shape[1:]
    h0 = _state(h0, "h0", n_h, m, X.dtype, check_finite)
    c0 = _state(c0, "c0", n_h, m, X.dtype, check_finite)
    dt = X.dtype
    H = np.empty((n_h, T, m), dt)
    C = np.empty((n_h, T, m), dt)
    G = np.empty((4 * n_h, T, m), dt)
    if impl == "naive":
        _lstm_forward_naive(H, C, G, W_x, W_h, b, X, h0, c0)
    else:
        _lstm_forward_tuned(_flat(H), _flat(C), _flat(G), np.empty((4 * n_h, m), dt),
                            np.empty((n_h, m), dt), np.empty((n_h, m), dt), W_x, W_h, b,
                            _flat(X), h0, c0, use_threads(parallel))
    return H, (H[:, -1].copy(), C[:, -1].copy()), LSTMCache(W_x, W_h, X, h0, c0, H, C, G)


def lstm_backward(dH, cache: LSTMCache, dh_T=None, dc_T=None, *, impl: str = "tuned",
                  check_finite: bool = True, parallel: bool = True):
    """Backpropagation through time for :func:`lstm_forward`.

    Parameters
    ----------
    dH : (h, T, m) the gradient w.r.t. every hidden state; cache : from :func:`lstm_forward`
    dh_T, dc_T : (h, m) gradients reaching the final states from outside (zeros when ``None``)
    impl, parallel : as :func:`rnn_forward`'s

    Returns
    -------
    dW_x (4h, d), dW_h (4h, h), db (4h,), dX (d, T, m), dh0 (h, m), dc0 (h, m)
    """
    dH, dh_T = _backward_args(cache, LSTMCache, "lstm_forward", dH, dh_T, impl, check_finite)
    W_x, W_h, X, h0, c0, H, C, G = cache
    n_h, (d, T, m) = H.shape[0], X.shape
    dc_T = _state(dc_T, "dc_T", n_h, m, H.dtype, check_finite)
    dW_x, dW_h, db, dX, dh0 = _zero_gradients(W_x, W_h, X, h0)
    dc0 = np.empty_like(c0)
    if impl == "naive":
        _lstm_backward_naive(dW_x, dW_h, db, dX, dh0, dc0, dH, H, C, G, X, h0, c0, W_x, W_h,
                             dh_T, dc_T)
    else:
        dt = H.dtype
        _lstm_backward_tuned(dW_x, dW_h, db, dX.reshape(d, T * m), dh0, dc0,
                             dH.reshape(n_h, T * m), _flat(H), _flat(C), _flat(G), _flat(X),
                             h0, c0, W_x, W_h, dh_T, dc_T,
                             np.empty((4 * n_h, T * m), dt), np.empty((4 * n_h, m), dt),
                             np.empty((n_h, m), dt), np.empty((n_h, m), dt),
                             np.empty((n_h, 4 * n_h), dt), np.empty((n_h, T * m), dt), WRITE_DX,
                             use_threads(parallel))
    return dW_x, dW_h, db, dX, dh0, dc0


def gru_forward(W_x, W_h, b_x, b_h, X, h0=None, *, impl: str = "tuned",
                check_finite: bool = True, parallel: bool = True
                ) -> tuple[np.ndarray, GRUCache]:
    """A GRU over a sequence (docs/formulas.md, "The GRU"), as PyTorch's ``nn.GRU``: gates
    ``r = σ(·)``, ``z = σ(·)``, ``n = tanh(W_x,n·x + b_x,n + r ⊙ (W_h,n·h + b_h,n))``, then
    ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``.

    Parameters
    ----------
    W_x : (3h, d), W_h : (3h, h) -- the gates stacked ``r, z, n`` as PyTorch's
        ``weight_ih_l0``, ``weight_hh_l0``
    b_x, b_h : (3h,) ``bias_ih_l0`` and ``bias_hh_l0``: apart, since ``b_h``'s ``n`` rows are
        multiplied by ``r``
    X : (d, T, m); h0 : (h, m) the initial state (zeros when ``None``)
    impl, parallel : as :func:`rnn_forward`'s

    Returns
    -------
    H : (h, T, m) every hidden state; cache : what :func:`gru_backward` reads
    """
    W_x, W_h, b_x, X = _recurrent_args(W_x, W_h, b_x, X, 3, check_finite)
    b_h = _checks.as_float_array(b_h, "b_h", 1, check_finite=check_finite)
    if b_h.shape != b_x.shape:
        raise ValueError(f"b_h: expected shape {b_x.shape} (as b_x), got {b_h.shape}")
    _checks.same_dtype(W_x=W_x, b_h=b_h)
    _checks.check_choice(impl, "impl", IMPLS)
    n_h, (T, m) = W_h.shape[1], X.shape[1:]
    h0 = _state(h0, "h0", n_h, m, X.dtype, check_finite)
    dt = X.dtype
    H = np.empty((n_h, T, m), dt)
    G = np.empty((4 * n_h, T, m), dt)
    if impl == "naive":
        _gru_forward_naive(H, G, W_x, W_h, b_x, b_h, X, h0)
    else:
        G2 = _flat(G)
        _gru_forward_tuned(_flat(H), G2, G2[:3 * n_h], np.empty((3 * n_h, m), dt),
                           np.empty((n_h, m), dt), W_x, W_h, b_x, b_h, _flat(X), h0,
                           use_threads(parallel))
    return H, GRUCache(W_x, W_h, X, h0, H, G)


def gru_backward(dH, cache: GRUCache, dh_T=None, *, impl: str = "tuned",
                 check_finite: bool = True, parallel: bool = True):
    """Backpropagation through time for :func:`gru_forward` (``dh_T``, ``impl``, ``parallel``
    as :func:`rnn_backward`'s).

    Returns
    -------
    dW_x (3h, d), dW_h (3h, h), db_x (3h,), db_h (3h,), dX (d, T, m), dh0 (h, m)
    """
    dH, dh_T = _backward_args(cache, GRUCache, "gru_forward", dH, dh_T, impl, check_finite)
    W_x, W_h, X, h0, H, G = cache
    n_h, (d, T, m) = H.shape[0], X.shape
    dW_x, dW_h, db_x, dX, dh0 = _zero_gradients(W_x, W_h, X, h0)
    db_h = np.zeros_like(db_x)
    if impl == "naive":
        _gru_backward_naive(dW_x, dW_h, db_x, db_h, dX, dh0, dH, H, G, X, h0, W_x, W_h, dh_T)
    else:
        dt = H.dtype
        _gru_backward_tuned(dW_x, dW_h, db_x, db_h, dX.reshape(d, T * m), dh0,
                            dH.reshape(n_h, T * m), _flat(H), _flat(G),
                            X.reshape(d, T * m), h0, W_x, W_h, dh_T,
                            np.empty((3 * n_h, T * m), dt), np.empty((3 * n_h, m), dt),
                            np.empty((n_h, m), dt), np.empty((n_h, 3 * n_h), dt),
                            np.empty((3 * n_h, T * m), dt), np.empty((n_h, T * m), dt), WRITE_DX,
                            use_threads(parallel))
    return dW_x, dW_h, db_x, db_h, dX, dh0


from .recurrent_tuned import (_gru_backward_tuned, _gru_forward_tuned,  # noqa: E402
                              _lstm_backward_tuned, _lstm_forward_tuned, _rnn_backward_tuned,
                              _rnn_forward_tuned)

__all__ = ["GRUCache", "LSTMCache", "NONLINEARITIES", "RNNCache", "lstm_backward", "lstm_forward",
           "gru_backward", "gru_forward", "rnn_backward", "rnn_forward"]
