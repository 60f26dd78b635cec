"""Ready-made networks built from :mod:`loopprop.layers`: the GPT (GPT-2's pre-norm block
stack, as llm.c's ``train_gpt2.c`` and nanoGPT write it) and the layers of the command line's
CNN and residual CNN."""

from __future__ import annotations

import numpy as np

from . import _checks
from .layers import (BatchNorm, CausalSelfAttention, Conv2d, Dense, Dropout, Embedding, Flatten,
                     GELUTanh, LayerNorm, MaxPool2d, PositionEmbedding, ReLU, Residual, Softmax,
                     TiedOutput)
from .network import Network


def gpt_layers(vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int,
               tie_weights: bool = True) -> list:
    """GPT-2's layers: token and position embeddings, ``n_layer`` pre-norm blocks
    ``x + attn(LN(x))``, ``x + MLP(LN(x))`` (MLP: ``Dense(4·n_embd)``, ``GELUTanh``,
    ``Dense(n_embd)``), a final ``LayerNorm``, the output layer (tied to the token embedding,
    or a ``Dense(vocab_size)``) and the softmax."""
    vocab_size = _checks.check_positive_int(vocab_size, "vocab_size")
    block_size = _checks.check_positive_int(block_size, "block_size")
    n_layer = _checks.check_positive_int(n_layer, "n_layer")
    n_head = _checks.check_positive_int(n_head, "n_head")
    n_embd = _checks.check_positive_int(n_embd, "n_embd")
    if n_embd % n_head:
        raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}: each head takes "
                         "n_embd / n_head features; pick n_head among the divisors of n_embd")
    if not isinstance(tie_weights, bool):
        raise TypeError(f"tie_weights: expected True or False, got "
                        f"{_checks._describe(tie_weights)}")
    layers: list = [Embedding(vocab_size, n_embd), PositionEmbedding(block_size)]
    for _ in range(n_layer):
        layers.append(Residual([LayerNorm(), CausalSelfAttention(n_head)]))
        layers.append(Residual([LayerNorm(), Dense(4 * n_embd), GELUTanh(), Dense(n_embd)]))
    layers.append(LayerNorm())
    layers.append(TiedOutput(vocab_size) if tie_weights else Dense(vocab_size))
    layers.append(Softmax())
    return layers


def gpt(vocab_size: int, block_size: int, n_layer: int = 4, n_head: int = 4,
        n_embd: int = 128, *, tie_weights: bool = True, dtype: str = "float32",
        seed: int = 0) -> Network:
    """A GPT language model: input token ids ``(block_size, m)``, output the next token's
    distribution at every position ``(vocab_size, block_size, m)``, trained with
    cross-entropy on labels ``(block_size, m)`` (the inputs shifted by one).

    Initialized as GPT-2: every weight ``N(0, 0.02²)``, the two projections that write into
    the residual stream (attention's ``W_o``, the MLP's second ``Dense``) ``N(0, (0.02/√(2·
    n_layer))²)``, biases 0, position embeddings ``N(0, 0.01²)``, layer norms ``γ = 1, β = 0``.
    """
    layers = gpt_layers(vocab_size, block_size, n_layer, n_head, n_embd, tie_weights)
    net = Network(layers, loss="cross_entropy", input_shape=(block_size,), dtype=dtype,
                  seed=seed)
    rng = np.random.default_rng([seed, 2])
    proj_std = 0.02 / np.sqrt(2 * n_layer)
    for layer in net.rows:
        if isinstance(layer, Dense):
            std = proj_std if layer.n_out == n_embd and layer.n_in == 4 * n_embd else 0.02
            layer.W[...] = rng.standard_normal(layer.W.shape) * std
            layer.b[...] = 0.0
        elif isinstance(layer, CausalSelfAttention):
            layer.W_o[...] = rng.standard_normal(layer.W_o.shape) * proj_std
    return net


def cnn_layers(dataset: str):
    """The CNN of ``loopprop train --model cnn``: a small one for 8×8 digits (two 3×3
    convolutions with padding, each followed by ReLU and 2×2 max pooling), a LeNet-sized one
    for 28×28 mnist5k (two 5×5 convolutions, 16 and 32 channels, then dense 128)."""
    if dataset == "digits":
        return [Conv2d(16, 3, padding=1), ReLU(), MaxPool2d(2), Conv2d(32, 3, padding=1), ReLU(),
                MaxPool2d(2), Flatten(), Dropout(0.25), Dense(10), Softmax()]
    return [Conv2d(16, 5), ReLU(), MaxPool2d(2), Conv2d(32, 5), ReLU(), MaxPool2d(2), Flatten(),
            Dense(128), ReLU(), Dense(10), Softmax()]


def resnet_layers(dataset: str):
    """The residual CNN of ``loopprop train --model resnet``: convolutions with batch norm and
    residual blocks ``x + BN(conv(ReLU(BN(conv(x)))))`` (He et al.'s basic block), sized for
    8×8 digits (16 channels, a block after each of two stages) or 28×28 mnist5k (a 5×5 stem of
    16 channels, then 32)."""

    def block(c):
        return [Residual([Conv2d(c, 3, padding=1), BatchNorm(), ReLU(), Conv2d(c, 3, padding=1),
                          BatchNorm()]), ReLU()]

    if dataset == "digits":
        return [Conv2d(16, 3, padding=1), BatchNorm(), ReLU(), *block(16), MaxPool2d(2),
                *block(16), MaxPool2d(2), Flatten(), Dense(10), Softmax()]
    return [Conv2d(16, 5), BatchNorm(), ReLU(), MaxPool2d(2), *block(16), Conv2d(32, 5),
            BatchNorm(), ReLU(), MaxPool2d(2), *block(32), Flatten(), Dense(10), Softmax()]


__all__ = ["cnn_layers", "gpt", "gpt_layers", "resnet_layers"]
