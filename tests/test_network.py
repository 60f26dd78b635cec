"""Network (guide §6, §10, §12): torch autograd on whole networks, fit vs a Python loop,
determinism, gradient accumulation, gradcheck, save/load, and a real dataset."""

import os

import numpy as np
import pytest
from helpers import assert_close, rand, torch_or_skip

import loopprop as lp
from loopprop import vectorized as vec

HIDDEN = ["identity", "sigmoid", "tanh", "relu", "leaky_relu"]
HEADS = [("mse", "identity"), ("mse", "sigmoid"), ("mse", "softmax"),
         ("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")]


def problem(rng, loss, sizes, m):
    X = rand(rng, (sizes[0], m))
    if loss == "cross_entropy":
        return X, rng.integers(0, sizes[-1], m)
    if loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, (sizes[-1], m)).astype(float)
    return X, rand(rng, (sizes[-1], m))


def torch_step(torch, net, X, Y, lr):
    """The same network in torch autograd: loss, per-layer (dW, db), updated (W, b)."""
    F = torch.nn.functional
    params = [(torch.tensor(W.copy(), requires_grad=True), torch.tensor(b.copy(),
               requires_grad=True)) for W, b in net.params]
    A = torch.tensor(X)
    Z = A
    for (W, b), act in zip(params, net.activations):
        Z = W @ A + b[:, None]
        A = {"identity": lambda z: z * 1, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
             "relu": torch.relu, "leaky_relu": lambda z: F.leaky_relu(z, net.alpha),
             "softmax": lambda z: torch.softmax(z, dim=0)}[act](Z)
    m = X.shape[1]
    if net.loss == "mse":
        loss = 0.5 * ((A - torch.tensor(Y)) ** 2).sum() / m
    elif net.loss == "cross_entropy":
        loss = F.cross_entropy(Z.T, torch.tensor(Y))
    else:
        loss = F.binary_cross_entropy_with_logits(Z, torch.tensor(Y), reduction="sum") / m
    loss.backward()
    grads = [(W.grad.numpy(), b.grad.numpy()) for W, b in params]
    new = [(W.detach().numpy() - lr * gW, b.detach().numpy() - lr * gb)
           for (W, b), (gW, gb) in zip(params, grads)]
    return loss.item(), grads, new


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("loss,head", HEADS)
def test_one_step_matches_torch_autograd(rng, hidden, loss, head):
    torch = torch_or_skip()
    sizes = [5, 7, 4, 3]
    net = lp.Network(sizes, [hidden, hidden, head], loss, seed=3, init="xavier")
    X, Y = problem(rng, loss, sizes, 6)
    t_loss, t_grads, t_new = torch_step(torch, net, X, Y, 0.1)
    net.zero_grad()
    net.forward(X)
    got = net.backward(Y)
    assert_close("loss", got, t_loss, 1e-10)
    for l, ((dW, db), (tW, tb)) in enumerate(zip(net.grads, t_grads), 1):
        assert_close(f"dW^({l})", dW, tW, 1e-10)
        assert_close(f"db^({l})", db, tb, 1e-10)
    net.step(0.1)
    for l, ((W, b), (tW, tb)) in enumerate(zip(net.params, t_new), 1):
        assert_close(f"W^({l}) after step", W, tW, 1e-10)
        assert_close(f"b^({l}) after step", b, tb, 1e-10)


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("loss,head", HEADS)
def test_gradcheck_below_1e6(rng, hidden, loss, head):
    sizes = [4, 5, 3]
    net = lp.Network(sizes, [hidden, head], loss, seed=1, init="xavier")
    X, Y = problem(rng, loss, sizes, 5)
    report = lp.gradcheck(net, X, Y, report=True)
    assert report.max_rel_error < 1e-6, str(report)
    assert len(report.layers) == 2


