"""Kernels compiled once and called by name (``@kernel(separate=True)``, loopprop/_separate.py):
a caller's machine code holds a call of the kernel's symbol, not a copy of the kernel; a cached
caller loads in a fresh process (its callee registered first), falls back to compiling when its
callee's cache is gone, and errors raised inside the kernel reach the caller's caller."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import numba
import numpy as np
import pytest

from loopprop._separate import Separate, symbol

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT,
                                reason="separate compilation is a property of compiled code")

MODULE = '''
import numpy as np
from loopprop._jit import kernel


@kernel(separate=True)
def callee(x, k):
    if k < 0:
        raise ValueError("k must be at least 0")
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * k
    return s


@kernel
def caller(x, k):
    return callee(x, k=k) + 1.0


@kernel
def outer(x, k):
    return caller(x, k) * 2.0
'''

#: run in a fresh process: call ``outer`` and report what was compiled and what was loaded
RUN = '''
import json, sys
import numpy as np
import sepmod
out = {"value": sepmod.outer(np.arange(4.0), 2)}
for name in ("callee", "caller", "outer"):
    disp = getattr(sepmod, name)
    disp = getattr(disp, "dispatcher", disp)
    out[name] = {"hits": sum(disp.stats.cache_hits.values()),
                 "misses": sum(disp.stats.cache_misses.values())}
try:
    sepmod.outer(np.arange(4.0), -1)
except ValueError as exc:
    out["error"] = str(exc)
print(json.dumps(out))
'''


def _run(folder, cache):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NUMBA_DISABLE_JIT="0",
               PYTHONPATH=str(folder) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", RUN], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def sepmod(tmp_path):
    (tmp_path / "sepmod.py").write_text(textwrap.dedent(MODULE))
    return tmp_path


def test_a_cached_caller_loads_in_a_fresh_process_with_its_separate_callee(sepmod, tmp_path):
    cache = tmp_path / "cache"
    first = _run(sepmod, cache)
    # 2·(0+1+2+3)·2 … (Σ x·k + 1)·2 = (12 + 1)·2
    assert first["value"] == 26.0
    assert first["error"] == "k must be at least 0"
    assert all(first[n]["hits"] == 0 and first[n]["misses"] >= 1
               for n in ("callee", "caller", "outer"))
    second = _run(sepmod, cache)
    assert second["value"] == 26.0
    assert second["error"] == "k must be at least 0"
    # outer and its separate callee come from the cache; caller is inside outer's machine code
    assert all(second[n]["hits"] >= 1 and second[n]["misses"] == 0
               for n in ("callee", "outer")), second
    assert second["caller"] == {"hits": 0, "misses": 0}


def test_a_cached_caller_whose_callee_is_gone_is_compiled_again(sepmod, tmp_path):
    """Without the callee's cache entry its symbol cannot be registered: loading the caller
    would abort the interpreter ("Symbol not found"); it must be compiled afresh instead."""
    cache = tmp_path / "cache"
    _run(sepmod, cache)
    removed = [p for p in cache.rglob("*") if p.is_file() and "callee" in p.name]
    assert removed, sorted(p.name for p in cache.rglob("*"))
    for p in removed:
        p.unlink()
    third = _run(sepmod, cache)
    assert third["value"] == 26.0
    assert third["callee"]["misses"] >= 1
    assert third["outer"]["misses"] >= 1  # not loaded half-linked


def test_the_caller_calls_the_separate_kernel_by_name_and_holds_no_copy(sepmod, monkeypatch):
    monkeypatch.syspath_prepend(str(sepmod))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(sepmod / "cache"))
    import importlib

    mod = importlib.import_module("sepmod")
    try:
        assert isinstance(mod.callee, Separate)
        assert mod.caller(np.arange(3.0), 1.0) == 4.0
        (ir,) = mod.caller.inspect_llvm().values()
        (argtypes,) = mod.callee.overloads
        name = symbol(mod.callee.py_func, numba.core.typing.signature(numba.types.none,
                                                                      *argtypes))
        assert re.search(rf'declare i32 @"?{re.escape(name)}"?\(', ir)
        assert not re.search(rf'define [^\n]*@"?{re.escape(name)}"?\(', ir)
        callee_ir = "".join(mod.callee.inspect_llvm().values())
        assert "k must be at least 0" in callee_ir
        assert "k must be at least 0" not in ir
    finally:
        sys.modules.pop("sepmod", None)


def test_a_separate_kernel_called_from_python_is_its_dispatcher():
    from loopprop.kernels import gemm

    assert isinstance(gemm._gemm, Separate)
    assert gemm._gemm.py_func.__name__ == "_gemm"
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((7, 5)), rng.standard_normal((5, 9))
    C = np.zeros((7, 9))
    gemm._gemm(C, X, Y, False, False, 1)
    np.testing.assert_allclose(C, X @ Y, rtol=1e-12, atol=1e-12)
    assert gemm._gemm.signatures  # the dispatcher's
    assert not hasattr(gemm._gemm, "_numba_type_")  # never taken for a dispatcher by Numba


SAVER = '''
import sys
from loopprop._cache import SharedIndexDataCacheFile
folder, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
import os, time
open(os.path.join(folder, 'ready-' + who), 'w').close()
while not os.path.exists(os.path.join(folder, 'go')):
    time.sleep(0.001)
f = SharedIndexDataCacheFile(cache_path=folder, filename_base="fn-1.py311",
                             source_stamp=("stamp",))
for i in range(n):
    f.save(("sig", who, i), (who, i, "machine code of " + who + str(i)))
'''


def test_two_processes_saving_one_functions_entries_at_once_lose_and_mix_nothing(tmp_path):
    """Numba numbers a function's data files in the order entries are added: two processes
    adding entries at once took the same numbers, and an index entry could name the other
    process's machine code. Every entry must load its own data, none lost."""
    from loopprop._cache import SharedIndexDataCacheFile

    n = 200
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), who, str(n)])
             for who in ("a", "b")]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready-{who}").exists() for who in "ab"):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both save at once from here
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    f = SharedIndexDataCacheFile(cache_path=str(tmp_path), filename_base="fn-1.py311",
                                 source_stamp=("stamp",))
    for who in ("a", "b"):
        for i in range(n):
            assert f.load(("sig", who, i)) == (who, i, f"machine code of {who}{i}")


