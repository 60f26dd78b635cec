"""Ctrl-C within a step, not at the end of an epoch.

A compiled epoch runs for as long as it runs: Python raises ``KeyboardInterrupt`` only when
control comes back to it, after minutes for a GPT epoch. :func:`run` therefore calls the epoch
in a worker thread (loopprop's kernels release the GIL) while the main thread waits for it in
short slices, so that Ctrl-C reaches the main thread at once. It then sets the epoch's ``stop``
flag, which the compiled loop reads before each step, waits for the step in progress to end,
and raises :class:`Interrupted` with what the epoch returned: the parameters and the
optimizer's state are those after the last complete step. (Ctrl-C while the epoch's kernels
compile returns at once: no step has been taken, and the worker stops before its first.)
"""

from __future__ import annotations

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


def run(call: Callable[[], Any], stop: np.ndarray, poll: float = 0.1) -> Any:
    """``call()`` (a compiled epoch reading ``stop[0]`` before each step) in a worker thread;
    Ctrl-C sets ``stop[0]`` and raises :class:`Interrupted` once the step in progress ends."""
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

    threading.Thread(target=work, name="loopprop-epoch", daemon=True).start()
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
