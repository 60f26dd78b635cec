"""Sequence layers: token and position embeddings, causal self-attention and the output layer
tied to the token embedding -- a GPT's layers (docs/formulas.md, "Embeddings and causal
self-attention"). A sequence example is ``(C, T)``: features first, time second, and the batch
last in the buffers, ``(C, T, m)``.
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from ..kernels.dense import transposed_rows
from .base import Layer

#: float32 holds every integer up to 2^24 exactly: token ids live in the float activations
_MAX_EXACT = {np.dtype(np.float32): 1 << 24, np.dtype(np.float64): 1 << 53}


class Embedding(Layer):
    """Token embedding: ``X[j, t, k] = E[j, ids[t, k]]`` with ``E (d, V)``, one column per
    token. Input ``(T,)`` per example: token ids in ``[0, V)`` (integers; the network keeps
    them in its float buffer, exact up to 2^24 in float32); output ``(d, T)``. It must be the
    first layer (ids have no gradient). Backward ``dE[:, v]`` sums ``dX`` over every position
    holding token ``v``. ``E`` is initialized ``N(0, 0.02²)`` as GPT-2 and decays with weight
    decay.
    """

    kernels = ("attention._embedding_forward_tuned", "attention._embedding_backward_tuned")
    param_names = ("E",)
    settings = ("vocab_size", "n_embd", "T")
    first_only = True

    def __init__(self, vocab_size: int, n_embd: int) -> None:
        self.vocab_size = _checks.check_positive_int(vocab_size, "vocab_size")
        self.n_embd = _checks.check_positive_int(n_embd, "n_embd")

    def _build(self, in_shape):
        self._need(in_shape, 1, "a sequence of token ids (T,)")
        self.T = in_shape[0]
        return (self.n_embd, self.T)

    def param_shapes(self):
        return [(self.n_embd, self.vocab_size)]

    def decays(self):
        return [True]

    def init_params(self, views, rng, init):
        views[0][...] = rng.standard_normal(views[0].shape) * 0.02

    def check_input(self, X, name: str, dtype):
        """The network's input must be token ids: integers in ``[0, V)`` (checked before any
        compiled code runs); returned as floats, which the network's buffers hold."""
        X = np.asarray(X)
        if X.dtype.kind not in "iuf" or X.dtype == np.bool_:
            raise TypeError(f"{name}: expected integer token ids, got dtype {X.dtype}; encode "
                            "text with loopprop.text.CharTokenizer")
        if X.ndim == 2 and X.shape[0] != self.T and X.shape[1:] != (self.T,):
            longer = "longer" if X.shape[0] > self.T else "shorter"
            raise ValueError(f"{name}: sequences of {X.shape[0]} tokens are {longer} than "
                             f"the model's window T = {self.T} (its block_size; ids are (T, m),"
                             f" one column per sequence): cut them into windows of {self.T}, "
                             "or sample with loopprop.generate.sample, which takes any prompt")
        if X.size == 0:
            return X.astype(np.float64)
        if X.dtype.kind == "f":
            if not np.isfinite(X).all() or (X != np.round(X)).any():
                raise TypeError(f"{name}: token ids must be integers, got non-integral values "
                                f"(dtype {X.dtype}); pass X.astype(np.int64)")
        lo, hi = X.min(), X.max()
        if lo < 0 or hi >= self.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: token id {int(bad)} is outside the vocabulary [0, "
                             f"{self.vocab_size}) of {self!r}; encode the text with the "
                             "model's own tokenizer")
        if self.vocab_size > _MAX_EXACT[np.dtype(dtype)]:  # pragma: no cover - 16 M tokens
            raise ValueError(f"{self!r}: {self.vocab_size} tokens do not fit exactly in "
                             f"{np.dtype(dtype).name}; use dtype='float64'")
        return X.astype(np.float64)

    def config(self):
        return {"vocab_size": self.vocab_size, "n_embd": self.n_embd}

    def formulas(self, x, y, l):
        return {"forward": f"{y}[j, t, k] = E{l}[j, {x}[t, k]]",
                "backward": [f"dE{l}[j, v] += Σ over (t, k) with {x}[t, k] = v of d{y}[j, t, k]"],
                "cache": f"the ids {x} (the input)"}


