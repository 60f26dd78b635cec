"""Every ready-made network, and the training defaults that suit it on each dataset: the MLP
(dense layers), the CNN (a small one for 8×8 digits, a LeNet-sized one for 28×28 images), the
residual CNN with batch norm, and the GPT (GPT-2's pre-norm block stack, as llm.c's
``train_gpt2.c`` and nanoGPT write it). ``loopprop train --model NAME``, ``loopprop compile``
and the benchmarks build their networks here."""

from __future__ import annotations

import numpy as np

from . import _checks
from .layers import (GRU, LSTM, RNN, BatchNorm, CausalSelfAttention, Conv2d, Dense, Dropout,
                     Embedding, Flatten, GELUTanh, LayerNorm, MaxPool2d, PositionEmbedding, ReLU,
                     Residual, Softmax, TiedOutput)
from .network import Network

#: the default learning rate of Adam and AdamW, whatever the model
ADAM_LR = 0.001
#: ``mlp``'s training defaults by task: what trains each dataset well out of the box
MLP_DEFAULTS = {
    # digits: 97.2 % test accuracy with these (97.2–97.8 % over seeds; the README's first run)
    "classification": {"hidden": [512], "optimizer": "momentum", "lr": 0.02, "epochs": 40},
    # diabetes: a small network and plain SGD; a wide one with momentum overfits or diverges
    "regression": {"hidden": [64], "optimizer": "sgd", "lr": 0.01, "epochs": 40},
}
#: ``cnn``'s training defaults per image dataset. digits: AdamW (λ 0.1) with a cosine schedule
#: over 100 epochs held ≥ 98 % over seeds 0–9 (98.05–98.61 %), where Adam at a constant 0.002
#: for 50 epochs gave 97.49–98.05 %
CNN_DEFAULTS = {
    "digits": {"optimizer": "adamw", "lr": 0.004, "epochs": 100, "batch_size": 32,
               "schedule": "cosine", "weight_decay": 0.1},
    "mnist5k": {"optimizer": "adam", "lr": 0.001, "epochs": 10, "batch_size": 64,
                "schedule": "constant", "weight_decay": None},
}
#: ``resnet``'s training defaults per image dataset (AdamW's default weight decay, 0.01)
RESNET_DEFAULTS = {
    "digits": {"optimizer": "adamw", "lr": 0.005, "epochs": 30, "batch_size": 32,
               "schedule": "cosine", "weight_decay": None},
    "mnist5k": {"optimizer": "adamw", "lr": 0.005, "epochs": 5, "batch_size": 32,
                "schedule": "cosine", "weight_decay": None},
}
#: ``gpt``'s size and data defaults (``loopprop train --model gpt``'s options)
GPT_SIZES = {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128, "steps_per_epoch": 200,
             "val_tokens": 65536}
#: ``gpt``'s training defaults (AdamW, β₂ 0.95; the optimizer is AdamW)
GPT_DEFAULTS = {"lr": 2e-3, "epochs": 5, "batch_size": 16, "weight_decay": 0.1,
                "warmup_epochs": 0.5, "clip_grad_norm": 1.0}


def mlp(n_in: int, hidden: list[int], n_out: int, *, activation: str = "relu",
        loss: str = "cross_entropy", dtype: str = "float64", seed: int = 0) -> Network:
    """Dense layers ``n_in → hidden… → n_out``: ``activation`` after every hidden layer, the
    output activation the loss pairs with (softmax for cross-entropy, sigmoid for binary
    cross-entropy, identity for mse), He initialization for ReLU-like activations and Xavier
    for the others (``loopprop train --model mlp``)."""
    output = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(loss, "identity")
    hidden = list(hidden)
    init = "xavier" if activation in ("tanh", "sigmoid", "identity") else "he"
    return Network([n_in, *hidden, n_out], [activation] * len(hidden) + [output], loss,
                   dtype=dtype, seed=seed, init=init)


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


#: the cells of :func:`char_rnn` (``loopprop train --model lstm|gru|rnn``)
CELLS = {"lstm": LSTM, "gru": GRU, "rnn": RNN}
#: ``char_rnn``'s size and data defaults (``loopprop train --model lstm``'s options): the
#: window is the truncated backpropagation's length
CHAR_RNN_SIZES = {"block_size": 64, "n_layer": 2, "hidden": 256, "n_embd": 64,
                  "steps_per_epoch": 200, "val_tokens": 65536}
