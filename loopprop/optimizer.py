"""A training loop of one's own: the optimizers of ``fit``, one step at a time.

``Network.set_optimizer(...)`` keeps one of these on the network; ``Network.step()`` then takes
the same update ``fit`` takes after each batch -- the same compiled ``train._update``: clipping
of the gradient's global norm, the scheduled rate, weight decay, then SGD, momentum, Adam or
AdamW (docs/formulas.md §10) -- with its state (velocity, moments, step count) kept between
calls::

    net.set_optimizer("adamw", lr=1e-3, weight_decay=0.1, clip_grad_norm=1.0)
    for X, y in batches:
        net.zero_grad(); net.forward(X); net.backward(y); net.step()

The same options and batches give the same parameters as ``fit(shuffle=False)``, bit for bit
(tests/test_network.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import train as _train
from ._jit import use_threads


@dataclass
class Optimizer:
    """An optimizer's state (:class:`loopprop.train.OptimizerState`: settings, step count,
    per-parameter vectors) and the ranges of the network's flat parameters where weight decay
    applies (``(k, 2)``, ``[start, end)``)."""

    state: _train.OptimizerState
    decay_spans: np.ndarray

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def t(self) -> int:
        """Steps taken so far."""
        return self.state.t

    def step(self, theta: np.ndarray, grad: np.ndarray) -> float:
        """One update of ``theta`` from ``grad`` (clipped in place when clipping is on);
        returns the rate it used."""
        s = self.state
        lr = _train._update(theta, grad, s.bundle(self.decay_spans), s.t, use_threads(True))
        s.t += 1
        return float(lr)

    def __repr__(self) -> str:
        s = self.state
        return (f"Optimizer({s.name!r}, lr={s.lr:g}, schedule={s.schedule!r}, "
                f"weight_decay={s.weight_decay:g}, clip={s.clip:g}, t={s.t})")