def test_gradcheck_catches_a_wrong_gradient(rng):
    """The oracle can fail: corrupt one weight's gradient path and gradcheck notices."""
    net = lp.Network([3, 4, 2], ["tanh", "softmax"], "cross_entropy", seed=0)
    X, y = rand(rng, (3, 5)), rng.integers(0, 2, 5)
    original = net.backward

    def broken_backward(Y):
        loss = original(Y)
        net.grads[0][0][0, 0] *= 1.5
        return loss

    net.backward = broken_backward
    assert lp.gradcheck(net, X, y) > 1e-3


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fit_equals_python_loop_of_steps(rng, dtype):
    """fit(shuffle=False) is zero_grad / forward / backward / step over the same batches."""
    sizes = [6, 9, 4]
    X, y = rand(rng, (6, 23)), rng.integers(0, 4, 23)  # 23 = 4 batches of 5 + a partial one of 3
    a = lp.Network(sizes, ["relu", "softmax"], "cross_entropy", seed=2, dtype=dtype)
    b = lp.Network(sizes, ["relu", "softmax"], "cross_entropy", seed=2, dtype=dtype)
    hist = a.fit(X, y, epochs=2, batch_size=5, lr=0.3, shuffle=False, progress=False)
    losses = []
    for _ in range(2):
        total = 0.0
        for s in range(0, 23, 5):
            b.zero_grad()
            b.forward(X[:, s:s + 5])
            total += b.backward(y[s:s + 5]) * X[:, s:s + 5].shape[1]
            b.step(0.3)
        losses.append(total / 23)
    tol = 1e-12 if dtype == "float64" else 1e-5
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params):
        assert_close("W", Wa, Wb, tol)
        assert_close("b", ba, bb, tol)
    assert_close("epoch losses", hist["loss"], losses, tol)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam", "adamw"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
def test_a_loop_of_ones_own_with_step_equals_fit(rng, optimizer, schedule):
    """set_optimizer + step() takes fit's updates, with every optimizer, schedule, warm-up,
    weight decay and clipping (step() was once plain SGD only)."""
    sizes = [6, 9, 4]
    X, y = rand(rng, (6, 23)), rng.integers(0, 4, 23)  # 5 batches per epoch: 10 steps
    a = lp.Network(sizes, ["tanh", "softmax"], "cross_entropy", seed=2)
    b = lp.Network(sizes, ["tanh", "softmax"], "cross_entropy", seed=2)
    lr = 0.05 if optimizer.startswith("adam") else 0.3
    a.fit(X, y, epochs=2, batch_size=5, lr=lr, optimizer=optimizer, shuffle=False,
          progress=False, lr_schedule=schedule, warmup_epochs=0.4, step_epochs=1,
          weight_decay=0.02, clip_grad_norm=0.5)
    opt = b.set_optimizer(optimizer, lr=lr, lr_schedule=schedule, warmup_steps=2,
                          total_steps=10, step_size=5, weight_decay=0.02, clip_grad_norm=0.5)
    rates = []
    for _ in range(2):
        for s in range(0, 23, 5):
            b.zero_grad()
            b.forward(X[:, s:s + 5])
            b.backward(y[s:s + 5])
            rates.append(b.step())
    assert opt.t == 10 and b.optimizer is opt
    np.testing.assert_array_equal(a._theta, b._theta)
    assert rates[0] == pytest.approx(lr / 2)  # warm-up: step 1 of 2
    if schedule == "cosine":
        assert rates[-1] == pytest.approx(lr * 0.5 * (1 + np.cos(np.pi * 7 / 8)))


def test_step_without_an_optimizer_and_bad_options():
    net = lp.Network([3, 2], ["softmax"], "cross_entropy")
    with pytest.raises(RuntimeError, match="set_optimizer"):
        net.step()
    with pytest.raises(ValueError, match="total_steps"):
        net.set_optimizer("adam", lr_schedule="cosine")
    with pytest.raises(ValueError, match="optimizer"):
        net.set_optimizer("rmsprop")
    assert net.step(0.1) == 0.1  # plain gradient descent, as before


