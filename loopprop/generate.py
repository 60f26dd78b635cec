"""Sampling from a language model, one token at a time, with a cache of keys and values.

Recomputing the whole window for every new token costs ``O(T²)`` per token in attention and
``O(T)`` in every other layer. A cache of each attention layer's keys and values makes a new
token cost ``O(T)``: the network runs on one position (a copy of the model built for
sequences of length 1, sharing its parameter vector), and each attention row appends its new
key and value to the cache and attends over the cached ones (docs/formulas.md, "Embeddings and
causal self-attention")::

    q, k, v = W_qkv · x_t + b_qkv          (one column: position t)
    K[:, t], V[:, t] = k, v                (the cache, per layer)
    O[h, e] = Σ_{s ≤ t} softmax_s(q_h · K[h, :, s] / √d_head) · V[h, e, s]

When the context reaches ``block_size`` tokens it restarts from its last ``block_size // 2``
tokens (the cache is refilled from them): the positions the model learned run up to
``block_size − 1``. Both paths -- the cache and recomputing the window -- follow this rule and
draw the same tokens for a seed (the tests check it).
"""

from __future__ import annotations

import copy
import math

import numpy as np

from . import _checks
from . import plan as _plan
from ._jit import kernel, use_threads
from .kernels.dense import _dense_layer_forward
from .plan import ATTENTION, C_OFF, H0, IN_OFF, OUT_OFF, P_OFF, POS_EMBEDDING
from .train import _forward_row, _vec, _view, kinds_key


