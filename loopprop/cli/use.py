"""Using a saved model: ``loopprop evaluate``, ``predict`` and ``sample``."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ._args import CLIError, _score_line, _writable_target


def _cmd_sample(args: argparse.Namespace) -> int:
    from ..generate import sample
    from ..text import CharTokenizer

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


def _load_model(path: str):
    from ..network import Network

    return Network.load(path)


def _targets_for(net, y, task: str):
    """Targets in the form the saved model's loss takes them."""
    if net.loss == "cross_entropy":
        return y
    if net.loss == "mse" and task == "classification":
        return np.eye(net.output_size, dtype=net.dtype)[:, y]
    return y.reshape(1, -1)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .. import datasets

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
    from .. import _files, datasets

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
