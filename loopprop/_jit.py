"""The one place where loopprop's Numba flags live.

Every compiled kernel takes its decorator from here, so caching, the fastmath subset and the
parallel switch are decided once:

* ``cache=True`` -- compiled machine code is written next to the package (``__pycache__``) so the
  second run of a program starts without compiling.
* ``FASTMATH`` -- a *named subset* of LLVM's fast-math flags. ``reassoc`` lets LLVM vectorize sum
  reductions (the ``Σ_k`` of every gradient), ``contract`` allows fused multiply-add, ``nsz``
  ignores the sign of zero. ``nnan`` and ``ninf`` are deliberately absent: with them LLVM may
  delete ``x != x`` tests and the NaN checks of users and tests would silently stop working.
* 512-bit vectors -- on CPUs with AVX-512, LLVM's default tuning still prefers 256-bit vectors
  ("prefer-256-bit"). For the register-blocked sums of :mod:`loopprop.kernels.dense` the
  512-bit registers measured up to 1.5× faster (see the README). :func:`_prefer_wide_vectors`
  therefore asks Numba to compile for the host CPU *without* that tuning flag -- but only if
  nothing in the process has compiled with Numba yet and the user set neither
  ``NUMBA_CPU_NAME`` nor ``NUMBA_CPU_FEATURES``. The setting is Numba's, so it applies to every
  Numba function compiled later in the process; ``LOOPPROP_WIDE_VECTORS=0`` turns it off.
* ``parallel`` -- only for kernels whose benchmark shows that two threads pay. Inside those,
  ``prange`` runs over the index that owns the writes. Thread count follows
  ``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``.
"""

from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

import numba

from . import _cache, _separate

F = TypeVar("F", bound=Callable)

#: below this many values an elementwise or normalization kernel runs on one thread: the thread
#: launch would cost more than it saves
PARALLEL_MIN_WORK = 1 << 20
#: below this many multiply-adds a product runs on one thread (the loop nests of
#: kernels/dense.py and the packed kernels/gemm.py). A product of 2²⁰ (a 64-512 layer on a batch
#: of 32) takes ~20 µs: two threads saved little of it when their wake-up was free, and cost a
#: wake-up (or a spinning thread) per product otherwise; the 64-512-10 epoch measured as fast
#: on one thread as on two (docs/performance.md, "Threads that wait").
PRODUCT_MIN_WORK = 1 << 21

#: how long a waiting OpenMP thread spins before it sleeps (GNU OpenMP, the threading layer
#: Numba uses on Linux): iterations of a pause loop, ~60 µs here. libgomp's default (300 000,
#: milliseconds) left a thread spinning at every barrier while its partner waited for a core:
#: with two busy processes beside it, an epoch ran 5-15× slower; passive waiting (0) cost quiet
#: epochs ~30 %. Set only when the user chose neither ``OMP_WAIT_POLICY`` nor ``GOMP_SPINCOUNT``,
#: and before the pool starts (libgomp reads it once, when it is loaded).
GOMP_SPINCOUNT = "3000"
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT

#: LLVM fast-math flags used by tuned kernels. No ``nnan``/``ninf``: NaN checks must keep working.
FASTMATH: frozenset[str] = frozenset({"reassoc", "contract", "nsz"})
#: the subset without ``reassoc``, for kernels whose arithmetic must keep its written order (an
#: exp's Cody-Waite reduction ``(x − n·ln2_hi) − n·ln2_lo`` regrouped loses up to 4 ulp) but may
#: still fuse multiply-adds: ``kernel(fast="contract")``
CONTRACT: frozenset[str] = frozenset({"contract", "nsz"})

prange = numba.prange


def _prefer_wide_vectors() -> bool:
    """Let LLVM use 512-bit vectors on AVX-512 hosts (see the module docstring)."""
    if os.environ.get("LOOPPROP_WIDE_VECTORS", "1") == "0":
        return False
    if numba.config.CPU_NAME is not None or numba.config.CPU_FEATURES is not None:
        return False  # the user chose the target
    from numba.core import registry

    if "_toplevel_target_context" in vars(registry.cpu_target):
        return False  # Numba's CPU target is built already: too late to change it
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        return False
    numba.config.CPU_NAME = llvm.get_host_cpu_name()
    numba.config.CPU_FEATURES = features + ",-prefer-256-bit"
    return True


