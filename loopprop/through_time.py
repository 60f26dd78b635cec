"""The gradient through time, made visible: how much of the last position's loss reaches each
earlier hidden state of a recurrent layer (docs/formulas.md, "Backpropagation through time").

Backpropagation through time multiplies the gradient reaching ``h_t`` by one Jacobian per step
it travels back: ``∂L/∂h_{t−1} = W_hᵀ·(∂L/∂h_t ⊙ f′)`` in a plain RNN, whose norm shrinks (or
grows) geometrically with the distance -- the vanishing (exploding) gradient. The LSTM's cell
carries ``dc_{t−1} = dc_t ⊙ f_t`` along a path with no weight matrix and no squashing, so with
its forget gates open the gradient reaches much further back. :func:`gradient_through_time`
measures ``‖∂L_{T−1}/∂h_t‖`` for every ``t`` of one layer on a real batch, and
:func:`loopprop.plots.plot_through_time` draws the curves side by side.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .explain_layers import through_time
from .gradcheck import backward_on
from .layers.recurrent import _Recurrent


def recurrent_rows(net) -> list[int]:
    """The plan rows of ``net`` that are recurrent layers, in order."""
    return [r for r, layer in enumerate(net.rows) if isinstance(layer, _Recurrent)]


def gradient_through_time(net, X: Any, Y: Any, *, layer: int = 1) -> np.ndarray:
    """``‖∂L_{T−1}/∂h_t‖`` for ``t = 0 … T − 1``: the norm (over hidden units and the batch) of
    the gradient that the loss at the *last* position sends back to every hidden state of the
    ``layer``-th recurrent layer (1-based), on the batch ``X, Y``.

    The network runs forward and backward once (its weights, gradients and state are as before
    afterwards, except that its gradients hold this batch's); the gradient reaching the layer's
    last output, ``dY[:, T − 1]``, is then carried back through time alone, in float64 with
    the vectorized twin (:mod:`loopprop.vectorized`), from zero initial states as the forward
    pass. Position ``T − 1``'s loss reads nothing later, so that column is its gradient alone.
    """
    rows = recurrent_rows(net)
    if not rows:
        raise ValueError("net: no recurrent layer (RNN, LSTM or GRU) to follow through time; "
                         "build one with loopprop.models.char_rnn")
    if not (isinstance(layer, int) and 1 <= layer <= len(rows)):
        raise ValueError(f"layer: the network has {len(rows)} recurrent layers (1 … "
                         f"{len(rows)}), got {layer!r}")
    r = rows[layer - 1]
    row = net.rows[r]
    with backward_on(net, X, Y, "gradient_through_time"):
        Xin = net.last_batch(r, "input").astype(np.float64)
        dY = net.last_batch(r, "output_grad").astype(np.float64)
        params = {name: np.asarray(getattr(row, name), np.float64) for name in row.param_names}
    T = dY.shape[1]
    dH = np.zeros_like(dY)
    dH[:, T - 1] = dY[:, T - 1]
    _, steps = through_time(row, params, Xin, dH)
    return np.sqrt((steps["dh"] ** 2).sum(axis=(0, 2)))


def decay_per_step(norms: np.ndarray, skip: int = 1) -> float:
    """The mean factor by which ``norms`` (from :func:`gradient_through_time`) shrink per step
    back in time, ``(‖·‖_{T−1−skip−k} / ‖·‖_{T−1−skip})^(1/k)`` over the steps after the first
    ``skip`` (the step at the loss itself goes through the output gate, not the recurrence):
    below 1 the gradient vanishes, above 1 it explodes."""
    norms = np.asarray(norms, np.float64)
    back = norms[::-1][skip:]
    k = len(back) - 1
    if k < 1 or back[0] == 0.0:
        raise ValueError(f"norms: need at least {skip + 2} time steps with a non-zero gradient "
                         f"to measure a decay, got {len(norms)}")
    return float((back[-1] / back[0]) ** (1.0 / k))
