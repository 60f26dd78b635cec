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
from ..kernels.dense import _dense_layer_backward, _dense_layer_forward
from ..plan import C_OFF, H0, IN_OFF, OUT_OFF, P_OFF, WF_OFF, WK_OFF
from .common import _img, _vec, _view, _zero


def embedding_forward(r, plan, fplan, b, s):
    """``X[j, t, k] = E[j, ids[t, k]]`` for an ``Embedding`` row (the ids are its input,
    ``(T, mb)`` as floats)."""
    mb = s.mb
    h = plan[r, H0:]
    V, d, N = h[0], h[1], h[2] * mb
    _embedding_forward_tuned(_view(b.acts, plan[r, OUT_OFF] * mb, d, N),
                             _view(b.theta, plan[r, P_OFF], d, V),
                             _vec(b.acts, plan[r, IN_OFF] * mb, N))


def embedding_backward(r, plan, fplan, b, s):
    """``dE[j, ids[t, k]] += dX[j, t, k]``. The ids have no gradient."""
    mb = s.mb
    h = plan[r, H0:]
    V, d, N = h[0], h[1], h[2] * mb
    _embedding_backward_tuned(_view(b.grad, plan[r, P_OFF], d, V),
                              _view(b.dacts, plan[r, OUT_OFF] * mb, d, N),
                              _vec(b.acts, plan[r, IN_OFF] * mb, N), s.threads)


def position_forward(r, plan, fplan, b, s):
    """``Y[j, t, k] = X[j, t, k] + W[j, t]`` for a ``PositionEmbedding`` row."""
    mb = s.mb
    h = plan[r, H0:]
    d, T = h[0], h[1]
    _position_forward(_view(b.acts, plan[r, OUT_OFF] * mb, d * T, mb),
                      _view(b.acts, plan[r, IN_OFF] * mb, d * T, mb),
                      _view(b.theta, plan[r, P_OFF], d, h[2]), T)


def position_backward(r, plan, fplan, b, s):
    """``dW[j, t] += Σ_k dY[j, t, k]``, ``dX += dY`` (not for row 0)."""
    mb = s.mb
    h = plan[r, H0:]
    d, T = h[0], h[1]
    _position_backward(_view(b.grad, plan[r, P_OFF], d, h[2]),
                       _view(b.dacts, plan[r, IN_OFF] * mb, d * T, mb),
                       _view(b.dacts, plan[r, OUT_OFF] * mb, d * T, mb), T, r > 0)


def position_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """One position: ``y[j] = x[j] + W[j, pos]``."""
    d, t_max = plan[r, H0], plan[r, H0 + 2]
    W = _view(b.theta, plan[r, P_OFF], d, t_max)
    x, y = plan[r, IN_OFF], plan[r, OUT_OFF]
    for j in range(d):
        b.acts[y + j] = b.acts[x + j] + W[j, pos]


def attention_forward(r, plan, fplan, b, s):
    """A ``CausalSelfAttention`` row: ``QKV = W_qkv·X + b_qkv``, attention per head,
    ``Y = W_o·O + b_o`` (the cache layout is the layer's docstring's)."""
    mb = s.mb
    C, T, n_head = plan[r, H0], plan[r, H0 + 1], plan[r, H0 + 2]
    N = T * mb
    p = plan[r, P_OFF]
    c = plan[r, C_OFF] * mb
    qkv, probs, att = c + C * N, c + 4 * C * N, c + 4 * C * N + n_head * T * T * mb
    dh = C // n_head
    cache = b.cache
    _dense_layer_forward(_view(cache, qkv, 3 * C, N), _view(b.theta, p, 3 * C, C),
                         _vec(b.theta, p + 3 * C * C, 3 * C),
                         _view(b.acts, plan[r, IN_OFF] * mb, C, N), _view(cache, c, N, C),
                         s.threads)
    _attention_forward_tuned(_img(cache, att, n_head, dh, T, mb),
                             _img(cache, probs, n_head, T, T, mb),
                             _img(cache, qkv, n_head, dh, T, mb),
                             _img(cache, qkv + C * N, n_head, dh, T, mb),
                             _img(cache, qkv + 2 * C * N, n_head, dh, T, mb), runtime_flag(True),
                             s.threads)
    po = p + 3 * C * C + 3 * C
    _dense_layer_forward(_view(b.acts, plan[r, OUT_OFF] * mb, C, N), _view(b.theta, po, C, C),
                         _vec(b.theta, po + C * C, C), _view(cache, att, C, N),
                         _view(cache, att + C * N, N, C), s.threads)


