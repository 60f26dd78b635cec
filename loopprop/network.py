"""``Network``: dense layers with cached activations, forward/backward/zero_grad/step, fit,
save/load (guide §6, §10, §12, §14).

Parameters and gradients live in two flat buffers (see :mod:`loopprop.train`); ``params`` and
``grads`` hand out live ``(W, b)`` views into them, so ``net.params[0][0][i, j]`` *is* the weight
the compiled epoch updates. Examples are columns, as in the guide: ``X`` is
``(n_features, n_samples)``.
"""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from typing import Any, Sequence

import numpy as np

from . import _checks
from ._jit import use_threads
from . import train as _train
from .kernels.activations import CODES
from .kernels.dense import _transpose

FORMAT_VERSION = 1
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
    out = {"layer_sizes": sizes}
    for key, kind, default in (("activations", list, None), ("loss", str, None),
                               ("dtype", str, None), ("seed", int, 0), ("init", str, "he"),
                               ("alpha", (int, float), 0.01)):
        value = meta.get(key, default)
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            raise ModelFileError(f"{name}: the field {key!r} is missing or has the wrong type "
                                 f"({value!r}): the file is corrupted")
        out[key] = value
    if out["dtype"] not in ("float32", "float64"):
        raise ModelFileError(f"{name}: dtype must be 'float32' or 'float64', got "
                             f"{out['dtype']!r}: the file is corrupted")
    return out


