"""The rows of ``Embedding``, ``PositionEmbedding`` and ``CausalSelfAttention``
(docs/formulas.md, "Token and position embeddings", "The attention layer"), and the decode
rows of the two that see positions: one position at a time, with a cache of keys and values
(:mod:`loopprop.generate`)."""

from __future__ import annotations

import math

import numpy as np

from .._jit import runtime_flag
from ..kernels.attention import (_attention_backward_tuned, _attention_forward_tuned,
                                 _embedding_backward_tuned, _embedding_forward_tuned,
                                 _position_backward, _position_forward)
from ..kernels.dense import _dense_layer_backward, _dense_layer_forward, transposed_rows
from ..layers.sequence import CausalSelfAttention, Embedding, PositionEmbedding
from ..plan import IN_OFF, OUT_OFF
from .common import _img, _vec, _view, _zero

E_V, E_D, E_T, E_E = Embedding.columns("vocab_size", "n_embd", "T", "E")
P_D, P_T, P_BLOCK, P_W = PositionEmbedding.columns("d", "T", "block_size", "W")
A_C, A_T, A_HEADS, A_TMAX = CausalSelfAttention.columns("C", "T", "n_head", "t_max")
W_QKV, B_QKV, W_O, B_O = CausalSelfAttention.columns("W_qkv", "b_qkv", "W_o", "b_o")
X_T, QKV, PROBS, ATT, ATT_T = CausalSelfAttention.columns("XT", "QKV", "P", "O", "OT")
D_ATT, D_QKV = CausalSelfAttention.columns("dO", "dQKV")


def embedding_forward(r, plan, fplan, b, s):
    """``X[j, t, k] = E[j, ids[t, k]]`` for an ``Embedding`` row (the ids are its input,
    ``(T, mb)`` as floats)."""
    mb = s.mb
    V, d, N = plan[r, E_V], plan[r, E_D], plan[r, E_T] * mb
    _embedding_forward_tuned(_view(b.acts, plan[r, OUT_OFF] * mb, d, N),
                             _view(b.theta, plan[r, E_E], d, V),
                             _vec(b.acts, plan[r, IN_OFF] * mb, N))


def embedding_backward(r, plan, fplan, b, s):
    """``dE[j, ids[t, k]] += dX[j, t, k]``. The ids have no gradient."""
    mb = s.mb
    V, d, N = plan[r, E_V], plan[r, E_D], plan[r, E_T] * mb
    _embedding_backward_tuned(_view(b.grad, plan[r, E_E], d, V),
                              _view(b.dacts, plan[r, OUT_OFF] * mb, d, N),
                              _vec(b.acts, plan[r, IN_OFF] * mb, N), s.threads)


def position_forward(r, plan, fplan, b, s):
    """``Y[j, t, k] = X[j, t, k] + W[j, t]`` for a ``PositionEmbedding`` row."""
    mb = s.mb
    d, T = plan[r, P_D], plan[r, P_T]
    _position_forward(_view(b.acts, plan[r, OUT_OFF] * mb, d * T, mb),
                      _view(b.acts, plan[r, IN_OFF] * mb, d * T, mb),
                      _view(b.theta, plan[r, P_W], d, plan[r, P_BLOCK]), T)


def position_backward(r, plan, fplan, b, s):
    """``dW[j, t] += Σ_k dY[j, t, k]``, ``dX += dY`` (not for row 0)."""
    mb = s.mb
    d, T = plan[r, P_D], plan[r, P_T]
    _position_backward(_view(b.grad, plan[r, P_W], d, plan[r, P_BLOCK]),
                       _view(b.dacts, plan[r, IN_OFF] * mb, d * T, mb),
                       _view(b.dacts, plan[r, OUT_OFF] * mb, d * T, mb), T, r > 0)


def position_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """One position: ``y[j] = x[j] + W[j, pos]``."""
    d, t_max = plan[r, P_D], plan[r, P_BLOCK]
    W = _view(b.theta, plan[r, P_W], d, t_max)
    x, y = plan[r, IN_OFF], plan[r, OUT_OFF]
    for j in range(d):
        b.acts[y + j] = b.acts[x + j] + W[j, pos]


def attention_forward(r, plan, fplan, b, s):
    """A ``CausalSelfAttention`` row: ``QKV = W_qkv·X + b_qkv``, attention per head,
    ``Y = W_o·O + b_o`` (the cache layout is the layer's docstring's)."""
    mb = s.mb
    C, T, n_head = plan[r, A_C], plan[r, A_T], plan[r, A_HEADS]
    N = T * mb
    qkv, probs, att = plan[r, QKV] * mb, plan[r, PROBS] * mb, plan[r, ATT] * mb
    dh = C // n_head
    # the projections' inputs transposed: rows for small layers, none for large ones
    x_t, o_t = transposed_rows(3 * C, C, T, mb), transposed_rows(C, C, T, mb)
    cache = b.cache
    _dense_layer_forward(_view(cache, qkv, 3 * C, N), _view(b.theta, plan[r, W_QKV], 3 * C, C),
                         _vec(b.theta, plan[r, B_QKV], 3 * C),
                         _view(b.acts, plan[r, IN_OFF] * mb, C, N),
                         _view(cache, plan[r, X_T] * mb, x_t, C), s.threads)
    _attention_forward_tuned(_img(cache, att, n_head, dh, T, mb),
                             _img(cache, probs, n_head, T, T, mb),
                             _img(cache, qkv, n_head, dh, T, mb),
                             _img(cache, qkv + C * N, n_head, dh, T, mb),
                             _img(cache, qkv + 2 * C * N, n_head, dh, T, mb), runtime_flag(True),
                             s.threads)
    _dense_layer_forward(_view(b.acts, plan[r, OUT_OFF] * mb, C, N),
                         _view(b.theta, plan[r, W_O], C, C), _vec(b.theta, plan[r, B_O], C),
                         _view(cache, att, C, N), _view(cache, plan[r, ATT_T] * mb, o_t, C),
                         s.threads)


