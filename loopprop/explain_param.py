"""``explain_param``: one parameter of any layer kind, explained with real numbers -- every
term of its gradient's sum (each kind's sum is in :mod:`loopprop.explain_layers`, paired with
the kind in :mod:`loopprop.layers.registry`), the total checked against ``backward`` and
centered finite differences."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from . import _checks
from ._numbers import _fmt, _p
from .explain_layers import ParamExplanation
from .gradcheck import _centered_difference, _check_eps, backward_on
from .layers.registry import kind_of
from .plan import P_OFF


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
    eps = _check_eps(eps)
    top = _checks.check_positive_int(top, "top")
    n_layers = len(net.param_rows)
    layer = _checks.check_int(layer, "layer", 1)
    if layer > n_layers:
        raise ValueError(f"layer: the network has {n_layers} layers with parameters (1 … "
                         f"{n_layers}), got {layer}")
    r = net.param_rows[layer - 1]
    row = net.rows[r]
    kind = type(row).__name__
    sums = kind_of(row).explain  # the registry pairs each kind with its sum
    if sums is None:
        raise ValueError(f"layer {layer} is a {kind}: no explanation is written for it")
    arrays = net.layout["arrays"][r]
    names = list(arrays)
    if param not in arrays:
        raise ValueError(f"param: layer {layer} ({kind}) has {', '.join(names)}; got {param!r}")
    shape = arrays[param][1]
    index = tuple(0 for _ in shape) if index is None else tuple(int(v) for v in index)
    if len(index) != len(shape) or any(not 0 <= v < n for v, n in zip(index, shape)):
        raise ValueError(f"index: {param} of layer {layer} has shape {shape}; got {index} "
                         f"(one index per axis, each in range, e.g. "
                         f"{','.join('0' for _ in shape)})")
    with backward_on(net, X, Y, "explain") as (Xc, target):
        grads = dict(zip(names, (np.asarray(g, np.float64) for g in net.grads[layer - 1])))
        m = Xc.shape[1]
        Xin = net.last_batch(r, "input").astype(np.float64)
        dY = net.last_batch(r, "output_grad").astype(np.float64)
        extra: dict[str, Any] = {"notes": [], "training": net.training, "params": {
            n: np.asarray(v, np.float64) for n, v in zip(names, net.params[layer - 1])},
            "state": [np.asarray(getattr(row, n), np.float64) for n in row.state_names]}
        owner = net.plan[r, P_OFF]
        for rr, other in enumerate(net.rows):  # a tied output layer reading this E
            if other.shares_params_of is not None and net.plan[rr, P_OFF] == owner and rr != r:
                extra["tied"] = (net.last_batch(rr, "input").astype(np.float64),
                                 net.last_batch(rr, "output_grad").astype(np.float64))
        formula, factor_names, terms = sums(row, param, index, Xin, dY, extra)
        backward = float(grads[param][index])
        off = net.array_span(r, param)[0] + int(np.ravel_multi_index(index, shape))
        numeric = _centered_difference(net, Xc, target, off, eps)
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


__all__ = ["explain_param"]
