"""Dense layers, activations, Flatten and Dropout."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .. import _checks
from ..kernels.activations import CODES
from ..kernels.dense import transposed_rows
from .base import Layer


class Dense(Layer):
    """A fully connected layer (docs/formulas.md §5):
    ``Z[i, k] = b[i] + Σ_j W[i, j] · A_prev[j, k]``.

    Parameters ``W (n_out, n_in)``, ``b (n_out,)``; input ``(n_in,)`` per example, or
    ``(n_in, T)``: a sequence, the same layer applied at every position ``t``
    (``Z[i, t, k] = b[i] + Σ_j W[i, j] · A_prev[j, t, k]``, the product on the ``(n_in, T·m)``
    view: GPT's projections and MLP). Caches ``A_prevᵀ`` when the layer is small (its ``dW``
    reads it; :func:`loopprop.kernels.dense.transposed_rows`).
    """

    kernels = ("dense._dense_layer_forward", "dense._dense_layer_backward")
    settings = ("n_in", "n_out", "positions")
    cache_parts = ("A_prevT",)

    def __init__(self, n_out: int) -> None:
        self.n_out = _checks.check_positive_int(n_out, "n_out")

    def _build(self, in_shape):
        if len(in_shape) != 2:  # (n_in, T): applied at every position
            self._need(in_shape, 1, "a vector (n_in,) or a sequence (n_in, T)")
        self.n_in = in_shape[0]
        self.positions = int(np.prod(in_shape[1:]))
        # A_prevᵀ, for a layer small enough to transpose its input (large ones never read it)
        self.cache_size = self.n_in * transposed_rows(self.n_out, self.n_in, self.positions, 1)
        return (self.n_out, *in_shape[1:])

    def param_shapes(self):
        return [(self.n_out, self.n_in), (self.n_out,)]

    def part_sizes(self):
        return {"A_prevT": self.cache_size}

    def init_params(self, views, rng, init):
        W, b = views
        var = 2.0 / self.n_in if init == "he" else 2.0 / (self.n_in + self.n_out)
        W[...] = rng.standard_normal(W.shape) * np.sqrt(var)
        b[...] = 0.0

    def config(self):
        return {"n_out": self.n_out}

    def formulas(self, x, y, l):
        return {"forward": f"{y} = W{l}·{x} + b{l}",
                "backward": [f"dW{l} = d{y}·{x}ᵀ", f"db{l} = Σ_k d{y}", f"d{x} += W{l}ᵀ·d{y}"],
                "cache": f"{x} (read by dW{l})"}


class Activation(Layer):
    """An elementwise activation ``A = f(Z)`` (docs/formulas.md §8), or softmax over each
    example."""

    kernels = ("activations._activation_forward_tuned", "activations._activation_backward_tuned")
    #: the activation's name in :data:`loopprop.kernels.activations.CODES`
    function: ClassVar[str] = "identity"
    #: the activation's code, and the features (the first axis: softmax runs over them at
    #: every other index)
    settings = ("code", "features")

    def _build(self, in_shape):
        return in_shape

    def ints(self):
        return [CODES[self.function], self.in_shape[0]]

    def floats(self):
        return [getattr(self, "alpha", 0.01)]

    def formulas(self, x, y, l):
        f = self.function
        return {"forward": f"{y} = {f}({x})", "backward": [f"d{x} += d{y} ⊙ {f}′({x})"],
                "cache": f"{x} and {y} (read by {f}′)"}


class Identity(Activation):
    """``A = Z``."""

    function = "identity"


class Sigmoid(Activation):
    """``A = σ(Z) = 1 / (1 + e^−Z)`` (fused with binary cross-entropy when it is last)."""

    function = "sigmoid"


class Tanh(Activation):
    """``A = tanh Z``."""

    function = "tanh"


class ReLU(Activation):
    """``A = max(Z, 0)``."""

    function = "relu"


class LeakyReLU(Activation):
    """``A = Z if Z > 0 else α·Z``."""

    function = "leaky_relu"

    def __init__(self, alpha: float = 0.01) -> None:
        self.alpha = _checks.finite_float(alpha, "alpha", " such as 0.01 (the leaky slope)")

    def config(self):
        return {"alpha": self.alpha}


class GELU(Activation):
    """``A = Z·Φ(Z)``, exact (erf)."""

    function = "gelu"


class GELUTanh(Activation):
    """``A = ½Z(1 + tanh(√(2/π)(Z + 0.044715Z³)))``, GPT-2's approximation."""

    function = "gelu_tanh"


class Softmax(Activation):
    """Softmax over each example's vector (fused with cross-entropy when it is last:
    ``dZ = (P − Y)/m``, docs/formulas.md §9); over the first axis at every position of a sequence
    ``(V, T)`` (a language model's next-token distributions)."""

    function = "softmax"

    def _build(self, in_shape):
        if len(in_shape) != 2:
            self._need(in_shape, 1, "a vector of class scores (n,) or one per position (n, T)")
        return in_shape


#: activation name -> layer class (the legacy form ``Network(sizes, activations, loss)``)
ACTIVATIONS = {cls.function: cls for cls in (Identity, Sigmoid, Tanh, ReLU, LeakyReLU, GELU,
                                             GELUTanh, Softmax)}


class Flatten(Layer):
    """``(C, H, W)`` per example -> ``(C·H·W,)`` in C order. With examples on the last axis
    the memory is already in that order: the output is the input, seen as a matrix."""

    kernels = ("(a view: no copy)", "(a view: no copy)")
    aliases_input = True

    def _build(self, in_shape):
        return (int(np.prod(in_shape)),)

    def formulas(self, x, y, l):
        return {"forward": f"{y} = {x} seen as a vector (no copy)",
                "backward": [f"d{x} = d{y} seen as an image (no copy)"], "cache": ""}


class Dropout(Layer):
    """Inverted dropout: in training each value is kept with probability ``1 − p`` and scaled
    by ``1/(1 − p)``; in evaluation the identity. The mask (the cache) is drawn from the
    epoch's seed, the batch and the layer: ``fit`` is reproducible for a seed."""

    kernels = ("dropout._dropout_forward", "dropout._dropout_backward")
    cache_parts = ("mask",)

    def __init__(self, p: float = 0.5) -> None:
        from ..kernels.dropout import check_p

        self.p = check_p(p)

    def _build(self, in_shape):
        self.cache_size = int(np.prod(in_shape))  # the mask
        return in_shape

    def random_in_training(self) -> bool:
        return self.p > 0

    def part_sizes(self):
        return {"mask": self.cache_size}

    def floats(self):
        return [self.p]

    def formulas(self, x, y, l):
        return {"forward": f"{y} = {x} ⊙ mask{l}, mask{l} ∈ {{0, 1/(1 − {self.p:g})}}",
                "backward": [f"d{x} += d{y} ⊙ mask{l}"], "cache": f"mask{l}"}

    def config(self):
        return {"p": self.p}
