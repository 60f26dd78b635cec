"""Centered finite differences of a network's loss, checked against backpropagation.

For every parameter θ_p: ``(L(θ + ε e_p) − L(θ − ε e_p)) / 2ε``, compared with the gradient
that :meth:`Network.backward` accumulates. No dependency beyond the network itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class LayerReport:
    layer: int  # 1-based, as in the guide
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


def _loss(net, X, target) -> float:
    return float(net._evaluate_checked(X, *target)["loss"])


def gradcheck(net, X: Any, Y: Any, eps: float = 1e-6, *, report: bool = False):
    """Largest relative error between backprop and centered finite differences.

    Parameters
    ----------
    net : a :class:`loopprop.Network` (float64 recommended: float32 differences are noisy)
    X : (n_features, m) inputs; Y : targets as :meth:`Network.backward` takes them
    eps : the finite-difference step
    report : return a :class:`GradcheckReport` with one line per layer instead of a float

    The network's weights are restored exactly afterwards; its gradients hold the analytic
    gradient of this batch.
    """
    X = net._check_X(X)
    target = net._check_targets(Y, X.shape[1])
    net.zero_grad()
    net.forward(X)
    net.backward(Y)
    analytic = net._grad.astype(np.float64)
    numeric = np.zeros_like(analytic)
    theta = net._theta
    for p in range(theta.size):
        old = theta[p]
        theta[p] = old + eps
        up = _loss(net, X, target)
        theta[p] = old - eps
        down = _loss(net, X, target)
        theta[p] = old
        numeric[p] = (up - down) / (2 * eps)
    layers = []
    for layer, (off, n_in, n_out) in enumerate(zip(net._w_off, net.layer_sizes[:-1],
                                                   net.layer_sizes[1:]), 1):
        sl = slice(off, off + n_out * n_in + n_out)
        a, nu = analytic[sl], numeric[sl]
        denom = np.linalg.norm(a) + np.linalg.norm(nu)
        rel = float(np.linalg.norm(a - nu) / denom) if denom > 0 else 0.0
        layers.append(LayerReport(layer, a.size, rel, float(np.max(np.abs(a - nu)))))
    result = GradcheckReport(max(r.rel_error for r in layers), layers)
    return result if report else result.max_rel_error
