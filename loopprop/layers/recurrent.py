"""Recurrent layers: the vanilla RNN, the LSTM and the GRU over a sequence (docs/formulas.md,
"Recurrent networks", "Backpropagation through time", "The LSTM", "The GRU").

Each takes a sequence ``(C, T)`` per example (features first, then time; the batch last in the
buffers, ``(C, T, m)``, as the GPT's layers) and returns every hidden state ``(hidden, T)``:
stack them, and follow the last with a per-position :class:`~loopprop.layers.Dense` and the
sequence softmax cross-entropy (:func:`loopprop.models.char_rnn`). The parameters are
PyTorch's, one to one (the gates stacked in its order): ``W_x`` is ``weight_ih_l0``, ``W_h``
``weight_hh_l0``; the RNN's and LSTM's bias ``b`` is ``bias_ih_l0 + bias_hh_l0`` (the two only
appear summed), the GRU keeps both (``b_x``, ``b_h``: ``b_h``'s ``n`` rows are multiplied by
the reset gate).

A training pass starts from zero states, or -- when it continues the previous pass's sequences
(``Step.carry``: ``fit_text(windows="consecutive")``, ``Network.forward(carry=True)``) -- from
the states that pass ended with; the gradient stops at the window's start (truncated
backpropagation through time). Sampling carries the state from token to token: one step per
new token (:mod:`loopprop.generate`).
"""

from __future__ import annotations

import math
from typing import ClassVar

from .. import _checks
from ..kernels.recurrent import NONLINEARITIES
from .base import Layer


class _Recurrent(Layer):
    """What the three cells share: ``hidden`` units over input ``(d, T)``, output ``(hidden,
    T)``; ``gates`` stacked blocks of ``hidden`` rows in ``W_x (gates·hidden, d)`` and ``W_h
    (gates·hidden, hidden)``; PyTorch's initialization ``U(−1/√hidden, 1/√hidden)`` for every
    array; weight decay on ``W_x`` and ``W_h``."""

    gates: ClassVar[int] = 1
    #: the states a new token carries while sampling (``h``; the LSTM's ``c`` too)
    n_states: ClassVar[int] = 1

    def __init__(self, hidden: int) -> None:
        self.hidden = _checks.check_positive_int(hidden, "hidden")

    def _build(self, in_shape):
        self._need(in_shape, 2, "a sequence (C, T): features, then time steps")
        self.d, self.T = in_shape
        return (self.hidden, self.T)

    def param_shapes(self):
        rows = self.gates * self.hidden
        return [(rows, self.d), (rows, self.hidden)] + [(rows,)] * (len(self.param_names) - 2)

    def decays(self):
        return [True, True] + [False] * (len(self.param_names) - 2)

    def init_params(self, views, rng, init):
        bound = 1.0 / math.sqrt(self.hidden)
        for v in views:
            v[...] = rng.uniform(-bound, bound, v.shape)

    def decode_cache_size(self, t_max: int) -> int:
        """Values this row keeps while sampling: its states, one per kind of state."""
        return self.n_states * self.hidden

    def config(self):
        return {"hidden": self.hidden}


