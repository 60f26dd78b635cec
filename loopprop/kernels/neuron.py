"""One neuron, scalar by scalar (docs/formulas.md §4, worked in §11).

Forward::

    z = Σ_j w_j · x_j + b          a = f(z)          L = loss(a, y)

Backward, the chain rule one factor at a time::

    dL/da                       (from the loss: a − y for ½(a − y)²)
    da/dz = f'(z)               (σ(z)(1 − σ(z)) for the sigmoid)
    dL/dz = dL/da · da/dz
    dL/dw_j = dL/dz · x_j       (∂z/∂w_j = x_j)
    dL/db = dL/dz               (∂z/∂b = 1)

With ``x = 2, w = 0.5, b = 1, y = 1``, sigmoid and ½(y − a)² this gives docs/formulas.md §11:
``z = 2, a = 0.8808, L ≈ 0.00709, dL/da = −0.1192, da/dz ≈ 0.105, dL/dz ≈ −0.0125,
dL/dw ≈ −0.025``.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks
from .._jit import kernel
from .activations import CODES, SIGMOID, SOFTMAX, _f, _fprime

MSE, BINARY_CROSS_ENTROPY = 0, 1
NEURON_LOSSES = {"mse": MSE, "binary_cross_entropy": BINARY_CROSS_ENTROPY}
_TINY = 1e-300


@kernel
def _neuron_step(dL_dw, x, w, b, y, act, loss, alpha):
    """The §4 neuron, forward and backward; writes ``dL_dw`` and returns the scalars.

    Shapes: dL_dw (n,) written; x (n,); w (n,); b, y scalars. Returns
    ``(z, a, L, dL_da, da_dz, dL_dz)``; ``dL/db = dL/dz``.
    """
    n = x.shape[0]
    # forward: z = Σ_j w_j x_j + b
    z = b
    for j in range(n):
        z += w[j] * x[j]
    a = _f(z, act, alpha)
    da_dz = _fprime(z, a, act, alpha)
    if loss == MSE:
        # L = ½ (a − y)²  ->  dL/da = a − y
        L = 0.5 * (a - y) * (a - y)
        dL_da = a - y
        dL_dz = dL_da * da_dz
    else:
        # L = −[y log a + (1 − y) log(1 − a)] with a = σ(z), written without log(0):
        # log σ(z) = −log(1 + e^{−z}), log(1 − σ(z)) = −log(1 + e^{z})
        L = max(z, 0.0) - z * y + math.log1p(math.exp(-abs(z)))
        dL_da = (a - y) / max(a * (1.0 - a), _TINY)
        # dL/da · da/dz = (a − y)/(a(1 − a)) · a(1 − a): the product is exactly a − y (§9)
        dL_dz = a - y
    # dL/dw_j = dL/dz · ∂z/∂w_j = dL/dz · x_j
    for j in range(n):
        dL_dw[j] = dL_dz * x[j]
    return z, a, L, dL_da, da_dz, dL_dz


def _vector(v):
    """A number or a sequence as a 1-D array; integers become floats (they are exact)."""
    arr = np.atleast_1d(np.asarray(v)) if not isinstance(v, (str, bytes)) else v
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    return arr


def neuron_step(x, w, b, y, activation: str = "sigmoid", loss: str = "mse",
                alpha: float = 0.01) -> dict:
    """Forward and backward through one neuron, every factor of the chain rule
    (docs/formulas.md §4, §11).

    Parameters
    ----------
    x, w : numbers or 1-D vectors of one length (inputs and weights)
    b, y : numbers (bias and target)
    activation : identity, sigmoid, tanh, relu or leaky_relu
    loss : ``"mse"`` (½(a − y)², as in §11) or ``"binary_cross_entropy"`` (sigmoid only)

    Returns
    -------
    dict with ``z, a, loss, dL_da, da_dz, dL_dz, dL_dw, dL_db``; ``dL_dw`` is a number when ``x``
    is a number and an array of ``x``'s length otherwise.
    """
    names = tuple(k for k in CODES if CODES[k] != SOFTMAX)
    _checks.check_choice(activation, "activation", names)
    _checks.check_choice(loss, "loss", tuple(NEURON_LOSSES))
    act = CODES[activation]
    if loss == "binary_cross_entropy" and act != SIGMOID:
        raise ValueError(
            f"loss: binary_cross_entropy needs a = σ(z) in (0, 1), got activation={activation!r}; "
            "use activation='sigmoid'"
        )
    scalar_x = np.ndim(x) == 0
    xv, wv = (_checks.as_float_array(_vector(v), name, 1).astype(np.float64, copy=False)
              for v, name in ((x, "x"), (w, "w")))
    if xv.shape != wv.shape:
        raise ValueError(f"x has shape {xv.shape} but w has shape {wv.shape}: one weight per input")
    bf, yf = _checks.finite_float(b, "b"), _checks.finite_float(y, "y")
    if loss == "binary_cross_entropy" and not 0.0 <= yf <= 1.0:
        raise ValueError(f"y: binary cross-entropy needs a target in [0, 1], got {y!r}")
    a_alpha = _checks.finite_float(alpha, "alpha")
    dL_dw = np.empty_like(xv)
    z, a, L, dL_da, da_dz, dL_dz = _neuron_step(dL_dw, xv, wv, bf, yf, act,
                                               NEURON_LOSSES[loss], a_alpha)
    return {
        "z": float(z),
        "a": float(a),
        "loss": float(L),
        "dL_da": float(dL_da),
        "da_dz": float(da_dz),
        "dL_dz": float(dL_dz),
        "dL_dw": float(dL_dw[0]) if scalar_x else dL_dw,
        "dL_db": float(dL_dz),
    }
