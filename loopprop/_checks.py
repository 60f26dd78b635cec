"""Argument validation shared by every public function.

Every check raises a ``TypeError`` or ``ValueError`` in Python, *before* any kernel runs (the
NaN/Inf scan is itself one compiled pass), and its message names the argument, what was
expected, what came, and the fix. A Numba typing error
or a NaN reaching a user is a bug.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np

from ._jit import kernel

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        return f"an array of dtype {x.dtype} and shape {x.shape}"
    return f"{type(x).__name__} {x!r}"[:120]


def as_float_array(
    x: Any,
    name: str,
    ndim: int | tuple[int, ...],
    *,
    check_finite: bool = True,
    hint: str = "",
) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32/float64 array of the given ``ndim``.

    Python lists and scalars are accepted and become float64. Integer and boolean arrays are
    refused (an integer ``W`` is nearly always a bug): the message suggests ``.astype``.
    Non-contiguous and Fortran-ordered arrays are copied to C order.
    """
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and exotic objects
            raise TypeError(f"{name}: expected an array of floats, got {_describe(x)}") from exc
        if arr.dtype.kind in "iub":
            arr = arr.astype(np.float64)
    if arr.dtype.kind in "iub":
        raise TypeError(
            f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}; "
            f"convert it with {name}.astype(np.float64)"
        )
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}; "
            f"convert it with {name}.astype(np.float64)"
        )
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(
            f"{name}: expected a {want} array, got {arr.ndim}-D with shape {arr.shape}"
            + (f"; {hint}" if hint else "")
        )
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would make a 0-d array 1-D)
        arr = np.ascontiguousarray(arr)
    if check_finite:
        require_finite(arr, name)
    return arr


@kernel(fast=True)
def _all_finite(v):
    """Whether ``Σ_p v[p]·0`` is 0. Each term is 0 for a finite ``v[p]`` and NaN for NaN or ±Inf
    (``0·Inf`` is NaN), and the sum cannot overflow, so one vectorized pass without a temporary
    answers exactly. Safe under loopprop's fast-math subset: without ``nnan``/``ninf`` LLVM may
    not fold ``x·0`` to 0."""
    acc = v.dtype.type(0)
    for p in range(v.shape[0]):
        acc += v[p] * 0
    return acc == 0


#: values per block of :func:`_all_finite_blocks`, and the fewest values it takes: below, one
#: pass on one thread (the small MLP's 1.2·10⁵ values, 11 µs, cost a fit 60–200 µs more on
#: two: the pool's wake-up and its barrier)
FINITE_BLOCK = 1 << 16
FINITE_THREADED = 1 << 20


@kernel(fast=True, parallel=True)
def _all_finite_blocks(v):
    """:func:`_all_finite` over blocks of :data:`FINITE_BLOCK` values shared between Numba's
    threads (one thread reads 40–80 GB/s here: the MNIST training set's 5·10⁶ values took 0.9
    ms, as long as two batches)."""
    block = FINITE_BLOCK
    n_blocks = (v.shape[0] + block - 1) // block
    ok = np.empty(n_blocks, np.bool_)
    for b in numba.prange(n_blocks):  # (the sum written out here is not vectorized)
        ok[b] = _all_finite(v[b * block:min(v.shape[0], (b + 1) * block)])
    return ok.all()


def all_finite(v: np.ndarray) -> bool:
    """Whether the 1-D contiguous ``v`` holds no NaN or Inf: one compiled pass, on Numba's
    threads from :data:`FINITE_THREADED` values."""
    return bool(_all_finite_blocks(v) if v.shape[0] >= FINITE_THREADED else _all_finite(v))


