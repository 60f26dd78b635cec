"""Loss values and the gradient seeds they start the backward pass with (docs/formulas.md §9).

A loss is the *mean over the batch* of the per-example loss, so every seed carries the ``1/m``
and nothing downstream rescales (docs/formulas.md §12; the README's "Conventions"). Shapes:
``A``, ``Z``,
``Y`` are ``(n, m)`` (``c`` classes for cross-entropy), ``labels`` is ``(m,)``.

* mse: per example ``½ Σ_i (A[i,k] − Y[i,k])²``; seed ``dA = (A − Y) / m``
* softmax + cross-entropy: ``−Σ_i Y[i,k] · log softmax(Z)[i,k]``; seed ``dZ = (P − Y) / m``
* sigmoid + binary cross-entropy: ``−Σ_i [y log σ(z) + (1 − y) log(1 − σ(z))]``;
  seed ``dZ = (σ(Z) − Y) / m``

The two cross-entropies are *fused* with their activation: the seed is ``dZ``, not ``dA``, which
is the §9 shortcut and avoids the "wrong softmax gradient" of §12. Their values use
log-sum-exp (``log Σ e^z = z_max + log Σ e^{z − z_max}``) and ``log(1 + e^{−|z|})``, so no
``log(0)`` is ever taken and a confident wrong answer costs a large, finite loss.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks
from .._jit import kernel
from .activations import _column_max, _sigmoid
from .exp import _exp


@kernel
def _mse(dA, A, Y):
    """``L = (1/m) Σ_k ½ Σ_i (A[i,k] − Y[i,k])²``; seed ``dA[i,k] = (A[i,k] − Y[i,k]) / m`` (§9).

    Shapes: dA (n, m) written; A (n, m); Y (n, m). Returns L (accumulated in float64).
    """
    n, m = A.shape
    inv_m = 1.0 / m
    total = 0.0
    for i in range(n):
        for k in range(m):
            d = A[i, k] - Y[i, k]
            total += d * d
            dA[i, k] = d * inv_m
    return 0.5 * total * inv_m


@kernel
def _softmax_cross_entropy(dZ, Z, Y):
    """Softmax + cross-entropy with one-hot (or probability) targets, fused (docs/formulas.md §9).

    ``L = (1/m) Σ_k Σ_i Y[i,k] · (lse_k − Z[i,k])`` with ``lse_k = log Σ_j exp(Z[j,k])``;
    seed ``dZ[i,k] = (P[i,k] − Y[i,k]) / m`` where
    ``P[i,k] = exp(Z[i,k] − z_max) / Σ_j exp(Z[j,k] − z_max)``.

    ``P`` is *not* computed as ``exp(Z − lse)``: ``lse`` is rounded, and ``exp`` turns the
    rounding error of a large ``lse`` into a relative error of ``P`` (up to 1e-4 for logits
    near 50). Dividing by the sum of the shifted exponentials keeps every ``P`` within a few
    ulps.

    Shapes: dZ (c, m) written; Z (c, m); Y (c, m), each column summing to 1.
    """
    c, m = Z.shape
    inv_m = 1.0 / m
    total = 0.0
    for k in range(m):
        zmax = _column_max(Z, k)
        s = 0.0
        for i in range(c):
            s += math.exp(Z[i, k] - zmax)
        lse = zmax + math.log(s)
        for i in range(c):
            total += Y[i, k] * (lse - Z[i, k])
            dZ[i, k] = (math.exp(Z[i, k] - zmax) / s - Y[i, k]) * inv_m
    return total * inv_m


@kernel
def _softmax_cross_entropy_labels(dZ, Z, labels):
    """Softmax + cross-entropy with integer labels, fused (docs/formulas.md §9).

    ``L = (1/m) Σ_k (lse_k − Z[labels[k], k])``; seed ``dZ[i,k] = (P[i,k] − [i == labels[k]]) / m``.

    Shapes: dZ (c, m) written; Z (c, m); labels (m,) integers in [0, c).
    """
    c, m = Z.shape
    inv_m = 1.0 / m
    total = 0.0
    for k in range(m):
        zmax = _column_max(Z, k)
        s = 0.0
        for i in range(c):
            s += math.exp(Z[i, k] - zmax)
        y = labels[k]
        total += zmax + math.log(s) - Z[y, k]
        for i in range(c):  # P = exp(Z − z_max) / s, not exp(Z − lse): see above
            dZ[i, k] = math.exp(Z[i, k] - zmax) / s * inv_m
        dZ[y, k] -= inv_m
    return total * inv_m


@kernel
def _softmax_cross_entropy_labels_tuned(dZ, Z, labels, colmax, colsum):
    """:func:`_softmax_cross_entropy_labels`, tuned: the same sums, swept row by row.

    ``L = (1/m) Σ_k (lse_k − Z[labels[k], k])``; ``dZ[i,k] = (P[i,k] − [i == labels[k]]) / m``.

    Shapes: dZ (c, m) written; Z (c, m); labels (m,); workspaces colmax, colsum (≥ m,).

    A column of Z is strided in memory (examples are columns), so the column max, the
    exponentials and the column sums are taken one *row* at a time, ``k`` innermost and
    contiguous, with the vectorizable :func:`_exp`; only ``log`` runs once per column.
    """
    c, m = Z.shape
    inv_m = 1.0 / m
    for k in range(m):
        colmax[k] = Z[0, k]
        colsum[k] = 0.0
    for i in range(1, c):
        for k in range(m):
            colmax[k] = max(colmax[k], Z[i, k])
    for i in range(c):
        for k in range(m):
            e = _exp(Z[i, k] - colmax[k])
            dZ[i, k] = e
            colsum[k] += e
    total = 0.0
    for k in range(m):
        total += colmax[k] + math.log(colsum[k]) - Z[labels[k], k]
        colsum[k] = inv_m / colsum[k]
    for i in range(c):
        for k in range(m):
            dZ[i, k] *= colsum[k]
    for k in range(m):
        dZ[labels[k], k] -= inv_m
    return total * inv_m


@kernel
def _sigmoid_binary_cross_entropy(dZ, Z, Y):
    """Sigmoid + binary cross-entropy, fused (docs/formulas.md §9: the sigmoid twin of ``P − Y``).

    ``L = (1/m) Σ_k Σ_i [max(z, 0) − z·y + log(1 + e^{−|z|})]`` (the stable form of
    ``−y log σ(z) − (1 − y) log(1 − σ(z))``); seed ``dZ[i,k] = (σ(Z[i,k]) − Y[i,k]) / m``.

    Shapes: dZ (n, m) written; Z (n, m); Y (n, m) with values in [0, 1].
    """
    n, m = Z.shape
    inv_m = 1.0 / m
    total = 0.0
    for i in range(n):
        for k in range(m):
            z = Z[i, k]
            y = Y[i, k]
            total += max(z, 0.0) - z * y + math.log1p(math.exp(-abs(z)))
            dZ[i, k] = (_sigmoid(z) - y) * inv_m
    return total * inv_m


# ---------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------


def _prediction(x, name: str, check_finite: bool) -> np.ndarray:
    arr = _checks.as_float_array(
        x, name, 2, check_finite=check_finite,
        hint=f"examples are columns: {name} has shape (n, m); use {name}.reshape(-1, 1) for "
        "one example",
    )
    _checks.require_nonempty_batch(arr, name)
    return arr


def mse_loss(A, Y, *, check_finite: bool = True) -> tuple[float, np.ndarray]:
    """Mean squared error and its seed (docs/formulas.md §9).

    ``loss = (1/m) Σ_k ½ Σ_i (A[i,k] − Y[i,k])²``, ``dA = (A − Y) / m``.

    Parameters: ``A`` (n, m) predictions, ``Y`` (n, m) targets (same dtype, or integers).
    Returns ``(loss, dA)``.
    """
    A = _prediction(A, "A", check_finite)
    Y = _checks.targets_like(Y, "Y", A.shape, A.dtype, "A", check_finite)
    dA = np.empty_like(A)
    loss = _mse(dA, A, Y)
    return float(loss), dA


def softmax_cross_entropy(Z, Y, *, impl: str = "tuned", check_finite: bool = True
                          ) -> tuple[float, np.ndarray]:
    """Softmax + cross-entropy on the logits ``Z``, with the §9 shortcut ``dZ = (P − Y) / m``.

    Parameters
    ----------
    Z : (c, m) logits (pre-activations of the output layer); examples are columns; or
        (c, T, m): a distribution at every position of a sequence (a language model)
    Y : (c, m) one-hot (or probability) targets, or (m,) integer labels in [0, c); with
        (c, T, m) logits, integer labels (T, m)

    impl : ``"tuned"`` (row sweeps, vectorized exp; integer labels) or ``"naive"`` (column by
        column, the formula as written)

    Returns ``(loss, dZ)`` with ``loss = mean_k −Σ_i Y[i,k] log softmax(Z)[i,k]``; for
    sequences the mean over every position and example, ``dZ = (P − Y)/(T·m)``
    (docs/formulas.md, "The output layer tied to the embedding, and the loss at every
    position"), ``dZ`` shaped as ``Z``.
    """
    _checks.check_choice(impl, "impl", ("tuned", "naive"))
    if np.ndim(Z) == 3:  # (c, T, m): the (c, T·m) view, one column per position
        Z3 = _checks.as_float_array(Z, "Z", 3, check_finite=check_finite,
                                    hint="sequence logits have shape (c, T, m)")
        Yl = np.asarray(Y)
        if Yl.dtype.kind not in "iu" or Yl.shape != Z3.shape[1:]:
            raise ValueError(f"Y: (c, T, m) logits take integer labels of shape "
                             f"{Z3.shape[1:]} (one per position and example), got "
                             f"{Yl.dtype} {Yl.shape}")
        loss, dZ = softmax_cross_entropy(Z3.reshape(Z3.shape[0], -1), Yl.reshape(-1),
                                         impl=impl, check_finite=False)
        return loss, dZ.reshape(Z3.shape)
    Z = _prediction(Z, "Z", check_finite)
    if Z.shape[0] == 0:
        raise ValueError(f"Z: softmax needs at least one class (one row), got shape {Z.shape}")
    Yv, is_labels = _checks.class_targets(Y, "Y", Z.shape, Z.dtype, "Z", check_finite)
    dZ = np.empty_like(Z)
    if is_labels and impl == "tuned":
        m = Z.shape[1]
        loss = _softmax_cross_entropy_labels_tuned(dZ, Z, Yv, np.empty(m, Z.dtype),
                                                   np.empty(m, np.float64))
    elif is_labels:
        loss = _softmax_cross_entropy_labels(dZ, Z, Yv)
    else:
        loss = _softmax_cross_entropy(dZ, Z, Yv)
    return float(loss), dZ


def sigmoid_binary_cross_entropy(Z, Y, *, check_finite: bool = True) -> tuple[float, np.ndarray]:
    """Sigmoid + binary cross-entropy on the logits ``Z``, fused: ``dZ = (σ(Z) − Y) / m``.

    Parameters: ``Z`` (n, m) logits, ``Y`` (n, m) targets in [0, 1].
    Returns ``(loss, dZ)`` with ``loss = mean_k Σ_i BCE(σ(Z[i,k]), Y[i,k])``.
    """
    Z = _prediction(Z, "Z", check_finite)
    Yv = _checks.binary_targets(Y, "Y", Z.shape, Z.dtype, "Z", check_finite)
    dZ = np.empty_like(Z)
    loss = _sigmoid_binary_cross_entropy(dZ, Z, Yv)
    return float(loss), dZ
