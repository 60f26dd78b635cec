"""A 2-D convolution layer, forward and backward, as explicit loops (cross-correlation, as
PyTorch's ``conv2d`` computes it).

Images keep the guide's layout, examples on the last axis: ``A_prev (c_in, H, W, m)``,
``Z (c_out, H_out, W_out, m)``, ``W (c_out, c_in, kh, kw)``, ``b (c_out,)``. Index names: ``i``
output channel, ``c`` input channel, ``y, x`` output pixel, ``p, q`` kernel offset, ``k`` batch
item; ``s_h, s_w`` the stride, ``pad_h, pad_w`` the zero padding, and
``u = y·s_h + p − pad_h``, ``v = x·s_w + q − pad_w`` the input pixel that offset ``(p, q)`` of
output pixel ``(y, x)`` reads (zero outside the image).

Forward::

    Z[i, y, x, k] = b[i] + Σ_c Σ_p Σ_q W[i, c, p, q] · A_prev[c, u, v, k]

Backward (each term of the forward sum, differentiated by the array it came from)::

    dW[i, c, p, q]  += Σ_y Σ_x Σ_k dZ[i, y, x, k] · A_prev[c, u, v, k]
    db[i]           += Σ_y Σ_x Σ_k dZ[i, y, x, k]
    dA_prev[c, u, v, k] += Σ_i Σ_p Σ_q W[i, c, p, q] · dZ[i, y, x, k]   (over every (y, p), (x, q)
                                                                      that reach (u, v))

``H_out = (H + 2·pad_h − kh) // s_h + 1`` and likewise ``W_out``.

The *naive* kernels are these sums typed as loops. The *tuned* kernels compute the same sums as
matrix products on the packed SIMD kernel of :mod:`loopprop.kernels.gemm`, through the
"im2col" matrix ``cols[(c, p, q), (y, x, k)] = A_prev[c, u, v, k]``. With examples on the last
axis, ``Z`` seen as ``(c_out, H_out·W_out·m)`` is exactly that product's result in memory::

    Z  = W·cols + b                (W seen as (c_out, c_in·kh·kw))
    dW += dZ·colsᵀ                 (cols is what the forward pass caches, guide §14)
    dcols = Wᵀ·dZ, then dA_prev[c, u, v, k] += dcols[(c, p, q), (y, x, k)]   ("col2im")
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from .._jit import PARALLEL_MIN_WORK, kernel, prange, runtime_flag, use_threads
from .gemm import _gemm

# ---------------------------------------------------------------------------------------------
# naive kernels: the formulas, typed as loops
# ---------------------------------------------------------------------------------------------


@kernel
def _conv2d_forward_naive(Z, W, b, A_prev, s_h, s_w, pad_h, pad_w):
    """``Z[i, y, x, k] = b[i] + Σ_c Σ_p Σ_q W[i, c, p, q] · A_prev[c, u, v, k]`` with
    ``u = y·s_h + p − pad_h``, ``v = x·s_w + q − pad_w`` (zero outside the image).

    Shapes: Z (c_out, H_out, W_out, m) written; W (c_out, c_in, kh, kw); b (c_out,);
    A_prev (c_in, H, W, m).
    """
    c_out, c_in, kh, kw = W.shape
    H, Wd, m = A_prev.shape[1], A_prev.shape[2], A_prev.shape[3]
    H_out, W_out = Z.shape[1], Z.shape[2]
    for i in range(c_out):
        for y in range(H_out):
            for x in range(W_out):
                for k in range(m):
                    z = b[i]
                    for c in range(c_in):
                        for p in range(kh):
                            u = y * s_h + p - pad_h
                            if u < 0 or u >= H:
                                continue  # a padded row: A_prev is zero there
                            for q in range(kw):
                                v = x * s_w + q - pad_w
                                if v < 0 or v >= Wd:
                                    continue
                                z += W[i, c, p, q] * A_prev[c, u, v, k]
                    Z[i, y, x, k] = z


@kernel
def _conv2d_backward_naive(dW, db, dA_prev, dZ, W, A_prev, s_h, s_w, pad_h, pad_w):
    """The backward sums as loops; every gradient *accumulates* (``+=``).

    ``dW[i, c, p, q] += Σ_y Σ_x Σ_k dZ[i, y, x, k] · A_prev[c, u, v, k]``
    ``db[i] += Σ_y Σ_x Σ_k dZ[i, y, x, k]``
    ``dA_prev[c, u, v, k] += W[i, c, p, q] · dZ[i, y, x, k]`` for every (i, y, x, p, q)

    Shapes: dW (c_out, c_in, kh, kw); db (c_out,); dA_prev (c_in, H, W, m);
    dZ (c_out, H_out, W_out, m); W (c_out, c_in, kh, kw); A_prev (c_in, H, W, m).
    """
    c_out, c_in, kh, kw = W.shape
    H, Wd, m = A_prev.shape[1], A_prev.shape[2], A_prev.shape[3]
    H_out, W_out = dZ.shape[1], dZ.shape[2]
    for i in range(c_out):
        for y in range(H_out):
            for x in range(W_out):
                for k in range(m):
                    g = dZ[i, y, x, k]
                    # forward: Z[i, y, x, k] = b[i] + ...  ->  ∂Z/∂b[i] = 1
                    db[i] += g
                    for c in range(c_in):
                        for p in range(kh):
                            u = y * s_h + p - pad_h
                            if u < 0 or u >= H:
                                continue
                            for q in range(kw):
                                v = x * s_w + q - pad_w
                                if v < 0 or v >= Wd:
                                    continue
                                # forward: ... + W[i, c, p, q] · A_prev[c, u, v, k]
                                dW[i, c, p, q] += g * A_prev[c, u, v, k]
                                dA_prev[c, u, v, k] += W[i, c, p, q] * g


# ---------------------------------------------------------------------------------------------
# tuned kernels: im2col / col2im around the packed product
# ---------------------------------------------------------------------------------------------


@kernel(fast=True)
def _im2col_rows(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, c0, c1):
    """``cols[(c, p, q), (y, x, k)] = A_prev[c, u, v, k]`` (0 outside the image) for the input
    channels ``c0 ≤ c < c1``: for each row, ``H_out·W_out`` contiguous copies of ``m`` values."""
    H, Wd, m = A_prev.shape[1], A_prev.shape[2], A_prev.shape[3]
    for c in range(c0, c1):
        for p in range(kh):
            for q in range(kw):
                row = (c * kh + p) * kw + q
                for y in range(H_out):
                    u = y * s_h + p - pad_h
                    for x in range(W_out):
                        v = x * s_w + q - pad_w
                        base = (y * W_out + x) * m
                        if u < 0 or u >= H or v < 0 or v >= Wd:
                            for k in range(m):
                                cols[row, base + k] = 0.0
                        else:
                            for k in range(m):
                                cols[row, base + k] = A_prev[c, u, v, k]


@kernel(fast=True)
def _col2im_rows(dA_prev, dcols, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, c0, c1):
    """``dA_prev[c, u, v, k] += dcols[(c, p, q), (y, x, k)]`` for the input channels
    ``c0 ≤ c < c1`` (the rows of one channel only ever write that channel)."""
    H, Wd, m = dA_prev.shape[1], dA_prev.shape[2], dA_prev.shape[3]
    for c in range(c0, c1):
        for p in range(kh):
            for q in range(kw):
                row = (c * kh + p) * kw + q
                for y in range(H_out):
                    u = y * s_h + p - pad_h
                    if u < 0 or u >= H:
                        continue
                    for x in range(W_out):
                        v = x * s_w + q - pad_w
                        if v < 0 or v >= Wd:
                            continue
                        base = (y * W_out + x) * m
                        for k in range(m):
                            dA_prev[c, u, v, k] += dcols[row, base + k]


@kernel(parallel=True)
def _im2col(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads):
    """:func:`_im2col_rows` over every input channel, one contiguous range of channels per
    thread when the copy is large enough to pay."""
    c_in = A_prev.shape[0]
    if threads > 1 and c_in > 1 and cols.size >= PARALLEL_MIN_WORK:
        chunks = min(threads, c_in)
        for t in prange(chunks):
            _im2col_rows(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out,
                         t * c_in // chunks, (t + 1) * c_in // chunks)
    else:
        _im2col_rows(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, int(0), c_in)


@kernel(parallel=True)
def _col2im(dA_prev, dcols, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads):
    """:func:`_col2im_rows` over every input channel; threads own whole channels of dA_prev,
    so no two write one element and the sums do not depend on the thread count."""
    c_in = dA_prev.shape[0]
    if threads > 1 and c_in > 1 and dcols.size >= PARALLEL_MIN_WORK:
        chunks = min(threads, c_in)
        for t in prange(chunks):
            _col2im_rows(dA_prev, dcols, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out,
                         t * c_in // chunks, (t + 1) * c_in // chunks)
    else:
        _col2im_rows(dA_prev, dcols, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, int(0), c_in)


@kernel(fast=True)
def _conv2d_forward_tuned(Z2, W2, b, A_prev, cols, kh, kw, s_h, s_w, pad_h, pad_w, H_out,
                          W_out, threads):
    """``Z = W·cols + b`` (see the module docstring), on the packed SIMD product.

    Shapes: Z2 (c_out, H_out·W_out·m) written -- Z seen flat per output channel;
    W2 (c_out, c_in·kh·kw) -- W seen flat per output channel; b (c_out,);
    A_prev (c_in, H, W, m); cols (c_in·kh·kw, H_out·W_out·m) written: the im2col matrix, which
    the backward pass reads again (the forward pass caches it).
    """
    _im2col(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads)
    c_out, n = Z2.shape
    for i in range(c_out):
        for t in range(n):
            Z2[i, t] = b[i]
    _gemm(Z2, W2, cols, runtime_flag(False), runtime_flag(False), threads)


@kernel(fast=True)
def _conv2d_backward_tuned(dW2, db, dA_prev, dZ2, W2, cols, dcols, kh, kw, s_h, s_w, pad_h,
                           pad_w, H_out, W_out, need_dA_prev, threads):
    """The backward sums as products; every gradient accumulates (``+=``).

    ``dW += dZ·colsᵀ``; ``db[i] += Σ_t dZ[i, t]``; ``dcols = Wᵀ·dZ`` and
    ``dA_prev[c, u, v, k] += dcols[(c, p, q), (y, x, k)]`` (skipped without ``need_dA_prev``).

    Shapes: dW2 (c_out, c_in·kh·kw); db (c_out,); dA_prev (c_in, H, W, m);
    dZ2 (c_out, H_out·W_out·m); W2 (c_out, c_in·kh·kw); cols (c_in·kh·kw, H_out·W_out·m), as
    the forward pass left it; dcols, same shape, a workspace.
    """
    _gemm(dW2, dZ2, cols, runtime_flag(False), runtime_flag(True), threads)
    c_out, n = dZ2.shape
    for i in range(c_out):
        s = dZ2.dtype.type(0)
        for t in range(n):
            s += dZ2[i, t]
        db[i] += s
    if not need_dA_prev:
        return
    for r in range(dcols.shape[0]):
        for t in range(n):
            dcols[r, t] = 0.0
    _gemm(dcols, W2, dZ2, runtime_flag(True), runtime_flag(False), threads)
    _col2im(dA_prev, dcols, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads)


# ---------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------

IMPLS = ("tuned", "naive")


def pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or an ``(h, w)`` pair of ints, each at least ``minimum``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name}: expected an int or an (h, w) pair, got {value!r}")
        return (_checks.check_int(value[0], name, minimum),
                _checks.check_int(value[1], name, minimum))
    v = _checks.check_int(value, name, minimum)
    return v, v


def output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """``(size + 2·padding − kernel) // stride + 1``: output pixels along one axis."""
    return (size + 2 * padding - kernel_size) // stride + 1


