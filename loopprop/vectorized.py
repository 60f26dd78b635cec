"""The guide's formulas as plain vectorized NumPy: the test oracle and the benchmark baseline.

Every function here mirrors a public loopprop function, with the same arguments and results, and
computes with whole-array NumPy (``@`` for products, ufuncs elementwise). No validation: callers
pass arrays that loopprop's own checks would accept. The formulas are the guide's (§5, §8, §9,
§10), written the way a NumPy user would write them.
"""

from __future__ import annotations

import numpy as np


def dense_forward(W, b, A_prev):
    """``Z = W·A_prev + b`` (§5)."""
    return W @ A_prev + b[:, None]


def dense_backward(dZ, W, A_prev):
    """``dW = dZ·A_prevᵀ``, ``db = sum(dZ, axis=1)``, ``dA_prev = Wᵀ·dZ`` (§5)."""
    return dZ @ A_prev.T, dZ.sum(axis=1), W.T @ dZ


def sigmoid(Z):
    """σ(z), stable for both signs: ``exp`` only ever sees ``−|z|``."""
    e = np.exp(-np.abs(Z))
    return np.where(Z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(Z.dtype, copy=False)


def softmax(Z):
    """Softmax over each column, after subtracting the column max."""
    E = np.exp(Z - Z.max(axis=0, keepdims=True))
    return E / E.sum(axis=0, keepdims=True)


def activation_forward(name, Z, alpha=0.01):
    """``A = f(Z)`` (§8)."""
    if name == "identity":
        return Z.copy()
    if name == "sigmoid":
        return sigmoid(Z)
    if name == "tanh":
        return np.tanh(Z)
    if name == "relu":
        return np.maximum(Z, 0)  # np.maximum propagates NaN
    if name == "leaky_relu":
        return np.where(Z <= 0, alpha * Z, Z).astype(Z.dtype, copy=False)
    if name == "softmax":
        return softmax(Z)
    raise ValueError(f"unknown activation {name!r}")


def activation_backward(name, dA, Z, alpha=0.01):
    """``dZ = dA ⊙ f'(Z)`` (§5, §8); softmax: ``A ⊙ (dA − Σ_j A_j dA_j)`` per column."""
    A = activation_forward(name, Z, alpha)
    if name == "identity":
        return dA.copy()
    if name == "sigmoid":
        return dA * A * (1 - A)
    if name == "tanh":
        return dA * (1 - A * A)
    # f'(NaN) = NaN: ``np.where(Z <= 0, …, Z)`` keeps a NaN where neither test holds
    if name == "relu":
        return (dA * np.where(Z > 0, 1.0, np.where(Z <= 0, 0.0, Z))).astype(Z.dtype, copy=False)
    if name == "leaky_relu":
        return (dA * np.where(Z > 0, 1.0, np.where(Z <= 0, alpha, Z))).astype(Z.dtype,
                                                                             copy=False)
    if name == "softmax":
        return A * (dA - (A * dA).sum(axis=0, keepdims=True))
    raise ValueError(f"unknown activation {name!r}")


def mse_loss(A, Y):
    """``mean_k ½ Σ_i (A − Y)²`` and ``dA = (A − Y)/m`` (§9)."""
    m = A.shape[1]
    D = A - Y
    return float(0.5 * (D * D).sum() / m), D / m


def _one_hot(labels, c, dtype):
    Y = np.zeros((c, labels.shape[0]), dtype=dtype)
    Y[labels, np.arange(labels.shape[0])] = 1
    return Y


def softmax_cross_entropy(Z, Y):
    """``mean_k −Σ_i Y log softmax(Z)`` and ``dZ = (P − Y)/m`` (§9)."""
    if Y.ndim == 1:
        Y = _one_hot(Y, Z.shape[0], Z.dtype)
    m = Z.shape[1]
    zmax = Z.max(axis=0, keepdims=True)
    E = np.exp(Z - zmax)
    S = E.sum(axis=0, keepdims=True)
    lse = zmax + np.log(S)
    loss = float((Y * (lse - Z)).sum() / m)
    return loss, (E / S - Y) / m  # E / S, not exp(Z − lse): exp magnifies lse's rounding


def sigmoid_binary_cross_entropy(Z, Y):
    """``mean_k Σ_i [max(z,0) − z·y + log(1 + e^{−|z|})]`` and ``dZ = (σ(Z) − Y)/m``."""
    m = Z.shape[1]
    loss = float((np.maximum(Z, 0) - Z * Y + np.log1p(np.exp(-np.abs(Z)))).sum() / m)
    return loss, (sigmoid(Z) - Y) / m


def sgd_update(param, grad, lr):
    """In place: ``param −= lr·grad`` (§10)."""
    param -= lr * grad
    return param


def neuron_step(x, w, b, y, activation="sigmoid", loss="mse", alpha=0.01):
    """The §4 neuron with NumPy scalars; same keys as :func:`loopprop.neuron_step`."""
    x = np.atleast_1d(np.asarray(x, dtype=float))
    w = np.atleast_1d(np.asarray(w, dtype=float))
    z = float(w @ x + b)
    Z = np.array([[z]])
    a = float(activation_forward(activation, Z, alpha)[0, 0])
    da_dz = float(activation_backward(activation, np.ones_like(Z), Z, alpha)[0, 0])
    if loss == "mse":
        L, dL_da = 0.5 * (a - y) ** 2, a - y
        dL_dz = dL_da * da_dz
    else:
        L = max(z, 0.0) - z * y + np.log1p(np.exp(-abs(z)))
        dL_da = (a - y) / (a * (1 - a))
        dL_dz = a - y
    return {"z": z, "a": a, "loss": float(L), "dL_da": dL_da, "da_dz": da_dz, "dL_dz": dL_dz,
            "dL_dw": dL_dz * x, "dL_db": dL_dz}


def train_epoch(params, X, y, batch_size, lr, activations):
    """One epoch of minibatch SGD written the NumPy way: the benchmark baseline for ``fit``.

    ``params`` is a list of ``(W, b)`` updated in place; hidden layers use ``activations[:-1]``,
    the output is softmax + cross-entropy with integer labels ``y``; no shuffling (the batch
    order is the column order). Returns the mean training loss.
    """
    n = X.shape[1]
    total = 0.0
    for s in range(0, n, batch_size):
        Xb, yb = X[:, s:s + batch_size], y[s:s + batch_size]
        As, Zs = [Xb], []
        for (W, b), act in zip(params, activations):
            Zs.append(dense_forward(W, b, As[-1]))
            As.append(activation_forward(act, Zs[-1]) if act != "softmax" else Zs[-1])
        loss, dZ = softmax_cross_entropy(Zs[-1], yb)
        total += loss * Xb.shape[1]
        for l in range(len(params) - 1, -1, -1):
            W, b = params[l]
            dW, db, dA = dense_backward(dZ, W, As[l])
            if l > 0:
                dZ = activation_backward(activations[l - 1], dA, Zs[l - 1])
            W -= lr * dW
            b -= lr * db
    return total / n


def train_epoch_lean(params, X, y, batch_size, lr, activations):
    """:func:`train_epoch` as lean as plain NumPy gets: the benchmark baseline.

    The readable :func:`train_epoch` calls the functions above, one per formula, as the tests
    want them; a competent NumPy user writes the epoch inline instead: one ``@`` per product,
    the bias added in place, ``np.maximum`` for ReLU and a boolean mask for its derivative,
    softmax + cross-entropy on the shifted logits with integer labels, no validation. Same
    arguments and result as :func:`train_epoch` (ReLU, tanh or sigmoid hidden layers).
    """
    n = X.shape[1]
    L = len(params)
    total = 0.0
    for s in range(0, n, batch_size):
        Xb = X[:, s:s + batch_size]
        yb = y[s:s + batch_size]
        m = Xb.shape[1]
        cols = np.arange(m)
        As = [Xb]
        for l, (W, b) in enumerate(params):
            Z = W @ As[-1]
            Z += b[:, None]
            if l < L - 1:
                act = activations[l]
                A = (np.maximum(Z, 0) if act == "relu" else np.tanh(Z) if act == "tanh"
                     else 1.0 / (1.0 + np.exp(-Z)))
                As.append(A)
        Z -= Z.max(axis=0)  # softmax + cross-entropy on the shifted logits (labels)
        E = np.exp(Z)
        S = E.sum(axis=0)
        total += float(np.log(S).sum() - Z[yb, cols].sum())
        dZ = E
        dZ /= S
        dZ[yb, cols] -= 1.0
        dZ /= m
        for l in range(L - 1, -1, -1):
            W, b = params[l]
            dW = dZ @ As[l].T
            db = dZ.sum(axis=1)
            if l > 0:
                dA = W.T @ dZ
                act, A = activations[l - 1], As[l]
                if act == "relu":
                    dA[A <= 0] = 0.0
                elif act == "tanh":
                    dA *= 1.0 - A * A
                else:
                    dA *= A * (1.0 - A)
                dZ = dA
            W -= lr * dW
            b -= lr * db
    return total / n
