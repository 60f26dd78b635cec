"""The epoch (loopprop/train.py, driven by loopprop/fitting.py): fit against a Python loop of
steps, the optimizers against their formulas, reproducibility, the random streams, the
history, and the divergence check."""

from __future__ import annotations

import math
import os

import numba
import numpy as np
import pytest
from helpers import assert_close, python_sgd_epochs, rand

import loopprop as lp
from loopprop import vectorized as vec


@numba.njit
def _user_seed(s):
    np.random.seed(s)


@numba.njit
def _user_draw():
    return np.random.random()


def test_diverged_fit_raises_naming_epoch_and_layer():
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((1, 7)), rng.standard_normal((64, 7))
    net = lp.Network([1, 1, 1, 64], ["identity", "identity", "relu"], "mse", seed=1)
    with pytest.raises(FloatingPointError, match=r"epoch \d+.*layer \d") as err:
        net.fit(X, Y, epochs=4, batch_size=1, lr=0.05, shuffle=False, progress=False)
    assert "lr=" in str(err.value)
    assert math.isnan(net.evaluate(X, Y)["loss"])  # no finite loss from NaN weights


def test_nan_parameters_behind_a_finite_loss_are_reported():
    """A NaN weight can hide behind a finite loss; the check names its layer."""
    net = lp.Network([2, 3, 1], ["relu", "identity"], "mse", seed=0)
    net.params[1][0][0, 1] = np.nan
    with pytest.raises(FloatingPointError, match=r"epoch 3.*parameters of layer 2"):
        net._check_diverged(3, 0.25, 0.1)
    net.params[1][0][0, 1] = 0.0
    net.grads[0][1][2] = np.inf
    with pytest.raises(FloatingPointError, match=r"gradients of layer 1"):
        net._check_diverged(1, 0.25, 0.1)


def test_fit_does_not_reseed_numbas_global_generator():
    X = np.random.default_rng(0).standard_normal((2, 40))
    y = (X[0] > 0).astype(np.int64)
    net = lp.Network([2, 2], ["softmax"], "cross_entropy")
    _user_seed(123)
    _user_draw()
    expected = _user_draw()
    _user_seed(123)
    _user_draw()
    net.fit(X, y, epochs=2, progress=False, seed=0)
    assert _user_draw() == expected


def test_shuffle_is_reproducible_and_seed_dependent():
    X = np.random.default_rng(0).standard_normal((4, 50))
    y = np.arange(50) % 3
    runs = []
    for seed in (0, 0, 1):
        net = lp.Network([4, 3], ["softmax"], "cross_entropy")
        net.fit(X, y, epochs=2, batch_size=7, progress=False, seed=seed)
        runs.append(net.flat_params.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_splitmix64_known_value():
    """SplitMix64's reference output for seed 1234567 (the generator's published test vector)."""
    from loopprop.kernels.rng import _next, new_state

    state = new_state(1234567)
    assert int(_next(state)) == 6457827717110365317


def _fresh_loopprop_function():
    """A function Numba has never compiled, counted as loopprop's (its module's name)."""
    import numba

    def f(x):
        return x + 1

    f.__module__ = "loopprop.tests_compile_watch"
    return numba.njit(f)


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


@pytest.mark.parametrize("shuffle", [False, True])
def test_fit_reads_square_data_in_either_layout_as_the_python_loop(rng, shuffle):
    """fit reads X in place without shuffling and a transposed copy with it (a shuffled batch
    then copies rows): with as many examples as features the two layouts have the same shape,
    and each must still give the batches of the Python loop -- in order, or in the order of
    loopprop's Fisher–Yates permutation (kernels/rng.py), carried from epoch to epoch."""
    from loopprop.kernels.rng import _shuffle

    sizes = [7, 5, 3]
    X, y = rand(rng, (7, 7)), rng.integers(0, 3, 7)
    a = lp.Network(sizes, ["tanh", "softmax"], "cross_entropy", seed=4)
    b = lp.Network(sizes, ["tanh", "softmax"], "cross_entropy", seed=4)
    a.fit(X, y, epochs=3, batch_size=3, lr=0.2, shuffle=shuffle, seed=11, progress=False)
    seeds = np.random.default_rng(11)
    perm = np.arange(7, dtype=np.int64)
    for _ in range(3):
        if shuffle:
            _shuffle(perm, int(seeds.integers(0, 2**31 - 1)))
        for s in range(0, 7, 3):
            idx = perm[s:s + 3]
            b.zero_grad()
            b.forward(X[:, idx])
            b.backward(y[idx])
            b.step(0.2)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)


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
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
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
    python_sgd_epochs(b, X, y, epochs=2, batch_size=48, lr=0.05)
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
    theta = ref.flat_params
    m1 = np.zeros_like(theta)
    m2 = np.zeros_like(theta)
    for t in range(1, 4):
        ref.zero_grad()
        ref.forward(X)
        ref.backward(y)
        g = ref.flat_grads
        if optimizer == "momentum":
            m1 = b1 * m1 + g
            theta -= lr * m1
        else:
            m1 = b1 * m1 + (1 - b1) * g
            m2 = b2 * m2 + (1 - b2) * g * g
            theta -= lr * (m1 / (1 - b1**t)) / (np.sqrt(m2 / (1 - b2**t)) + eps)
    assert_close("theta", net.flat_params, theta, 1e-12)


def test_same_seed_gives_bitwise_identical_weights(rng):
    X, y = rand(rng, (5, 50)), rng.integers(0, 3, 50)
    runs = []
    for _ in range(2):
        net = lp.Network([5, 8, 3], ["relu", "softmax"], "cross_entropy", seed=7)
        net.fit(X, y, epochs=3, batch_size=8, lr=0.1, optimizer="adam", seed=11, progress=False)
        runs.append(net.flat_params.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
    other = lp.Network([5, 8, 3], ["relu", "softmax"], "cross_entropy", seed=7)
    other.fit(X, y, epochs=3, batch_size=8, lr=0.1, optimizer="adam", seed=12, progress=False)
    assert not np.array_equal(other.flat_params, runs[0])  # the shuffle seed matters


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


@pytest.mark.heavy
def test_digits_plain_recipe_reaches_96_percent():
    pytest.importorskip("sklearn")
    from loopprop import datasets

    Xtr, ytr, Xte, yte = datasets.load("digits")
    net = lp.Network([64, 64, 10], ["relu", "softmax"], "cross_entropy", seed=0)
    net.fit(Xtr, ytr, epochs=40, batch_size=32, lr=0.1, optimizer="sgd", progress=False)
    assert net.evaluate(Xte, yte)["accuracy"] >= 0.96


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
    for r, grads in zip(ref.param_rows, ref.grads):
        layer = ref.rows[r]
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


@pytest.mark.parametrize("threads", [1, 2])
def test_batch_copy_is_the_slice_on_any_thread_count(threads):
    """fit's in-order batch copy (rows split between threads from 2¹⁵ values on): exactly
    ``X[:, start:start + mb]``, for a batch large enough to split and a small one."""
    from loopprop.train import COPY_MIN_VALUES, _copy_columns

    X = np.random.default_rng(0).standard_normal((785, 300))
    for rows, mb, start in ((785, 64, 101), (5, 7, 3)):
        assert (rows * mb >= COPY_MIN_VALUES) == (rows == 785)
        dst = np.full((rows, mb), np.nan)
        _copy_columns(dst, X[:rows], start, threads)
        np.testing.assert_array_equal(dst, X[:rows, start:start + mb])
