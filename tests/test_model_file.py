"""The model file (loopprop/model_file.py): save and load round trips, and every damaged,
foreign or crafted file refused with an error naming it before anything is allocated."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import rand

import loopprop as lp
from loopprop.network import ModelFileError


def _model_file(path, meta, theta):
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), theta=theta)
    return path


GOOD = {"format": "loopprop.Network", "format_version": 1, "layer_sizes": [2, 1],
        "activations": ["identity"], "loss": "mse", "dtype": "float64", "seed": 0,
        "init": "he", "alpha": 0.01}


@pytest.mark.parametrize("change,pattern", [
    ({"layer_sizes": [6000, 6000, 3], "activations": ["relu", "softmax"],
      "loss": "cross_entropy"}, r"needs \(36024003,\)"),
    ({"layer_sizes": [1e9, 1e9, 3]}, "layer_sizes must be a list"),
    ({"layer_sizes": [10**9, 10**9, 3]}, "more than any real model"),
    ({"format_version": "1"}, "format_version must be a positive integer"),
    ({"format_version": True}, "format_version must be a positive integer"),
    ({"format_version": lp.network.FORMAT_VERSION + 1}, "newer than this loopprop"),
    ({"alpha": float("nan")}, "alpha"),
    ({"seed": "x"}, "seed"),
])
def test_load_checks_metadata_before_allocating(tmp_path, change, pattern):
    path = _model_file(tmp_path / "m.npz", {**GOOD, **change}, np.ones(3))
    with pytest.raises(ModelFileError, match=pattern):
        lp.Network.load(path)


def test_load_of_missing_npy_and_text_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model file"):
        lp.Network.load(tmp_path / "missing.npz")
    np.save(tmp_path / "a.npy", np.ones(3))
    with pytest.raises(ModelFileError, match="single NumPy array"):
        lp.Network.load(tmp_path / "a.npy")
    (tmp_path / "t.txt").write_text("hello\n")
    with pytest.raises(ModelFileError, match="not a loopprop model file") as err:
        lp.Network.load(tmp_path / "t.txt")
    assert "allow_pickle" not in str(err.value)
    good = _model_file(tmp_path / "g.npz", GOOD, np.array([0.5, -1.0, 0.25]))
    np.testing.assert_array_equal(lp.Network.load(good).flat_params, [0.5, -1.0, 0.25])


def test_load_of_an_oversized_claim_allocates_nothing_large(tmp_path):
    """A 1.8 KB file claiming [6000, 6000, 3] used to allocate 550 MiB before failing."""
    import tracemalloc

    meta = {**GOOD, "layer_sizes": [6000, 6000, 3], "activations": ["relu", "softmax"],
            "loss": "cross_entropy"}
    path = _model_file(tmp_path / "big.npz", meta, np.ones(3))
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError, match="corrupted"):
            lp.Network.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"loading a bad file allocated {peak / 2**20:.0f} MiB"


def _saved(tmp_path):
    path = tmp_path / "model.npz"
    lp.Network([2, 3, 1], ["relu", "sigmoid"], "binary_cross_entropy").save(path)
    return path


@pytest.mark.parametrize("seed", [2**37 - 1, 2**43 - 1, 2**44, 2**64, 10**30])
def test_any_integer_seed_trains_and_saves(tmp_path, seed):
    """Seeds ≥ 2⁴⁴ once overflowed the dropout seed of every forward pass (seed·2²⁰ + count)
    and failed with a Numba TypingError."""
    from loopprop.layers import Dense, Dropout, ReLU, Softmax

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((4, 16)), rng.integers(0, 3, 16)
    net = lp.Network([Dense(8), ReLU(), Dropout(0.5), Dense(3), Softmax()],
                     loss="cross_entropy", input_shape=(4,), seed=seed)
    A = net.forward(X)
    np.testing.assert_allclose(A.sum(axis=0), 1.0, rtol=1e-12)
    net.fit(X, y, epochs=2, batch_size=8, progress=False)
    assert np.isfinite(net.evaluate(X, y)["loss"])
    net.save(tmp_path / "m.npz")
    assert lp.Network.load(tmp_path / "m.npz").seed == seed


def test_save_load_round_trips_bitwise(tmp_path, rng):
    net = lp.Network([3, 5, 2], ["tanh", "softmax"], "cross_entropy", dtype="float32", seed=5)
    net.fit(rand(rng, (3, 20), np.float32), rng.integers(0, 2, 20), epochs=2, progress=False)
    path = tmp_path / "model.npz"
    net.save(path)
    back = lp.Network.load(path)
    assert back.layer_sizes == net.layer_sizes and back.activations == net.activations
    assert back.loss == net.loss and back.dtype == net.dtype
    np.testing.assert_array_equal(back.flat_params, net.flat_params)
    X = rand(rng, (3, 4), np.float32)
    np.testing.assert_array_equal(back.predict(X), net.predict(X))


def test_a_failed_save_keeps_the_file_it_would_overwrite(tmp_path):
    net = lp.Network([2, 3, 1], ["relu", "sigmoid"], "binary_cross_entropy", seed=1)
    path = tmp_path / "m.npz"
    net.save(path)
    good = path.read_bytes()
    net.metadata["note"] = np.float32(1.5)  # not a JSON value
    with pytest.raises(TypeError, match="metadata"):
        net.save(path)
    assert path.read_bytes() == good
    assert lp.Network.load(path).metadata == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]  # no temporary file left
    net.metadata["note"] = float("nan")  # JSON has no NaN
    with pytest.raises(TypeError, match="metadata"):
        net.save(path)
    assert path.read_bytes() == good


def test_truncated_file_is_refused(tmp_path):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(lp.ModelFileError, match=str(path).replace("\\", "\\\\")):
        lp.Network.load(path)


def test_file_that_is_not_a_model_is_refused(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("hello")
    with pytest.raises(lp.ModelFileError, match="notes.npz"):
        lp.Network.load(path)
    other = tmp_path / "arrays.npz"
    np.savez(other, a=np.ones(3))
    with pytest.raises(lp.ModelFileError, match="not a loopprop model"):
        lp.Network.load(other)


def test_corrupted_file_is_refused(tmp_path):
    path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(lp.ModelFileError, match="model.npz"):
        lp.Network.load(path)


def test_corrupted_weights_shape_is_refused(tmp_path):
    import json
    path = tmp_path / "model.npz"
    meta = {"format": "loopprop.Network", "format_version": 1, "layer_sizes": [2, 3, 1],
            "activations": ["relu", "sigmoid"], "loss": "binary_cross_entropy",
            "dtype": "float64"}
    np.savez(path, meta=np.array(json.dumps(meta)), theta=np.ones(5))
    with pytest.raises(lp.ModelFileError, match="corrupted"):
        lp.Network.load(path)


def test_newer_format_version_is_refused(tmp_path):
    import json
    path = _saved(tmp_path)
    with np.load(path) as d:
        meta, theta = json.loads(str(d["meta"][()])), d["theta"]
    meta["format_version"] = lp.network.FORMAT_VERSION + 1
    np.savez(path, meta=np.array(json.dumps(meta)), theta=theta)
    with pytest.raises(lp.ModelFileError, match="newer.*upgrade loopprop"):
        lp.Network.load(path)


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        lp.Network.load(os.path.join(tmp_path, "absent.npz"))
