"""The rows of ``Dense`` and ``TiedOutput`` (docs/formulas.md §5–§6, "Token and position
embeddings"): ``Z = W·A_prev + b`` on every position of every example."""

from __future__ import annotations

from .._jit import runtime_flag
from ..kernels.dense import _dense_layer_backward, _dense_layer_forward
from ..kernels.gemm import _gemm
from ..plan import C_OFF, H0, WF_OFF, WK_OFF
from .common import _offsets, _vec, _view, _zero


def dense_forward(r, plan, fplan, b, s):
    """``Z[i, k] = Σ_j W[i, j]·A_prev[j, k] + b[i]`` for a ``Dense`` row; ``A_prevᵀ`` cached."""
    mb = s.mb
    x_off, y_off, p = _offsets(plan, r, mb)
    h = plan[r, H0:]
    n_in, n_out, N = h[0], h[1], h[2] * mb  # N columns: every position of every example
    _dense_layer_forward(_view(b.acts, y_off, n_out, N), _view(b.theta, p, n_out, n_in),
                         _vec(b.theta, p + n_out * n_in, n_out), _view(b.acts, x_off, n_in, N),
                         _view(b.cache, plan[r, C_OFF] * mb, N, n_in), s.threads)


def dense_backward(r, plan, fplan, b, s):
    """``dW += dZ·A_prevᵀ``, ``db += Σ_k dZ``, ``dA_prev += Wᵀ·dZ`` (not for row 0, whose input
    is the data) for a ``Dense`` row."""
    mb = s.mb
    x_off, y_off, p = _offsets(plan, r, mb)
    h = plan[r, H0:]
    n_in, n_out, N = h[0], h[1], h[2] * mb
    _dense_layer_backward(_view(b.grad, p, n_out, n_in), _vec(b.grad, p + n_out * n_in, n_out),
                          _view(b.dacts, x_off, n_in, N), _view(b.dacts, y_off, n_out, N),
                          _view(b.theta, p, n_out, n_in), _view(b.acts, x_off, n_in, N),
                          _view(b.cache, plan[r, C_OFF] * mb, N, n_in),
                          _view(b.fwork, plan[r, WF_OFF], n_in, n_out),
                          _view(b.work, plan[r, WK_OFF] * mb, N, n_out), r > 0, s.threads)


def tied_output_forward(r, plan, fplan, b, s):
    """``Z[v, k] = Σ_j E[j, v]·X[j, k]`` for a ``TiedOutput`` row: the token embedding ``E
    (d, V)`` read transposed."""
    mb = s.mb
    x_off, y_off, p = _offsets(plan, r, mb)
    h = plan[r, H0:]
    d, V, N = h[0], h[1], h[2] * mb
    _zero(_vec(b.acts, y_off, V * N))
    _gemm(_view(b.acts, y_off, V, N), _view(b.theta, p, d, V), _view(b.acts, x_off, d, N),
          runtime_flag(True), runtime_flag(False), s.threads)


def tied_output_backward(r, plan, fplan, b, s):
    """``dE += X·dZᵀ`` (into the embedding's own gradient) and ``dX += E·dZ``."""
    mb = s.mb
    x_off, y_off, p = _offsets(plan, r, mb)
    h = plan[r, H0:]
    d, V, N = h[0], h[1], h[2] * mb
    dz = _view(b.dacts, y_off, V, N)
    _gemm(_view(b.grad, p, d, V), _view(b.acts, x_off, d, N), dz, runtime_flag(False),
          runtime_flag(True), s.threads)
    if r > 0:
        _gemm(_view(b.dacts, x_off, d, N), _view(b.theta, p, d, V), dz, runtime_flag(False),
              runtime_flag(False), s.threads)