def attention_backward(r, plan, fplan, b, s):
    """Backward through a ``CausalSelfAttention`` row: the output projection, attention per
    head, the QKV projection (each adds into its gradients)."""
    mb = s.mb
    C, T, n_head = plan[r, A_C], plan[r, A_T], plan[r, A_HEADS]
    N = T * mb
    x_off = plan[r, IN_OFF] * mb
    qkv, probs, att = plan[r, QKV] * mb, plan[r, PROBS] * mb, plan[r, ATT] * mb
    dh = C // n_head
    # the projections' inputs transposed: rows for small layers, none for large ones
    x_t, o_t = transposed_rows(3 * C, C, T, mb), transposed_rows(C, C, T, mb)
    datt, dqkv = plan[r, D_ATT] * mb, plan[r, D_QKV] * mb
    w_o, w_qkv = plan[r, W_O], plan[r, W_QKV]
    cache, work = b.cache, b.work
    _zero(_vec(work, datt, C * N))  # dO: the output projection's backward adds into it
    _dense_layer_backward(_view(b.grad, w_o, C, C), _vec(b.grad, plan[r, B_O], C),
                          _view(work, datt, C, N), _view(b.dacts, plan[r, OUT_OFF] * mb, C, N),
                          _view(b.theta, w_o, C, C), _view(cache, att, C, N),
                          _view(cache, plan[r, ATT_T] * mb, o_t, C), runtime_flag(True), s.threads)
    _attention_backward_tuned(_img(work, dqkv, n_head, dh, T, mb),
                              _img(work, dqkv + C * N, n_head, dh, T, mb),
                              _img(work, dqkv + 2 * C * N, n_head, dh, T, mb),
                              _img(work, datt, n_head, dh, T, mb),
                              _img(cache, qkv, n_head, dh, T, mb),
                              _img(cache, qkv + C * N, n_head, dh, T, mb),
                              _img(cache, qkv + 2 * C * N, n_head, dh, T, mb),
                              _img(cache, probs, n_head, T, T, mb), runtime_flag(True),
                              runtime_flag(False), s.threads)  # dQKV written
    _dense_layer_backward(_view(b.grad, w_qkv, 3 * C, C), _vec(b.grad, plan[r, B_QKV], 3 * C),
                          _view(b.dacts, x_off, C, N), _view(work, dqkv, 3 * C, N),
                          _view(b.theta, w_qkv, 3 * C, C), _view(b.acts, x_off, C, N),
                          _view(cache, plan[r, X_T] * mb, x_t, C), r > 0, s.threads)


def attention_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """A ``CausalSelfAttention`` row on one position ``pos``: project, append ``k, v`` to the
    row's cache ``kv[kv_off : kv_off + 2·C·T_max]`` (``K (C, T_max)`` then ``V``), attend over
    positions ``0 … pos``, project back."""
    C, n_head = plan[r, A_C], plan[r, A_HEADS]
    t_max = plan[r, A_TMAX]  # set by generate._Stepper: the cache's length
    cache = b.cache
    qkv, att = plan[r, QKV], plan[r, ATT]  # the T = 1 plan's parts (one example)
    _dense_layer_forward(_view(cache, qkv, 3 * C, 1), _view(b.theta, plan[r, W_QKV], 3 * C, C),
                         _vec(b.theta, plan[r, B_QKV], 3 * C),
                         _view(b.acts, plan[r, IN_OFF], C, 1), _view(cache, plan[r, X_T], 1, C),
                         1)
    K = _view(kv, kv_off, C, t_max)
    Vc = _view(kv, kv_off + C * t_max, C, t_max)
    for i in range(C):
        K[i, pos] = cache[qkv + C + i]
        Vc[i, pos] = cache[qkv + 2 * C + i]
    dh = C // n_head
    alpha = 1.0 / math.sqrt(dh)
    scores = np.empty(pos + 1, np.float64)
    for h in range(n_head):
        top = -np.inf
        for t in range(pos + 1):
            acc = 0.0
            for e in range(dh):
                acc += cache[qkv + h * dh + e] * K[h * dh + e, t]
            scores[t] = alpha * acc
            top = max(top, scores[t])
        total = 0.0
        for t in range(pos + 1):
            scores[t] = math.exp(scores[t] - top)
            total += scores[t]
        for e in range(dh):
            acc = 0.0
            for t in range(pos + 1):
                acc += scores[t] * Vc[h * dh + e, t]
            cache[att + h * dh + e] = acc / total
    _dense_layer_forward(_view(b.acts, plan[r, OUT_OFF], C, 1),
                         _view(b.theta, plan[r, W_O], C, C), _vec(b.theta, plan[r, B_O], C),
                         _view(cache, att, C, 1), _view(cache, plan[r, ATT_T], 1, C), 1)
