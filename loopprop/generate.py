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

import math
from typing import NamedTuple

import numpy as np

from . import _checks
from . import plan as _plan
from ._jit import kernel, use_threads
from .layers import CausalSelfAttention
from .plan import KIND, OUT_OFF
from .dispatch import decode_at, row_at
from .train import _step

T_MAX = CausalSelfAttention.column("t_max")


@kernel
def _decode_step(plan, fplan, b, kv, kv_offs, pos, threads, table):
    """The whole network on one position ``pos`` (its token id already in ``b.acts[0]``): a
    row whose kind decodes (``table.has_decode``: the position embedding adds column ``pos``,
    attention uses and extends its cache of keys and values ``kv``) runs its decode row, every
    other row its ordinary forward row on one column."""
    s = _step(1, False, 0, False, threads, False, 0, 1)
    for r in range(plan.shape[0]):
        code = plan[r, KIND]
        if table.has_decode[code]:
            decode_at(table.decode, code, table.like)(r, plan, fplan, b, s, kv, kv_offs[r], pos)
        else:
            row_at(table.forward, code, table.like)(r, plan, fplan, b, s)


class _Stepper:
    """The model built for one position, sharing the network's parameters, and its caches."""

    def __init__(self, net) -> None:
        self.one = net.sharing((1,))  # the same parameter vector (same layout: T-free shapes)
        self.block = net.input_shape[0]
        plan = self.one.plan.copy()
        self.kv_offs = np.zeros(len(plan), np.int64)
        size = 0
        for r, layer in enumerate(self.one.rows):
            if isinstance(layer, CausalSelfAttention):
                plan[r, T_MAX] = self.block  # the cache's length (the decode row's)
            self.kv_offs[r] = size
            size += layer.decode_cache_size(self.block)
        self.plan = plan
        self.kv = np.zeros(max(size, 1), net.dtype)
        self.buf = _plan.Buffers(self.one.layout, 1, net.dtype)
        self.threads = use_threads(True)

    def step(self, token: int, pos: int) -> np.ndarray:
        """The next token's probabilities after ``token`` at position ``pos``."""
        buf = self.buf
        buf.acts[0] = token
        _decode_step(self.plan, self.one._fplan, self.one._flat(buf), self.kv, self.kv_offs, pos,
                     self.threads, self.one._table(decode=True))
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


class RecurrentState(NamedTuple):
    """Where sampling from a recurrent model stopped: every recurrent layer's states after the
    last token (``values``: ``h``, and the LSTM's ``c``, layer after layer) and the model they
    belong to (``model``: its layers and dtype). ``sample(..., return_state=True)`` returns one;
    ``sample(..., state=s)`` goes on from it."""

    model: str
    values: np.ndarray


def _fingerprint(net) -> str:
    """What a state must match: the network's layers and dtype."""
    return f"{', '.join(repr(layer) for layer in net.rows)} ({net.dtype.name})"


def _check_state(net, state, bounded: bool, use_cache: bool, wanted: bool) -> None:
    """A carried state is a recurrent model's, sampled with its states, and this model's."""
    if state is None and not wanted:
        return
    option = "state" if state is not None else "return_state"
    if bounded:
        raise ValueError(f"{option}: carried states are a recurrent model's (RNN, LSTM, GRU); "
                         "a GPT's context is its prompt: pass the whole context as the prompt")
    if not use_cache:
        raise ValueError(f"{option}: states are carried by the stepping sampler; leave "
                         "use_cache=True")
    if state is None:
        return
    if not isinstance(state, RecurrentState):
        raise TypeError(f"state: expected a RecurrentState (sample(..., return_state=True) "
                        f"returns one), got {_checks._describe(state)}")
    if state.model != _fingerprint(net):
        raise ValueError(f"state: it was made by sampling from another model ({state.model}); "
                         f"this one is {_fingerprint(net)}: pass a state that sample(..., "
                         "return_state=True) returned for this model, or state=None to start "
                         "from zero states")