@kernel
def _decode_attention(r, plan, theta, acts, cache, kv, kv_off, pos):
    """A :class:`~loopprop.layers.CausalSelfAttention` row on one position ``pos``: project,
    append ``k, v`` to the row's cache ``kv[kv_off : kv_off + 2·C·T_max]`` (``K (C, T_max)``
    then ``V``), attend over positions ``0 … pos``, project back."""
    C, n_head = plan[r, H0], plan[r, H0 + 2]
    t_max = plan[r, H0 + 3]  # set by _Stepper: the cache's length
    p = plan[r, P_OFF]
    c = plan[r, C_OFF]
    qkv = c + C  # the T = 1 plan's cache: Xᵀ (C), QKV (3C), P (n_head), O (C), Oᵀ (C)
    att = c + 4 * C + n_head
    _dense_layer_forward(_view(cache, qkv, 3 * C, 1), _view(theta, p, 3 * C, C),
                         _vec(theta, p + 3 * C * C, 3 * C), _view(acts, plan[r, IN_OFF], C, 1),
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
        for s in range(pos + 1):
            acc = 0.0
            for e in range(dh):
                acc += cache[qkv + h * dh + e] * K[h * dh + e, s]
            scores[s] = alpha * acc
            top = max(top, scores[s])
        total = 0.0
        for s in range(pos + 1):
            scores[s] = math.exp(scores[s] - top)
            total += scores[s]
        for e in range(dh):
            acc = 0.0
            for s in range(pos + 1):
                acc += scores[s] * Vc[h * dh + e, s]
            cache[att + h * dh + e] = acc / total
    po = p + 3 * C * C + 3 * C
    _dense_layer_forward(_view(acts, plan[r, OUT_OFF], C, 1), _view(theta, po, C, C),
                         _vec(theta, po + C * C, C), _view(cache, att, C, 1),
                         _view(cache, att + C, 1, C), 1)


@kernel
def _decode_step(plan, fplan, theta, state, acts, cache, icache, work, fwork, kv, kv_offs, pos,
                 threads, kinds):
    """The whole network on one position ``pos`` (its token id already in ``acts[0]``): the
    position embedding adds column ``pos``, attention rows use and extend the cache, every
    other row runs its ordinary forward kernel on one column (``kinds``: the plan's
    :func:`~loopprop.train.kinds_key`)."""
    for r in range(plan.shape[0]):
        kind = plan[r, 0]
        if kind == POS_EMBEDDING:
            d, t_max = plan[r, H0], plan[r, H0 + 2]
            W = _view(theta, plan[r, P_OFF], d, t_max)
            x, y = plan[r, IN_OFF], plan[r, OUT_OFF]
            for j in range(d):
                acts[y + j] = acts[x + j] + W[j, pos]
        elif kind == ATTENTION:
            _decode_attention(r, plan, theta, acts, cache, kv, kv_offs[r], pos)
        else:
            _forward_row(r, plan, fplan, theta, state, acts, cache, icache, work, fwork, 1,
                         False, 0, threads, kinds)


class _Stepper:
    """The model built for one position, sharing the network's parameters, and its caches."""

    def __init__(self, net) -> None:
        from .network import Network

        layers = copy.deepcopy(net.layers)
        self.one = Network(layers, loss=net.loss, input_shape=(1,), dtype=net.dtype)
        self.one._theta = net._theta  # the same parameter vector (same layout: T-free shapes)
        self.one._state = net._state
        self.block = net.input_shape[0]
        plan = self.one._plan.copy()
        self.kv_offs = np.zeros(len(plan), np.int64)
        size = 0
        for r in range(len(plan)):
            if plan[r, 0] == ATTENTION:
                plan[r, H0 + 3] = self.block  # T_max: the cache's length
                self.kv_offs[r] = size
                size += 2 * plan[r, H0] * self.block
        self.plan = plan
        self.kv = np.zeros(max(size, 1), net.dtype)
        self.buf = _plan.Buffers(self.one._layout, 1, net.dtype)
        self.threads = use_threads(True)

    def step(self, token: int, pos: int) -> np.ndarray:
        """The next token's probabilities after ``token`` at position ``pos``."""
        buf = self.buf
        buf.acts[0] = token
        _decode_step(self.plan, self.one._fplan, self.one._theta, self.one._state, buf.acts,
                     buf.cache, buf.icache, buf.work, buf.fwork, self.kv, self.kv_offs, pos,
                     self.threads, kinds_key(self.plan))
        r = len(self.plan) - 1
        off, size = int(self.plan[r, OUT_OFF]), int(self.plan[r, _plan.OUT_SIZE])
        return buf.acts[off:off + size].astype(np.float64)


#: below this temperature a draw is the most probable token (greedy decoding): ``log p / τ``
#: of the least likely token (≥ −690) stays finite down to here, and the sharpened
#: distribution has long put all its mass on the top token
GREEDY_TEMPERATURE = 1e-6


def _draw(probs: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A token from ``probs`` sharpened by ``temperature`` (``softmax(z/τ) ∝ p^(1/τ)``), by the
    inverse of the cumulative distribution; the argmax below :data:`GREEDY_TEMPERATURE` (the
    random number is drawn all the same, so the stream does not depend on τ)."""
    u = rng.random()
    if temperature < GREEDY_TEMPERATURE:
        return int(np.argmax(probs))
    logp = np.log(np.maximum(probs, 1e-300)) / temperature
    w = np.exp(logp - logp.max())
    cdf = np.cumsum(w)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(w) - 1))


def sample(net, prompt, n_tokens: int, *, temperature: float = 1.0, seed: int = 0,
           use_cache: bool = True) -> np.ndarray:
    """Continue ``prompt`` (token ids, 1-D, non-empty) by ``n_tokens`` tokens drawn from the
    language model ``net`` (:func:`loopprop.models.gpt`); returns the new ids.

    ``temperature`` τ ≥ 0 divides the logits (below 1: surer, above: more varied; below
    :data:`GREEDY_TEMPERATURE`, 0 included, the most probable token every time); ``seed``
    makes the draw reproducible. ``use_cache=False`` recomputes the whole context for every
    token (the reference the cache is tested against)."""
    T = net._sequence_model("sample")
    n_tokens = _checks.check_int(n_tokens, "n_tokens", 0, "non-negative number of tokens")
    temperature = _checks.check_fraction(temperature, "temperature", 0.0, math.inf,
                                         example=" such as 0.8 (0: greedy)")
    seed = _checks.check_int(seed, "seed", 0, "non-negative integer seed")
    prompt = np.asarray(prompt)
    if prompt.ndim != 1 or prompt.size == 0:
        raise ValueError(f"prompt: expected a non-empty 1-D array of token ids, got shape "
                         f"{prompt.shape}")
    net._rows[0].check_input(prompt, "prompt", net.dtype)
    ctx = [int(v) for v in prompt[-T:]]
    rng = np.random.default_rng(seed)
    out = []
    if use_cache:
        stepper = _Stepper(net)
        for pos, tok in enumerate(ctx[:-1]):  # fill the cache with the prompt
            stepper.step(tok, pos)
    for _ in range(n_tokens):
        if use_cache:
            probs = stepper.step(ctx[-1], len(ctx) - 1)
        else:
            X = np.zeros((T, 1), np.int64)
            X[:len(ctx), 0] = ctx
            probs = net._evaluate_checked(net._check_X(X), np.zeros((0, 1), net.dtype),
                                          np.zeros((T, 1), np.int64), False)["output"]
            probs = probs[:, len(ctx) - 1, 0].astype(np.float64)
        tok = _draw(probs, temperature, rng)
        out.append(tok)
        ctx.append(tok)
        if len(ctx) > T:  # the context is full: restart from its last half
            ctx = ctx[-(T // 2):] if T > 1 else ctx[-1:]
            if use_cache:
                for pos, t in enumerate(ctx[:-1]):
                    stepper.step(t, pos)
    return np.array(out, np.int64)


__all__ = ["sample"]
