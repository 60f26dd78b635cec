"""The ``loopprop`` command: train, explain, diagram, bench.

Every error prints one line, ``loopprop: error: …``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence


class CLIError(Exception):
    """A user-facing error: printed as one line."""


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", "-").split("-") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 128 or 128-64, got {text!r}") \
            from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 128 or 128-64, "
                                         f"got {text!r}")
    return values


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"loopprop: error: {message} (see loopprop {self.prog.split()[-1]} -h)\n"
                  if " " in self.prog else f"loopprop: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .datasets import DATASETS

    p = _Parser(prog="loopprop", description="Backpropagation as explicit loops, compiled "
                "with Numba.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    t = sub.add_parser("train", help="train a network on a dataset, one compiled call per epoch",
                       description="Train a dense network; each epoch runs in compiled loops.")
    t.add_argument("--dataset", default="digits", choices=list(DATASETS),
                   help="dataset (default: digits)")
    t.add_argument("--hidden", type=_int_list, default=[512],
                   help="hidden layer sizes, e.g. 128 or 128-64 (default: 512)")
    t.add_argument("--activation", default="relu",
                   choices=["relu", "leaky_relu", "tanh", "sigmoid", "identity"],
                   help="hidden activation (default: relu)")
    t.add_argument("--optimizer", default="momentum", choices=["sgd", "momentum", "adam"],
                   help="optimizer (default: momentum, β = 0.9)")
    t.add_argument("--epochs", type=_positive_int, default=40, help="epochs (default: 40)")
    t.add_argument("--batch-size", type=_positive_int, default=32,
                   help="minibatch size (default: 32)")
    t.add_argument("--lr", type=_float, default=None,
                   help="learning rate (default: 0.02 for sgd/momentum, 0.001 for adam)")
    t.add_argument("--seed", type=int, default=0, help="seed for weights and shuffling")
    t.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    t.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    t.add_argument("--plot", metavar="PNG", help="plot loss, accuracy and gradient norms "
                   "per epoch (needs matplotlib)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("explain", help="the chain rule step by step, with real numbers")
    e.add_argument("--x", default=None, help="input(s), e.g. 2 or 1,0.5 (default: guide §11)")
    e.add_argument("--w", default=None, help="weight(s), e.g. 0.5 or 0.2,-0.3")
    e.add_argument("--b", type=_float, default=None, help="bias")
    e.add_argument("--y", type=_float, default=None, help="target")
    e.add_argument("--activation", default="sigmoid",
                   choices=["sigmoid", "tanh", "relu", "leaky_relu", "identity"])
    e.add_argument("--loss", default="mse", choices=["mse", "binary_cross_entropy"])
    e.add_argument("--network", default=None, metavar="SIZES",
                   help="explain one weight of a small seeded network, e.g. 2-3-1")
    e.add_argument("--layer", type=_positive_int, default=1, help="layer l of W^(l)[i, j]")
    e.add_argument("--i", type=int, default=0, help="output neuron i")
    e.add_argument("--j", type=int, default=0, help="input neuron j")
    e.add_argument("--batch", type=_positive_int, default=2, help="examples in the batch")
    e.add_argument("--seed", type=int, default=0)

    d = sub.add_parser("diagram", help="Mermaid diagrams of the guide, drawn from a network")
    d.add_argument("kind", nargs="?", default="network",
                   choices=["workflow", "neuron", "network", "cache"])
    d.add_argument("--network", default="2-3-3-1", metavar="SIZES",
                   help="layer sizes, e.g. 64-32-10 (default: 2-3-3-1)")
    d.add_argument("--activation", default="relu", help="hidden activation")
    d.add_argument("--output", default="sigmoid", help="output activation")

    b = sub.add_parser("bench", help="time the headline workloads against NumPy (and torch)")
    b.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    b.add_argument("--quick", action="store_true", help="fewer repeats")
    return p


def _cmd_train(args: argparse.Namespace) -> int:
    from . import datasets
    from .network import Network

    meta = datasets.info(args.dataset)
    Xtr, ytr, Xte, yte = datasets.load(args.dataset, dtype=args.dtype)
    if meta.task == "classification":
        sizes = [Xtr.shape[0], *args.hidden, meta.n_classes]
        acts = [args.activation] * len(args.hidden) + ["softmax"]
        loss = "cross_entropy"
    else:
        sizes = [Xtr.shape[0], *args.hidden, 1]
        acts = [args.activation] * len(args.hidden) + ["identity"]
        loss = "mse"
    lr = args.lr if args.lr is not None else (0.001 if args.optimizer == "adam" else 0.02)
    if args.plot:
        from .plots import require_matplotlib

        require_matplotlib()
    init = "xavier" if args.activation in ("tanh", "sigmoid", "identity") else "he"
    net = Network(sizes, acts, loss, dtype=args.dtype, seed=args.seed, init=init)
    print(f"{net!r}\ndataset {args.dataset}: {Xtr.shape[1]} train / {Xte.shape[1]} test "
          f"examples; {args.optimizer}, lr {lr:g}, batch {args.batch_size}, "
          f"{args.epochs} epochs", flush=True)
    t0 = time.perf_counter()
    hist = net.fit(Xtr, ytr, epochs=args.epochs, batch_size=args.batch_size, lr=lr,
                   optimizer=args.optimizer, seed=args.seed, progress=not args.no_progress,
                   validation=(Xte, yte))
    elapsed = time.perf_counter() - t0
    ev = net.evaluate(Xte, yte)
    line = f"test loss {ev['loss']:.4f}"
    if "accuracy" in ev:
        line += f", test accuracy {100 * ev['accuracy']:.2f}%"
    print(f"{line}  ({elapsed:.2f} s, first epoch {hist['time'][0] * 1e3:.1f} ms, "
          f"mean epoch {1e3 * sum(hist['time']) / len(hist['time']):.1f} ms)")
    if args.save:
        net.save(args.save)
        print(f"saved {args.save}")
    if args.plot:
        from .plots import plot_history

        plot_history(hist, args.plot, title=f"{args.dataset}: {net!r}")
        print(f"plot written to {args.plot}")
    return 0


def _parse_vector(text: str | None, name: str):
    if text is None:
        return None
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise CLIError(f"--{name}: expected numbers separated by commas, got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain_neuron, explain_weight

    if args.network:
        sizes = _int_list(args.network)
        print(explain_weight(sizes, layer=args.layer, i=args.i, j=args.j,
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
    from .diagrams import to_mermaid
    from .network import Network

    sizes = _int_list(args.network)
    if len(sizes) < 2:
        raise CLIError("--network: expected at least two sizes, e.g. 2-3-1")
    acts = [args.activation] * (len(sizes) - 2) + [args.output]
    loss = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(args.output, "mse")
    print(to_mermaid(Network(sizes, acts, loss), args.kind))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    run(dtype=args.dtype, quick=args.quick)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    commands = {"train": _cmd_train, "explain": _cmd_explain, "diagram": _cmd_diagram,
                "bench": _cmd_bench}
    try:
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("loopprop: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, ImportError, OSError, FloatingPointError,
            RuntimeError) as exc:
        print(f"loopprop: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