def test_forward_gives_the_logits_of_the_output_activation(rng):
    """The logits of a fused softmax output were reachable only through private buffers."""
    from loopprop import models

    net = models.gpt(11, 8, 2, 2, 16, dtype="float64", seed=0)
    X, Y = rng.integers(0, 11, (8, 3)), rng.integers(0, 11, (8, 3))
    Z = net.forward(X, logits=True)
    assert Z.shape == (11, 8, 3)
    P = np.exp(Z - Z.max(axis=0)) / np.exp(Z - Z.max(axis=0)).sum(axis=0)
    assert_close("softmax(logits)", P, net.forward(X), 1e-12)
    logp = Z - Z.max(axis=0) - np.log(np.exp(Z - Z.max(axis=0)).sum(axis=0))
    nll = -np.take_along_axis(logp, Y[None], axis=0).mean()
    net.forward(X)
    assert net.backward(Y) == pytest.approx(nll, rel=1e-12)
    plain = lp.Network([4, 3], ["sigmoid"], "binary_cross_entropy", seed=1)
    Xs = rand(rng, (4, 5))
    np.testing.assert_allclose(1 / (1 + np.exp(-plain.forward(Xs, logits=True))),
                               plain.forward(Xs), rtol=1e-12)
    from loopprop.layers import Dense
    with pytest.raises(ValueError, match="logits"):
        lp.Network([Dense(2)], loss="mse", input_shape=(3,)).forward(Xs[:3], logits=True)


def test_fit_with_packed_layers_equals_python_loop_of_steps(rng):
    """Layers large enough for the packed SIMD kernel (kernels/gemm.py): in fit the first layer
    reads the gathered Xᵀ, in forward/backward it reads X; hidden layers read A in place.
    Both must be the same steps, and the gradients must match the NumPy twin."""
    sizes = [150, 100, 60, 10]
    X, y = rand(rng, (150, 100)), rng.integers(0, 10, 100)  # batches of 48, 48 and 4
    acts = ["relu", "tanh", "softmax"]
    a = lp.Network(sizes, acts, "cross_entropy", seed=5)
    b = lp.Network(sizes, acts, "cross_entropy", seed=5)
    a.fit(X, y, epochs=2, batch_size=48, lr=0.05, shuffle=False, progress=False)
    for _ in range(2):
        for s in range(0, 100, 48):
            b.zero_grad()
            b.forward(X[:, s:s + 48])
            b.backward(y[s:s + 48])
            b.step(0.05)
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params):
        assert_close("W", Wa, Wb, 1e-12)
        assert_close("b", ba, bb, 1e-12)
    # the gradients of one packed batch against the NumPy twin, layer by layer (§6)
    b.zero_grad()
    b.forward(X[:, :48])
    b.backward(y[:48])
    As, Zs = [X[:, :48]], []
    for (W, bias), act in zip(b.params, acts):
        Zs.append(vec.dense_forward(W, bias, As[-1]))
        As.append(vec.activation_forward(act, Zs[-1]))
    _, dZ = vec.softmax_cross_entropy(Zs[-1], y[:48])
    for l in range(len(acts) - 1, -1, -1):
        rW, rb, dA = vec.dense_backward(dZ, b.params[l][0], As[l])
        assert_close(f"dW{l + 1}", b.grads[l][0], rW, 1e-10)
        assert_close(f"db{l + 1}", b.grads[l][1], rb, 1e-10)
        if l:
            dZ = vec.activation_backward(acts[l - 1], dA, Zs[l - 1])


def test_fit_calls_of_changing_shapes_equal_python_steps(rng):
    """fit keeps its workspaces between calls: a sequence of fits with other example counts and
    batch sizes (and other data) must still be plain steps over each call's own batches."""
    sizes = [5, 7, 3]
    a = lp.Network(sizes, ["tanh", "softmax"], "cross_entropy", seed=3)
    b = lp.Network(sizes, ["tanh", "softmax"], "cross_entropy", seed=3)
    for n, bs in [(23, 5), (11, 4), (23, 5), (9, 9)]:
        X, y = rand(rng, (5, n)), rng.integers(0, 3, n)
        a.fit(X, y, epochs=1, batch_size=bs, lr=0.2, shuffle=False, progress=False)
        for s in range(0, n, bs):
            b.zero_grad()
            b.forward(X[:, s:s + bs])
            b.backward(y[s:s + bs])
            b.step(0.2)
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params):
        assert_close("W", Wa, Wb, 1e-12)
        assert_close("b", ba, bb, 1e-12)


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_optimizers_match_their_numpy_formulas(rng, optimizer):
    sizes = [4, 6, 3]
    X, y = rand(rng, (4, 10)), rng.integers(0, 3, 10)
    net = lp.Network(sizes, ["tanh", "softmax"], "cross_entropy", seed=4)
    ref = lp.Network(sizes, ["tanh", "softmax"], "cross_entropy", seed=4)
    lr, b1, b2, eps = 0.05, 0.8, 0.95, 1e-7
    net.fit(X, y, epochs=3, batch_size=10, lr=lr, optimizer=optimizer, shuffle=False,
            progress=False, momentum=b1, beta1=b1, beta2=b2, eps=eps)
    theta = ref._theta
    m1 = np.zeros_like(theta)
    m2 = np.zeros_like(theta)
    for t in range(1, 4):
        ref.zero_grad()
        ref.forward(X)
        ref.backward(y)
        g = ref._grad
        if optimizer == "momentum":
            m1 = b1 * m1 + g
            theta -= lr * m1
        else:
            m1 = b1 * m1 + (1 - b1) * g
            m2 = b2 * m2 + (1 - b2) * g * g
            theta -= lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
    assert_close("theta", net._theta, theta, 1e-12)


