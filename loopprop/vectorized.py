"""The formulas of docs/formulas.md as plain vectorized NumPy: the test oracle and the
benchmark baseline.

Every function here mirrors a public loopprop function, with the same arguments and results, and
computes with whole-array NumPy (``@`` for products, ufuncs elementwise). No validation: callers
pass arrays that loopprop's own checks would accept. The formulas are those of docs/formulas.md
(§5, §8, §9, §10), written the way a NumPy user would write them.
"""

from __future__ import annotations

import math

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
    if name == "gelu":
        return (0.5 * Z * (1.0 + _erf(Z / np.sqrt(2.0)))).astype(Z.dtype, copy=False)
    if name == "gelu_tanh":
        u = np.sqrt(2.0 / np.pi) * (Z + 0.044715 * Z**3)
        return (0.5 * Z * (1.0 + np.tanh(u))).astype(Z.dtype, copy=False)
    if name == "softmax":
        return softmax(Z)
    raise ValueError(f"unknown activation {name!r}")


_erf_scalar = np.frompyfunc(math.erf, 1, 1)


def _erf(x):
    """erf elementwise (NumPy has none; SciPy is not a dependency): Python's math.erf."""
    return _erf_scalar(np.asarray(x, np.float64)).astype(np.float64)


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
    if name == "gelu":
        phi = np.exp(-0.5 * Z * Z) / np.sqrt(2.0 * np.pi)
        return (dA * (0.5 * (1.0 + _erf(Z / np.sqrt(2.0))) + Z * phi)).astype(Z.dtype,
                                                                              copy=False)
    if name == "gelu_tanh":
        c = np.sqrt(2.0 / np.pi)
        t = np.tanh(c * (Z + 0.044715 * Z**3))
        d = 0.5 * (1.0 + t) + 0.5 * Z * (1.0 - t * t) * c * (1.0 + 3 * 0.044715 * Z * Z)
        return (dA * d).astype(Z.dtype, copy=False)
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
    want them; a competent NumPy user writes the epoch inline instead: one ``@`` per product
    (the weight gradients into buffers made once), the bias added in place, ``np.maximum``
    for ReLU and a boolean mask for its derivative, softmax + cross-entropy on the shifted
    logits with integer labels, no validation. Same arguments and result as
    :func:`train_epoch` (ReLU, tanh or sigmoid hidden layers).
    """
    n = X.shape[1]
    L = len(params)
    total = 0.0
    # The weight gradients go into buffers made once: a temporary the size of W per batch is
    # a fresh mapping above glibc's mmap threshold (128 KiB), and on a VM where page faults
    # are dear that alone doubled this epoch's time (docs/performance.md, "Measuring").
    dWs = [np.empty_like(W) for W, _ in params]
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
            dW = np.matmul(dZ, As[l].T, out=dWs[l])
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
            dW *= lr
            W -= dW
            b -= lr * db
    return total / n


# -- convolution and pooling (examples on the last axis: images are (C, H, W, m)) --------------


def _pad(A, pad_h, pad_w):
    return np.pad(A, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))


def _windows(A, kh, kw, s_h, s_w):
    """``win[c, y, x, k, p, q] = A[c, y·s_h + p, x·s_w + q, k]`` (a strided view)."""
    win = np.lib.stride_tricks.sliding_window_view(A, (kh, kw), axis=(1, 2))
    return win[:, ::s_h, ::s_w]


def conv2d_forward(W, b, A_prev, stride=1, padding=0):
    """``Z[i, y, x, k] = b[i] + Σ_{c,p,q} W[i, c, p, q] · A_pad[c, y·s + p, x·s + q, k]``."""
    (s_h, s_w), (pad_h, pad_w) = _pair(stride), _pair(padding)
    win = _windows(_pad(A_prev, pad_h, pad_w), W.shape[2], W.shape[3], s_h, s_w)
    return np.einsum("icpq,cyxkpq->iyxk", W, win, optimize=True) + b[:, None, None, None]


def conv2d_backward(dZ, W, A_prev, stride=1, padding=0):
    """``dW = Σ dZ·A_pad`` over (y, x, k); ``db = Σ dZ``; ``dA_prev``: every window's share
    ``W[i, c, p, q] · dZ[i, y, x, k]`` added back where it was read, padding cut off."""
    (s_h, s_w), (pad_h, pad_w) = _pair(stride), _pair(padding)
    kh, kw = W.shape[2], W.shape[3]
    A_pad = _pad(A_prev, pad_h, pad_w)
    win = _windows(A_pad, kh, kw, s_h, s_w)
    dW = np.einsum("iyxk,cyxkpq->icpq", dZ, win, optimize=True)
    db = dZ.sum(axis=(1, 2, 3))
    dA_pad = np.zeros_like(A_pad)
    H_out, W_out = dZ.shape[1], dZ.shape[2]
    contrib = np.einsum("icpq,iyxk->cyxkpq", W, dZ, optimize=True)
    for p in range(kh):
        for q in range(kw):
            dA_pad[:, p:p + s_h * H_out:s_h, q:q + s_w * W_out:s_w, :] += contrib[..., p, q]
    H, Wd = A_prev.shape[1], A_prev.shape[2]
    return dW, db, dA_pad[:, pad_h:pad_h + H, pad_w:pad_w + Wd, :]


def maxpool2d_forward(A_prev, size=2, stride=None):
    (kh, kw) = _pair(size)
    s_h, s_w = _pair(stride if stride is not None else (kh, kw))
    return _windows(A_prev, kh, kw, s_h, s_w).max(axis=(4, 5))


def maxpool2d_backward(dA, A_prev, size=2, stride=None):
    """The gradient of each window goes to its first maximum (row-major), windows add."""
    kh, kw = _pair(size)
    s_h, s_w = _pair(stride if stride is not None else (kh, kw))
    win = _windows(A_prev, kh, kw, s_h, s_w)
    C, H_out, W_out, m = win.shape[:4]
    first = win.reshape(C, H_out, W_out, m, kh * kw).argmax(axis=4)  # first maximum
    dA_prev = np.zeros_like(A_prev)
    for p in range(kh):
        for q in range(kw):
            hit = (first == p * kw + q)
            dA_prev[:, p:p + s_h * H_out:s_h, q:q + s_w * W_out:s_w, :] += dA * hit
    return dA_prev


def avgpool2d_forward(A_prev, size=2, stride=None):
    kh, kw = _pair(size)
    s_h, s_w = _pair(stride if stride is not None else (kh, kw))
    return _windows(A_prev, kh, kw, s_h, s_w).mean(axis=(4, 5))


def avgpool2d_backward(dA, A_prev, size=2, stride=None):
    kh, kw = _pair(size)
    s_h, s_w = _pair(stride if stride is not None else (kh, kw))
    H_out, W_out = dA.shape[1], dA.shape[2]
    dA_prev = np.zeros_like(A_prev)
    for p in range(kh):
        for q in range(kw):
            dA_prev[:, p:p + s_h * H_out:s_h, q:q + s_w * W_out:s_w, :] += dA / (kh * kw)
    return dA_prev


def dropout_backward(dA, mask):
    """``dA · mask`` (the mask of the forward pass: 0 or 1/(1 − p))."""
    return dA * mask


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _bn_axes(X):
    """Every axis but the first: the values of one feature (channel) in batch norm."""
    return tuple(range(1, X.ndim))


def _per_feature(v, X):
    return v.reshape((-1,) + (1,) * (X.ndim - 1))


def batchnorm_forward(X, gamma, beta, eps=1e-5):
    """Training-mode batch norm over every axis but the first: ``(Y, mean, rstd)``."""
    axes = _bn_axes(X)
    mean = X.mean(axis=axes)
    xc = X - _per_feature(mean, X)
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=axes) + eps)
    xhat = xc * _per_feature(rstd, X)
    return _per_feature(gamma, X) * xhat + _per_feature(beta, X), mean, rstd


def batchnorm_backward(dY, X, gamma, mean, rstd):
    """``(dX, dgamma, dbeta)``: ``dX = γr/N·(N·dY − Σ dY − x̂·Σ dY·x̂)`` per feature."""
    axes = _bn_axes(X)
    N = X.size // X.shape[0]
    xhat = (X - _per_feature(mean, X)) * _per_feature(rstd, X)
    dbeta = dY.sum(axis=axes)
    dgamma = (dY * xhat).sum(axis=axes)
    dX = _per_feature(gamma * rstd / N, X) * (
        N * dY - _per_feature(dbeta, X) - xhat * _per_feature(dgamma, X))
    return dX, dgamma, dbeta


def layernorm_forward(X, gamma, beta, eps=1e-5):
    """Layer norm over the first axis (the features of each example): ``(Y, mean, rstd)``."""
    mean = X.mean(axis=0)
    xc = X - mean
    rstd = 1.0 / np.sqrt((xc * xc).mean(axis=0) + eps)
    return _per_feature(gamma, X) * (xc * rstd) + _per_feature(beta, X), mean, rstd


def layernorm_backward(dY, X, gamma, mean, rstd):
    """``(dX, dgamma, dbeta)``; with ``ĝ = γ·dY``: ``dX = r/n·(n·ĝ − Σ_i ĝ − x̂·Σ_i ĝ·x̂)``."""
    n = X.shape[0]
    xhat = (X - mean) * rstd
    axes = _bn_axes(X)
    dbeta = dY.sum(axis=axes)
    dgamma = (dY * xhat).sum(axis=axes)
    g = _per_feature(gamma, X) * dY
    dX = rstd / n * (n * g - g.sum(axis=0) - xhat * (g * xhat).sum(axis=0))
    return dX, dgamma, dbeta


def cnn_epoch_lean(params, arch, X, y, batch_size, lr):
    """One SGD epoch of a CNN as lean as plain NumPy gets: the benchmark baseline of the CNN
    rows (im2col by ``sliding_window_view`` and one ``@`` per product, in the layout NumPy
    prefers: examples *first*, ``X (m, C, H, W)``).

    ``arch`` lists the layers: ``("conv", padding)``, ``("relu",)``, ``("pool",)`` (2×2 max
    pooling, even sizes; a tie sends the gradient to every maximum), ``("flatten",)``,
    ``("dense",)``; the last dense layer feeds softmax + cross-entropy with integer labels
    ``y``. ``params`` holds ``(W, b)`` per conv/dense layer (loopprop's shapes), updated in
    place. Returns the mean training loss.
    """
    n = X.shape[0]
    total = 0.0
    for s in range(0, n, batch_size):
        A = X[s:s + batch_size]
        yb = y[s:s + batch_size]
        m = A.shape[0]
        tape = []
        p = 0
        for op in arch:
            kind = op[0]
            if kind == "conv":
                W, b = params[p]
                p += 1
                pad = op[1]
                c_out, c_in, kh, kw = W.shape
                Ap = np.pad(A, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else A
                win = np.lib.stride_tricks.sliding_window_view(Ap, (kh, kw), axis=(2, 3))
                Ho, Wo = win.shape[2], win.shape[3]
                cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(m * Ho * Wo, c_in * kh * kw)
                Z = cols @ W.reshape(c_out, -1).T
                Z += b
                tape.append((kind, A.shape, Ap.shape, cols, pad))
                A = Z.reshape(m, Ho, Wo, c_out).transpose(0, 3, 1, 2)
            elif kind == "relu":
                tape.append((kind, A))
                A = np.maximum(A, 0)
            elif kind == "pool":
                mm, C, H, Wd = A.shape
                Ar = A.reshape(mm, C, H // 2, 2, Wd // 2, 2)
                out = Ar.max(axis=(3, 5))
                tape.append((kind, Ar, out))
                A = out
            elif kind == "flatten":
                tape.append((kind, A.shape))
                A = A.reshape(m, -1)
            else:  # dense, rows as examples
                W, b = params[p]
                p += 1
                tape.append((kind, A))
                A = A @ W.T
                A += b
        A -= A.max(axis=1, keepdims=True)  # softmax + cross-entropy on shifted logits
        E = np.exp(A)
        S = E.sum(axis=1)
        rows = np.arange(m)
        total += float(np.log(S).sum() - A[rows, yb].sum())
        dA = E / S[:, None]
        dA[rows, yb] -= 1.0
        dA /= m
        for op, rec in zip(reversed(arch), reversed(tape)):
            kind = op[0]
            if kind == "dense":
                p -= 1
                W, b = params[p]
                A_in = rec[1]
                dW = dA.T @ A_in
                db = dA.sum(axis=0)
                dA = dA @ W
                W -= lr * dW
                b -= lr * db
            elif kind == "flatten":
                dA = dA.reshape(rec[1])
            elif kind == "pool":
                Ar, out = rec[1], rec[2]
                mask = Ar == out[:, :, :, None, :, None]
                dA = (mask * dA[:, :, :, None, :, None]).reshape(Ar.shape[0], Ar.shape[1],
                                                                 Ar.shape[2] * 2, Ar.shape[4] * 2)
            elif kind == "relu":
                dA = dA * (rec[1] > 0)
            else:  # conv
                p -= 1
                W, b = params[p]
                in_shape, pad_shape, cols, pad = rec[1], rec[2], rec[3], rec[4]
                c_out, c_in, kh, kw = W.shape
                mm, _, Ho, Wo = dA.shape
                dZ = dA.transpose(0, 2, 3, 1).reshape(-1, c_out)
                dW = (dZ.T @ cols).reshape(W.shape)
                db = dZ.sum(axis=0)
                dcols = (dZ @ W.reshape(c_out, -1)).reshape(mm, Ho, Wo, c_in, kh, kw)
                dAp = np.zeros(pad_shape, dA.dtype)
                for i in range(kh):
                    for j in range(kw):
                        dAp[:, :, i:i + Ho, j:j + Wo] += dcols[..., i, j].transpose(0, 3, 1, 2)
                H, Wd = in_shape[2], in_shape[3]
                dA = dAp[:, :, pad:pad + H, pad:pad + Wd]
                W -= lr * dW
                b -= lr * db
    return total / n


def embedding_forward(E, ids):
    """``X = E[:, ids]``: ``(d, T, m)``."""
    return E[:, ids]


def embedding_backward(dX, ids, V):
    """``dE`` with repeated ids adding (``np.add.at``)."""
    dE = np.zeros((dX.shape[0], V), dX.dtype)
    np.add.at(dE.T, ids.reshape(-1), dX.reshape(dX.shape[0], -1).T)
    return dE


def attention_forward(Q, K, V, causal=True):
    """``(O, P)`` per head, examples last: ``S = α·Qᵀ K``, ``P = softmax_s(S)``, ``O = V Pᵀ``."""
    d_head, T = Q.shape[1], Q.shape[2]
    S = np.einsum("hetk,hesk->htsk", Q, K) / math.sqrt(d_head)
    if causal:
        S = np.where(np.tril(np.ones((T, T), bool))[None, :, :, None], S, -np.inf)
    S = S - S.max(axis=2, keepdims=True)
    P = np.exp(S)
    P /= P.sum(axis=2, keepdims=True)
    return np.einsum("htsk,hesk->hetk", P, V), P


def attention_backward(dO, Q, K, V, P):
    """``(dQ, dK, dV)``: ``dS = P ⊙ (dP − Σ_s P·dP)``."""
    alpha = 1.0 / math.sqrt(Q.shape[1])
    dP = np.einsum("hetk,hesk->htsk", dO, V)
    dV = np.einsum("htsk,hetk->hesk", P, dO)
    dS = P * (dP - (P * dP).sum(axis=2, keepdims=True))
    dQ = alpha * np.einsum("htsk,hesk->hetk", dS, K)
    dK = alpha * np.einsum("htsk,hetk->hesk", dS, Q)
    return dQ, dK, dV


# -- recurrent layers: the input projection of every step in one product, the recurrence one
# product per step (the leanest NumPy a competent user writes) ------------------------------


def _sig(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # σ(z), without overflow


def rnn_forward(W_x, W_h, b, X, h0, nonlinearity="tanh"):
    """``H (h, T, m)``: ``H[:, t] = f(W_x·X[:, t] + W_h·H[:, t − 1] + b)``."""
    d, T, m = X.shape
    A = (W_x @ X.reshape(d, T * m)).reshape(-1, T, m) + b[:, None, None]
    H = np.empty_like(A)
    h = h0
    for t in range(T):
        z = A[:, t] + W_h @ h
        h = np.maximum(z, 0) if nonlinearity == "relu" else np.tanh(z)
        H[:, t] = h
    return H


_STEPS_DOC = """
    ``steps``, a dict, receives what the study tools read (:mod:`loopprop.explain_layers`,
    :mod:`loopprop.plots`): ``"D"`` the ``δ_t`` that multiply ``X[:, t]`` in ``dW_x``, ``"Dh"``
    those that multiply ``h_{t−1}`` in ``dW_h`` (``(rows, T, m)`` each) and ``"dh"`` the
    whole gradient reaching every state, ``∂L/∂h_t`` ``(h, T, m)``."""


def rnn_backward(dH, W_x, W_h, X, h0, H, dh_T, nonlinearity="tanh", steps=None):
    """``(dW_x, dW_h, db, dX, dh0)``: the carried ``dh`` from the last step back. """
    d, T, m = X.shape
    D = np.empty_like(H)  # δ of every step
    dHt = np.empty_like(H)
    dh = dh_T
    for t in range(T - 1, -1, -1):
        g = dH[:, t] + dh
        dHt[:, t] = g
        D[:, t] = g * (H[:, t] > 0) if nonlinearity == "relu" else g * (1 - H[:, t] ** 2)
        dh = W_h.T @ D[:, t]
    Hprev = np.concatenate([h0[:, None], H[:, :-1]], axis=1)
    n_h = H.shape[0]
    Df = D.reshape(n_h, T * m)
    dW_x = Df @ X.reshape(d, T * m).T
    dW_h = Df @ Hprev.reshape(n_h, T * m).T
    dX = (W_x.T @ Df).reshape(d, T, m)
    if steps is not None:
        steps.update(D=D, Dh=D, dh=dHt)
    return dW_x, dW_h, Df.sum(axis=1), dX, dh


def lstm_forward(W_x, W_h, b, X, h0, c0):
    """``(H, C, G)``: gates ``i, f, g, o`` stacked in ``G (4h, T, m)``."""
    d, T, m = X.shape
    n_h = h0.shape[0]
    A = (W_x @ X.reshape(d, T * m)).reshape(4 * n_h, T, m) + b[:, None, None]
    H, C, G = (np.empty((rows, T, m), X.dtype) for rows in (n_h, n_h, 4 * n_h))
    h, c = h0, c0
    for t in range(T):
        a = A[:, t] + W_h @ h
        i, f, g, o = _sig(a[:n_h]), _sig(a[n_h:2 * n_h]), np.tanh(a[2 * n_h:3 * n_h]), \
            _sig(a[3 * n_h:])
        c = f * c + i * g
        h = o * np.tanh(c)
        G[:, t] = np.concatenate([i, f, g, o])
        H[:, t], C[:, t] = h, c
    return H, C, G


def lstm_backward(dH, W_x, W_h, X, h0, c0, H, C, G, dh_T, dc_T, steps=None):
    """``(dW_x, dW_h, db, dX, dh0, dc0)``: the carried ``dh``, ``dc`` from the last step back.
    """
    d, T, m = X.shape
    n_h = H.shape[0]
    D = np.empty((4 * n_h, T, m), X.dtype)
    dHt = np.empty_like(H)
    dh, dc = dh_T, dc_T
    Cprev = np.concatenate([c0[:, None], C[:, :-1]], axis=1)
    for t in range(T - 1, -1, -1):
        i, f, g, o = (G[q * n_h:(q + 1) * n_h, t] for q in range(4))
        tc = np.tanh(C[:, t])
        dh_t = dH[:, t] + dh
        dHt[:, t] = dh_t
        dc_t = dc + dh_t * o * (1 - tc ** 2)
        D[:, t] = np.concatenate([dc_t * g * i * (1 - i), dc_t * Cprev[:, t] * f * (1 - f),
                                  dc_t * i * (1 - g ** 2), dh_t * tc * o * (1 - o)])
        dh = W_h.T @ D[:, t]
        dc = dc_t * f
    Hprev = np.concatenate([h0[:, None], H[:, :-1]], axis=1)
    Df = D.reshape(4 * n_h, T * m)
    dW_x = Df @ X.reshape(d, T * m).T
    dW_h = Df @ Hprev.reshape(n_h, T * m).T
    dX = (W_x.T @ Df).reshape(d, T, m)
    if steps is not None:
        steps.update(D=D, Dh=D, dh=dHt)
    return dW_x, dW_h, Df.sum(axis=1), dX, dh, dc


def gru_forward(W_x, W_h, b_x, b_h, X, h0):
    """``(H, G)``: gates ``r, z, n`` and the recurrent product ``y_n`` stacked in ``G``."""
    d, T, m = X.shape
    n_h = h0.shape[0]
    A = (W_x @ X.reshape(d, T * m)).reshape(3 * n_h, T, m) + b_x[:, None, None]
    H, G = np.empty((n_h, T, m), X.dtype), np.empty((4 * n_h, T, m), X.dtype)
    h = h0
    for t in range(T):
        y = W_h @ h + b_h[:, None]
        r = _sig(A[:n_h, t] + y[:n_h])
        z = _sig(A[n_h:2 * n_h, t] + y[n_h:2 * n_h])
        n = np.tanh(A[2 * n_h:, t] + r * y[2 * n_h:])
        h = (1 - z) * n + z * h
        G[:, t] = np.concatenate([r, z, n, y[2 * n_h:]])
        H[:, t] = h
    return H, G


def gru_backward(dH, W_x, W_h, X, h0, H, G, dh_T, steps=None):
    """``(dW_x, dW_h, db_x, db_h, dX, dh0)``. """
    d, T, m = X.shape
    n_h = H.shape[0]
    Dx, Dy = np.empty((3 * n_h, T, m), X.dtype), np.empty((3 * n_h, T, m), X.dtype)
    Hprev = np.concatenate([h0[:, None], H[:, :-1]], axis=1)
    dHt = np.empty_like(H)
    dh = dh_T
    for t in range(T - 1, -1, -1):
        r, z, n, y_n = (G[q * n_h:(q + 1) * n_h, t] for q in range(4))
        dh_t = dH[:, t] + dh
        dHt[:, t] = dh_t
        d_n = dh_t * (1 - z) * (1 - n ** 2)
        d_r = d_n * y_n * r * (1 - r)
        d_z = dh_t * (Hprev[:, t] - n) * z * (1 - z)
        Dx[:, t] = np.concatenate([d_r, d_z, d_n])
        Dy[:, t] = np.concatenate([d_r, d_z, d_n * r])
        dh = dh_t * z + W_h.T @ Dy[:, t]
    Dxf, Dyf = Dx.reshape(3 * n_h, T * m), Dy.reshape(3 * n_h, T * m)
    dW_x = Dxf @ X.reshape(d, T * m).T
    dW_h = Dyf @ Hprev.reshape(n_h, T * m).T
    dX = (W_x.T @ Dxf).reshape(d, T, m)
    if steps is not None:
        steps.update(D=Dx, Dh=Dy, dh=dHt)
    return dW_x, dW_h, Dxf.sum(axis=1), Dyf.sum(axis=1), dX, dh


for _f in (rnn_backward, lstm_backward, gru_backward):
    _f.__doc__ += _STEPS_DOC