class PositionEmbedding(Layer):
    """Learned positions, added: ``Y[j, t, k] = X[j, t, k] + W[j, t]`` with ``W (d, T_max)``;
    a sequence of ``T ≤ T_max`` uses the first ``T`` columns. Input and output ``(d, T)``.
    Backward ``dW[j, t] = Σ_k dY[j, t, k]``, ``dX += dY``. Initialized ``N(0, 0.01²)`` (GPT-2);
    no weight decay.
    """

    kernels = ("attention._position_forward", "attention._position_backward")
    param_names = ("W",)
    limits_context = True
    settings = ("d", "T", "block_size")

    def __init__(self, block_size: int) -> None:
        self.block_size = _checks.check_positive_int(block_size, "block_size")

    def _build(self, in_shape):
        self._need(in_shape, 2, "a sequence (d, T)")
        self.d, self.T = in_shape
        if self.T > self.block_size:
            raise ValueError(f"{self!r}: a sequence of {self.T} positions is longer than "
                             f"block_size={self.block_size}; use a PositionEmbedding(block_size"
                             f"={self.T}) or shorter sequences")
        return in_shape

    def param_shapes(self):
        return [(self.d, self.block_size)]

    def decays(self):
        return [False]

    def init_params(self, views, rng, init):
        views[0][...] = rng.standard_normal(views[0].shape) * 0.01

    def config(self):
        return {"block_size": self.block_size}

    def formulas(self, x, y, l):
        return {"forward": f"{y}[j, t, k] = {x}[j, t, k] + W{l}[j, t]",
                "backward": [f"dW{l}[j, t] = Σ_k d{y}[j, t, k]", f"d{x} += d{y}"], "cache": ""}


class CausalSelfAttention(Layer):
    """Multi-head causal self-attention with its projections (llm.c's ``attention`` and the two
    matmuls around it). Input and output ``(C, T)``; ``C = n_head · d_head``.

    ``QKV = W_qkv · X + b_qkv`` (rows ``[Q; K; V]``, each ``(n_head, d_head)``), then per head
    ``O = softmax(QᵀK/√d_head, causal) · V`` (:func:`loopprop.attention_forward`), then
    ``Y = W_o · O + b_o``. Parameters ``W_qkv (3C, C)``, ``b_qkv (3C,)``, ``W_o (C, C)``,
    ``b_o (C,)``; ``W``'s decay, biases do not. Caches per example: ``Xᵀ``, ``QKV``, the
    probabilities ``P (n_head, T, T)``, ``O`` and ``Oᵀ`` -- ``6·C·T + n_head·T²`` values.
    """

    kernels = ("attention._attention_forward_tuned", "attention._attention_backward_tuned")
    param_names = ("W_qkv", "b_qkv", "W_o", "b_o")
    limits_context = True
    #: ``t_max``: the length of the key/value cache when decoding one position at a time (set
    #: by :mod:`loopprop.generate` in its own plan; 0 in training)
    settings = ("C", "T", "n_head", "t_max")
    t_max = 0
    #: per example: ``Xᵀ``, ``Q, K, V`` (one ``(3C, T)`` block), the probabilities
    #: ``P (n_head, T, T)``, the heads' output ``O`` and ``Oᵀ``
    cache_parts = ("XT", "QKV", "P", "O", "OT")
    #: per example: ``dO`` and ``dQKV``
    work_parts = ("dO", "dQKV")

    def __init__(self, n_head: int) -> None:
        self.n_head = _checks.check_positive_int(n_head, "n_head")

    def _build(self, in_shape):
        self._need(in_shape, 2, "a sequence (C, T)")
        self.C, self.T = in_shape
        if self.C % self.n_head:
            raise ValueError(f"{self!r}: n_embd={self.C} is not divisible by n_head="
                             f"{self.n_head}; each head takes n_embd / n_head features: pick "
                             "n_head among the divisors of n_embd")
        C, T = self.C, self.T
        self.cache_size = sum(self.part_sizes()[name] for name in self.cache_parts)
        self.work_size = 4 * C * T
        return in_shape

    def param_shapes(self):
        C = self.C
        return [(3 * C, C), (3 * C,), (C, C), (C,)]

    def decays(self):
        return [True, False, True, False]

    def decode_cache_size(self, t_max: int) -> int:
        """The keys and values of ``t_max`` positions: ``2·C·t_max``."""
        return 2 * self.C * t_max

    def part_sizes(self):
        C, T, H = self.C, self.T, self.n_head
        # the projections' inputs transposed, for small layers only (kernels/dense.py)
        return {"XT": C * transposed_rows(3 * C, C, T, 1), "QKV": 3 * C * T, "P": H * T * T,
                "O": C * T, "OT": C * transposed_rows(C, C, T, 1),
                "dO": C * T, "dQKV": 3 * C * T}

    def init_params(self, views, rng, init):
        W_qkv, b_qkv, W_o, b_o = views
        W_qkv[...] = rng.standard_normal(W_qkv.shape) * 0.02
        W_o[...] = rng.standard_normal(W_o.shape) * 0.02
        b_qkv[...] = 0.0
        b_o[...] = 0.0

    def config(self):
        return {"n_head": self.n_head}

    def formulas(self, x, y, l):
        return {"forward": f"Q, K, V = W_qkv{l}·{x} + b; P = softmax(QᵀK/√d, s ≤ t); "
                           f"{y} = W_o{l}·(P·V) + b_o{l}",
                "backward": [f"dW_o{l} = d{y}·Oᵀ", "dP = dO·V; dS = P ⊙ (dP − Σ_s P·dP)",
                             "dQ = dS·K/√d, dK = dSᵀ·Q/√d, dV = Pᵀ·dO",
                             f"dW_qkv{l} = dQKV·{x}ᵀ", f"d{x} += W_qkv{l}ᵀ·dQKV"],
                "cache": f"{x}ᵀ, Q, K, V, P, O",
                # the diagrams draw Q, K and V as three paths (docs/formulas.md, "The
                # attention layer"): (node, label, the nodes it reads; "in" is the layer's input)
                "paths": {
                    "forward": [
                        ("q", f"Q = W_q{l}·{x} + b_q, per head", ["in"]),
                        ("k", f"K = W_k{l}·{x} + b_k", ["in"]),
                        ("v", f"V = W_v{l}·{x} + b_v", ["in"]),
                        ("p", "P = softmax(QᵀK/√d_head), keys s ≤ t", ["q", "k"]),
                        ("o", f"O = V·Pᵀ per head; {y} = W_o{l}·O + b_o{l}", ["p", "v"])],
                    "backward": [
                        ("o", f"dO = W_o{l}ᵀ·d{y}; dW_o{l} = d{y}·Oᵀ", ["in"]),
                        ("v", "dV = dO·P", ["o"]),
                        ("s", "dP = dOᵀ·V; dS = P ⊙ (dP − Σ_s P·dP)", ["o"]),
                        ("q", "dQ = K·dSᵀ/√d_head", ["s"]),
                        ("k", "dK = Q·dS/√d_head", ["s"])],
                    "backward_into": [f"dW_qkv{l} = [dQ; dK; dV]·{x}ᵀ",
                                      f"d{x} += W_qkv{l}ᵀ·[dQ; dK; dV]"]}}


