"""The table of compiled row functions the epoch calls: each kind's rows compiled once per
dtype, separately, the first time a network needs them.

The epoch (:mod:`loopprop.train`) calls row ``r``'s function as
``table.forward[plan[r, KIND]](r, plan, fplan, b, s)``: a tuple of compiled functions that
share one signature (:func:`loopprop.bundles.row_signature`), passed as an argument. Numba
types such a tuple by the signature alone (a ``UniTuple`` of ``FunctionType``), not by which
functions it holds, so the epoch is compiled once per dtype and serves every composition of
layers, and it is cached: a function reached through an argument is called through its address,
where a function referenced as a global would embed the address and could not be cached. The
callee is compiled on its own and never re-optimized inside each caller (a chain of ``@njit``
calls is linked and optimized again in every function that calls it). A call through the table
costs about 40 ns.

A row function is compiled for its one signature when :func:`table` first needs it: kinds a
network lacks never compile (their entries hold :func:`~loopprop.rows.common.none_row`, which
costs nothing to compile), and a new network of kinds already compiled compiles nothing.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable

import numpy as np
from numba.core.errors import NumbaExperimentalFeatureWarning

from . import bundles
from ._jit import kernel
from .layers.registry import N_CODES, REGISTRY
from .rows.common import none_decode, none_row

#: Numba calls first-class function types experimental and says so on the first compile of a
#: caller; loopprop's tests hold the feature to its results, so a user need not hear it
_EXPERIMENTAL = ".*First-class function type feature is experimental"


def _quiet() -> None:
    """Filter out Numba's experimental-feature warning for first-class functions (that one
    warning only), unless the filter is there already. Done whenever a table is handed out, not
    once at import: a ``warnings.catch_warnings`` block around the import (pytest's collection,
    a user's own) would take a filter set at import away again."""
    for action, message, category, _, _ in warnings.filters:
        if (action == "ignore" and category is NumbaExperimentalFeatureWarning
                and message is not None and message.pattern == _EXPERIMENTAL):
            return
    warnings.filterwarnings("ignore", message=_EXPERIMENTAL,
                            category=NumbaExperimentalFeatureWarning)

#: (row function, dtype name) -> its compiled dispatcher: what this process has compiled
_COMPILED: dict[tuple[Callable, str], Callable] = {}
_TABLES: dict[tuple[frozenset, str, bool], bundles.Table] = {}


def compiled_row(fn: Callable, dtype, decode: bool = False) -> Callable:
    """``fn`` (a row function, or a decode row with ``decode``) compiled for buffers of
    ``dtype`` (njit, cached): once per process, loaded from Numba's cache when it is there."""
    name = np.dtype(dtype).name
    key = (fn, name)
    if key not in _COMPILED:
        sig = bundles.decode_signature(name) if decode else bundles.row_signature(name)
        _COMPILED[key] = kernel(fn, signature=sig)
    return _COMPILED[key]


def table(codes: Iterable[int], dtype, decode: bool = False) -> bundles.Table:
    """The :class:`~loopprop.bundles.Table` for a plan holding the kind codes ``codes``, for
    buffers of ``dtype``: those kinds' forward and backward rows (and, with ``decode``, their
    decode rows), a no-op for every other code."""
    _quiet()
    key = (frozenset(int(c) for c in codes), np.dtype(dtype).name, bool(decode))
    if key in _TABLES:
        return _TABLES[key]
    present, name, _ = key
    none = compiled_row(none_row, name)
    none_d = compiled_row(none_decode, name, decode=True)
    forward, backward, dec = [none] * N_CODES, [none] * N_CODES, [none_d] * N_CODES
    has_decode = np.zeros(N_CODES, np.int64)
    for kind in REGISTRY:
        if kind.code not in present:
            continue
        forward[kind.code] = compiled_row(kind.forward, name)
        backward[kind.code] = compiled_row(kind.backward, name)
        if decode and kind.decode is not None:
            dec[kind.code] = compiled_row(kind.decode, name, decode=True)
            has_decode[kind.code] = 1
    unknown = present - {kind.code for kind in REGISTRY}
    if unknown:
        raise ValueError(f"plan: kind codes {sorted(unknown)} are not in the registry "
                         "(loopprop/layers/registry.py)")
    _TABLES[key] = bundles.Table(tuple(forward), tuple(backward), tuple(dec), has_decode)
    return _TABLES[key]


def compiled_kinds() -> set[tuple[str, str]]:
    """The (row function name, dtype) pairs this process has compiled or loaded so far."""
    return {(fn.__name__, name) for fn, name in _COMPILED}