def test_same_seed_gives_bitwise_identical_weights(rng):
    X, y = rand(rng, (5, 50)), rng.integers(0, 3, 50)
    runs = []
    for _ in range(2):
        net = lp.Network([5, 8, 3], ["relu", "softmax"], "cross_entropy", seed=7)
        net.fit(X, y, epochs=3, batch_size=8, lr=0.1, optimizer="adam", seed=11, progress=False)
        runs.append(net._theta.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    other = lp.Network([5, 8, 3], ["relu", "softmax"], "cross_entropy", seed=7)
    other.fit(X, y, epochs=3, batch_size=8, lr=0.1, optimizer="adam", seed=12, progress=False)
    assert not np.array_equal(other._theta, runs[0])  # the shuffle seed matters


def test_gradients_accumulate_until_zero_grad(rng):
    """Guide §12 "Not resetting gradients": backward twice = twice the gradient."""
    net = lp.Network([3, 4, 2], ["sigmoid", "softmax"], "cross_entropy")
    X, y = rand(rng, (3, 5)), rng.integers(0, 2, 5)
    net.forward(X)
    net.backward(y)
    once = [(dW.copy(), db.copy()) for dW, db in net.grads]
    net.forward(X)
    net.backward(y)
    for (dW, db), (oW, ob) in zip(net.grads, once):
        assert_close("dW twice", dW, 2 * oW, 1e-14)
        assert_close("db twice", db, 2 * ob, 1e-14)
    net.zero_grad()
    assert all((dW == 0).all() and (db == 0).all() for dW, db in net.grads)


def test_params_are_live_views(rng):
    net = lp.Network([2, 3, 1], ["relu", "identity"], "mse")
    W, _ = net.params[0]
    W[0, 0] = 42.0
    assert net.params[0][0][0, 0] == 42.0
    Z = lp.dense_forward(*net.params[0], np.ones((2, 1)))
    assert_close("Z", Z, vec.dense_forward(*net.params[0], np.ones((2, 1))), 1e-15)


def test_transposed_X_error_suggests_X_T(rng):
    net = lp.Network([4, 3, 2], ["relu", "softmax"], "cross_entropy")
    with pytest.raises(ValueError, match=r"examples in columns.*X.T"):
        net.fit(rand(rng, (10, 4)), np.zeros(10, int), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"X.T"):
        net.predict(rand(rng, (10, 4)))


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(layer_sizes=[4], activations=[], loss="mse"), "at least two sizes"),
    (dict(layer_sizes=[4, 2], activations=["relu", "relu"], loss="mse"), "one name per layer"),
    (dict(layer_sizes=[4, 2], activations=["swish"], loss="mse"), "valid names"),
    (dict(layer_sizes=[4, 2], activations=["relu"], loss="cross_entropy"), "use 'softmax'"),
    (dict(layer_sizes=[4, 2], activations=["relu"], loss="binary_cross_entropy"),
     "use 'sigmoid'"),
    (dict(layer_sizes=[4, 0, 2], activations=["relu", "relu"], loss="mse"), "positive"),
    (dict(layer_sizes=[4, 2], activations=["relu"], loss="hinge"), "valid names"),
])
def test_bad_architecture_is_refused(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        lp.Network(**kwargs)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(epochs=0), "epochs"), (dict(batch_size=0), "batch_size"), (dict(lr=-1), "lr"),
    (dict(lr=float("nan")), "lr"), (dict(optimizer="rmsprop"), "optimizer"),
])
def test_bad_fit_options_are_refused(rng, kwargs, pattern):
    net = lp.Network([3, 2], ["softmax"], "cross_entropy")
    with pytest.raises(ValueError, match=pattern):
        net.fit(rand(rng, (3, 4)), np.zeros(4, int), progress=False, **kwargs)


