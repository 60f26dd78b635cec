"""Ctrl-C within a step, not at the end of an epoch.

A compiled epoch runs for as long as it runs: Python raises ``KeyboardInterrupt`` only when
control comes back to it, after minutes for a GPT epoch. :func:`run` therefore calls a long
epoch in a worker thread (loopprop's kernels release the GIL) while the main thread waits for it in
short slices, so that Ctrl-C reaches the main thread at once. It then sets the epoch's ``stop``
flag, which the compiled loop reads before each step, waits for the step in progress to end,
and raises :class:`Interrupted` with what the epoch returned: the parameters and the
optimizer's state are those after the last complete step. (Ctrl-C while the epoch's kernels
compile returns at once: no step has been taken, and the worker stops before its first.)
"""

from __future__ import annotations

import queue
import signal
import threading
from typing import Any, Callable

import numba
import numpy as np

from . import _compiling


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a compiled epoch between two steps; ``result`` is what it returned."""

    def __init__(self, result: Any) -> None:
        super().__init__("interrupted")
        self.result = result


class _Worker:
    """One long-lived daemon thread that runs the epochs the main thread hands it, in turn.

    Not a new thread per epoch: GNU OpenMP keeps a team of pool threads per thread that opens
    a parallel region and drops it when that thread ends, so a fresh worker per ``fit`` paid
    for a thread start and a new OpenMP team (and their cold caches) on every call — 0.5 ms,
    a third of a 64-32-10 digits epoch (docs/performance.md, "The small MLP epoch")."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, work: Callable[[], None]) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="loopprop-epoch",
                                            daemon=True)
            self._thread.start()
        self._jobs.put(work)

    def _loop(self) -> None:
        while True:
            self._jobs.get()()


_WORKER = _Worker()

#: an epoch expected to end within this many seconds runs in the caller's thread (:func:`run`)
SHORT = 0.05


def _run_here(call: Callable[[], Any]) -> Any:
    """``call()`` in this thread; a Ctrl-C meanwhile raises :class:`Interrupted` after it."""
    if threading.current_thread() is not threading.main_thread():
        return call()
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        value = call()
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise Interrupted(value)
    return value


def run(call: Callable[[], Any], stop: np.ndarray, poll: float = 0.1,
        short: bool = False) -> Any:
    """``call()`` (a compiled epoch reading ``stop[0]`` before each step) in the worker thread;
    Ctrl-C sets ``stop[0]`` and raises :class:`Interrupted` once the step in progress ends.

    ``short`` (the caller expects the epoch to take less than :data:`SHORT` seconds): ``call()``
    runs in this thread, with a SIGINT handler that only notes the Ctrl-C, raised as
    :class:`Interrupted` when the epoch has ended. Handing work to another thread and back
    costs 0.1–0.3 ms, a tenth of a small epoch; a Ctrl-C waits at most the epoch.
    Called from any thread but the main one (no Ctrl-C reaches it), ``call()`` runs in place."""
    if short or threading.current_thread() is not threading.main_thread():
        return _run_here(call)
    threads = numba.get_num_threads()  # thread-local in Numba: the worker takes the caller's
    out: dict[str, Any] = {}
    done = threading.Event()  # not Thread.join: a join cut short by Ctrl-C can return early

    def work() -> None:
        try:
            if not numba.config.DISABLE_JIT:
                numba.set_num_threads(threads)
            out["value"] = call()
        except BaseException as exc:  # handed to the caller's thread
            out["error"] = exc
        finally:
            done.set()

    _WORKER.submit(work)
    try:
        while not done.wait(poll):
            pass
    except KeyboardInterrupt:
        stop[0] = 1
        if _compiling.WATCH.compiling():  # no step taken yet; the compile cannot be cut short:
            raise Interrupted(None) from None  # the worker stops before its first step
        done.wait()
        if "error" in out:
            raise out["error"] from None
        raise Interrupted(out.get("value")) from None
    if "error" in out:
        raise out["error"]
    return out["value"]
