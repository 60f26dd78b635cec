"""What every layer kind describes: its hyperparameters, its output shape from its input
shape, the parameters, caches and workspaces it needs, its kind code for the compiled dispatch
and the kernels that kind runs. Layers compute nothing: :mod:`loopprop.kernels` does, and the
epoch (:mod:`loopprop.train`) walks the plan (:mod:`loopprop.plan`) built from them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np


class Layer:
    """Base class of every layer kind.

    A subclass sets ``kind`` (a code of :mod:`loopprop.plan`) and implements :meth:`_build`
    (check the input shape, set the output shape). It may override the sizes below (counted
    per example unless they say otherwise), :meth:`ints` and :meth:`floats` (its row of the
    plan), :meth:`param_shapes` and :meth:`init_params`.
    """

    kind: ClassVar[int] = 0
    #: the compiled kernels this kind runs (for :meth:`Network.summary`)
    kernels: ClassVar[tuple[str, str]] = ("", "")
    #: the output is the input seen in another shape (no copy, no gradient to pass)
    aliases_input: ClassVar[bool] = False

    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None

    # -- building --------------------------------------------------------------------------

    def build(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Fix the input shape (one example: ``(n,)`` or ``(C, H, W)``) and return the output
        shape; a ``ValueError`` names the layer when the input does not fit."""
        self.in_shape = tuple(int(v) for v in in_shape)
        self.out_shape = tuple(int(v) for v in self._build(self.in_shape))
        return self.out_shape

    def _build(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def _need(self, in_shape, ndim: int, what: str) -> None:
        if len(in_shape) != ndim:
            raise ValueError(f"{self!r}: expects {what} per example, got input shape "
                             f"{in_shape}" + ("; add Flatten() before it" if ndim == 1 else ""))

    # -- what it needs ---------------------------------------------------------------------

    def param_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the parameter arrays, in the order they lie in ``theta``."""
        return []

    @property
    def n_params(self) -> int:
        return int(sum(np.prod(s) for s in self.param_shapes()))

    cache_size = 0  #: float cache per example
    icache_size = 0  #: integer cache per example
    work_size = 0  #: float scratch per example
    fixed_work_size = 0  #: float scratch, independent of the batch

    def ints(self) -> list[int]:
        """Integer hyperparameters for the plan row (shapes, kernel sizes, strides…)."""
        return []

    def floats(self) -> list[float]:
        """Float hyperparameters for the plan row."""
        return []

    def init_params(self, views: list[np.ndarray], rng: np.random.Generator, init: str) -> None:
        """Initialize this layer's parameter views in place."""

    # -- persistence and display -----------------------------------------------------------

    def formulas(self, x: str, y: str, l: int) -> dict[str, Any]:
        """What this layer computes, as text for diagrams (:mod:`loopprop.diagrams`): layer
        ``l`` maps its input ``x`` to its output ``y`` (names such as ``"A1"``). Keys:
        ``"forward"`` (one formula), ``"backward"`` (a list: parameter gradients, then the input
        gradient, which always *adds*: the README's "Conventions") and ``"cache"`` (what the
        backward pass reads, or ``""``)."""
        return {"forward": f"{y} = {type(self).__name__}({x})",
                "backward": [f"d{x} += d{y} through {type(self).__name__}"], "cache": ""}

    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments: saved with a model, passed back on load."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or an ``(h, w)`` pair (shared with the functional kernels' checks)."""
    from ..kernels.conv import pair as _pair

    return _pair(value, name, minimum)
