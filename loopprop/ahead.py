"""Compile ahead: everything a command-line model needs, before anyone waits for it.

``loopprop compile --model cnn`` (or ``--all``) compiles -- or finds in Numba's cache -- the
row functions of the model's layer kinds, one kind at a time, then the compiled epoch,
evaluation and (for the GPT) sampling, by running each once on a few random examples. A
teacher runs it once per machine before a lab; the first ``loopprop train`` then starts at
once. What is compiled depends only on the layer kinds and the dtype, not on the sizes: any
dense network of the same dtype shares the MLP's machine code.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np

from . import _compiling, _helper
from . import dispatch as _dispatch
from .layers.registry import kind_of

#: the models ``loopprop compile`` knows, as ``loopprop train --model`` names them
MODELS = ("mlp", "cnn", "resnet", "gpt", "lstm", "gru", "rnn")
#: the language models among them (trained with fit_text, sampled)
LANGUAGE_MODELS = ("gpt", "lstm", "gru", "rnn")


def network(model: str, dtype: str):
    """A small network of ``model``'s layer kinds (the command line's layers for the CNNs; any
    sizes compile the same machine code)."""
    from . import models
    from .network import Network

    if model == "mlp":
        return Network([8, 6, 3], ["relu", "softmax"], "cross_entropy", dtype=dtype)
    if model in ("cnn", "resnet"):
        layers = models.cnn_layers("digits") if model == "cnn" else models.resnet_layers("digits")
        return Network(layers, loss="cross_entropy", input_shape=(1, 8, 8), dtype=dtype)
    if model == "gpt":
        return models.gpt(5, 4, 1, 1, 4, dtype=dtype)
    if model in models.CELLS:
        return models.char_rnn(5, 4, 1, cell=model, block_size=4, dtype=dtype)
    raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {model!r}")


def steps(model: str, dtype: str) -> list[tuple[str, Callable[[], object]]]:
    """What compiling ``model`` for ``dtype`` takes, in order: ``(what, do it)`` pairs.

    The first starts a second process (loopprop/_helper.py) on the same pieces: it compiles
    the training epoch first (a network of cheap rows: the epoch's types do not depend on the
    layers), then the kinds' row functions from the last; this process compiles them from the
    first, each piece claimed by one process only. The epoch's step waits for the second
    process, then finds everything in the cache."""
    from .generate import sample

    net = network(model, dtype)
    out: list[tuple[str, Callable[[], object]]] = []
    kinds: list[tuple[str, list[tuple]]] = []  # (kind name, its row jobs)
    decode = model in LANGUAGE_MODELS  # sampling decodes position by position
    seen = set()
    for row in net.rows:
        kind = kind_of(row)
        if kind.code in seen:
            continue
        seen.add(kind.code)
        kinds.append((kind.name, [_helper.row_job(fn, dtype, d) for fn, d
                                  in _dispatch.row_functions([kind.code], decode)]))
    jobs = [job for _, rows in kinds for job in rows]
    jobs.append(_helper.epochs_job(dtype, text=model in LANGUAGE_MODELS))
    helper: dict[str, _helper.Helper | None] = {}

    def start() -> str:
        helper["h"] = _helper.start(jobs)
        return "started" if helper["h"] is not None else "not started (compiled here)"

    out.append(("a second process", start))

    def rows(row_jobs: list[tuple]) -> str | None:
        mine = 0
        for job in row_jobs:  # claimed one at a time: the other process may take the next
            if helper.get("h") is None or helper["h"].claim(job):
                _helper.run(job)
                mine += 1
        return (None if mine == len(row_jobs) else "compiled in the second process" if not mine
                else f"{mine} of {len(row_jobs)} here, the rest in the second process")

    for name, row_jobs in kinds:
        out.append((f"{name} rows", lambda row_jobs=row_jobs: rows(row_jobs)))

    def joined(fn: Callable[[], object]) -> Callable[[], object]:
        def run():
            if helper.get("h") is not None:
                helper.pop("h").join()
            return fn()
        return run

    rng = np.random.default_rng(0)
    if model in LANGUAGE_MODELS:
        ids = rng.integers(0, 5, 64)
        out.append(("the training epoch", joined(lambda: net.fit_text(
            ids, epochs=1, steps_per_epoch=1, batch_size=2, progress=False,
            validation=ids[:16]))))
        out.append(("sampling", lambda: sample(net, ids[:2], 2)))
        return out
    X = rng.standard_normal((*net.input_shape, 8))
    y = rng.integers(0, net.output_size, 8)
    out.append(("the training epoch", joined(lambda: net.fit(X, y, epochs=1, batch_size=4,
                                                             progress=False))))
    out.append(("evaluation", lambda: net.evaluate(X, y)))
    out.append(("forward and backward", lambda: (net.forward(X), net.backward(y))))
    return out


def compile_epochs(dtype: str, kind: str) -> None:
    """Train (and evaluate) a network of cheap rows once, so that the training epoch of ``kind``
    (``"examples"``: ``fit``; ``"text"``: ``fit_text``) and evaluation compile for ``dtype``
    (loopprop/_helper.py runs it in its second process)."""
    from .layers import Embedding, Flatten, Softmax
    from .network import Network

    rng = np.random.default_rng(0)
    if kind == "text":
        net = Network([Embedding(5, 5), Softmax()], loss="cross_entropy", input_shape=(4,),
                      dtype=dtype)
        ids = rng.integers(0, 5, 64)
        net.fit_text(ids, epochs=1, steps_per_epoch=1, batch_size=2, progress=False,
                     validation=ids[:16])
        return
    net = Network([Flatten()], input_shape=(3,), loss="mse", dtype=dtype)
    X, Y = rng.standard_normal((3, 8)), rng.standard_normal((3, 8))
    net.fit(X, Y, epochs=1, batch_size=4, progress=False)
    net.evaluate(X, Y)


def compile_models(models: list[str], dtypes: list[str], progress: bool = True,
                   write: Callable[[str], None] | None = None) -> dict[str, float]:
    """Compile (or load from the cache) what each of ``models`` needs for each of ``dtypes``;
    a line per step names what it compiles and how long it took. Returns the seconds of
    compiling per ``"model dtype"`` (0 when everything came from the cache)."""
    write = write or (lambda text: print(text, file=sys.stderr, flush=True))
    todo = [(m, d, what, fn) for m in models for d in dtypes for what, fn in steps(m, d)]
    spent: dict[str, float] = {}
    bar = _bar(len(todo)) if progress else None
    for i, (m, d, what, fn) in enumerate(todo, 1):
        label = f"{m} {d}: {what}"
        if bar is not None:
            bar.set_description_str(label)
        before = _compiling.seconds()
        t0 = time.perf_counter()
        status = fn()
        took = _compiling.seconds() - before
        spent[f"{m} {d}"] = spent.get(f"{m} {d}", 0.0) + took
        said = (f"compiled in {took:.1f} s" if took > 0.05 else
                f"cached ({time.perf_counter() - t0:.2f} s)")
        if isinstance(status, str):  # what the step says of itself
            said = status if took <= 0.05 else f"{said}; {status}"
        line = f"[{i}/{len(todo)}] {label}: {said}"
        if bar is not None:
            bar.update(1)
            bar.write(line, file=sys.stderr)
        else:
            write(line)
    if bar is not None:
        bar.close()
    return spent


def _bar(total: int):
    """A tqdm bar over the steps when tqdm is installed, else ``None`` (a line per step)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", dynamic_ncols=True, file=sys.stderr)