# cached machine code is stamped with a hash of the whole package (see loopprop/_cache.py)
_cache.install()

#: whether kernels were compiled with 512-bit vectors preferred (reported by ``loopprop bench``)
WIDE_VECTORS: bool = _prefer_wide_vectors()

# Start Numba's thread pool now. Compiled code that calls a parallel kernel links against the
# pool's symbols; if the pool has never been started in this process, linking a freshly compiled
# (or cache-loaded) caller aborts the interpreter with "LLVM ERROR: Symbol not found:
# allocate_sched". get_num_threads() launches it.
numba.get_num_threads()


def kernel(fn: F | None = None, *, fast: bool | str = False, parallel: bool = False,
           inline: bool = False, signature=None, separate: bool = False):
    """Compile ``fn`` as a loopprop kernel (``nopython``, cached, GIL released).

    ``fast=True`` enables the :data:`FASTMATH` subset (``fast="contract"``: :data:`CONTRACT`,
    no reassociation); ``parallel=True`` turns ``prange`` loops
    into threads. Naive reference kernels use neither: they are the formula, nothing more.

    ``inline=True`` inlines a small scalar helper into its callers at Numba-IR level, so that
    the loop calling it can be vectorized (LLVM does not inline large helpers on its own, and a
    call in a loop body stops vectorization).

    ``separate=True`` compiles ``fn`` on its own and lets compiled callers call it by name
    (:mod:`loopprop._separate`): its machine code is made once per signature instead of being
    linked and optimized again inside every caller. For large kernels called once per layer,
    chunk or batch; never for a helper called inside a loop (it cannot be inlined).

    ``signature`` compiles ``fn`` for that one signature at once (loaded from the cache when it
    is there): a row function, called through a table of compiled functions
    (:mod:`loopprop.dispatch`), must exist before its caller is compiled.

    A parallel kernel must not call ``numba.get_num_threads()``: that call embeds a ctypes
    pointer and makes the kernel, and every compiled caller, uncacheable. The thread decision is
    made in Python (:func:`use_threads`) and passed in as a flag.
    """

    def wrap(f: F) -> F:
        def compile_with(cache: bool):
            disp = numba.njit(
                cache=False,
                nogil=True,
                fastmath=(set(CONTRACT) if fast == "contract" else set(FASTMATH) if fast
                          else False),
                parallel=parallel,
                error_model="numpy",
                inline="always" if inline else "never",
            )(f)
            if numba.config.DISABLE_JIT:
                return disp  # the Python function
            if cache:  # Numba's enable_caching(), with the cache that first registers the
                # separate kernels a cached caller calls (raises when there is no locator)
                disp._cache = _separate.LinkedFunctionCache(disp.py_func)
            if signature is not None:
                disp.compile(signature)
                disp.disable_compile()
            return _separate.Separate(disp) if separate else disp

        if _CACHE["enabled"]:
            try:
                return compile_with(True)
            except RuntimeError as exc:
                if "no locator available" not in str(exc):
                    raise
                _cache_fallback(f.__name__)
            if _CACHE["enabled"]:
                return compile_with(True)
        return compile_with(False)

    return wrap(fn) if fn is not None else wrap


#: whether kernels are compiled with ``cache=True`` (see :func:`_cache_fallback`)
_CACHE = {"enabled": True, "dir": None}


