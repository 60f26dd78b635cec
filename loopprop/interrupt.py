"""Ctrl-C within a step, not at the end of an epoch.

A compiled epoch runs for as long as it runs: Python raises ``KeyboardInterrupt`` only when
control comes back to it, after minutes for a GPT epoch. :func:`run` therefore calls the epoch
in the main thread with a SIGINT handler that only notes the key, while a watcher thread,
woken by the signal's wakeup descriptor, sets the epoch's ``stop`` flag at once; the compiled
loop reads it before each step. When the epoch returns, :class:`Interrupted` is raised with
what it returned: the parameters and the optimizer's state are those after the last complete
step. (Ctrl-C while the epoch's kernels compile raises at once: no step has been taken.)
"""

from __future__ import annotations

import signal
import socket
import threading
from typing import Any, Callable

import numpy as np

from . import _compiling


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped a compiled epoch between two steps; ``result`` is what it returned."""

    def __init__(self, result: Any) -> None:
        super().__init__("interrupted")
        self.result = result


class _Watcher:
    """A daemon thread that sets the running epoch's ``stop`` flag when SIGINT arrives.

    Python's own C-level signal handler writes the signal's number to the wakeup file
    descriptor (:func:`signal.set_wakeup_fd`) the moment the signal arrives, even while the
    main thread is inside compiled code; the Python-level handler runs only when the epoch
    returns. This thread waits on the other end of that descriptor and, while an epoch is
    armed, sets its ``stop[0]`` (the compiled loop reads it before each step). The kernels
    release the GIL, so the flag is set within a step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop: np.ndarray | None = None
        self._read: socket.socket | None = None
        self._write: socket.socket | None = None

    def write_end(self) -> int:
        """The descriptor to hand :func:`signal.set_wakeup_fd` (the thread starts with it)."""
        if self._write is None:
            self._read, self._write = socket.socketpair()
            self._write.setblocking(False)
            threading.Thread(target=self._loop, name="loopprop-ctrl-c", daemon=True).start()
        return self._write.fileno()

    def arm(self, stop: np.ndarray | None) -> None:
        with self._lock:
            self._stop = stop

    def _loop(self) -> None:
        while True:
            data = self._read.recv(64)
            if not data:
                return
            with self._lock:
                if self._stop is not None and signal.SIGINT in data:
                    self._stop[0] = 1


_WATCHER = _Watcher()


def run(call: Callable[[], Any], stop: np.ndarray) -> Any:
    """``call()`` (a compiled epoch reading ``stop[0]`` before each step) in this thread; Ctrl-C
    meanwhile sets ``stop[0]`` at once and raises :class:`Interrupted` with what the epoch
    returned, once the step in progress has ended.

    The epoch runs in the caller's thread, not a worker's: GNU OpenMP keeps a team of pool
    threads per thread that opens parallel regions, and a second team beside the main
    thread's (a worker's) made libgomp count more threads than cores and stop spinning at its
    barriers: loopprop's MNIST-sized epoch ran 35–37 ms in a worker after PyTorch had used the
    main thread, 27 ms in the main thread; with a worker kept alive between fits, PyTorch's
    epoch ran 2× slower after one ``fit``. Starting a thread per ``fit`` was also part of the
    ~0.6 ms fixed cost of a 1.7 ms 64-32-10 epoch (docs/performance.md, "Two OpenMP teams"
    and "The small MLP epoch").

    Ctrl-C while the kernels compile raises :class:`Interrupted` with no result at once.
    Called from any thread but the main one (which no Ctrl-C reaches), ``call()`` just runs."""
    if threading.current_thread() is not threading.main_thread():
        return call()
    pressed: list[int] = []

    def note(signum, frame):
        if _compiling.WATCH.compiling():  # no step taken yet; stop compiling
            raise Interrupted(None)
        pressed.append(signum)

    try:
        previous_fd = signal.set_wakeup_fd(_WATCHER.write_end(), warn_on_full_buffer=False)
    except ValueError:  # not the main interpreter: Ctrl-C is noted, and raised after the epoch
        previous_fd = None
    previous = signal.signal(signal.SIGINT, note)
    _WATCHER.arm(stop)
    try:
        value = call()
    finally:
        _WATCHER.arm(None)
        signal.signal(signal.SIGINT, previous)
        if previous_fd is not None:
            signal.set_wakeup_fd(previous_fd, warn_on_full_buffer=False)
    if pressed:
        raise Interrupted(value)
    return value
