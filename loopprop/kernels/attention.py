"""Token embeddings, learned positions and causal self-attention, forward and backward, as
explicit loops (docs/formulas.md, "Embeddings and causal self-attention"), with tuned twins
tested against them; the layers are in :mod:`loopprop.layers.sequence`.

Layout: features first, time ``t`` next, the batch item ``k`` last -- ``X (d, T, m)``;
attention's heads ``(n_head, d_head, T, m)``. Index names: ``h`` head, ``e`` feature of a head,
``t`` query time, ``s`` key time, ``k`` batch item.

Embedding (one column of ``E (d, V)`` per token)::

    X[j, t, k] = E[j, ids[t, k]]                    dE[j, v] += Σ_{t,k: ids[t,k] = v} dX[j, t, k]

Attention, with scale ``α = 1/√d_head`` and, when causal, only keys ``s ≤ t``::

    S[h, t, s, k] = α · Σ_e Q[h, e, t, k] · K[h, e, s, k]
    P[h, t, s, k] = exp(S[h, t, s, k] − max_s S) / Σ_s exp(S[h, t, s, k] − max_s S)
    O[h, e, t, k] = Σ_s P[h, t, s, k] · V[h, e, s, k]

Backward (each line the chain rule through the line above it)::

    dP[h, t, s, k] = Σ_e dO[h, e, t, k] · V[h, e, s, k]
    dV[h, e, s, k] = Σ_t P[h, t, s, k] · dO[h, e, t, k]
    dS[h, t, s, k] = P[h, t, s, k] · (dP[h, t, s, k] − Σ_s' P[h, t, s', k] · dP[h, t, s', k])
    dQ[h, e, t, k] = α · Σ_s dS[h, t, s, k] · K[h, e, s, k]
    dK[h, e, s, k] = α · Σ_t dS[h, t, s, k] · Q[h, e, t, k]

The softmax backward is written out (``dS = P ⊙ (dP − Σ_s P·dP)``): the row sum is the
Jacobian of softmax applied to ``dP``. Masked entries have ``P = 0``, so they get no
gradient.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks
from .._jit import kernel, prange, runtime_flag, use_threads
from .activations import _EXP_DEGREE_F32, _exp
from .gemm import _gemm


@kernel
def _embedding_forward_naive(X, E, ids):
    """``X[j, t, k] = E[j, ids[t, k]]``. Shapes: X (d, T, m) written; E (d, V); ids (T, m)."""
    d, T, m = X.shape
    for j in range(d):
        for t in range(T):
            for k in range(m):
                X[j, t, k] = E[j, ids[t, k]]


@kernel
def _embedding_backward_naive(dE, dX, ids):
    """``dE[j, ids[t, k]] += dX[j, t, k]``: repeated tokens add. Shapes: dE (d, V); dX (d, T, m);
    ids (T, m)."""
    d, T, m = dX.shape
    for j in range(d):
        for t in range(T):
            for k in range(m):
                dE[j, ids[t, k]] += dX[j, t, k]


@kernel
def _attention_forward_naive(O, P, Q, K, V, causal):
    """The three lines of the module docstring's forward pass, as loops. Shapes: O, Q, K, V
    (n_head, d_head, T, m); P (n_head, T, T, m) written (0 where masked)."""
    n_head, d_head, T, m = Q.shape
    alpha = 1.0 / math.sqrt(d_head)
    for h in range(n_head):
        for k in range(m):
            for t in range(T):
                last = t + 1 if causal else T  # keys s < last are visible
                top = -np.inf
                for s in range(last):
                    acc = 0.0
                    for e in range(d_head):
                        acc += Q[h, e, t, k] * K[h, e, s, k]
                    P[h, t, s, k] = alpha * acc  # the score S, for now
                    if P[h, t, s, k] > top:
                        top = P[h, t, s, k]
                total = 0.0
                for s in range(last):
                    P[h, t, s, k] = math.exp(P[h, t, s, k] - top)
                    total += P[h, t, s, k]
                for s in range(T):
                    P[h, t, s, k] = P[h, t, s, k] / total if s < last else 0.0
                for e in range(d_head):
                    acc = 0.0
                    for s in range(last):
                        acc += P[h, t, s, k] * V[h, e, s, k]
                    O[h, e, t, k] = acc


@kernel
def _attention_backward_naive(dQ, dK, dV, dO, Q, K, V, P):
    """The five lines of the module docstring's backward pass, as loops; ``dQ, dK, dV`` add.
    Shapes: all (n_head, d_head, T, m) but P (n_head, T, T, m)."""
    n_head, d_head, T, m = Q.shape
    alpha = 1.0 / math.sqrt(d_head)
    for h in range(n_head):
        for k in range(m):
            for t in range(T):
                # dP[t, s] = Σ_e dO[e, t] · V[e, s], and the softmax's row sum Σ_s P·dP
                row = 0.0
                for s in range(T):
                    if P[h, t, s, k] != 0.0:
                        dp = 0.0
                        for e in range(d_head):
                            dp += dO[h, e, t, k] * V[h, e, s, k]
                        row += P[h, t, s, k] * dp
                for s in range(T):
                    p = P[h, t, s, k]
                    if p == 0.0:
                        continue  # masked (or underflowed): no gradient through it
                    dp = 0.0
                    for e in range(d_head):
                        dp += dO[h, e, t, k] * V[h, e, s, k]
                        dV[h, e, s, k] += p * dO[h, e, t, k]
                    ds = p * (dp - row)
                    for e in range(d_head):
                        dQ[h, e, t, k] += alpha * ds * K[h, e, s, k]
                        dK[h, e, s, k] += alpha * ds * Q[h, e, t, k]


# ---------------------------------------------------------------------------------------------
# tuned twins: the same sums with the batch item ``k`` innermost (contiguous in memory), one
# head per thread
# ---------------------------------------------------------------------------------------------


@kernel(fast=True)
def _embedding_forward_tuned(X, E, ids):
    """``X[j, n] = E[j, ids[n]]`` for every position ``n = t·m + k`` of the flat ``(d, T·m)``
    view: row ``j`` of E is read once per pass over the positions, X written in order.
    ``ids`` may hold integers or integral floats (the epoch keeps them in its float buffer).
    Shapes: X (d, N) written; E (d, V); ids (N,)."""
    d, N = X.shape
    for j in range(d):
        row = E[j]
        out = X[j]
        for n in range(N):
            out[n] = row[int(ids[n])]


@kernel(fast=True, parallel=True)
def _embedding_backward_tuned(dE, dX, ids, threads):
    """``dE[j, ids[n]] += dX[j, n]``: the thread of row ``j`` owns ``dE[j]``, so repeated
    tokens add in a fixed order (bitwise reproducible). Shapes: dE (d, V); dX (d, N); ids (N,).
    """
    d, N = dX.shape
    if threads > 1:
        for j in prange(d):
            _scatter_row(dE[j], dX[j], ids)
    else:
        for j in range(d):
            _scatter_row(dE[j], dX[j], ids)


@kernel(fast=True)
def _scatter_row(dst, src, ids):
    for n in range(src.shape[0]):
        dst[int(ids[n])] += src[n]


@kernel(fast=True)
def _to_items(dst, src):
    """``dst[k, r] = src[r, k]``: a head's values for every example, ``(rows, m)`` with the
    batch last, turned into one contiguous block per example. Shapes: dst (m, rows); src
    (rows, m)."""
    rows, m = src.shape
    for r0 in range(0, rows, 16):  # 16 rows of src are contiguous: read them from L1 m times
        r1 = min(r0 + 16, rows)
        for k in range(m):
            out = dst[k]
            for r in range(r0, r1):
                out[r] = src[r, k]


@kernel(fast=True)
def _from_items(dst, src, add):
    """``dst[r, k] (+)= src[k, r]``, the inverse of :func:`_to_items`."""
    rows, m = dst.shape
    for r0 in range(0, rows, 16):  # blocks of 16 rows, as _to_items
        r1 = min(r0 + 16, rows)
        for k in range(m):
            inp = src[k]
            for r in range(r0, r1):
                prev = dst[r, k] if add else 0.0
                dst[r, k] = prev + inp[r]


@kernel(fast=True)
def _softmax_rows(S, alpha, causal):
    """Row ``t`` of ``S (T, T)`` becomes ``softmax_s(α·S[t, s])`` over the visible keys (``s ≤
    t`` when causal), 0 beyond; the exponentials through the vectorizable
    :func:`~loopprop.kernels.activations._exp` (fast-math is safe here: every argument is
    ≤ 0, far from the overflow its docstring guards against)."""
    T = S.shape[0]
    single = S.itemsize == 4
    for t in range(T):
        last = t + 1 if causal else T
        row = S[t]
        top = alpha * row[0]
        for s in range(1, last):
            top = max(top, alpha * row[s])
        if single:
            for s in range(last):
                row[s] = _exp(alpha * row[s] - top, _EXP_DEGREE_F32)
        else:
            for s in range(last):
                row[s] = _exp(alpha * row[s] - top)
        total = 0.0
        for s in range(last):
            total += row[s]
        inv = 1.0 / total
        for s in range(last):
            row[s] *= inv
        for s in range(last, T):
            row[s] = 0.0


@kernel(fast=True)
def _attention_head_forward(O, P, Q, K, V, causal, Qt, Kt, Vt, Ot, S):
    """One head for every example of the batch, as matrix products on contiguous copies.

    Per example ``k`` (``Qt[k] = Q[:, :, k]``, ``(d_head, T)``): ``S = Qtᵀ·Kt``, the causal
    softmax of its rows (into ``S[k]``), ``Ot = Vt·Sᵀ`` -- on the packed kernel of
    :mod:`~loopprop.kernels.gemm`, the full square (the masked half is computed and zeroed:
    cheaper than a triangle of short dot products). Shapes: O, Q, K, V (d_head, T, m); P (T, T,
    m) written; workspaces Qt, Kt, Vt, Ot (m, d_head·T), S (m, T·T)."""
    d_head, T, m = Q.shape
    _to_items(Qt, Q.reshape(d_head * T, m))
    _to_items(Kt, K.reshape(d_head * T, m))
    _to_items(Vt, V.reshape(d_head * T, m))
    S[:] = 0.0
    Ot[:] = 0.0
    alpha = 1.0 / math.sqrt(d_head)
    for k in range(m):
        Sk = S[k].reshape(T, T)
        _gemm(Sk, Qt[k].reshape(d_head, T), Kt[k].reshape(d_head, T), runtime_flag(True),
              runtime_flag(False), 1)
        _softmax_rows(Sk, alpha, causal)
        _gemm(Ot[k].reshape(d_head, T), Vt[k].reshape(d_head, T), Sk, runtime_flag(False),
              runtime_flag(True), 1)
    _from_items(P.reshape(T * T, m), S, runtime_flag(False))
    _from_items(O.reshape(d_head * T, m), Ot, runtime_flag(False))


@kernel(fast=True, parallel=True)
def _attention_forward_tuned(O, P, Q, K, V, causal, threads):
    """:func:`_attention_forward_naive` as matrix products, one head per thread
    (:func:`_attention_head_forward`). Shapes: O, Q, K, V (n_head, d_head, T, m); P (n_head,
    T, T, m) written."""
    n_head, d_head, T, m = Q.shape
    chunks = max(1, min(threads, n_head))
    for c in prange(chunks):
        Qt = np.empty((m, d_head * T), Q.dtype)
        Kt = np.empty((m, d_head * T), Q.dtype)
        Vt = np.empty((m, d_head * T), Q.dtype)
        Ot = np.empty((m, d_head * T), Q.dtype)
        S = np.empty((m, T * T), Q.dtype)
        for h in range(c * n_head // chunks, (c + 1) * n_head // chunks):
            _attention_head_forward(O[h], P[h], Q[h], K[h], V[h], causal, Qt, Kt, Vt, Ot, S)


@kernel(fast=True)
def _attention_head_backward(dQ, dK, dV, dO, Q, K, V, P, Qt, Kt, Vt, dOt, G, Pk, dS):
    """The backward products of one head for every example, on contiguous ``(d_head, T)``
    copies: ``dP = dOtᵀ·Vt``, ``dS = α·P ⊙ (dP − Σ_s P·dP)``, ``dVt = dOt·P``,
    ``dQt = Kt·dSᵀ``, ``dKt = Qt·dS``; each added back into the batch layout. Workspaces Qt,
    Kt, Vt, dOt (m, d_head·T); G (3, m, d_head·T); Pk (m, T·T); dS (T, T)."""
    d_head, T, m = Q.shape
    alpha = 1.0 / math.sqrt(d_head)
    _to_items(Qt, Q.reshape(d_head * T, m))
    _to_items(Kt, K.reshape(d_head * T, m))
    _to_items(Vt, V.reshape(d_head * T, m))
    _to_items(dOt, dO.reshape(d_head * T, m))
    _to_items(Pk, P.reshape(T * T, m))
    G[:] = 0.0
    for k in range(m):
        Pm = Pk[k].reshape(T, T)
        qt, kt = Qt[k].reshape(d_head, T), Kt[k].reshape(d_head, T)
        vt, dot = Vt[k].reshape(d_head, T), dOt[k].reshape(d_head, T)
        dS[:] = 0.0
        _gemm(dS, dot, vt, runtime_flag(True), runtime_flag(False), 1)  # dP = dOᵀ-major
        for t in range(T):
            row = 0.0
            for s in range(T):
                row += Pm[t, s] * dS[t, s]
            for s in range(T):
                dS[t, s] = alpha * Pm[t, s] * (dS[t, s] - row)
        _gemm(G[2, k].reshape(d_head, T), dot, Pm, runtime_flag(False), runtime_flag(False), 1)
        _gemm(G[0, k].reshape(d_head, T), kt, dS, runtime_flag(False), runtime_flag(True), 1)
        _gemm(G[1, k].reshape(d_head, T), qt, dS, runtime_flag(False), runtime_flag(False), 1)
    _from_items(dQ.reshape(d_head * T, m), G[0], runtime_flag(True))
    _from_items(dK.reshape(d_head * T, m), G[1], runtime_flag(True))
    _from_items(dV.reshape(d_head * T, m), G[2], runtime_flag(True))


@kernel(fast=True, parallel=True)
def _attention_backward_tuned(dQ, dK, dV, dO, Q, K, V, P, causal, threads):
    """:func:`_attention_backward_naive` as matrix products, one head per thread
    (:func:`_attention_head_backward`); ``dQ, dK, dV`` add. Masked entries of P are 0 and add
    nothing (``causal`` is not needed by the products). Shapes: as the naive."""
    n_head, d_head, T, m = Q.shape
    chunks = max(1, min(threads, n_head))
    for c in prange(chunks):
        Qt = np.empty((m, d_head * T), Q.dtype)
        Kt = np.empty((m, d_head * T), Q.dtype)
        Vt = np.empty((m, d_head * T), Q.dtype)
        dOt = np.empty((m, d_head * T), Q.dtype)
        G = np.empty((3, m, d_head * T), Q.dtype)
        Pk = np.empty((m, T * T), Q.dtype)
        dS = np.empty((T, T), Q.dtype)
        for h in range(c * n_head // chunks, (c + 1) * n_head // chunks):
            _attention_head_backward(dQ[h], dK[h], dV[h], dO[h], Q[h], K[h], V[h], P[h], Qt, Kt,
                                     Vt, dOt, G, Pk, dS)


def _ids(ids, name: str, V: int) -> np.ndarray:
    """Token ids: an integer array ``(T, m)`` with every value in ``[0, V)``."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise TypeError(f"{name}: expected integer token ids, got dtype {arr.dtype}; convert "
                        f"with {name}.astype(np.int64) (ids are column indices of E)")
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected shape (T, m), got {arr.ndim}-D with shape "
                         f"{arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= V):
        bad = arr[(arr < 0) | (arr >= V)].flat[0]
        raise ValueError(f"{name}: token id {int(bad)} is outside the vocabulary [0, {V}); "
                         "encode the text with the same vocabulary as the embedding")
    return np.ascontiguousarray(arr, dtype=np.int64)


