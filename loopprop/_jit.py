"""The one place where loopprop's Numba flags live.

Every compiled kernel takes its decorator from here, so caching, the fastmath subset and the
parallel switch are decided once:

* ``cache=True`` -- compiled machine code is written next to the package (``__pycache__``) so the
  second run of a program starts without compiling.
* ``FASTMATH`` -- a *named subset* of LLVM's fast-math flags. ``reassoc`` lets LLVM vectorize sum
  reductions (the ``Σ_k`` of every gradient), ``contract`` allows fused multiply-add, ``nsz``
  ignores the sign of zero. ``nnan`` and ``ninf`` are deliberately absent: with them LLVM may
  delete ``x != x`` tests and the NaN checks of users and tests would silently stop working.
* ``parallel`` -- only for kernels whose benchmark shows that two threads pay. Inside those,
  ``prange`` runs over the index that owns the writes. Thread count follows
  ``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import numba

F = TypeVar("F", bound=Callable)

#: LLVM fast-math flags used by tuned kernels. No ``nnan``/``ninf``: NaN checks must keep working.
FASTMATH: frozenset[str] = frozenset({"reassoc", "contract", "nsz"})

prange = numba.prange

# Start Numba's thread pool now. Compiled code that calls a parallel kernel links against the
# pool's symbols; if the pool has never been started in this process, linking a freshly compiled
# (or cache-loaded) caller aborts the interpreter with "LLVM ERROR: Symbol not found:
# allocate_sched". get_num_threads() launches it.
numba.get_num_threads()


def kernel(fn: F | None = None, *, fast: bool = False, parallel: bool = False,
           inline: bool = False):
    """Compile ``fn`` as a loopprop kernel (``nopython``, cached, GIL released).

    ``fast=True`` enables the :data:`FASTMATH` subset; ``parallel=True`` turns ``prange`` loops
    into threads. Naive reference kernels use neither: they are the formula, nothing more.

    ``inline=True`` inlines a small scalar helper into its callers at Numba-IR level, so that
    the loop calling it can be vectorized (LLVM does not inline large helpers on its own, and a
    call in a loop body stops vectorization).

    A parallel kernel must not call ``numba.get_num_threads()``: that call embeds a ctypes
    pointer and makes the kernel, and every compiled caller, uncacheable. The thread decision is
    made in Python (:func:`use_threads`) and passed in as a flag.
    """

    def wrap(f: F) -> F:
        return numba.njit(
            cache=True,
            nogil=True,
            fastmath=set(FASTMATH) if fast else False,
            parallel=parallel,
            error_model="numpy",
            inline="always" if inline else "never",
        )(f)

    return wrap(fn) if fn is not None else wrap


def use_threads(parallel: bool) -> bool:
    """True when a parallel kernel may start threads: asked for, and more than one available."""
    return bool(parallel) and numba.get_num_threads() > 1
