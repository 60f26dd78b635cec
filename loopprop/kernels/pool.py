"""2-D max and average pooling, forward and backward, as explicit loops (docs/formulas.md,
"Pooling").

Images keep loopprop's layout, examples on the last axis: ``A_prev (c, H, W, m)``,
``A (c, H_out, W_out, m)``; ``y, x`` output pixel, ``p, q`` offset in the window, ``k`` batch
item; ``u = y·s_h + p``, ``v = x·s_w + q`` the input pixel; windows ``kh × kw``, no padding,
``H_out = (H − kh) // s_h + 1``.

Max pooling::

    A[c, y, x, k] = max_{p, q} A_prev[c, u, v, k]
    idx[c, y, x, k] = p·kw + q of the first maximum in row-major window order (the cache)
    dA_prev[c, u, v, k] += dA[c, y, x, k]   for the (p, q) that won, only there

Average pooling::

    A[c, y, x, k] = (1 / (kh·kw)) Σ_{p, q} A_prev[c, u, v, k]
    dA_prev[c, u, v, k] += dA[c, y, x, k] / (kh·kw)   for every (p, q) of the window

Overlapping windows (stride < size) add their gradients into the pixels they share. NaN
propagates: a window holding a NaN has a NaN maximum (its first NaN wins the window).

The batch index ``k`` is innermost and contiguous in every array, so each loop body is a vector
loop over the examples; the naive and the tuned kernels are one and the same loop nest
(there is no faster order to tune into), so each pass has a single kernel.
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from .._jit import kernel


@kernel(fast=True)
def _maxpool2d_forward(A, idx, A_prev, kh, kw, s_h, s_w):
    """``A[c, y, x, k] = max_{p, q} A_prev[c, y·s_h + p, x·s_w + q, k]``; ``idx`` caches the
    winning ``p·kw + q`` (the first maximum in row-major window order; the first NaN if any).

    Shapes: A (c, H_out, W_out, m) written; idx (c, H_out, W_out, m) int32 written;
    A_prev (c, H, W, m).
    """
    C, H_out, W_out, m = A.shape
    for c in range(C):
        for y in range(H_out):
            for x in range(W_out):
                for k in range(m):
                    A[c, y, x, k] = A_prev[c, y * s_h, x * s_w, k]
                    idx[c, y, x, k] = 0
                for p in range(kh):
                    for q in range(kw):
                        if p == 0 and q == 0:
                            continue
                        u = y * s_h + p
                        v = x * s_w + q
                        w = p * kw + q
                        for k in range(m):
                            a = A_prev[c, u, v, k]
                            best = A[c, y, x, k]
                            # strictly greater keeps the first maximum; a NaN already in
                            # `best` is never replaced (NaN > a and a > NaN are both false),
                            # and a NaN in `a` replaces a number (best == best is true)
                            take = a > best or (a != a and best == best)
                            A[c, y, x, k] = a if take else best
                            idx[c, y, x, k] = w if take else idx[c, y, x, k]


@kernel(fast=True)
def _maxpool2d_backward(dA_prev, dA, idx, kh, kw, s_h, s_w):
    """``dA_prev[c, y·s_h + p, x·s_w + q, k] += dA[c, y, x, k]`` for the ``(p, q)`` that won
    the window (``idx = p·kw + q``).

    Shapes: dA_prev (c, H, W, m) accumulated; dA (c, H_out, W_out, m); idx as the forward
    pass wrote it.
    """
    C, H_out, W_out, m = dA.shape
    for c in range(C):
        for y in range(H_out):
            for x in range(W_out):
                for p in range(kh):
                    for q in range(kw):
                        u = y * s_h + p
                        v = x * s_w + q
                        w = p * kw + q
                        for k in range(m):
                            # the gradient flows to the winner only: a select, not a branch
                            g = dA[c, y, x, k] if idx[c, y, x, k] == w else 0.0
                            dA_prev[c, u, v, k] += g


@kernel(fast=True)
def _avgpool2d_forward(A, A_prev, kh, kw, s_h, s_w):
    """``A[c, y, x, k] = (1 / (kh·kw)) Σ_{p, q} A_prev[c, y·s_h + p, x·s_w + q, k]``.

    Shapes: A (c, H_out, W_out, m) written; A_prev (c, H, W, m).
    """
    C, H_out, W_out, m = A.shape
    inv = 1.0 / (kh * kw)
    for c in range(C):
        for y in range(H_out):
            for x in range(W_out):
                for k in range(m):
                    A[c, y, x, k] = 0.0
                for p in range(kh):
                    for q in range(kw):
                        u = y * s_h + p
                        v = x * s_w + q
                        for k in range(m):
                            A[c, y, x, k] += A_prev[c, u, v, k]
                for k in range(m):
                    A[c, y, x, k] *= inv


@kernel(fast=True)
def _avgpool2d_backward(dA_prev, dA, kh, kw, s_h, s_w):
    """``dA_prev[c, y·s_h + p, x·s_w + q, k] += dA[c, y, x, k] / (kh·kw)`` for every ``(p, q)``.

    Shapes: dA_prev (c, H, W, m) accumulated; dA (c, H_out, W_out, m).
    """
    C, H_out, W_out, m = dA.shape
    inv = 1.0 / (kh * kw)
    for c in range(C):
        for y in range(H_out):
            for x in range(W_out):
                for p in range(kh):
                    for q in range(kw):
                        u = y * s_h + p
                        v = x * s_w + q
                        for k in range(m):
                            dA_prev[c, u, v, k] += dA[c, y, x, k] * inv


# ---------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------


def pool_geometry(A_shape, size, stride, name="A_prev"):
    """``((kh, kw), (s_h, s_w), H_out, W_out)`` for a pooling window on images of ``A_shape``;
    ``stride`` defaults to ``size`` (non-overlapping windows)."""
    from .conv import pair

    kh, kw = pair(size, "size", 1)
    s_h, s_w = pair(stride if stride is not None else (kh, kw), "stride", 1)
    H, Wd = A_shape[1], A_shape[2]
    if kh > H or kw > Wd:
        raise ValueError(f"size: the pooling window ({kh}×{kw}) is larger than the image "
                         f"({H}×{Wd}) of {name} with shape {tuple(A_shape)}")
    return (kh, kw), (s_h, s_w), (H - kh) // s_h + 1, (Wd - kw) // s_w + 1


_HINT = "images are (channels, height, width, m), examples on the last axis"


def _image(x, name, check_finite):
    return _checks.as_float_array(x, name, 4, check_finite=check_finite, hint=_HINT)


def _upstream(dA, A_prev, out_shape, check_finite):
    dA = _image(dA, "dA", check_finite)
    _checks.same_dtype(dA=dA, A_prev=A_prev)
    if dA.shape != out_shape:
        raise ValueError(f"dA: expected shape {out_shape} (the pooled A_prev), got {dA.shape}")
    return dA


def maxpool2d_forward(A_prev, size=2, stride=None, *, check_finite: bool = True) -> np.ndarray:
    """Max pooling: ``A[c, y, x, k] = max_{p, q} A_prev[c, y·s_h + p, x·s_w + q, k]``.

    ``A_prev`` is ``(c, H, W, m)``; ``size`` and ``stride`` an int or an ``(h, w)`` pair,
    ``stride`` defaulting to ``size``. Returns ``A`` of shape ``(c, H_out, W_out, m)`` with
    ``H_out = (H − kh) // s_h + 1``.
    """
    return _maxpool(A_prev, size, stride, check_finite)[0]


def _maxpool(A_prev, size, stride, check_finite):
    A_prev = _image(A_prev, "A_prev", check_finite)
    (kh, kw), (s_h, s_w), H_out, W_out = pool_geometry(A_prev.shape, size, stride)
    shape = (A_prev.shape[0], H_out, W_out, A_prev.shape[3])
    A = np.empty(shape, A_prev.dtype)
    idx = np.empty(shape, np.int32)
    _maxpool2d_forward(A, idx, A_prev, kh, kw, s_h, s_w)
    return A, idx, A_prev, (kh, kw, s_h, s_w)


def maxpool2d_backward(dA, A_prev, size=2, stride=None, *, check_finite: bool = True
                       ) -> np.ndarray:
    """Backward of max pooling: each window's gradient goes to the input that won it (the
    first maximum in row-major window order); overlapping windows add.

    ``dA`` is ``(c, H_out, W_out, m)``, ``A_prev`` the forward pass's input. Returns
    ``dA_prev`` of ``A_prev``'s shape.
    """
    A, idx, A_prev, geo = _maxpool(A_prev, size, stride, check_finite)
    dA = _upstream(dA, A_prev, A.shape, check_finite)
    dA_prev = np.zeros_like(A_prev)
    _maxpool2d_backward(dA_prev, dA, idx, *geo)
    return dA_prev


def avgpool2d_forward(A_prev, size=2, stride=None, *, check_finite: bool = True) -> np.ndarray:
    """Average pooling: ``A[c, y, x, k] = mean_{p, q} A_prev[c, y·s_h + p, x·s_w + q, k]``.

    Shapes and arguments as :func:`maxpool2d_forward`.
    """
    A_prev = _image(A_prev, "A_prev", check_finite)
    (kh, kw), (s_h, s_w), H_out, W_out = pool_geometry(A_prev.shape, size, stride)
    A = np.empty((A_prev.shape[0], H_out, W_out, A_prev.shape[3]), A_prev.dtype)
    _avgpool2d_forward(A, A_prev, kh, kw, s_h, s_w)
    return A


def avgpool2d_backward(dA, A_prev, size=2, stride=None, *, check_finite: bool = True
                       ) -> np.ndarray:
    """Backward of average pooling: ``dA_prev[c, u, v, k] += dA[c, y, x, k] / (kh·kw)`` for
    every window that holds ``(u, v)``. Returns ``dA_prev`` of ``A_prev``'s shape."""
    A_prev = _image(A_prev, "A_prev", check_finite)
    (kh, kw), (s_h, s_w), H_out, W_out = pool_geometry(A_prev.shape, size, stride)
    dA = _upstream(dA, A_prev, (A_prev.shape[0], H_out, W_out, A_prev.shape[3]), check_finite)
    dA_prev = np.zeros_like(A_prev)
    _avgpool2d_backward(dA_prev, dA, kh, kw, s_h, s_w)
    return dA_prev
