"""The progress bar of ``fit`` and ``fit_text``: epochs, the running loss, and when the kernels
compile (tqdm when installed, else a plain line on stderr)."""

from __future__ import annotations

import sys
import time

from . import _compiling


class Progress:
    """A progress bar over epochs with the running loss: tqdm when installed, else a plain line.

    While loopprop's kernels compile (Numba's own event says when: a warm start from the cache
    says nothing) it writes a notice once, keeps the bar's clock running, and says how long
    compiling took (:mod:`loopprop._compiling`)."""

    NOTICE = ("compiling the kernels of these layers (once: Numba caches the machine code "
              "next to the package; one to a few minutes on a 2-core machine for a new set of "
              "layer kinds or dtype) ...")

    def __init__(self, total: int, enabled: bool) -> None:
        self.enabled = enabled
        self.total = total
        self.bar = None
        self.t0 = time.perf_counter()
        self._said = False
        self._stop = None
        self._compiled = 0.0  # seconds
        self._quiet = False
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, unit="epoch", dynamic_ncols=True)
            except ImportError:
                self.bar = None
            # inside the command line's notices (loopprop/_compiling.py) the bar only keeps its
            # clock running: the command says when it compiles and how long it took
            self._quiet = bool(_compiling.WATCH.subscribers)
            _compiling.WATCH.subscribers.append(self._on_compile)

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def _on_compile(self, what: str, took: float) -> None:
        """Say why an epoch takes long (once), and keep tqdm's clock running meanwhile."""
        import threading

        if what == "start":
            if not self._said and not self._quiet:
                self._write(self.NOTICE)
                self._said = True
            self._stop = threading.Event()
            if self.bar is not None:
                threading.Thread(target=self._refresh, args=(self._stop,), daemon=True).start()
        else:
            if self._stop is not None:
                self._stop.set()
            self._compiled += took

    def _refresh(self, stop) -> None:
        while not stop.wait(1.0):
            self.bar.refresh()

    def update(self, epoch: int, info: dict) -> None:
        if not self.enabled:
            return
        text = " ".join(f"{k}={v:.4f}" if abs(v) < 1000 else f"{k}={v:,.0f}"
                        for k, v in info.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        else:
            width = 24
            done = int(width * epoch / self.total)
            print(f"\repoch {epoch}/{self.total} [{'#' * done}{'.' * (width - done)}] {text} "
                  f"({time.perf_counter() - self.t0:.1f}s)", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._stop is not None:
            self._stop.set()
        if self._on_compile in _compiling.WATCH.subscribers:
            _compiling.WATCH.subscribers.remove(self._on_compile)
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)
        if self._said:
            print(f"compiled in {self._compiled:.1f} s (cached for later runs)", file=sys.stderr,
                  flush=True)
