"""The table of compiled row functions the epoch calls: each kind's rows compiled once per
dtype, separately, the first time a network needs them.

The epoch (:mod:`loopprop.train`) calls row ``r``'s forward function as
``row_at(table.forward, plan[r, KIND], table.like)(r, plan, fplan, b, s)``. The
:class:`~loopprop.bundles.Table` holds, per kind code, the *addresses* of compiled functions
that share one signature (:func:`loopprop.bundles.row_signature`), and :func:`row_at` turns an
address into a first-class function of that signature (Numba's ``FunctionType``), which Numba
calls like any compiled function. The epoch's types do not say which functions the table
holds, so it is compiled once per dtype and serves every composition of layers; and it is
cached, because the addresses arrive as data (a function referenced as a global embeds its
address and cannot be cached). A row is compiled on its own and never re-optimized inside each
caller (a chain of ``@njit`` calls is linked and optimized again in every function that calls
it). A call through the table costs about 10 ns.

Two designs came first, measured: a tuple of the compiled functions themselves (a ``UniTuple``
of ``FunctionType``) worked and cached, but every call from Python typed each of its 45
dispatchers and looked up their addresses again (2 ms; with wrappers that keep the address,
0.13 ms: ``forward`` + ``backward`` on a small batch still 1.4× slower); the addresses in an
integer array cost what any array costs.

A row function is compiled for its one signature when :func:`table` first needs it: kinds a
network lacks never compile (their entries hold :func:`~loopprop.rows.common.none_row`, which
costs nothing to compile), and a new network of kinds already compiled compiles nothing. With
the JIT off (``NUMBA_DISABLE_JIT=1``) the "addresses" number the Python functions instead.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterable

import numba
import numpy as np
from numba.core import cgutils, types
from numba.core.dispatcher import Dispatcher
from numba.core.errors import NumbaExperimentalFeatureWarning
from numba.extending import intrinsic

from . import bundles
from ._jit import kernel
from .layers import registry as _registry
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


#: (row function, dtype name) -> its compiled dispatcher (the function, with the JIT off)
_COMPILED: dict[tuple[Callable, str], Callable] = {}
_TABLES: dict[tuple[frozenset, str, bool], bundles.Table] = {}
#: with the JIT off, the functions the tables number
_PYTHON: list[Callable] = []


def compiled_row(fn: Callable, dtype, decode: bool = False) -> Callable:
    """``fn`` (a row function, or a decode row with ``decode``) compiled for buffers of
    ``dtype`` (njit, cached): once per process, loaded from Numba's cache when it is there.
    With the JIT off, ``fn`` itself."""
    name = np.dtype(dtype).name
    key = (fn, name)
    if key not in _COMPILED:
        sig = bundles.decode_signature(name) if decode else bundles.row_signature(name)
        _COMPILED[key] = kernel(fn, signature=sig)
    return _COMPILED[key]


def _addresses(compiled: Callable) -> tuple[int, int]:
    """A compiled row's two addresses: its C wrapper's and its own (Numba's calling
    convention, which passes errors on); with the JIT off, its number in ``_PYTHON``."""
    if not isinstance(compiled, Dispatcher):
        if compiled not in _PYTHON:
            _PYTHON.append(compiled)
        return _PYTHON.index(compiled), 0
    (cres,) = compiled.overloads.values()  # compiled for its one signature
    lib = cres.library
    return (lib.get_pointer_to_function(cres.fndesc.llvm_cfunc_wrapper_name),
            lib.get_pointer_to_function(cres.fndesc.llvm_func_name))


def _function_type(addresses, like, decode: bool) -> types.FunctionType | None:
    """The first-class function type of a row (or decode row) for buffers of ``like``'s dtype;
    ``None`` (a typing error) unless ``addresses`` is a table's ``(N_CODES, 2)`` int64 array and
    ``like`` a float array."""
    if not (isinstance(addresses, types.Array) and addresses.ndim == 2
            and addresses.dtype == types.int64 and addresses.layout == "C"
            and isinstance(like, types.Array) and like.dtype in (types.float32, types.float64)):
        return None
    name = str(like.dtype)
    return types.FunctionType(bundles.decode_signature(name) if decode
                              else bundles.row_signature(name))


def _from_addresses(fty):
    """Code that reads ``addresses[code, 0]`` (the C wrapper) and ``addresses[code, 1]`` (the
    function itself) and makes a first-class function of type ``fty`` of them; Numba calls
    it through the second, with its own calling convention."""
    def codegen(context, builder, sig, args):
        table, code = args[0], args[1]
        arr = context.make_array(sig.args[0])(context, builder, table)
        shape = cgutils.unpack_tuple(builder, arr.shape, 2)
        strides = cgutils.unpack_tuple(builder, arr.strides, 2)
        voidptr = context.get_value_type(types.voidptr)

        def address(column):
            ptr = cgutils.get_item_pointer2(context, builder, arr.data, shape, strides, "C",
                                            [code, context.get_constant(types.intp, column)])
            return builder.inttoptr(builder.load(ptr), voidptr)

        fn = cgutils.create_struct_proxy(fty)(context, builder)
        fn.c_addr = address(0)
        fn.py_addr = cgutils.get_null_value(voidptr)
        fn.jit_addr = address(1)
        return fn._getvalue()

    return codegen


@intrinsic
def row_at(typingctx, addresses, code, like):
    """The row function at ``addresses[code]`` (a table's ``forward`` or ``backward``) as a
    first-class function of the row signature for buffers of ``like``'s dtype."""
    fty = _function_type(addresses, like, decode=False)
    if fty is None:
        return None
    return fty(addresses, types.intp, like), _from_addresses(fty)


@intrinsic
def decode_at(typingctx, addresses, code, like):
    """As :func:`row_at`, for the decode rows (the decode signature)."""
    fty = _function_type(addresses, like, decode=True)
    if fty is None:
        return None
    return fty(addresses, types.intp, like), _from_addresses(fty)


if numba.config.DISABLE_JIT:
    def row_at(addresses, code, like):  # noqa: F811 - the pure-Python twin
        """The Python row function numbered ``addresses[code, 0]``."""
        return _PYTHON[addresses[code, 0]]

    decode_at = row_at


def row_functions(codes: Iterable[int], decode: bool = False) -> list[tuple[Callable, bool]]:
    """The row functions :func:`table` compiles for the kind codes ``codes``, as ``(function,
    is a decode row)`` pairs in registry order (for loopprop/_helper.py, which shares them out)."""
    present = {int(c) for c in codes}
    out = []
    for kind in _registry.REGISTRY:
        if kind.code in present:
            out += [(kind.forward, False), (kind.backward, False)]
            if decode and kind.decode is not None:
                out.append((kind.decode, True))
    return out


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
    none_d = compiled_row(none_decode, name, decode=True) if decode else None
    n_codes = _registry.N_CODES
    forward, backward, dec = [none] * n_codes, [none] * n_codes, [none_d] * n_codes
    has_decode = np.zeros(n_codes, np.int64)
    for kind in _registry.REGISTRY:
        if kind.code not in present:
            continue
        forward[kind.code] = compiled_row(kind.forward, name)
        backward[kind.code] = compiled_row(kind.backward, name)
        if decode and kind.decode is not None:
            dec[kind.code] = compiled_row(kind.decode, name, decode=True)
            has_decode[kind.code] = 1
    unknown = present - {kind.code for kind in _registry.REGISTRY}
    if unknown:
        raise ValueError(f"plan: kind codes {sorted(unknown)} are not in the registry "
                         "(loopprop/layers/registry.py)")
    def addresses(functions):  # no decode rows in training: zeros, never called
        return np.array([_addresses(f) if f is not None else (0, 0) for f in functions],
                        np.int64).reshape(n_codes, 2)

    made = bundles.Table(addresses(forward), addresses(backward), addresses(dec), has_decode,
                         np.zeros(0, name))
    _TABLES[key] = made
    return made


def compiled_kinds() -> set[tuple[str, str]]:
    """The (row function name, dtype) pairs this process has compiled or loaded so far."""
    return {(fn.__name__, name) for fn, name in _COMPILED}
