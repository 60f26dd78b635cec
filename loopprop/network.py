"""``Network``: a stack of layers with cached activations, forward/backward/zero_grad/step,
fit, save/load (docs/formulas.md §5, §10, §12, §14).

The network *composes*: it builds each layer (:mod:`loopprop.layers`), turns the list into one
plan of offsets (:mod:`loopprop.plan`) and hands the plan to the compiled epoch
(:mod:`loopprop.train`). Parameters and gradients live in two flat buffers; ``params``,
``grads`` and each layer's ``W``, ``b``, ``dW``, ``db`` are live views into them, so
``net.params[0][0][i, j]`` *is* the weight the compiled epoch updates. Examples are on the last
axis, as in docs/formulas.md: ``X`` is ``(n_features, n_samples)`` or ``(C, H, W, n_samples)``.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import time
import zipfile
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np

from . import _checks, _compiling, _files, _helper
from . import dispatch as _dispatch
from . import plan as _plan
from . import interrupt as _interrupt
from . import optimizer as _optim
from . import progress as _progress
from . import train as _train
from ._jit import threads_for_load, use_threads
from .bundles import Data, Flat, LossBufs, Norms, Run
from .kernels.activations import CODES
from .kernels.dense import _transpose
from .layers import (ACTIVATIONS, KINDS, Activation, BatchNorm, Dense, Layer, LeakyReLU,
                     Sigmoid, Softmax)
from .layers.registry import kind_of

#: version 3 adds the state (batch norm's running statistics); version 2 stores the list of
#: layers (kind and hyperparameters); version 1 files (dense layer sizes and activation names)
#: still load
FORMAT_VERSION = 3
#: fit keeps its transposed copy of X for the next call only up to this size
_KEEP_XT_BYTES = 1 << 24
LOSSES = tuple(_train.LOSS_CODES)
INITS = ("he", "xavier")


class ModelFileError(ValueError):
    """A model file that cannot be loaded: truncated, corrupted, not a model, or too new."""


#: the largest network a model file may describe (parameters), checked before allocating
_MAX_FILE_PARAMS = 1 << 34


def _check_meta(meta: Any, name: str) -> dict:
    """The metadata of a model file, every field checked for type and range (no allocation).

    Raises :class:`ModelFileError` naming the file and the field."""
    if not isinstance(meta, dict) or meta.get("format") != "loopprop.Network":
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFileError(f"{name}: not a loopprop model (format is {got!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{name}: format_version must be a positive integer, got "
                             f"{version!r}: the file is corrupted")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{name}: format version {version} is newer than this loopprop understands "
            f"({FORMAT_VERSION}); upgrade loopprop to load it"
        )
    out: dict[str, Any] = {"format_version": version}
    for key, kind, default in (("loss", str, None), ("dtype", str, None), ("seed", int, 0),
                               ("init", str, "he"), ("alpha", (int, float), 0.01)):
        value = meta.get(key, default)
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            raise ModelFileError(f"{name}: the field {key!r} is missing or has the wrong type "
                                 f"({value!r}): the file is corrupted")
        out[key] = value
    extra = meta.get("metadata", {})
    if not isinstance(extra, dict):
        raise ModelFileError(f"{name}: the field 'metadata' must be a JSON object, got "
                             f"{type(extra).__name__}: the file is corrupted")
    out["metadata"] = extra
    if out["dtype"] not in ("float32", "float64"):
        raise ModelFileError(f"{name}: dtype must be 'float32' or 'float64', got "
                             f"{out['dtype']!r}: the file is corrupted")
    if version >= 2:
        return _check_layers_meta(meta, name, out)
    sizes = meta.get("layer_sizes")
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                       for v in sizes)):
        raise ModelFileError(f"{name}: layer_sizes must be a list of at least two positive "
                             f"integers, got {str(sizes)[:80]}: the file is corrupted")
    n_params = sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:]))
    if n_params > _MAX_FILE_PARAMS:
        raise ModelFileError(f"{name}: layer_sizes {sizes} describe {n_params:.3g} parameters, "
                             "more than any real model file holds: the file is corrupted")
    acts = meta.get("activations")
    if not isinstance(acts, list):
        raise ModelFileError(f"{name}: the field 'activations' is missing or has the wrong type "
                             f"({acts!r}): the file is corrupted")
    out.update(layer_sizes=sizes, activations=acts, n_params=n_params)
    return out


#: the deepest nesting of layers (a Residual's branch holding a Residual …) a model file may
#: describe: building them recurses once per level
_MAX_NESTING = 32


def _nesting_depth(specs: list) -> int:
    """How deep the layer specs of a model file nest (1: no block holds another), walked
    without recursion so that a crafted file cannot exhaust the stack."""
    deepest, todo = 0, [(specs, 1)]
    while todo:
        items, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth > _MAX_NESTING:
            break
        for spec in items:
            inner = spec.get("config", {}).get("layers") if isinstance(spec, dict) and \
                isinstance(spec.get("config"), dict) else None
            if isinstance(inner, list):
                todo.append((inner, depth + 1))
    return deepest


def _check_tokenizer(meta: dict, name: str) -> None:
    """A character tokenizer saved with a language model must have as many characters as the
    model has output classes (a crafted file once sampled with a vocabulary of another size)."""
    tok = meta["metadata"].get("tokenizer")
    if not isinstance(tok, dict) or "layers" not in meta:
        return
    chars = tok.get("chars")
    vocab = getattr(meta["layers"][0], "vocab_size", None)
    if not isinstance(chars, str) or len(set(chars)) != len(chars):
        raise ModelFileError(f"{name}: the tokenizer's characters must be a string of distinct "
                             "characters: the file is corrupted")
    if vocab is not None and len(chars) != vocab:
        raise ModelFileError(f"{name}: the tokenizer has {len(chars)} characters but the model's "
                             f"embedding has {vocab} tokens: the file is corrupted")


def _check_layers_meta(meta: dict, name: str, out: dict) -> dict:
    """Version 2: ``layers`` (kind and hyperparameters of each) and ``input_shape``; the
    layers are built (which allocates nothing) to count the parameters the file must hold."""
    shape = meta.get("input_shape")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shape)):
        raise ModelFileError(f"{name}: input_shape must be a list of positive integers, got "
                             f"{str(shape)[:80]}: the file is corrupted")
    specs = meta.get("layers")
    if not isinstance(specs, list) or not specs:
        raise ModelFileError(f"{name}: 'layers' must be a non-empty list: the file is corrupted")
    depth = _nesting_depth(specs)
    if depth > _MAX_NESTING:
        raise ModelFileError(f"{name}: the layers are nested more than {_MAX_NESTING} deep "
                             "(residual blocks inside residual blocks), deeper than any real "
                             "model: the file is corrupted")
    layers = []
    try:
        for spec in specs:
            if not (isinstance(spec, dict) and spec.get("kind") in KINDS
                    and isinstance(spec.get("config", {}), dict)):
                raise ValueError(f"unknown layer {str(spec)[:80]}")
            layers.append(KINDS[spec["kind"]](**spec.get("config", {})))
        n_params, n_state = _built_size(layers, tuple(shape))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{name}: the layers in the file are invalid: {exc}") from exc
    if n_params > _MAX_FILE_PARAMS:
        raise ModelFileError(f"{name}: the layers describe {n_params:.3g} parameters, more than "
                             "any real model file holds: the file is corrupted")
    out.update(layers=layers, input_shape=tuple(shape), n_params=n_params, n_state=n_state)
    sizes, acts = meta.get("layer_sizes"), meta.get("activations")
    if isinstance(sizes, list) and isinstance(acts, list):  # saved in the layer-sizes form
        out.update(layer_sizes=sizes, activations=acts)
    return out


def _built_size(layers: list, input_shape: tuple) -> tuple[int, int]:
    """Build ``layers`` on ``input_shape``; return their parameter and state counts (no
    allocation)."""
    shape = input_shape
    for layer in layers:
        shape = layer.build(shape)
    rows = _plan.expand(layers)
    return sum(row.n_params for row in rows), sum(row.state_size for row in rows)


def _check_stored(data, entry: str, what: str, size: int, dtype: str, name: str) -> None:
    """``entry`` of an open ``.npz`` must hold ``size`` values of ``dtype`` (its header is read,
    not its data): else :class:`ModelFileError`."""
    shape, stored = _stored_shape(data, entry, name)
    if shape != (size,) or stored != np.dtype(dtype):
        raise ModelFileError(f"{name}: the stored {what}: shape {shape}, dtype {stored}; the "
                             f"architecture needs ({size},) {dtype}: the file is corrupted")


def _stored_shape(data, entry: str, name: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype of ``entry`` in an open ``.npz``, read from its header alone."""
    with data.zip.open(data.zip.getinfo(entry + ".npy")) as fh:
        version = np.lib.format.read_magic(fh)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ModelFileError(f"{name}: the {entry} array is stored in .npy format "
                                 f"{version}, which Network.save never writes")
        shape, _, dtype = read_header(fh)
    return shape, dtype