class RNN(_Recurrent):
    """A vanilla (Elman) RNN, as PyTorch's ``nn.RNN``: ``H[:, t] = f(W_x·X[:, t] + W_h·H[:, t −
    1] + b)`` with ``f`` tanh or ReLU (:func:`loopprop.kernels.recurrent.rnn_forward`).
    Parameters ``W_x (h, d)``, ``W_h (h, h)``, ``b (h,)``. Caches per example the initial
    state ``h0``; backward reads every state from the layer's output.
    """

    kernels = ("recurrent._rnn_forward_tuned", "recurrent._rnn_backward_tuned")
    param_names = ("W_x", "W_h", "b")
    settings = ("d", "hidden", "T", "relu")
    cache_parts = ("h0",)
    #: the step's ``z`` and the running state (forward); every step's ``δ``, one step's, the
    #: carried ``dh``, the gradient reaching ``h0`` (zeros first: nothing comes from the next
    #: window) and the states each step read (backward)
    work_parts = ("Z", "hp", "D", "delta", "dh", "dh0", "Hprev")
    fixed_work_parts = ("W_hT",)

    def __init__(self, hidden: int, nonlinearity: str = "tanh") -> None:
        super().__init__(hidden)
        self.nonlinearity = _checks.check_choice(nonlinearity, "nonlinearity", NONLINEARITIES)
        self.relu = int(nonlinearity == "relu")

    def _build(self, in_shape):
        out = super()._build(in_shape)
        self.cache_size = self.hidden
        self.work_size = self.hidden * (2 * self.T + 5)
        self.fixed_work_size = self.hidden * self.hidden
        return out

    def part_sizes(self):
        h, T = self.hidden, self.T
        return {"h0": h, "Z": h, "hp": h, "D": h * T, "delta": h, "dh": h, "dh0": h,
                "Hprev": h * T, "W_hT": h * h}

    def config(self):
        return {"hidden": self.hidden, "nonlinearity": self.nonlinearity}

    def formulas(self, x, y, l):
        f = self.nonlinearity
        return {"forward": f"{y}[:, t] = {f}(W_x{l}·{x}[:, t] + W_h{l}·{y}[:, t−1] + b{l})",
                "backward": [f"δ_t = (d{y}[:, t] + W_h{l}ᵀ·δ_(t+1)) ⊙ {f}′, t = T−1 … 0",
                             f"dW_h{l} = Σ_t δ_t·{y}[:, t−1]ᵀ", f"dW_x{l} = Σ_t δ_t·{x}[:, t]ᵀ",
                             f"d{x}[:, t] += W_x{l}ᵀ·δ_t"],
                "cache": f"every state {y}[:, t] and h0"}


class LSTM(_Recurrent):
    """A long short-term memory layer, as PyTorch's ``nn.LSTM``: gates ``i, f, g, o`` from
    ``W_x·X[:, t] + W_h·h_{t−1} + b``, ``c_t = f ⊙ c_{t−1} + i ⊙ g``, ``h_t = o ⊙ tanh(c_t)``
    (:func:`loopprop.kernels.recurrent.lstm_forward`). Parameters ``W_x (4h, d)``, ``W_h (4h,
    h)``, ``b (4h,)``. Caches per example ``h0``, ``c0``, every cell state ``C (h, T)`` and
    the four gates' values ``G (4h, T)``; backward reads every ``h_t`` from the output.

    ``forget_bias`` is added to the forget gate's bias at initialization (after PyTorch's
    uniform draw): at 1 the gates start open, ``σ(1) ≈ 0.73``, and the gradient reaches far
    back through the cell from the first step (Gers et al. 2000; Jozefowicz et al. 2015 found
    it helps every task they tried). 0 gives PyTorch's initialization exactly.
    """

    gates = 4
    n_states = 2

    def __init__(self, hidden: int, forget_bias: float = 1.0) -> None:
        super().__init__(hidden)
        self.forget_bias = _checks.check_fraction(
            forget_bias, "forget_bias", -math.inf, math.inf,
            example=" such as 1.0 (added to the forget gate's bias at initialization)")

    def init_params(self, views, rng, init):
        super().init_params(views, rng, init)
        h = self.hidden
        views[2][h:2 * h] += self.forget_bias

    def config(self):
        return {"hidden": self.hidden, "forget_bias": self.forget_bias}
    kernels = ("recurrent._lstm_forward_tuned", "recurrent._lstm_backward_tuned")
    param_names = ("W_x", "W_h", "b")
    settings = ("d", "hidden", "T")
    cache_parts = ("h0", "c0", "C", "G")
    work_parts = ("Z", "hp", "cp", "D", "delta", "dh", "dc", "dh0", "dc0", "Hprev")
    fixed_work_parts = ("W_hT",)

    def _build(self, in_shape):
        out = super()._build(in_shape)
        h, T = self.hidden, self.T
        self.cache_size = h * (2 + 5 * T)
        self.work_size = h * (5 * T + 14)
        self.fixed_work_size = 4 * h * h
        return out

    def part_sizes(self):
        h, T = self.hidden, self.T
        return {"h0": h, "c0": h, "C": T * h, "G": 4 * T * h, "Z": 4 * h, "hp": h, "cp": h,
                "D": 4 * h * T, "delta": 4 * h, "dh": h, "dc": h, "dh0": h, "dc0": h,
                "Hprev": h * T, "W_hT": 4 * h * h}

    def formulas(self, x, y, l):
        return {"forward": f"i, f, g, o = σ, σ, tanh, σ(W_x{l}·{x}[:, t] + W_h{l}·h_(t−1) + "
                           f"b{l}); c_t = f⊙c_(t−1) + i⊙g; {y}[:, t] = h_t = o⊙tanh(c_t)",
                "backward": [f"dh_t = d{y}[:, t] + W_h{l}ᵀ·δ_(t+1); "
                             "dc_t = dc_(t+1)⊙f_(t+1) + dh_t⊙o⊙(1 − tanh² c_t)",
                             "δ_t = [dc_t⊙g⊙i(1−i); dc_t⊙c_(t−1)⊙f(1−f); dc_t⊙i⊙(1−g²); "
                             "dh_t⊙tanh c_t⊙o(1−o)]",
                             f"dW_h{l} = Σ_t δ_t·h_(t−1)ᵀ", f"dW_x{l} = Σ_t δ_t·{x}[:, t]ᵀ",
                             f"d{x}[:, t] += W_x{l}ᵀ·δ_t"],
                "cache": "h_t, c_t and the gates i, f, g, o at every t; h0, c0"}


