"""The rows of ``Dense`` and ``TiedOutput`` (docs/formulas.md §5–§6, "Token and position
embeddings"): ``Z = W·A_prev + b`` on every position of every example.

Each row reads its settings, the offsets of its parameter arrays and of the parts of its cache
and workspaces by name: the columns below come from the layer classes' declarations
(:meth:`loopprop.layers.base.Layer.column`), computed once, and the plan fills them."""

from __future__ import annotations

from .._jit import runtime_flag
from ..kernels.dense import _dense_layer_backward, _dense_layer_forward, transposed_rows
from ..kernels.gemm import _gemm
from ..layers.core import Dense
from ..layers.sequence import TiedOutput
from .common import _offsets, _vec, _view, _zero

N_IN, N_OUT, POSITIONS, ARR_W, ARR_B = Dense.columns("n_in", "n_out", "positions", "W", "b")
A_PREV_T, = Dense.columns("A_prevT")
T_D, T_V, T_T = TiedOutput.columns("d", "vocab_size", "T")


def dense_forward(r, plan, fplan, b, s):
    """``Z[i, k] = Σ_j W[i, j]·A_prev[j, k] + b[i]`` for a ``Dense`` row; ``A_prevᵀ`` cached."""
    mb = s.mb
    x_off, y_off, _ = _offsets(plan, r, mb)
    n_in, n_out = plan[r, N_IN], plan[r, N_OUT]
    N = plan[r, POSITIONS] * mb  # N columns: every position of every example
    n_t = transposed_rows(n_out, n_in, plan[r, POSITIONS], mb)  # 0 for a large layer
    _dense_layer_forward(_view(b.acts, y_off, n_out, N),
                         _view(b.theta, plan[r, ARR_W], n_out, n_in),
                         _vec(b.theta, plan[r, ARR_B], n_out), _view(b.acts, x_off, n_in, N),
                         _view(b.cache, plan[r, A_PREV_T] * mb, n_t, n_in), s.threads)


def dense_backward(r, plan, fplan, b, s):
    """``dW += dZ·A_prevᵀ``, ``db += Σ_k dZ``, ``dA_prev += Wᵀ·dZ`` (not for row 0, whose input
    is the data) for a ``Dense`` row."""
    mb = s.mb
    x_off, y_off, _ = _offsets(plan, r, mb)
    n_in, n_out = plan[r, N_IN], plan[r, N_OUT]
    N = plan[r, POSITIONS] * mb
    n_t = transposed_rows(n_out, n_in, plan[r, POSITIONS], mb)
    w, bias = plan[r, ARR_W], plan[r, ARR_B]
    _dense_layer_backward(_view(b.grad, w, n_out, n_in), _vec(b.grad, bias, n_out),
                          _view(b.dacts, x_off, n_in, N), _view(b.dacts, y_off, n_out, N),
                          _view(b.theta, w, n_out, n_in), _view(b.acts, x_off, n_in, N),
                          _view(b.cache, plan[r, A_PREV_T] * mb, n_t, n_in), r > 0, s.threads)


def tied_output_forward(r, plan, fplan, b, s):
    """``Z[v, k] = Σ_j E[j, v]·X[j, k]`` for a ``TiedOutput`` row: the token embedding ``E
    (d, V)`` read transposed."""
    mb = s.mb
    x_off, y_off, p = _offsets(plan, r, mb)  # p: the embedding's E (the plan links the row)
    d, V, N = plan[r, T_D], plan[r, T_V], plan[r, T_T] * mb
    _zero(_vec(b.acts, y_off, V * N))
    _gemm(_view(b.acts, y_off, V, N), _view(b.theta, p, d, V), _view(b.acts, x_off, d, N),
          runtime_flag(True), runtime_flag(False), s.threads)


def tied_output_backward(r, plan, fplan, b, s):
    """``dE += X·dZᵀ`` (into the embedding's own gradient) and ``dX += E·dZ``."""
    mb = s.mb
    x_off, y_off, p = _offsets(plan, r, mb)
    d, V, N = plan[r, T_D], plan[r, T_V], plan[r, T_T] * mb
    dz = _view(b.dacts, y_off, V, N)
    _gemm(_view(b.grad, p, d, V), _view(b.acts, x_off, d, N), dz, runtime_flag(False),
          runtime_flag(True), s.threads)
    if r > 0:
        _gemm(_view(b.dacts, x_off, d, N), _view(b.theta, p, d, V), dz, runtime_flag(False),
              runtime_flag(False), s.threads)