def attention_backward(r, plan, fplan, b, s):
    """Backward through a ``CausalSelfAttention`` row: the output projection, attention per
    head, the QKV projection (each adds into its gradients)."""
    mb = s.mb
    C, T, n_head = plan[r, H0], plan[r, H0 + 1], plan[r, H0 + 2]
    N = T * mb
    p = plan[r, P_OFF]
    c = plan[r, C_OFF] * mb
    w = plan[r, WK_OFF] * mb
    wf = plan[r, WF_OFF]
    x_off = plan[r, IN_OFF] * mb
    qkv, probs, att = c + C * N, c + 4 * C * N, c + 4 * C * N + n_head * T * T * mb
    dh = C // n_head
    datt, dqkv = w + 4 * C * N, w + 5 * C * N
    po = p + 3 * C * C + 3 * C
    cache, work = b.cache, b.work
    _zero(_vec(work, datt, C * N))  # dO: the output projection's backward adds into it
    _dense_layer_backward(_view(b.grad, po, C, C), _vec(b.grad, po + C * C, C),
                          _view(work, datt, C, N), _view(b.dacts, plan[r, OUT_OFF] * mb, C, N),
                          _view(b.theta, po, C, C), _view(cache, att, C, N),
                          _view(cache, att + C * N, N, C), _view(b.fwork, wf + 3 * C * C, C, C),
                          _view(work, w + 3 * C * N, N, C), runtime_flag(True), s.threads)
    _attention_backward_tuned(_img(work, dqkv, n_head, dh, T, mb),
                              _img(work, dqkv + C * N, n_head, dh, T, mb),
                              _img(work, dqkv + 2 * C * N, n_head, dh, T, mb),
                              _img(work, datt, n_head, dh, T, mb),
                              _img(cache, qkv, n_head, dh, T, mb),
                              _img(cache, qkv + C * N, n_head, dh, T, mb),
                              _img(cache, qkv + 2 * C * N, n_head, dh, T, mb),
                              _img(cache, probs, n_head, T, T, mb), runtime_flag(True),
                              runtime_flag(False), s.threads)  # dQKV written
    _dense_layer_backward(_view(b.grad, p, 3 * C, C), _vec(b.grad, p + 3 * C * C, 3 * C),
                          _view(b.dacts, x_off, C, N), _view(work, dqkv, 3 * C, N),
                          _view(b.theta, p, 3 * C, C), _view(b.acts, x_off, C, N),
                          _view(cache, c, N, C), _view(b.fwork, wf, C, 3 * C),
                          _view(work, w, N, 3 * C), r > 0, s.threads)


def attention_decode(r, plan, fplan, b, s, kv, kv_off, pos):
    """A ``CausalSelfAttention`` row on one position ``pos``: project, append ``k, v`` to the
    row's cache ``kv[kv_off : kv_off + 2·C·T_max]`` (``K (C, T_max)`` then ``V``), attend over
    positions ``0 … pos``, project back."""
    C, n_head = plan[r, H0], plan[r, H0 + 2]
    t_max = plan[r, H0 + 3]  # set by generate._Stepper: the cache's length
    p = plan[r, P_OFF]
    c = plan[r, C_OFF]
    cache = b.cache
    qkv = c + C  # the T = 1 plan's cache: Xᵀ (C), QKV (3C), P (n_head), O (C), Oᵀ (C)
    att = c + 4 * C + n_head
    _dense_layer_forward(_view(cache, qkv, 3 * C, 1), _view(b.theta, p, 3 * C, C),
                         _vec(b.theta, p + 3 * C * C, 3 * C), _view(b.acts, plan[r, IN_OFF], C, 1),
                         _view(cache, c, 1, C), 1)
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
    po = p + 3 * C * C + 3 * C
    _dense_layer_forward(_view(b.acts, plan[r, OUT_OFF], C, 1), _view(b.theta, po, C, C),
                         _vec(b.theta, po + C * C, C), _view(cache, att, C, 1),
                         _view(cache, att + C, 1, C), 1)
