"""Why batch norm lets a deep sigmoid network train: the network of
``examples/vanishing_gradients.py`` (six sigmoid layers of 32 on digits) with and without a
``BatchNorm`` before every sigmoid, and the gradient norm of every parameter per epoch.

Without it, the backward signal is multiplied by σ'(z) ≤ 0.25 at every layer
(docs/formulas.md §8) and the first layer's gradient is hundreds of times smaller than the
last one's. Batch norm re-centres and re-scales each layer's pre-activations to mean 0 and
variance γ² (docs/formulas.md, "Batch normalization"), so every sigmoid works where its slope is
largest (σ'(0) = 0.25, not σ'(±4) ≈ 0.018); its backward pass multiplies the signal by
``γ·r = γ/σ`` as well, which undoes the shrinking of the layers below. Same data, same
optimizer, same number of epochs.

Run (needs ``pip install "loopprop[data]"``)::

    python examples/batchnorm_deep_sigmoid.py

It prints, for both networks, the mean gradient norm of the first and the last weight matrix
(from ``history["grad_norms"]``), their ratio and the test accuracy.
"""

from __future__ import annotations

import numpy as np

from loopprop import Network, datasets
from loopprop.layers import BatchNorm, Dense, Sigmoid, Softmax

DEPTH, WIDTH = 6, 32


def build(batchnorm: bool, seed: int = 0) -> Network:
    """64 → 32 ×6 (sigmoid, optionally batch norm before it) → 10 softmax."""
    layers = []
    for _ in range(DEPTH):
        layers += [Dense(WIDTH), BatchNorm(), Sigmoid()] if batchnorm else [Dense(WIDTH),
                                                                          Sigmoid()]
    return Network(layers + [Dense(10), Softmax()], loss="cross_entropy", input_shape=(64,),
                   seed=seed, init="xavier")


def train(batchnorm: bool, epochs: int = 15, seed: int = 0):
    """Train on digits with plain SGD (lr 0.05, batch 32); return (network, history, test
    accuracy)."""
    Xtr, ytr, Xte, yte = datasets.load("digits")
    net = build(batchnorm, seed)
    hist = net.fit(Xtr, ytr, epochs=epochs, batch_size=32, lr=0.05, optimizer="sgd",
                   progress=False, seed=seed)
    return net, hist, net.evaluate(Xte, yte)["accuracy"]


def first_and_last(hist) -> tuple[float, float]:
    """Mean over epochs of ‖dW‖ of the first and of the last dense layer."""
    dense = [name for name in hist["grad_norms"] if name.endswith(":Dense.W")]
    return (float(np.mean(hist["grad_norms"][dense[0]])),
            float(np.mean(hist["grad_norms"][dense[-1]])))


def main(epochs: int = 15) -> dict[str, tuple[float, float, float]]:
    out = {}
    for bn in (False, True):
        _, hist, acc = train(bn, epochs)
        first, last = first_and_last(hist)
        name = "sigmoid + batch norm" if bn else "sigmoid"
        out[name] = (first, last, acc)
        print(f"{name:21s} mean ‖dW^(1)‖ = {first:.2e}, ‖dW^(7)‖ = {last:.2e}, "
              f"ratio last/first = {last / first:8.1f}, test accuracy {100 * acc:.1f}%")
    return out


if __name__ == "__main__":
    main()
