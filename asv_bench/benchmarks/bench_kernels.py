"""Every public kernel, naive loops vs tuned loops vs the vectorized NumPy twin.

Sizes are ``"n_out x n_in x m"`` from tiny to large. The naive dense kernels are skipped at the
largest size (seconds per call; they are the algorithmic reference, not a contender).
"""

import numba
import numpy as np

import loopprop as lp
from loopprop import vectorized as vec

from .common import DTYPES, THREADS, Pinned, rand

SIZES = ["8x8x1", "64x32x32", "784x128x64", "1024x1024x256"]


def _dims(size):
    return [int(v) for v in size.split("x")]


class Dense:
    params = (["naive", "tuned", "numpy"], DTYPES, SIZES, THREADS)
    param_names = ["impl", "dtype", "size", "threads"]
    timeout = 240

    def setup(self, impl, dtype, size, threads):
        self.pin = Pinned()
        n_out, n_in, m = _dims(size)
        if impl == "naive" and n_out * n_in * m > 10**7:
            raise NotImplementedError("naive loops at this size take seconds")
        if impl != "numpy" and threads != "1" and n_out * n_in * m < 10**6:
            raise NotImplementedError("below the parallel threshold both rows are serial")
        self.pin.pin(threads)
        self.W, self.b = rand((n_out, n_in), dtype), rand(n_out, dtype, 1)
        self.A, self.dZ = rand((n_in, m), dtype, 2), rand((n_out, m), dtype, 3)
        if impl == "numpy":
            self.fwd = lambda: vec.dense_forward(self.W, self.b, self.A)
            self.bwd = lambda: vec.dense_backward(self.dZ, self.W, self.A)
        else:
            self.fwd = lambda: lp.dense_forward(self.W, self.b, self.A, impl=impl,
                                                check_finite=False)
            self.bwd = lambda: lp.dense_backward(self.dZ, self.W, self.A, impl=impl,
                                                 check_finite=False)
        self.fwd()  # compile outside the timing
        self.bwd()

    def teardown(self, *args):
        self.pin.release()

    def time_forward(self, *args):
        self.fwd()

    def time_backward(self, *args):
        self.bwd()


class Products:
    """The three products of a layer, one at a time: the packed SIMD loop nest of large layers
    (``kernels/gemm.py``, reading the transposed operand in place) against NumPy's ``@``.
    Skipped on commits that predate the packed kernel."""

    params = (["packed", "numpy"], DTYPES, ["forward", "dW", "dA_prev"],
              ["128x784x64", "1024x1024x256"], THREADS)
    param_names = ["impl", "dtype", "product", "size", "threads"]
    timeout = 240

    def setup(self, impl, dtype, product, size, threads):
        self.pin = Pinned()
        n_out, n_in, m = _dims(size)
        W, A, dZ = rand((n_out, n_in), dtype), rand((n_in, m), dtype, 2), rand((n_out, m), dtype, 3)
        # C += op(X)·op(Y): forward Z = W·A, dW = dZ·Aᵀ, dA_prev = Wᵀ·dZ
        C, X, Y, xt, yt = {"forward": (np.zeros((n_out, m), dtype), W, A, False, False),
                           "dW": (np.zeros((n_out, n_in), dtype), dZ, A, False, True),
                           "dA_prev": (np.zeros((n_in, m), dtype), W, dZ, True, False)}[product]
        if impl == "numpy":
            Xo, Yo = (X.T if xt else X), (Y.T if yt else Y)
            self.call = lambda: Xo @ Yo
        else:
            try:
                from loopprop.kernels.gemm import _gemm
            except ImportError:
                raise NotImplementedError("no packed kernel in this commit") from None
            self.call = lambda: _gemm(C, X, Y, xt, yt, numba.get_num_threads())
        self.pin.pin(threads)
        self.call()

    def teardown(self, *args):
        self.pin.release()

    def time_product(self, *args):
        self.call()


class Activations:
    params = (["loops", "numpy"], DTYPES, ["identity", "sigmoid", "tanh", "relu", "leaky_relu",
                                           "softmax"], ["10x1", "100x100", "1000x1000"])
    param_names = ["impl", "dtype", "activation", "size"]

    def setup(self, impl, dtype, activation, size):
        n, m = _dims(size)
        self.Z, self.dA = rand((n, m), dtype), rand((n, m), dtype, 1)
        mod = vec if impl == "numpy" else lp
        kw = {} if impl == "numpy" else {"check_finite": False}
        self.fwd = lambda: mod.activation_forward(activation, self.Z, **kw)
        self.bwd = lambda: mod.activation_backward(activation, self.dA, self.Z, **kw)
        self.fwd()
        self.bwd()

    def time_forward(self, *args):
        self.fwd()

    def time_backward(self, *args):
        self.bwd()


class Losses:
    params = (["loops", "numpy"], DTYPES, ["mse_loss", "softmax_cross_entropy",
                                           "sigmoid_binary_cross_entropy"], ["10x32", "10x1024"])
    param_names = ["impl", "dtype", "loss", "size"]

    def setup(self, impl, dtype, loss, size):
        n, m = _dims(size)
        rng = np.random.default_rng(0)
        Z = rand((n, m), dtype)
        if loss == "softmax_cross_entropy":
            Y = rng.integers(0, n, m)
        else:
            Y = rng.integers(0, 2, (n, m)).astype(dtype)
        mod = vec if impl == "numpy" else lp
        fn = getattr(mod, loss)
        kw = {} if impl == "numpy" else {"check_finite": False}
        self.call = lambda: fn(Z, Y, **kw)
        self.call()

    def time_loss(self, *args):
        self.call()


class Update:
    params = (["loops", "numpy"], DTYPES, ["1000", "1000000"])
    param_names = ["impl", "dtype", "size"]

    def setup(self, impl, dtype, size):
        self.p, self.g = rand(int(size), dtype), rand(int(size), dtype, 1)
        self.call = ((lambda: vec.sgd_update(self.p, self.g, 1e-6)) if impl == "numpy" else
                     (lambda: lp.sgd_update(self.p, self.g, 1e-6, check_finite=False)))
        self.call()

    def time_sgd(self, *args):
        self.call()
