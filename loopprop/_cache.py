"""Numba's cache, keyed by the whole package's sources: no stale machine code.

Numba stamps a cached function with a hash of *its own file* only. A compiled caller links its
compiled callees into its own machine code, so after an edit of ``kernels/dense.py`` (a
``git pull``, a new version installed over an old one, an asv run of another commit) the cached
epoch in another file would go on running the old dense kernel, silently.

loopprop's functions are therefore cached by locators whose stamp is the pair (Numba's hash of
the function's file, a hash of every ``.py`` file of the package): any change to any source of
the package makes every cached entry stale, and Numba compiles afresh and overwrites it. The
cache stays where Numba would put it (``__pycache__`` beside the package, or
``NUMBA_CACHE_DIR``, or the user's cache directory); functions of other packages are untouched.
"""

from __future__ import annotations

import functools
import hashlib
import os

from numba.core import caching

#: the package's folder; only functions defined in files below it get the package stamp
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=1)
def package_digest() -> str:
    """SHA-256 of every ``.py`` file of the package (relative path and content, sorted by
    path): computed once per process, about a millisecond."""
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
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


LOCATORS = (PackageUserProvidedLocator, PackageInTreeLocator, PackageUserWideLocator)


def install() -> None:
    """Put the package locators ahead of Numba's own (idempotent). Numba tries its locators in
    order and takes the first that accepts a function; ours accept only loopprop's files."""
    classes = _numba("CacheImpl")._locator_classes
    for cls in reversed(LOCATORS):
        if cls not in classes:
            classes.insert(0, cls)
