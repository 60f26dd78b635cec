"""The registry of layer kinds: every kind declared once, read by everything else.

An entry names a kind's code (its row of the compiled table), its layer class (subclasses
share the kind: every activation is an :class:`~loopprop.layers.Activation`), its forward and
backward row functions (:mod:`loopprop.rows`), the decode row of a kind that sees positions
one at a time (:mod:`loopprop.generate`), whether its backward row can *write* its input's
gradient instead of adding into zeros, the sum that explains one of its parameters' gradients
(:mod:`loopprop.explain_layers`) and its section of ``docs/formulas.md``.

The plan (:mod:`loopprop.plan`) takes each row's code and ``writes_dx`` from here, the dispatch
(:mod:`loopprop.dispatch`) compiles the rows of the kinds a network holds, ``explain`` finds
the sums here, and save/load knows every layer class by name (:data:`CLASSES`). Adding a kind
is its kernels, its two row functions, its layer class and one entry below;
``tests/test_registry.py`` checks that every entry is complete. A kind defined outside the
package enters through :func:`register` (``tests/test_house.py`` trains one). Read
``REGISTRY`` and ``N_CODES`` as attributes of this module (``registry.REGISTRY``): they grow
when a kind is registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import explain_layers as _ex
from ..rows import conv as _conv
from ..rows import dense as _dense
from ..rows import elementwise as _elem
from ..rows import norm as _norm
from ..rows import recurrent as _rec
from ..rows import sequence as _seq
from ..rows.common import none_row
from .base import Layer
from .conv import AvgPool2d, Conv2d, MaxPool2d
from .core import (Activation, Dense, Dropout, Flatten, GELU, GELUTanh, Identity, LeakyReLU,
                   ReLU, Sigmoid, Softmax, Tanh)
from .norm import BatchNorm, LayerNorm, Residual
from .recurrent import GRU, LSTM, RNN
from .sequence import CausalSelfAttention, Embedding, PositionEmbedding, TiedOutput


@dataclass(frozen=True)
class Kind:
    """One layer kind (see the module docstring)."""

    code: int
    layer: type
    forward: Callable
    backward: Callable
    #: ``docs/formulas.md``'s heading of the section that derives this kind's formulas
    formulas: str
    #: the sum explaining one parameter's gradient (kinds that own parameters)
    explain: Callable | None = None
    #: one position with a cache of keys and values (kinds that see positions)
    decode: Callable | None = None
    #: the backward row *writes* its input's gradient when it is the first to reach it
    #: (``Step.fresh``); for the others the pass zeroes the region first
    writes_dx: bool = False

    @property
    def name(self) -> str:
        return self.layer.__name__


#: every kind, in code order (code 0 is no kind: the plan's rows start at 1)
REGISTRY: tuple[Kind, ...] = (
    Kind(1, Dense, _dense.dense_forward, _dense.dense_backward,
         "§5–§7 A dense layer", explain=_ex._dense),
    Kind(2, Activation, _elem.activation_forward, _elem.activation_backward,
         "§8 Activations", writes_dx=True),
    Kind(3, Conv2d, _conv.conv2d_forward, _conv.conv2d_backward,
         "Convolution", explain=_ex._conv2d),
    Kind(4, MaxPool2d, _conv.maxpool2d_forward, _conv.maxpool2d_backward, "Pooling"),
    Kind(5, AvgPool2d, _conv.avgpool2d_forward, _conv.avgpool2d_backward, "Pooling"),
    Kind(6, Flatten, none_row, none_row, "Convolution"),  # a view: nothing to compute
    Kind(7, Dropout, _elem.dropout_forward, _elem.dropout_backward, "Dropout"),
    Kind(8, BatchNorm, _norm.batchnorm_forward, _norm.batchnorm_backward,
         "Batch normalization", explain=_ex._batchnorm),
    Kind(9, LayerNorm, _norm.layernorm_forward, _norm.layernorm_backward,
         "Layer normalization", explain=_ex._layernorm, writes_dx=True),
    Kind(10, Residual, _elem.residual_forward, _elem.residual_backward,
         "Residual connections"),
    Kind(11, Embedding, _seq.embedding_forward, _seq.embedding_backward,
         "Token and position embeddings", explain=_ex._embedding),
    Kind(12, PositionEmbedding, _seq.position_forward, _seq.position_backward,
         "Token and position embeddings", explain=_ex._position,
         decode=_seq.position_decode),
    Kind(13, CausalSelfAttention, _seq.attention_forward, _seq.attention_backward,
         "The attention layer", explain=_ex._attention,
         decode=_seq.attention_decode),
    Kind(14, TiedOutput, _dense.tied_output_forward, _dense.tied_output_backward,
         "The output layer tied to the embedding, and the loss at every position"),
    Kind(15, RNN, _rec.rnn_forward, _rec.rnn_backward, "Recurrent networks",
         explain=_ex._recurrent, decode=_rec.rnn_decode, writes_dx=True),
    Kind(16, LSTM, _rec.lstm_forward, _rec.lstm_backward, "The LSTM",
         explain=_ex._recurrent, decode=_rec.lstm_decode, writes_dx=True),
    Kind(17, GRU, _rec.gru_forward, _rec.gru_backward, "The GRU",
         explain=_ex._recurrent, decode=_rec.gru_decode, writes_dx=True),
)

#: the table's length: one entry per code, code 0 included
N_CODES = max(k.code for k in REGISTRY) + 1

#: every layer class a model file may name (save/load), containers included
CLASSES: dict[str, type] = {cls.__name__: cls for cls in (
    Dense, Activation, Identity, Sigmoid, Tanh, ReLU, LeakyReLU, GELU, GELUTanh, Softmax, Flatten,
    Dropout, Conv2d, MaxPool2d, AvgPool2d, BatchNorm, LayerNorm, Residual, Embedding,
    PositionEmbedding, CausalSelfAttention, TiedOutput, RNN, LSTM, GRU)}

_BY_CLASS = {k.layer: k for k in REGISTRY}
#: the kinds defined here; :func:`register` appends others after them
_BUILT_IN = len(REGISTRY)


def kind_of(layer: Layer) -> Kind:
    """The entry of ``layer``'s kind: its class's, or the nearest registered base class's."""
    for cls in type(layer).__mro__:
        entry = _BY_CLASS.get(cls)
        if entry is not None:
            return entry
    raise TypeError(f"{type(layer).__name__} is not a registered layer kind: add an entry for "
                    "it to loopprop/layers/registry.py (its code, class and row functions)")