FIRST_FIT = '''
import json
import numpy as np
import loopprop as lp
from loopprop import train
X = np.random.default_rng(0).standard_normal((6, 40))
y = np.arange(40) % 3
net = lp.Network([6, 5, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
h = net.fit(X, y, epochs=2, batch_size=8, progress=False)
stats = train._train_epoch.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values()),
                  "loss": h["loss"][-1], "compile": sum(h["compile_time"])}))
'''


@pytest.mark.heavy
def test_a_first_fit_compiles_the_epoch_in_a_second_process_and_loads_it(tmp_path):
    """From an empty cache, the epoch is compiled by the helper process while this one
    compiles the rows, then loaded from the cache; with the helper off it is compiled here,
    and both train alike."""
    runs = {}
    for helper in ("1", "0"):
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / helper), NUMBA_DISABLE_JIT="0",
                   LOOPPROP_COMPILE_HELPER=helper)
        done = subprocess.run([sys.executable, "-c", FIRST_FIT], env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[helper] = json.loads(done.stdout.strip().splitlines()[-1])
    if (os.cpu_count() or 1) >= 2:
        assert runs["1"]["hits"] == 1 and runs["1"]["misses"] == 0, runs
    assert runs["0"]["hits"] == 0 and runs["0"]["misses"] == 1, runs
    assert runs["1"]["loss"] == runs["0"]["loss"]
    assert runs["1"]["compile"] > 0  # the wait for the helper counts as compiling


def test_the_second_process_goes_on_after_a_piece_it_cannot_compile(tmp_path):
    """A row function in a module the second process cannot import (a kind registered by a
    script) once stopped it at that piece: every piece after it was left undone. Now it goes
    on, and says that a piece failed; the first process compiles that one itself."""
    import pickle

    from loopprop import _helper

    done = tmp_path / "the-next-piece-ran"
    jobs = [("call", "os", "mkdir", (str(done),)),  # taken second (the list runs from the end)
            ("row", "no_such_module_for_loopprop", "row", "float64", False)]
    folder = tmp_path / "claims"
    folder.mkdir()
    with open(folder / "jobs.pickle", "wb") as fh:
        pickle.dump(jobs, fh)
    assert _helper._main(str(folder)) == 1
    assert done.is_dir()
