"""What a :class:`~loopprop.Network` accepts, checked in Python before compiled code runs:
inputs ``X`` (features or images, examples last; token ids for a language model), targets and
labels by the rules of the network's loss, and batches that training-mode batch norm can
normalize. Each error names the argument, what was expected, what came, and the fix.

:class:`Inputs` is a part of ``Network`` (a mixin).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _checks
from .layers import BatchNorm


class Inputs:
    """``Network``'s input checks (:class:`loopprop.Network` inherits them)."""

    def check_inputs(self, X: Any, name: str = "X") -> np.ndarray:
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

    def check_targets(self, Y: Any, m: int, name: str = "Y"):
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

    def _check_batch_norm_batch(self, m: int, name: str) -> None:
        """Training-mode batch norm needs two values per channel (else the variance is 0)."""
        for layer in self._rows:
            if isinstance(layer, BatchNorm) and layer.per_example * m < 2:
                raise ValueError(
                    f"{name}: a batch of {m} example{'s' if m != 1 else ''} gives {layer!r} one "
                    "value per feature in training mode, which has no variance (PyTorch "
                    "refuses it too); use batches of at least 2, or net.eval() to normalize "
                    "with the running statistics")
