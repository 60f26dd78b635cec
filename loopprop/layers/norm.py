"""Normalization layers and residual blocks."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np

from .. import _checks
from ..kernels.norm import check_eps
from .base import Layer


class BatchNorm(Layer):
    """Batch normalization (docs/formulas.md, "Batch normalization"): each feature (channel)
    normalized over the batch, then scaled and shifted,
    ``Y[c, ·, k] = γ[c]·(X[c, ·, k] − μ[c])·r[c] + β[c]`` with ``r = 1/√(σ² + ε)``.

    Input ``(n,)`` per example: each feature over the ``m`` examples of the batch; ``(C, H, W)``
    (or ``(C, T)``): each channel over ``H·W·m`` values, as PyTorch's ``BatchNorm1d`` /
    ``BatchNorm2d``. Parameters ``gamma (C,)`` (initialized to 1) and ``beta (C,)`` (0); no
    weight decay on either by default. In training mode it normalizes with the batch's
    statistics and updates the running ones (``momentum``, the unbiased variance, as PyTorch);
    in evaluation mode (:meth:`Network.eval`, ``predict``, ``evaluate``) it uses the running
    ones. The mean and ``1/σ`` of the last batch are its (fixed-size) cache; the running
    statistics are the network's state, saved with it.
    """

    kernels = ("norm._batchnorm_forward", "norm._batchnorm_backward")
    mixes_examples = True
    param_names = ("gamma", "beta")
    state_names = ("running_mean", "running_var")
    settings = ("channels", "per_example")
    #: the batch's mean and 1/σ per channel
    fixed_work_parts = ("mean", "rstd")

    def __init__(self, eps: float = 1e-5, momentum: float = 0.1) -> None:
        self.eps = check_eps(eps)
        self.momentum = _checks.check_fraction(
            momentum, "momentum", 0.0, 1.0, lo_open=True, hi_open=False,
            example=" such as 0.1 (the weight of each batch in the running statistics)")

    def _build(self, in_shape):
        self.channels = in_shape[0]
        self.per_example = int(np.prod(in_shape[1:]))  # values per channel in one example
        self.fixed_work_size = 2 * self.channels  # μ and 1/σ of the batch
        self.state_size = 2 * self.channels  # the running mean and variance
        return in_shape

    def param_shapes(self):
        return [(self.channels,), (self.channels,)]

    def decays(self):
        return [False, False]

    def state_shapes(self):
        return [(self.channels,), (self.channels,)]

    def init_params(self, views, rng, init):
        views[0][...] = 1.0
        views[1][...] = 0.0

    def init_state(self, views):
        views[0][...] = 0.0
        views[1][...] = 1.0

    def part_sizes(self):
        return {"mean": self.channels, "rstd": self.channels}

    def floats(self):
        return [self.eps, self.momentum]

    def config(self):
        return {"eps": self.eps, "momentum": self.momentum}

    def formulas(self, x, y, l):
        over = "k" if self.per_example == 1 else "y, x, k"
        return {"forward": f"{y}[c, ·] = γ{l}[c]·({x}[c, ·] − μ[c])·r[c] + β{l}[c], μ and r over "
                           f"{over}",
                "backward": [f"dγ{l}[c] = Σ d{y}·x̂", f"dβ{l}[c] = Σ d{y}",
                             f"d{x} += γr/N·(N·d{y} − Σ d{y} − x̂·Σ d{y}·x̂): every example "
                             "of the batch couples"],
                "cache": "μ and r = 1/σ per channel (the batch's); running μ, σ² (state)"}


class LayerNorm(Layer):
    """Layer normalization (docs/formulas.md, "Layer normalization"): each example normalized
    over its features, ``Y[i, ·] = γ[i]·(X[i, ·] − μ[·])·r[·] + β[i]``.

    Input ``(n,)``: each example over its ``n`` features; ``(C, T)``: each time step of each
    example over its ``C`` channels (GPT's layout). Parameters ``gamma (n,)`` = 1,
    ``beta (n,)`` = 0, no weight decay by default. The same in training and evaluation.
    Caches ``μ`` and ``1/σ`` per example (per time step).
    """

    kernels = ("norm._layernorm_forward", "norm._layernorm_backward")
    param_names = ("gamma", "beta")
    settings = ("features", "steps")
    #: μ and 1/σ of each column
    cache_parts = ("mean", "rstd")

    def __init__(self, eps: float = 1e-5) -> None:
        self.eps = check_eps(eps)

    def _build(self, in_shape):
        self.features = in_shape[0]
        self.steps = int(np.prod(in_shape[1:]))  # columns per example
        self.cache_size = 2 * self.steps  # μ and 1/σ per column
        return in_shape

    def param_shapes(self):
        return [(self.features,), (self.features,)]

    def decays(self):
        return [False, False]

    def init_params(self, views, rng, init):
        views[0][...] = 1.0
        views[1][...] = 0.0

    def part_sizes(self):
        return {"mean": self.steps, "rstd": self.steps}

    def floats(self):
        return [self.eps]

    def config(self):
        return {"eps": self.eps}

    def formulas(self, x, y, l):
        return {"forward": f"{y}[i, k] = γ{l}[i]·({x}[i, k] − μ[k])·r[k] + β{l}[i], μ and r "
                           "over i",
                "backward": [f"dγ{l}[i] = Σ_k d{y}·x̂", f"dβ{l}[i] = Σ_k d{y}",
                             f"d{x} += r/n·(n·ĝ − Σ_i ĝ − x̂·Σ_i ĝ·x̂), ĝ = γ·d{y}"],
                "cache": "μ and r = 1/σ per example"}


class Residual(Layer):
    """A residual block, ``out = x + f(x)``: ``f`` is a list of layers whose output has the
    shape of its input. Backward, the gradient of ``out`` flows into both paths and the two
    **add** in ``dx`` (the skip path's ``d out`` plus ``f``'s input gradient; every backward
    kernel accumulates, the README's "Conventions").

    In the plan a block is its inner rows followed by one closing row that reads the branch's
    output and, as a second input, the block's input (:mod:`loopprop.plan`).
    """

    kernels = ("residual._residual_forward", "residual._residual_backward")
    param_names = ()

    def __init__(self, layers: Sequence[Any]) -> None:
        items = []
        for v in list(layers):
            if not isinstance(v, Layer):
                raise TypeError(f"Residual: layers must be layer objects (Dense(…), ReLU(), …), "
                                f"got {_checks._describe(v)}")
            items.append(copy.deepcopy(v))
        self.layers = items

    def rows(self):
        return [row for layer in self.layers for row in layer.rows()] + [self]

    def _build(self, in_shape):
        shape = in_shape
        for layer in self.layers:
            shape = layer.build(shape)
        if tuple(shape) != tuple(in_shape):
            chain = " -> ".join([str(in_shape)] + [str(v.out_shape) for v in self.layers])
            raise ValueError(f"Residual: the branch must keep the shape of its input to be "
                             f"added to it, got {chain}; add a layer that maps back to "
                             f"{in_shape}")
        inner = self.rows()[:-1]
        self.skip_source = inner[0] if inner else self
        return in_shape

    @property
    def n_params(self) -> int:
        return 0  # the inner rows hold the parameters

    def config(self):
        return {"layers": [{"kind": type(v).__name__, "config": v.config()} for v in self.layers]}

    def __repr__(self) -> str:
        return f"Residual([{', '.join(repr(v) for v in self.layers)}])"

    def formulas(self, x, y, l, skip="x"):
        """``skip`` names the block's input (the diagrams pass it)."""
        return {"forward": f"{y} = {x} + {skip} (the block's input)",
                "backward": [f"d{skip} += d{y} (skip path)", f"d{x} += d{y} (branch)"],
                "cache": ""}
