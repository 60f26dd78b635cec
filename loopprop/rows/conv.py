"""The rows of ``Conv2d``, ``MaxPool2d`` and ``AvgPool2d`` (docs/formulas.md, "Convolution",
"Pooling"): images ``(C, H, W, m)``, the plan row's integers their shapes."""

from __future__ import annotations

from ..kernels.conv import _conv2d_backward_tuned, _conv2d_forward_tuned
from ..kernels.pool import (_avgpool2d_backward, _avgpool2d_forward, _maxpool2d_backward,
                            _maxpool2d_forward)
from .._jit import kernel
from ..layers.conv import Conv2d, MaxPool2d
from ..plan import IC_OFF, IN_OFF, OUT_OFF
from .common import _img, _offsets, _vec, _view

#: a ``Conv2d`` row's settings (the first twelve), parameter arrays and parts, by name
CONV = Conv2d.columns(*Conv2d.settings)
ARR_W, ARR_B, COLS, Z_T, W_T, DW_TILES = Conv2d.columns("W", "b", "cols", "ZT", "WT", "dW_tiles")
#: a pooling row's settings (``MaxPool2d`` and ``AvgPool2d`` share them)
P_C, P_H, P_W, P_KH, P_KW, P_SH, P_SW, P_HOUT, P_WOUT = MaxPool2d.columns(*MaxPool2d.settings)


@kernel
def _conv_dims(plan, r):
    """A ``Conv2d`` row's settings: ``(c_in, H, W, c_out, kh, kw, s_h, s_w, pad_h, pad_w,
    H_out, W_out)``."""
    return (plan[r, CONV[0]], plan[r, CONV[1]], plan[r, CONV[2]], plan[r, CONV[3]],
            plan[r, CONV[4]], plan[r, CONV[5]], plan[r, CONV[6]], plan[r, CONV[7]],
            plan[r, CONV[8]], plan[r, CONV[9]], plan[r, CONV[10]], plan[r, CONV[11]])


def conv2d_forward(r, plan, fplan, b, s):
    """``Z[o, y, x, k] = Σ_(c,p,q) W[o, c, p, q]·A[c, y·s_h + p − pad_h, x·s_w + q − pad_w, k]
    + b[o]`` for a ``Conv2d`` row, as one product with the im2col columns (kept for backward)."""
    mb = s.mb
    x_off, y_off, _ = _offsets(plan, r, mb)
    c_in, H, W, c_out, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out = _conv_dims(plan, r)
    K = c_in * kh * kw
    N = H_out * W_out * mb
    _conv2d_forward_tuned(_view(b.acts, y_off, c_out, N), _view(b.theta, plan[r, ARR_W], c_out, K),
                          _vec(b.theta, plan[r, ARR_B], c_out),
                          _img(b.acts, x_off, c_in, H, W, mb),
                          _view(b.work, plan[r, COLS] * mb, N, K),
                          _view(b.work, plan[r, Z_T] * mb, N, c_out),
                          _view(b.fwork, plan[r, W_T], K, c_out), kh, kw, s_h, s_w, pad_h,
                          pad_w, H_out, W_out, s.threads)


def conv2d_backward(r, plan, fplan, b, s):
    """``dW += dZ·colsᵀ``, ``db += Σ dZ``, and (not for row 0) ``dA`` by scattering
    ``Wᵀ·dZ`` back through the columns (col2im)."""
    mb = s.mb
    x_off, y_off, _ = _offsets(plan, r, mb)
    c_in, H, W, c_out, kh, kw, s_h, s_w, pad_h, pad_w, H_out, W_out = _conv_dims(plan, r)
    K = c_in * kh * kw
    N = H_out * W_out * mb
    w = plan[r, ARR_W]
    _conv2d_backward_tuned(_view(b.grad, w, c_out, K), _vec(b.grad, plan[r, ARR_B], c_out),
                           _img(b.dacts, x_off, c_in, H, W, mb),
                           _view(b.dacts, y_off, c_out, N), _view(b.theta, w, c_out, K),
                           _img(b.acts, x_off, c_in, H, W, mb),
                           _view(b.work, plan[r, COLS] * mb, N, K),
                           _view(b.work, plan[r, Z_T] * mb, N, c_out),
                           _view(b.fwork, plan[r, DW_TILES], 16 * K, c_out), kh, kw,
                           s_h, s_w, pad_h, pad_w, H_out, W_out, r > 0, s.threads)


@kernel
def _pool_io(buf, plan, r, mb):
    """A pooling row's input ``(C, H, W, mb)`` and output ``(C, H_out, W_out, mb)`` in ``buf``
    (the activations or their gradients)."""
    C, H, W = plan[r, P_C], plan[r, P_H], plan[r, P_W]
    H_out, W_out = plan[r, P_HOUT], plan[r, P_WOUT]
    return (_img(buf, plan[r, IN_OFF] * mb, C, H, W, mb),
            _img(buf, plan[r, OUT_OFF] * mb, C, H_out, W_out, mb))


@kernel
def _winners(icache, plan, r, mb):
    """A max-pooling row's winners (their flat input index), ``(C, H_out, W_out, mb)``."""
    return _img(icache, plan[r, IC_OFF] * mb, plan[r, P_C], plan[r, P_HOUT], plan[r, P_WOUT],
                mb)


def maxpool2d_forward(r, plan, fplan, b, s):
    """``A[c, y, x, k] = max over the window`` for a ``MaxPool2d`` row; each winner's index in
    the integer cache. The row's integers: ``C, H, W, kh, kw, s_h, s_w, H_out, W_out``."""
    x, y = _pool_io(b.acts, plan, r, s.mb)
    kh, kw, s_h, s_w = plan[r, P_KH], plan[r, P_KW], plan[r, P_SH], plan[r, P_SW]
    _maxpool2d_forward(y, _winners(b.icache, plan, r, s.mb), x, kh, kw, s_h, s_w)


def maxpool2d_backward(r, plan, fplan, b, s):
    """``dZ[winner] += dA`` (not for row 0)."""
    if r > 0:
        dx, dy = _pool_io(b.dacts, plan, r, s.mb)
        kh, kw, s_h, s_w = plan[r, P_KH], plan[r, P_KW], plan[r, P_SH], plan[r, P_SW]
        _maxpool2d_backward(dx, dy, _winners(b.icache, plan, r, s.mb), kh, kw, s_h, s_w)


def avgpool2d_forward(r, plan, fplan, b, s):
    """``A[c, y, x, k] = mean over the window`` for an ``AvgPool2d`` row (integers as
    :func:`maxpool2d_forward`'s)."""
    x, y = _pool_io(b.acts, plan, r, s.mb)
    kh, kw, s_h, s_w = plan[r, P_KH], plan[r, P_KW], plan[r, P_SH], plan[r, P_SW]
    _avgpool2d_forward(y, x, kh, kw, s_h, s_w)


def avgpool2d_backward(r, plan, fplan, b, s):
    """``dZ[window] += dA / (kh·kw)`` (not for row 0)."""
    if r > 0:
        dx, dy = _pool_io(b.dacts, plan, r, s.mb)
        kh, kw, s_h, s_w = plan[r, P_KH], plan[r, P_KW], plan[r, P_SH], plan[r, P_SW]
        _avgpool2d_backward(dx, dy, kh, kw, s_h, s_w)