class Network:
    """A fully connected network trained by backpropagation in explicit loops.

    Parameters
    ----------
    layer_sizes : ``[n_0, n_1, …, n_L]``: input features, then each layer's neurons
    activations : one name per layer (``L`` names) from identity, sigmoid, tanh, relu,
        leaky_relu, softmax
    loss : ``"mse"``, ``"cross_entropy"`` (needs a softmax output; fused ``P − Y``) or
        ``"binary_cross_entropy"`` (needs a sigmoid output; fused ``σ(Z) − Y``)
    dtype : ``"float64"`` or ``"float32"``
    seed : seeds the initial weights
    init : ``"he"`` (``N(0, 2/n_in)``, for ReLU) or ``"xavier"`` (``N(0, 2/(n_in + n_out))``)
    alpha : slope of leaky_relu for z ≤ 0

    Example
    -------
    >>> net = Network([64, 32, 10], ["relu", "softmax"], "cross_entropy")
    >>> history = net.fit(X_train, y_train, epochs=20, batch_size=32, lr=0.1)  # doctest: +SKIP
    """

    def __init__(self, layer_sizes: Sequence[int], activations: Sequence[str], loss: str, *,
                 dtype: str | np.dtype = "float64", seed: int = 0, init: str = "he",
                 alpha: float = 0.01) -> None:
        sizes = list(layer_sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"layer_sizes: expected at least two sizes [n_inputs, n_outputs], got {sizes!r}"
            )
        for s in sizes:
            _checks.check_positive_int(s, "layer_sizes entries")
        acts = list(activations) if not isinstance(activations, str) else [activations]
        if len(acts) != len(sizes) - 1:
            raise ValueError(
                f"activations: expected one name per layer ({len(sizes) - 1} for layer_sizes "
                f"{sizes}), got {len(acts)}: {acts!r}"
            )
        for a in acts:
            _checks.check_choice(a, "activations", CODES)
        _checks.check_choice(loss, "loss", LOSSES)
        if loss == "cross_entropy" and acts[-1] != "softmax":
            raise ValueError(
                f"loss='cross_entropy' is fused with a softmax output (dZ = P − Y); the last "
                f"activation is {acts[-1]!r}: use 'softmax'"
            )
        if loss == "binary_cross_entropy" and acts[-1] != "sigmoid":
            raise ValueError(
                f"loss='binary_cross_entropy' is fused with a sigmoid output (dZ = σ(Z) − Y); "
                f"the last activation is {acts[-1]!r}: use 'sigmoid'"
            )
        if "softmax" in acts[:-1]:
            raise ValueError("activations: softmax is only supported on the output layer")
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}") from None
        if dt not in _checks.FLOAT_DTYPES:
            raise TypeError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
        _checks.check_choice(init, "init", INITS)
        seed = _checks.check_int(seed, "seed", 0, "non-negative integer seed")
        alpha = _checks.finite_float(alpha, "alpha", " such as 0.01 (the leaky-ReLU slope)")
        self.layer_sizes = [int(s) for s in sizes]
        self.activations = acts
        self.loss = loss
        self.dtype = dt
        self.seed = int(seed)
        self.init = init
        self.alpha = float(alpha)
        self._sizes = np.array(self.layer_sizes, dtype=np.int64)
        self._codes = np.array([CODES[a] for a in acts], dtype=np.int64)
        offs, off = [], 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            offs.append(off)
            off += n_out * n_in + n_out
        self._w_off = np.array(offs, dtype=np.int64)
        self._theta = np.zeros(off, dtype=dt)
        self._grad = np.zeros(off, dtype=dt)
        self._cache: tuple | None = None
        # fit's workspaces (the per-batch buffers, and the transposed X up to _KEEP_XT_BYTES),
        # kept between fit calls of the same shapes: a loop of fit(..., epochs=1) on a small
        # dataset then allocates nothing
        self._fit_scratch: dict[str, Any] = {}
        self.history: dict[str, list] = {}
        self._initialize()

    # -- parameters -------------------------------------------------------------------------

    def _initialize(self) -> None:
        rng = np.random.default_rng(self.seed)
        for (W, b), n_in, n_out in zip(self.params, self.layer_sizes[:-1], self.layer_sizes[1:]):
            var = 2.0 / n_in if self.init == "he" else 2.0 / (n_in + n_out)
            W[...] = rng.standard_normal(W.shape) * np.sqrt(var)
            b[...] = 0.0

    def _views(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for off, n_in, n_out in zip(self._w_off, self.layer_sizes[:-1], self.layer_sizes[1:]):
            W = flat[off:off + n_out * n_in].reshape(n_out, n_in)
            b = flat[off + n_out * n_in:off + n_out * n_in + n_out]
            out.append((W, b))
        return out

    @property
    def params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(W, b), …]`` per layer: live views, ``W (n_l, n_{l−1})``, ``b (n_l,)``."""
        return self._views(self._theta)

    @property
    def grads(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``[(dW, db), …]`` per layer: live views of the accumulated gradients."""
        return self._views(self._grad)

    @property
    def n_layers(self) -> int:
        return len(self.activations)

    def __repr__(self) -> str:
        layers = "-".join(str(s) for s in self.layer_sizes)
        return (f"Network({layers}, activations={self.activations}, loss={self.loss!r}, "
                f"dtype={self.dtype.name}, params={self._theta.size})")

    # -- input checks -----------------------------------------------------------------------

    def _check_X(self, X: Any, name: str = "X") -> np.ndarray:
        n0 = self.layer_sizes[0]
        hint = f"X has shape (n_features, n_samples) = ({n0}, m): examples are columns"
        X = _checks.as_float_array(X, name, 2, check_finite=False,
                                   hint=hint + f"; use {name}.reshape({n0}, -1)")
        if X.shape[0] != n0:
            if X.shape[1] == n0:
                raise ValueError(
                    f"{name}: expected shape ({n0}, n_samples), got {X.shape}: rows look like "
                    f"examples, but loopprop follows the guide and puts examples in columns; "
                    f"pass {name}.T"
                )
            raise ValueError(
                f"{name}: expected {n0} rows (one per input feature; layer_sizes[0] = {n0}), "
                f"got shape {X.shape}"
            )
        if X.shape[1] == 0:
            raise ValueError(f"{name}: no examples (shape {X.shape})")
        # checked for NaN/Inf after converting (a float64 beyond float32's range becomes Inf)
        return _checks.to_dtype(X, self.dtype, name,
                                fix="a network's inputs must be finite: clean or impute them")

    def _check_targets(self, Y: Any, m: int, name: str = "Y"):
        """Targets as (Y float (rows, m), labels int64 (m,), one_hot flag), checked by the same
        rules as the loss functions."""
        shape = (self.layer_sizes[-1], m)
        out = "the network's output"
        if self.loss == "cross_entropy":
            Yv, is_labels = _checks.class_targets(Y, name, shape, self.dtype, out)
            if is_labels:
                return np.zeros((0, m), self.dtype), Yv, False
            return Yv, np.zeros(m, np.int64), True
        Y = np.asarray(Y)
        if Y.ndim == 1 and shape == (1, Y.shape[0]):
            Y = Y.reshape(1, m)  # one output neuron: a plain vector of targets is unambiguous
        check = _checks.binary_targets if self.loss == "binary_cross_entropy" else \
            _checks.targets_like
        return check(Y, name, shape, self.dtype, out), np.zeros(m, np.int64), False

    # -- forward / backward / step (guide §6, §10, §12) -----------------------------------

    def forward(self, X: Any) -> np.ndarray:
        """Forward pass; caches every ``Z^(l)`` and ``A^(l)`` for :meth:`backward` (§6, §14).

        Returns the output activations ``A^(L)`` ``(n_L, m)`` (a copy).
        """
        X = self._check_X(X)
        m = X.shape[1]
        buf = _train.Buffers(self._sizes, m, self.dtype)
        buf.Abuf[:X.size] = X.ravel()
        _train._forward_batch(self._theta, self._sizes, self._w_off, self._codes, self.alpha,
                              buf.Zbuf, buf.Abuf, buf.ATbuf, m, use_threads(True), True,
                              False)
        self._cache = (buf, m)
        return self.activations_cache()[1][-1].copy()

    def activations_cache(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``(Zs, As)`` of the last forward pass: ``Zs[l−1] = Z^(l)``, ``As[l] = A^(l)``."""
        if self._cache is None:
            raise RuntimeError("no forward pass cached: call net.forward(X) first")
        buf, m = self._cache
        Zs, As = [], []
        a_off = z_off = 0
        for q, n in enumerate(self.layer_sizes):
            As.append(buf.Abuf[a_off:a_off + n * m].reshape(n, m))
            a_off += n * m
            if q > 0:
                Zs.append(buf.Zbuf[z_off:z_off + n * m].reshape(n, m))
                z_off += n * m
        return Zs, As

    def backward(self, Y: Any) -> float:
        """Backward pass from the cached forward pass; returns the loss (mean over the batch).

        Gradients **accumulate** into :attr:`grads` (guide §12): call :meth:`zero_grad` between
        steps. ``Y``: integer labels ``(m,)`` or one-hot ``(n_L, m)`` for cross-entropy,
        ``(n_L, m)`` targets otherwise.
        """
        if self._cache is None:
            raise RuntimeError("backward() needs a forward pass first: call net.forward(X)")
        buf, m = self._cache
        Yf, labels, one_hot = self._check_targets(Y, m)
        Zs, As = self.activations_cache()
        nL = self.layer_sizes[-1]
        dZ = buf.dbuf0[:nL * m].reshape(nL, m)
        loss = _train._loss_seed(dZ, Zs[-1], As[-1], self._codes[-1],
                                 _train.LOSS_CODES[self.loss], self.alpha, Yf, labels, one_hot,
                                 buf.col1, buf.col2)
        _train._backward_batch(self._theta, self._grad, self._sizes, self._w_off, self._codes,
                               self.alpha, buf.Zbuf, buf.Abuf, buf.ATbuf, buf.dbuf0, buf.dbuf1,
                               buf.work_WT, buf.work_dZT, m, use_threads(True), False)
        return float(loss)

    def zero_grad(self) -> None:
        """Reset every accumulated gradient to zero (guide §12)."""
        self._grad[:] = 0.0

    def step(self, lr: float) -> None:
        """SGD update of every parameter: ``θ ← θ − lr·dθ`` (guide §10)."""
        _train._sgd(self._theta, self._grad, _checks.check_lr(lr))

    # -- training and evaluation ------------------------------------------------------------

    def fit(self, X: Any, y: Any, *, epochs: int = 10, batch_size: int = 32, lr: float = 0.1,
            optimizer: str = "sgd", shuffle: bool = True, seed: int = 0, progress: bool = True,
            validation: tuple[Any, Any] | None = None, momentum: float = 0.9,
            beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
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
        optimizer : ``"sgd"``, ``"momentum"`` (``momentum`` = β in [0, 1)) or ``"adam"``
            (``beta1``, ``beta2`` in [0, 1), ``eps`` > 0)
        shuffle, seed : reshuffle the examples each epoch from ``seed`` (same seed, same thread
            count: bitwise-identical weights)
        progress : show a progress bar over epochs with the running loss
        validation : optional ``(X_val, y_val)`` evaluated after every epoch

        Returns
        -------
        history : dict of per-epoch lists: ``loss``, ``accuracy`` (classification), ``val_loss``,
            ``val_accuracy`` (with validation), ``grad_norm`` (mean ‖dW^(l)‖ per layer), ``time``.
        """
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
        X = self._check_X(X)
        n = X.shape[1]
        Yf, labels, one_hot = self._check_targets(y, n, "y")
        val = None
        if validation is not None:
            if not (isinstance(validation, (tuple, list)) and len(validation) == 2):
                raise TypeError("validation: expected a pair (X_val, y_val)")
            Xv = self._check_X(validation[0], "validation X")
            val = (Xv, *self._check_targets(validation[1], Xv.shape[1], "validation y"))
        bs = min(batch_size, n)
        scratch = self._fit_scratch
        buf = scratch.get("buffers")
        if buf is None or buf.m != bs:
            buf = scratch["buffers"] = _train.Buffers(self._sizes, bs, self.dtype)
        beta = momentum if optimizer == "momentum" else beta1
        opt = _train.OptimizerState(optimizer, self._theta.size, self.dtype, beta, beta2, eps)
        perm = np.arange(n, dtype=np.int64)
        Ybuf = np.zeros(Yf.shape[0] * bs, self.dtype)
        labbuf = np.zeros(bs, np.int64)
        par = use_threads(parallel)
        classify = self.loss != "mse"
        per_example = n * (self.layer_sizes[-1] if self.loss == "binary_cross_entropy" else 1)
        hist: dict[str, list] = {"loss": [], "grad_norm": [], "time": []}
        if classify:
            hist["accuracy"] = []
        if val is not None:
            hist["val_loss"] = []
            if classify:
                hist["val_accuracy"] = []
        bar = _train.Progress(epochs, progress)
        n_batches = -(-n // bs)
        rng = np.random.default_rng(seed) if shuffle else None
        XT = scratch.get("XT")
        if XT is None or XT.shape[0] != n:
            XT = scratch["XT"] = np.empty((n, self.layer_sizes[0]), self.dtype)
        _transpose(XT, X)  # one example per row: minibatch gathers copy rows
        try:
            for epoch in range(1, epochs + 1):
                t0 = time.perf_counter()
                gnorm = np.zeros(self.n_layers, np.float64)
                shuffle_seed = int(rng.integers(0, 2**31 - 1)) if rng is not None else -1
                total, correct, opt.t = _train._train_epoch(
                    self._theta, self._grad, opt.state1, opt.state2, self._sizes, self._w_off,
                    self._codes, self.alpha, _train.LOSS_CODES[self.loss], XT, Yf, labels,
                    one_hot, perm, shuffle_seed, bs, _train.OPTIMIZERS[optimizer], lr,
                    opt.beta1, opt.beta2, opt.eps, opt.t, buf.Zbuf, buf.Abuf, buf.ATbuf,
                    buf.dbuf0, buf.dbuf1, buf.work_WT, buf.work_dZT, Ybuf, labbuf, buf.col1,
                    buf.col2, gnorm, par)
                hist["time"].append(time.perf_counter() - t0)
                hist["loss"].append(total / n)
                hist["grad_norm"].append(list(gnorm / n_batches))
                info = {"loss": total / n}
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
                self._check_diverged(epoch, total / n, lr)
                bar.update(epoch, info)
        finally:
            bar.close()
            if XT.nbytes > _KEEP_XT_BYTES:
                scratch.pop("XT", None)  # a large copy of the data is not worth keeping
        self.history = hist
        return hist

    def _check_diverged(self, epoch: int, loss: float, lr: float) -> None:
        """Raise ``FloatingPointError`` when the loss, a parameter or a gradient is NaN or Inf
        after ``epoch``, naming the first layer whose parameters or gradients are bad.

        The loss alone is not enough: a NaN weight can hide behind a finite loss (an output
        that does not depend on it, or an activation that maps it away)."""
        from ._checks import _all_finite

        bad_theta = not _all_finite(self._theta)
        bad_grad = not _all_finite(self._grad)
        if math.isfinite(loss) and not bad_theta and not bad_grad:
            return
        where = ""
        for l, ((W, b), (dW, db)) in enumerate(zip(self.params, self.grads), 1):
            for what, arrays in (("parameters", (W, b)), ("gradients", (dW, db))):
                if not all(np.isfinite(a).all() for a in arrays):
                    where = f"; the {what} of layer {l} (W^({l}), b^({l})) hold NaN or Inf"
                    break
            if where:
                break
        raise FloatingPointError(
            f"training diverged at epoch {epoch}: the training loss is {loss:g}{where}. The "
            f"learning rate lr={lr:g} is probably too large; try lr={lr / 10:g}"
        )

    def _evaluate_checked(self, X, Yf, labels, one_hot) -> dict[str, Any]:
        n = X.shape[1]
        chunk = min(n, 1024)
        buf = _train.Buffers(self._sizes, chunk, self.dtype)
        out = np.empty((self.layer_sizes[-1], n), self.dtype)
        total, correct = _train._evaluate(
            self._theta, self._sizes, self._w_off, self._codes, self.alpha,
            _train.LOSS_CODES[self.loss], X, Yf, labels, one_hot, chunk, buf.Zbuf, buf.Abuf,
            buf.ATbuf, buf.dbuf0, buf.dbuf1, buf.col1, buf.col2, out, 1)
        result: dict[str, Any] = {"loss": total / n, "output": out}
        if self.loss == "cross_entropy":
            result["accuracy"] = correct / n
        elif self.loss == "binary_cross_entropy":
            result["accuracy"] = correct / (n * self.layer_sizes[-1])
        return result

    def evaluate(self, X: Any, y: Any) -> dict[str, float]:
        """``{"loss": …, "accuracy": …}`` on ``(X, y)`` (accuracy for classification losses)."""
        X = self._check_X(X)
        ev = self._evaluate_checked(X, *self._check_targets(y, X.shape[1], "y"))
        ev.pop("output")
        return ev

    def predict(self, X: Any) -> np.ndarray:
        """The output activations ``A^(L)`` for ``X``: an array of shape ``(n_L, n)``, one column
        per example (the guide's layout, not scikit-learn's rows).

        For a softmax (cross-entropy) network each column holds the class probabilities and sums
        to 1; for a sigmoid (binary cross-entropy) network each entry is ``P(y = 1)``; for mse
        the raw outputs. Use :meth:`predict_classes` for class labels ``(n,)``.
        """
        X = self._check_X(X)
        n, nL = X.shape[1], self.layer_sizes[-1]
        dummy = (np.zeros((nL, n), self.dtype) if self.loss != "cross_entropy"
                 else np.zeros((0, n), self.dtype))
        if self.loss == "binary_cross_entropy":
            dummy[:] = 0.5
        return self._evaluate_checked(X, dummy, np.zeros(n, np.int64), False)["output"]

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
        """Write one ``.npz`` file: architecture, dtype, weights and a format version."""
        meta = {
            "format": "loopprop.Network",
            "format_version": FORMAT_VERSION,
            "layer_sizes": self.layer_sizes,
            "activations": self.activations,
            "loss": self.loss,
            "dtype": self.dtype.name,
            "seed": self.seed,
            "init": self.init,
            "alpha": self.alpha,
            "n_params": int(self._theta.size),
        }
        with open(path, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), theta=self._theta)

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
                meta = json.loads(str(data["meta"][()]))
                meta = _check_meta(meta, name)
                n_params = sum(o * i + o for i, o in zip(meta["layer_sizes"][:-1],
                                                         meta["layer_sizes"][1:]))
                theta_entry = data.zip.getinfo("theta.npy")
                # the stored array's header says its shape before any of it is read
                with data.zip.open(theta_entry) as fh:
                    version = np.lib.format.read_magic(fh)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read_header is None:
                        raise ModelFileError(f"{name}: the weights are stored in .npy format "
                                             f"{version}, which Network.save never writes")
                    shape, _, dtype = read_header(fh)
                if shape != (n_params,) or dtype != np.dtype(meta["dtype"]):
                    raise ModelFileError(
                        f"{name}: the stored weights have shape {shape} and dtype {dtype}, the "
                        f"architecture {meta['layer_sizes']} needs ({n_params},) "
                        f"{meta['dtype']}: the file is corrupted"
                    )
                theta = np.array(data["theta"])
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
                json.JSONDecodeError) as exc:
            raise ModelFileError(
                f"{name}: cannot read a loopprop model ({type(exc).__name__}: {exc}); the file "
                "is truncated, corrupted or not a model saved by Network.save"
            ) from exc
        try:
            net = cls(meta["layer_sizes"], meta["activations"], meta["loss"],
                      dtype=meta["dtype"], seed=meta["seed"], init=meta["init"],
                      alpha=meta["alpha"])
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{name}: the architecture in the file is invalid: {exc}") \
                from exc
        if not np.isfinite(theta).all():
            raise ModelFileError(f"{name}: the weights contain NaN or Inf: the file is corrupted")
        net._theta[:] = theta
        return net

    # -- study tools ------------------------------------------------------------------------

    def to_mermaid(self, kind: str = "network") -> str:
        """A Mermaid diagram of this network (guide §13–§14); see :mod:`loopprop.diagrams`."""
        from .diagrams import to_mermaid

        return to_mermaid(self, kind)


__all__ = ["Network", "ModelFileError", "FORMAT_VERSION"]