def require_finite(arr: np.ndarray, name: str,
                   fix: str = "clean the input, or pass check_finite=False to skip this check"
                   ) -> None:
    """Raise ``ValueError`` if ``arr`` (C-contiguous) holds NaN or Inf (pass
    ``check_finite=False`` to skip).

    The test is one compiled pass (:func:`_all_finite`, 2.3× faster than NumPy's ``isfinite`` or
    ``sum`` on 10⁵ values); only a failing array pays for the element-wise scan that locates
    the first bad value for the message.
    """
    if arr.size and not all_finite(arr.reshape(-1)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = tuple(int(v) for v in bad)
        raise ValueError(
            f"{name}: contains NaN or Inf (first at index {where}: {arr[where]}); {fix}"
        )


def to_dtype(arr: np.ndarray, dtype: np.dtype, name: str, check_finite: bool = True,
             fix: str = "clean the input, or pass check_finite=False to skip this check"
             ) -> np.ndarray:
    """``arr`` converted to ``dtype``, with the NaN/Inf check made *after* the conversion: a
    finite float64 value beyond float32's range (3.4e38) would otherwise become Inf unseen."""
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, by name
        out = arr.astype(dtype, copy=False)
    if not check_finite:
        return out
    if out is not arr and out.size and not all_finite(out.reshape(-1)):
        bad = np.argwhere(~np.isfinite(out))[0]
        where = tuple(int(v) for v in bad)
        if np.isfinite(arr[where]):
            raise ValueError(
                f"{name}: the value {float(arr[where]):g} at index {where} overflows "
                f"{np.dtype(dtype)} "
                f"(largest finite value {np.finfo(dtype).max:.3g}); rescale the data or use "
                "float64"
            )
    require_finite(out, name, fix)
    return out


def float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """``dtype`` as float32 or float64 (any spelling NumPy understands), else a ``TypeError``."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in FLOAT_DTYPES:  # (a NumPy dtype compares equal to None)
        raise TypeError(f"{name}: expected 'float32' or 'float64' (the dtypes loopprop's kernels "
                        f"compute in), got {dtype!r}")
    return dt


def same_dtype(**arrays: np.ndarray) -> np.dtype:
    """All arrays of one call share a dtype; return it or raise ``TypeError`` naming the two."""
    items = list(arrays.items())
    first_name, first = items[0]
    for name, arr in items[1:]:
        if arr.dtype != first.dtype:
            raise TypeError(
                f"{name} is {arr.dtype} but {first_name} is {first.dtype}: all arrays of one call "
                f"must share a dtype; convert with {name}.astype({first_name}.dtype)"
            )
    return first.dtype


def require_shape(arr: np.ndarray, name: str, shape: tuple[int, ...], why: str = "") -> None:
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name}: expected shape {tuple(shape)}, got {arr.shape}" + (f" ({why})" if why else "")
        )


def require_nonempty_batch(arr: np.ndarray, name: str) -> None:
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise ValueError(
            f"{name}: the batch is empty (shape {arr.shape}); a loss is a mean over the batch "
            "and needs at least one example (one column)"
        )


def _number(value: Any, name: str) -> float:
    """``float(value)`` for a real number; booleans, strings, complex numbers and arrays of
    more than one value are refused with a ``TypeError`` naming the argument."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.iscomplexobj(value):
        raise TypeError(f"{name}: expected a real number, got {_describe(value)}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a real number, got {_describe(value)}") from None


def check_lr(lr: Any, name: str = "lr") -> float:
    """A learning rate is a finite, non-negative number."""
    value = _number(lr, name)
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name}: expected a finite, non-negative learning rate, got {lr!r}; "
            "typical values are 1e-3 to 0.5"
        )
    return value


def finite_float(value: Any, name: str, example: str = "") -> float:
    """A finite Python float, or a TypeError/ValueError naming the argument."""
    f = _number(value, name)
    if not math.isfinite(f):
        raise ValueError(f"{name}: expected a finite number{example}, got {value!r}")
    return f


def check_choice(value: Any, name: str, choices: dict[str, Any] | tuple[str, ...]) -> str:
    """``value`` if it is one of the names in ``choices``; otherwise a ``ValueError`` (a
    ``TypeError`` for a non-string, e.g. arguments passed in the wrong order) listing them."""
    valid = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of the names {', '.join(valid)}, got "
                        f"{_describe(value)}; check the order of the arguments")
    if value not in valid:
        raise ValueError(f"{name}: unknown value {value!r}; valid names are {', '.join(valid)}")
    return value


