"""Compiling on two cores: a second process takes a share of a first run's compiling.

Numba compiles on one thread. A first ``fit`` (or ``loopprop compile``) compiles pieces that
do not depend on each other: the training epoch, which calls the rows only through a table of
addresses (:mod:`loopprop.train`), and each layer kind's row functions
(:mod:`loopprop.dispatch`). On a machine with two cores or more, :func:`start` writes the list
of pieces -- the rows, then the epoch -- and starts a second Python process on it. This process
walks the list from the start, the second from the end (the epoch first); each compiles a piece
only after *claiming* it (a file created exclusively in a shared folder), so no piece is
compiled twice, and saves what it compiled in Numba's cache.
:meth:`Helper.join` waits for the second process (the wait counts as compiling); everything
then loads from the cache. A helper that fails, or cannot start, leaves its pieces to be
compiled here, as they would have been.

Two processes may compile and save one function at once (a kernel two pieces call): loopprop's
cache files are safe for that (:class:`loopprop._cache.SharedIndexDataCacheFile`).

``LOOPPROP_COMPILE_HELPER=0`` turns the second process off.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from typing import Callable, Sequence

import numba

from . import _compiling
from .bundles import type_key

#: set in the helper's environment (no helper of its own) and by users to turn it off
ENV = "LOOPPROP_COMPILE_HELPER"


#: the machine's cores (``os.cpu_count`` takes 7 µs a call, and ``fit`` asks at every call)
_CORES = os.cpu_count() or 1


def enabled() -> bool:
    """Whether a second process may compile: the JIT on, two cores, ``ENV`` not 0."""
    return not numba.config.DISABLE_JIT and os.environ.get(ENV, "1") != "0" and _CORES >= 2


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


#: (dispatcher, argument type keys) found compiled or cached: typing the arguments again costs
#: 60 µs, a twentieth of a small epoch (bundles.type_key tells the same in a few)
_READY: set = set()


def epoch_job(disp, args: Sequence) -> tuple | None:
    """The piece "compile ``disp`` (an epoch) for the types of ``args``", or ``None`` when it is
    compiled or cached already."""
    key = (disp, tuple(type_key(a) for a in args))
    if key in _READY:
        return None
    argtypes = tuple(numba.typeof(a) for a in args)
    if compiled_or_cached(disp, argtypes):
        if None not in key[1]:
            _READY.add(key)
        return None
    return ("dispatcher", disp.py_func.__module__, disp.py_func.__name__, argtypes)


def epochs_job(dtype: str, text: bool) -> tuple:
    """The piece "compile the training epoch and evaluation of ``dtype``": a call of
    :func:`loopprop.ahead.compile_epochs`, which trains a network whose rows cost nothing to
    compile (the epoch's types do not depend on the layers)."""
    kind = "text" if text else "examples"
    return ("call", "loopprop.ahead", "compile_epochs", (str(dtype), kind))


def row_job(fn: Callable, dtype: str, decode: bool = False) -> tuple:
    """The piece "compile the row function ``fn`` for ``dtype``"."""
    return ("row", fn.__module__, fn.__name__, str(dtype), bool(decode))


class Helper:
    """The second process and the folder of claims the two share."""

    def __init__(self, proc: subprocess.Popen | None, folder: str) -> None:
        self.proc = proc
        self.folder = folder

    def claim(self, job: tuple) -> bool:
        """Whether this process takes ``job`` (the first to claim it does)."""
        return _claim(self.folder, job)

    def join(self) -> bool:
        """Wait for the second process (the time counts as compiling); whether it succeeded."""
        try:
            if self.proc is None:
                return False
            with _compiling.elsewhere():
                return self.proc.wait() == 0
        except BaseException:
            if self.proc is not None:
                self.proc.kill()
            raise
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _claim(folder: str, job: tuple) -> bool:
    name = "claim-" + hashlib.sha256(repr(job).encode()).hexdigest()[:24]
    try:
        os.close(os.open(os.path.join(folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def start(jobs: Sequence[tuple]) -> Helper | None:
    """Start a second process on ``jobs`` (it takes them from the end; this process takes them
    from the start, claiming each through :meth:`Helper.claim`: put the epoch last). ``None``
    when fewer than two jobs need doing or a second process may not run (:func:`enabled`)."""
    jobs = [j for j in jobs if j is not None]
    if len(jobs) < 2 or not enabled():
        return None
    try:
        folder = tempfile.mkdtemp(prefix="loopprop-helper-")
        with open(os.path.join(folder, "jobs.pickle"), "wb") as fh:
            pickle.dump(jobs, fh)
        # the same loopprop as this process (its cache entries are the ones wanted here)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        proc = subprocess.Popen([sys.executable, "-m", "loopprop._helper", folder],
                                env=dict(os.environ, **{ENV: "0", "PYTHONPATH": path}),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except (OSError, pickle.PicklingError):
        return None  # compiled here instead
    return Helper(proc, folder)


def run(job: tuple) -> None:
    """Compile one piece (in whichever process claimed it)."""
    import importlib

    what = job[0]
    if what == "dispatcher":
        _, module, name, argtypes = job
        getattr(importlib.import_module(module), name).compile(argtypes)
    elif what == "row":
        from . import dispatch

        _, module, name, dtype, decode = job
        dispatch.compiled_row(getattr(importlib.import_module(module), name), dtype, decode)
    elif what == "call":  # by name: this module imports nothing that imports it
        _, module, name, args = job
        getattr(importlib.import_module(module), name)(*args)
    else:
        raise ValueError(f"unknown job {job!r}")


def _main(folder: str) -> int:
    """The second process: take the jobs in ``folder`` from the end, claiming each."""
    with open(os.path.join(folder, "jobs.pickle"), "rb") as fh:
        jobs = pickle.load(fh)
    failed = 0
    for job in reversed(jobs):
        if _claim(folder, job):
            try:
                run(job)
            except Exception:  # e.g. a row function in a module this process cannot import
                failed += 1  # the first process compiles it when it builds its table
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
