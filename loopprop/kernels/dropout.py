"""Inverted dropout, forward and backward, as explicit loops (docs/formulas.md, "Dropout").

During training each activation is kept with probability ``1 − p`` and scaled by
``1 / (1 − p)``, so that its expected value is unchanged and evaluation needs no rescaling
(evaluation is the identity)::

    mask[t] = 0 if r[t] < p else 1 / (1 − p),   r[t] uniform in [0, 1)
    A_out[t] = A[t] · mask[t]                   (forward; the mask is the cache)
    dA[t] = dA_out[t] · mask[t]                 (backward)

``t`` is the flat index over every element (any shape: ``(n, m)`` or ``(c, H, W, m)``). The
random numbers come from loopprop's own generator (:mod:`loopprop.kernels.rng`) as a hash of
``(seed, t)``: the mask depends on the seed and the element, not on the thread count or on the
order in which elements are visited.
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from .._jit import kernel
from .rng import GAMMA, _mix
from .views import borrowed_flat

_TWO_M53 = 1.0 / 9007199254740992.0


@kernel
def _dropout_forward(A_out, mask, A, p, seed, col0, cols):
    """Inverted dropout (docs/formulas.md, "Dropout"): ``mask[u] = 0 if r(seed, t) < p else
    1/(1 − p)``; ``A_out[u] = A[u] · mask[u]``, for the value ``u = i·m + k`` of row ``i`` and
    example ``k`` (the arrays seen as ``(rows, m)``, ``m`` their last axis) and ``t = i·cols +
    col0 + k``: the arrays are columns ``col0 …`` of a batch of ``cols`` (``col0 = 0``, ``cols
    = m``: ``t = u``, the flat index), so that a data-parallel rank's share of a batch gets the
    masks one process gives those examples.

    Shapes: A_out, mask written, A: any shape, all the same, C-contiguous.
    ``r(seed, t)`` is the top 53 bits of SplitMix64's output for the counter
    ``seed·γ + (t + 1)·γ``, scaled to [0, 1).
    """
    a_out = borrowed_flat(A_out)
    mk = borrowed_flat(mask)
    a = borrowed_flat(A)
    m = A.shape[-1]
    keep = 1.0 / (1.0 - p)
    base = np.uint64(seed) * np.uint64(GAMMA)
    for i in range(a.shape[0] // max(m, 1)):
        for k in range(m):
            u = i * m + k
            t = i * cols + col0 + k
            r = np.float64(_mix(base + np.uint64(t + 1) * np.uint64(GAMMA)) >> np.uint64(11))
            mk[u] = 0.0 if r * _TWO_M53 < p else keep
            a_out[u] = a[u] * mk[u]


@kernel(fast=True)
def _dropout_backward(dA, dA_out, mask):
    """``dA[t] += dA_out[t] · mask[t]`` (accumulates). Shapes: all the same, C-contiguous."""
    da = borrowed_flat(dA)
    do = borrowed_flat(dA_out)
    mk = borrowed_flat(mask)
    for t in range(da.shape[0]):
        da[t] += do[t] * mk[t]


def check_p(p) -> float:
    """A dropout probability in [0, 1)."""
    return _checks.check_fraction(p, "p", 0.0, 1.0,
                                  example=" such as 0.5 (the probability of dropping a unit)")


def dropout_forward(A, p: float, seed: int, *, check_finite: bool = True):
    """Inverted dropout in training mode: ``(A_out, mask)`` with ``mask`` holding 0 (dropped,
    probability ``p``) or ``1/(1 − p)`` (kept), and ``A_out = A · mask``.

    ``A`` is any float array (``(n, m)`` or ``(c, H, W, m)``), ``p`` in [0, 1), ``seed`` a
    non-negative integer of any size: the same seed gives the same mask.
    """
    A = _checks.as_float_array(A, "A", (1, 2, 3, 4), check_finite=check_finite)
    p = check_p(p)
    seed = _checks.stream_seed(_checks.check_int(seed, "seed", 0, "non-negative integer seed"))
    A_out, mask = np.empty_like(A), np.empty_like(A)
    _dropout_forward(A_out, mask, A, p, seed, 0, A.shape[-1])
    return A_out, mask


def dropout_backward(dA, mask, *, check_finite: bool = True) -> np.ndarray:
    """``dA_prev = dA · mask``: the gradient flows through the kept units only, scaled like
    them. ``mask`` is the one :func:`dropout_forward` returned."""
    dA = _checks.as_float_array(dA, "dA", (1, 2, 3, 4), check_finite=check_finite)
    mask = _checks.as_float_array(mask, "mask", dA.ndim, check_finite=check_finite)
    _checks.same_dtype(dA=dA, mask=mask)
    _checks.require_shape(mask, "mask", dA.shape, "the mask of the forward pass")
    out = np.zeros_like(dA)
    _dropout_backward(out, dA, mask)
    return out
