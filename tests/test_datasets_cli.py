"""Datasets (layout, split, scaling) and the ``loopprop`` command (errors are one line)."""

import subprocess
import sys

import numpy as np
import pytest

from loopprop import cli, datasets

SYNTHETIC = ["spirals", "xor", "blobs"]
REAL = ["digits", "iris", "breast_cancer", "diabetes"]


@pytest.mark.parametrize("name", SYNTHETIC + REAL)
def test_layout_split_and_scaling(name):
    if name in REAL:
        pytest.importorskip("sklearn")
    Xtr, ytr, Xte, yte = datasets.load(name)
    n = Xtr.shape[1] + Xte.shape[1]
    assert Xtr.shape[0] == Xte.shape[0]  # features are rows
    assert ytr.shape == (Xtr.shape[1],) and yte.shape == (Xte.shape[1],)
    assert abs(Xte.shape[1] / n - 0.2) < 0.02
    np.testing.assert_allclose(Xtr.mean(axis=1), 0, atol=1e-10)
    info = datasets.info(name)
    if info.task == "classification":
        assert ytr.dtype == np.int64
        # stratified: every class keeps its share in the test split
        all_y = np.concatenate([ytr, yte])
        for c in range(info.n_classes):
            assert abs((yte == c).sum() - 0.2 * (all_y == c).sum()) <= 1
    # the same call gives the same split
    np.testing.assert_array_equal(datasets.load(name)[0], Xtr)


@pytest.mark.parametrize("dtype", ["float16", np.float16, "int64", int, 3, "bogus"])
def test_load_refuses_dtypes_the_kernels_do_not_take(dtype):
    """float16 was once returned, to be refused later by Network with another message."""
    with pytest.raises(TypeError, match="dtype: expected 'float32' or 'float64'"):
        datasets.load("xor", dtype=dtype)
    assert datasets.load("xor", dtype=np.float32)[0].dtype == np.float32


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="valid names are digits, iris"):
        datasets.load("mnist")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "loopprop", *args], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("args,pattern", [
    (["train", "--dataset", "mnist"], "invalid choice: 'mnist'"),
    (["train", "--epochs", "0"], "expected a positive integer"),
    (["train", "--hidden", "a-b"], "expected positive sizes like"),
    (["train", "--lr", "-1", "--dataset", "xor", "--epochs", "1"], "lr:"),
    # an option the chosen model does not read is refused (--text once trained the digits MLP)
    (["train", "--text", "x.csv"], "--text: not used by --model mlp"),
    (["train", "--n-layer", "2"], "--n-layer: not used by --model mlp"),
    (["train", "--model", "cnn", "--activation", "tanh"], "--activation: not used by --model cnn"),
    (["train", "--model", "resnet", "--hidden", "8"], "--hidden: not used by --model resnet"),
    (["train", "--model", "gpt", "--dataset", "iris"], "--dataset: not used by --model gpt"),
    (["train", "--model", "gpt", "--block-size", "8", "--hidden", "8"], "--hidden"),
])
def test_cli_errors_are_one_line(args, pattern):
    r = run_cli(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loopprop: error:"), r.stderr
    assert pattern in lines[0]


def test_cli_trains_a_synthetic_set(tmp_path):
    model = tmp_path / "xor.npz"
    r = run_cli("train", "--dataset", "xor", "--hidden", "8", "--epochs", "30",
                "--optimizer", "adam", "--lr", "0.01", "--no-progress", "--save", str(model))
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout
    acc = float(r.stdout.split("test accuracy ")[1].split("%")[0])
    assert acc > 85.0
    from loopprop import Network

    assert Network.load(model).layer_sizes == [2, 8, 2]


def test_missing_extra_is_reported(monkeypatch, capsys, tmp_path):
    import builtins

    monkeypatch.setenv("LOOPPROP_CACHE", str(tmp_path))  # no local copy to fall back on

    real_import = builtins.__import__

    def no_sklearn(name, *a, **k):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    assert cli.main(["train", "--dataset", "iris", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "loopprop[data]"' in err


def test_local_copy_of_a_bundled_dataset_is_identical(monkeypatch, tmp_path):
    pytest.importorskip("sklearn")
    monkeypatch.setenv("LOOPPROP_CACHE", str(tmp_path))
    first = datasets.load("iris")
    assert list(tmp_path.glob("iris-sklearn-*.npz"))
    second = datasets.load("iris")  # from the copy
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    next(tmp_path.glob("iris-sklearn-*.npz")).write_bytes(b"garbage")
    for a, b in zip(first, datasets.load("iris")):  # a damaged copy is read around
        np.testing.assert_array_equal(a, b)


def test_version_dir_and_help_texts():
    import os
    import re

    import loopprop as lp

    root = os.path.dirname(os.path.dirname(os.path.abspath(lp.__file__)))
    with open(os.path.join(root, "pyproject.toml")) as fh:
        declared = re.search(r'^version = "([^"]+)"', fh.read(), re.MULTILINE).group(1)
    assert lp.__version__ == declared
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"loopprop {declared}"
    for name in ("models", "text", "generate", "diagrams", "bench", "Network", "dense_forward"):
        assert name in dir(lp), name
    for command in ("train", "explain", "diagram", "bench", "predict", "evaluate", "sample"):
        text = cli.build_parser()._subparsers._group_actions[0].choices[command].format_help()
        usage_end = text.index("\n\n")
        assert text[usage_end:].strip().split("\n")[0] != "options:", f"{command}: no description"
    train = cli.build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "Train a dense network" not in train and "gpt" in train
    assert "(default: 0)" in train  # --seed: defaults are shown
