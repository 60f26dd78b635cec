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
    with pytest.raises(AttributeError):
        gemm._gemm._numba_type_  # never taken for a dispatcher by Numba
