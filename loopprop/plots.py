"""Plots of a training history (loss, accuracy and per-layer gradient norms per epoch) and of
the gradient through time of recurrent layers.

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
    _save_figure(fig, path)
    plt.close(fig)


def _save_figure(fig, path: str) -> None:
    """``fig`` as a PNG at ``path``, written atomically (a temporary file, then a rename)."""
    from ._files import atomic_path

    with atomic_path(path, suffix=os.path.splitext(path)[1] or ".png") as tmp:
        fig.savefig(tmp, dpi=110)


def plot_grad_norms(ax, grad_norm: Sequence[Sequence[float]], label_prefix: str = "") -> None:
    """Per-layer mean ‖dW^(l)‖ per epoch on a log axis: vanishing gradients show as a gap."""
    n_layers = len(grad_norm[0])
    epochs = range(1, len(grad_norm) + 1)
    for layer in range(n_layers):
        ax.plot(epochs, [g[layer] for g in grad_norm], label=f"{label_prefix}layer {layer + 1}")
    ax.set_yscale("log")
    ax.set(title="mean ‖dW‖ per layer", xlabel="epoch")
    ax.legend(fontsize=7)


def plot_through_time(curves: Mapping[str, Sequence[float]], path: str, title: str = "") -> None:
    """Write a PNG of ``‖∂L/∂h_t‖`` against the steps back from the loss's position, one curve
    per model (:func:`loopprop.through_time.gradient_through_time`), on a log axis: a vanishing
    gradient is a straight line falling."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, norms in curves.items():
        back = list(reversed(list(norms)))
        ax.plot(range(len(back)), back, marker=".", label=name)
    ax.set_yscale("log")
    ax.set(title=title or "the gradient through time", xlabel="steps back from the loss (T−1−t)",
           ylabel="‖∂L/∂h_t‖")
    ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
