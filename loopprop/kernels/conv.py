"""A 2-D convolution layer, forward and backward, as explicit loops (cross-correlation, as
PyTorch's ``conv2d`` computes it; docs/formulas.md, "Convolution" derives the sums).

Images keep loopprop's layout, examples on the last axis: ``A_prev (c_in, H, W, m)``,
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
"im2col" matrix, stored transposed: one row per output position and example ``t = (y, x, k)``,
one column per weight ``r = (c, p, q)``::

    colsT[(y, x, k), (c, p, q)] = A_prev[c, u, v, k]

    Zᵀ  = colsT · Wᵀ                   then Z[i, t] = b[i] + Zᵀ[t, i]   (W seen as (c_out, K))
    dWᵀ = cols · dZᵀ                    (cols = colsTᵀ, built again from A_prev: the cache of
                                        the forward pass is its input, docs/formulas.md §14)
    dcolsT = dZᵀ · W, then dA_prev[c, u, v, k] += dcolsT[(y, x, k), (c, p, q)]   ("col2im")

Why transposed: a convolution has few output channels (8–32) and many positions × examples.
The packed kernel splits the rows of its result between threads and packs its right-hand
operand; with the many positions as rows, the threads share the work evenly and pack only the
small weight matrix, and every operand is read row-major (measured on LeNet's second layer,
``Zᵀ = colsT · Wᵀ`` ran at 40 GFLOP/s on two threads where ``Z = W · cols`` ran at 13). ``dW``,
a long sum over ``t`` into a small result, runs as ``dWᵀ = cols · dZᵀ``: the big operand is
read in place and only the small one packed (:func:`_conv2d_backward_tuned`).

Small convolutions (below ``DIRECT_MAX_WORK`` multiply-adds) skip all of that and run the
naive sums with the batch index innermost: one weight times ``m`` contiguous examples per step
(:func:`~loopprop.kernels.conv_im2col._conv2d_direct_forward`), which the copies and packing of
the matrix path cannot beat at that size. The matrix path and these loops live in
:mod:`loopprop.kernels.conv_im2col`.

**Register-blocked direct loops.** When the batch fills a register tile (two vectors: 16
float64 or 32 float32 examples, the training case) the tuned kernels need neither im2col nor
col2im: with examples on the last axis, ``A_prev[c, u, v, k : k + L]`` is one vector load. The
forward pass keeps ``Z[i : i + 4, y, x, k : k + 4L]`` in sixteen registers
(:func:`~loopprop.kernels.conv_tiles._fwd_tile4`); the input gradient sums
``Σ_i W[i, c, p, q] · dZ[i, y, x, k : k + 4L]`` for four input channels in registers and adds
it into ``dA_prev`` once per ``(p, q)`` (:func:`~loopprop.kernels.conv_tiles._dx_tile4`);
``dW`` keeps per-lane partial sums of 4 × 4 channel tiles for one ``(p, q)``, output rows
outermost (:func:`~loopprop.kernels.conv_tiles_dw._dw_tile`). Channels and examples that fill
no tile run the same sums as plain loops. These are the sums of the naive kernels, regrouped; the
tests hold them to the naive twin and to PyTorch.
"""

from __future__ import annotations

import numpy as np

from .. import _checks
from .._jit import kernel, runtime_flag, use_threads
from .conv_im2col import (
    _col2im,
    _conv2d_direct_backward,
    _conv2d_direct_forward,
    _direct,
    _im2col,
    _im2col_untransposed,
)
from .conv_tiles import _conv2d_simd_backward_dx, _conv2d_simd_forward, _simd
from .conv_tiles_dw import _conv2d_simd_backward_dw
from .dense import _transpose
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


@kernel(fast=True, separate=True)
def _conv2d_forward_tuned(Z2, W2, b, A_prev, colsT, ZT, WT, kh, kw, s_h, s_w, pad_h, pad_w,
                          H_out, W_out, threads):
    """``Zᵀ = colsT · Wᵀ``, ``Z[i, t] = b[i] + Zᵀ[t, i]`` (see the module docstring).

    Shapes: Z2 (c_out, T) written, T = H_out·W_out·m -- Z seen flat per output channel;
    W2 (c_out, K), K = c_in·kh·kw -- W seen flat per output channel; b (c_out,);
    A_prev (c_in, H, W, m); workspaces colsT (T, K) (the transposed im2col matrix), ZT
    (T, c_out) and WT (K, c_out).
    """
    c_out, K = W2.shape
    T = Z2.shape[1]
    m = A_prev.shape[3]
    c_in = A_prev.shape[0]
    if _simd(m, A_prev.itemsize):
        _conv2d_simd_forward(Z2.reshape(c_out, H_out, W_out, m),
                             W2.reshape(c_out, c_in, kh, kw), b, A_prev, s_h, s_w, pad_h, pad_w,
                             threads)
        return
    if _direct(c_out, K, T):
        _conv2d_direct_forward(Z2.reshape(c_out, H_out, W_out, m),
                               W2.reshape(c_out, c_in, kh, kw), b, A_prev, s_h, s_w, pad_h,
                               pad_w)
        return
    _im2col(colsT, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads)
    _transpose(WT, W2)
    T, c_out = ZT.shape
    for t in range(T):
        for i in range(c_out):
            ZT[t, i] = 0.0
    _gemm(ZT, colsT, WT, runtime_flag(False), runtime_flag(False), threads)
    for t0 in range(0, T, 16):  # Z = b + Zᵀᵀ, in 16-wide tiles of t
        t1 = min(t0 + 16, T)
        for i in range(c_out):
            bi = b[i]
            for t in range(t0, t1):
                Z2[i, t] = bi + ZT[t, i]