#: ``char_rnn``'s training defaults (AdamW with clipping, consecutive windows of the batch's
#: streams carrying their states: truncated backpropagation through time)
CHAR_RNN_DEFAULTS = {"lr": 2e-3, "epochs": 5, "batch_size": 32, "weight_decay": 0.01,
                     "warmup_epochs": 0.0, "clip_grad_norm": 1.0}


def char_rnn_layers(vocab_size: int, hidden: int = 256, n_layer: int = 2, *,
                    cell: str = "lstm", n_embd: int | None = None) -> list:
    """A character-level recurrent language model: a token embedding of ``n_embd`` features
    (``hidden`` when ``None``), ``n_layer`` stacked ``cell`` layers (``"lstm"``, ``"gru"`` or
    ``"rnn"``: :data:`CELLS`) of ``hidden`` units, a per-position ``Dense(vocab_size)`` and the
    softmax."""
    vocab_size = _checks.check_positive_int(vocab_size, "vocab_size")
    hidden = _checks.check_positive_int(hidden, "hidden")
    n_layer = _checks.check_positive_int(n_layer, "n_layer")
    _checks.check_choice(cell, "cell", tuple(CELLS))
    n_embd = hidden if n_embd is None else _checks.check_positive_int(n_embd, "n_embd")
    return [Embedding(vocab_size, n_embd), *(CELLS[cell](hidden) for _ in range(n_layer)),
            Dense(vocab_size), Softmax()]


def char_rnn(vocab_size: int, hidden: int = 256, n_layer: int = 2, *, cell: str = "lstm",
             block_size: int = 64, n_embd: int | None = None, dtype: str = "float32",
             seed: int = 0) -> Network:
    """A character-level recurrent language model (:func:`char_rnn_layers`) on windows of
    ``block_size`` tokens: input ids ``(block_size, m)``, output the next token's distribution
    at every position ``(vocab_size, block_size, m)``, trained with cross-entropy on the
    inputs shifted by one (``fit_text``; ``windows="consecutive"`` carries the states from
    window to window). Sampling carries the state from token to token, with no limit on the
    context (:func:`loopprop.generate.sample`). Initialized as PyTorch's layers: every
    recurrent array ``U(−1/√hidden, 1/√hidden)``, the embedding ``N(0, 0.02²)``, the output
    layer Xavier's."""
    block_size = _checks.check_positive_int(block_size, "block_size")
    layers = char_rnn_layers(vocab_size, hidden, n_layer, cell=cell, n_embd=n_embd)
    return Network(layers, loss="cross_entropy", input_shape=(block_size,), dtype=dtype,
                   seed=seed, init="xavier")


def cnn_layers(dataset: str = "digits", *, dropout: float = 0.25) -> list:
    """The CNN of ``loopprop train --model cnn``: for 8×8 ``"digits"`` two 3×3 convolutions
    with padding (16 and 32 channels), each followed by ReLU and 2×2 max pooling, then
    ``Dropout(dropout)`` (left out at 0) and the dense output; for 28×28 images
    (``"mnist5k"``) the LeNet-sized CNN (:func:`lenet_layers`)."""
    if dataset != "digits":
        return lenet_layers()
    drop = [Dropout(dropout)] if dropout else []
    return [Conv2d(16, 3, padding=1), ReLU(), MaxPool2d(2), Conv2d(32, 3, padding=1), ReLU(),
            MaxPool2d(2), Flatten(), *drop, Dense(10), Softmax()]


def lenet_layers() -> list:
    """A LeNet-sized CNN for 28×28 images: two 5×5 convolutions (16 and 32 channels), each
    followed by ReLU and 2×2 max pooling, then dense 128, ReLU and the dense output."""
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


__all__ = ["ADAM_LR", "CELLS", "CHAR_RNN_DEFAULTS", "CHAR_RNN_SIZES", "CNN_DEFAULTS",
           "GPT_DEFAULTS", "GPT_SIZES", "MLP_DEFAULTS",
           "RESNET_DEFAULTS", "cnn_layers", "gpt", "gpt_layers", "lenet_layers", "mlp",
           "resnet_layers"]
