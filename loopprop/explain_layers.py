"""One parameter of any layer kind, explained with real numbers: every term of its gradient's
sum, checked against ``backward`` and centered finite differences (docs/formulas.md has each
sum's derivation).

:func:`explain_param` runs a network forward and backward on a batch, reads the gradient that
reached the chosen layer's output (``dY``) and the values that fed it (its input ``X``), and
rebuilds ``∂L/∂θ`` for one entry θ of one parameter array as the sum the formula writes, term
by term, with NumPy in float64 from those arrays:

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

Long sums print their largest terms and the count and sum of the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ._numbers import _fmt, _p

#: the sections of docs/formulas.md each sum is derived in
CONV = 'docs/formulas.md, "Convolution"'
BATCHNORM = 'docs/formulas.md, "Batch normalization"'
LAYERNORM = 'docs/formulas.md, "Layer normalization"'
EMBEDDINGS = 'docs/formulas.md, "Token and position embeddings"'
ATTENTION_LAYER = 'docs/formulas.md, "The attention layer"'
ATTENTION_HEAD = 'docs/formulas.md, "Attention, one head"'


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


# -- the driver -------------------------------------------------------------------------------


def _region(buf: np.ndarray, off: int, shape: tuple, m: int) -> np.ndarray:
    size = int(np.prod(shape))
    return buf[off * m:(off + size) * m].reshape(*shape, m).astype(np.float64)


def explain_param(net, X: Any, Y: Any, *, layer: int = 1, param: str = "W",
                  index: Sequence[int] | None = None, top: int = 8,
                  eps: float = 1e-6) -> ParamExplanation:
    """Explain ``∂L/∂θ`` for ``θ = param[index]`` of the ``layer``-th parameterized layer
    (1-based, as ``gradcheck`` counts) on the batch ``X, Y``: the formula, the forward values
    and the gradient that feed each term, the ``top`` largest terms (and the count and sum of
    the rest), the total, ``backward``'s value and the centered finite difference.

    The network should be float64 (float32 differences are noise). Its weights, gradients and
    state are as before afterwards, except that its gradients hold this batch's.
    """
    from . import _checks
    from .gradcheck import _centered_difference, _check_eps, _refuse_dropout
    from .layers.registry import kind_of
    from .plan import IN_OFF, OUT_OFF, P_OFF

    eps = _check_eps(eps)
    top = _checks.check_positive_int(top, "top")
    n_layers = len(net._param_rows)
    layer = _checks.check_int(layer, "layer", 1)
    if layer > n_layers:
        raise ValueError(f"layer: the network has {n_layers} layers with parameters (1 … "
                         f"{n_layers}), got {layer}")
    r = net._param_rows[layer - 1]
    row = net._rows[r]
    kind = type(row).__name__
    sums = kind_of(row).explain  # the registry pairs each kind with its sum
    if sums is None:
        raise ValueError(f"layer {layer} is a {kind}: no explanation is written for it")
    names, shapes = list(row.param_names), row.param_shapes()
    if param not in names:
        raise ValueError(f"param: layer {layer} ({kind}) has {', '.join(names)}; got {param!r}")
    a = names.index(param)
    shape = tuple(shapes[a])
    index = tuple(0 for _ in shape) if index is None else tuple(int(v) for v in index)
    if len(index) != len(shape) or any(not 0 <= v < n for v, n in zip(index, shape)):
        raise ValueError(f"index: {param} of layer {layer} has shape {shape}; got {index} "
                         f"(one index per axis, each in range, e.g. "
                         f"{','.join('0' for _ in shape)})")
    _refuse_dropout(net, "explain")
    Xc = net._check_X(X)
    target = net._check_targets(Y, Xc.shape[1])
    saved = net._state.copy()
    try:
        net.zero_grad()
        net.forward(X)
        net.backward(Y)
        grads = dict(zip(names, (np.asarray(g, np.float64) for g in net.grads[layer - 1])))
        buf, m, _ = net._cache
        plan = net._plan
        Xin = _region(buf.acts, int(plan[r, IN_OFF]), row.in_shape, m)
        dY = _region(buf.dacts, int(plan[r, OUT_OFF]), row.out_shape, m)
        extra: dict[str, Any] = {"notes": [], "training": net.training, "params": {
            n: np.asarray(v, np.float64) for n, v in zip(names, net.params[layer - 1])},
            "state": [np.asarray(v, np.float64) for v in net._state_views(r)]}
        for rr, other in enumerate(net._rows):  # a tied output layer reading this E
            if getattr(other, "shares_params_of", None) is not None and \
                    int(plan[rr, P_OFF]) == int(plan[r, P_OFF]) and rr != r:
                extra["tied"] = (_region(buf.acts, int(plan[rr, IN_OFF]), other.in_shape, m),
                                 _region(buf.dacts, int(plan[rr, OUT_OFF]), other.out_shape, m))
        formula, factor_names, terms = sums(row, param, index, Xin, dY, extra)
        backward = float(grads[param][index])
        off = int(plan[r, P_OFF]) + sum(int(np.prod(s)) for s in shapes[:a]) + \
            int(np.ravel_multi_index(index, shape))
        numeric = _centered_difference(net, Xc, target, off, eps)
    finally:
        net._state[:] = saved
    total = math.fsum(t.value for t in terms)
    index_text = ", ".join(map(str, index))
    lines = [f"∂L/∂{param}[{index_text}] of layer {layer} ({row!r}), a batch of {m}",
             f"  {formula}",
             f"  the layer's input X has shape {row.in_shape + (m,)}, the gradient reaching its "
             f"output dY shape {row.out_shape + (m,)}"]
    lines += [f"  {note}" for note in extra["notes"]]
    ranked = sorted(terms, key=lambda t: -abs(t.value))
    shown = ranked[:top]
    lines.append(f"{len(terms)} terms; the {len(shown)} largest:" if len(terms) > top
                 else f"{len(terms)} terms:")
    for t in shown:
        factors = " · ".join(f"{n}={_p(v)}" for n, v in zip(t.names or factor_names, t.factors))
        lines.append(f"  at {t.where}: {factors} = {_fmt(t.value)}")
    if len(terms) > top:
        rest = math.fsum(t.value for t in ranked[top:])
        lines.append(f"  … and {len(terms) - top} more terms, summing to {_fmt(rest)}")
    scale = max(abs(backward), abs(numeric), 1e-300)
    lines += [f"total            = {total:.12g}",
              f"backward gives   = {backward:.12g}   (|Δ|/scale "
              f"{abs(total - backward) / scale:.1e})",
              f"finite differences = {numeric:.12g}   (|Δ|/scale "
              f"{abs(total - numeric) / scale:.1e}, ε = {eps:g})"]
    return ParamExplanation(layer, kind, param, index, terms, total, backward, numeric, lines)
