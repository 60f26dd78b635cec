"""Centered finite differences of a network's loss, checked against backpropagation.

For every parameter θ_p: ``(L(θ + ε e_p) − L(θ − ε e_p)) / 2ε``, compared with the gradient
that :meth:`Network.backward` accumulates. No dependency beyond the network itself.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _checks
from .plan import P_OFF, P_SIZE


@dataclass
class LayerReport:
    layer: int  # 1-based among the parameterized layers, as in docs/formulas.md
    n_params: int
    rel_error: float  # ‖analytic − numeric‖ / (‖analytic‖ + ‖numeric‖) over W and b
    max_abs_error: float

    def __str__(self) -> str:
        return (f"layer {self.layer}: {self.n_params} params, relative error "
                f"{self.rel_error:.2e}, max |Δ| {self.max_abs_error:.2e}")


@dataclass
class GradcheckReport:
    max_rel_error: float
    layers: list[LayerReport]

    def __float__(self) -> float:
        return self.max_rel_error

    def __str__(self) -> str:
        return "\n".join([f"gradcheck: largest relative error {self.max_rel_error:.2e}",
                          *(f"  {r}" for r in self.layers)])


def _check_eps(eps: Any) -> float:
    """The finite-difference step: a finite number > 0 (1e-6 suits float64)."""
    if isinstance(eps, bool):
        raise TypeError(f"eps: expected a number such as 1e-6, got {eps!r}")
    value = _checks.finite_float(eps, "eps", " such as 1e-6 (the finite-difference step)")
    if value <= 0:
        raise ValueError(f"eps: the finite-difference step must be > 0, got {eps!r}; "
                         "use 1e-6 in float64, 1e-3 in float32")
    return value


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``‖a − n‖ / (‖a‖ + ‖n‖)``: NaN if either side holds a NaN or Inf (never a pass), and
    0 only when both are exactly zero."""
    if not (np.isfinite(analytic).all() and np.isfinite(numeric).all()):
        return math.nan
    denom = float(np.linalg.norm(analytic) + np.linalg.norm(numeric))
    if denom == 0.0:
        return 0.0  # both gradients are exactly zero: they agree
    return float(np.linalg.norm(analytic - numeric) / denom)


def _loss(net, X, target) -> float:
    """The loss of the batch in the network's mode -- the mode its backward pass differentiates
    (batch norm's batch statistics in training mode)."""
    return float(net.evaluate_checked(X, *target, training=net.training)["loss"])


def _refuse_dropout(net, who: str) -> None:
    """Finite differences need the same loss at every evaluation: no random dropout masks."""
    if net.training and any(layer.random_in_training() for layer in net.rows):
        raise ValueError(f"{who}: the network has Dropout layers, whose random masks make "
                         "the loss differ between evaluations; check a copy without them, or "
                         "call net.eval() first (dropout is then the identity)")


@contextmanager
def backward_on(net, X: Any, Y: Any, who: str):
    """Check ``X`` and ``Y`` (``who`` names the caller in errors), run ``forward`` and
    ``backward`` on them from zeroed gradients, and yield ``(X, targets)`` as checked; the
    network's state (batch norm's running statistics, which every training-mode pass updates,
    finite differences included) is restored on leaving. Its gradients then hold this batch's."""
    _refuse_dropout(net, who)
    Xc = net.check_inputs(X)
    target = net.check_targets(Y, Xc.shape[1])
    saved = net.flat_state.copy()
    try:
        net.zero_grad()
        net.forward(Xc)
        net.backward(Y)
        yield Xc, target
    finally:
        net.flat_state[:] = saved


def _centered_difference(net, X, target, p: int, eps: float) -> float:
    """``(L(θ + ε e_p) − L(θ − ε e_p)) / 2ε`` for the flat parameter index ``p``; θ is left as
    it was."""
    theta = net.flat_params
    old = theta[p]
    try:
        theta[p] = old + eps
        up = _loss(net, X, target)
        theta[p] = old - eps
        down = _loss(net, X, target)
    finally:
        theta[p] = old
    return (up - down) / (2 * eps)


def gradcheck(net, X: Any, Y: Any, eps: float = 1e-6, *, report: bool = False):
    """Largest relative error between backprop and centered finite differences.

    Parameters
    ----------
    net : a :class:`loopprop.Network` (float64 recommended: float32 differences are noisy)
    X : (n_features, m) inputs; Y : targets as :meth:`Network.backward` takes them
    eps : the finite-difference step, a finite number > 0
    report : return a :class:`GradcheckReport` with one line per layer instead of a float

    The network's weights and state (batch norm's running statistics, which every training-mode
    pass updates) are restored exactly afterwards; its gradients hold the analytic gradient of
    this batch. The loss is differentiated in the network's mode (:meth:`Network.train`, the
    default, or :meth:`Network.eval`). A NaN or Inf in either gradient makes that layer's error,
    and the result, NaN: ``gradcheck(...) < 1e-6`` is then False, as a check should be.
    """
    eps = _check_eps(eps)
    with backward_on(net, X, Y, "gradcheck") as (X, target):
        analytic = net.flat_grads.astype(np.float64)
        numeric = np.array([_centered_difference(net, X, target, p, eps)
                            for p in range(net.flat_params.size)])
    layers = []
    for layer, r in enumerate(net.param_rows, 1):
        off, size = int(net.plan[r, P_OFF]), int(net.plan[r, P_SIZE])
        a, nu = analytic[off:off + size], numeric[off:off + size]
        layers.append(LayerReport(layer, a.size, relative_error(a, nu),
                                  float(np.max(np.abs(a - nu)))))
    errors = [r.rel_error for r in layers]
    # NaN anywhere is a failure: Python's max() would keep or drop a NaN by its position
    worst = math.nan if any(math.isnan(e) for e in errors) else max(errors)
    result = GradcheckReport(worst, layers)
    return result if report else result.max_rel_error
