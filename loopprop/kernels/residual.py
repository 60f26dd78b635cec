"""The residual connection ``out = x + f(x)``, forward and backward, as explicit loops
(docs/formulas.md, "Residual connections").

The closing row of a residual block reads two regions -- the branch's output ``f(x)`` and the
block's input ``x`` (the skip path) -- and writes their sum. Its backward pass sends the
gradient of ``out`` unchanged into **both**: ``∂out/∂f = 1`` and ``∂out/∂x = 1``. The branch's
backward pass then adds its own contribution into the same ``dx``: two paths, one gradient,
which is why every backward kernel accumulates (the README's "Conventions").
"""

from __future__ import annotations

from .._jit import kernel
from .views import borrowed_flat


@kernel(fast=True)
def _residual_forward(out, branch, skip):
    """``out[t] = branch[t] + skip[t]`` for every element ``t``. Shapes: all the same (any),
    C-contiguous; ``out`` may be neither input."""
    o = borrowed_flat(out)
    f = borrowed_flat(branch)
    x = borrowed_flat(skip)
    for t in range(o.shape[0]):
        o[t] = f[t] + x[t]


@kernel(fast=True)
def _residual_backward(dbranch, dskip, dout):
    """``dbranch[t] += dout[t]``; ``dskip[t] += dout[t]`` (both add: the README's
    "Conventions"). ``dbranch`` and ``dskip`` may be one region (an empty branch: ``out = 2x``,
    and the gradient correctly arrives twice)."""
    db = borrowed_flat(dbranch)
    ds = borrowed_flat(dskip)
    do = borrowed_flat(dout)
    for t in range(do.shape[0]):
        db[t] += do[t]
    for t in range(do.shape[0]):
        ds[t] += do[t]
