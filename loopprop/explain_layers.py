"""One parameter of any layer kind, explained with real numbers: every term of its gradient's
sum, checked against ``backward`` and centered finite differences (docs/formulas.md has each
sum's derivation).

:func:`loopprop.explain_param.explain_param` runs a network forward and backward on a batch,
reads the gradient that reached the chosen layer's output (``dY``) and the values that fed it
(its input ``X``), and rebuilds ``∂L/∂θ`` for one entry θ of one parameter array as the sum the
formula writes, term by term, with NumPy in float64 from those arrays; the functions below are
those sums, one per kind (paired with the kind in :mod:`loopprop.layers.registry`):

* ``Dense``: ``dW[i, j] = Σ_(t,k) dY[i, t, k]·X[j, t, k]``, ``db[i] = Σ dY[i, t, k]``
* ``Conv2d``: ``dW[o, c, p, q] = Σ_(y,x,k) dY[o, y, x, k]·X[c, y·s + p − pad, x·s + q − pad, k]``
* ``BatchNorm`` / ``LayerNorm``: ``dγ = Σ dY·x̂``, ``dβ = Σ dY`` (x̂ recomputed from X); batch
  norm also shows the three coupled paths by which its input gets its gradient
* ``Embedding``: ``dE[j, v] = Σ over the positions holding token v of dY[j, t, k]`` (plus the
  tied output layer's ``Σ X·dZ`` when it reads E)
* ``PositionEmbedding``: ``dW[j, t] = Σ_k dY[j, t, k]``
* ``CausalSelfAttention``: ``W_o``, ``b_o`` from the attention output O; ``W_qkv``, ``b_qkv``
  through the softmax: ``dO = W_oᵀ·dY``, ``dP = dOᵀV``, ``dS = P ⊙ (dP − Σ_s P·dP)``, then
  ``dQ = K·dSᵀ/√d``, ``dK = Q·dS/√d``, ``dV = dO·P``, each recomputed here.
* ``RNN`` / ``LSTM`` / ``GRU``: the sum over time steps, one term per step ``t``:
  ``dW_h[i, j] = Σ_t Σ_k δ_t[i, k]·h_{t−1}[j, k]``, ``dW_x[i, j] = Σ_t Σ_k δ_t[i, k]·X[j, t,
  k]``, ``db[i] = Σ_t Σ_k δ_t[i, k]``, with ``δ_t`` recomputed by backpropagation through time
  (:mod:`loopprop.vectorized`'s twins, in float64, from zero initial states as the network's
  forward pass).

Long sums print their largest terms and the count and sum of the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._numbers import _fmt, _p

#: the sections of docs/formulas.md each sum is derived in
CONV = 'docs/formulas.md, "Convolution"'
BATCHNORM = 'docs/formulas.md, "Batch normalization"'
LAYERNORM = 'docs/formulas.md, "Layer normalization"'
EMBEDDINGS = 'docs/formulas.md, "Token and position embeddings"'
ATTENTION_LAYER = 'docs/formulas.md, "The attention layer"'
ATTENTION_HEAD = 'docs/formulas.md, "Attention, one head"'
BPTT = 'docs/formulas.md, "Backpropagation through time"'


@dataclass
class Term:
    """One term of the sum: where it comes from, its factors, its value."""
    where: tuple
    factors: tuple[float, ...]
    value: float
    names: tuple[str, ...] | None = None  #: the factors' names, when not the sum's


@dataclass
class ParamExplanation:
    """The explanation of ``∂L/∂θ`` for one entry; ``str()`` is the printed text."""
    layer: int
    kind: str
    param: str
    index: tuple
    terms: list[Term]
    total: float
    backward: float
    numeric: float
    lines: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.lines)


# -- the sums, one function per layer kind ----------------------------------------------------
# Each gets (layer, param, index, X, dY, extra) with X (*in_shape, m) and dY (*out_shape, m)
# in float64, and returns (formula, factor names, terms).


def _positions(shape) -> list[tuple]:
    return list(np.ndindex(*shape))


def _dense(layer, param, index, X, dY, extra):
    i = index[0]
    if param == "W":
        j = index[1]
        terms = [Term(w, (float(dY[(i, *w)]), float(X[(j, *w)])),
                      float(dY[(i, *w)]) * float(X[(j, *w)])) for w in _positions(dY.shape[1:])]
        return (f"dW[{i}, {j}] = Σ_(t,k) dY[{i}, t, k] · X[{j}, t, k]   (docs/formulas.md §5)",
                ("dY", "X"), terms)
    terms = [Term(w, (float(dY[(i, *w)]),), float(dY[(i, *w)])) for w in _positions(dY.shape[1:])]
    return f"db[{i}] = Σ_(t,k) dY[{i}, t, k]   (docs/formulas.md §5)", ("dY",), terms


def _conv2d(layer, param, index, X, dY, extra):
    (s_h, s_w), (pad_h, pad_w) = layer.stride, layer.padding
    o = index[0]
    _, H_out, W_out, m = dY.shape
    _, H, W, _ = X.shape
    if param == "b":
        terms = [Term((y, x, k), (float(dY[o, y, x, k]),), float(dY[o, y, x, k]))
                 for y, x, k in np.ndindex(H_out, W_out, m)]
        return f"db[{o}] = Σ_(y,x,k) dY[{o}, y, x, k]   ({CONV})", ("dY",), terms
    _, c, p, q = index
    terms, padded = [], 0
    for y, x, k in np.ndindex(H_out, W_out, m):
        u, v = y * s_h + p - pad_h, x * s_w + q - pad_w
        if 0 <= u < H and 0 <= v < W:
            terms.append(Term((y, x, k), (float(dY[o, y, x, k]), float(X[c, u, v, k])),
                              float(dY[o, y, x, k]) * float(X[c, u, v, k])))
        else:
            padded += 1
    extra["notes"].append(f"{padded} of the {H_out * W_out * m} output positions read the zero "
                          f"padding for this offset: their terms are 0 and are left out")
    return (f"dW[{o}, {c}, {p}, {q}] = Σ_(y,x,k) dY[{o}, y, x, k] · X[{c}, {s_h}y + {p} − "
            f"{pad_h}, {s_w}x + {q} − {pad_w}, k]   ({CONV})",
            ("dY", "X"), terms)


def _normalized(X, axis_groups, eps):
    """x̂ of X (features first) with the statistics over ``axis_groups`` ("batch": all but the
    first axis; "features": the first axis)."""
    if axis_groups == "batch":
        flat = X.reshape(X.shape[0], -1)
        mu = flat.mean(axis=1, keepdims=True)
        var = ((flat - mu) ** 2).mean(axis=1, keepdims=True)
        return ((flat - mu) / np.sqrt(var + eps)).reshape(X.shape), mu, var
    mu = X.mean(axis=0, keepdims=True)
    var = ((X - mu) ** 2).mean(axis=0, keepdims=True)
    return (X - mu) / np.sqrt(var + eps), mu, var


def _norm(groups: str):
    def sums(layer, param, index, X, dY, extra):
        xhat, mu, var = _normalized(X, groups, layer.eps)
        c = index[0]
        rest = _positions(dY.shape[1:])
        where = "the batch (every example and pixel)" if groups == "batch" else \
            "the features of each column"
        extra["notes"].append(f"x̂ = (X − μ)/√(σ² + ε) with μ, σ² over {where}, recomputed "
                              "from X")
        cite = BATCHNORM if groups == "batch" else LAYERNORM
        if param == "gamma":
            terms = [Term(w, (float(dY[(c, *w)]), float(xhat[(c, *w)])),
                          float(dY[(c, *w)]) * float(xhat[(c, *w)])) for w in rest]
            formula = f"dγ[{c}] = Σ dY[{c}, …] · x̂[{c}, …]   ({cite})"
            return formula, ("dY", "x̂"), terms
        terms = [Term(w, (float(dY[(c, *w)]),), float(dY[(c, *w)])) for w in rest]
        return f"dβ[{c}] = Σ dY[{c}, …]   ({cite})", ("dY",), terms
    return sums


def _batchnorm(layer, param, index, X, dY, extra):
    if not extra["training"]:  # evaluation mode: the running statistics, no coupling
        mean, var = extra["state"]
        xhat = (X - mean.reshape(-1, *([1] * (X.ndim - 1)))) / np.sqrt(
            var.reshape(-1, *([1] * (X.ndim - 1))) + layer.eps)
        c = index[0]
        extra["notes"].append("evaluation mode: x̂ = (X − μ_run)/√(σ²_run + ε) with the running "
                              "statistics (constants: the examples do not couple)")
        rest = _positions(dY.shape[1:])
        if param == "gamma":
            return (f"dγ[{c}] = Σ dY[{c}, …] · x̂[{c}, …]   ({BATCHNORM})", ("dY", "x̂"),
                    [Term(w, (float(dY[(c, *w)]), float(xhat[(c, *w)])),
                          float(dY[(c, *w)]) * float(xhat[(c, *w)])) for w in rest])
        return (f"dβ[{c}] = Σ dY[{c}, …]   ({BATCHNORM})", ("dY",),
                [Term(w, (float(dY[(c, *w)]),), float(dY[(c, *w)])) for w in rest])
    out = _norm("batch")(layer, param, index, X, dY, extra)
    # the input's gradient: three paths (through x̂ directly, through σ², through μ)
    c = index[0]
    flat, g = X.reshape(X.shape[0], -1)[c], dY.reshape(dY.shape[0], -1)[c]
    N, gamma = flat.size, float(extra["params"]["gamma"][c])
    mu, var = flat.mean(), ((flat - flat.mean()) ** 2).mean()
    r = 1.0 / math.sqrt(var + layer.eps)
    ghat = gamma * g
    dvar = float(np.sum(ghat * (flat - mu)) * -0.5 * r ** 3)
    dmu = float(np.sum(ghat) * -r)
    direct, through_var, through_mu = ghat[0] * r, dvar * 2 * (flat[0] - mu) / N, dmu / N
    extra["notes"] += [
        f"and to its input, X[{c}, first value] gets three coupled paths (every value of the "
        "group moves μ and σ²):",
        f"  through x̂ directly: ĝ·r = {_p(ghat[0])}·{_fmt(r)} = {_fmt(direct)}",
        f"  through σ²: ∂L/∂σ² · 2(x − μ)/N = {_p(dvar)}·2·{_p(flat[0] - mu)}/{N} = "
        f"{_fmt(through_var)}",
        f"  through μ: ∂L/∂μ / N = {_p(dmu)}/{N} = {_fmt(through_mu)}",
        f"  sum = {_fmt(direct + through_var + through_mu)}"]
    return out


def _embedding(layer, param, index, X, dY, extra):
    j, v = index
    ids = X.astype(np.int64)
    terms = [Term(("lookup", *w), (float(dY[(j, *w)]),), float(dY[(j, *w)]), ("dY",))
             for w in _positions(ids.shape) if ids[w] == v]
    formula = (f"dE[{j}, {v}] = Σ over the positions (t, k) holding token {v} of "
               f"dY[{j}, t, k]   ({EMBEDDINGS})")
    tied = extra.get("tied")
    if tied is not None:  # the output layer reads E too: its terms add
        Xo, dZ = tied
        terms += [Term(("output", *w), (float(Xo[(j, *w)]), float(dZ[(v, *w)])),
                       float(Xo[(j, *w)]) * float(dZ[(v, *w)]), ("X_out", "dZ_out"))
                  for w in _positions(dZ.shape[1:])]
        formula += f" + Σ_(t,k) X_out[{j}, t, k] · dZ_out[{v}, t, k] (the tied output layer)"
    extra["notes"].append(f"token {v} appears at {sum(1 for t in terms if t.where[0] == 'lookup')}"
                          " positions of the batch")
    return formula, ("dY",), terms


def _position(layer, param, index, X, dY, extra):
    j, t = index
    terms = [Term((k,), (float(dY[j, t, k]),), float(dY[j, t, k])) for k in range(dY.shape[2])]
    return f"dW[{j}, {t}] = Σ_k dY[{j}, {t}, k]   ({EMBEDDINGS})", ("dY",), terms


def _attention(layer, param, index, X, dY, extra):
    P_ = extra["params"]
    C, T, m = X.shape
    H = layer.n_head
    d = C // H
    Wqkv, bqkv, Wo = P_["W_qkv"], P_["b_qkv"], P_["W_o"]
    QKV = np.einsum("rc,ctk->rtk", Wqkv, X) + bqkv[:, None, None]
    Q, K, V = (QKV[a * C:(a + 1) * C].reshape(H, d, T, m) for a in range(3))
    S = np.einsum("hetk,hesk->htsk", Q, K) / math.sqrt(d)
    S = np.where(np.tril(np.ones((T, T), bool))[None, :, :, None], S, -np.inf)
    P = np.exp(S - S.max(axis=2, keepdims=True))
    P /= P.sum(axis=2, keepdims=True)
    O = np.einsum("htsk,hesk->hetk", P, V).reshape(C, T, m)
    if param in ("W_o", "b_o"):
        i = index[0]
        if param == "b_o":
            terms = [Term(w, (float(dY[(i, *w)]),), float(dY[(i, *w)])) for w in _positions((T, m))]
            return f"db_o[{i}] = Σ_(t,k) dY[{i}, t, k]   ({ATTENTION_LAYER})", ("dY",), terms
        jj = index[1]
        terms = [Term(w, (float(dY[(i, *w)]), float(O[(jj, *w)])),
                      float(dY[(i, *w)]) * float(O[(jj, *w)])) for w in _positions((T, m))]
        return (f"dW_o[{i}, {jj}] = Σ_(t,k) dY[{i}, t, k] · O[{jj}, t, k], O = attention output "
                f"({ATTENTION_LAYER})", ("dY", "O"), terms)
    # through the softmax to dQ, dK, dV
    dO = np.einsum("ij,itk->jtk", Wo, dY).reshape(H, d, T, m)
    dP = np.einsum("hetk,hesk->htsk", dO, V)
    dS = P * (dP - np.sum(P * dP, axis=2, keepdims=True))
    dQ = np.einsum("htsk,hesk->hetk", dS, K) / math.sqrt(d)
    dK = np.einsum("htsk,hetk->hesk", dS, Q) / math.sqrt(d)
    dV = np.einsum("htsk,hetk->hesk", P, dO)
    dQKV = np.concatenate([a.reshape(C, T, m) for a in (dQ, dK, dV)])
    row = index[0]
    part, h, e = "QKV"[row // C], (row % C) // d, row % d
    t0, k0 = np.unravel_index(np.argmax(np.abs(dQKV[row])), (T, m))
    path = {"Q": f"dQ[{h}, {e}, t, k] = Σ_s dS[{h}, t, s, k]·K[{h}, {e}, s, k]/√{d}",
            "K": f"dK[{h}, {e}, s, k] = Σ_t dS[{h}, t, s, k]·Q[{h}, {e}, t, k]/√{d}",
            "V": f"dV[{h}, {e}, s, k] = Σ_t P[{h}, t, s, k]·dO[{h}, {e}, t, k]"}[part]
    extra["notes"] += [
        f"row {row} of W_qkv makes {part} of head {h}, feature {e}; its gradient comes through "
        "the softmax:",
        "  dO = W_oᵀ·dY;  dP[t, s] = Σ_e dO[e, t]·V[e, s];  dS = P ⊙ (dP − Σ_s P·dP)",
        f"  {path}",
        f"  e.g. at (t, k) = ({t0}, {k0}): d{part} = {_fmt(dQKV[row, t0, k0])}, with "
        f"P[{h}, {t0}, :, {k0}] = [{', '.join(_fmt(v) for v in P[h, t0, :t0 + 1, k0])}] over "
        f"the keys s ≤ {t0}"]
    if param == "b_qkv":
        terms = [Term(w, (float(dQKV[(row, *w)]),), float(dQKV[(row, *w)]))
                 for w in _positions((T, m))]
        return (f"db_qkv[{row}] = Σ_(t,k) d{part}[{h}, {e}, t, k]   ({ATTENTION_HEAD})",
                (f"d{part}",), terms)
    jj = index[1]
    terms = [Term(w, (float(dQKV[(row, *w)]), float(X[(jj, *w)])),
                  float(dQKV[(row, *w)]) * float(X[(jj, *w)])) for w in _positions((T, m))]
    return (f"dW_qkv[{row}, {jj}] = Σ_(t,k) d{part}[{h}, {e}, t, k] · X[{jj}, t, k]   "
            f"({ATTENTION_HEAD})", (f"d{part}", "X"), terms)


_layernorm = _norm("features")


def through_time(layer, params: dict, X: np.ndarray, dH: np.ndarray):
    """A recurrent layer's forward pass from zero states and backpropagation through time of
    ``dH`` in float64 (:mod:`loopprop.vectorized`'s twins): ``(H, steps)``, ``steps`` holding
    every step's ``δ`` and ``∂L/∂h_t`` (the twins' ``steps``)."""
    from . import vectorized as vec
    from .layers.recurrent import GRU, LSTM

    W_x, W_h = params["W_x"], params["W_h"]
    h0 = np.zeros((layer.hidden, X.shape[2]))
    steps: dict = {}
    if isinstance(layer, LSTM):
        H, C, G = vec.lstm_forward(W_x, W_h, params["b"], X, h0, h0)
        vec.lstm_backward(dH, W_x, W_h, X, h0, h0, H, C, G, h0, h0, steps=steps)
    elif isinstance(layer, GRU):
        H, G = vec.gru_forward(W_x, W_h, params["b_x"], params["b_h"], X, h0)
        vec.gru_backward(dH, W_x, W_h, X, h0, H, G, h0, steps=steps)
    else:
        H = vec.rnn_forward(W_x, W_h, params["b"], X, h0, layer.nonlinearity)
        vec.rnn_backward(dH, W_x, W_h, X, h0, H, h0, layer.nonlinearity, steps=steps)
    return H, steps


def _recurrent(layer, param, index, X, dY, extra):
    """The gradient of a recurrent weight as the sum over time steps (one term per ``t``)."""
    d, T, m = X.shape
    H, steps = through_time(layer, extra["params"], X, dY)
    h0 = np.zeros((layer.hidden, m))
    i = index[0]
    recurrent_side = param in ("W_h", "b_h")
    D = steps["Dh" if recurrent_side else "D"][i]  # (T, m): δ_t[i, k]
    if param in ("W_h", "W_x"):
        j = index[1]
        if param == "W_h":
            other = np.concatenate([h0[j][None], H[j, :-1]])  # h_{t−1}[j, k]
            name, formula = "h_(t−1)", f"Σ_k δ_t[{i}, k]·h_(t−1)[{j}, k]"
        else:
            other = X[j]
            name, formula = "X", f"Σ_k δ_t[{i}, k]·X[{j}, t, k]"
    else:
        other, name, formula = np.ones_like(D), "", f"Σ_k δ_t[{i}, k]"
    terms = []
    for t in range(T):
        value = float(D[t] @ other[t])
        if m == 1 and name:
            terms.append(Term((t,), (float(D[t, 0]), float(other[t, 0])), value,
                              (f"δ_{t}[{i}]", f"{name}[{j}]" if name == "X" else
                               f"h_{t - 1}[{j}]")))
        else:  # one factor: the step's sum over the batch, named by its formula
            step = (f"Σ_k δ_{t}[{i}, k]·h_{t - 1}[{j}, k]" if param == "W_h" else
                    f"Σ_k δ_{t}[{i}, k]·X[{j}, {t}, k]" if param == "W_x" else
                    f"Σ_k δ_{t}[{i}, k]")
            terms.append(Term((t,), (value,), value, (step,)))
    norms = np.sqrt((steps["dh"] ** 2).sum(axis=(0, 2)))
    extra["notes"] += [
        "one term per time step t (the backward loop runs t = T−1 … 0, carrying the gradient "
        "from step t+1 into step t):",
        "  ‖∂L/∂h_t‖ over t = " + ", ".join(_fmt(v) for v in norms)]
    sym = {"W_h": f"dW_h[{i}, {index[-1]}]", "W_x": f"dW_x[{i}, {index[-1]}]"}.get(
        param, f"d{param}[{i}]")
    what = "δ_t · h_(t−1)" if param == "W_h" else "δ_t · X" if param == "W_x" else "δ_t"
    return (f"{sym} = Σ_t {formula}   ({BPTT})", tuple(what.split(" · ")), terms)
