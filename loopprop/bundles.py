"""The named structures compiled code passes around, instead of dozens of loose arguments.

A plan row's forward and backward functions (:mod:`loopprop.rows`) all share one signature,
``row(r, plan, fplan, b, s)``: the row number, the plan (:mod:`loopprop.plan`), the flat buffers
``b`` (:class:`Flat`) and the settings of this pass ``s`` (:class:`Step`). The epoch calls them
through a :class:`Table` of compiled functions' addresses indexed by kind code
(:mod:`loopprop.dispatch`).
The epoch itself takes the optimizer (:class:`Optim`), the loss's buffers (:class:`LossBufs`),
the norms it accumulates (:class:`Norms`) and the run's settings (:class:`Run`).

Numba types a ``NamedTuple`` by its fields' types, so one compiled function serves every
network of one dtype: the buffers' sizes live in the arrays, not in the types. The classes
live in an importable module (not ``__main__``): a cached function's signature refers to them
by name, and Numba only finds its cache again when the name resolves to the same class.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np
from numba.core.typing.typeof import _typeof_tuple, typeof_impl


class Flat(NamedTuple):
    """The flat buffers every row reads and writes (the offsets into them are the plan's):
    the parameters ``theta`` and their gradients ``grad``, the persistent ``state``, the
    activations ``acts`` and their gradients ``dacts``, the caches ``cache`` / ``icache``
    (int32), the per-example workspace ``work`` and the fixed one ``fwork``
    (:class:`loopprop.plan.Buffers` says what each holds)."""

    theta: np.ndarray
    grad: np.ndarray
    state: np.ndarray
    acts: np.ndarray
    dacts: np.ndarray
    cache: np.ndarray
    icache: np.ndarray
    work: np.ndarray
    fwork: np.ndarray


class Step(NamedTuple):
    """What a row needs to know of the pass it runs in.

    ``mb`` examples in the batch; ``training``: dropout on and batch norm on the batch's
    statistics (else evaluation mode); ``seed``: the row's dropout seed; ``fresh`` (backward
    only): no row has added into this row's input gradient yet in this pass, so a kernel that
    can *write* it does (``loopprop.train._backward_batch`` zeroes it first for the others);
    ``threads``: how many threads a parallel kernel may use; ``carry`` (forward only): this
    pass continues the sequences of the previous pass on the same buffers, so a recurrent
    row starts from the states that pass ended with (truncated backpropagation through time)
    instead of zeros; ``col0``, ``cols`` (forward only): these ``mb`` columns are columns
    ``col0 … col0 + mb − 1`` of a batch of ``cols`` (``0`` and ``mb`` but for a data-parallel
    rank's share), so that dropout draws each example the mask one process would draw."""

    mb: int
    training: bool
    seed: int
    fresh: bool
    threads: int
    carry: bool
    col0: int
    cols: int


class Table(NamedTuple):
    """The compiled row functions, by kind code: ``forward[code]`` and ``backward[code]`` hold
    the two addresses of that kind's compiled row function (``(N_CODES, 2)`` int64: its C
    wrapper's and its own; :func:`loopprop.dispatch.row_at` turns them into a function), a kind
    a network lacks a no-op's; ``decode[code]`` runs one position of a language model with a
    cache of keys and values (:mod:`loopprop.generate`) where ``has_decode[code]`` is 1, and
    the forward row runs there otherwise. ``like`` is an empty array of the buffers' dtype: it
    gives the functions' signature."""

    forward: np.ndarray
    backward: np.ndarray
    decode: np.ndarray
    has_decode: np.ndarray
    like: np.ndarray


class Optim(NamedTuple):
    """The optimizer: its code (``loopprop.train.OPTIMIZERS``), its float settings ``hyper``
    (``loopprop.train.LR`` …), its state vectors (momentum's velocity; Adam's moments), flat
    like ``theta``, and ``decay_spans``, the ``(k, 2)`` ``[start, end)`` ranges of ``theta``
    where weight decay applies (sorted, disjoint)."""

    code: int
    hyper: np.ndarray
    opt1: np.ndarray
    opt2: np.ndarray
    decay_spans: np.ndarray


class LossBufs(NamedTuple):
    """The loss (``loopprop.train.LOSS_CODES``) and its buffers: the batch's targets ``Ybuf``
    and labels ``labbuf``, the per-column workspaces ``col1`` (the dtype), ``col2`` (float64)."""

    code: int
    Ybuf: np.ndarray
    labbuf: np.ndarray
    col1: np.ndarray
    col2: np.ndarray


class Data(NamedTuple):
    """The examples and their targets: ``X``, the examples as columns ``(n_0, n)``, or, when
    ``transposed``, one example per row ``(n, n_0)`` (fit's epoch with shuffling: a shuffled
    batch is then gathered as contiguous rows; evaluation always reads columns), ``Y`` (one-hot
    or regression targets, ``(n_L, n)``, or no rows with labels), ``labels`` (``(P, n)`` class
    indices, one per output position, or no rows), the order ``perm`` in which the examples
    are taken, and ``one_hot`` (whether ``Y`` holds the targets of a cross-entropy, else
    ``labels`` do)."""

    X: np.ndarray
    Y: np.ndarray
    labels: np.ndarray
    perm: np.ndarray
    one_hot: bool
    transposed: bool


class Batch(NamedTuple):
    """One training step's settings: ``mb`` examples, their targets ``Y`` (the loss's
    ``(n_L, mb)`` view) or ``labels`` (``P·mb``), ``one_hot`` as :class:`Data`'s, dropout's
    ``seed``, the ``threads``, ``carry``, ``col0`` and ``cols`` (:class:`Step`'s: the batch
    continues the previous batch's sequences; its columns' place in the global batch)."""

    mb: int
    Y: np.ndarray
    labels: np.ndarray
    one_hot: bool
    seed: int
    threads: int
    carry: bool
    col0: int
    cols: int


class Norms(NamedTuple):
    """Per parameter array ``a``: the span ``grad[spans[a, 0] : spans[a, 0] + spans[a, 1]]``,
    and ``total[a]``, where each step adds that span's norm ``‖∂L/∂θ_a‖``."""

    spans: np.ndarray
    total: np.ndarray


class Run(NamedTuple):
    """The settings of one epoch: ``batch_size``; ``shuffle_seed`` (−1: no shuffle) or, for a
    language model, the seed of the windows' random offsets (−1: consecutive windows of
    ``batch_size`` streams, each batch continuing the last: truncated backpropagation through
    time, from window ``first_window`` of the streams); ``dropout_seed``; ``threads``."""

    batch_size: int
    shuffle_seed: int
    dropout_seed: int
    threads: int
    first_window: int


def _key(value):
    """What a value's Numba type depends on, when it is quick to tell (``None``: not quick)."""
    if isinstance(value, np.ndarray):  # the flags as one mask (contiguity, writeable, aligned,
        # and owning its data, which Numba's type ignores: a finer key, never a wrong one);
        # 0.2 µs where the flags one by one took 0.6 (48 keys per fit)
        return (value.dtype, value.ndim, value.flags.num)
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, int):
        return "int" if -(1 << 63) <= value < (1 << 63) else None
    if isinstance(value, float):
        return "float"
    return None


