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

The tuned attention has two strategies, chosen by :func:`_use_lanes`: one example's block at
a time (:mod:`loopprop.kernels.attention_items`) and the examples in the lanes
(:mod:`loopprop.kernels.attention_lanes`).
"""

from __future__ import annotations

import math

import numpy as np

from .. import _checks
from .._jit import kernel, prange, runtime_flag, use_threads
from .attention_items import _attention_backward_items, _attention_forward_items
from .attention_lanes import _attention_backward_lanes, _attention_forward_lanes
from .simd import (
    lanes,
)
from .views import borrowed_flat


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
# tuned twins of the embedding (the batch item ``k`` innermost, contiguous in memory) and the
# attention dispatch between its two strategies
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


@kernel(fast=True, parallel=True, separate=True)
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


#: the longest ``T · d_head`` the lanes kernels take (float32, 2 threads, against the items
#: kernels; measured runs in docs/performance.md): 1.1-2.4x faster up to 8192 (T 64-256,
#: d_head 32-128); at T 256 ×
#: d_head 64 0.85-0.92x -- a head's P no longer fits L2 and the sums over t read it a 16 KiB
#: step at a time
LANES_MAX_TD = 8192


@kernel(inline=True)
def _use_lanes(Q):
    """Whether the lanes kernels take ``Q (n_head, d_head, T, m)``: ``m`` a whole number of
    registers and ``T · d_head`` at most :data:`LANES_MAX_TD`."""
    return Q.shape[3] % lanes(borrowed_flat(Q)) == 0 and Q.shape[1] * Q.shape[2] <= LANES_MAX_TD


@kernel(separate=True)
def _attention_forward_tuned(O, P, Q, K, V, causal, threads):
    """The tuned forward: the examples in the lanes when ``m`` is a whole number of registers
    (:func:`~loopprop.kernels.attention_lanes._attention_forward_lanes`; :func:`_use_lanes`),
    otherwise one example's block at a time
    (:func:`~loopprop.kernels.attention_items._attention_forward_items`). Shapes: as
    :func:`_attention_forward_naive`."""
    if _use_lanes(Q):
        _attention_forward_lanes(O, P, Q, K, V, causal, threads)
    else:
        _attention_forward_items(O, P, Q, K, V, causal, threads)


@kernel(separate=True)
def _attention_backward_tuned(dQ, dK, dV, dO, Q, K, V, P, causal, add, threads):
    """The tuned backward, dispatched as :func:`_attention_forward_tuned`; ``dQ, dK, dV`` add
    (``add``) or are written. Shapes: as :func:`_attention_backward_naive`."""
    if _use_lanes(Q):
        _attention_backward_lanes(dQ, dK, dV, dO, Q, K, V, P, causal, add, threads)
    else:
        _attention_backward_items(dQ, dK, dV, dO, Q, K, V, P, causal, add, threads)


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


@kernel(fast=True)
def _zero_above_diagonal(P):
    """Whether ``P[h, t, s, k] == 0`` for every ``s > t`` (the causal mask), stopping at the
    first entry that is not. Shape: P (n_head, T, T, m)."""
    n_head, T, _, m = P.shape
    for h in range(n_head):
        for t in range(T):
            row = P[h, t, t + 1:].reshape((T - t - 1) * m)
            for i in range(row.shape[0]):
                if row[i] != 0.0:
                    return False
    return True


def attention_backward(dO, Q, K, V, P, *, causal: bool | None = None, impl: str = "tuned",
                       check_finite: bool = True):
    """Gradients of :func:`attention_forward`: ``(dQ, dK, dV)``; ``P`` is the one it returned.
    The tuned kernel skips the keys after each query when the attention was causal: say so with
    ``causal`` or leave it ``None`` and P's zeros decide (a scan of the part above the
    diagonal). ``impl``: ``"tuned"`` or ``"naive"`` (which skips each zero of P)."""
    _checks.check_choice(impl, "impl", IMPLS)
    if causal is not None and not isinstance(causal, bool):
        raise TypeError(f"causal: expected True, False or None, got {_checks._describe(causal)}")
    a = _heads({"dO": dO, "Q": Q, "K": K, "V": V}, "Q", check_finite)
    n_head, d_head, T, m = a["Q"].shape
    P = _checks.as_float_array(P, "P", 4, check_finite=check_finite,
                               hint="P has shape (n_head, T, T, m)")
    _checks.same_dtype(Q=a["Q"], P=P)
    _checks.require_shape(P, "P", (n_head, T, T, m), "the probabilities attention_forward "
                          "returned")
    if impl == "naive":
        dQ, dK, dV = (np.zeros_like(a["Q"]) for _ in range(3))
        _attention_backward_naive(dQ, dK, dV, a["dO"], a["Q"], a["K"], a["V"], P)
    else:
        if causal is None:
            causal = bool(_zero_above_diagonal(P))
        dQ, dK, dV = (np.empty_like(a["Q"]) for _ in range(3))
        _attention_backward_tuned(dQ, dK, dV, a["dO"], a["Q"], a["K"], a["V"], P, causal,
                                  runtime_flag(False), use_threads(True))
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