def _cache_fallback(name: str) -> None:
    """Numba found no writable place for its cache: neither ``__pycache__`` beside the package
    (a system-wide install) nor the user's cache directory (a read-only home in a container).

    Fall back to a private directory under the system's temporary directory, unless the user
    chose ``NUMBA_CACHE_DIR`` themselves; if that is not writable either, compile without a
    cache (every process then compiles afresh) and say so once. Importing loopprop never fails
    over a cache.
    """
    import tempfile
    import warnings

    if not os.environ.get("NUMBA_CACHE_DIR"):
        path = os.path.join(tempfile.gettempdir(), f"loopprop-numba-cache-{os.getuid()}"
                            if hasattr(os, "getuid") else "loopprop-numba-cache")
        try:
            os.makedirs(path, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError:
            pass
        else:
            numba.config.CACHE_DIR = path
            _CACHE["dir"] = path
            try:  # does Numba accept it now?
                numba.njit(cache=True)(_probe)
                return
            except RuntimeError:
                numba.config.CACHE_DIR = ""
                _CACHE["dir"] = None
    _CACHE["enabled"] = False
    warnings.warn(
        f"loopprop: Numba has no writable cache directory for {name!r} (the package directory "
        "and the user cache are read-only); kernels are compiled without a cache, so every "
        "process compiles them again. Set NUMBA_CACHE_DIR to a writable directory to keep them.",
        RuntimeWarning, stacklevel=3,
    )


def _probe():  # a function for _cache_fallback to try the cache with
    return 0


def threads_for_load(threads: int) -> int:
    """``threads`` less the cores other processes keep busy right now, at least 1.

    Linux's ``/proc/loadavg`` counts the tasks runnable at this instant; less this process's own
    (the reader, and a pool thread still spinning after the last parallel region), they are
    the cores this process would have to share. Two threads per parallel region on
    cores that busy processes also want wait for each other at every barrier (the digits CNN
    ran 2.4–4.7× its quiet epoch with two busy processes beside it; on one thread 1.5–1.7×:
    docs/performance.md, "Threads that wait"). Elsewhere (no ``/proc``) ``threads`` as given.
    Asked once per epoch by ``fit``, read at most every :data:`LOAD_SECONDS` (a call that
    reads the files took 49 µs of a 1 ms epoch's ``fit``, and busy processes come and
    go over seconds); the results do not depend on the thread count."""
    if threads <= 1:
        return threads
    now = time.monotonic()
    last = _LOAD.get(threads)
    if last is not None and now - last[0] < LOAD_SECONDS:
        return last[1]
    result = _threads_for_load(threads)
    _LOAD[threads] = (now, result)
    return result


#: how long :func:`threads_for_load` keeps what it read, and what it read per thread count
LOAD_SECONDS = 1.0
_LOAD: dict[int, tuple[float, int]] = {}


def _threads_for_load(threads: int) -> int:
    """:func:`threads_for_load` read afresh."""
    try:
        with open("/proc/loadavg") as fh:
            running = int(fh.read().split()[3].split("/")[0])
        cores = os.cpu_count() or threads
        if running - 1 <= cores - threads:  # enough cores even if only the reader is ours:
            return threads  # the usual quiet case, without reading a file per thread (0.1 ms)
        ours = 0  # this process's runnable threads: the reader, a pool thread still spinning
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat") as fh:
                ours += fh.read().rsplit(")", 1)[1].split()[0] == "R"
    except (OSError, ValueError, IndexError):
        return threads
    others = max(0, running - max(ours, 1))
    return max(1, min(threads, cores - others))


def use_threads(parallel: bool) -> int:
    """How many threads a parallel kernel may use: Numba's current count
    (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``) when asked for, else 1."""
    return numba.get_num_threads() if parallel else 1


@kernel
def runtime_flag(value):
    """``value`` as a plain run-time ``bool`` instead of a constant.

    Numba types a constant argument of a call between compiled functions as a *literal*
    (``Literal[bool](True)``) and compiles the callee once per constant it is given (an identity
    function passes the literal through; ``bool()`` does not). Flags passed through this arrive
    as ``bool``: the callee is compiled once and branches at run time. Used where a large kernel
    is called with constant flags from several places (the packed product, the batch passes).
    Integers have the same trap: ``int(0)`` is a plain ``int64`` where ``0`` would be a literal.
    """
    return bool(value)
