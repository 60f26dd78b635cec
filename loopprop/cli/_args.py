"""The command line's argument types, its parser class (one-line errors, exit 2) and small
shared helpers."""

from __future__ import annotations

import argparse

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


LOSS_CHOICES = ("cross_entropy", "binary_cross_entropy", "mse")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


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


def _score_line(net, X, y, y_fit, task: str) -> str:
    ev = net.evaluate(X, y_fit)
    line = f"test loss {ev['loss']:.4f}"
    if task == "classification":
        acc = ev.get("accuracy")
        if acc is None or net.loss == "binary_cross_entropy":
            acc = float(np.mean(net.predict_classes(X).reshape(-1) == y))
        line += f", test accuracy {100 * acc:.2f}%"
    return line
