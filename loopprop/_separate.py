"""Kernels compiled once, on their own, and called by name: never linked into their callers.

Numba links the machine code of every compiled function a kernel calls into that kernel's own
module and optimizes and translates the whole module again (numba issue 9566): the packed
product :func:`~loopprop.kernels.gemm._gemm` was optimized anew inside each of the five dense
kernels above it, the dense kernels inside the rows, the optimizer inside the training step and
again inside the epoch. ``@kernel(separate=True)`` compiles a kernel for each signature it is
called with, once, and gives compiled callers only its *name*: the caller's machine code calls
the symbol ``loopprop.<module>.<function>.<digest of the signature>``, which this module maps to
the compiled kernel's address with ``llvmlite.binding.add_symbol`` before any caller needs it.
The call is an ordinary call of Numba's calling convention (errors raised inside propagate);
it only cannot be inlined, so ``separate`` is for kernels called once per layer, chunk or
batch, never inside a loop over elements.

Caching: a caller's cached machine code names the symbols it calls. When Numba loads a caller
from its cache, :class:`LinkedFunctionCache` reads those names from the machine code first and
compiles -- or loads from the cache -- each callee for the signature named, so the symbol
exists before the caller is loaded (a missing symbol would abort the interpreter with "LLVM
ERROR: Symbol not found"). A callee that cannot be found (its cache entry gone, its signature
unknown) makes the caller a cache miss: it is compiled afresh, never loaded half-linked.

With the JIT off (``NUMBA_DISABLE_JIT=1``) ``separate`` returns the Python function itself.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
from typing import Callable

import llvmlite.binding as ll
from numba.core import cgutils, types
from numba.core.caching import CompileResultCacheImpl, FunctionCache
from numba.core.errors import TypingError
from numba.core.typing import signature as make_signature
from numba.extending import lower_builtin, type_callable

from . import _cache

#: symbol name -> address, for the symbols registered in this process
_REGISTERED: dict[str, int] = {}
#: the symbol names of separate kernels inside machine code
_SYMBOL = re.compile(rb"loopprop\.([A-Za-z0-9_.]+)\.([A-Za-z0-9_]+)\.([0-9a-f]{16})")


def symbol(py_func: Callable, sig) -> str:
    """The name compiled callers call ``py_func`` compiled for ``sig`` by: module, function and
    a digest of the signature (stable across processes: the cache depends on it)."""
    digest = hashlib.sha256(str(sig.args).encode()).hexdigest()[:16]
    return f"loopprop.{py_func.__module__}.{py_func.__name__}.{digest}"


class Separate:
    """A compiled kernel that compiled callers call by name (see the module docstring).

    Called from Python it is the kernel's dispatcher; its public attributes (``py_func``,
    ``signatures``, ``overloads``, …) are the dispatcher's. To Numba it is not a dispatcher
    (whose callers would link it in) but a function with a typing template of its own."""

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.__name__ = dispatcher.py_func.__name__
        self.__qualname__ = dispatcher.py_func.__qualname__
        self.__module__ = dispatcher.py_func.__module__
        self.__doc__ = dispatcher.py_func.__doc__
        self.__wrapped__ = dispatcher.py_func
        _register_typing(self)

    def __call__(self, *args):
        return self.dispatcher(*args)

    def __getattr__(self, name):
        if name.startswith("_"):  # never Numba's protocols (``_numba_type_``): not a dispatcher
            raise AttributeError(name)
        return getattr(self.dispatcher, name)

    def __repr__(self) -> str:
        return f"<separately compiled kernel {self.__module__}.{self.__name__}>"

    def link(self, argtypes: tuple) -> types.Signature:
        """Compile (or load) the kernel for ``argtypes``, register its symbol, and return the
        signature callers call it with."""
        disp = self.dispatcher
        disp.compile(argtypes)
        cres = disp.overloads[argtypes]
        sig = make_signature(cres.signature.return_type, *argtypes)
        name = symbol(disp.py_func, sig)
        if name not in _REGISTERED:
            address = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
            ll.add_symbol(name, address)
            _REGISTERED[name] = address
        return sig


def _register_typing(sep: Separate) -> None:
    """Teach Numba to type and lower a call of ``sep`` in compiled code."""
    params = inspect.signature(sep.dispatcher.py_func)

    @type_callable(sep)
    def typer(context):
        def typed(*args, **kws):
            bound = params.bind(*args, **kws)  # keywords in the kernel's order
            if len(bound.arguments) < len(params.parameters) or any(
                    isinstance(a, types.Omitted) for a in bound.arguments.values()):
                raise TypingError(f"{sep.__name__} is compiled separately: pass every "
                                  "argument (its defaults are not filled in compiled code)")
            return sep.link(tuple(types.unliteral(a) for a in bound.arguments.values()))

        typed.__signature__ = params  # Numba folds keyword arguments by this signature
        return typed

    @lower_builtin(sep, types.VarArg(types.Any))
    def lower(context, builder, sig, args):
        fnty = context.call_conv.get_function_type(sig.return_type, sig.args)
        fn = cgutils.get_or_insert_function(builder.module, fnty,
                                            symbol(sep.dispatcher.py_func, sig))
        status, res = context.call_conv.call_function(builder, fn, sig.return_type, sig.args,
                                                      args)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return res


class MissingCallee(LookupError):
    """A cached caller names a separate kernel this process cannot compile or find."""


def _separate_named(module: str, name: str) -> Separate:
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise MissingCallee(f"{module}.{name}") from exc
    if not isinstance(obj, Separate):
        raise MissingCallee(f"{module}.{name} is not a separately compiled kernel")
    return obj


def link_symbols(machine_code: bytes) -> None:
    """Register every separate kernel ``machine_code`` calls (compiling or loading it for the
    signature its symbol names, which must be among the signatures in the kernel's cache
    index or compiled in this process); :class:`MissingCallee` if one cannot be found."""
    named = {m.group(0).decode(): m for m in _SYMBOL.finditer(machine_code)}  # each name once
    for name, match in named.items():
        if name in _REGISTERED:
            continue
        sep = _separate_named(match.group(1).decode(), match.group(2).decode())
        disp = sep.dispatcher
        candidates = list(disp.overloads)
        cache = getattr(disp, "_cache", None)
        if cache is not None and hasattr(cache, "_cache_file"):
            candidates += [key[0] for key in cache._cache_file._load_index()
                           if isinstance(key, tuple) and key]
        for argtypes in candidates:
            argtypes = tuple(getattr(argtypes, "args", argtypes))  # a Signature, or its args
            if symbol(disp.py_func, make_signature(types.none, *argtypes)) == name:
                sep.link(tuple(argtypes))
                break
        else:
            raise MissingCallee(name)


class _LinkedImpl(CompileResultCacheImpl):
    def rebuild(self, target_context, payload):
        libdata = payload[0]  # (name, "object", (object code, bitcode for linking))
        link_symbols(libdata[2][0])
        return super().rebuild(target_context, payload)


class LinkedFunctionCache(FunctionCache):
    """Numba's function cache, which registers the separate kernels a cached function calls
    before loading it, treats a caller whose callee is missing as not cached, and saves
    safely when two processes compile the same function
    (:class:`~loopprop._cache.SharedIndexDataCacheFile`)."""

    _impl_class = _LinkedImpl

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = _cache.SharedIndexDataCacheFile(
            cache_path=self._cache_path, filename_base=self._impl.filename_base,
            source_stamp=self._impl.locator.get_source_stamp())

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except MissingCallee:
            return None
