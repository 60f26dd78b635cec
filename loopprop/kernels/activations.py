"""Activation functions ``f`` and their derivatives ``f'`` as explicit loops (guide §8).

Forward, element by element (``Z``, ``A`` of shape ``(n, m)``; ``i`` neuron, ``k`` batch item)::

    A[i, k] = f(Z[i, k])

Backward, the first row of the §5 table (the ⊙ that §12's "missing activation derivative" forgets)::

    dZ[i, k] = dA[i, k] · f'(Z[i, k])

===========  ===================================  =========================================
name         f(z)                                 f'(z), written with a = f(z)
===========  ===================================  =========================================
identity     z                                    1
sigmoid      1 / (1 + e^-z)                       a·(1 − a)
tanh         tanh z                               1 − a²
relu         max(z, 0)                            1 if z > 0 else 0   (0 at z = 0, §8)
leaky_relu   z if z > 0 else α·z                  1 if z > 0 else α   (α at z = 0, §8)
softmax      e^{z_i} / Σ_j e^{z_j}  (per column)  Jacobian-vector product, see below
===========  ===================================  =========================================

Softmax couples the neurons of one example, so its backward pass is not elementwise: for column
``k``, ``dZ[i, k] = a_i · (dA[i, k] − Σ_j a_j · dA[j, k])``. Paired with cross-entropy this
collapses to ``P − Y`` (§9); :func:`loopprop.softmax_cross_entropy` uses that shortcut.

Inside compiled code the activation is an integer code chosen with ``if/elif`` (DESIGN.md
convention 6). Sigmoid branches on the sign of ``z`` so ``exp`` never overflows; softmax
subtracts the column maximum.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks
from .._jit import kernel

IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, SOFTMAX = range(6)

#: activation name -> integer code used inside compiled kernels
CODES: dict[str, int] = {
    "identity": IDENTITY,
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "softmax": SOFTMAX,
}


def activation_code(name: str, argname: str = "name") -> int:
    """The integer code of an activation name; unknown names list the valid ones."""
    return CODES[_checks.check_choice(name, argname, CODES)]


@kernel
def _sigmoid(z):
    """σ(z) = 1 / (1 + e^-z), branching on the sign so e^x never sees a large positive x."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@kernel
def _f(z, code, alpha):
    """f(z) for an elementwise activation code (softmax is handled per column)."""
    if code == SIGMOID:
        return _sigmoid(z)
    elif code == TANH:
        return math.tanh(z)
    elif code == RELU:
        return z if z > 0 else 0.0 * z
    elif code == LEAKY_RELU:
        return z if z > 0 else alpha * z
    return z


@kernel
def _fprime(z, a, code, alpha):
    """f'(z), written with the cached output a = f(z) where that is cheaper (guide §8)."""
    if code == SIGMOID:
        return a * (1.0 - a)
    elif code == TANH:
        return 1.0 - a * a
    elif code == RELU:
        return 1.0 if z > 0 else 0.0
    elif code == LEAKY_RELU:
        return 1.0 if z > 0 else alpha
    return 1.0


@kernel
def _softmax_columns(A, Z):
    """``A[i, k] = exp(Z[i, k] − max_j Z[j, k]) / Σ_j exp(Z[j, k] − max_j Z[j, k])``.

    Shapes: A, Z (n, m). Subtracting the column max keeps every exponent ≤ 0 (guide §8, §9).
    """
    n, m = Z.shape
    if n == 0:
        return
    for k in range(m):
        zmax = Z[0, k]
        for i in range(1, n):
            if Z[i, k] > zmax:
                zmax = Z[i, k]
        total = 0.0
        for i in range(n):
            e = math.exp(Z[i, k] - zmax)
            A[i, k] = e
            total += e
        inv = 1.0 / total
        for i in range(n):
            A[i, k] *= inv


@kernel
def _activation_forward(A, Z, code, alpha):
    """``A[i, k] = f(Z[i, k])`` (guide §5: A = f(Z)); softmax over each column.

    Shapes: A (n, m) written; Z (n, m). ``code`` from :data:`CODES`; ``alpha`` the leaky slope.
    """
    if code == SOFTMAX:
        _softmax_columns(A, Z)
        return
    n, m = Z.shape
    for i in range(n):
        for k in range(m):
            A[i, k] = _f(Z[i, k], code, alpha)


@kernel
def _activation_backward(dZ, dA, Z, A, code, alpha):
    """``dZ[i, k] = dA[i, k] · f'(Z[i, k])`` (guide §5, first row; §8 for f').

    Softmax: ``dZ[i, k] = A[i, k] · (dA[i, k] − Σ_j A[j, k] · dA[j, k])`` (Jacobian-vector product).

    Shapes: dZ (n, m) written; dA, Z, A (n, m), A = f(Z) cached by the forward pass.
    """
    n, m = Z.shape
    if code == SOFTMAX:
        for k in range(m):
            dot = 0.0
            for j in range(n):
                dot += A[j, k] * dA[j, k]
            for i in range(n):
                dZ[i, k] = A[i, k] * (dA[i, k] - dot)
        return
    for i in range(n):
        for k in range(m):
            # forward: A[i, k] = f(Z[i, k])  ->  ∂A[i, k]/∂Z[i, k] = f'(Z[i, k])
            dZ[i, k] = dA[i, k] * _fprime(Z[i, k], A[i, k], code, alpha)


def _alpha(alpha) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"alpha: expected a number, got {alpha!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"alpha: expected a finite slope such as 0.01, got {alpha!r}")
    return value


def activation_forward(name: str, Z, alpha: float = 0.01, *, check_finite: bool = True
                       ) -> np.ndarray:
    """``A = f(Z)`` for ``name`` in identity, sigmoid, tanh, relu, leaky_relu, softmax (§8).

    ``Z`` is ``(n, m)``, examples as columns; a 1-D ``Z`` is refused so that the softmax axis is
    never guessed. ``alpha`` is the leaky-ReLU slope. Returns a new ``(n, m)`` array.
    """
    code = activation_code(name)
    Z = _checks.as_float_array(Z, "Z", 2, check_finite=check_finite,
                               hint="examples are columns: use Z.reshape(-1, 1) for one example")
    A = np.empty_like(Z)
    _activation_forward(A, Z, code, _alpha(alpha))
    return A


def activation_backward(name: str, dA, Z, alpha: float = 0.01, *, check_finite: bool = True
                        ) -> np.ndarray:
    """``dZ = dA ⊙ f'(Z)`` (guide §5 first row, §8); softmax: the per-column Jacobian-vector product.

    ``dA`` and ``Z`` are ``(n, m)`` of one dtype. Returns a new ``(n, m)`` array.
    """
    code = activation_code(name)
    dA = _checks.as_float_array(dA, "dA", 2, check_finite=check_finite)
    Z = _checks.as_float_array(Z, "Z", 2, check_finite=check_finite)
    _checks.same_dtype(dA=dA, Z=Z)
    _checks.require_shape(dA, "dA", Z.shape, "dA and Z must have the same shape")
    a = _alpha(alpha)
    A = np.empty_like(Z)
    _activation_forward(A, Z, code, a)
    dZ = np.empty_like(Z)
    _activation_backward(dZ, dA, Z, A, code, a)
    return dZ
