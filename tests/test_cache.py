"""Numba's cache never runs an older version of a kernel (loopprop/_cache.py).

A cached function links its compiled callees into its own machine code, and Numba stamps a
cache entry with the hash of the function's own file only: without loopprop's locators, an
edit of a callee's file (``git pull``, another commit under asv) left the caller's old code
running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import numba
import pytest

import loopprop

pytestmark = pytest.mark.skipif(numba.config.DISABLE_JIT, reason="the cache needs the JIT")

#: dropout's kernel (kernels/dropout.py) draws through SplitMix64's _mix, defined in
#: kernels/rng.py and inlined into it
_RUN = textwrap.dedent("""
    import numpy as np, loopprop as lp
    out, mask = lp.dropout_forward(np.ones((8, 64)), 0.5, 7)
    print("".join("1" if v else "0" for v in (mask.ravel() > 0)))
""")


def _copy_package(dst) -> str:
    src = os.path.dirname(loopprop.__file__)
    shutil.copytree(src, dst / "loopprop", ignore=shutil.ignore_patterns("__pycache__"))
    return str(dst / "loopprop")


def _mask(root, cache_dir=None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = str(root)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    done = subprocess.run([sys.executable, "-c", _RUN], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_changed_callee_in_another_file_is_compiled_again(tmp_path):
    pkg = _copy_package(tmp_path)
    before = _mask(tmp_path)  # compiled and cached in the copy's __pycache__
    assert _mask(tmp_path) == before  # loaded from the cache: same draws
    rng_py = os.path.join(pkg, "kernels", "rng.py")
    with open(rng_py) as fh:
        source = fh.read()
    assert "_M1 = 0xBF58476D1CE4E5B9" in source
    with open(rng_py, "w") as fh:  # another mixing constant: other draws
        fh.write(source.replace("_M1 = 0xBF58476D1CE4E5B9", "_M1 = 0xBF58476D1CE4E5B7"))
    after = _mask(tmp_path)  # dropout.py did not change, its callee did
    fresh = _mask(tmp_path, cache_dir=tmp_path / "empty-cache")  # compiled from nothing
    assert after == fresh, "the cached dropout kernel ran the old _mix of kernels/rng.py"
    assert after != before


def test_only_loopprop_files_get_the_package_stamp(tmp_path):
    from loopprop import _cache

    assert _cache._in_package(loopprop._cache.__file__)
    assert _cache._in_package(os.path.join(_cache.PACKAGE_DIR, "kernels", "dense.py"))
    assert not _cache._in_package(numba.__file__)
    assert not _cache._in_package(str(tmp_path / "loopprop" / "x.py"))
    assert len(_cache.package_digest()) == 64
    files = {os.path.relpath(p, _cache.PACKAGE_DIR) for p in _cache.compiled_sources()}
    # every file that defines compiled code, and those whose constants it freezes (plan.py)
    assert {"_jit.py", "train.py", "plan.py", os.path.join("kernels", "rng.py"),
            os.path.join("kernels", "gemm.py")} <= files
    # the command line compiles nothing: editing it keeps the cache
    assert not any(f.startswith("cli" + os.sep) for f in files) and "bench.py" not in files
    # nor does the network's Python: building, fitting, checking inputs, saving, showing
    assert not {"network.py", "fitting.py", "inputs.py", "model_file.py", "summary.py",
                "progress.py", "models.py"} & files


_READ_ONLY = """
import os, sys, tempfile, warnings
import numba.core.caching as c
allowed = os.environ.get("ALLOW", "")
orig = c._CacheLocator.ensure_cache_path
def read_only(self):  # every cache location refuses writes, except ALLOW
    if allowed and self.get_cache_path().startswith(allowed):
        return orig(self)
    raise OSError("read-only file system")
c._CacheLocator.ensure_cache_path = read_only
if allowed:
    tempfile.tempdir = allowed
warnings.simplefilter("always")
import numpy as np
import loopprop as lp
from loopprop import _jit
print(lp.activation_forward("relu", -np.ones((2, 2))).sum(), _jit._CACHE["enabled"])
"""


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="nothing is cached without the JIT")
def test_import_works_without_any_writable_cache(tmp_path):
    env = {**os.environ, "ALLOW": ""}
    env.pop("NUMBA_CACHE_DIR", None)
    r = subprocess.run([sys.executable, "-c", _READ_ONLY], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0.0", "False"]
    assert r.stderr.count("no writable cache directory") == 1  # one warning, not one per kernel

    env["ALLOW"] = str(tmp_path)  # only the temporary directory is writable
    r = subprocess.run([sys.executable, "-c", _READ_ONLY], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0.0", "True"]
    assert any(p.name.startswith("loopprop-numba-cache") for p in tmp_path.iterdir())


def test_type_key_is_equal_only_for_equal_numba_types():
    """``_helper.epoch_job`` trusts an equal ``bundles.type_key`` to mean an equal Numba type
    (and then skips typing the epoch's arguments): arrays differing in dtype, rank or layout
    and bundles differing in a field's layout have different keys; what it cannot tell
    quickly has none."""
    import numpy as np

    from loopprop.bundles import Norms, type_key

    a = np.zeros((3, 4))
    same = [a, np.ones((5, 2)), Norms(np.zeros(2, np.int64), np.zeros(3))]
    other = [a.astype(np.float32), np.zeros(3), np.asfortranarray(np.zeros((3, 4))), a[:, ::2],
             Norms(np.zeros(2, np.int64), np.zeros((3, 1))[:, 0][::2])]
    for x in same + other:
        for y in same + other:
            if type_key(x) == type_key(y):
                assert numba.typeof(x) == numba.typeof(y), (x, y)
    assert len({type_key(x) for x in same[:2]}) == 1
    assert len({type_key(x) for x in [a, *other[:4]]}) == 5
    assert type_key(("text", a)) is None and type_key(object()) is None


def test_threads_for_load_reads_the_load_at_most_once_a_second(monkeypatch):
    """``fit`` asks at every epoch; reading /proc costs 20–100 µs, a tenth of a small epoch."""
    from loopprop import _jit

    reads, now = [], [1000.0]
    monkeypatch.setattr(_jit, "_LOAD", {})
    monkeypatch.setattr(_jit, "_threads_for_load", lambda t: reads.append(t) or 1)
    monkeypatch.setattr(_jit.time, "monotonic", lambda: now[0])
    assert _jit.threads_for_load(2) == 1 and _jit.threads_for_load(2) == 1
    assert reads == [2]
    now[0] += _jit.LOAD_SECONDS / 2
    assert _jit.threads_for_load(2) == 1 and reads == [2]
    now[0] += _jit.LOAD_SECONDS
    assert _jit.threads_for_load(2) == 1 and reads == [2, 2]  # read again after a second
    assert _jit.threads_for_load(1) == 1 and reads == [2, 2]  # one thread: nothing to read