class TiedOutput(Layer):
    """The output layer tied to the token embedding (GPT-2's ``lm_head``): logits
    ``Z[v, t, k] = Σ_j E[j, v] · X[j, t, k]`` with the network's :class:`Embedding` matrix
    ``E (d, V)``; no bias, no parameters of its own. Backward adds ``dE[j, v] += Σ X·dZ`` into
    the embedding's gradient (both uses of ``E`` add, like any shared value) and
    ``dX += E · dZ``. Input ``(d, T)``, output ``(V, T)``.
    """

    kernels = ("gemm._gemm (Eᵀ·X)", "gemm._gemm (X·dZᵀ, E·dZ)")
    param_names = ()
    #: the plan gives this row the parameters of the network's Embedding row
    shares_params_of = Embedding
    settings = ("d", "vocab_size", "T")

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = _checks.check_positive_int(vocab_size, "vocab_size")

    def _build(self, in_shape):
        self._need(in_shape, 2, "a sequence (d, T)")
        self.d, self.T = in_shape
        return (self.vocab_size, self.T)

    def check_shared(self, owner: Embedding) -> None:
        """The embedding must map ``vocab_size`` tokens to this layer's ``d`` inputs."""
        if (owner.n_embd, owner.vocab_size) != (self.d, self.vocab_size):
            raise ValueError(f"{self!r} reads the matrix E (d, V) of {owner!r}: it needs d = "
                             f"{self.d} (its input features) and V = {self.vocab_size}; give "
                             "both layers the same vocab_size and n_embd")

    def config(self):
        return {"vocab_size": self.vocab_size}

    def formulas(self, x, y, l):
        return {"forward": f"{y}[v, t, k] = Σ_j E[j, v]·{x}[j, t, k] (the embedding's E)",
                "backward": [f"dE[j, v] += Σ_(t,k) {x}[j, t, k]·d{y}[v, t, k]",
                             f"d{x} += E·d{y}"], "cache": ""}