def register(kind: Kind) -> Kind:
    """Add a layer kind defined outside this file (a plugin, an experiment, a test's toy kind):
    from then on networks may hold ``kind.layer``, save/load knows it by its class name and the
    dispatch compiles its rows when a network first uses it. The code must be unused and the
    class unregistered; returns ``kind``. :func:`unregister` takes it out again."""
    global REGISTRY, N_CODES
    if not isinstance(kind, Kind):
        raise TypeError(f"kind: expected a registry.Kind, got {type(kind).__name__}")
    if not (isinstance(kind.code, int) and kind.code >= 1):
        raise ValueError(f"kind.code: expected an integer ≥ 1, got {kind.code!r}")
    taken = next((k for k in REGISTRY if k.code == kind.code), None)
    if taken is not None:
        raise ValueError(f"kind.code: {kind.code} is {taken.name}'s; the next free code is "
                         f"{N_CODES}")
    if not (isinstance(kind.layer, type) and issubclass(kind.layer, Layer)):
        raise TypeError(f"kind.layer: expected a subclass of loopprop.layers.Layer, got "
                        f"{kind.layer!r}")
    if kind.layer in _BY_CLASS or kind.layer.__name__ in CLASSES:
        raise ValueError(f"kind.layer: {kind.layer.__name__} is registered already")
    if not (callable(kind.forward) and callable(kind.backward)):
        raise TypeError("kind.forward, kind.backward: expected the two row functions "
                        "row(r, plan, fplan, b, s)")
    REGISTRY = REGISTRY + (kind,)
    N_CODES = max(N_CODES, kind.code + 1)
    CLASSES[kind.layer.__name__] = kind.layer
    _BY_CLASS[kind.layer] = kind
    return kind


def unregister(kind: Kind) -> None:
    """Take a kind added by :func:`register` out of the registry again."""
    global REGISTRY, N_CODES
    if kind not in REGISTRY[_BUILT_IN:]:
        raise ValueError(f"{kind.name} was not added by register()")
    REGISTRY = tuple(k for k in REGISTRY if k is not kind)
    N_CODES = max(k.code for k in REGISTRY) + 1
    del CLASSES[kind.layer.__name__]
    del _BY_CLASS[kind.layer]


def by_code(code: int) -> Kind:
    """The entry of kind code ``code``."""
    for k in REGISTRY:
        if k.code == code:
            return k
    raise KeyError(code)