@kernel(fast=True, separate=True)
def _conv2d_backward_tuned(dW2, db, dA_prev, dZ2, W2, A_prev, dcolsT, dZT, dWT, kh, kw, s_h,
                           s_w, pad_h, pad_w, H_out, W_out, need_dA_prev, threads):
    """The backward sums as products; every gradient accumulates (``+=``).

    ``dW[i, r] += Σ_t dZ[i, t] · colsT[t, r]``; ``db[i] += Σ_t dZ[i, t]``;
    ``dcolsT = dZᵀ · W`` and ``dA_prev[c, u, v, k] += dcolsT[(y, x, k), (c, p, q)]`` (skipped
    without ``need_dA_prev``).

    Shapes: dW2 (c_out, K); db (c_out,); dA_prev (c_in, H, W, m); dZ2 (c_out, T);
    W2 (c_out, K); A_prev (c_in, H, W, m), the forward pass's input; workspaces dcolsT (T, K),
    dZT (T, c_out) and dWT (16·K, c_out): ``dWᵀ`` in its first K rows on the im2col path, the
    register tiles' partial sums (``dW`` × 8 or 16 lanes) on the direct one.

    ``dW`` is a long sum over ``t`` into a small result. It runs as ``dWᵀ = cols · dZᵀ``: the
    rows are the ``K`` weights (split between threads), the big operand ``cols`` -- built in the
    dcolsT workspace before dcolsT is needed -- is read in place, and only the small ``dZᵀ`` is
    packed. (Packing the big operand costs as much as the arithmetic when
    the other side has only 8–32 rows: measured 2× slower.)
    """
    c_out, T = dZ2.shape
    K = W2.shape[1]
    m = A_prev.shape[3]
    c_in = A_prev.shape[0]
    simd_dx = need_dA_prev and _simd(m, A_prev.itemsize)
    if _direct(c_out, K, T):
        _conv2d_direct_backward(dW2.reshape(c_out, c_in, kh, kw), db, dA_prev,
                                dZ2.reshape(c_out, H_out, W_out, m),
                                W2.reshape(c_out, c_in, kh, kw), A_prev, s_h, s_w, pad_h, pad_w,
                                need_dA_prev and not simd_dx)
        if simd_dx:
            _conv2d_simd_backward_dx(dA_prev, W2.reshape(c_out, c_in, kh, kw),
                                     dZ2.reshape(c_out, H_out, W_out, m), s_h, s_w, pad_h,
                                     pad_w, threads)
        return
    if _simd(m, A_prev.itemsize):  # register tiles: no im2col, no col2im
        dZ4 = dZ2.reshape(c_out, H_out, W_out, m)
        _conv2d_simd_backward_dw(dW2.reshape(c_out, c_in, kh, kw), db, dZ4, A_prev, dWT, s_h,
                                 s_w, pad_h, pad_w, threads)
        if need_dA_prev:
            _conv2d_simd_backward_dx(dA_prev, W2.reshape(c_out, c_in, kh, kw), dZ4, s_h, s_w,
                                     pad_h, pad_w, threads)
        return
    dWT = dWT[:K]  # (the rest of the scratch holds the register tiles' partial sums)
    _transpose(dZT, dZ2)
    # cols, untransposed, in the dcolsT workspace until dcolsT is computed: built again from
    # A_prev, each row a run of contiguous copies, which is 5–6× faster than transposing
    # colsT (measured at 43 264 × 144: 16 ms to transpose)
    cols = dcolsT.reshape(K, T)
    _im2col_untransposed(cols, A_prev, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads)
    for r in range(K):
        for i in range(c_out):
            dWT[r, i] = 0.0
    _gemm(dWT, cols, dZT, runtime_flag(False), runtime_flag(False), threads)
    for i in range(c_out):
        for r in range(K):
            dW2[i, r] += dWT[r, i]
    for i in range(c_out):
        s = dZ2.dtype.type(0)
        for t in range(T):
            s += dZ2[i, t]
        db[i] += s
    if not need_dA_prev:
        return
    for t in range(T):
        for r in range(K):
            dcolsT[t, r] = 0.0
    _gemm(dcolsT, dZT, W2, runtime_flag(False), runtime_flag(False), threads)
    _col2im(dA_prev, dcolsT, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out, threads)


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
    if min(W_shape) < 1:
        raise ValueError(f"{w_name}: expected a kernel (c_out, c_in, kh, kw) with every side ≥ 1, "
                         f"got shape {tuple(W_shape)}: a convolution needs at least one output "
                         "channel, one input channel and a 1×1 window")
    if min(A_shape) < 1:
        raise ValueError(f"{a_name}: expected images (channels, height, width, m) with every "
                         f"side ≥ 1, got shape {tuple(A_shape)}")
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
        T, K = H_out * W_out * m, c_in * kh * kw
        _conv2d_forward_tuned(Z.reshape(c_out, -1), W.reshape(c_out, -1), b, A_prev,
                              np.empty((T, K), W.dtype), np.empty((T, c_out), W.dtype),
                              np.empty((K, c_out), W.dtype), kh, kw, s_h, s_w, pad_h, pad_w,
                              H_out, W_out, use_threads(parallel))
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
        T, K = H_out * W_out * m, c_in * kh * kw
        _conv2d_backward_tuned(dW.reshape(c_out, -1), db, dA_prev, dZ.reshape(c_out, -1),
                               W.reshape(c_out, -1), A_prev, np.empty((T, K), W.dtype),
                               np.empty((T, c_out), W.dtype), np.empty((16 * K, c_out), W.dtype),
                               kh,
                               kw, s_h, s_w, pad_h, pad_w, H_out, W_out, True, threads)
    return dW, db, dA_prev