def _recomputed(net, ctx: list[int]) -> np.ndarray:
    """The next token's probabilities after ``ctx`` (at most ``net``'s window), from the whole
    network run on it from the start."""
    T = net.input_shape[0]
    X = np.zeros((T, 1), np.int64)
    X[:len(ctx), 0] = ctx
    probs = net.evaluate_checked(net.check_inputs(X), np.zeros((0, 1), net.dtype),
                                 np.zeros((T, 1), np.int64), False)["output"]
    return probs[:, len(ctx) - 1, 0].astype(np.float64)


def sample(net, prompt, n_tokens: int, *, temperature: float = 1.0, seed: int = 0,
           use_cache: bool = True, state: RecurrentState | None = None,
           return_state: bool = False):
    """Continue ``prompt`` (token ids, 1-D, non-empty) by ``n_tokens`` tokens drawn from the
    language model ``net`` (:func:`loopprop.models.gpt`, :func:`loopprop.models.char_rnn`);
    returns the new ids.

    A GPT sees at most its ``block_size`` positions: its context restarts from the last half
    when full (the module's docstring). A recurrent model carries its states from token to
    token -- each new token costs one step of every layer, ``O(1)`` in the context's length --
    and its context is the whole prompt and everything drawn since.

    ``temperature`` τ ≥ 0 divides the logits (below 1: surer, above: more varied; below
    :data:`GREEDY_TEMPERATURE`, 0 included, the most probable token every time); ``seed``
    makes the draw reproducible. ``use_cache=False`` recomputes the whole context for every
    token (the reference the cache and the carried states are tested against).

    A recurrent model can go on where an earlier call stopped: ``return_state=True`` returns
    ``(ids, state)``, the states after the last token drawn, and ``state=`` starts a call from
    them (its prompt then continues that text) -- a conversation, one turn per call, without
    feeding the history again."""
    T = net.check_language_model("sample")
    n_tokens = _checks.check_int(n_tokens, "n_tokens", 0, "non-negative number of tokens")
    temperature = _checks.check_fraction(temperature, "temperature", 0.0, math.inf,
                                         example=" such as 0.8 (0: greedy)")
    seed = _checks.check_int(seed, "seed", 0, "non-negative integer seed")
    prompt = np.asarray(prompt)
    if prompt.ndim != 1 or prompt.size == 0:
        raise ValueError(f"prompt: expected a non-empty 1-D array of token ids, got shape "
                         f"{prompt.shape}")
    net.rows[0].check_input(prompt, "prompt", net.dtype)
    bounded = any(layer.limits_context for layer in net.rows)
    if not isinstance(return_state, bool):
        raise TypeError(f"return_state: expected True or False, got "
                        f"{_checks._describe(return_state)}")
    _check_state(net, state, bounded, use_cache, return_state)
    ctx = [int(v) for v in (prompt[-T:] if bounded else prompt)]
    rng = np.random.default_rng(seed)
    out = []
    if use_cache:
        stepper = _Stepper(net)
        if state is not None:
            stepper.kv[:] = state.values
        for pos, tok in enumerate(ctx[:-1]):  # fill the cache with the prompt
            stepper.step(tok, pos)
    for _ in range(n_tokens):
        if use_cache:
            probs = stepper.step(ctx[-1], len(ctx) - 1)
        else:
            probs = _recomputed(net if bounded else net.sharing((len(ctx),)), ctx)
        tok = _draw(probs, temperature, rng)
        out.append(tok)
        ctx.append(tok)
        if bounded and len(ctx) > T:  # the context is full: restart from its last half
            ctx = ctx[-(T // 2):] if T > 1 else ctx[-1:]
            if use_cache:
                for pos, t in enumerate(ctx[:-1]):
                    stepper.step(t, pos)
    ids = np.array(out, np.int64)
    if not return_state:
        return ids
    stepper.step(ctx[-1], len(ctx) - 1)  # the last token drawn (or of the prompt), fed too
    return ids, RecurrentState(_fingerprint(net), stepper.kv.copy())


__all__ = ["RecurrentState", "sample"]
