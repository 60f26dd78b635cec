"""Numba's cache, keyed by the whole package's sources: no stale machine code.

Numba stamps a cached function with a hash of *its own file* only. A compiled caller links its
compiled callees into its own machine code, so after an edit of ``kernels/dense.py`` (a
``git pull``, a new version installed over an old one, an asv run of another commit) the cached
epoch in another file would go on running the old dense kernel, silently.

loopprop's functions are therefore cached by locators whose stamp is the pair (Numba's hash of
the function's file, a hash of every package file that compiled code depends on:
:func:`compiled_sources`): a change to any of them makes every cached entry stale, and Numba
compiles afresh and overwrites it. The
cache stays where Numba would put it (``__pycache__`` beside the package, or
``NUMBA_CACHE_DIR``, or the user's cache directory); functions of other packages are untouched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re

try:
    import fcntl
except ImportError:  # Windows: no lock; a lost index entry is then a later cache miss
    fcntl = None

from numba.core import caching

#: the package's folder; only functions defined in files below it get the package stamp
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


#: a file defines compiled code when it holds one of these
_COMPILED_MARKERS = re.compile(r"@kernel\b|\bkernel\(|\bnjit\b|@overload\b|\boverload\(|"
                               r"@intrinsic\b")
#: ``from .x import a, b`` / ``from .. import a`` / ``from .x import (a,\n b)`` at the start of
#: a line: the dots, the module, and the names (in parentheses, or to the end of the line).
#: Only a module's own imports count: compiled code reads module globals, and an import inside
#: a Python function (``generate`` building a ``Network``) gives it none
_RELATIVE_IMPORT = re.compile(r"^from[ \t]+(\.+)([\w.]*)[ \t]+import[ \t]+"
                              r"(?:\(([^)]*)\)|([^\n(]+))", re.MULTILINE)


def compiled_sources() -> list[str]:
    """The package's files that compiled code depends on: those that define compiled functions
    (``@kernel``, ``kernel(…)``, ``njit``, ``overload``, ``@intrinsic``) and, transitively,
    every package file they import from (whose functions they call and whose constants Numba
    freezes into machine code). A file outside this set (the command line, plots, explain)
    changes no machine code, so editing it leaves the cache valid."""
    texts = {}
    for folder, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as fh:
                    texts[path] = fh.read()
    todo = [p for p, text in texts.items() if _COMPILED_MARKERS.search(text)]
    seen = set(todo)
    while todo:
        path = todo.pop()
        for dots, module, inside, rest in _RELATIVE_IMPORT.findall(texts[path]):
            names = re.sub(r"#[^\n]*", "", inside or rest)  # no comments
            base = os.path.dirname(path)
            for _ in range(len(dots) - 1):
                base = os.path.dirname(base)
            stem = os.path.join(base, *module.split(".")) if module else base
            # ``from .. import _checks`` names modules; ``from .layers import X`` a package's
            # __init__ (whose own imports then count)
            candidates = [stem + ".py", os.path.join(stem, "__init__.py")] if module else []
            # ``conv as _conv``: the module's name is the first word
            candidates += [os.path.join(stem, n.split()[0] + ".py") for n in names.split(",")
                           if n.strip()]
            for dep in candidates:
                if dep in texts and dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
    return sorted(seen)


@functools.lru_cache(maxsize=1)
def package_digest() -> str:
    """SHA-256 of :func:`compiled_sources` (relative path and content of each, in order):
    computed once per process, about a millisecond."""
    h = hashlib.sha256()
    for path in compiled_sources():
        h.update(os.path.relpath(path, PACKAGE_DIR).encode())
        with open(path, "rb") as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def _in_package(py_file: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(py_file), PACKAGE_DIR]) == PACKAGE_DIR
    except ValueError:  # another drive on Windows
        return False


class _PackageStamp:
    """Mixin for Numba's file-backed locators: loopprop files only, stamped by the package."""

    def get_source_stamp(self):
        return (super().get_source_stamp(), package_digest())

    @classmethod
    def from_function(cls, py_func, py_file):
        if not _in_package(py_file):
            return None
        return super().from_function(py_func, py_file)


def _numba(name: str):
    """A class of ``numba.core.caching`` by its public name (Numba ≥ 0.64) or its earlier
    private one."""
    return getattr(caching, name, None) or getattr(caching, "_" + name)


class PackageUserProvidedLocator(_PackageStamp, _numba("UserProvidedCacheLocator")):
    """``NUMBA_CACHE_DIR``, when the user set it."""


class PackageInTreeLocator(_PackageStamp, _numba("InTreeCacheLocator")):
    """``__pycache__`` beside the package (an editable or user install)."""


class PackageUserWideLocator(_PackageStamp, _numba("UserWideCacheLocator")):
    """The user's cache directory (a read-only system-wide install)."""


class SharedIndexDataCacheFile(_numba("IndexDataCacheFile")):
    """Numba's index and data files of one function, safe for two processes saving entries of
    the same function at once (the first ``loopprop train`` compiles in two: loopprop/_helper.py).

    Numba numbers a function's data files 1, 2, … in the order entries are added, reading the
    index to pick the next number: two processes adding different signatures at once both take
    the same number, and the index one leaves can name the machine code the other wrote -- a
    wrong function loaded later. Here a data file is named by a digest of its key (signature,
    target, code), written whole before the index names it, and the index is read, updated and
    written under a lock."""

    def save(self, key, data):
        base = self._index_name[:-len(".nbi")]
        name = f"{base}.{hashlib.sha256(repr(key).encode()).hexdigest()[:16]}.nbc"
        self._save_data(name, data)  # a temporary file, then a rename (Numba's)
        with self._locked():
            overloads = self._load_index()
            overloads[key] = name
            self._save_index(overloads)

    @contextlib.contextmanager
    def _locked(self):
        if fcntl is None:
            yield
            return
        with open(self._index_path + ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


LOCATORS = (PackageUserProvidedLocator, PackageInTreeLocator, PackageUserWideLocator)


def install() -> None:
    """Put the package locators ahead of Numba's own (idempotent). Numba tries its locators in
    order and takes the first that accepts a function; ours accept only loopprop's files."""
    classes = _numba("CacheImpl")._locator_classes
    for cls in reversed(LOCATORS):
        if cls not in classes:
            classes.insert(0, cls)