IMPLS = ("tuned", "naive")


def embedding_forward(E, ids, *, impl: str = "tuned", check_finite: bool = True) -> np.ndarray:
    """``X[j, t, k] = E[j, ids[t, k]]``: ``E (d, V)`` one column per token, ``ids (T, m)``
    integers in ``[0, V)``; returns ``X (d, T, m)``. ``impl``: ``"tuned"`` or ``"naive"``."""
    _checks.check_choice(impl, "impl", IMPLS)
    E = _checks.as_float_array(E, "E", 2, check_finite=check_finite,
                               hint="E has shape (d, V): one column per token")
    ids = _ids(ids, "ids", E.shape[1])
    X = np.empty((E.shape[0], *ids.shape), E.dtype)
    if impl == "naive":
        _embedding_forward_naive(X, E, ids)
    else:
        _embedding_forward_tuned(X.reshape(E.shape[0], -1), E, ids.reshape(-1))
    return X


def embedding_backward(dX, ids, V: int, *, impl: str = "tuned",
                       check_finite: bool = True) -> np.ndarray:
    """``dE (d, V)``: column ``v`` sums ``dX[:, t, k]`` over every position holding token ``v``
    (repeated tokens add). ``impl``: ``"tuned"`` or ``"naive"``."""
    _checks.check_choice(impl, "impl", IMPLS)
    dX = _checks.as_float_array(dX, "dX", 3, check_finite=check_finite,
                                hint="dX has shape (d, T, m)")
    V = _checks.check_positive_int(V, "V")
    ids = _ids(ids, "ids", V)
    _checks.require_shape(ids, "ids", dX.shape[1:], "one id per position of dX")
    dE = np.zeros((dX.shape[0], V), dX.dtype)
    if impl == "naive":
        _embedding_backward_naive(dE, dX, ids)
    else:
        _embedding_backward_tuned(dE, np.ascontiguousarray(dX).reshape(dX.shape[0], -1),
                                  ids.reshape(-1), use_threads(True))
    return dE