def test_divergence_is_reported_not_returned(rng):
    net = lp.Network([3, 8, 1], ["relu", "identity"], "mse", seed=0)
    X, Y = rand(rng, (3, 64), scale=100), rand(rng, (1, 64), scale=100)
    with pytest.raises(FloatingPointError, match="learning rate"):
        net.fit(X, Y, epochs=50, batch_size=8, lr=10.0, progress=False)


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


def test_explain_takes_a_large_seed():
    from helpers import run_cli

    r = run_cli("explain", "--network", "2-3-1", "--seed", "17592186044416")
    assert r.returncode == 0, r.stderr
    assert "dL/dW" in r.stdout


# -- save / load ------------------------------------------------------------------------------


def test_save_load_round_trips_bitwise(tmp_path, rng):
    net = lp.Network([3, 5, 2], ["tanh", "softmax"], "cross_entropy", dtype="float32", seed=5)
    net.fit(rand(rng, (3, 20), np.float32), rng.integers(0, 2, 20), epochs=2, progress=False)
    path = tmp_path / "model.npz"
    net.save(path)
    back = lp.Network.load(path)
    assert back.layer_sizes == net.layer_sizes and back.activations == net.activations
    assert back.loss == net.loss and back.dtype == net.dtype
    np.testing.assert_array_equal(back._theta, net._theta)
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


def _saved(tmp_path):
    path = tmp_path / "model.npz"
    lp.Network([2, 3, 1], ["relu", "sigmoid"], "binary_cross_entropy").save(path)
    return path


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


# -- real data ----------------------------------------------------------------------------------


@pytest.mark.heavy
def test_digits_plain_recipe_reaches_96_percent():
    pytest.importorskip("sklearn")
    from loopprop import datasets

    Xtr, ytr, Xte, yte = datasets.load("digits")
    net = lp.Network([64, 64, 10], ["relu", "softmax"], "cross_entropy", seed=0)
    net.fit(Xtr, ytr, epochs=40, batch_size=32, lr=0.1, optimizer="sgd", progress=False)
    assert net.evaluate(Xte, yte)["accuracy"] >= 0.96


