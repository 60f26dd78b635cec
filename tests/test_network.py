"""Network (guide §6, §10, §12): torch autograd on whole networks, fit vs a Python loop,
determinism, gradient accumulation, gradcheck, save/load, and a real dataset."""


import numpy as np
import pytest
from helpers import HEADS, HIDDEN, assert_close, problem, rand, torch_or_skip

import loopprop as lp
from loopprop import vectorized as vec



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


def test_explain_takes_a_large_seed():
    from helpers import run_cli

    r = run_cli("explain", "--network", "2-3-1", "--seed", "17592186044416")
    assert r.returncode == 0, r.stderr
    assert "dL/dW" in r.stdout


# -- save / load ------------------------------------------------------------------------------


def _saved(tmp_path):
    path = tmp_path / "model.npz"
    lp.Network([2, 3, 1], ["relu", "sigmoid"], "binary_cross_entropy").save(path)
    return path


# -- real data ----------------------------------------------------------------------------------


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


def _fresh_loopprop_function():
    """A function Numba has never compiled, counted as loopprop's (its module's name)."""
    import numba

    def f(x):
        return x + 1

    f.__module__ = "loopprop.tests_compile_watch"
    return numba.njit(f)




def test_a_layer_too_large_to_transpose_its_input_caches_nothing_and_trains_right():
    """A Dense layer whose products run packed for one example (n_out·n_in ≥ 2¹⁸) never writes
    the ``A_prevᵀ`` cache: it has none (the summary's cache column), and an epoch with it still
    equals the NumPy epoch (a small layer's cache beside it keeps its own place)."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((1024, 40))
    y = rng.integers(0, 10, 40)
    net = lp.Network([1024, 256, 10], ["relu", "softmax"], "cross_entropy", seed=1)
    assert [layer.cache_size for layer in net.layers[::2]] == [0, 256]  # Dense(256), Dense(10)
    params = [(W.copy(), b.copy()) for W, b in net.params]
    loss = vec.train_epoch(params, X, y, 16, 0.1, ["relu", "softmax"])
    hist = net.fit(X, y, epochs=1, batch_size=16, lr=0.1, shuffle=False, progress=False)
    assert abs(hist["loss"][0] - loss) <= 1e-12 * abs(loss)
    for (W, b), (W2, b2) in zip(params, net.params):
        assert_close("W", W2, W, 1e-10)
        assert_close("b", b2, b, 1e-10)
