"""The chain rule with real numbers, index by index (docs/formulas.md §3, §4, §5, §11).

* :func:`explain_neuron` — one neuron, each step of §4 as formula then value (default: §11).
* :func:`explain_weight` — one weight ``W^(l)[i, j]`` of a small seeded network: every term of
  ``dL/dW^(l)[i, j] = Σ_k dZ^(l)[i, k] · A^(l−1)[j, k]``, and the path of ``dZ`` back from the
  output through ``Wᵀ`` and ``f'``, ending in the value ``backward`` gives and the value centered
  finite differences give.

The traces are computed with plain Python floats, one product at a time, so every printed
number is the number that was used; they are then checked against the compiled kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ._numbers import _fmt, _p, _vec
from .kernels.neuron import neuron_step

_F_PRIME = {
    "sigmoid": "σ(z)(1 − σ(z))",
    "tanh": "1 − tanh²(z)",
    "relu": "1 if z > 0 else 0",
    "leaky_relu": "1 if z > 0 else α",
    "identity": "1",
}
_F = {"sigmoid": "σ(z)", "tanh": "tanh(z)", "relu": "max(z, 0)", "leaky_relu": "leaky_relu(z)",
      "identity": "z"}


def explain_neuron(x=2.0, w=0.5, b=1.0, y=1.0, activation: str = "sigmoid",
                   loss: str = "mse") -> str:
    """Forward and backward through one neuron, each step's formula and then its value.

    The defaults are docs/formulas.md §11: ``x = 2, w = 0.5, b = 1, y = 1``, sigmoid,
    ``L = ½(y − a)²``. ``x`` and ``w`` may be vectors of one length.
    """
    s = neuron_step(x, w, b, y, activation=activation, loss=loss)
    xs, ws = np.atleast_1d(np.asarray(x, float)), np.atleast_1d(np.asarray(w, float))
    terms = " + ".join(f"{_p(wj)}·{_p(xj)}" for wj, xj in zip(ws, xs))
    loss_formula = "½(y − a)²" if loss == "mse" else "−[y log a + (1 − y) log(1 − a)]"
    dl_da = "a − y" if loss == "mse" else "(a − y) / (a(1 − a))"
    lines = [
        f"One neuron: x = {_vec(xs) if xs.size > 1 else _fmt(xs[0])}, "
        f"w = {_vec(ws) if ws.size > 1 else _fmt(ws[0])}, b = {_fmt(b)}, y = {_fmt(y)}, "
        f"a = {_F[activation]}, L = {loss_formula}",
        "",
        "Forward pass (§4)",
        f"  z = Σ_j w_j·x_j + b = {terms} + {_fmt(b)} = {_fmt(s['z'])}",
        f"  a = {_F[activation].replace('z', _fmt(s['z']))} = {s['a']:.4f}",
        f"  L = {loss_formula} = {s['loss']:.5g}",
        "",
        "Backward pass: the chain rule, one factor at a time (§3, §4)",
        f"  1. dL/da = {dl_da} = {s['dL_da']:.4f}",
        f"  2. da/dz = f'(z) = {_F_PRIME[activation]} = {s['da_dz']:.4f}",
        f"  3. dL/dz = dL/da · da/dz = ({s['dL_da']:.4f})·({s['da_dz']:.4f}) = {s['dL_dz']:.4f}",
    ]
    dw = np.atleast_1d(s["dL_dw"])
    for j, (xj, g) in enumerate(zip(xs, dw)):
        sub = f"_{j + 1}" if xs.size > 1 else ""
        lines.append(f"  4. dL/dw{sub} = dL/dz · x{sub} = ({s['dL_dz']:.4f})·{_fmt(xj)} = "
                     f"{g:.4f}")
    lines.append(f"  5. dL/db = dL/dz · 1 = {s['dL_db']:.4f}")
    if loss == "binary_cross_entropy":
        lines.append("     (with the sigmoid, dL/da · da/dz collapses to a − y: the §9 shortcut)")
    return "\n".join(lines)


@dataclass
class WeightExplanation:
    """The trace of ``dL/dW^(l)[i, j]``; ``str()`` gives the text."""

    layer: int
    i: int
    j: int
    terms: list[float]
    total: float
    backward: float
    finite_difference: float
    lines: list[str] = field(repr=False, default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.lines)


def _act(name: str, z: float, alpha: float) -> float:
    if name == "sigmoid":
        return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))
    if name == "tanh":
        return math.tanh(z)
    if name == "relu":
        return z if z > 0 else 0.0
    if name == "leaky_relu":
        return z if z > 0 else alpha * z
    return z


def _act_prime(name: str, z: float, a: float, alpha: float) -> float:
    return {"sigmoid": a * (1 - a), "tanh": 1 - a * a, "relu": 1.0 if z > 0 else 0.0,
            "leaky_relu": 1.0 if z > 0 else alpha, "identity": 1.0}[name]


def explain_weight(layer_sizes: Sequence[int] = (2, 3, 1), *, layer: int = 1, i: int = 0,
                   j: int = 0, batch: int = 2, seed: int = 0, activation: str = "sigmoid",
                   eps: float = 1e-6) -> WeightExplanation:
    """Explain ``dL/dW^(layer)[i, j]`` for a small seeded network, index by index.

    The network has ``activation`` in every hidden layer and a sigmoid output, and the loss is
    ``L = (1/m) Σ_k ½ Σ_i (A^(L)[i, k] − Y[i, k])²``; inputs ``X`` and targets ``Y`` are drawn
    from ``seed``. ``layer`` is 1-based (§6); ``i`` indexes layer ``l``'s neurons and
    ``j`` the previous layer's.
    """
    from .network import Network

    sizes = [int(s) for s in layer_sizes]
    L = len(sizes) - 1
    if L < 1:
        raise ValueError("layer_sizes: expected at least two sizes, e.g. 2-3-1")
    if max(sizes) > 8 or batch > 4:
        raise ValueError("explain is for small networks (≤ 8 neurons per layer, ≤ 4 examples) "
                         "so that every term can be printed")
    if not 1 <= layer <= L:
        raise ValueError(f"layer: expected 1…{L} for a {L}-layer network, got {layer}")
    if not 0 <= i < sizes[layer]:
        raise ValueError(f"i: layer {layer} has {sizes[layer]} neurons, expected 0…"
                         f"{sizes[layer] - 1}, got {i}")
    if not 0 <= j < sizes[layer - 1]:
        raise ValueError(f"j: layer {layer - 1} has {sizes[layer - 1]} neurons, expected 0…"
                         f"{sizes[layer - 1] - 1}, got {j}")
    acts = [activation] * (L - 1) + ["sigmoid"]
    net = Network(sizes, acts, "mse", seed=seed, init="xavier")
    rng = np.random.default_rng(seed + 1)
    X = np.round(rng.uniform(-1, 1, (sizes[0], batch)), 2)
    Y = np.round(rng.uniform(0, 1, (sizes[-1], batch)), 2)
    P = [(W.tolist(), b.tolist()) for W, b in net.params]
    alpha, m = net.alpha, batch

    # forward, scalar by scalar (§5–§6): Z^(q)[r, k] = Σ_s W^(q)[r, s]·A^(q−1)[s, k] + b^(q)[r]
    A = [X.tolist()]
    Zs: list = [None]
    for q in range(1, L + 1):
        W, b = P[q - 1]
        Zq = [[sum(W[r][s] * A[q - 1][s][k] for s in range(sizes[q - 1])) + b[r]
               for k in range(m)] for r in range(sizes[q])]
        Zs.append(Zq)
        A.append([[_act(acts[q - 1], z, alpha) for z in row] for row in Zq])

    out = [f"dL/dW^({layer})[{i}, {j}] in a {'-'.join(map(str, sizes))} network "
           f"(hidden: {activation}, output: sigmoid, L = (1/m) Σ_k ½ Σ_i (A^({L}) − Y)², "
           f"m = {m}, seed {seed})", ""]
    out.append("Inputs X (columns are examples) and targets Y:")
    for k in range(m):
        out.append(f"  k = {k}: X[:, {k}] = {_vec([A[0][s][k] for s in range(sizes[0])])}, "
                   f"Y[:, {k}] = {_vec([Y[r][k] for r in range(sizes[-1])])}")
    out += ["", "Forward pass (§5, §6): Z^(l) = W^(l)·A^(l−1) + b^(l), A^(l) = f(Z^(l)), cached"]
    for q in range(1, L + 1):
        for k in range(m):
            out.append(f"  Z^({q})[:, {k}] = {_vec([Zs[q][r][k] for r in range(sizes[q])])}   "
                       f"A^({q})[:, {k}] = {_vec([A[q][r][k] for r in range(sizes[q])])}")

    # backward: seed, then the path down to layer `layer`
    out += ["", f"Backward pass (§6), from the output down to layer {layer}:",
            f"  seed: dA^({L})[r, k] = (A^({L})[r, k] − Y[r, k]) / m   (§9, the 1/m of the mean)"]
    dZ: dict[int, list] = {}
    dA_top = [[(A[L][r][k] - Y[r][k]) / m for k in range(m)] for r in range(sizes[L])]
    dZ[L] = [[dA_top[r][k] * _act_prime(acts[L - 1], Zs[L][r][k], A[L][r][k], alpha)
              for k in range(m)] for r in range(sizes[L])]
    out.append(f"  dZ^({L})[r, k] = dA^({L})[r, k] · f'(Z^({L})[r, k]),  f' = σ(z)(1 − σ(z))")
    for r in range(sizes[L]):
        for k in range(m):
            fp = _act_prime(acts[L - 1], Zs[L][r][k], A[L][r][k], alpha)
            out.append(f"    dZ^({L})[{r}, {k}] = ({_fmt(A[L][r][k])} − {_fmt(Y[r][k])})/{m}·"
                       f"{_p(fp)} = {_fmt(dZ[L][r][k])}")
    for q in range(L - 1, layer - 1, -1):
        W_up = P[q][0]  # W^(q+1)
        out.append(f"  dA^({q})[r, k] = Σ_s W^({q + 1})[s, r] · dZ^({q + 1})[s, k]   (Wᵀ·dZ, §5);"
                   f"  dZ^({q}) = dA^({q}) ⊙ f'(Z^({q})),  f' = {_F_PRIME[acts[q - 1]]}")
        rows = range(sizes[q]) if q > layer else [i]
        dZ[q] = [[0.0] * m for _ in range(sizes[q])]
        for r in rows:
            for k in range(m):
                parts = [W_up[s][r] * dZ[q + 1][s][k] for s in range(sizes[q + 1])]
                da = sum(parts)
                fp = _act_prime(acts[q - 1], Zs[q][r][k], A[q][r][k], alpha)
                dZ[q][r][k] = da * fp
                expr = " + ".join(f"{_p(W_up[s][r])}·{_p(dZ[q + 1][s][k])}"
                                  for s in range(sizes[q + 1]))
                out.append(f"    dA^({q})[{r}, {k}] = {expr} = {_fmt(da)};  dZ^({q})[{r}, {k}] = "
                           f"{_p(da)}·{_p(fp)} = {_fmt(dZ[q][r][k])}")

    terms = [dZ[layer][i][k] * A[layer - 1][j][k] for k in range(m)]
    total = sum(terms)
    out += ["", "The weight's gradient (§5: dW = dZ·A_prevᵀ, summed over the batch):",
            f"  dL/dW^({layer})[{i}, {j}] = Σ_k dZ^({layer})[{i}, k] · A^({layer - 1})[{j}, k]"]
    for k, t in enumerate(terms):
        out.append(f"    k = {k}: {_p(dZ[layer][i][k])}·{_p(A[layer - 1][j][k])} = "
                   f"{_fmt(t)}")
    out.append(f"  sum = {total:.12g}")

    # check against the compiled backward pass and against finite differences
    net.zero_grad()
    net.forward(X)
    net.backward(Y)
    from_backward = float(net.grads[layer - 1][0][i, j])
    W = net.params[layer - 1][0]
    old = W[i, j]
    W[i, j] = old + eps
    up = net.evaluate(X, Y)["loss"]
    W[i, j] = old - eps
    down = net.evaluate(X, Y)["loss"]
    W[i, j] = old
    fd = (up - down) / (2 * eps)
    out += ["", "Checks:",
            f"  Network.backward (compiled kernels):   {from_backward:.12g}",
            f"  centered finite differences (ε={eps:g}): {fd:.12g}",
            f"  |sum − backward| = {abs(total - from_backward):.2e}, "
            f"|sum − finite differences| = {abs(total - fd):.2e}"]
    return WeightExplanation(layer, i, j, terms, total, from_backward, fd, out)


def explain(network=None, *args, **kwargs):
    """With no ``network``: :func:`explain_neuron` (docs/formulas.md §11 by default). With sizes
    such as ``[2, 3, 1]``: :func:`explain_weight`. With a :class:`~loopprop.Network` and a
    batch, ``explain(net, X, Y, layer=1, param="W", index=(3, 0, 1, 2))``: any parameter of any
    layer kind (:func:`loopprop.explain_param.explain_param`). Returns text (neuron) or an
    explanation whose ``str()`` is the text."""
    if network is None:
        return explain_neuron(**kwargs)
    from .network import Network

    if isinstance(network, Network):
        from .explain_param import explain_param

        return explain_param(network, *args, **kwargs)
    return explain_weight(network, *args, **kwargs)