def conv_geometry(W_shape, A_shape, stride, padding, w_name="W", a_name="A_prev"):
    """Check a convolution's shapes; return ``(stride pair, padding pair, H_out, W_out)``."""
    s_h, s_w = pair(stride, "stride", 1)
    pad_h, pad_w = pair(padding, "padding", 0)
    c_out, c_in, kh, kw = W_shape
    if A_shape[0] != c_in:
        raise ValueError(
            f"{a_name} has {A_shape[0]} channels (shape {tuple(A_shape)}) but {w_name} expects "
            f"{c_in} (shape {tuple(W_shape)}: (c_out, c_in, kh, kw)); images are "
            "(channels, height, width, m)"
        )
    H, Wd = A_shape[1], A_shape[2]
    if kh > H + 2 * pad_h or kw > Wd + 2 * pad_w:
        raise ValueError(
            f"the kernel ({kh}×{kw}) is larger than the padded image ({H + 2 * pad_h}×"
            f"{Wd + 2 * pad_w}: {H}×{Wd} with padding ({pad_h}, {pad_w})); use a smaller "
            "kernel or more padding"
        )
    return (s_h, s_w), (pad_h, pad_w), output_size(H, kh, s_h, pad_h), \
        output_size(Wd, kw, s_w, pad_w)