def type_key(value):
    """What ``value``'s Numba type depends on, one level into a tuple (a bundle), when it is
    quick to tell; ``None`` when it is not. Equal keys, equal types."""
    key = _key(value)
    if key is not None or not isinstance(value, tuple):
        return key
    fields = tuple(_key(v) for v in value)
    return None if None in fields else (type(value), fields)


def _typed_once(cls) -> None:
    """Let Numba type a ``cls`` argument from a cache keyed by its fields' dtypes, shapes'
    ranks and flags: typing a named tuple of arrays field by field took 65 µs per call (nine
    arrays) against about 1 µs for an array passed alone, on every call from Python."""
    cache: dict = {}
    #: the last few instances typed, by identity: a bundle that lives through a fit (the flat
    #: buffers, the optimizer, the data) is typed once, not at each epoch (0.5 µs a field)
    seen: dict[int, tuple] = {}

    @typeof_impl.register(cls)
    def _typeof(val, c):
        hit = seen.get(id(val))
        if hit is not None and hit[0] is val:
            return hit[1]
        key = tuple(_key(v) for v in val)
        if None in key:
            return _typeof_tuple(val, c)
        ty = cache.get(key)
        if ty is None:
            ty = cache[key] = _typeof_tuple(val, c)
        if len(seen) >= 16:
            seen.clear()
        seen[id(val)] = (val, ty)  # holds val: its id cannot be reused while it is here
        return ty


for _cls in (Flat, Table, Optim, LossBufs, Data, Norms, Run):
    _typed_once(_cls)


def flat_type(dtype) -> numba.types.Type:
    """The Numba type of a :class:`Flat` of ``dtype`` (float32 or float64)."""
    v = np.zeros(1, dtype)
    return numba.typeof(Flat(v, v, v, v, v, v, np.zeros(1, np.int32), v, v))


def step_type() -> numba.types.Type:
    """The Numba type of a :class:`Step`."""
    return numba.typeof(Step(1, True, 1, True, 1, True, 0, 1))


def row_signature(dtype) -> numba.core.typing.Signature:
    """``none(int64 r, int64[:, ::1] plan, float64[:, ::1] fplan, Flat b, Step s)``: every
    row function's, for buffers of ``dtype``."""
    t = numba.types
    return t.none(t.int64, t.int64[:, ::1], t.float64[:, ::1], flat_type(dtype), step_type())


def decode_signature(dtype) -> numba.core.typing.Signature:
    """A decode row's: a row's, then the cache of keys and values ``kv`` (``dtype``), this
    row's offset in it and the position ``pos``."""
    t = numba.types
    return t.none(t.int64, t.int64[:, ::1], t.float64[:, ::1], flat_type(dtype), step_type(),
                  numba.typeof(np.zeros(1, dtype)), t.int64, t.int64)
