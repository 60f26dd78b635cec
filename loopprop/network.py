"""``Network``: a stack of layers with cached activations, forward/backward/zero_grad/step,
fit, save/load (docs/formulas.md §5, §10, §12, §14). Training lives in
:mod:`loopprop.fitting`, the input checks in :mod:`loopprop.inputs`, the file format in
:mod:`loopprop.model_file`, the summary table in :mod:`loopprop.summary`.

The network *composes*: it builds each layer (:mod:`loopprop.layers`), turns the list into one
plan of offsets (:mod:`loopprop.plan`) and hands the plan to the compiled epoch
(:mod:`loopprop.train`). Parameters and gradients live in two flat buffers; ``params``,
``grads`` and each layer's ``W``, ``b``, ``dW``, ``db`` are live views into them, so
``net.params[0][0][i, j]`` *is* the weight the compiled epoch updates. Examples are on the last
axis, as in docs/formulas.md: ``X`` is ``(n_features, n_samples)`` or ``(C, H, W, n_samples)``.
"""

from __future__ import annotations

import copy
import math
import os
from typing import Any, Sequence

import numpy as np

from . import _checks
from . import dispatch as _dispatch
from . import model_file as _model_file
from . import plan as _plan
from . import train as _train
from ._jit import use_threads
from .bundles import Data, Flat, LossBufs
from .fitting import Fitting
from .inputs import Inputs
from .kernels.activations import CODES
from .layers import ACTIVATIONS, Activation, Dense, Layer, LeakyReLU, Sigmoid, Softmax
from .layers.registry import kind_of
from .model_file import FORMAT_VERSION, ModelFileError

LOSSES = tuple(_train.LOSS_CODES)
INITS = ("he", "xavier")