def _short_repr(layer) -> str:
    """``Conv2d(c_out=16, kernel=3, stride=1, padding=1)``: a layer's repr with an ``(h, w)``
    pair of equal sides written once (for summary's table)."""
    def value(v):
        if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
            return repr(v[0])
        return repr(v)

    args = ", ".join(f"{k}={value(v)}" for k, v in layer.config().items())
    return f"{type(layer).__name__}({args})"


class Network:
    """A network trained by backpropagation in explicit loops: a list of layers.

    Two ways to build one::

        Network([Conv2d(8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Dense(10),
                 Softmax()], loss="cross_entropy", input_shape=(1, 8, 8))
        Network([64, 32, 10], ["relu", "softmax"], "cross_entropy")   # dense layers

    The second is the layer-sizes form: sizes ``[n_0, …, n_L]`` and one activation name per
    layer; it builds ``Dense(n_l)`` followed by that activation for every layer, the same
    network (and, for a seed, the same numbers) as loopprop 0.1.

    Parameters
    ----------
    layers : layer objects (:mod:`loopprop.layers`), or the dense layer sizes
    activations : with layer sizes: one name per layer from identity, sigmoid, tanh, relu,
        leaky_relu, gelu, gelu_tanh, softmax
    loss : ``"mse"``, ``"cross_entropy"`` (needs a ``Softmax`` last; fused ``P − Y``) or
        ``"binary_cross_entropy"`` (needs a ``Sigmoid`` last; fused ``σ(Z) − Y``)
    input_shape : one example's shape, ``(n_features,)`` or ``(C, H, W)`` (with layer objects)
    dtype : ``"float64"`` or ``"float32"``
    seed : seeds the initial weights
    init : ``"he"`` (``N(0, 2/fan_in)``, for ReLU) or ``"xavier"`` (``N(0, 2/(fan_in + fan_out))``)
    alpha : slope of leaky_relu for z ≤ 0 (the layer-sizes form)
    layer_sizes : the layer sizes by keyword, as loopprop 0.1 named them
    """

    def __init__(self, layers: Sequence[Any] | None = None,
                 activations: Sequence[str] | str | None = None, loss: str | None = None, *,
                 input_shape: Sequence[int] | None = None, dtype: str | np.dtype = "float64",
                 seed: int = 0, init: str = "he", alpha: float = 0.01,
                 layer_sizes: Sequence[int] | None = None) -> None:
        if layer_sizes is not None:  # the keyword of loopprop 0.1
            if layers is not None:
                raise TypeError("give either layers or layer_sizes, not both")
            layers = layer_sizes
        if layers is None:
            raise TypeError("layers: expected a list of layer objects or of layer sizes")
        items = list(layers)
        legacy = not any(isinstance(v, Layer) for v in items)
        if legacy:
            built, loss, input_shape = self._dense_stack(items, activations, loss, alpha)
        else:
            if not all(isinstance(v, Layer) for v in items):
                bad = next(v for v in items if not isinstance(v, Layer))
                raise TypeError(f"layers: expected layer objects from loopprop.layers, got "
                                f"{_checks._describe(bad)}")
            if isinstance(activations, str) and loss is None:
                loss, activations = activations, None  # Network(layers, "cross_entropy", …)
            if activations is not None:
                raise TypeError("activations: give activation layers (ReLU(), Softmax(), …) in "
                                "the list of layers; activation names go with layer sizes")
            if input_shape is None:
                raise ValueError("input_shape: expected one example's shape, e.g. (64,) or "
                                 "(1, 8, 8), to infer every layer's input size")
            built = [copy.deepcopy(layer) for layer in items]
            self.layer_sizes = None
            self.activations = None
        if loss is None:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}")
        _checks.check_choice(loss, "loss", LOSSES)
        dt = _checks.float_dtype(dtype)
        _checks.check_choice(init, "init", INITS)
        seed = _checks.check_int(seed, "seed", 0, "non-negative integer seed")
        alpha = _checks.finite_float(alpha, "alpha", " such as 0.01 (the leaky-ReLU slope)")
        shape = tuple(input_shape) if not isinstance(input_shape, int) else (input_shape,)
        for v in shape:
            _checks.check_positive_int(v, "input_shape entries")
        self.layers: list[Layer] = built
        self.input_shape = tuple(int(v) for v in shape)
        self.loss = loss
        self.dtype = dt
        self.seed = seed
        self.init = init
        self.alpha = alpha
        for layer in built:
            shape = layer.build(shape)
        #: the plan's rows: the layers with containers (Residual) expanded
        self._rows: list[Layer] = _plan.expand(built)
        self._check_loss_and_output()
        self.output_shape = tuple(shape)
        self._layout = _plan.build(self._rows, self.input_shape,
                                   [kind_of(layer) for layer in self._rows])
        self._plan = self._layout["plan"]
        self._fplan = self._layout["fplan"]
        self._theta = np.zeros(self._layout["params"], dtype=dt)
        self._grad = np.zeros(self._layout["params"], dtype=dt)
        self._state = np.zeros(self._layout["state"], dtype=dt)
        self._param_rows = [r for r, layer in enumerate(self._rows) if layer.n_params]
        # every parameter array's span in theta, for the gradient norms fit records; each
        # parameterized layer's first array (its weights) also makes history["grad_norm"]
        spans, self._param_names, self._first_arrays = [], [], []
        for r in self._param_rows:
            off = int(self._plan[r, _plan.P_OFF])
            layer = self._rows[r]
            self._first_arrays.append(len(spans))
            for name, shape in zip(layer.param_names, layer.param_shapes()):
                spans.append((off, int(np.prod(shape))))
                self._param_names.append(f"{r + 1}:{type(layer).__name__}.{name}")
                off += spans[-1][1]
        self._norm_spans = np.array(spans, np.int64).reshape(-1, 2)
        #: training mode (dropout active, batch norm on the batch's statistics); see
        #: :meth:`train` and :meth:`eval`
        self.training = True
        self._bind_views()
        self._cache: tuple | None = None
        self._forward_count = 0
        # fit's workspaces (the per-batch buffers, and the transposed X up to _KEEP_XT_BYTES),
        # kept between fit calls of the same shapes: a loop of fit(..., epochs=1) on a small
        # dataset then allocates nothing
        self._fit_scratch: dict[str, Any] = {}
        self.history: dict[str, list] = {}
        #: JSON-ready values saved with the model and restored by :meth:`load` (a language
        #: model's tokenizer: ``loopprop.text.CharTokenizer.to_config()`` under "tokenizer")
        self.metadata: dict[str, Any] = {}
        #: the optimizer :meth:`step` takes (:meth:`set_optimizer`); ``None``: ``step(lr)`` only
        self.optimizer = None
        #: set when Ctrl-C stopped ``fit``: ``{"epoch": e, "steps": optimizer steps taken}``
        self.interrupted: dict[str, int] | None = None
        self._initialize()

    # -- construction ------------------------------------------------------------------------

    def _dense_stack(self, sizes, activations, loss, alpha):
        """The layer-sizes form: ``Dense(n_l)`` and its activation for every layer."""
        if len(sizes) < 2:
            raise ValueError(
                f"layer_sizes: expected at least two sizes [n_inputs, n_outputs], got {sizes!r}"
            )
        for s in sizes:
            _checks.check_positive_int(s, "layer_sizes entries")
        if activations is None:
            raise ValueError("activations: expected one activation name per layer, e.g. "
                             "['relu', 'softmax']")
        acts = list(activations) if not isinstance(activations, str) else [activations]
        if len(acts) != len(sizes) - 1:
            raise ValueError(
                f"activations: expected one name per layer ({len(sizes) - 1} for layer_sizes "
                f"{sizes}), got {len(acts)}: {acts!r}"
            )
        for a in acts:
            _checks.check_choice(a, "activations", CODES)
        self.layer_sizes = [int(s) for s in sizes]
        self.activations = acts
        layers: list[Layer] = []
        for n_out, act in zip(sizes[1:], acts):
            layers.append(Dense(int(n_out)))
            layers.append(LeakyReLU(alpha) if act == "leaky_relu" else ACTIVATIONS[act]())
        return layers, loss, (int(sizes[0]),)

    def _check_loss_and_output(self) -> None:
        last = self._rows[-1]
        name = type(last).__name__
        if self.loss == "cross_entropy" and not isinstance(last, Softmax):
            raise ValueError(
                f"loss='cross_entropy' is fused with a softmax output (dZ = P − Y); the last "
                f"layer is {name} ({self._last_name()!r}): use 'softmax' / Softmax()"
            )
        if self.loss == "binary_cross_entropy" and not isinstance(last, Sigmoid):
            raise ValueError(
                f"loss='binary_cross_entropy' is fused with a sigmoid output (dZ = σ(Z) − Y); "
                f"the last layer is {name} ({self._last_name()!r}): use 'sigmoid' / Sigmoid()"
            )
        if any(isinstance(layer, Softmax) for layer in self._rows[:-1]):
            raise ValueError("activations: softmax is only supported on the output layer")
        out = self._rows[-1].out_shape
        if len(out) != 1 and not (len(out) == 2 and self.loss == "cross_entropy"):
            raise ValueError(f"the last layer's output has shape {out} per example: add "
                             "Flatten() and a Dense layer to produce a vector (only "
                             "cross-entropy takes one distribution per position, (V, T))")
        for r, layer in enumerate(self._rows[1:], 1):
            if layer.first_only:
                raise ValueError(f"{layer!r} must be the first layer (its input, token ids, "
                                 f"has no gradient); it is row {r + 1}")

    def _last_name(self) -> str:
        return getattr(self._rows[-1], "function", type(self._rows[-1]).__name__)

    def _bind_views(self) -> None:
        """Give every parameterized layer live views into theta and grad, named after its
        arrays (``W, b, dW, db``; ``gamma, beta, dgamma, dbeta``), and every layer with state
        views into it (``running_mean``, ``running_var``)."""
        for r in self._param_rows:
            layer = self._rows[r]
            params, grads = self._layer_views(r, self._theta), self._layer_views(r, self._grad)
            for name, v, g in zip(layer.param_names, params, grads):
                setattr(layer, name, v)
                setattr(layer, "d" + name, g)
        for r, layer in enumerate(self._rows):
            for name, v in zip(layer.state_names, self._state_views(r)):
                setattr(layer, name, v)

    def _layer_views(self, r: int, flat: np.ndarray) -> list[np.ndarray]:
        off = int(self._plan[r, _plan.P_OFF])
        views = []
        for shape in self._rows[r].param_shapes():
            size = int(np.prod(shape))
            views.append(flat[off:off + size].reshape(shape))
            off += size
        return views

    def _state_views(self, r: int) -> list[np.ndarray]:
        off = int(self._plan[r, _plan.S_OFF])
        views = []
        for shape in self._rows[r].state_shapes():
            size = int(np.prod(shape))
            views.append(self._state[off:off + size].reshape(shape))
            off += size
        return views

    def _decay_mask(self, decay_all: bool) -> np.ndarray:
        """1 where weight decay applies, 0 elsewhere (flat, like theta): every layer's
        :meth:`~loopprop.layers.base.Layer.decays` (weights, not biases or normalization
        gains), or every parameter with ``decay_all``."""
        mask = np.zeros(self._theta.size, self.dtype)
        for r in self._param_rows:
            off = int(self._plan[r, _plan.P_OFF])
            layer = self._rows[r]
            for shape, decays in zip(layer.param_shapes(), layer.decays()):
                size = int(np.prod(shape))
                mask[off:off + size] = 1.0 if (decays or decay_all) else 0.0
                off += size
        return mask

    def _initialize(self) -> None:
        rng = np.random.default_rng(self.seed)
        for r in self._param_rows:
            self._rows[r].init_params(self._layer_views(r, self._theta), rng, self.init)
        for r, layer in enumerate(self._rows):
            layer.init_state(self._state_views(r))

    def train(self, mode: bool = True) -> "Network":
        """Training mode (the default): dropout drops, batch norm normalizes with each batch's
        statistics and updates its running ones. ``train(False)`` is :meth:`eval`. Returns the
        network, as PyTorch's ``Module.train``. ``fit`` always trains in training mode;
        ``predict`` and ``evaluate`` always run in evaluation mode."""
        if not isinstance(mode, bool):
            raise TypeError(f"mode: expected True or False, got {_checks._describe(mode)}")
        self.training = mode
        return self

    def eval(self) -> "Network":
        """Evaluation mode for :meth:`forward`/:meth:`backward`: dropout is the identity, batch
        norm uses its running statistics. Returns the network."""
        return self.train(False)

    # -- parameters --------------------------------------------------------------------------

    @property
    def params(self) -> list[tuple[np.ndarray, ...]]:
        """``[(W, b), …]`` per parameterized layer, in plan order: live views (``W (n_l,
        n_{l−1})`` for a dense layer, ``(c_out, c_in, kh, kw)`` for a convolution,
        ``(gamma, beta)`` for a normalization layer)."""
        return [tuple(self._layer_views(r, self._theta)) for r in self._param_rows]

    @property
    def grads(self) -> list[tuple[np.ndarray, ...]]:
        """``[(dW, db), …]`` per parameterized layer: live views of the accumulated gradients."""
        return [tuple(self._layer_views(r, self._grad)) for r in self._param_rows]

    @property
    def n_layers(self) -> int:
        """Parameterized layers (dense, convolution, normalization): ``L`` in docs/formulas.md."""
        return len(self._param_rows)

    @property
    def rows(self) -> list[Layer]:
        """The layers in the order the passes run them: residual blocks expanded into their
        inner layers and a closing ``Residual`` row (one row of the plan each)."""
        return list(self._rows)

    @property
    def input_size(self) -> int:
        """Values per example at the input (``C·H·W`` for images)."""
        return int(np.prod(self.input_shape))

    @property
    def output_size(self) -> int:
        """Values per example at the output ``n_L``."""
        return int(self.output_shape[0])

    def __repr__(self) -> str:
        if self.layer_sizes is not None:
            layers = "-".join(str(s) for s in self.layer_sizes)
            return (f"Network({layers}, activations={self.activations}, loss={self.loss!r}, "
                    f"dtype={self.dtype.name}, params={self._theta.size})")
        kinds = ", ".join(type(layer).__name__ for layer in self.layers)
        return (f"Network([{kinds}], input_shape={self.input_shape}, loss={self.loss!r}, "
                f"dtype={self.dtype.name}, params={self._theta.size})")

    def summary(self, print_it: bool = True, batch_size: int | None = None) -> str:
        """One row per layer: kind, output shape (per example), parameters and the values its
        backward pass needs beyond the activation buffer (per example: docs/formulas.md, "What
        each layer caches"); then, once per kind, the forward and backward kernels it runs.
        With ``batch_size``, a last line gives the memory of the activations and caches for a
        batch of that size. At most 100 columns. Printed, and returned."""
        if batch_size is not None:
            _checks.check_positive_int(batch_size, "batch_size")
        rows = [("#", "layer", "output", "params", "cache/example"),
                ("", "input", str(self.input_shape), "", "")]
        index = {id(row): r for r, row in enumerate(self._rows)}
        kernels: dict[str, tuple[str, str]] = {}

        def walk(layers, depth):  # rows in plan order, with their nesting in residual blocks
            for layer in layers:
                inner = getattr(layer, "layers", None)
                if inner is not None:
                    yield from walk(inner, depth + 1)
                yield layer, depth

        for layer, depth in walk(self.layers, 0):
            r = index[id(layer)]
            name = _short_repr(layer)
            if getattr(layer, "skip_source", None) is not None:
                src = index[id(layer.skip_source)]
                name = f"Residual: + input of row {src + 1}" if src != r else \
                    "Residual: + its input"
            parts = [f"{layer.cache_size:,}"] if layer.cache_size else []
            if layer.icache_size:
                parts.append(f"{layer.icache_size:,} int")
            cache = " + ".join(parts) or "0"
            rows.append((str(r + 1), "  " * depth + name, str(layer.out_shape),
                         f"{layer.n_params:,}", cache))
            kernels.setdefault(type(layer).__name__, tuple(layer.kernels))
        if self.loss != "mse":
            kernels[type(self._rows[-1]).__name__] = (
                "fused with the loss in training",
                f"loss {self.loss}: dZ = {'P' if self.loss == 'cross_entropy' else 'σ(Z)'} − Y")
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"total: {self._theta.size:,} parameters ({self.dtype.name}), loss "
                     f"{self.loss}")
        lines.append("kernels (forward / backward):")
        kind_width = max(map(len, kernels))
        for kind, (fwd, bwd) in kernels.items():
            line = f"  {kind.ljust(kind_width)}  {fwd} / {bwd}"
            if len(line) > 100:
                line = f"  {kind.ljust(kind_width)}  {fwd} /\n  {' ' * kind_width}  {bwd}"
            lines.append(line)
        if batch_size is not None:
            item = self.dtype.itemsize
            lay, mib = self._layout, 1 << 20
            acts = lay["acts"] * batch_size * item / mib
            caches = (lay["cache"] * item + lay["icache"] * 4) * batch_size / mib  # int32
            lines.append(f"memory for a batch of {batch_size:,}: activations {acts:,.2f} MiB "
                         f"(their gradients as much again), caches {caches:,.2f} MiB")
        text = "\n".join(lines)
        if print_it:
            print(text)
        return text

    # -- input checks ------------------------------------------------------------------------

    def _check_X(self, X: Any, name: str = "X") -> np.ndarray:
        """X as ``(n_0, m)`` of the network's dtype: ``(n_features, m)``, or images
        ``(C, H, W, m)`` (seen flat: with examples last, the memory is the same); token ids
        ``(T, m)`` for a sequence model (checked by its first layer)."""
        shape, n0 = self.input_shape, self.input_size
        X = self._rows[0].check_input(X, name, self.dtype)
        if len(shape) > 1:
            X = _checks.as_float_array(X, name, (2, len(shape) + 1), check_finite=False,
                                       hint=f"images are (C, H, W, m) = (*{shape}, m)")
            if X.ndim == len(shape) + 1:
                if X.shape[:-1] != shape:
                    raise ValueError(f"{name}: expected images of shape {(*shape, 'm')}, got "
                                     f"{X.shape}")
                X = X.reshape(n0, X.shape[-1])
        else:
            hint = f"X has shape (n_features, n_samples) = ({n0}, m): examples are columns"
            X = _checks.as_float_array(X, name, 2, check_finite=False,
                                       hint=hint + f"; use {name}.reshape({n0}, -1)")
        if X.shape[0] != n0:
            if X.shape[1] == n0:
                raise ValueError(
                    f"{name}: expected shape ({n0}, n_samples), got {X.shape}: rows look like "
                    f"examples, but loopprop puts examples in columns (docs/formulas.md); "
                    f"pass {name}.T"
                )
            raise ValueError(
                f"{name}: expected {n0} rows (one per input feature; input_shape = "
                f"{shape}), got shape {X.shape}"
            )
        if X.shape[1] == 0:
            raise ValueError(f"{name}: no examples (shape {X.shape})")
        # checked for NaN/Inf after converting (a float64 beyond float32's range becomes Inf)
        return _checks.to_dtype(X, self.dtype, name,
                                fix="a network's inputs must be finite: clean or impute them")

    def _check_targets(self, Y: Any, m: int, name: str = "Y"):
        """Targets as (Y float (rows, m), labels int64 (positions, m), one_hot flag), checked
        by the same rules as the loss functions."""
        shape = (self.output_size, m)
        out = "the network's output"
        if self.loss == "cross_entropy" and len(self.output_shape) == 2:
            return np.zeros((0, m), self.dtype), self._sequence_labels(Y, m, name), False
        if self.loss == "cross_entropy":
            Yv, is_labels = _checks.class_targets(Y, name, shape, self.dtype, out)
            if is_labels:
                return np.zeros((0, m), self.dtype), Yv.reshape(1, m), False
            return Yv, np.zeros((1, m), np.int64), True
        Y = np.asarray(Y)
        if Y.ndim == 1 and shape == (1, Y.shape[0]):
            Y = Y.reshape(1, m)  # one output neuron: a plain vector of targets is unambiguous
        check = _checks.binary_targets if self.loss == "binary_cross_entropy" else \
            _checks.targets_like
        return check(Y, name, shape, self.dtype, out), np.zeros((1, m), np.int64), False

    def _sequence_labels(self, Y: Any, m: int, name: str) -> np.ndarray:
        """One class label per output position: integers ``(T, m)`` in ``[0, V)``."""
        V, T = self.output_shape
        Y = np.asarray(Y)
        if Y.dtype.kind not in "iu" or Y.dtype == np.bool_:
            raise TypeError(f"{name}: expected integer labels of shape ({T}, m), one per output "
                            f"position, got dtype {Y.dtype}; use {name}.astype(np.int64)")
        if Y.shape != (T, m):
            raise ValueError(f"{name}: expected labels of shape ({T}, {m}) (a label per position "
                             f"of the output (V, T) = {self.output_shape} and example), got "
                             f"{Y.shape}")
        if Y.size and (Y.min() < 0 or Y.max() >= V):
            bad = Y[(Y < 0) | (Y >= V)].flat[0]
            raise ValueError(f"{name}: labels must lie in [0, {V}) (the output's classes), "
                             f"found {bad}")
        return np.ascontiguousarray(Y, dtype=np.int64)

    # -- forward / backward / step (docs/formulas.md §5, §10, §12) ----------------------------

    def _fused(self) -> bool:
        return self.loss != "mse"

    def forward(self, X: Any, *, logits: bool = False) -> np.ndarray:
        """Forward pass in the network's mode (:meth:`train`, the default: dropout active, batch
        norm on the batch's statistics, updating its running ones; :meth:`eval`); caches every
        layer's output for :meth:`backward` (§6, §14). Returns the output activations
        ``A^(L)`` ``(n_L, m)`` (a copy); with ``logits=True`` the input of the output
        activation instead, ``Z^(L)`` (a softmax's logits, ``(V, T, m)`` for a language
        model)."""
        if logits and not isinstance(self._rows[-1], Activation):
            raise ValueError(f"logits: the last layer is {type(self._rows[-1]).__name__}, not an "
                             "activation; its output is what forward returns")
        X = self._check_X(X)
        m = X.shape[1]
        if self.training:
            self._check_batch_norm_batch(m, "X")
        buf = _plan.Buffers(self._layout, m, self.dtype)
        buf.acts[:X.size] = X.ravel()
        self._forward_count += 1
        _train._forward_batch(self._plan, self._fplan, self._flat(buf), m, len(self._rows),
                              self.training, self._forward_seed(), use_threads(True),
                              self._table())
        self._cache = (buf, m, self.training)
        if logits:
            r = len(self._rows) - 1
            Z = self._region(buf, int(self._plan[r, _plan.IN_OFF]),
                             int(self._plan[r, _plan.IN_SIZE]), m)
            return Z.reshape(*self._rows[r].in_shape, m).copy()
        return self._output_view(buf, m).reshape(*self.output_shape, m).copy()

    def _check_batch_norm_batch(self, m: int, name: str) -> None:
        """Training-mode batch norm needs two values per channel (else the variance is 0)."""
        for layer in self._rows:
            if isinstance(layer, BatchNorm) and layer.per_example * m < 2:
                raise ValueError(
                    f"{name}: a batch of {m} example{'s' if m != 1 else ''} gives {layer!r} one "
                    "value per feature in training mode, which has no variance (PyTorch "
                    "refuses it too); use batches of at least 2, or net.eval() to normalize "
                    "with the running statistics")

    def _forward_seed(self) -> int:
        """The dropout seed of a forward pass: ``seed·2²⁰ + count`` (the seed hashed into 37 bits
        when it is larger), below 2⁵⁷: the forward pass gives row ``r`` the seed ``64·s + r``,
        which must fit 64 bits with the JIT off as well (Python integers do not wrap)."""
        return (_checks.stream_seed(self.seed, 37) * 1048576 + self._forward_count) % (1 << 57)

    def _table(self, decode: bool = False):
        """The compiled row functions of this network's kinds for its dtype
        (:func:`loopprop.dispatch.table`: compiled, or loaded from the cache, on first use)."""
        return _dispatch.table(self._plan[:, _plan.KIND], self.dtype, decode)

    def _table_beside(self, epoch, args: tuple):
        """:meth:`_table`; when ``epoch`` is neither compiled nor cached for ``args`` and a
        table, a second process compiles it meanwhile and shares the rows with this one
        (loopprop/_helper.py: the first epoch compiles on two cores)."""
        if not _helper.enabled():
            return self._table()
        epoch_job = _helper.epoch_job(epoch, (*args, _dispatch.table((), self.dtype)))
        if epoch_job is None:  # the epoch is compiled or cached: load it
            return self._table()
        rows = [_helper.row_job(fn, self.dtype, decode) for fn, decode
                in _dispatch.row_functions(self._plan[:, _plan.KIND])]
        helper = _helper.start([*rows, epoch_job])  # the epoch last: the helper's first
        if helper is None:
            return self._table()
        try:
            for job in rows:
                if helper.claim(job):
                    _helper.run(job)
        finally:
            helper.join()
        return self._table()

    def _flat(self, buf) -> Flat:
        """The flat buffers the compiled rows take: the parameters, their gradients and the
        state, and ``buf``'s batch buffers (:class:`~loopprop.plan.Buffers`)."""
        return Flat(self._theta, self._grad, self._state, buf.acts, buf.dacts, buf.cache,
                    buf.icache, buf.work, buf.fwork)

    def _losses(self, Ybuf: np.ndarray, labbuf: np.ndarray, buf) -> LossBufs:
        """This network's loss and its buffers (targets, labels, ``buf``'s two columns)."""
        return LossBufs(_train.LOSS_CODES[self.loss], Ybuf, labbuf, buf.col1, buf.col2)

    def _region(self, buf, off: int, size: int, m: int) -> np.ndarray:
        return buf.acts[off * m:(off + size) * m].reshape(size, m)

    def _output_view(self, buf, m: int) -> np.ndarray:
        r = len(self._rows) - 1
        return self._region(buf, int(self._plan[r, _plan.OUT_OFF]),
                            int(self._plan[r, _plan.OUT_SIZE]), m)

    def activations_cache(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(Zs, As)`` of the last forward pass, in the names of §5: ``Zs[l−1] = Z^(l)`` the
        output of the l-th parameterized layer, ``As[0]`` the input and ``As[l]`` the output of
        the activation that follows layer l (each ``(values per example, m)``)."""
        if self._cache is None:
            raise RuntimeError("no forward pass cached: call net.forward(X) first")
        buf, m, _ = self._cache
        P = self._plan
        Zs = [self._region(buf, int(P[r, _plan.OUT_OFF]), int(P[r, _plan.OUT_SIZE]), m)
              for r in self._param_rows]
        As = [self._region(buf, 0, self.input_size, m)]
        As += [self._region(buf, int(P[r, _plan.OUT_OFF]), int(P[r, _plan.OUT_SIZE]), m)
               for r, layer in enumerate(self._rows)
               if isinstance(layer, Activation)]
        return Zs, As

    def backward(self, Y: Any) -> float:
        """Backward pass from the cached forward pass; returns the loss (mean over the batch).

        Gradients **accumulate** into :attr:`grads` (§12): call :meth:`zero_grad` between
        steps. ``Y``: integer labels ``(m,)`` or one-hot ``(n_L, m)`` for cross-entropy,
        ``(n_L, m)`` targets otherwise.
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a forward pass first: call net.forward(X)")
        buf, m, training = self._cache
        Yf, labels, one_hot = self._check_targets(Y, m)
        loss = _train._loss_seed(self._plan, buf.acts, buf.dacts, m,
                                 _train.LOSS_CODES[self.loss], Yf, labels.ravel(), one_hot,
                                 buf.col1, buf.col2)
        last = len(self._rows) - (2 if self._fused() else 1)
        _train._backward_batch(self._plan, self._fplan, self._flat(buf), m, last, training,
                               use_threads(True), self._table())
        return float(loss)

    def zero_grad(self) -> None:
        """Reset every accumulated gradient to zero (docs/formulas.md §12)."""
        self._grad[:] = 0.0

    def step(self, lr: float | None = None) -> float:
        """Update every parameter from its accumulated gradient (docs/formulas.md §10).

        ``step(lr)``: plain gradient descent, ``θ ← θ − lr·dθ``. ``step()``: one step of the
        optimizer chosen with :meth:`set_optimizer` (momentum, Adam, AdamW, with its schedule,
        weight decay and clipping), the same update ``fit`` takes after each batch; its state
        stays on the network. Returns the rate used."""
        if lr is not None:
            lr = _checks.check_lr(lr)
            _train._sgd(self._theta, self._grad, lr)
            return lr
        if self.optimizer is None:
            raise RuntimeError("step(): no optimizer chosen; call net.set_optimizer(name, lr=…) "
                               "first, or net.step(lr) for plain gradient descent")
        return self.optimizer.step(self._theta, self._grad)

    def set_optimizer(self, optimizer: str = "sgd", *, lr: float = 0.1, momentum: float = 0.9,
                      beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                      weight_decay: float | None = None, decay_all: bool = False,
                      clip_grad_norm: float | None = None, lr_schedule: str = "constant",
                      warmup_steps: int = 0, total_steps: int | None = None,
                      step_size: int = 1, lr_gamma: float = 0.1) -> _optim.Optimizer:
        """Choose the optimizer :meth:`step` takes, with fresh state (step count 0, zero
        velocity and moments); the options are :meth:`fit`'s, counted in steps rather than
        epochs: ``warmup_steps`` of linear warm-up, the cosine schedule's ``total_steps``
        (needed for it), the step schedule's ``step_size``. Returns the optimizer (also
        :attr:`optimizer`)."""
        if lr_schedule == "cosine" and total_steps is None:
            raise ValueError("total_steps: the cosine schedule decays to 0 at total_steps; give "
                             "the number of steps you will take")
        total = _checks.check_positive_int(total_steps if total_steps is not None else
                                           max(1, warmup_steps + 1), "total_steps")
        warmup_steps = _checks.check_int(warmup_steps, "warmup_steps", 0, "number of steps")
        o = self._fit_options(
            epochs=total, batch_size=1, lr=lr, optimizer=optimizer, seed=0, momentum=momentum,
            beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, decay_all=decay_all,
            clip_grad_norm=clip_grad_norm, lr_schedule=lr_schedule, warmup_epochs=warmup_steps,
            step_epochs=step_size, lr_gamma=lr_gamma)
        state, decay = self._optimizer(o, 1)
        self.optimizer = _optim.Optimizer(state, decay)
        return self.optimizer

    # -- training and evaluation ------------------------------------------------------------

    def fit(self, X: Any, y: Any, *, epochs: int = 10, batch_size: int = 32, lr: float = 0.1,
            optimizer: str = "sgd", shuffle: bool = True, seed: int = 0, progress: bool = True,
            validation: tuple[Any, Any] | None = None, momentum: float = 0.9,
            beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
            weight_decay: float | None = None, decay_all: bool = False,
            clip_grad_norm: float | None = None, lr_schedule: str = "constant",
            warmup_epochs: float = 0, step_epochs: int = 10, lr_gamma: float = 0.1,
            parallel: bool = True) -> dict[str, list]:
        """Train with minibatches; every epoch runs in one compiled call (no Python per batch).

        Parameters
        ----------
        X : (n_features, n_samples); examples are columns (pass ``X.T`` for rows-as-examples);
            converted to the network's dtype. fit keeps one transposed copy of X, so that a
            shuffled minibatch is gathered as contiguous rows.
        y : labels ``(n,)`` or one-hot ``(n_L, n)`` for cross-entropy; ``(n_L, n)`` (or ``(n,)``
            with one output) for mse and binary cross-entropy
        epochs, batch_size, lr : the loop; the last partial batch is used, not dropped
        optimizer : ``"sgd"``, ``"momentum"`` (``momentum`` = β in [0, 1); PyTorch's SGD with
            momentum: ``v ← βv + g``, ``θ ← θ − ηv``), ``"adam"`` or ``"adamw"`` (``beta1``,
            ``beta2`` in [0, 1), ``eps`` > 0)
        weight_decay : λ ≥ 0. For ``"adamw"`` decoupled, ``θ ← θ(1 − ηλ)`` before each step
            (default 0.01, as ``torch.optim.AdamW``); for the others L2 added to the gradient,
            ``g ← g + λθ`` (default 0, as ``torch.optim.SGD``/``Adam``). Only weights decay:
            biases and normalization gains and shifts are excluded, as common practice does
            (each layer's :meth:`~loopprop.layers.base.Layer.decays`); ``decay_all=True``
            decays every parameter (PyTorch's behaviour when all parameters form one group)
        clip_grad_norm : c > 0 clips the gradient's global norm before each step:
            ``g ← g·min(1, c/(‖g‖ + 10⁻⁶))``, as ``torch.nn.utils.clip_grad_norm_``
        lr_schedule : the rate of every step (per batch, inside the compiled epoch):
            ``"constant"``, ``"step"`` (× ``lr_gamma`` every ``step_epochs`` epochs after the
            warm-up) or ``"cosine"`` (from ``lr`` to 0 over the steps after the warm-up);
            ``warmup_epochs`` (may be fractional) ramps linearly up to ``lr`` first: step ``t``
            (0-based) of the ``W`` warm-up steps uses ``lr·(t + 1)/W``
        shuffle, seed : reshuffle the examples each epoch from ``seed`` (same seed, same thread
            count: bitwise-identical weights)
        progress : show a progress bar over epochs with the running loss
        validation : optional ``(X_val, y_val)`` evaluated after every epoch

        Returns
        -------
        history : dict of per-epoch lists: ``loss``, ``accuracy`` (classification), ``val_loss``,
            ``val_accuracy`` (with validation), ``grad_norm`` (mean ‖dW^(l)‖ per layer, before
            clipping), ``lr`` (the rate of the epoch's last step), ``time`` (seconds),
            ``compile_time`` (of which compiling the kernels: a first epoch without a cache);
            and ``grad_norms``, a dict from every parameter array, named ``"row:Kind.name"``
            (``"3:BatchNorm.gamma"``, ``"4:CausalSelfAttention.W_qkv"``), to its per-epoch mean
            gradient norm ``‖∂L/∂θ‖`` (before clipping).

        ``fit`` trains in training mode and leaves the network's mode as it found it.
        """
        o = self._fit_options(
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
            momentum=momentum, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
            decay_all=decay_all, clip_grad_norm=clip_grad_norm, lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs, step_epochs=step_epochs, lr_gamma=lr_gamma)
        X = self._check_X(X)
        n = X.shape[1]
        Yf, labels, one_hot = self._check_targets(y, n, "y")
        val = self._check_validation(validation)
        bs = min(o.batch_size, n)
        self._check_batch_norm_batch(bs, "batch_size")
        if n % bs:
            self._check_batch_norm_batch(n % bs, f"the last batch ({n} examples, batch_size "
                                         f"{bs}); batch_size")
        n_batches = -(-n // bs)
        buf = self._fit_buffers(bs)
        opt, decay = self._optimizer(o, n_batches)
        perm = np.arange(n, dtype=np.int64)
        Ybuf = np.zeros(Yf.shape[0] * bs, self.dtype)
        labbuf = np.zeros(labels.shape[0] * bs, np.int64)
        o.threads = use_threads(parallel)
        rng = np.random.default_rng(o.seed) if shuffle else None
        scratch = self._fit_scratch
        losses = self._losses(Ybuf, labbuf, buf)
        XT = scratch.get("XT")
        if XT is None or XT.shape[0] != n:
            XT = scratch["XT"] = np.empty((n, self.input_size), self.dtype)
        _transpose(XT, X)  # one example per row: minibatch gathers copy rows
        data = Data(XT, Yf, labels, perm, one_hot)
        flat, optim = self._flat(buf), opt.bundle(decay)  # the same for every epoch

        def epoch(gnorm, dropout_seed, stop, threads):
            shuffle_seed = int(rng.integers(0, 2**31 - 1)) if rng is not None else -1
            args = (self._plan, self._fplan, flat, optim, opt.t, losses, data,
                    Norms(self._norm_spans, gnorm), Run(bs, shuffle_seed, dropout_seed, threads),
                    stop)
            return _train._train_epoch(*args, self._table_beside(_train._train_epoch, args))

        per_example = n * (self.output_size if self.loss == "binary_cross_entropy" else
                           labels.shape[0])  # every output position of a sequence counts
        try:
            return self._epochs(o, epoch, opt, n, per_example, n_batches, val, progress)
        finally:
            if XT.nbytes > _KEEP_XT_BYTES:
                scratch.pop("XT", None)  # a large copy of the data is not worth keeping

    def fit_text(self, ids: Any, *, epochs: int = 10, steps_per_epoch: int = 100,
                 batch_size: int = 16, lr: float = 1e-3, optimizer: str = "adamw",
                 seed: int = 0, progress: bool = True, validation: Any = None,
                 beta1: float = 0.9, beta2: float = 0.95, eps: float = 1e-8,
                 weight_decay: float | None = 0.1, decay_all: bool = False,
                 clip_grad_norm: float | None = 1.0, lr_schedule: str = "cosine",
                 warmup_epochs: float = 0, parallel: bool = True) -> dict[str, list]:
        """Train a language model (an :class:`~loopprop.layers.Embedding` first, one
        distribution per position last: :func:`loopprop.models.gpt`) on a corpus of token ids.

        Each step draws ``batch_size`` windows of ``T`` tokens at random offsets *inside the
        compiled epoch* (loopprop's own generator, seeded from ``seed`` and the epoch): the
        inputs are ``ids[s : s + T]``, the labels the next token at each position,
        ``ids[s + 1 : s + T + 1]``. An epoch is ``steps_per_epoch`` steps, in one compiled call.

        Parameters
        ----------
        ids : 1-D integer token ids (:meth:`loopprop.text.CharTokenizer.encode`), longer than
            the block ``T``
        validation : optional 1-D ids held out; after every epoch the mean loss over its
            non-overlapping windows (``val_loss``, in nats per token)
        optimizer, lr, beta1, beta2, eps, weight_decay, decay_all, clip_grad_norm,
        lr_schedule, warmup_epochs : as :meth:`fit`; the defaults are GPT training's (AdamW,
            β₂ = 0.95, λ = 0.1 on the weight matrices and token embedding, clipping at 1,
            cosine schedule)

        Returns
        -------
        history : per-epoch lists ``loss``, ``accuracy`` (next-token accuracy over every
            position), ``val_loss`` (with validation), ``grad_norm``, ``grad_norms``, ``lr``,
            ``time`` (seconds per epoch), ``compile_time`` (of which compiling: a first epoch
            compiles its kernels unless they are cached) and ``tokens_per_s`` (training
            positions per second, compiling left out).
        """
        o = self._fit_options(
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
            momentum=0.9, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
            decay_all=decay_all, clip_grad_norm=clip_grad_norm, lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs, step_epochs=1, lr_gamma=0.1)
        steps = _checks.check_positive_int(steps_per_epoch, "steps_per_epoch")
        T = self._sequence_model("fit_text")
        corpus = self._check_ids(ids, "ids", T + 1)
        val = None
        if validation is not None:
            windows = self._windows(self._check_ids(validation, "validation", T + 1), T)
            val = (self._check_X(windows[0], "validation"),
                   *self._check_targets(windows[1], windows[0].shape[1], "validation"))
        bs = o.batch_size
        buf = self._fit_buffers(bs)
        opt, decay = self._optimizer(o, steps)
        Ybuf = np.zeros(1, self.dtype)
        labbuf = np.zeros(T * bs, np.int64)
        o.threads = use_threads(parallel)
        window_rng = np.random.default_rng([o.seed, 2])
        flat, optim = self._flat(buf), opt.bundle(decay)  # the same for every epoch
        losses = self._losses(Ybuf, labbuf, buf)

        def epoch(gnorm, dropout_seed, stop, threads):
            args = (self._plan, self._fplan, flat, optim, opt.t, losses, corpus, steps,
                    Norms(self._norm_spans, gnorm),
                    Run(bs, int(window_rng.integers(0, 2**62)), dropout_seed, threads), stop)
            return _train._train_text_epoch(*args,
                                            self._table_beside(_train._train_text_epoch, args))

        return self._epochs(o, epoch, opt, steps * bs, steps * bs * T, steps, val, progress,
                            tokens=steps * bs * T)

    # -- fit's pieces -------------------------------------------------------------------------

    def _fit_options(self, *, epochs, batch_size, lr, optimizer, seed, momentum, beta1, beta2,
                     eps, weight_decay, decay_all, clip_grad_norm, lr_schedule, warmup_epochs,
                     step_epochs, lr_gamma) -> SimpleNamespace:
        """fit's options, each checked (a clear error names the argument)."""
        epochs = _checks.check_positive_int(epochs, "epochs")
        batch_size = _checks.check_positive_int(batch_size, "batch_size")
        lr = _checks.check_lr(lr)
        _checks.check_choice(optimizer, "optimizer", tuple(_train.OPTIMIZERS))
        seed = _checks.check_int(seed, "seed", 0, "non-negative integer seed")
        momentum = _checks.check_fraction(momentum, "momentum", 0.0, 1.0,
                                          example=" such as 0.9 (the velocity's decay β)")
        beta1 = _checks.check_fraction(beta1, "beta1", 0.0, 1.0,
                                       example=" such as 0.9 (Adam's first-moment decay)")
        beta2 = _checks.check_fraction(beta2, "beta2", 0.0, 1.0,
                                       example=" such as 0.999 (Adam's second-moment decay)")
        eps = _checks.check_fraction(eps, "eps", 0.0, math.inf, lo_open=True,
                                     example=" such as 1e-8 (Adam's denominator guard)")
        if weight_decay is None:
            weight_decay = 0.01 if optimizer == "adamw" else 0.0
        weight_decay = _checks.check_fraction(weight_decay, "weight_decay", 0.0, math.inf,
                                              example=" such as 1e-4 (the decay's strength λ)")
        if not isinstance(decay_all, bool):
            raise TypeError(f"decay_all: expected True or False, got {_checks._describe(decay_all)}")
        clip = 0.0
        if clip_grad_norm is not None:
            clip = _checks.check_fraction(clip_grad_norm, "clip_grad_norm", 0.0, math.inf,
                                          lo_open=True,
                                          example=" such as 1.0 (the largest gradient norm)")
        _checks.check_choice(lr_schedule, "lr_schedule", ("constant", "step", "cosine"))
        warmup_epochs = _checks.check_fraction(warmup_epochs, "warmup_epochs", 0.0, math.inf,
                                               example=" such as 1 (epochs of linear warm-up)")
        if warmup_epochs >= epochs and warmup_epochs > 0:
            raise ValueError(f"warmup_epochs: the warm-up ({warmup_epochs:g} epochs) must be "
                             f"shorter than training (epochs={epochs}); use fewer warm-up "
                             "epochs or more epochs")
        step_epochs = _checks.check_positive_int(step_epochs, "step_epochs")
        lr_gamma = _checks.check_fraction(lr_gamma, "lr_gamma", 0.0, 1.0, lo_open=True,
                                          hi_open=False,
                                          example=" such as 0.1 (the step schedule's factor)")
        return SimpleNamespace(
            epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
            beta=momentum if optimizer == "momentum" else beta1, beta2=beta2, eps=eps,
            weight_decay=weight_decay, decay_all=decay_all, clip=clip, lr_schedule=lr_schedule,
            warmup_epochs=warmup_epochs, step_epochs=step_epochs, lr_gamma=lr_gamma)

    def _check_validation(self, validation):
        if validation is None:
            return None
        if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
            raise TypeError("validation: expected a pair (X_val, y_val)")
        Xv = self._check_X(validation[0], "validation X")
        return (Xv, *self._check_targets(validation[1], Xv.shape[1], "validation y"))

    def _fit_buffers(self, bs: int):
        """The batch buffers for batches of ``bs``, kept between fit calls."""
        buf = self._fit_scratch.get("buffers")
        if buf is None or buf.m != bs:
            buf = self._fit_scratch["buffers"] = _plan.Buffers(self._layout, bs, self.dtype)
        return buf

    def _optimizer(self, o, n_batches: int):
        """The optimizer's state for ``o.epochs`` epochs of ``n_batches`` steps, and the
        weight-decay mask."""
        opt = _train.OptimizerState(
            o.optimizer, self._theta.size, self.dtype, o.lr, o.beta, o.beta2, o.eps,
            o.weight_decay, o.clip, o.lr_schedule,
            warmup=int(round(o.warmup_epochs * n_batches)), total=o.epochs * n_batches,
            step_size=o.step_epochs * n_batches, gamma=o.lr_gamma)
        return opt, self._decay_mask(o.decay_all)

    def _epochs(self, o, epoch, opt, n: int, per_example: int, n_batches: int, val,
                progress: bool, tokens: int = 0) -> dict[str, list]:
        """Run ``epoch(gnorm, dropout_seed)`` (one compiled epoch, returning ``(Σ loss × batch
        size, correct, step count, last rate)``) ``o.epochs`` times: the history, the progress
        bar, validation and the divergence check. With ``tokens`` (positions per epoch) the
        history and the bar report tokens per second."""
        self.interrupted = None
        bad = self._nonfinite_arrays(self._theta)
        if bad:  # before the first step: the array at fault, not those it spreads to
            raise FloatingPointError(
                f"the parameters of layer {bad[0][0]} ({bad[0][1]}) hold NaN or Inf before "
                "training: set them to finite values (net.params, or a new Network)")
        classify = self.loss != "mse"
        hist: dict[str, Any] = {"loss": [], "grad_norm": [], "lr": [], "time": [],
                                "compile_time": [],
                                "grad_norms": {name: [] for name in self._param_names}}
        if tokens:
            hist["tokens_per_s"] = []
        if classify:
            hist["accuracy"] = []
        if val is not None:
            hist["val_loss"] = []
            if classify:
                hist["val_accuracy"] = []
        bar = _progress.Progress(o.epochs, progress)
        # dropout masks: their own stream of seeds, so that shuffle=False keeps them random
        drop_rng = np.random.default_rng([o.seed, 1])
        try:
            for e in range(1, o.epochs + 1):
                t0, c0 = time.perf_counter(), _compiling.seconds()
                gnorm = np.zeros(len(self._norm_spans), np.float64)
                dropout_seed = int(drop_rng.integers(0, 2**31 - 1))
                stop = np.zeros(1, np.int64)
                try:
                    total, correct, opt.t, last_lr = _interrupt.run(
                        functools.partial(epoch, gnorm, dropout_seed, stop,
                                          threads_for_load(o.threads)), stop)
                except _interrupt.Interrupted as exc:  # Ctrl-C: stopped between two steps
                    if exc.result is not None:
                        opt.t = int(exc.result[2])
                    self.interrupted = {"epoch": e, "steps": opt.t}
                    raise KeyboardInterrupt from None
                hist["time"].append(time.perf_counter() - t0)
                hist["compile_time"].append(_compiling.seconds() - c0)
                hist["lr"].append(float(last_lr))
                hist["loss"].append(total / n)
                norms = gnorm / n_batches
                hist["grad_norm"].append([float(norms[a]) for a in self._first_arrays])
                for name, value in zip(self._param_names, norms):
                    hist["grad_norms"][name].append(float(value))
                info = {"loss": total / n}
                if tokens:
                    # the rate of training, not of compiling (a first epoch compiles)
                    run = max(hist["time"][-1] - hist["compile_time"][-1], 1e-9)
                    hist["tokens_per_s"].append(tokens / run)
                    info["tok/s"] = hist["tokens_per_s"][-1]
                if classify:
                    hist["accuracy"].append(correct / per_example)
                    info["acc"] = correct / per_example
                if val is not None:
                    ev = self._evaluate_checked(*val)
                    hist["val_loss"].append(ev["loss"])
                    info["val_loss"] = ev["loss"]
                    if classify:
                        hist["val_accuracy"].append(ev["accuracy"])
                        info["val_acc"] = ev["accuracy"]
                self._check_diverged(e, total / n, o.lr)
                bar.update(e, info)
        finally:
            bar.close()
        self.history = hist
        return hist

    def _sequence_model(self, what: str) -> int:
        """``T`` for a language model (token ids in, a distribution per position out)."""
        from .layers import Embedding

        if not (isinstance(self._rows[0], Embedding) and len(self.output_shape) == 2
                and self.loss == "cross_entropy"):
            raise TypeError(f"{what}: needs a language model (an Embedding first, a "
                            "distribution per position last, cross-entropy): build one with "
                            "loopprop.models.gpt")
        return self.input_shape[0]

    def _check_ids(self, ids: Any, name: str, minimum: int) -> np.ndarray:
        """A 1-D corpus of token ids in the embedding's vocabulary, at least ``minimum`` long."""
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D array of token ids (a corpus), got shape "
                             f"{arr.shape}")
        if arr.shape[0] < minimum:
            raise ValueError(f"{name}: {arr.shape[0]} tokens are too few for windows of "
                             f"{minimum - 1} tokens and their next tokens (at least {minimum} "
                             "needed); use a longer text or a smaller block_size")
        self._rows[0].check_input(arr, name, self.dtype)
        return np.ascontiguousarray(arr, dtype=np.int64)

    @staticmethod
    def _windows(ids: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
        """Non-overlapping windows of ``ids``: inputs and next tokens, ``(T, n)`` each."""
        n = (ids.shape[0] - 1) // T
        X = ids[:n * T].reshape(n, T).T
        Y = ids[1:n * T + 1].reshape(n, T).T
        return np.ascontiguousarray(X), np.ascontiguousarray(Y)

    def _nonfinite_arrays(self, flat: np.ndarray) -> list[tuple[int, str]]:
        """``(l, "row:Kind.name")`` of every parameter array of ``flat`` (:attr:`_theta` or
        :attr:`_grad`) holding NaN or Inf, in plan order; ``l`` counts parameterized layers
        from 1, as ``W^(l)`` does."""
        bad, layer = [], 0
        for i, (name, (off, size)) in enumerate(zip(self._param_names, self._norm_spans)):
            layer += i in self._first_arrays
            if not np.isfinite(flat[off:off + size]).all():
                bad.append((layer, name))
        return bad

    def _check_diverged(self, epoch: int, loss: float, lr: float) -> None:
        """Raise ``FloatingPointError`` when the loss, a parameter or a gradient is NaN or Inf
        after ``epoch``, naming the first parameter array that holds one in plan order (the
        forward pass meets it first), else the last gradient in plan order (the backward pass
        computes it first). Any layer kind: every parameter array is named by
        ``"row:Kind.name"``.

        The loss alone is not enough: a NaN weight can hide behind a finite loss (an output
        that does not depend on it, or an activation that maps it away)."""
        bad_theta = not _checks._all_finite(self._theta)
        bad_grad = not _checks._all_finite(self._grad)
        if math.isfinite(loss) and not bad_theta and not bad_grad:
            return
        where = ""
        bad = self._nonfinite_arrays(self._theta)
        if bad:  # the first in plan order: the forward pass met it first
            where = f"; the parameters of layer {bad[0][0]} ({bad[0][1]}) hold NaN or Inf"
        else:
            bad = self._nonfinite_arrays(self._grad)
            if bad:  # the last in plan order: the backward pass computed it first
                where = (f"; the gradients of layer {bad[-1][0]} ({bad[-1][1]}) went NaN or Inf "
                         "first (the backward pass runs from the output back)")
        raise FloatingPointError(
            f"training diverged at epoch {epoch}: the training loss is {loss:g}{where}. The "
            f"learning rate lr={lr:g} is probably too large; try lr={lr / 10:g}"
        )

    def _evaluate_checked(self, X, Yf, labels, one_hot, training: bool = False
                          ) -> dict[str, Any]:
        """The loss (and outputs) over X in chunks; evaluation mode unless ``training`` (one
        chunk then: batch statistics are the whole batch's)."""
        n = X.shape[1]
        positions = int(np.prod(self.output_shape[1:]))  # a sequence's columns per example
        chunk = n if training else min(n, max(1, 1024 // positions))
        buf = _plan.Buffers(self._layout, chunk, self.dtype)
        out = np.empty((int(np.prod(self.output_shape)), n), self.dtype)
        Ybuf = np.zeros(max(Yf.shape[0] * chunk, 1), self.dtype)
        labbuf = np.zeros(labels.shape[0] * chunk, np.int64)
        total, correct = _train._evaluate(
            self._plan, self._fplan, self._flat(buf),
            self._losses(Ybuf, labbuf, buf),
            Data(X, Yf, labels, np.arange(n, dtype=np.int64), one_hot), chunk, out, training,
            use_threads(True), self._table())
        result: dict[str, Any] = {"loss": total / n, "output": out.reshape(*self.output_shape, n)}
        if self.loss == "cross_entropy":
            result["accuracy"] = correct / (n * labels.shape[0])
        elif self.loss == "binary_cross_entropy":
            result["accuracy"] = correct / (n * self.output_size)
        return result

    def evaluate(self, X: Any, y: Any) -> dict[str, float]:
        """``{"loss": …, "accuracy": …}`` on ``(X, y)`` (accuracy for classification losses).

        A squared-error network with several outputs also takes class labels ``y (m,)``: the
        loss is then that of the one-hot targets and the accuracy that of the argmax of the
        outputs (:meth:`predict_classes`), as ``loopprop evaluate`` reports it."""
        X = self._check_X(X)
        labels = self._mse_labels(y, X.shape[1])
        if labels is None:
            ev = self._evaluate_checked(X, *self._check_targets(y, X.shape[1], "y"))
        else:
            Y = np.eye(self.output_size, dtype=self.dtype)[:, labels]
            ev = self._evaluate_checked(X, *self._check_targets(Y, X.shape[1], "y"))
            ev["accuracy"] = float(np.mean(ev["output"].argmax(axis=0) == labels))
        ev.pop("output")
        return ev

    def _mse_labels(self, y: Any, m: int) -> np.ndarray | None:
        """Class labels ``(m,)`` given to a squared-error network of several outputs (checked:
        integers in ``[0, n_L)``), else ``None`` (targets as the loss takes them)."""
        if self.loss != "mse" or self.output_size < 2 or len(self.output_shape) != 1:
            return None
        y = np.asarray(y)
        if y.ndim != 1 or y.dtype.kind not in "iu":
            return None
        if y.shape[0] != m:
            raise ValueError(f"y: expected {m} labels (one per example of X), got {y.shape[0]}")
        outside = y[(y < 0) | (y >= self.output_size)]
        if outside.size:
            raise ValueError(f"y: class labels must lie in [0, {self.output_size}) (one per "
                             f"output of the network), found {outside[0]}")
        return y.astype(np.int64)

    def predict(self, X: Any) -> np.ndarray:
        """The output activations ``A^(L)`` for ``X``: an array of shape ``(n_L, n)``, one column
        per example (loopprop's layout, not scikit-learn's rows).

        For a softmax (cross-entropy) network each column holds the class probabilities and sums
        to 1; for a sigmoid (binary cross-entropy) network each entry is ``P(y = 1)``; for mse
        the raw outputs. Use :meth:`predict_classes` for class labels ``(n,)``.
        """
        X = self._check_X(X)
        n, nL = X.shape[1], self.output_size
        dummy = (np.zeros((nL, n), self.dtype) if self.loss != "cross_entropy"
                 else np.zeros((0, n), self.dtype))
        if self.loss == "binary_cross_entropy":
            dummy[:] = 0.5
        positions = int(np.prod(self.output_shape[1:]))
        return self._evaluate_checked(X, dummy, np.zeros((positions, n), np.int64),
                                      False)["output"]

    def predict_classes(self, X: Any) -> np.ndarray:
        """Class labels: ``(n,)`` integers, the argmax of each column of :meth:`predict`
        (softmax, or mse on one-hot targets); for a sigmoid output, ``A > ½`` per output:
        ``(n_L, n)`` of 0/1 (``(1, n)`` for one output)."""
        A = self.predict(X)
        if self.loss == "binary_cross_entropy" or (A.shape[0] == 1):
            return (A > 0.5).astype(np.int64)
        return A.argmax(axis=0)

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write one ``.npz`` file: the layers (kind and hyperparameters), input shape, loss,
        dtype, the weights, the state, :attr:`metadata` and a format version."""
        meta = {
            "format": "loopprop.Network",
            "format_version": FORMAT_VERSION,
            "layers": [{"kind": type(layer).__name__, "config": layer.config()}
                       for layer in self.layers],
            "input_shape": list(self.input_shape),
            "loss": self.loss,
            "dtype": self.dtype.name,
            "seed": self.seed,
            "init": self.init,
            "alpha": self.alpha,
            "n_params": int(self._theta.size),
            "n_state": int(self._state.size),
            "metadata": self.metadata,
        }
        if self.layer_sizes is not None:  # the layer-sizes form, rebuilt as such on load
            meta["layer_sizes"] = self.layer_sizes
            meta["activations"] = self.activations
        try:
            text = json.dumps(meta, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"metadata: net.metadata must hold only JSON values (str, int, float, bool, "
                f"None, lists and dicts of them), finite numbers; {exc}. Convert NumPy values "
                "with .item() or .tolist() before saving; nothing was written"
            ) from None
        _files.atomic_write(path, lambda fh: np.savez(fh, meta=np.array(text),
                                                       theta=self._theta, state=self._state))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Network":
        """Read a file written by :meth:`save`.

        A missing file raises ``FileNotFoundError``; a damaged or foreign file (not a ``.npz``,
        a plain ``.npy`` array, a text file, metadata that does not describe a network, weights
        that do not fit the architecture) raises :class:`ModelFileError` naming the file and
        what is wrong. The metadata and the size of the stored weights are checked against each
        other before anything is allocated, and nothing is half-loaded.
        """
        name = os.fspath(path)
        if not os.path.exists(name):
            raise FileNotFoundError(f"{name}: no such model file; write one with net.save(path) "
                                    "or loopprop train --save PATH")
        if os.path.isdir(name):
            raise ModelFileError(f"{name}: is a directory, not a model file (.npz)")
        try:
            data = np.load(name, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelFileError(
                f"{name}: not a loopprop model file (a .npz written by Network.save); NumPy could "
                f"not read it ({type(exc).__name__})"
            ) from exc
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ModelFileError(
                f"{name}: holds a single NumPy array ({type(data).__name__}), not a loopprop "
                "model (a .npz written by Network.save)"
            )
        try:
            with data:
                if "meta" not in data.files or "theta" not in data.files:
                    raise ModelFileError(f"{name}: not a loopprop model (no meta/theta entries)")
                try:
                    meta = json.loads(str(data["meta"][()]))
                except RecursionError:
                    raise ModelFileError(f"{name}: the metadata is nested deeper than any "
                                         "model's layers are: the file is corrupted") from None
                meta = _check_meta(meta, name)
                _check_tokenizer(meta, name)
                # the stored arrays' headers say their shapes before any of them is read
                _check_stored(data, "theta", "weights", meta["n_params"], meta["dtype"], name)
                state = None
                if meta["format_version"] >= 3:
                    if "state" not in data.files:
                        raise ModelFileError(f"{name}: a version-3 model without its state "
                                             "(running statistics): the file is corrupted")
                    _check_stored(data, "state", "state", meta["n_state"], meta["dtype"], name)
                    state = np.array(data["state"])
                theta = np.array(data["theta"])
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
                json.JSONDecodeError) as exc:
            raise ModelFileError(
                f"{name}: cannot read a loopprop model ({type(exc).__name__}: {exc}); the file "
                "is truncated, corrupted or not a model saved by Network.save"
            ) from exc
        kw = {"dtype": meta["dtype"], "seed": meta["seed"], "init": meta["init"],
              "alpha": meta["alpha"]}
        try:
            if "layer_sizes" in meta or meta["format_version"] == 1:
                net = cls(meta["layer_sizes"], meta["activations"], meta["loss"], **kw)
            else:
                net = cls(meta["layers"], loss=meta["loss"], input_shape=meta["input_shape"],
                          **kw)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{name}: the architecture in the file is invalid: {exc}") \
                from exc
        if not np.isfinite(theta).all():
            raise ModelFileError(f"{name}: the weights contain NaN or Inf: the file is corrupted")
        net.metadata = meta["metadata"]
        net._theta[:] = theta
        if state is not None:
            if not np.isfinite(state).all():
                raise ModelFileError(f"{name}: the state contains NaN or Inf: the file is "
                                     "corrupted")
            net._state[:] = state
        return net

    # -- study tools ------------------------------------------------------------------------

    def to_mermaid(self, kind: str = "network", batch_size: int | None = None) -> str:
        """A Mermaid diagram of this network (docs/formulas.md §13–§14): ``kind`` in workflow,
        neuron, network, cache; ``batch_size`` adds each cache's memory for a batch of that
        size to the cache diagram. See :mod:`loopprop.diagrams`."""
        from .diagrams import to_mermaid

        return to_mermaid(self, kind, batch_size)


__all__ = ["Network", "ModelFileError", "FORMAT_VERSION"]
