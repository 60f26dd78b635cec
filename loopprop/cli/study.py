"""The study tools: ``loopprop explain``, ``diagram`` and ``bench``."""

from __future__ import annotations

import argparse

import numpy as np

from ._args import CLIError
from .use import _load_model


def _parse_vector(text: str | None, name: str):
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(f"--{name}: expected numbers separated by commas, got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


def explain_model(name: str, batch: int, seed: int):
    """The seeded float64 network, batch and targets of ``loopprop explain --model``."""
    from ..network import Network

    rng = np.random.default_rng(seed)
    if name == "gpt":
        from ..models import gpt

        net = gpt(11, 8, 2, 2, 16, dtype="float64", seed=seed)
        return net, rng.integers(0, 11, (8, batch)), rng.integers(0, 11, (8, batch))
    if name in ("lstm", "gru", "rnn"):
        from ..models import char_rnn

        net = char_rnn(11, 8, 2, cell=name, block_size=8, dtype="float64", seed=seed)
        return net, rng.integers(0, 11, (8, batch)), rng.integers(0, 11, (8, batch))
    from ..models import cnn_layers, resnet_layers

    layers = cnn_layers("digits") if name == "cnn" else resnet_layers("digits")
    net = Network(layers, loss="cross_entropy", input_shape=(1, 8, 8), seed=seed)
    if name == "cnn":
        net.eval()  # dropout: its random mask would move the loss between evaluations
    return net, rng.standard_normal((1, 8, 8, batch)), rng.integers(0, 10, batch)


def through_time(seed: int = 0, T: int = 40, batch: int = 8) -> dict[str, np.ndarray]:
    """``‖∂L_{T−1}/∂h_t‖`` for a plain RNN and an LSTM (one layer of 64 units, float64, seeded)
    on the same random batch of ``T`` tokens (``loopprop explain --through-time``)."""
    from ..models import char_rnn
    from ..through_time import gradient_through_time

    rng = np.random.default_rng(seed)
    X, y = rng.integers(0, 11, (T, batch)), rng.integers(0, 11, (T, batch))
    return {cell: gradient_through_time(char_rnn(11, 64, 1, cell=cell, block_size=T, n_embd=16,
                                                 dtype="float64", seed=seed), X, y)
            for cell in ("rnn", "lstm")}


def _print_through_time(curves: dict[str, np.ndarray], plot: str | None) -> int:
    from ..through_time import decay_per_step

    names = list(curves)
    T = len(curves[names[0]])
    print("‖∂L/∂h_t‖ of the loss at the last position t = T−1, carried back through time "
          f"(T = {T}, one layer of 64 units, the same batch)")
    print("steps back  " + "  ".join(f"{n:>10}" for n in names))
    for back in (0, 1, 2, 3, 5, 10, 20, 30, T - 1):
        if back < T:
            print(f"{back:>10}  " + "  ".join(f"{curves[n][T - 1 - back]:>10.3e}" for n in names))
    print("factor per step back (after the first): " + ", ".join(
        f"{n} {decay_per_step(curves[n]):.3f}" for n in names))
    print("the plain RNN multiplies the gradient by W_hᵀ·diag(1 − h²) at every step: it "
          "vanishes geometrically; the LSTM's cell carries it along dc_(t−1) = dc_t ⊙ f_t")
    if plot:
        from ..plots import plot_through_time

        plot_through_time(curves, plot, "the gradient through time: RNN and LSTM")
        print(f"plot written to {plot}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from ..explain import explain_neuron, explain_weight

    if args.plot and not args.through_time:
        raise CLIError("--plot: draws the curves of --through-time; add --through-time")
    if args.through_time:
        plot = None
        if args.plot:
            from ._args import _writable_target

            plot = _writable_target(args.plot, "--plot", ".png")
        return _print_through_time(through_time(args.seed), plot)
    if args.model:
        from ..explain_param import explain_param

        net, X, y = explain_model(args.model, args.batch, args.seed)
        try:
            print(explain_param(net, X, y, layer=args.layer, param=args.param,
                                index=args.index, top=args.top))
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        return 0
    if args.network:
        print(explain_weight(args.network, layer=args.layer, i=args.i, j=args.j,
                                     batch=args.batch, seed=args.seed,
                                     activation=args.activation))
        return 0
    kw = {}
    for name in ("x", "w"):
        v = _parse_vector(getattr(args, name), name)
        if v is not None:
            kw[name] = v
    for name in ("b", "y"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    print(explain_neuron(activation=args.activation, loss=args.loss, **kw))
    return 0


def _cmd_diagram(args: argparse.Namespace) -> int:
    from ..diagrams import to_mermaid
    from ..models import cnn_layers, resnet_layers
    from ..network import Network

    if args.file is not None:
        net = _load_model(args.file)
    elif args.model == "cnn":
        net = Network(cnn_layers("digits"), loss="cross_entropy", input_shape=(1, 8, 8))
    elif args.model == "resnet":
        net = Network(resnet_layers("digits"), loss="cross_entropy", input_shape=(1, 8, 8))
    elif args.model == "gpt":
        from ..models import gpt

        net = gpt(65, 16, 2, 2, 32)
    elif args.model in ("lstm", "gru", "rnn"):
        from ..models import char_rnn

        net = char_rnn(65, 32, 2, cell=args.model, block_size=16)
    else:
        sizes = args.network
        acts = [args.activation] * (len(sizes) - 2) + [args.output]
        loss = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(args.output,
                                                                                  "mse")
        net = Network(sizes, acts, loss)
    try:
        print(to_mermaid(net, args.kind, batch_size=args.batch_size))
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import run

    run(dtype=args.dtype, quick=args.quick, select=args.select, roofline=args.roofline)
    return 0
