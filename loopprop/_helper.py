"""The first epoch compiled in a second process while this one compiles the rows.

A first ``fit`` compiles two things that do not depend on each other: the rows of the network's
layer kinds (:mod:`loopprop.dispatch`) and the epoch, which calls the rows only through a
table of addresses (:mod:`loopprop.train`). Numba compiles on one thread, so on a machine with
two cores or more :func:`start` hands the epoch to a second Python process -- it compiles the
epoch for the exact argument types of this call and saves it in Numba's cache -- while this
process compiles the rows; :meth:`Helper.join` waits for it, and the epoch then loads from the
cache. Nothing else changes: a helper that fails or cannot start leaves the epoch to be
compiled here, as it would have been.

Two processes may compile and save one function at once (a small helper both need): loopprop's
cache files are safe for that (:class:`loopprop._cache.SharedIndexDataCacheFile`).

``LOOPPROP_COMPILE_HELPER=0`` turns the second process off.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from typing import Sequence

import numba

from . import _compiling

#: set in the helper's environment (no helper of its own) and by users to turn it off
ENV = "LOOPPROP_COMPILE_HELPER"


def _argtypes(args: Sequence) -> tuple:
    return tuple(numba.typeof(a) for a in args)


def compiled_or_cached(disp, argtypes: tuple) -> bool:
    """Whether ``disp`` for ``argtypes`` is compiled in this process or in Numba's cache
    (then loading it is cheaper than a second process)."""
    if argtypes in disp.overloads:
        return True
    cache = getattr(disp, "_cache", None)
    if cache is None or not hasattr(cache, "_cache_file"):
        return True  # no cache: a second process could not hand its work over
    key = cache._index_key(argtypes, disp.targetctx.codegen())
    return key in cache._cache_file._load_index()


class Helper:
    """A second process compiling one dispatcher for one signature (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen, path: str) -> None:
        self.proc = proc
        self.path = path

    def join(self) -> bool:
        """Wait for the helper (the time counts as compiling); whether it succeeded."""
        try:
            with _compiling.elsewhere():
                return self.proc.wait() == 0
        except BaseException:
            self.proc.kill()
            raise
        finally:
            if self.path:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass


def start(disp, args: Sequence) -> Helper | None:
    """Start compiling ``disp`` for the types of ``args`` in a second process, unless it is
    compiled or cached already, the JIT is off, the machine has one core, or ``ENV`` is 0."""
    if (numba.config.DISABLE_JIT or os.environ.get(ENV, "1") == "0"
            or (os.cpu_count() or 1) < 2):
        return None
    argtypes = _argtypes(args)
    if compiled_or_cached(disp, argtypes):
        return None
    py = disp.py_func
    try:
        fd, path = tempfile.mkstemp(prefix="loopprop-helper-", suffix=".pickle")
        with os.fdopen(fd, "wb") as fh:
            pickle.dump((py.__module__, py.__name__, argtypes), fh)
        proc = subprocess.Popen([sys.executable, "-m", "loopprop._helper", path],
                                env=dict(os.environ, **{ENV: "0"}),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except (OSError, pickle.PicklingError):
        return None  # compiled here instead
    return Helper(proc, path)


def start_epochs(dtype: str, text: bool = False) -> Helper | None:
    """Start compiling the training epoch and evaluation for ``dtype`` (with ``text``, the
    language model's) in a second process, for ``loopprop compile``, which compiles the rows
    meanwhile: the helper trains a network whose rows compile in no time (a ``Flatten``; an
    ``Embedding`` for text) -- the epoch's types do not depend on the layers. ``None`` where
    :func:`start` would not start one."""
    if (numba.config.DISABLE_JIT or os.environ.get(ENV, "1") == "0"
            or (os.cpu_count() or 1) < 2):
        return None
    try:
        proc = subprocess.Popen([sys.executable, "-m", "loopprop._helper", "--epochs", dtype,
                                 "text" if text else "examples"],
                                env=dict(os.environ, **{ENV: "0"}),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None
    return Helper(proc, "")


def _epochs(dtype: str, kind: str) -> None:
    """Train (and evaluate) a network of cheap rows once: the epoch of ``kind`` compiles."""
    import numpy as np

    from .layers import Embedding, Flatten, Softmax
    from .network import Network

    rng = np.random.default_rng(0)
    if kind == "text":
        net = Network([Embedding(5, 5), Softmax()], loss="cross_entropy", dtype=dtype)
        ids = rng.integers(0, 5, 64)
        net.fit_text(ids, epochs=1, steps_per_epoch=1, batch_size=2, progress=False,
                     validation=ids[:16])
        return
    net = Network([Flatten()], input_shape=(3,), loss="mse", dtype=dtype)
    X, Y = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    net.fit(X, Y, epochs=1, batch_size=4, progress=False)
    net.evaluate(X, Y)


def _main(argv: list[str]) -> int:
    """The helper: ``PATH`` (a pickled dispatcher name and signature: compile it) or
    ``--epochs DTYPE text|examples``; what it compiles goes to Numba's cache."""
    import importlib

    if argv[0] == "--epochs":
        _epochs(argv[1], argv[2])
        return 0
    with open(argv[0], "rb") as fh:
        module, name, argtypes = pickle.load(fh)
    disp = getattr(importlib.import_module(module), name)
    disp.compile(argtypes)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