_IMAGE_HINT = "images are (channels, height, width, m), examples on the last axis"


def conv2d_forward(W, b, A_prev, stride=1, padding=0, *, impl: str = "tuned",
                   check_finite: bool = True, parallel: bool = True) -> np.ndarray:
    """Forward pass of a 2-D convolution (cross-correlation, as PyTorch's ``conv2d``).

    ``Z[i, y, x, k] = b[i] + Σ_c Σ_p Σ_q W[i, c, p, q] · A_prev[c, y·s_h + p − pad_h,
    x·s_w + q − pad_w, k]``

    Parameters
    ----------
    W : (c_out, c_in, kh, kw) float32 or float64
    b : (c_out,) same dtype
    A_prev : (c_in, H, W, m) same dtype; examples on the last axis
    stride, padding : an int or an ``(h, w)`` pair; stride ≥ 1, padding ≥ 0 (zeros)
    impl : ``"tuned"`` (im2col + packed SIMD product) or ``"naive"`` (the formula as loops)

    Returns
    -------
    Z : (c_out, H_out, W_out, m) with ``H_out = (H + 2·pad_h − kh) // s_h + 1``
    """
    _checks.check_choice(impl, "impl", IMPLS)
    W = _checks.as_float_array(W, "W", 4, check_finite=check_finite,
                               hint="W has shape (c_out, c_in, kh, kw)")
    b = _checks.as_float_array(b, "b", 1, check_finite=check_finite,
                               hint="b is a vector of shape (c_out,)")
    A_prev = _checks.as_float_array(A_prev, "A_prev", 4, check_finite=check_finite,
                                    hint=_IMAGE_HINT)
    _checks.same_dtype(W=W, b=b, A_prev=A_prev)
    if b.shape[0] != W.shape[0]:
        raise ValueError(f"b has shape {b.shape} but W has shape {W.shape}: b needs one entry "
                         f"per output channel, shape ({W.shape[0]},)")
    (s_h, s_w), (pad_h, pad_w), H_out, W_out = conv_geometry(W.shape, A_prev.shape, stride,
                                                             padding)
    c_out, c_in, kh, kw = W.shape
    m = A_prev.shape[3]
    Z = np.empty((c_out, H_out, W_out, m), W.dtype)
    if impl == "naive":
        _conv2d_forward_naive(Z, W, b, A_prev, s_h, s_w, pad_h, pad_w)
    else:
        cols = np.empty((c_in * kh * kw, H_out * W_out * m), W.dtype)
        _conv2d_forward_tuned(Z.reshape(c_out, -1), W.reshape(c_out, -1), b, A_prev, cols, kh,
                              kw, s_h, s_w, pad_h, pad_w, H_out, W_out, use_threads(parallel))
    return Z


def conv2d_backward(dZ, W, A_prev, stride=1, padding=0, *, impl: str = "tuned",
                    check_finite: bool = True, parallel: bool = True):
    """Backward pass of a 2-D convolution: ``(dW, db, dA_prev)``.

    ``dW[i, c, p, q] = Σ_y Σ_x Σ_k dZ[i, y, x, k] · A_prev[c, u, v, k]``,
    ``db[i] = Σ_y Σ_x Σ_k dZ[i, y, x, k]``,
    ``dA_prev[c, u, v, k] = Σ W[i, c, p, q] · dZ[i, y, x, k]`` over every ``(i, y, x, p, q)``
    with ``u = y·s_h + p − pad_h``, ``v = x·s_w + q − pad_w``.

    Parameters
    ----------
    dZ : (c_out, H_out, W_out, m) gradient of the loss w.r.t. Z
    W : (c_out, c_in, kh, kw); A_prev : (c_in, H, W, m) the forward pass's input
    stride, padding : as in :func:`conv2d_forward`
    """
    _checks.check_choice(impl, "impl", IMPLS)
    dZ = _checks.as_float_array(dZ, "dZ", 4, check_finite=check_finite, hint=_IMAGE_HINT)
    W = _checks.as_float_array(W, "W", 4, check_finite=check_finite,
                               hint="W has shape (c_out, c_in, kh, kw)")
    A_prev = _checks.as_float_array(A_prev, "A_prev", 4, check_finite=check_finite,
                                    hint=_IMAGE_HINT)
    _checks.same_dtype(dZ=dZ, W=W, A_prev=A_prev)
    (s_h, s_w), (pad_h, pad_w), H_out, W_out = conv_geometry(W.shape, A_prev.shape, stride,
                                                             padding)
    c_out, c_in, kh, kw = W.shape
    m = A_prev.shape[3]
    want = (c_out, H_out, W_out, m)
    if dZ.shape != want:
        raise ValueError(f"dZ: expected shape {want} (the output of W on A_prev with stride "
                         f"({s_h}, {s_w}) and padding ({pad_h}, {pad_w})), got {dZ.shape}")
    dW = np.zeros_like(W)
    db = np.zeros(c_out, W.dtype)
    dA_prev = np.zeros_like(A_prev)
    if impl == "naive":
        _conv2d_backward_naive(dW, db, dA_prev, dZ, W, A_prev, s_h, s_w, pad_h, pad_w)
    else:
        threads = use_threads(parallel)
        cols = np.empty((c_in * kh * kw, H_out * W_out * m), W.dtype)
        _im2col(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads)
        dcols = np.empty_like(cols)
        _conv2d_backward_tuned(dW.reshape(c_out, -1), db, dA_prev, dZ.reshape(c_out, -1),
                               W.reshape(c_out, -1), cols, dcols, kh, kw, s_h, s_w, pad_h,
                               pad_w, H_out, W_out, True, threads)
    return dW, db, dA_prev