def test_fresh_process_can_predict_first(tmp_path, rng):
    """A new interpreter whose first compiled call is predict (no fit, no forward) must not
    abort while linking against the parallel kernels (Numba's thread pool must be started)."""
    import subprocess
    import sys

    path = tmp_path / "m.npz"
    lp.Network([4, 6, 3], ["relu", "softmax"], "cross_entropy").save(path)
    code = ("import numpy as np, loopprop as lp; net = lp.Network.load(%r); "
            "print(net.predict(np.ones((4, 2))).shape)" % str(path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "(3, 2)"


@pytest.mark.parametrize("loss,head,y,pattern", [
    ("cross_entropy", "softmax", np.array([0, 1, 3, 0]), r"y: labels must lie in \[0, 3\)"),
    ("cross_entropy", "softmax", np.eye(3)[:, [0, 1, 2, 0]].T, r"y: .*transposed.*y.T"),
    ("binary_cross_entropy", "sigmoid", np.full((3, 4), 2.0), r"y: .*\[0, 1\]"),
    ("mse", "identity", np.ones((3, 5)), r"y: expected shape \(3, 4\)"),
])
def test_bad_targets_get_the_loss_functions_errors(rng, loss, head, y, pattern):
    net = lp.Network([2, 3], [head], loss)
    with pytest.raises(ValueError, match=pattern):
        net.fit(rand(rng, (2, 4)), y, epochs=1, progress=False)


def test_fit_records_the_gradient_norm_of_every_parameter(rng):
    """``history["grad_norms"]``: every parameter array of every layer kind (convolution,
    batch norm, dense, layer norm), by name, equal to the norm NumPy takes of the gradient
    that ``backward`` gives for the same batch (one batch per epoch: the epoch's mean is that
    batch's norm)."""
    from loopprop.layers import BatchNorm, Conv2d, Dense, Flatten, LayerNorm, ReLU, Softmax

    def make():
        return lp.Network([Conv2d(3, 3, padding=1), BatchNorm(), ReLU(), Flatten(), Dense(6),
                           LayerNorm(), ReLU(), Dense(4), Softmax()], loss="cross_entropy",
                          input_shape=(2, 5, 5), seed=3)

    X = rng.standard_normal((2, 5, 5, 12))
    y = rng.integers(0, 4, 12)
    ref = make()
    ref.forward(X)
    ref.backward(y)
    want = {}
    for r, grads in zip(ref._param_rows, ref.grads):
        layer = ref._rows[r]
        for name, g in zip(layer.param_names, grads):
            want[f"{r + 1}:{type(layer).__name__}.{name}"] = float(np.linalg.norm(g))
    hist = make().fit(X, y, epochs=1, batch_size=12, shuffle=False, lr=0.01, progress=False)
    assert sorted(hist["grad_norms"]) == sorted(want)
    assert set(want) >= {"1:Conv2d.W", "1:Conv2d.b", "2:BatchNorm.gamma", "2:BatchNorm.beta",
                         "5:Dense.W", "6:LayerNorm.gamma", "8:Dense.b"}
    for name, value in want.items():
        assert hist["grad_norms"][name][0] == pytest.approx(value, rel=1e-10), name
    # the per-layer list of earlier versions: each layer's first array (its weights)
    assert hist["grad_norm"][0] == pytest.approx(
        [want["1:Conv2d.W"], want["2:BatchNorm.gamma"], want["5:Dense.W"],
         want["6:LayerNorm.gamma"], want["8:Dense.W"]], rel=1e-10)


def _fresh_loopprop_function():
    """A function Numba has never compiled, counted as loopprop's (its module's name)."""
    import numba

    def f(x):
        return x + 1

    f.__module__ = "loopprop.tests_compile_watch"
    return numba.njit(f)


@pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT") == "1", reason="nothing compiles")
def test_progress_says_when_kernels_compile_and_only_then(capsys):
    """The notice once came from a 5 s timer: it appeared on warm runs whose first epoch was
    long and never where nothing had a bar; now Numba's compile event says when."""
    from loopprop import _compiling
    from loopprop.progress import Progress

    f = _fresh_loopprop_function()
    before = _compiling.seconds()
    bar = Progress(3, True)
    f(1)  # compiles: the notice, then the time
    f(2)  # compiled: nothing more
    bar.update(1, {"loss": 1.0})
    bar.close()
    err = capsys.readouterr().err
    assert err.count("compiling the kernels") == 1 and err.count("compiled in") == 1
    assert _compiling.seconds() > before and not _compiling.WATCH.compiling()
    bar = Progress(3, True)  # warm: no notice at all
    f(3)
    bar.update(1, {"loss": 1.0})
    bar.close()
    assert "compil" not in capsys.readouterr().err
    said = []
    with _compiling.notices(write=said.append):
        _fresh_loopprop_function()(1)
        _fresh_loopprop_function()(2)
    assert said[0] == _compiling.STARTED and len(said) == 2
    assert said[1].startswith("loopprop: compiled in ")
    with _compiling.notices(write=said.append):
        f(4)
    assert len(said) == 2  # nothing compiled, nothing said
    # a bar inside the command line's notices says nothing itself: one voice, one total
    capsys.readouterr()
    with _compiling.notices(write=said.append):
        bar = Progress(2, True)
        _fresh_loopprop_function()(1)
        bar.update(1, {"loss": 1.0})
        bar.close()
    assert "compil" not in capsys.readouterr().err
    assert said[2] == _compiling.STARTED and said[3].startswith("loopprop: compiled in ")
    assert float(said[3].split()[3]) >= 0.0  # "compiled in 0.1 s": the seconds, a number
