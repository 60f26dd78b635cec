"""``loopprop predict`` and ``loopprop evaluate`` on saved models: raw inputs, output files,
CSV headers, squared-error classifiers, language models."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import one_line_error, run_cli

import loopprop as lp
from loopprop import datasets


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A digits MLP saved by ``loopprop train`` (5 epochs), and the folder it is in."""
    pytest.importorskip("sklearn")
    folder = tmp_path_factory.mktemp("digits")
    r = run_cli("train", "--epochs", "5", "--hidden", "64", "--no-progress", "--save", "m.npz",
                cwd=folder)
    assert r.returncode == 0, r.stderr
    return folder


def test_predict_standardizes_raw_rows_as_training_did(digits_model):
    """The CLI standardizes every dataset with the training split's mean and std; the model
    file once did not record it, and scikit-learn's raw digits were 69.9 % right with confident
    probabilities. The oracle: the same rows standardized by hand with the training split's
    statistics (NumPy on scikit-learn's data and loopprop's split indices)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savetxt(digits_model / "raw.csv", d.data, delimiter=",")
    r = run_cli("predict", "m.npz", "--input", "raw.csv", "--output", "p.npy",
                cwd=digits_model)
    assert r.returncode == 0, r.stderr
    P = np.load(digits_model / "p.npy")
    tr, _ = datasets.split(d.data, d.target, stratify=True)
    mu, sd = d.data[tr].mean(axis=0), d.data[tr].std(axis=0)
    sd[sd == 0] = 1.0
    net = lp.Network.load(digits_model / "m.npz")
    np.testing.assert_allclose(P, net.predict(((d.data - mu) / sd).T), rtol=1e-12, atol=1e-15)
    assert (P.argmax(axis=0) == d.target).mean() > 0.93
    # already standardized inputs: --standardized takes them as they are
    Xs = ((d.data[:5] - mu) / sd)
    np.savetxt(digits_model / "std.csv", Xs, delimiter=",")
    r = run_cli("predict", "m.npz", "--input", "std.csv", "--standardized", "--output",
                "q.npy", cwd=digits_model)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(digits_model / "q.npy"), P[:, :5], rtol=1e-12)


def test_predict_writes_the_file_it_names(digits_model):
    """``--output p.txt`` once reported p.txt and wrote p.txt.npy."""
    X = np.zeros((2, 64))
    np.save(digits_model / "x.npy", X)
    for name, read in (("p.txt", lambda f: np.loadtxt(f, delimiter=",")),
                       ("p.csv", lambda f: np.loadtxt(f, delimiter=",")),
                       ("pp", lambda f: np.load(str(f) + ".npy"))):
        r = run_cli("predict", "m.npz", "--input", "x.npy", "--output", name, cwd=digits_model)
        assert r.returncode == 0, r.stderr
        written = name if "." in name else name + ".npy"
        assert f"written to {written}\n" in r.stdout
        assert read(digits_model / name).shape == (10, 2)
    assert not (digits_model / "p.txt.npy").exists()
    one_line_error(run_cli("predict", "m.npz", "--input", "x.npy", "--output", "p.json",
                           cwd=digits_model), "--output")


def test_predict_checks_its_output_folder_before_printing(digits_model):
    np.save(digits_model / "x.npy", np.zeros((3, 64)))
    r = run_cli("predict", "m.npz", "--input", "x.npy", "--output", "no/such/dir/p.npy",
                cwd=digits_model)
    one_line_error(r, "--output")
    assert r.stdout == ""  # nothing printed before the error


def test_predict_reads_a_header_and_refuses_empty_files(digits_model):
    rows = np.random.default_rng(0).uniform(0, 16, (3, 64))
    np.savetxt(digits_model / "h.csv", rows, delimiter=",",
               header=",".join(f"pixel{i}" for i in range(64)), comments="")
    np.savetxt(digits_model / "n.csv", rows, delimiter=",")
    with_header = run_cli("predict", "m.npz", "--input", "h.csv", cwd=digits_model)
    plain = run_cli("predict", "m.npz", "--input", "n.csv", cwd=digits_model)
    assert with_header.returncode == 0 and "header" in with_header.stderr
    assert with_header.stdout == plain.stdout
    (digits_model / "empty.csv").write_text("")
    r = run_cli("predict", "m.npz", "--input", "empty.csv", cwd=digits_model)
    one_line_error(r, "empty")
    assert "Warning" not in r.stderr
    (digits_model / "head.csv").write_text("a,b,c\n")
    one_line_error(run_cli("predict", "m.npz", "--input", "head.csv", cwd=digits_model),
                   "no examples")


def test_a_squared_error_classifier_gives_classes_and_accuracy_everywhere(tmp_path):
    """mse on one-hot targets: evaluate(X, labels) once raised in Python while the CLI printed
    an accuracy, and predict printed raw outputs instead of classes."""
    pytest.importorskip("sklearn")
    r = run_cli("train", "--dataset", "iris", "--loss", "mse", "--epochs", "30",
                "--no-progress", "--save", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    net = lp.Network.load(tmp_path / "m.npz")
    _, _, Xte, yte = datasets.load("iris")
    ev = net.evaluate(Xte, yte)
    A = net.predict(Xte)
    assert ev["accuracy"] == pytest.approx(np.mean(A.argmax(axis=0) == yte))
    onehot = np.eye(3)[:, yte]
    assert ev["loss"] == pytest.approx(0.5 * ((A - onehot) ** 2).sum() / yte.size, rel=1e-12)
    assert f"accuracy {100 * ev['accuracy']:.2f}%" in r.stdout
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        net.evaluate(Xte, np.full(yte.size, 3))
    rows = datasets.preprocessing("iris")
    raw = Xte.T * np.array(rows["std"]) + np.array(rows["mean"])  # back to the file's units
    np.savetxt(tmp_path / "x.csv", raw[:4], delimiter=",")
    p = run_cli("predict", "m.npz", "--input", "x.csv", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for k, c in enumerate(A[:, :4].argmax(axis=0)):
        assert f"{k}: class {c}  outputs = " in p.stdout


def test_predict_and_evaluate_point_a_language_model_to_sample(tmp_path):
    from loopprop import models, text

    tok = text.CharTokenizer.from_text("abcdef")
    net = models.gpt(tok.vocab_size, 4, 1, 1, 4, seed=0)
    net.metadata["tokenizer"] = tok.to_config()
    net.save(tmp_path / "g.npz")
    np.save(tmp_path / "x.npy", np.zeros((1, 4)))
    for args in (["predict", "g.npz", "--input", "x.npy"], ["evaluate", "g.npz"]):
        one_line_error(run_cli(*args, cwd=tmp_path), "loopprop sample g.npz")


def test_regression_predictions_are_in_the_targets_units(tmp_path):
    pytest.importorskip("sklearn")
    r = run_cli("train", "--dataset", "diabetes", "--epochs", "3", "--no-progress", "--save",
                "d.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    np.savetxt(tmp_path / "x.csv", d.data[:3], delimiter=",")
    p = run_cli("predict", "d.npz", "--input", "x.csv", "--output", "y.npy", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    tr, _ = datasets.split(d.data, d.target, stratify=False)
    mu, sd = d.data[tr].mean(axis=0), d.data[tr].std(axis=0)
    net = lp.Network.load(tmp_path / "d.npz")
    want = net.predict(((d.data[:3] - mu) / sd).T) * d.target[tr].std() + d.target[tr].mean()
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-10)


_one_line_error = one_line_error


def test_cli_save_adds_npz_then_evaluate_and_predict(tmp_path):
    pytest.importorskip("sklearn")
    r = run_cli("train", "--dataset", "iris", "--epochs", "1", "--no-progress", "--save",
                "mymodel", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mymodel.npz").exists()
    assert "1 epoch" in r.stdout and "1 epochs" not in r.stdout
    assert "later epochs" not in r.stdout  # one epoch: nothing to average after the first
    r = run_cli("evaluate", "mymodel.npz", "--dataset", "iris", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _, _, Xte, yte = lp.datasets.load("iris")
    net = lp.Network.load(tmp_path / "mymodel.npz")
    acc = net.evaluate(Xte, yte)["accuracy"]
    assert f"accuracy {100 * acc:.2f}%" in r.stdout
    np.savetxt(tmp_path / "x.csv", Xte.T[:3], delimiter=",")
    r = run_cli("predict", "mymodel.npz", "--input", "x.csv", "--output", "p.npy",
                "--standardized", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), net.predict(Xte[:, :3]), rtol=1e-12)
    classes = net.predict_classes(Xte[:, :3])
    for k in range(3):
        assert f"{k}: class {classes[k]}" in r.stdout
    _one_line_error(run_cli("predict", "mymodel.npz", "--input", "x.csv", "--columns",
                            cwd=tmp_path), "--input")
    _one_line_error(run_cli("evaluate", "mymodel.npz", "--dataset", "digits", cwd=tmp_path),
                    "--dataset")