def _heads(arrays: dict, ref: str, check_finite: bool) -> dict:
    out = {}
    for name, a in arrays.items():
        out[name] = _checks.as_float_array(a, name, 4, check_finite=check_finite,
                                           hint="heads have shape (n_head, d_head, T, m)")
    _checks.same_dtype(**out)
    for name, a in out.items():
        _checks.require_shape(a, name, out[ref].shape, f"the shape of {ref}")
    return out


def attention_forward(Q, K, V, causal: bool = True, *, impl: str = "tuned",
                      check_finite: bool = True):
    """Scaled dot-product attention per head: ``(O, P)`` with ``O (n_head, d_head, T, m)`` and
    the probabilities ``P (n_head, T, T, m)`` (``P[h, t, s, k]``: query ``t`` attends to key
    ``s``; scale ``1/√d_head``; causal: ``s ≤ t``, the rest 0). ``impl``: ``"tuned"`` or
    ``"naive"``."""
    _checks.check_choice(impl, "impl", IMPLS)
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected True or False, got {_checks._describe(causal)}")
    a = _heads({"Q": Q, "K": K, "V": V}, "Q", check_finite)
    n_head, d_head, T, m = a["Q"].shape
    O = np.empty_like(a["Q"])
    P = np.empty((n_head, T, T, m), a["Q"].dtype)
    if impl == "naive":
        _attention_forward_naive(O, P, a["Q"], a["K"], a["V"], causal)
    else:
        _attention_forward_tuned(O, P, a["Q"], a["K"], a["V"], causal, use_threads(True))
    return O, P


