"""Knowing when Numba compiles loopprop's kernels, and saying so.

A first run compiles for seconds to minutes (a cold cache, a new dtype, a new set of layer
kinds); later runs load the machine code from Numba's cache in milliseconds. A timer cannot
tell the two apart, so loopprop listens to Numba's own event: ``numba:compile`` fires when a
function is really compiled (a cache hit fires nothing). :data:`WATCH` counts the seconds spent
compiling loopprop's functions in this process, and a :func:`notices` block says, once, that
compiling has started and, at its end, how long it took::

    with notices():                      # the command line wraps every command in one
        net.fit(...)                     # "loopprop: compiling kernels (…)", then the time

A compile of a function that calls others compiles them inside it: only the outermost compile
of loopprop code starts and ends a "compiling" period.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Iterator

from numba.core import event as ev

#: what a notice says when compiling starts
STARTED = ("loopprop: compiling kernels (first use of these layers and dtype; Numba caches the "
           "machine code, so later runs start at once) ...")


def _ours(event: ev.Event) -> bool:
    data = event.data or {}
    dispatcher = data.get("dispatcher")
    fn = getattr(dispatcher, "py_func", None)
    return getattr(fn, "__module__", "").startswith("loopprop")


class CompileWatch(ev.Listener):
    """Counts the seconds of the outermost compiles of loopprop functions and tells every
    subscriber when one starts and ends."""

    def __init__(self) -> None:
        self.depth = 0
        self.started = 0.0
        self.seconds = 0.0  # total, this process
        self.count = 0  # outermost compiles, this process
        self.subscribers: list[Callable[[str, float], None]] = []

    def compiling(self) -> bool:
        return self.depth > 0

    def on_start(self, event: ev.Event) -> None:
        if _ours(event):
            self.enter()

    def on_end(self, event: ev.Event) -> None:
        if _ours(event):
            self.leave()

    def enter(self) -> None:
        self.depth += 1
        if self.depth == 1:
            self.started = time.perf_counter()
            for callback in list(self.subscribers):
                callback("start", 0.0)

    def leave(self) -> None:
        if self.depth == 0:
            return
        self.depth -= 1
        if self.depth == 0:
            took = time.perf_counter() - self.started
            self.seconds += took
            self.count += 1
            for callback in list(self.subscribers):
                callback("end", took)


WATCH = CompileWatch()
ev.register("numba:compile", WATCH)


def seconds() -> float:
    """Seconds spent compiling loopprop's functions in this process so far (the one in
    progress included)."""
    extra = time.perf_counter() - WATCH.started if WATCH.depth else 0.0
    return WATCH.seconds + extra


@contextlib.contextmanager
def elsewhere() -> Iterator[None]:
    """Count the block as compiling: this process waits for another that compiles for it
    (loopprop/_helper.py)."""
    WATCH.enter()
    try:
        yield
    finally:
        WATCH.leave()


@contextlib.contextmanager
def subscribed(callback: Callable[[str, float], None]) -> Iterator[None]:
    """``callback("start", 0)`` and ``callback("end", seconds)`` around each outermost compile
    inside the block."""
    WATCH.subscribers.append(callback)
    try:
        yield
    finally:
        WATCH.subscribers.remove(callback)


@contextlib.contextmanager
def notices(write: Callable[[str], None] | None = None, tick: float = 15.0) -> Iterator[None]:
    """Say on stderr (or through ``write``) when compiling first starts inside the block, every
    ``tick`` seconds while it lasts (unless a progress bar inside the block shows its own
    clock), and, at the end of the block, how long compiling took in all."""
    write = write or (lambda text: print(text, file=sys.stderr, flush=True))
    state = {"said": False}
    stop = threading.Event()
    first = seconds()

    def ticker(started: float) -> None:
        while not stop.wait(tick):
            if not WATCH.compiling():
                return
            if len(WATCH.subscribers) == 1:  # no bar inside the block keeps a clock
                write(f"loopprop: still compiling ({time.perf_counter() - started:.0f} s)")

    def on(what: str, took: float) -> None:
        if what == "start":
            if not state["said"]:
                write(STARTED)
                state["said"] = True
            stop.clear()
            threading.Thread(target=ticker, args=(time.perf_counter(),), daemon=True).start()
        else:
            stop.set()

    with subscribed(on):
        try:
            yield
        finally:
            stop.set()
            if state["said"] and WATCH.compiling():
                write(f"loopprop: stopped while compiling ({seconds() - first:.1f} s)")
            elif state["said"]:
                write(f"loopprop: compiled in {seconds() - first:.1f} s (cached for later runs)")
