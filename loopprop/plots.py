"""Plots of a training history: loss, accuracy and per-layer gradient norms per epoch.

matplotlib is an optional extra (``pip install "loopprop[plot]"``); it is imported only here.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence


def require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from .datasets import MissingExtraError

        raise MissingExtraError(
            'plotting needs matplotlib, which is not installed; install it with: '
            'pip install "loopprop[plot]"'
        ) from None
    return plt


def plot_history(history: Mapping[str, Sequence], path: str, title: str = "") -> None:
    """Write a PNG with three panels: loss, accuracy (if any), ‖dW^(l)‖ per layer (log scale)."""
    plt = require_matplotlib()
    epochs = range(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot(epochs, history["loss"], label="train")
    if "val_loss" in history:
        ax.plot(epochs, history["val_loss"], label="test")
    ax.set(title="loss", xlabel="epoch")
    ax.legend()
    ax = axes[1]
    if "accuracy" in history:
        ax.plot(epochs, history["accuracy"], label="train")
        if "val_accuracy" in history:
            ax.plot(epochs, history["val_accuracy"], label="test")
        ax.legend()
    ax.set(title="accuracy", xlabel="epoch")
    plot_grad_norms(axes[2], history["grad_norm"])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    from ._files import atomic_path

    with atomic_path(path, suffix=os.path.splitext(path)[1] or ".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def plot_grad_norms(ax, grad_norm: Sequence[Sequence[float]], label_prefix: str = "") -> None:
    """Per-layer mean ‖dW^(l)‖ per epoch on a log axis: vanishing gradients show as a gap."""
    n_layers = len(grad_norm[0])
    epochs = range(1, len(grad_norm) + 1)
    for layer in range(n_layers):
        ax.plot(epochs, [g[layer] for g in grad_norm], label=f"{label_prefix}layer {layer + 1}")
    ax.set_yscale("log")
    ax.set(title="mean ‖dW‖ per layer", xlabel="epoch")
    ax.legend(fontsize=7)