def attention_backward(dO, Q, K, V, P, *, impl: str = "tuned", check_finite: bool = True):
    """Gradients of :func:`attention_forward`: ``(dQ, dK, dV)``; ``P`` is the one it returned
    (its zeros carry the causal mask: the tuned kernel skips the keys after each query when
    every one of them is zero, the naive one skips each zero). ``impl``: ``"tuned"`` or
    ``"naive"``."""
    _checks.check_choice(impl, "impl", IMPLS)
    a = _heads({"dO": dO, "Q": Q, "K": K, "V": V}, "Q", check_finite)
    n_head, d_head, T, m = a["Q"].shape
    P = _checks.as_float_array(P, "P", 4, check_finite=check_finite,
                               hint="P has shape (n_head, T, T, m)")
    _checks.same_dtype(Q=a["Q"], P=P)
    _checks.require_shape(P, "P", (n_head, T, T, m), "the probabilities attention_forward "
                          "returned")
    dQ, dK, dV = (np.zeros_like(a["Q"]) for _ in range(3))
    if impl == "naive":
        _attention_backward_naive(dQ, dK, dV, a["dO"], a["Q"], a["K"], a["V"], P)
    else:
        causal = not np.triu(np.moveaxis(P, -1, 1), 1).any()  # (n_head, m, T, T): s > t zero
        _attention_backward_tuned(dQ, dK, dV, a["dO"], a["Q"], a["K"], a["V"], P, causal,
                                  use_threads(True))
    return dQ, dK, dV


# ---------------------------------------------------------------------------------------------
# learned positions: a column of P (d, T_max) added at each time step
# ---------------------------------------------------------------------------------------------


@kernel(fast=True)
def _position_forward(Y, X, W, T):
    """``Y[j, t, k] = X[j, t, k] + W[j, t]`` on the flat views. Shapes: Y, X (d·T, m) (row
    ``j·T + t``); W (d, T_max) with T ≤ T_max."""
    rows, m = X.shape
    for r in range(rows):
        w = W[r // T, r % T]
        for k in range(m):
            Y[r, k] = X[r, k] + w


@kernel(fast=True)
def _position_backward(dW, dX, dY, T, need_dx):
    """``dW[j, t] += Σ_k dY[j, t, k]`` and ``dX[j, t, k] += dY[j, t, k]`` (the input passes
    straight through an addition). Shapes as :func:`_position_forward`."""
    rows, m = dY.shape
    for r in range(rows):
        s = 0.0
        for k in range(m):
            s += dY[r, k]
        dW[r // T, r % T] += s
        if need_dx:
            for k in range(m):
                dX[r, k] += dY[r, k]