def check_int(value: Any, name: str, minimum: int, what: str = "integer") -> int:
    """An ``int`` (not a bool, not a float) that is at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a {what}, got {_describe(value)}")
    if value < minimum:
        raise ValueError(f"{name}: expected a {what} (≥ {minimum}), got {value!r}")
    return int(value)


def stream_seed(seed: int, bits: int = 63) -> int:
    """A non-negative seed as an integer below ``2**bits``, for compiled code (which holds 64-bit
    integers): the seed itself when it fits (the same streams as before), else 64 bits of a
    BLAKE2 hash of its decimal digits cut to ``bits``. Any Python integer seed then works."""
    if seed < 1 << bits:
        return seed
    import hashlib

    digest = hashlib.blake2b(str(seed).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - bits)


def check_positive_int(value: Any, name: str) -> int:
    return check_int(value, name, 1, "positive integer")


def check_fraction(value: Any, name: str, lo: float, hi: float, *, lo_open: bool = False,
                   hi_open: bool = True, example: str = "") -> float:
    """A finite number in the interval from ``lo`` to ``hi`` (ends open or closed as asked)."""
    f = finite_float(value, name, example)
    below = f <= lo if lo_open else f < lo
    above = f >= hi if hi_open else f > hi
    if below or above:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name}: expected a number in {interval}{example}, got {value!r}")
    return f


# -- targets: the same checks for the loss functions and for Network -------------------------


def targets_like(Y: Any, name: str, shape: tuple[int, int], dtype: np.dtype, ref_name: str,
                 check_finite: bool = True) -> np.ndarray:
    """Float targets of exactly ``shape`` (that of ``ref_name``), as ``dtype``.

    Integer and boolean targets are exact in floating point and are converted; a 1-D target for
    one output row and a transposed target each get a hint.
    """
    Y = np.asarray(Y)
    if Y.dtype.kind in "iub":
        Y = Y.astype(dtype)
    Y = as_float_array(Y, name, (1, 2), check_finite=False)
    if Y.shape != tuple(shape):
        hint = ""
        if Y.ndim == 1 and shape[0] == 1 and Y.shape[0] == shape[1]:
            hint = f"; use {name}.reshape(1, -1)"
        elif Y.ndim == 2 and Y.shape == tuple(shape)[::-1]:
            hint = f"; {name} looks transposed (examples are columns): pass {name}.T"
        raise ValueError(
            f"{name}: expected shape {tuple(shape)} (the shape of {ref_name}), got {Y.shape}{hint}"
        )
    return to_dtype(Y, dtype, name, check_finite)


def class_targets(Y: Any, name: str, shape: tuple[int, int], dtype: np.dtype, ref_name: str,
                  check_finite: bool = True) -> tuple[np.ndarray, bool]:
    """Integer labels ``(m,)`` in ``[0, c)`` or one-hot ``(c, m)`` columns that are probability
    distributions, for ``c, m = shape``. Returns ``(targets, is_labels)``."""
    c, m = shape
    Y = np.asarray(Y)
    if Y.ndim == 1:
        if Y.dtype.kind not in "iu":
            raise TypeError(
                f"{name}: 1-D targets are class labels and must be integers, got dtype "
                f"{Y.dtype}; use {name}.astype(np.int64), or pass one-hot targets of shape "
                f"({c}, m)"
            )
        if Y.shape[0] != m:
            raise ValueError(f"{name}: expected {m} labels (one per column of {ref_name}, "
                             f"shape {tuple(shape)}), got {Y.shape[0]}")
        if m and (Y.min() < 0 or Y.max() >= c):
            bad = Y[(Y < 0) | (Y >= c)][0]
            raise ValueError(f"{name}: labels must lie in [0, {c}) for {ref_name} with {c} rows "
                             f"(classes), found {bad}")
        return np.ascontiguousarray(Y, dtype=np.int64), True
    Y = targets_like(Y, name, shape, dtype, ref_name, check_finite)
    if Y.size and (Y.min() < 0 or not np.allclose(Y.sum(axis=0), 1.0, atol=1e-4)):
        raise ValueError(
            f"{name}: each column of one-hot targets must be a probability distribution "
            "(non-negative, summing to 1); for class indices pass integer labels of shape (m,)"
        )
    return Y, False


def binary_targets(Y: Any, name: str, shape: tuple[int, int], dtype: np.dtype, ref_name: str,
                   check_finite: bool = True) -> np.ndarray:
    """Targets of ``shape`` with values in [0, 1] (binary cross-entropy)."""
    Y = targets_like(Y, name, shape, dtype, ref_name, check_finite)
    if Y.size and (Y.min() < 0 or Y.max() > 1):
        raise ValueError(f"{name}: binary cross-entropy targets must lie in [0, 1]")
    return Y
