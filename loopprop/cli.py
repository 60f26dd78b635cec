"""The ``loopprop`` command: train, evaluate, predict, explain, diagram, bench.

Every error prints one line, ``loopprop: error: …``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

import numpy as np


class CLIError(Exception):
    """A user-facing error: printed as one line."""


def _int_list(text: str) -> list[int]:
    """Layer sizes ``128``, ``128-64`` or ``128,64``: positive integers, nothing else."""
    parts = text.replace(",", "-").split("-")
    if not text or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected positive sizes like 128 or 128-64, got {text!r}")
    values = [int(p) for p in parts]
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive sizes like 128 or 128-64, "
                                         f"got {text!r} (a layer needs at least one neuron)")
    return values


def _index(text: str) -> list[int]:
    """An array entry ``3,0,1,2``: non-negative integers, one per axis."""
    parts = text.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected non-negative integers like 3,0,1,2, got "
                                         f"{text!r}")
    return [int(p) for p in parts]


def _network_sizes(text: str) -> list[int]:
    """A whole network, ``2-3-1``: at least an input and an output size."""
    values = _int_list(text)
    if len(values) < 2:
        raise argparse.ArgumentTypeError(f"expected at least two sizes (inputs and outputs), "
                                         f"e.g. 2-3-1, got {text!r}")
    return values


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") \
            from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return v


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


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows every option's default, unless its text already says it (or there is
    none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(2, f"loopprop: error: {message} (see loopprop {self.prog.split()[-1]} -h)\n"
                  if " " in self.prog else f"loopprop: error: {message}\n")


#: defaults of ``loopprop train`` by task: what trains each dataset well out of the box
TRAIN_DEFAULTS = {
    # digits: 97.5 % test accuracy with these (the README's headline run)
    "classification": {"hidden": [512], "optimizer": "momentum", "lr": 0.02, "epochs": 40},
    # diabetes: a small network and plain SGD; a wide one with momentum overfits or diverges
    "regression": {"hidden": [64], "optimizer": "sgd", "lr": 0.01, "epochs": 40},
}
#: the default learning rate of Adam, whatever the task
ADAM_LR = 0.001
#: ``--model cnn``: its layers per image dataset, and its training defaults
#: digits: AdamW (λ 0.1) with a cosine schedule over 100 epochs held ≥ 98 % over seeds 0–9
#: (98.05–98.61 %), where Adam at a constant 0.002 for 50 epochs gave 97.49–98.05 %
CNN_DEFAULTS = {
    "digits": {"optimizer": "adamw", "lr": 0.004, "epochs": 100, "batch_size": 32,
               "schedule": "cosine", "weight_decay": 0.1},
    "mnist5k": {"optimizer": "adam", "lr": 0.001, "epochs": 10, "batch_size": 64,
                "schedule": "constant", "weight_decay": None},
}
#: ``--model resnet``: its training defaults (AdamW's default weight decay, 0.01)
RESNET_DEFAULTS = {
    "digits": {"optimizer": "adamw", "lr": 0.005, "epochs": 30, "batch_size": 32,
               "schedule": "cosine", "weight_decay": None},
    "mnist5k": {"optimizer": "adamw", "lr": 0.005, "epochs": 5, "batch_size": 32,
                "schedule": "cosine", "weight_decay": None},
}

LOSS_CHOICES = ("cross_entropy", "binary_cross_entropy", "mse")
#: ``--model gpt``: its size and data options and their defaults
GPT_SIZES = {"block_size": 64, "n_layer": 4, "n_head": 4, "n_embd": 128, "steps_per_epoch": 200,
             "val_tokens": 65536}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def build_parser() -> argparse.ArgumentParser:
    from .datasets import DATASETS

    from . import __version__

    p = _Parser(prog="loopprop", description="Backpropagation as explicit loops, compiled "
                "with Numba.")
    p.add_argument("--version", action="version", version=f"loopprop {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    c, r = TRAIN_DEFAULTS["classification"], TRAIN_DEFAULTS["regression"]
    t = sub.add_parser("train", help="train a network on a dataset, one compiled call per epoch",
                       description="Train a network -- an mlp (dense layers), a cnn, a "
                       "residual cnn with batch norm (resnet) or a character-level gpt -- and "
                       "print its test score; each epoch runs in compiled loops. The mlp's "
                       "defaults depend on the loss: cross-entropy "
                       f"{'-'.join(map(str, c['hidden']))} hidden, {c['optimizer']} lr "
                       f"{c['lr']:g}; mse {'-'.join(map(str, r['hidden']))} hidden, "
                       f"{r['optimizer']} lr {r['lr']:g}.")
    t.add_argument("--dataset", default=None, choices=list(DATASETS),
                   help="dataset of the mlp, cnn and resnet (default: digits)")
    t.add_argument("--model", default="mlp", choices=["mlp", "cnn", "resnet", "gpt"],
                   help="mlp: dense layers (--hidden); cnn: a convolutional network on the "
                   "images of digits (adamw lr 0.004, weight decay 0.1, cosine, 100 epochs) or "
                   "mnist5k (LeNet-sized; adam lr 0.001, batch 64, 10 epochs); resnet: a "
                   "residual CNN with batch norm on the same images (adamw lr 0.005, cosine; "
                   "30 epochs on digits, 5 on mnist5k); gpt: a character-level GPT on --text "
                   "(default: the standard library's .py sources), float32, adamw lr 0.002, "
                   "β₂ 0.95, weight decay 0.1, warm-up + cosine, clipping at 1, batch 16, "
                   "5 epochs of --steps-per-epoch 200 steps")
    t.add_argument("--hidden", type=_int_list, default=None,
                   help="hidden layer sizes, e.g. 128 or 128-64 (default: 512 with "
                   "cross-entropy, 64 with mse)")
    t.add_argument("--activation", default=None,
                   choices=["relu", "leaky_relu", "tanh", "sigmoid", "identity"],
                   help="hidden activation of the mlp (default: relu)")
    t.add_argument("--loss", default=None, choices=LOSS_CHOICES,
                   help="loss (default: cross_entropy with a softmax output for classification, "
                   "mse with an identity output for regression; binary_cross_entropy: one "
                   "sigmoid output, two-class datasets only; mse on a classification set: "
                   "one-hot targets)")
    t.add_argument("--optimizer", default=None, choices=["sgd", "momentum", "adam", "adamw"],
                   help="optimizer (default: momentum, β = 0.9, for classification; sgd for "
                   "regression)")
    t.add_argument("--epochs", type=_positive_int, default=None, help="epochs (default: 40)")
    t.add_argument("--batch-size", type=_positive_int, default=None,
                   help="minibatch size (default: 32; 64 for the mnist5k CNN)")
    t.add_argument("--lr", type=_float, default=None,
                   help=f"learning rate (default: {c['lr']:g} for classification, {r['lr']:g} "
                   f"for regression, {ADAM_LR:g} with adam)")
    t.add_argument("--weight-decay", type=_float, default=None,
                   help="weight decay λ of the weights (not biases or normalization): "
                   "decoupled with adamw (default 0.01), L2 otherwise (default 0)")
    t.add_argument("--lr-schedule", default=None, choices=["constant", "step", "cosine"],
                   help="the rate per step: constant, step (×0.1 every 10 epochs) or cosine "
                   "(to 0 at the end); default constant (cosine for resnet)")
    t.add_argument("--warmup-epochs", type=_float, default=0.0,
                   help="epochs of linear warm-up of the rate (default 0)")
    t.add_argument("--clip-grad-norm", type=_float, default=None,
                   help="clip the gradient's global norm to this value before each step")
    g = t.add_argument_group("gpt (with --model gpt)")
    g.add_argument("--text", metavar="PATH", help="a UTF-8 text file to train on (default: the "
                   "standard library's .py sources; the last 10%% is held out)")
    g.add_argument("--block-size", type=_positive_int, default=None, help="context length T "
                   f"(default {GPT_SIZES['block_size']})")
    g.add_argument("--n-layer", type=_positive_int, default=None,
                   help=f"blocks (default {GPT_SIZES['n_layer']})")
    g.add_argument("--n-head", type=_positive_int, default=None,
                   help=f"attention heads (default {GPT_SIZES['n_head']})")
    g.add_argument("--n-embd", type=_positive_int, default=None,
                   help=f"width (default {GPT_SIZES['n_embd']})")
    g.add_argument("--steps-per-epoch", type=_positive_int, default=None,
                   help="optimizer steps per epoch, each on --batch-size random windows "
                   f"(default {GPT_SIZES['steps_per_epoch']})")
    g.add_argument("--val-tokens", type=_positive_int, default=None,
                   help="held-out tokens scored after every epoch (default "
                   f"{GPT_SIZES['val_tokens']})")
    t.add_argument("--seed", type=_seed, default=0, help="seed for weights and shuffling")
    t.add_argument("--dtype", default=None, choices=["float64", "float32"],
                   help="default float64 (float32 for gpt)")
    t.add_argument("--save", metavar="PATH", help="save the trained model (.npz is added if "
                   "missing)")
    t.add_argument("--plot", metavar="PNG", help="plot loss, accuracy and gradient norms "
                   "per epoch (needs matplotlib)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    sm = sub.add_parser("sample", help="generate text from a GPT saved by train --model gpt",
                        description="Continue a prompt with a saved character-level GPT; each "
                        "new token costs O(T) through a cache of keys and values.")
    sm.add_argument("model", metavar="MODEL.npz", help="a model saved by train --model gpt "
                    "--save")
    sm.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    sm.add_argument("--tokens", type=_positive_int, default=300,
                    help="characters to generate (default 300)")
    sm.add_argument("--temperature", type=_float, default=0.8,
                    help="below 1: surer, above 1: more varied; 0 (or below 1e-6): always the "
                    "most probable character (default 0.8)")
    sm.add_argument("--seed", type=_seed, default=0, help="seed of the draw (default 0)")

    ev = sub.add_parser("evaluate", help="loss and accuracy of a saved model on a dataset")
    ev.add_argument("model", metavar="MODEL.npz", help="a model saved by train --save")
    ev.add_argument("--dataset", default="digits", choices=list(DATASETS),
                    help="dataset whose held-out test split is evaluated (default: digits)")
    ev.add_argument("--split", default="test", choices=["test", "train"],
                    help="which split (default: test)")

    pr = sub.add_parser("predict", help="outputs of a saved model for inputs in a file",
                        description="Print the model's outputs A^(L) for the inputs in FILE, one "
                        "example per line (a .npy or .csv file with one example per ROW, or per "
                        "column with --columns), as raw as the dataset's own files: a model "
                        "saved by loopprop train standardizes them as in training (its file "
                        "records how). Classifiers print the class and the probabilities; a "
                        "regression model its outputs in the target's units.")
    pr.add_argument("model", metavar="MODEL.npz", help="a model saved by train --save")
    pr.add_argument("--input", required=True, metavar="FILE",
                    help="inputs: .npy or .csv (comma-separated numbers; a header line of "
                    "names is skipped)")
    pr.add_argument("--columns", action="store_true",
                    help="the file holds one example per column (loopprop's layout)")
    pr.add_argument("--output", metavar="FILE", help="also write the outputs (n_L, n) to a "
                    ".npy or .csv/.txt file (.npy is added if there is no extension)")
    pr.add_argument("--standardized", action="store_true",
                    help="the inputs are already standardized as in training (loopprop's "
                    "datasets.load); by default a model trained by loopprop train "
                    "standardizes raw inputs with the training split's mean and std, which "
                    "its file records")

    e = sub.add_parser("explain", help="the chain rule step by step, with real numbers",
                       description="Print the chain rule of one gradient with real numbers: "
                       "by default the single neuron of docs/formulas.md §11 (or any neuron: "
                       "--x, --w, --b, --y); with --network one weight of a small seeded "
                       "network; with --model a parameter of any layer of the cnn, resnet or "
                       "gpt. Each sum is checked against backward and finite differences.")
    e.add_argument("--x", default=None, help="input(s), e.g. 2 or 1,0.5 (default: §11's example)")
    e.add_argument("--w", default=None, help="weight(s), e.g. 0.5 or 0.2,-0.3")
    e.add_argument("--b", type=_float, default=None, help="bias")
    e.add_argument("--y", type=_float, default=None, help="target")
    e.add_argument("--activation", default="sigmoid",
                   choices=["sigmoid", "tanh", "relu", "leaky_relu", "identity"],
                   help="the activation of the neuron or of the network's hidden layers")
    e.add_argument("--loss", default="mse", choices=["mse", "binary_cross_entropy"],
                   help="the neuron's loss")
    e.add_argument("--network", type=_network_sizes, default=None, metavar="SIZES",
                   help="explain one weight of a small seeded network, e.g. 2-3-1")
    e.add_argument("--layer", type=_positive_int, default=1, help="layer l of W^(l)[i, j]")
    e.add_argument("--i", type=int, default=0, help="output neuron i")
    e.add_argument("--j", type=int, default=0, help="input neuron j")
    e.add_argument("--batch", type=_positive_int, default=2, help="examples in the batch")
    e.add_argument("--seed", type=_seed, default=0, help="seed of the network and the batch")
    e.add_argument("--model", default=None, choices=["cnn", "resnet", "gpt"],
                   help="explain a parameter of any layer of this model (float64, seeded, on a "
                        "random batch): cnn and resnet as loopprop train builds them for 8×8 "
                        "digits, gpt a 2-layer GPT (2 heads, 16 wide, block 8, 11 tokens)")
    e.add_argument("--param", default="W",
                   help="with --model: the parameter array, e.g. W, b, gamma, beta, E, W_qkv")
    e.add_argument("--index", type=_index, default=None, metavar="I,J,…",
                   help="with --model: the entry, one index per axis, e.g. 3,0,1,2 (default: 0s)")
    e.add_argument("--top", type=_positive_int, default=8,
                   help="with --model: how many of the largest terms to print")

    d = sub.add_parser("diagram", help="Mermaid diagrams of a network's passes",
                       description="Print a Mermaid diagram (docs/formulas.md §13-§14) drawn "
                       "from a real network: workflow (the training loop), neuron (one "
                       "neuron's forward and backward), network (every layer's forward and "
                       "backward pass; the default) or cache (what each layer keeps for the "
                       "backward pass). Paste it into any Mermaid renderer.")
    d.add_argument("kind", nargs="?", default="network",
                   choices=["workflow", "neuron", "network", "cache"],
                   help="which diagram (default: network)")
    d.add_argument("--network", type=_network_sizes, default=[2, 3, 3, 1], metavar="SIZES",
                   help="layer sizes, e.g. 64-32-10 (default: 2-3-3-1)")
    d.add_argument("--activation", default="relu",
                   choices=["relu", "leaky_relu", "tanh", "sigmoid", "identity"],
                   help="hidden activation")
    d.add_argument("--output", default="sigmoid",
                   choices=["sigmoid", "softmax", "identity", "relu", "tanh", "leaky_relu"],
                   help="output activation")
    d.add_argument("--model", default="mlp", choices=["mlp", "cnn", "resnet", "gpt"],
                   help="mlp: the --network sizes; cnn, resnet: the networks of loopprop train "
                        "for digits' 8×8 images; gpt: a 2-layer GPT (2 heads, 32 wide, block "
                        "16, 65 characters)")
    d.add_argument("--file", default=None, metavar="MODEL.npz",
                   help="draw a saved model instead (loopprop train --save)")
    d.add_argument("--batch-size", type=_positive_int, default=None,
                   help="the cache diagram's memory for a batch of this size")

    b = sub.add_parser("bench", help="time the headline workloads against NumPy (and torch)",
                       description="Time the README's workloads: loopprop against the leanest "
                       "NumPy and eager PyTorch (when installed), each row interleaved, best "
                       "of several rounds; ratios above 1 mean loopprop is faster.")
    b.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    b.add_argument("--quick", action="store_true",
                   help="three rounds instead of seven, and without the slow rows (the LeNet "
                   "and resnet epochs, the GPT step) unless -k names them: about two minutes")
    b.add_argument("-k", dest="select", metavar="TEXT", default=None,
                   help="only the workloads whose name holds TEXT, e.g. -k epoch, -k GPT, "
                   "-k warm")

    c = sub.add_parser("compile", help="compile ahead what a model needs (before a lab)",
                       description="Compile, or find in Numba's cache, everything `loopprop "
                       "train --model M` needs: its layer kinds' row functions one kind at a "
                       "time, then the epoch, evaluation and (gpt) sampling. Later runs start at "
                       "once. What compiles depends on the layer kinds and the dtype only.")
    c.add_argument("--model", action="append", choices=["mlp", "cnn", "resnet", "gpt"],
                   help="a model to compile (repeat for several; default mlp)")
    c.add_argument("--all", action="store_true", help="every model")
    c.add_argument("--dtype", action="append", choices=["float64", "float32"],
                   help="a dtype to compile for (repeat for both; default: each model's own, "
                   "float64 for mlp/cnn/resnet and float32 for gpt)")
    c.add_argument("--no-progress", action="store_true", help="a line per step, no bar")
    return p


def _cmd_compile(args: argparse.Namespace) -> int:
    from .ahead import MODELS, compile_models

    if args.all and args.model:
        raise CLIError("--all compiles every model: give --all or --model, not both")
    chosen = list(MODELS) if args.all else list(dict.fromkeys(args.model or ["mlp"]))
    t0 = time.perf_counter()
    total = 0.0
    for model in chosen:
        dtypes = list(dict.fromkeys(args.dtype or ["float32" if model == "gpt" else "float64"]))
        spent = compile_models([model], dtypes, progress=not args.no_progress)
        total += sum(spent.values())
    print(f"compiled {', '.join(chosen)} in {total:.1f} s of compiling "
          f"({time.perf_counter() - t0:.1f} s in all); later runs load the machine code from "
          "Numba's cache")
    return 0


#: ``loopprop train`` options that only some models read: given to another model they are an
#: error, never silently ignored
MODEL_ONLY = {"dataset": ("mlp", "cnn", "resnet"), "hidden": ("mlp",), "activation": ("mlp",),
              "text": ("gpt",), **{name: ("gpt",) for name in GPT_SIZES}}


def _refuse_ignored(args: argparse.Namespace) -> None:
    """An option the chosen model does not read is an error (``--text`` without
    ``--model gpt`` once trained the digits MLP and exited 0)."""
    for dest, models in MODEL_ONLY.items():
        if getattr(args, dest) is not None and args.model not in models:
            option = "--" + dest.replace("_", "-")
            raise CLIError(f"{option}: not used by --model {args.model}; it applies to "
                           f"--model {' or '.join(models)}")
    for dest, value in GPT_SIZES.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)


def _writable_target(path: str, option: str, suffix: str) -> str:
    """``path`` with ``suffix`` added if it has none, checked *before* any work is done: its
    directory must exist and be writable."""
    import os

    if not os.path.splitext(path)[1]:
        path += suffix
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CLIError(f"{option}: the directory {folder} does not exist; create it first or "
                       "choose another path")
    if not os.access(folder, os.W_OK):
        raise CLIError(f"{option}: the directory {folder} is not writable; choose another path")
    if os.path.isdir(path):
        raise CLIError(f"{option}: {path} is a directory; give a file name")
    return path


def _cmd_train(args: argparse.Namespace) -> int:
    from . import datasets
    from .network import Network

    _refuse_ignored(args)
    if args.model == "gpt":
        return _train_gpt(args)
    args.dataset = args.dataset or "digits"
    args.activation = args.activation or "relu"
    args.dtype = args.dtype or "float64"
    meta = datasets.info(args.dataset)
    if args.model in ("cnn", "resnet"):
        return _train_cnn(args, meta)
    loss = args.loss or ("cross_entropy" if meta.task == "classification" else "mse")
    # a squared error (regression, or one-hot targets) trains with the regression defaults
    defaults = TRAIN_DEFAULTS["regression" if loss == "mse" else "classification"]
    hidden = args.hidden if args.hidden is not None else defaults["hidden"]
    optimizer = args.optimizer or defaults["optimizer"]
    epochs = args.epochs or defaults["epochs"]
    lr = args.lr if args.lr is not None else (ADAM_LR if optimizer in ("adam", "adamw")
                                              else defaults["lr"])
    if meta.task == "regression" and loss != "mse":
        raise CLIError(f"--loss: {args.dataset} is a regression dataset: use --loss mse")
    if loss == "binary_cross_entropy" and meta.n_classes != 2:
        raise CLIError(f"--loss: binary_cross_entropy needs two classes; {args.dataset} has "
                       f"{meta.n_classes}: use cross_entropy")
    save, plot = _outputs(args)
    Xtr, ytr, Xte, yte = datasets.load(args.dataset, dtype=args.dtype)
    n_out = {"cross_entropy": meta.n_classes, "binary_cross_entropy": 1}.get(
        loss, meta.n_classes if meta.task == "classification" else 1)
    output = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(loss, "identity")
    sizes = [Xtr.shape[0], *hidden, n_out]
    acts = [args.activation] * len(hidden) + [output]
    ytr_fit, yte_fit = ytr, yte
    if loss == "mse" and meta.task == "classification":  # one-hot targets for a squared error
        ytr_fit, yte_fit = (np.eye(n_out, dtype=args.dtype)[:, y] for y in (ytr, yte))
    elif loss == "binary_cross_entropy" or meta.task == "regression":
        ytr_fit, yte_fit = ytr.reshape(1, -1), yte.reshape(1, -1)
    init = "xavier" if args.activation in ("tanh", "sigmoid", "identity") else "he"
    net = Network(sizes, acts, loss, dtype=args.dtype, seed=args.seed, init=init)
    _record_data(net, args.dataset, meta, image=False)
    print(f"{net!r}\ndataset {args.dataset}: {Xtr.shape[1]} train / {Xte.shape[1]} test "
          f"examples; {optimizer}, lr {lr:g}, batch {args.batch_size or 32}, "
          f"{_plural(epochs, 'epoch')}", flush=True)
    t0 = time.perf_counter()
    opts = _schedule_options(args, epochs)
    hist = _interruptible(net, save, lambda: net.fit(
        Xtr, ytr_fit, epochs=epochs, batch_size=args.batch_size or 32, lr=lr,
        optimizer=optimizer, seed=args.seed, progress=not args.no_progress,
        validation=(Xte, yte_fit), **opts))
    elapsed = time.perf_counter() - t0
    print(_score_line(net, Xte, yte, yte_fit, meta.task) + f"  ({elapsed:.2f} s; "
          + _epoch_times(hist["time"], hist["compile_time"]) + ")")
    return _save_and_plot(net, hist, save, plot, f"{args.dataset}: {net!r}")


def _interruptible(net, save: str | None, train):
    """``train()``; on Ctrl-C (which stops fit between two steps) the last complete state goes
    to ``--save`` when it was given, and the message says so either way; exit status 130."""
    try:
        return train()
    except KeyboardInterrupt:
        where = net.interrupted or {}
        at = (f" in epoch {where['epoch']}, after {where['steps']} optimizer steps"
              if where else "")
        if save:
            net.save(save)
            print(f"loopprop: interrupted{at}; the last complete state is saved to {save}",
                  file=sys.stderr, flush=True)
        else:
            print(f"loopprop: interrupted{at}; nothing saved (no --save)", file=sys.stderr,
                  flush=True)
        raise


def _record_data(net, dataset: str, meta, image: bool) -> None:
    """What ``predict`` needs to take the dataset's raw examples: the standardization fitted
    on the training split, the task and the classes (stored in the model file's metadata)."""
    from . import datasets

    net.metadata["preprocessing"] = datasets.preprocessing(dataset, image=image)
    net.metadata["task"] = meta.task
    if meta.task == "classification":
        net.metadata["classes"] = meta.n_classes


def _save_and_plot(net, hist, save, plot, title: str) -> int:
    """The end of a training command: the model to ``--save``, the history to ``--plot``."""
    if save:
        net.save(save)
        print(f"saved {save}")
    if plot:
        from .plots import plot_history

        plot_history(hist, plot, title=title)
        print(f"plot written to {plot}")
    return 0


def _outputs(args: argparse.Namespace):
    """``--save`` and ``--plot`` checked before any training (a missing directory, no
    matplotlib): ``(save path or None, plot path or None)``."""
    save = _writable_target(args.save, "--save", ".npz") if args.save else None
    plot = _writable_target(args.plot, "--plot", ".png") if args.plot else None
    if plot:
        from .plots import require_matplotlib

        require_matplotlib()
    return save, plot


def _schedule_options(args: argparse.Namespace, epochs: int, schedule: str = "constant"
                      ) -> dict:
    """``fit``'s weight decay, schedule and clipping options from the command line, checked
    here so that a bad value is one line, not a traceback."""
    opts = {"lr_schedule": args.lr_schedule or schedule, "warmup_epochs": args.warmup_epochs}
    if args.warmup_epochs < 0 or args.warmup_epochs >= epochs and args.warmup_epochs > 0:
        raise CLIError(f"--warmup-epochs: expected a number in [0, {epochs}) (shorter than "
                       f"training), got {args.warmup_epochs:g}")
    if args.weight_decay is not None:
        if not args.weight_decay >= 0 or not np.isfinite(args.weight_decay):
            raise CLIError(f"--weight-decay: expected a number ≥ 0, got {args.weight_decay:g}")
        opts["weight_decay"] = args.weight_decay
    if args.clip_grad_norm is not None:
        if not args.clip_grad_norm > 0 or not np.isfinite(args.clip_grad_norm):
            raise CLIError(f"--clip-grad-norm: expected a number > 0, got "
                           f"{args.clip_grad_norm:g}")
        opts["clip_grad_norm"] = args.clip_grad_norm
    return opts


def _train_cnn(args: argparse.Namespace, meta) -> int:
    from . import datasets
    from .models import cnn_layers, resnet_layers
    from .network import Network

    name = args.model
    if args.dataset not in datasets.IMAGE_SHAPES:
        raise CLIError(f"--model {name}: {args.dataset} has no images; use --dataset "
                       f"{' or '.join(datasets.IMAGE_SHAPES)}")
    if args.hidden is not None:
        raise CLIError(f"--hidden: the {name}'s layers are fixed (see loopprop train -h); "
                       "--hidden sizes the mlp")
    if args.loss not in (None, "cross_entropy"):
        raise CLIError(f"--loss: the {name} classifies with cross_entropy")
    defaults = (CNN_DEFAULTS if name == "cnn" else RESNET_DEFAULTS)[args.dataset]
    optimizer = args.optimizer or defaults["optimizer"]
    adam = optimizer in ("adam", "adamw")
    lr = args.lr if args.lr is not None else (defaults["lr"] if adam else 0.02)
    epochs = args.epochs or defaults["epochs"]
    batch = args.batch_size or defaults["batch_size"]
    save, plot = _outputs(args)
    opts = _schedule_options(args, epochs, defaults["schedule"])
    if "weight_decay" not in opts and defaults["weight_decay"] is not None \
            and optimizer == defaults["optimizer"]:
        opts["weight_decay"] = defaults["weight_decay"]
    Xtr, ytr, Xte, yte = datasets.load(args.dataset, dtype=args.dtype, image=True)
    n = Xtr.shape[-1]
    if name == "resnet" and n % batch == 1:
        raise CLIError(f"--batch-size: {n} images in batches of {batch} leave a last batch of "
                       "one image, which batch norm cannot normalize; choose another size")
    layers = cnn_layers(args.dataset) if name == "cnn" else resnet_layers(args.dataset)
    net = Network(layers, loss="cross_entropy", input_shape=Xtr.shape[:-1], dtype=args.dtype,
                  seed=args.seed)
    _record_data(net, args.dataset, meta, image=True)
    net.summary()
    print(f"dataset {args.dataset}: {Xtr.shape[-1]} train / {Xte.shape[-1]} test images; "
          f"{optimizer}, lr {lr:g} ({opts['lr_schedule']}), batch {batch}, "
          f"{_plural(epochs, 'epoch')}", flush=True)
    t0 = time.perf_counter()
    hist = _interruptible(net, save, lambda: net.fit(
        Xtr, ytr, epochs=epochs, batch_size=batch, lr=lr, optimizer=optimizer, seed=args.seed,
        progress=not args.no_progress, validation=(Xte, yte), **opts))
    elapsed = time.perf_counter() - t0
    print(_score_line(net, Xte, yte, yte, meta.task) + f"  ({elapsed:.2f} s; "
          + _epoch_times(hist["time"], hist["compile_time"]) + ")")
    return _save_and_plot(net, hist, save, plot, f"{args.dataset}: {name}")


GPT_DEFAULTS = {"lr": 2e-3, "epochs": 5, "batch_size": 16, "weight_decay": 0.1,
                "warmup_epochs": 0.5, "clip_grad_norm": 1.0}


def _train_gpt(args: argparse.Namespace) -> int:
    from . import models, text

    if args.loss is not None:
        raise CLIError("--loss: not used by --model gpt (a language model with cross-entropy; "
                       "size it with --n-layer, --n-head, --n-embd)")
    if args.n_embd % args.n_head:
        raise CLIError(f"--n-head: n_embd={args.n_embd} is not divisible by n_head="
                       f"{args.n_head}; each head takes n_embd / n_head features")
    optimizer = args.optimizer or "adamw"
    epochs = args.epochs or GPT_DEFAULTS["epochs"]
    batch = args.batch_size or GPT_DEFAULTS["batch_size"]
    lr = args.lr if args.lr is not None else GPT_DEFAULTS["lr"]
    if args.warmup_epochs == 0.0:
        args.warmup_epochs = GPT_DEFAULTS["warmup_epochs"] if epochs > 1 else 0.0
    opts = _schedule_options(args, epochs, "cosine")
    opts.setdefault("weight_decay", GPT_DEFAULTS["weight_decay"])
    opts.setdefault("clip_grad_norm", GPT_DEFAULTS["clip_grad_norm"])
    save, plot = _outputs(args)
    if args.text:
        corpus, source = text.read_text(args.text), args.text
    else:
        corpus, source = text.stdlib_corpus(), "the standard library's .py sources"
    tok = text.CharTokenizer.from_text(corpus)
    ids = tok.encode(corpus)
    train_ids, val_ids = text.split(ids, 0.1)
    T = args.block_size
    if len(train_ids) <= T or len(val_ids) <= T:
        raise CLIError(f"--text: {len(corpus)} characters are too few for windows of "
                       f"--block-size {T} (the last 10% is held out: each part needs more "
                       f"than {T}); use a longer text or a smaller --block-size")
    val_ids = val_ids[:args.val_tokens + 1]
    net = models.gpt(tok.vocab_size, T, args.n_layer, args.n_head, args.n_embd,
                     dtype=args.dtype or "float32", seed=args.seed)
    net.metadata["tokenizer"] = tok.to_config()
    net.metadata["text"] = source
    h = text.unigram_entropy(train_ids, tok.vocab_size)
    print(f"gpt: {args.n_layer} layers, {args.n_head} heads, n_embd {args.n_embd}, block {T}, "
          f"vocabulary {tok.vocab_size} characters, {net._theta.size:,} parameters "
          f"({net.dtype.name})\ntext: {source}: {len(corpus):,} characters ({len(train_ids):,} "
          f"train / {len(val_ids):,} validation); unigram entropy {h:.3f} nats/char\n"
          f"{optimizer}, lr {lr:g} ({opts['lr_schedule']}, warm-up {args.warmup_epochs:g} "
          f"epochs), batch {batch}, {_plural(epochs, 'epoch')} of {args.steps_per_epoch} steps",
          flush=True)
    t0 = time.perf_counter()
    hist = _interruptible(net, save, lambda: net.fit_text(
        train_ids, epochs=epochs, steps_per_epoch=args.steps_per_epoch, batch_size=batch, lr=lr,
        optimizer=optimizer, seed=args.seed, progress=not args.no_progress,
        validation=val_ids, **opts))
    elapsed = time.perf_counter() - t0
    rate = hist["tokens_per_s"]
    compiled = sum(hist["compile_time"])
    print(f"validation loss {hist['val_loss'][-1]:.4f} nats/char (unigram {h:.3f}), train loss "
          f"{hist['loss'][-1]:.4f}  ({elapsed:.1f} s"
          + (f", of which compiling {compiled:.1f} s" if compiled > 0 else "")
          + f"; {rate[-1]:,.0f} tokens/s in the last epoch)")
    return _save_and_plot(net, hist, save, plot, f"gpt on {source}")


def _cmd_sample(args: argparse.Namespace) -> int:
    from .generate import sample
    from .text import CharTokenizer

    net = _load_model(args.model)
    try:
        tok = CharTokenizer.from_config(net.metadata.get("tokenizer"))
    except ValueError as exc:
        raise CLIError(f"{args.model}: {exc}") from None
    if not (args.temperature >= 0 and np.isfinite(args.temperature)):
        raise CLIError(f"--temperature: expected a number ≥ 0 (0: always the most probable "
                       f"character), got {args.temperature:g}")
    if not args.prompt:
        raise CLIError("--prompt: expected at least one character")
    try:
        prompt = tok.encode(args.prompt)
    except ValueError as exc:
        raise CLIError(f"--prompt: {exc}".replace("text: ", "")) from None
    new = sample(net, prompt, args.tokens, temperature=args.temperature, seed=args.seed)
    print(args.prompt + tok.decode(new))
    return 0


def _epoch_times(times: list[float], compile_times: list[float] | None = None) -> str:
    """The first epoch (which includes compiling, or loading compiled code) apart from the
    mean of the others."""
    text = f"first epoch {times[0] * 1e3:.1f} ms"
    if compile_times and compile_times[0] > 0:
        text += f" (of which compiling {compile_times[0]:.1f} s)"
    if len(times) > 1:
        rest = times[1:]
        text += f", later epochs {1e3 * sum(rest) / len(rest):.1f} ms on average"
    return text


def _score_line(net, X, y, y_fit, task: str) -> str:
    ev = net.evaluate(X, y_fit)
    line = f"test loss {ev['loss']:.4f}"
    if task == "classification":
        acc = ev.get("accuracy")
        if acc is None or net.loss == "binary_cross_entropy":
            acc = float(np.mean(net.predict_classes(X).reshape(-1) == y))
        line += f", test accuracy {100 * acc:.2f}%"
    return line


def _load_model(path: str):
    from .network import Network

    return Network.load(path)


def _targets_for(net, y, task: str):
    """Targets in the form the saved model's loss takes them."""
    if net.loss == "cross_entropy":
        return y
    if net.loss == "mse" and task == "classification":
        return np.eye(net.output_size, dtype=net.dtype)[:, y]
    return y.reshape(1, -1)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from . import datasets

    net = _load_model(args.model)
    _language_model(net, args.model, "evaluate")
    meta = datasets.info(args.dataset)
    image = len(net.input_shape) > 1
    if image and args.dataset not in datasets.IMAGE_SHAPES:
        raise CLIError(f"--dataset: the model in {args.model} takes images {net.input_shape}; "
                       f"{args.dataset} has none")
    Xtr, ytr, Xte, yte = datasets.load(args.dataset, dtype=net.dtype.name, image=image)
    X, y = (Xte, yte) if args.split == "test" else (Xtr, ytr)
    if X.shape[:-1] != net.input_shape:
        raise CLIError(f"--dataset: {args.dataset} has examples of shape {X.shape[:-1]}, the "
                       f"model in {args.model} takes {net.input_shape}")
    if meta.task == "classification" and net.output_size not in (meta.n_classes, 1):
        raise CLIError(f"--dataset: {args.dataset} has {meta.n_classes} classes, the model in "
                       f"{args.model} has {net.output_size} outputs")
    print(f"{net!r}\n{args.dataset}, {args.split} split ({X.shape[-1]} examples): "
          + _score_line(net, X, y, _targets_for(net, y, meta.task), meta.task)
          .replace("test ", ""))
    return 0


def _read_matrix(path: str, option: str) -> np.ndarray:
    """A 2-D table of numbers from a ``.npy`` or ``.csv`` file; a CSV's first line may be a
    header of names (skipped, and said so on stderr)."""
    import os
    import warnings

    if not os.path.isfile(path):
        raise CLIError(f"{option}: no such file: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".csv", ".txt"):
        raise CLIError(f"{option}: expected a .npy or .csv file, got {path}")
    try:
        if ext == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            with open(path, encoding="utf-8") as fh:
                lines = [line for line in fh.read().splitlines() if line.strip()]
            if not lines:
                raise CLIError(f"{option}: {path} is empty; expected one example per line")
            if not _numeric_row(lines[0]):
                if len(lines) == 1:
                    raise CLIError(f"{option}: {path} holds a header and no examples")
                print(f"loopprop: {path}: the first line is not numbers; read as a header and "
                      "skipped", file=sys.stderr)
                lines = lines[1:]
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                arr = np.loadtxt(lines, delimiter=",", ndmin=2)
    except CLIError:
        raise
    except (ValueError, OSError, UnicodeDecodeError, UserWarning) as exc:
        raise CLIError(f"{option}: cannot read {path}: {exc}") from None
    if arr.dtype.kind not in "iuf" or arr.size == 0:
        raise CLIError(f"{option}: expected a non-empty table of numbers in {path}, got "
                       f"shape {arr.shape}, dtype {arr.dtype}")
    return arr


def _numeric_row(line: str) -> bool:
    try:
        [float(v) for v in line.split(",")]
    except ValueError:
        return False
    return True


def _output_target(path: str) -> str:
    """``predict --output``: ``.npy`` (NumPy) or ``.csv``/``.txt`` (comma-separated text);
    without an extension ``.npy`` is added. The path reported is the path written."""
    import os

    ext = os.path.splitext(path)[1].lower()
    if ext and ext not in (".npy", ".csv", ".txt"):
        raise CLIError(f"--output: expected a .npy, .csv or .txt file, got {path}")
    return _writable_target(path, "--output", ".npy")


def _language_model(net, path: str, command: str) -> None:
    if len(net.output_shape) > 1 or "tokenizer" in net.metadata:
        raise CLIError(f"{path} is a language model (a GPT): {command} takes models of the "
                       "mlp, cnn and resnet; continue a prompt with: loopprop sample "
                       f"{path} --prompt TEXT")


def _cmd_predict(args: argparse.Namespace) -> int:
    from . import _files, datasets

    net = _load_model(args.model)
    _language_model(net, args.model, "predict")
    out = _output_target(args.output) if args.output else None  # checked before any work
    X = _read_matrix(args.input, "--input")
    if X.ndim == 1:
        X = X.reshape(1, -1) if not args.columns else X.reshape(-1, 1)
    if X.ndim != 2:
        raise CLIError(f"--input: expected a 2-D table of examples, got shape {X.shape}")
    if not args.columns:
        X = X.T  # the file has one example per row; loopprop's examples are columns
    n0 = net.input_size  # images: one flattened image per row (C·H·W values)
    if X.shape[0] != n0:
        layout = "column" if args.columns else "row"
        raise CLIError(f"--input: the model takes {n0} features per example, the file has "
                       f"{X.shape[0]} per {layout}"
                       + ("" if args.columns else "; pass --columns if examples are columns"))
    prep = net.metadata.get("preprocessing")
    if prep is not None and not args.standardized:
        try:
            X = datasets.standardize(X, prep)
        except (KeyError, TypeError, ValueError) as exc:
            raise CLIError(f"{args.model}: its preprocessing record is unusable ({exc}); pass "
                           "--standardized with inputs standardized as in training") from None
    A = net.predict(X)
    task = net.metadata.get("task")
    classify = net.loss != "mse" or (task == "classification" and A.shape[0] > 1)
    classes = net.predict_classes(X).reshape(-1) if classify else None
    if prep is not None and "target_std" in prep:  # regression: back to the target's units
        A = A * prep["target_std"] + prep["target_mean"]
    label = "p" if net.loss != "mse" else "outputs"  # probabilities, or a classifier's outputs
    for k in range(A.shape[1]):
        values = " ".join(f"{v:.6g}" for v in A[:, k])
        print(f"{k}: class {classes[k]}  {label} = {values}" if classify else f"{k}: {values}")
    if out:
        if out.lower().endswith((".csv", ".txt")):
            with _files.atomic_path(out) as tmp:
                np.savetxt(tmp, A, delimiter=",")
        else:
            _files.atomic_write(out, lambda fh: np.save(fh, A))
        print(f"outputs ({A.shape[0]}, {A.shape[1]}) written to {out}")
    return 0


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
    from .network import Network

    rng = np.random.default_rng(seed)
    if name == "gpt":
        from .models import gpt

        net = gpt(11, 8, 2, 2, 16, dtype="float64", seed=seed)
        return net, rng.integers(0, 11, (8, batch)), rng.integers(0, 11, (8, batch))
    from .models import cnn_layers, resnet_layers

    layers = cnn_layers("digits") if name == "cnn" else resnet_layers("digits")
    net = Network(layers, loss="cross_entropy", input_shape=(1, 8, 8), seed=seed)
    if name == "cnn":
        net.eval()  # dropout: its random mask would move the loss between evaluations
    return net, rng.standard_normal((1, 8, 8, batch)), rng.integers(0, 10, batch)


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain_neuron, explain_weight

    if args.model:
        from .explain_layers import explain_param

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
    from .diagrams import to_mermaid
    from .models import cnn_layers, resnet_layers
    from .network import Network

    if args.file is not None:
        net = _load_model(args.file)
    elif args.model == "cnn":
        net = Network(cnn_layers("digits"), loss="cross_entropy", input_shape=(1, 8, 8))
    elif args.model == "resnet":
        net = Network(resnet_layers("digits"), loss="cross_entropy", input_shape=(1, 8, 8))
    elif args.model == "gpt":
        from .models import gpt

        net = gpt(65, 16, 2, 2, 32)
    else:
        sizes = args.network
        acts = [args.activation] * (len(sizes) - 2) + [args.output]
        loss = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(args.output,
                                                                                  "mse")
        net = Network(sizes, acts, loss)
    print(to_mermaid(net, args.kind, batch_size=args.batch_size))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run

    run(dtype=args.dtype, quick=args.quick, select=args.select)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    commands = {"train": _cmd_train, "sample": _cmd_sample, "evaluate": _cmd_evaluate,
                "predict": _cmd_predict,
                "explain": _cmd_explain, "diagram": _cmd_diagram, "bench": _cmd_bench,
                "compile": _cmd_compile}
    import contextlib

    from . import _compiling

    # a first run says when it compiles, and for how long (``compile`` names each step itself)
    notices = contextlib.nullcontext() if args.command == "compile" else _compiling.notices()
    try:
        with notices:
            return commands[args.command](args)
    except KeyboardInterrupt:
        print("loopprop: interrupted", file=sys.stderr, flush=True)
        if _compiling.WATCH.compiling():
            # a worker thread is inside Numba's compiler: leave without the interpreter's
            # shutdown, which could meet it holding LLVM's locks
            sys.stdout.flush()
            import os

            os._exit(130)
        return 130
    except (CLIError, ValueError, TypeError, ImportError, OSError, FloatingPointError,
            RuntimeError) as exc:
        print(f"loopprop: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