class Network(Fitting, Inputs):
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
            self._first_arrays.append(len(spans))
            for name, (off, shape) in self._layout["arrays"][r].items():
                spans.append((off, int(np.prod(shape))))
                self._param_names.append(f"{r + 1}:{type(self._rows[r]).__name__}.{name}")
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
        """Row ``r``'s parameter arrays as views of ``flat`` (theta or grad), in layout order."""
        return [flat[off:off + math.prod(shape)].reshape(shape)
                for off, shape in self._layout["arrays"][r].values()]

    def _state_views(self, r: int) -> list[np.ndarray]:
        return [self._state[off:off + math.prod(shape)].reshape(shape)
                for off, shape in self._layout["states"][r].values()]

    def _decay_spans(self, decay_all: bool) -> np.ndarray:
        """The ``[start, end)`` ranges of the flat parameters where weight decay applies, as a
        ``(k, 2)`` int64 array, sorted, adjacent ranges merged: every layer's
        :meth:`~loopprop.layers.base.Layer.decays` (weights, not biases or normalization
        gains), or every parameter with ``decay_all``. (A mask of one value per parameter
        was as large as the parameters: 472 MB for GPT-2 small in float32.)"""
        ranges = []
        for r in self._param_rows:
            arrays = self._layout["arrays"][r].values()
            for (off, shape), decays in zip(arrays, self._rows[r].decays()):
                if decays or decay_all:
                    ranges.append((off, off + math.prod(shape)))
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and merged[-1][1] == lo:
                merged[-1][1] = hi
            else:
                merged.append([lo, hi])
        return np.array(merged, np.int64).reshape(-1, 2)

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
        return math.prod(self.input_shape)  # (np.prod: 7 µs, asked at every fit)

    @property
    def output_size(self) -> int:
        """Values per example at the output ``n_L``."""
        return int(self.output_shape[0])

    # -- the flat buffers and the plan, for the study tools ---------------------------------

    @property
    def flat_params(self) -> np.ndarray:
        """Every parameter in one flat vector ``θ`` (live: :attr:`params` are views of it), laid
        out by the plan: row ``r``'s arrays at :meth:`array_span`."""
        return self._theta

    @property
    def flat_grads(self) -> np.ndarray:
        """The accumulated gradients, flat, at the same offsets as :attr:`flat_params`."""
        return self._grad

    @property
    def flat_state(self) -> np.ndarray:
        """The values saved but not trained (batch norm's running statistics), flat."""
        return self._state

    @property
    def plan(self) -> np.ndarray:
        """The plan (:mod:`loopprop.plan`): one row of integers per row of :attr:`rows` (kind,
        offsets, hyperparameters). Read it; changing it breaks the network."""
        return self._plan

    @property
    def layout(self) -> dict:
        """The plan's sizes (per example: ``acts``, ``cache``, ``icache``, ``work``; absolute:
        ``params``, ``fwork``, ``state``) and every row's named arrays: ``layout["arrays"][r]``
        maps a parameter's name to its ``(offset, shape)`` in :attr:`flat_params`,
        ``layout["states"][r]`` a state array's in :attr:`flat_state`."""
        return self._layout

    @property
    def param_rows(self) -> list[int]:
        """The rows (indices into :attr:`rows`) that own parameters: layer ``l`` of
        :attr:`params` (1-based, as ``W^(l)``) is row ``param_rows[l − 1]``."""
        return list(self._param_rows)

    def array_span(self, r: int, name: str) -> tuple[int, tuple[int, ...]]:
        """``(offset, shape)`` of row ``r``'s parameter array ``name`` in :attr:`flat_params`."""
        arrays = self._layout["arrays"][r]
        if name not in arrays:
            raise ValueError(f"name: row {r} ({type(self._rows[r]).__name__}) has parameter "
                             f"arrays {', '.join(arrays) or 'none'}; got {name!r}")
        return arrays[name]

    def sharing(self, input_shape: Sequence[int]) -> "Network":
        """The same layers on examples of another ``input_shape``, reading this network's
        parameters and state -- the same flat vectors, not copies (a language model built for
        one position decodes with the weights being trained: :mod:`loopprop.generate`). The
        layers' parameter shapes must not depend on the input shape."""
        other = Network(copy.deepcopy(self.layers), loss=self.loss, input_shape=input_shape,
                        dtype=self.dtype)
        if other._layout["params"] != self._layout["params"] or \
                other._layout["state"] != self._layout["state"]:
            raise ValueError(f"input_shape: on {tuple(input_shape)} the layers hold "
                             f"{other._layout['params']} parameters, on {self.input_shape} "
                             f"{self._layout['params']}: they cannot share them")
        other._theta, other._state = self._theta, self._state
        other._bind_views()
        return other

    def last_batch(self, r: int, which: str) -> np.ndarray:
        """Row ``r``'s ``"input"``, ``"output"``, ``"input_grad"`` or ``"output_grad"`` from the
        last :meth:`forward` (and :meth:`backward`), shaped ``(*shape, m)``: a view."""
        if self._cache is None:
            raise RuntimeError("no forward pass cached: call net.forward(X) first")
        _checks.check_choice(which, "which", ("input", "output", "input_grad", "output_grad"))
        buf, m, _ = self._cache
        row = self._rows[r]
        off = int(self._plan[r, _plan.IN_OFF if which.startswith("input") else _plan.OUT_OFF])
        shape = row.in_shape if which.startswith("input") else row.out_shape
        flat = buf.dacts if which.endswith("grad") else buf.acts
        size = int(np.prod(shape))
        return flat[off * m:(off + size) * m].reshape(*shape, m)

    def __repr__(self) -> str:
        if self.layer_sizes is not None:
            layers = "-".join(str(s) for s in self.layer_sizes)
            return (f"Network({layers}, activations={self.activations}, loss={self.loss!r}, "
                    f"dtype={self.dtype.name}, params={self._theta.size})")
        kinds = ", ".join(type(layer).__name__ for layer in self.layers)
        return (f"Network([{kinds}], input_shape={self.input_shape}, loss={self.loss!r}, "
                f"dtype={self.dtype.name}, params={self._theta.size})")

    # -- forward / backward / step (docs/formulas.md §5, §10, §12) ----------------------------

    def _fused(self) -> bool:
        return self.loss != "mse"

    def forward(self, X: Any, *, logits: bool = False, carry: bool = False) -> np.ndarray:
        """Forward pass in the network's mode (:meth:`train`, the default: dropout active, batch
        norm on the batch's statistics, updating its running ones; :meth:`eval`); caches every
        layer's output for :meth:`backward` (§6, §14). Returns the output activations
        ``A^(L)`` ``(n_L, m)`` (a copy); with ``logits=True`` the input of the output
        activation instead, ``Z^(L)`` (a softmax's logits, ``(V, T, m)`` for a language
        model).

        ``carry=True`` continues the sequences of the previous ``forward`` call: recurrent
        layers (:class:`~loopprop.layers.LSTM` …) start from the states that call ended with
        instead of zeros, so a long sequence may be fed window by window (``X`` must hold as
        many sequences as that call's). :meth:`backward` still stops at the window's start:
        truncated backpropagation through time."""
        if logits and not isinstance(self._rows[-1], Activation):
            raise ValueError(f"logits: the last layer is {type(self._rows[-1]).__name__}, not an "
                             "activation; its output is what forward returns")
        X = self.check_inputs(X)
        m = X.shape[1]
        if self.training:
            self._check_batch_norm_batch(m, "X")
        if not isinstance(carry, bool):
            raise TypeError(f"carry: expected True or False, got {_checks._describe(carry)}")
        if carry:
            if self._cache is None or self._cache[1] != m:
                before = ("no forward pass was made" if self._cache is None else
                          f"the previous forward pass had {self._cache[1]} sequences")
                raise ValueError(f"carry=True continues the previous forward pass's sequences, "
                                 f"but {before} and X has {m}: give X one column per sequence "
                                 "of that pass, or carry=False to start from zero states")
            buf = self._cache[0]
        else:
            buf = _plan.Buffers(self._layout, m, self.dtype)
        buf.acts[:X.size] = X.ravel()
        self._forward_count += 1
        _train._forward_batch(self._plan, self._fplan, self._flat(buf), m, len(self._rows),
                              self.training, self._forward_seed(), carry, 0, m,
                              use_threads(True), self._table())
        self._cache = (buf, m, self.training)
        if logits:
            r = len(self._rows) - 1
            Z = self._region(buf, int(self._plan[r, _plan.IN_OFF]),
                             int(self._plan[r, _plan.IN_SIZE]), m)
            return Z.reshape(*self._rows[r].in_shape, m).copy()
        return self._output_view(buf, m).reshape(*self.output_shape, m).copy()

    def _forward_seed(self) -> int:
        """The dropout seed of a forward pass: ``seed·2²⁰ + count`` (the seed hashed into 37 bits
        when it is larger), below 2⁵⁷: the forward pass gives row ``r`` the seed ``64·s + r``,
        which must fit 64 bits with the JIT off as well (Python integers do not wrap)."""
        return (_checks.stream_seed(self.seed, 37) * 1048576 + self._forward_count) % (1 << 57)

    def _table(self, decode: bool = False):
        """The compiled row functions of this network's kinds for its dtype
        (:func:`loopprop.dispatch.table`: compiled, or loaded from the cache, on first use),
        kept for this plan and dtype (finding it again took 7 µs, twice per ``fit``)."""
        key = (id(self._plan), self.dtype, decode)
        kept = self.__dict__.get("_kept_table")
        if kept is None or kept[0] != key:
            kept = self._kept_table = (key, _dispatch.table(self._plan[:, _plan.KIND],
                                                            self.dtype, decode))
        return kept[1]

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
        Yf, labels, one_hot = self.check_targets(Y, m)
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
            _train._sgd_threads(self._theta, self._grad, lr, use_threads(True))
            return lr
        if self.optimizer is None:
            raise RuntimeError("step(): no optimizer chosen; call net.set_optimizer(name, lr=…) "
                               "first, or net.step(lr) for plain gradient descent")
        return self.optimizer.step(self._theta, self._grad)

    # -- evaluation --------------------------------------------------------------------------

    def evaluate_checked(self, X, Yf, labels, one_hot, training: bool = False
                          ) -> dict[str, Any]:
        """The loss (and outputs) over ``X`` in chunks, from inputs already checked: ``X`` as
        :meth:`check_inputs` returns it, ``(Yf, labels, one_hot)`` as :meth:`check_targets`
        does. Evaluation mode unless ``training`` (one chunk then: batch statistics are the
        whole batch's). Returns ``{"loss", "output"}`` and, for classification, ``"accuracy"``;
        the network is unchanged."""
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
            Data(X, Yf, labels, np.arange(n, dtype=np.int64), one_hot, False), chunk, out, training,
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
        X = self.check_inputs(X)
        labels = self._mse_labels(y, X.shape[1])
        if labels is None:
            ev = self.evaluate_checked(X, *self.check_targets(y, X.shape[1], "y"))
        else:
            Y = np.eye(self.output_size, dtype=self.dtype)[:, labels]
            ev = self.evaluate_checked(X, *self.check_targets(Y, X.shape[1], "y"))
            ev["accuracy"] = float(np.mean(ev["output"].argmax(axis=0) == labels))
        ev.pop("output")
        return ev

    def predict(self, X: Any) -> np.ndarray:
        """The output activations ``A^(L)`` for ``X``: an array of shape ``(n_L, n)``, one column
        per example (loopprop's layout, not scikit-learn's rows).

        For a softmax (cross-entropy) network each column holds the class probabilities and sums
        to 1; for a sigmoid (binary cross-entropy) network each entry is ``P(y = 1)``; for mse
        the raw outputs. Use :meth:`predict_classes` for class labels ``(n,)``.
        """
        X = self.check_inputs(X)
        n, nL = X.shape[1], self.output_size
        dummy = (np.zeros((nL, n), self.dtype) if self.loss != "cross_entropy"
                 else np.zeros((0, n), self.dtype))
        if self.loss == "binary_cross_entropy":
            dummy[:] = 0.5
        positions = int(np.prod(self.output_shape[1:]))
        return self.evaluate_checked(X, dummy, np.zeros((positions, n), np.int64),
                                      False)["output"]

    def predict_classes(self, X: Any) -> np.ndarray:
        """Class labels: ``(n,)`` integers, the argmax of each column of :meth:`predict`
        (softmax, or mse on one-hot targets); for a sigmoid output, ``A > ½`` per output:
        ``(n_L, n)`` of 0/1 (``(1, n)`` for one output)."""
        A = self.predict(X)
        if self.loss == "binary_cross_entropy" or (A.shape[0] == 1):
            return (A > 0.5).astype(np.int64)
        return A.argmax(axis=0)

    # -- persistence and display -------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write one ``.npz`` file: the layers (kind and hyperparameters), input shape, loss,
        dtype, the weights, the state, :attr:`metadata` and a format version
        (:mod:`loopprop.model_file`). The file is written atomically: a failed save leaves what
        was there."""
        _model_file.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Network":
        """Read a file written by :meth:`save`.

        A missing file raises ``FileNotFoundError``; a damaged or foreign file (not a ``.npz``,
        a plain ``.npy`` array, a text file, metadata that does not describe a network, weights
        that do not fit the architecture) raises :class:`ModelFileError` naming the file and
        what is wrong. The metadata and the size of the stored weights are checked against each
        other before anything is allocated, and nothing is half-loaded.
        """
        return _model_file.load(cls, path)

    def summary(self, print_it: bool = True, batch_size: int | None = None) -> str:
        """One row per layer: kind, output shape (per example), parameters and the values its
        backward pass needs beyond the activation buffer (per example: docs/formulas.md, "What
        each layer caches"); then, once per kind, the forward and backward kernels it runs.
        With ``batch_size``, a last line gives the memory of the activations and caches for a
        batch of that size. At most 100 columns. Printed, and returned
        (:mod:`loopprop.summary`)."""
        from .summary import summary

        text = summary(self, batch_size)
        if print_it:
            print(text)
        return text

    def to_mermaid(self, kind: str = "network", batch_size: int | None = None) -> str:
        """A Mermaid diagram of this network (docs/formulas.md §13–§14): ``kind`` in workflow,
        neuron, network, cache; ``batch_size`` adds each cache's memory for a batch of that
        size to the cache diagram. See :mod:`loopprop.diagrams`."""
        from .diagrams import to_mermaid

        return to_mermaid(self, kind, batch_size)


__all__ = ["Network", "ModelFileError", "FORMAT_VERSION"]
