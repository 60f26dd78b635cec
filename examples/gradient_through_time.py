"""The vanishing gradient through time, made visible: a plain RNN and an LSTM trained the same
way on the same text, then the gradient that the loss at the last position of a window sends
back to every earlier hidden state, ‖∂L_{T−1}/∂h_t‖ (docs/formulas.md, "Truncated
backpropagation through time").

A plain RNN multiplies that gradient by ``W_hᵀ·diag(1 − h²)`` at every step back: it shrinks
geometrically, and what happened a few dozen characters earlier barely moves the weights. The
LSTM's cell carries it along ``dc_{t−1} = dc_t ⊙ f_t``, a product of forget gates with no weight
matrix and no squashing derivative in between: it reaches much further back.

Run (the plot needs ``pip install "loopprop[plot]"``)::

    python examples/gradient_through_time.py [out.png]

It trains both models for the same steps on the standard library's sources (truncated
backpropagation through time over consecutive windows), prints the norms at a few distances
and the mean factor per step back, and writes the plot (default ``gradient_through_time.png``).
"""

from __future__ import annotations

import sys

import numpy as np

from loopprop import models, text
from loopprop.through_time import decay_per_step, gradient_through_time

T = 48  # the windows the curves are measured on (training uses windows of 16)


def main(steps: int = 150, path: str | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Train an RNN and an LSTM (one layer of 64, float64) for ``steps`` steps each and return
    ``{"rnn": norms, "lstm": norms}``, ``norms[t] = ‖∂L_{T−1}/∂h_t‖`` on the same held-out
    batch; with ``path``, also plot them there."""
    corpus = text.stdlib_corpus(max_chars=300_000)
    tok = text.CharTokenizer.from_text(corpus)
    train, held = text.split(tok.encode(corpus), 0.1)
    starts = np.random.default_rng(seed).integers(0, len(held) - T - 1, 16)
    X = np.stack([held[s:s + T] for s in starts], axis=1)
    Y = np.stack([held[s + 1:s + T + 1] for s in starts], axis=1)
    curves = {}
    for cell in ("rnn", "lstm"):
        net = models.char_rnn(tok.vocab_size, 64, 1, cell=cell, block_size=16, n_embd=32,
                              dtype="float64", seed=seed)
        net.fit_text(train, epochs=1, steps_per_epoch=steps, windows="consecutive",
                     batch_size=16, lr=3e-3, progress=False, seed=seed)
        curves[cell] = gradient_through_time(net.sharing((T,)), X, Y)
    print(f"‖∂L/∂h_t‖ of the loss at the last of {T} positions, after {steps} training steps")
    print("steps back         rnn        lstm")
    for back in (0, 1, 2, 5, 10, 20, 30, T - 1):
        print(f"{back:>10}  " + "  ".join(f"{curves[c][T - 1 - back]:>10.3e}" for c in curves))
    print("factor per step back: " + ", ".join(f"{c} {decay_per_step(v):.3f}"
                                               for c, v in curves.items()))
    if path:
        from loopprop.plots import plot_through_time

        plot_through_time(curves, path, f"the gradient through time after {steps} steps")
        print(f"plot written to {path}")
    return curves


if __name__ == "__main__":
    main(path=sys.argv[1] if len(sys.argv) > 1 else "gradient_through_time.png")
