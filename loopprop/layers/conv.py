"""Convolution and pooling layers: images ``(C, H, W)`` per example, ``(C, H, W, m)`` a batch
(docs/formulas.md, "Convolution" and "Pooling")."""

from __future__ import annotations

import numpy as np

from .. import _checks
from ..kernels.conv import output_size
from .base import Layer, pair


class Conv2d(Layer):
    """2-D convolution (cross-correlation, as PyTorch's ``conv2d``):
    ``Z[i, y, x, k] = b[i] + Σ_c Σ_p Σ_q W[i, c, p, q] · A_prev[c, y·s_h + p − pad_h,
    x·s_w + q − pad_w, k]``.

    Parameters ``W (c_out, c_in, kh, kw)``, ``b (c_out,)``. Its backward pass reads its input
    (no other cache); scratch for the im2col matrix and its gradient.
    """

    kernels = ("conv._conv2d_forward_tuned", "conv._conv2d_backward_tuned")
    settings = ("c_in", "H_in", "W_in", "c_out", "kh", "kw", "s_h", "s_w", "pad_h", "pad_w",
                "H_out", "W_out")
    #: the (transposed) im2col matrix or its gradient, and Zᵀ or dZᵀ
    work_parts = ("cols", "ZT")
    #: Wᵀ; dWᵀ, or the register tiles' partial sums of dW (up to 16 lanes each)
    fixed_work_parts = ("WT", "dW_tiles")

    def __init__(self, c_out: int, kernel=3, stride=1, padding=0) -> None:
        self.c_out = _checks.check_positive_int(c_out, "c_out")
        self.kernel = pair(kernel, "kernel", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)

    def _build(self, in_shape):
        self._need(in_shape, 3, "an image (C, H, W)")
        c_in, H, W = in_shape
        kh, kw = self.kernel
        (s_h, s_w), (pad_h, pad_w) = self.stride, self.padding
        if kh > H + 2 * pad_h or kw > W + 2 * pad_w:
            raise ValueError(f"{self!r}: the kernel ({kh}×{kw}) is larger than the padded input "
                             f"({H + 2 * pad_h}×{W + 2 * pad_w}) of shape {in_shape}")
        self.c_in = c_in
        self.H_out = output_size(H, kh, s_h, pad_h)
        self.W_out = output_size(W, kw, s_w, pad_w)
        K, positions = c_in * kh * kw, self.H_out * self.W_out
        # no cache: the backward pass reads the input itself. Scratch: the (transposed) im2col
        # matrix or its gradient, and Zᵀ or dZᵀ
        self.work_size = (K + self.c_out) * positions
        # Wᵀ; dWᵀ, or the register tiles' partial sums of dW (up to 16 lanes each)
        self.fixed_work_size = 17 * K * self.c_out
        return (self.c_out, self.H_out, self.W_out)

    def param_shapes(self):
        return [(self.c_out, self.c_in, *self.kernel), (self.c_out,)]

    def part_sizes(self):
        K, positions = self.c_in * self.kernel[0] * self.kernel[1], self.H_out * self.W_out
        return {"cols": K * positions, "ZT": self.c_out * positions, "WT": K * self.c_out,
                "dW_tiles": 16 * K * self.c_out}

    def ints(self):
        c_in, H, W = self.in_shape
        return [c_in, H, W, self.c_out, *self.kernel, *self.stride, *self.padding, self.H_out,
                self.W_out]

    def init_params(self, views, rng, init):
        W, b = views
        fan_in = self.c_in * self.kernel[0] * self.kernel[1]
        fan_out = self.c_out * self.kernel[0] * self.kernel[1]
        var = 2.0 / fan_in if init == "he" else 2.0 / (fan_in + fan_out)
        W[...] = rng.standard_normal(W.shape) * np.sqrt(var)
        b[...] = 0.0

    def config(self):
        return {"c_out": self.c_out, "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": list(self.padding)}

    def formulas(self, x, y, l):
        def index(axis, off, s, pad):  # y·s + p − pad, written as a student would
            return (axis if s == 1 else f"{s}{axis}") + f" + {off}" + (f" − {pad}" if pad else "")

        at = (f"{x}[c, {index('y', 'p', self.stride[0], self.padding[0])}, "
              f"{index('x', 'q', self.stride[1], self.padding[1])}, k]")
        return {"forward": f"{y}[i, y, x, k] = b{l}[i] + Σ_c,p,q W{l}[i, c, p, q]·{at}",
                "backward": [f"dW{l}[i, c, p, q] = Σ_y,x,k d{y}[i, y, x, k]·{at}",
                             f"db{l}[i] = Σ_y,x,k d{y}[i, y, x, k]",
                             f"d{at} += Σ_i W{l}[i, c, p, q]·d{y}[i, y, x, k]"],
                "cache": f"{x} (read by dW{l})"}


class _Pool2d(Layer):
    settings = ("C", "H_in", "W_in", "kh", "kw", "s_h", "s_w", "H_out", "W_out")

    def __init__(self, size=2, stride=None) -> None:
        self.size = pair(size, "size", 1)
        self.stride = pair(stride, "stride", 1) if stride is not None else self.size

    def _build(self, in_shape):
        self._need(in_shape, 3, "an image (C, H, W)")
        C, H, W = in_shape
        kh, kw = self.size
        if kh > H or kw > W:
            raise ValueError(f"{self!r}: the window ({kh}×{kw}) is larger than the input "
                             f"{in_shape}")
        self.H_out = (H - kh) // self.stride[0] + 1
        self.W_out = (W - kw) // self.stride[1] + 1
        return (C, self.H_out, self.W_out)

    def ints(self):
        C, H, W = self.in_shape
        return [C, H, W, *self.size, *self.stride, self.H_out, self.W_out]

    def config(self):
        return {"size": list(self.size), "stride": list(self.stride)}


class MaxPool2d(_Pool2d):
    """Max pooling; caches which input won each window (the first maximum in row-major window
    order) and routes the gradient there; overlapping windows add."""

    kernels = ("pool._maxpool2d_forward", "pool._maxpool2d_backward")

    def formulas(self, x, y, l):
        kh, kw = self.size
        return {"forward": f"{y}[c, y, x, k] = max of {x}[c, …, k] over a {kh}×{kw} window",
                "backward": [f"d{x}[winner] += d{y}[c, y, x, k]"],
                "cache": "the winner of each window (an integer)"}

    def _build(self, in_shape):
        out = super()._build(in_shape)
        self.icache_size = int(np.prod(out))  # the winners
        return out


class AvgPool2d(_Pool2d):
    """Average pooling: each window's mean; its gradient is shared equally."""

    kernels = ("pool._avgpool2d_forward", "pool._avgpool2d_backward")

    def formulas(self, x, y, l):
        kh, kw = self.size
        return {"forward": f"{y}[c, y, x, k] = mean of {x}[c, …, k] over a {kh}×{kw} window",
                "backward": [f"d{x}[c, …, k] += d{y}[c, y, x, k] / {kh * kw} in every window"],
                "cache": ""}
