"""Layer kinds: each describes its hyperparameters, shapes, parameters, caches and workspaces;
the kernels of :mod:`loopprop.kernels` compute. Build a network from a list of them::

    from loopprop.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU, Softmax
    net = Network([Conv2d(8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Dense(10),
                   Softmax()], loss="cross_entropy", input_shape=(1, 8, 8))
"""

from .base import Layer
from .conv import AvgPool2d, Conv2d, MaxPool2d
from .core import (ACTIVATIONS, GELU, Activation, Dense, Dropout, Flatten, GELUTanh, Identity,
                   LeakyReLU, ReLU, Sigmoid, Softmax, Tanh)
from .norm import BatchNorm, LayerNorm, Residual
from .recurrent import GRU, LSTM, RNN
from .sequence import CausalSelfAttention, Embedding, PositionEmbedding, TiedOutput



def __getattr__(name: str):
    """``KINDS``: every layer class by name (save/load), from the registry, which imports the
    row functions -- and they import the layer classes: loaded on first use, not here."""
    if name == "KINDS":
        from .registry import CLASSES

        return CLASSES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ACTIVATIONS", "Activation", "AvgPool2d", "BatchNorm", "CausalSelfAttention",
           "Conv2d", "Dense", "Dropout", "Embedding", "Flatten", "GELU", "GELUTanh", "GRU",
           "Identity", "KINDS", "LSTM", "Layer", "LayerNorm", "LeakyReLU", "MaxPool2d",
           "PositionEmbedding", "RNN", "ReLU", "Residual", "Sigmoid", "Softmax", "Tanh",
           "TiedOutput"]
