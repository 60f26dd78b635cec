"""The vanishing gradient of guide §8, made visible: the same deep network trained with sigmoid
and with ReLU hidden layers, and the norm of each layer's dW per epoch.

σ'(z) ≤ 0.25, so every sigmoid layer multiplies the backward signal by at most a quarter
(dZ^(l−1) = W^(l)ᵀ dZ^(l) ⊙ σ'(Z^(l−1))): six layers down, the first layer's gradient is orders
of magnitude smaller than the last one's. ReLU's derivative is 1 where a unit is active, and the
signal arrives intact.

Run (needs ``pip install "loopprop[data,plot]"``)::

    python examples/vanishing_gradients.py [out.png]

It prints the mean ‖dW^(1)‖ and ‖dW^(7)‖ over training for both networks and writes the plot
(default ``vanishing_gradients.png``).
"""

from __future__ import annotations

import sys

import numpy as np

from loopprop import Network, datasets

HIDDEN = [32] * 6


def train(activation: str, epochs: int = 15, seed: int = 0):
    """Train 64-32×6-10 on digits; return (history, test accuracy)."""
    Xtr, ytr, Xte, yte = datasets.load("digits")
    init = "xavier" if activation == "sigmoid" else "he"
    net = Network([64, *HIDDEN, 10], [activation] * len(HIDDEN) + ["softmax"], "cross_entropy",
                  seed=seed, init=init)
    hist = net.fit(Xtr, ytr, epochs=epochs, batch_size=32, lr=0.05, optimizer="sgd",
                   progress=False, seed=seed)
    return hist, net.evaluate(Xte, yte)["accuracy"]


def first_layer_ratio(epochs: int = 15) -> float:
    """Mean ‖dW^(1)‖ of the ReLU network divided by the sigmoid network's."""
    relu, _ = train("relu", epochs)
    sig, _ = train("sigmoid", epochs)
    return float(np.mean([g[0] for g in relu["grad_norm"]]) /
                 np.mean([g[0] for g in sig["grad_norm"]]))


def main(path: str = "vanishing_gradients.png") -> None:
    from loopprop.plots import require_matplotlib, plot_grad_norms

    plt = require_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, act in zip(axes, ("sigmoid", "relu")):
        hist, acc = train(act)
        g = np.array(hist["grad_norm"])
        print(f"{act:8s} mean ‖dW^(1)‖ = {g[:, 0].mean():.2e}, ‖dW^(7)‖ = {g[:, -1].mean():.2e}, "
              f"ratio last/first = {g[:, -1].mean() / g[:, 0].mean():8.1f}, "
              f"test accuracy {100 * acc:.1f}%")
        plot_grad_norms(ax, hist["grad_norm"])
        ax.set_title(f"{act}: mean ‖dW^(l)‖ per epoch, 64-{'-'.join(map(str, HIDDEN))}-10")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
