"""Shared setup for the loopprop benchmarks: data, thread pinning, warm-up.

Thread rows: ``threads = "1"`` pins both Numba and the BLAS under NumPy to one thread (the
fair single-core comparison); ``"all"`` gives both every core. On a 2-core machine an
oversubscribed BLAS is two orders of magnitude slower, so every row states its threads.
"""

import os

import numba
import numpy as np

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - the asv matrix installs it
    threadpool_limits = None

THREADS = ["1", "all"]
DTYPES = ["float32", "float64"]


class Pinned:
    """Context-free thread pinning for asv setup/teardown."""

    def __init__(self):
        self._limits = None
        self._numba = numba.get_num_threads()

    def pin(self, threads: str) -> None:
        n = 1 if threads == "1" else (os.cpu_count() or 1)
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        if threadpool_limits is not None:
            self._limits = threadpool_limits(limits=n, user_api="blas")

    def release(self) -> None:
        numba.set_num_threads(self._numba)
        if self._limits is not None:
            self._limits.restore_original_limits()
            self._limits = None


def rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch
