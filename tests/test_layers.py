"""Networks built from layer objects (issue: layers as forward/backward pairs).

A whole CNN step against the same model in PyTorch, every gradient compared by name; fit against
the Python loop of forward/backward/step; bitwise reproducibility across thread counts and
dropout masks; save/load of every layer kind; the summary; the legacy form's numbers.
"""

from __future__ import annotations

import json

import numba
import numpy as np
import pytest
from helpers import assert_close, python_loop, torch_or_skip

import loopprop as lp
from loopprop.bench import torch_twin
from loopprop.layers import (GELU, AvgPool2d, Conv2d, Dense, Dropout, Flatten, GELUTanh,
                             Identity, LeakyReLU, MaxPool2d, ReLU, Sigmoid, Softmax, Tanh)


def small_cnn():
    return [Conv2d(3, 3, padding=1), ReLU(), MaxPool2d(2), Conv2d(4, (2, 3)), Tanh(),
            AvgPool2d(2, 1), Flatten(), Dense(6), LeakyReLU(0.1), Dense(5), Softmax()]


def test_cnn_step_matches_torch_gradient_by_gradient(rng):
    torch = torch_or_skip()
    net = lp.Network(small_cnn(), loss="cross_entropy", input_shape=(2, 8, 8), seed=1)
    X = rng.standard_normal((2, 8, 8, 5))
    y = rng.integers(0, 5, 5)
    net.zero_grad()
    P = net.forward(X)
    loss = net.backward(y)
    model, mods = torch_twin(torch, net, copy_weights=True)
    out = model(torch.tensor(np.moveaxis(X, -1, 0).copy()))
    tl = torch.nn.functional.cross_entropy(out, torch.tensor(y))
    tl.backward()
    assert abs(loss - tl.item()) <= 1e-12 * abs(tl.item())
    assert_close("P", P, torch.softmax(out, 1).detach().numpy().T, 1e-10)
    for l, ((dW, db), mod) in enumerate(zip(net.grads, mods), 1):
        assert_close(f"dW^({l})", dW, mod.weight.grad.numpy(), 1e-10)
        assert_close(f"db^({l})", db, mod.bias.grad.numpy(), 1e-10)


def test_cnn_gradcheck(rng):
    net = lp.Network(small_cnn(), loss="cross_entropy", input_shape=(2, 8, 8), seed=2)
    X = rng.standard_normal((2, 8, 8, 3))
    assert lp.gradcheck(net, X, rng.integers(0, 5, 3)) < 1e-6


@pytest.mark.parametrize("act", [Identity, Sigmoid, Tanh, ReLU, GELU, GELUTanh])
def test_every_activation_layer_in_a_network_matches_finite_differences(rng, act):
    net = lp.Network([Dense(4), act(), Dense(3), Identity()], loss="mse", input_shape=(3,),
                     seed=3)
    X = rng.standard_normal((3, 4))
    assert lp.gradcheck(net, X, rng.standard_normal((3, 4))) < 1e-6


def test_fit_equals_the_python_loop_of_steps(rng):
    X = rng.standard_normal((2, 8, 8, 23))
    y = rng.integers(0, 5, 23)
    a = lp.Network(small_cnn(), loss="cross_entropy", input_shape=(2, 8, 8), seed=4)
    b = lp.Network(small_cnn(), loss="cross_entropy", input_shape=(2, 8, 8), seed=4)
    a.fit(X, y, epochs=2, batch_size=6, lr=0.05, shuffle=False, progress=False)
    python_loop(b, X, y, 2, 6, 0.05)
    np.testing.assert_allclose(a.flat_params, b.flat_params, rtol=1e-12, atol=1e-14)


def test_same_seed_same_bits_on_any_thread_count(rng):
    X = rng.standard_normal((2, 8, 8, 40))
    y = rng.integers(0, 5, 40)
    layers = small_cnn()
    layers.insert(8, Dropout(0.3))
    runs = []
    saved = numba.get_num_threads()
    try:
        for threads in (1, saved, 1):
            numba.set_num_threads(threads)
            net = lp.Network(layers, loss="cross_entropy", input_shape=(2, 8, 8), seed=5)
            net.fit(X, y, epochs=2, batch_size=8, lr=0.05, progress=False, seed=7)
            runs.append(net.flat_params.copy())
    finally:
        numba.set_num_threads(saved)
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])
    other = lp.Network(layers, loss="cross_entropy", input_shape=(2, 8, 8), seed=5)
    other.fit(X, y, epochs=2, batch_size=8, lr=0.05, progress=False, seed=8)
    assert not np.array_equal(other.flat_params, runs[0])  # another seed: other masks and order


def test_dropout_is_off_in_evaluation_and_scales_in_training(rng):
    net = lp.Network([Dense(200), Dropout(0.5), Identity()], loss="mse", input_shape=(1,))
    net.params[0][0][...] = 1.0
    X = np.ones((1, 50))
    np.testing.assert_array_equal(net.predict(X), np.ones((200, 50)))  # evaluation: identity
    A = net.forward(X)
    assert set(np.unique(A)) == {0.0, 2.0}  # training: dropped, or kept and scaled by 1/(1−p)
    assert abs((A == 0).mean() - 0.5) < 0.05


ALL_KINDS = [Conv2d(3, (3, 2), stride=(1, 2), padding=(1, 0)), GELU(), MaxPool2d(2, 1),
             AvgPool2d((1, 2)), Flatten(), Dropout(0.2), Dense(7), GELUTanh(), Dense(4),
             LeakyReLU(0.05), Dense(3), Sigmoid()]


def test_save_load_round_trips_every_layer_kind(tmp_path, rng):
    net = lp.Network(ALL_KINDS, loss="binary_cross_entropy", input_shape=(2, 6, 6),
                     dtype="float32", seed=6)
    net.fit(rng.standard_normal((2, 6, 6, 9)), rng.integers(0, 2, (3, 9)).astype(float),
            epochs=1, batch_size=4, progress=False)
    net.save(tmp_path / "m.npz")
    back = lp.Network.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.flat_params, net.flat_params)
    assert [repr(a) for a in back.layers] == [repr(b) for b in net.layers]
    assert back.input_shape == net.input_shape and back.dtype == net.dtype
    X = rng.standard_normal((2, 6, 6, 5))
    np.testing.assert_array_equal(back.predict(X), net.predict(X))


@pytest.mark.parametrize("depth,ok", [(30, True), (300, False), (5000, False)])
def test_deeply_nested_residual_blocks_in_a_file_are_refused(tmp_path, depth, ok):
    """A Residual nested 300 deep once raised RecursionError instead of ModelFileError (JSON
    this deep is written as text: json.dumps itself would recurse too far)."""
    from loopprop.layers import Residual

    path = tmp_path / "m.npz"
    lp.Network([Residual([Dense(2)]), Dense(2), Softmax()], loss="cross_entropy",
               input_shape=(2,)).save(path)
    with np.load(path) as data:
        meta, theta, state = json.loads(str(data["meta"][()])), data["theta"], data["state"]
    meta["layers"][0] = "@"
    inner = '{"kind": "Dense", "config": {"n_out": 2}}'
    nested = '{"kind": "Residual", "config": {"layers": [' * (depth - 1) + inner \
        + "]}}" * (depth - 1)
    text = json.dumps(meta).replace('"@"', nested)
    with open(path, "wb") as fh:
        np.savez(fh, meta=np.array(text), theta=theta, state=state)
    if ok:
        assert lp.Network.load(path).n_layers == 2
    else:
        with pytest.raises(lp.ModelFileError, match="nested"):
            lp.Network.load(path)


def test_a_version_1_file_still_loads(tmp_path):
    theta = np.arange(13, dtype=np.float64) / 10  # 2-3-1: 3·2 + 3 + 1·3 + 1
    meta = {"format": "loopprop.Network", "format_version": 1, "layer_sizes": [2, 3, 1],
            "activations": ["tanh", "sigmoid"], "loss": "binary_cross_entropy",
            "dtype": "float64", "seed": 0, "init": "xavier", "alpha": 0.01, "n_params": 13}
    with open(tmp_path / "old.npz", "wb") as fh:
        np.savez(fh, meta=np.array(json.dumps(meta)), theta=theta)
    net = lp.Network.load(tmp_path / "old.npz")
    assert net.layer_sizes == [2, 3, 1] and net.activations == ["tanh", "sigmoid"]
    W1, b1 = net.params[0]
    np.testing.assert_array_equal(W1, theta[:6].reshape(3, 2))
    X = np.array([[0.5], [-1.0]])
    z1 = W1 @ X + b1[:, None]
    W2, b2 = net.params[1]
    want = 1 / (1 + np.exp(-(W2 @ np.tanh(z1) + b2[:, None])))
    np.testing.assert_allclose(net.predict(X), want, rtol=1e-12)


def test_layer_views_are_live(rng):
    net = lp.Network([Conv2d(2, 3), Flatten(), Dense(3), Softmax()], loss="cross_entropy",
                     input_shape=(1, 5, 5))
    conv = net.layers[0]
    assert conv.W.shape == (2, 1, 3, 3) and conv.b.shape == (2,)
    conv.W[0, 0, 1, 1] = 42.0
    assert net.params[0][0][0, 0, 1, 1] == 42.0
    net.forward(rng.standard_normal((1, 5, 5, 2)))
    net.backward(np.array([0, 2]))
    np.testing.assert_array_equal(conv.dW, net.grads[0][0])
    assert np.abs(conv.dW).sum() > 0


def test_summary_names_kinds_shapes_params_and_kernels():
    net = lp.Network([Conv2d(8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Dense(10),
                      Softmax()], loss="cross_entropy", input_shape=(1, 8, 8))
    text = net.summary(print_it=False)
    for want in ("Conv2d", "(8, 8, 8)", "80", "conv._conv2d_forward_tuned", "MaxPool2d",
                 "(8, 4, 4)", "Flatten", "(128,)", "Dense", "1,290", "Softmax",
                 "total: 1,370 parameters"):
        assert want in text, want
    assert "Conv2d(c_out=8, kernel=3, stride=1, padding=1)" in text


@pytest.mark.parametrize("model", ["mlp", "cnn", "resnet", "gpt"])
def test_summary_fits_100_columns(model):
    """It was 128–180 columns wide (a layer's repr and both kernel names on every row)."""
    from loopprop import models

    if model == "gpt":
        net = models.gpt(65, 64, 4, 4, 128)
    elif model == "mlp":
        net = lp.Network([64, 512, 10], ["relu", "softmax"], "cross_entropy")
    else:
        net = lp.Network((models.cnn_layers if model == "cnn" else models.resnet_layers)("digits"),
                         loss="cross_entropy", input_shape=(1, 8, 8))
    text = net.summary(print_it=False, batch_size=64)
    assert max(len(line) for line in text.splitlines()) <= 100, text
    for row in net.rows:  # every kind's kernels are still named, once
        assert row.kernels[0] in text or type(row).__name__ == "Softmax"


def test_the_layer_sizes_form_builds_the_same_network_as_version_0_1():
    """Same initialization (one generator, layer by layer, N(0, 2/n_in)) and same layers."""
    net = lp.Network([4, 3, 2], ["relu", "softmax"], "cross_entropy", seed=9)
    rng = np.random.default_rng(9)
    W1 = rng.standard_normal((3, 4)) * np.sqrt(2 / 4)
    W2 = rng.standard_normal((2, 3)) * np.sqrt(2 / 3)
    np.testing.assert_array_equal(net.params[0][0], W1)
    np.testing.assert_array_equal(net.params[1][0], W2)
    assert [type(v).__name__ for v in net.layers] == ["Dense", "ReLU", "Dense", "Softmax"]


@pytest.mark.parametrize("layers,shape,pattern", [
    ([Dense(3)], (2, 4, 4), "add Flatten"),
    ([Conv2d(2, 5), Flatten(), Dense(2), Softmax()], (1, 3, 3), "larger than the padded"),
    ([MaxPool2d(4), Flatten(), Dense(2), Softmax()], (1, 3, 3), "larger than the input"),
    ([Flatten(), Dense(2), ReLU()], (1, 3, 3), "use 'softmax'"),
    ([Conv2d(2, 1), Softmax()], (1, 3, 3), "add Flatten"),
])
def test_bad_stacks_are_refused_with_the_layer_named(layers, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        lp.Network(layers, loss="cross_entropy", input_shape=shape)


def test_layer_objects_need_an_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        lp.Network([Dense(2), Softmax()], loss="cross_entropy")


@pytest.mark.parametrize("name", ["digits", "lenet"])
def test_lean_numpy_cnn_epoch_equals_fit(name):
    """The benchmark's NumPy baseline computes the same epoch as loopprop's fit."""
    from loopprop import vectorized as vec
    from loopprop.bench import cnn_layers, lean_arch

    shape = (1, 8, 8) if name == "digits" else (1, 28, 28)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((*shape, 21)), rng.integers(0, 10, 21)
    net = lp.Network(cnn_layers(name), loss="cross_entropy", input_shape=shape, seed=2)
    params = [(W.copy(), b.copy()) for W, b in net.params]
    loss = vec.cnn_epoch_lean(params, lean_arch(net.layers),
                              np.ascontiguousarray(np.moveaxis(X, -1, 0)), y, 8, 0.05)
    hist = net.fit(X, y, epochs=1, batch_size=8, lr=0.05, shuffle=False, progress=False)
    assert abs(loss - hist["loss"][0]) <= 1e-12 * abs(loss)
    for (W, b), (W2, b2) in zip(params, net.params):
        assert_close("W", W2, W, 1e-10)
        assert_close("b", b2, b, 1e-10)


def test_summary_gives_each_layers_cache_and_the_memory_of_a_batch():
    """The cache column counts what a backward pass reads beyond the activation buffer
    (docs/formulas.md §14), per example; the memory line multiplies by the batch."""
    net = lp.Network([Conv2d(8, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Dense(10),
                      Softmax()], loss="cross_entropy", input_shape=(1, 8, 8))
    text = net.summary(print_it=False, batch_size=32)
    rows = {line.split()[1]: line for line in text.splitlines()[3:9]}
    assert "128 int" in rows["MaxPool2d(size=2,"]  # one winner per output value: 8·4·4
    assert rows["Dense(n_out=10)"].split()[-1] == "128"  # A_prevᵀ of the 128 inputs
    # activations: the input 64, conv 512, ReLU 512, pool 128, dense 10, softmax 10 (Flatten
    # is a view) float64 values per example; caches 128 floats and 128 int32 per example
    acts = (64 + 512 + 512 + 128 + 10 + 10) * 32 * 8 / 2**20
    caches = (128 * 8 + 128 * 4) * 32 / 2**20
    assert (f"memory for a batch of 32: activations {acts:.2f} MiB (their gradients as much "
            f"again), caches {caches:.2f} MiB") in text
    # workspaces: the convolution's im2col columns and its output's transpose, (9 + 8)·64 per
    # example; fixed: the convolution's 17·9·8 (the dense layer needs none: it sums Wᵀ·dZ
    # from W's rows as they are)
    work, fwork = 17 * 64 * 32 * 8, 17 * 9 * 8 * 8
    params = 1370 * 8
    batch = 2 * acts * 2**20 + caches * 2**20 + work + fwork + 32 * (8 + 8)  # + loss columns
    mib = 2**20
    assert (f"  workspaces {work / mib:.2f} MiB per batch + {fwork / mib:.2f} MiB fixed") in text
    assert (f"memory in all: parameters {params / mib:.2f} MiB, gradients {params / mib:.2f} "
            f"MiB, batch buffers {batch / mib:.2f} MiB;") in text
    assert (f"  in all: {(2 * params + batch) / mib:.2f} MiB with sgd, "
            f"{(3 * params + batch) / mib:.2f} MiB with momentum, "
            f"{(4 * params + batch) / mib:.2f} MiB with adam") in text
    assert max(len(line) for line in text.splitlines()) <= 100
    with pytest.raises(ValueError, match="batch_size"):
        net.summary(print_it=False, batch_size=0)
