"""What every layer kind describes: its hyperparameters, its output shape from its input
shape, the parameters, caches and workspaces it needs, and the kernels that kind runs. Layers
compute nothing: :mod:`loopprop.kernels` does, called by each kind's row functions
(:mod:`loopprop.rows`, paired with the class in :mod:`loopprop.layers.registry`), and the epoch
(:mod:`loopprop.train`) walks the plan (:mod:`loopprop.plan`) built from them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..plan import ARRAY0, H0, PART0


class Layer:
    """Base class of every layer kind.

    A subclass has an entry in :mod:`loopprop.layers.registry` and implements :meth:`_build`
    (check the input shape, set the output shape). It may override the sizes below (counted
    per example unless they say otherwise), :meth:`ints` and :meth:`floats` (its row of the
    plan), :meth:`param_shapes` and :meth:`init_params`.
    """

    #: the compiled kernels this kind runs (for :meth:`Network.summary`)
    kernels: ClassVar[tuple[str, str]] = ("", "")
    #: the output is the input seen in another shape (no copy, no gradient to pass)
    aliases_input: ClassVar[bool] = False

    #: a layer class whose parameters this layer reads instead of owning any (the plan links
    #: the row to the network's first layer of that class; :meth:`check_shared` checks it)
    shares_params_of: ClassVar[type | None] = None
    #: must be the network's first layer (its input is data without a gradient: token ids)
    first_only: ClassVar[bool] = False
    #: a language model holding this layer sees at most ``T`` positions (learned positions,
    #: attention's cache): sampling restarts its context when it is full. Without one (a
    #: recurrent model) the state carries the whole context, however long.
    limits_context: ClassVar[bool] = False
    #: the output of one example depends on the other examples of the batch (batch norm's
    #: statistics): data-parallel training, where each process sees a shard of the batch,
    #: refuses such a layer (:mod:`loopprop.distributed`)
    mixes_examples: ClassVar[bool] = False

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
    fixed_work_size = 0  #: float scratch (or a cache), independent of the batch
    state_size = 0  #: persistent values that are saved but not trained (running statistics)
    #: names of the parameter arrays, in :meth:`param_shapes` order: the network binds live
    #: views ``layer.<name>`` and ``layer.d<name>`` to them
    param_names: ClassVar[tuple[str, ...]] = ("W", "b")
    #: names of the state arrays (views into the network's state), in layout order
    state_names: ClassVar[tuple[str, ...]] = ()
    #: names of :meth:`ints`' values, in order: the row reads setting ``name`` at
    #: ``plan[r, cls.column(name)]``
    settings: ClassVar[tuple[str, ...]] = ()
    #: names of the parts of the per-example cache, the per-example workspace and the fixed
    #: workspace, each in layout order (:meth:`part_sizes` gives their sizes; they fill
    #: ``cache_size``, ``work_size``, ``fixed_work_size``): the row finds part ``name`` at
    #: ``plan[r, cls.column(name)]``
    cache_parts: ClassVar[tuple[str, ...]] = ()
    work_parts: ClassVar[tuple[str, ...]] = ()
    fixed_work_parts: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def column(cls, name: str) -> int:
        """The plan column that holds ``name`` for a row of this kind: an integer setting
        (:attr:`settings`), the offset of a parameter array in ``theta``
        (:attr:`param_names`) or the offset of a named part of the cache or the workspaces
        (per example, as the region's). Row functions take these once, as module constants:
        ``N_IN, N_OUT = Dense.columns("n_in", "n_out")``, then ``plan[r, N_IN]``."""
        parts = cls.cache_parts + cls.work_parts + cls.fixed_work_parts
        if (name in cls.settings) + (name in cls.param_names) + (name in parts) > 1:
            raise KeyError(f"{cls.__name__} declares {name!r} twice (a setting, an array or a "
                           "part): every name of a kind must be one thing")
        if name in cls.settings:
            return H0 + cls.settings.index(name)
        if name in cls.param_names:
            return ARRAY0 + cls.param_names.index(name)
        if name in parts:
            return PART0 + parts.index(name)
        raise KeyError(f"{cls.__name__} declares no setting, parameter array or part {name!r}")

    @classmethod
    def columns(cls, *names: str) -> tuple[int, ...]:
        """:meth:`column` of each name."""
        return tuple(cls.column(name) for name in names)

    def part_sizes(self) -> dict[str, int]:
        """The size of each named part (per example for the cache and the workspace)."""
        return {}

    def rows(self) -> list["Layer"]:
        """The plan rows this layer runs: itself. Containers (a residual block) return their
        inner rows and a closing row."""
        return [self]

    def decays(self) -> list[bool]:
        """Per parameter array: whether weight decay applies. By default the weights of a
        layer (its first array when it has two or more: ``W``) and not its biases; layers
        whose parameters are gains and shifts (normalization) return all False."""
        shapes = self.param_shapes()
        return [i == 0 and len(shapes) > 1 for i in range(len(shapes))]

    def state_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the state arrays (``state_size`` values in total)."""
        return []

    def init_state(self, views: list[np.ndarray]) -> None:
        """Initialize the state views in place (running mean 0, running variance 1)."""

    def ints(self) -> list[int]:
        """The integer settings for the plan row (shapes, kernel sizes, strides…), one per
        name of :attr:`settings`; by default each the attribute of that name."""
        return [int(getattr(self, name)) for name in self.settings]

    def floats(self) -> list[float]:
        """Float hyperparameters for the plan row."""
        return []

    def init_params(self, views: list[np.ndarray], rng: np.random.Generator, init: str) -> None:
        """Initialize this layer's parameter views in place."""

    def random_in_training(self) -> bool:
        """Whether the training-mode forward pass draws random numbers (dropout's masks): the
        loss then differs between two evaluations, which finite differences cannot use."""
        return False

    def decode_cache_size(self, t_max: int) -> int:
        """Values this row keeps from one sampled position to the next (a kind with a decode
        row: attention's keys and values for ``t_max`` positions, a recurrent layer's states);
        :mod:`loopprop.generate` gives each such row its part of one buffer."""
        return 0

    def check_shared(self, owner: "Layer") -> None:
        """With ``shares_params_of``: raise ``ValueError`` when ``owner``'s parameters do not
        fit this layer."""

    def check_input(self, X: Any, name: str, dtype: Any) -> Any:
        """As the network's first layer: check the raw input ``X (*in_shape, m)`` before it is
        converted to the network's dtype, and return it (token ids must be integers in range,
        and become floats)."""
        return X

    # -- persistence and display -----------------------------------------------------------

    def formulas(self, x: str, y: str, l: int, **names: str) -> dict[str, Any]:
        """What this layer computes, as text for diagrams (:mod:`loopprop.diagrams`): layer
        ``l`` maps its input ``x`` to its output ``y`` (names such as ``"A1"``). Keys:
        ``"forward"`` (one formula), ``"backward"`` (a list: parameter gradients, then the input
        gradient, which always *adds*: the README's "Conventions") and ``"cache"`` (what the
        backward pass reads, or ``""``). ``names`` may name further inputs (``skip``: a
        residual block's input)."""
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