class GRU(_Recurrent):
    """A gated recurrent unit layer, as PyTorch's ``nn.GRU``: gates ``r, z`` and the candidate
    ``n = tanh(W_x,n·x + b_x,n + r ⊙ (W_h,n·h + b_h,n))``, then ``h_t = (1 − z) ⊙ n + z ⊙
    h_{t−1}`` (:func:`loopprop.kernels.recurrent.gru_forward`). Parameters ``W_x (3h, d)``,
    ``W_h (3h, h)``, ``b_x (3h,)``, ``b_h (3h,)``. Caches per example ``h0`` and ``G (4h,
    T)``: ``r, z, n`` and ``W_h,n·h + b_h,n`` at every step; backward reads every ``h_t`` from
    the output.
    """

    gates = 3
    kernels = ("recurrent._gru_forward_tuned", "recurrent._gru_backward_tuned")
    param_names = ("W_x", "W_h", "b_x", "b_h")
    settings = ("d", "hidden", "T")
    cache_parts = ("h0", "G")
    work_parts = ("Y", "hp", "Dx", "dy", "dh", "dh0", "Dy", "Hprev")
    fixed_work_parts = ("W_hT",)

    def _build(self, in_shape):
        out = super()._build(in_shape)
        h, T = self.hidden, self.T
        self.cache_size = h * (1 + 4 * T)
        self.work_size = h * (7 * T + 9)
        self.fixed_work_size = 3 * h * h
        return out

    def part_sizes(self):
        h, T = self.hidden, self.T
        return {"h0": h, "G": 4 * T * h, "Y": 3 * h, "hp": h, "Dx": 3 * h * T, "dy": 3 * h,
                "dh": h, "dh0": h, "Dy": 3 * h * T, "Hprev": h * T, "W_hT": 3 * h * h}

    def formulas(self, x, y, l):
        return {"forward": f"r, z = σ(W_x{l}·{x}[:, t] + b_x + W_h{l}·h_(t−1) + b_h); "
                           "n = tanh(W_x,n·x + b_x,n + r⊙(W_h,n·h_(t−1) + b_h,n)); "
                           f"{y}[:, t] = h_t = (1−z)⊙n + z⊙h_(t−1)",
                "backward": ["dh_t = dY[:, t] + (the next step's three paths into h_t)",
                             "δn = dh_t⊙(1−z)(1−n²); δr = δn⊙(W_h,n·h + b_h,n)⊙r(1−r); "
                             "δz = dh_t⊙(h_(t−1) − n)⊙z(1−z)",
                             f"dW_h{l} = Σ_t [δr; δz; δn⊙r]·h_(t−1)ᵀ",
                             f"dW_x{l} = Σ_t [δr; δz; δn]·{x}[:, t]ᵀ",
                             f"d{x}[:, t] += W_x{l}ᵀ·[δr; δz; δn]"],
                "cache": "h_t and r, z, n, W_h,n·h + b_h,n at every t; h0"}
