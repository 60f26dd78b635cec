"""The single neuron of §4 (worked in §11, digit by digit) and the update rule of §10."""

import math

import numpy as np
import pytest
from helpers import DTYPES, assert_close, rand, torch_or_skip

import loopprop as lp
from loopprop import vectorized as vec


def test_worked_example_digit_by_digit():
    """Guide §11: x = 2, w = 0.5, b = 1, y = 1, sigmoid, L = ½(y − a)²."""
    s = lp.neuron_step(2, 0.5, 1, 1)
    assert s["z"] == 2.0
    assert round(s["a"], 4) == 0.8808
    # the guide prints L ≈ 0.00709; ½(1 − 0.8808)² = 0.0071043, so "≈" is within 2e-5
    assert abs(s["loss"] - 0.00709) < 2e-5
    assert round(s["loss"], 4) == 0.0071
    assert round(s["dL_da"], 4) == -0.1192
    assert round(s["da_dz"], 3) == 0.105
    assert round(s["dL_dz"], 4) == -0.0125
    assert round(s["dL_dw"], 3) == -0.025
    assert s["dL_db"] == s["dL_dz"]
    # and the exact values, from the closed forms
    a = 1 / (1 + math.exp(-2))
    assert_close("a", s["a"], a, 1e-15)
    assert_close("loss", s["loss"], 0.5 * (1 - a) ** 2, 1e-14)
    assert_close("dL_dw", s["dL_dw"], (a - 1) * a * (1 - a) * 2, 1e-14)


@pytest.mark.parametrize("activation", ["identity", "sigmoid", "tanh", "relu", "leaky_relu"])
@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy"])
def test_vector_neuron_matches_twin_and_torch(rng, activation, loss):
    if loss == "binary_cross_entropy" and activation != "sigmoid":
        with pytest.raises(ValueError, match="sigmoid"):
            lp.neuron_step([1.0], [1.0], 0.0, 1.0, activation=activation, loss=loss)
        return
    x, w = rand(rng, 5), rand(rng, 5)
    b, y = 0.3, 1.0
    s = lp.neuron_step(x, w, b, y, activation=activation, loss=loss)
    r = vec.neuron_step(x, w, b, y, activation=activation, loss=loss)
    for key in r:
        assert_close(key, s[key], r[key], 1e-12)
    torch = torch_or_skip()
    tw = torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True, dtype=torch.float64)
    z = tw @ torch.tensor(x) + tb
    if loss == "mse":
        a = {"identity": z * 1, "sigmoid": torch.sigmoid(z), "tanh": torch.tanh(z),
             "relu": torch.relu(z),
             "leaky_relu": torch.nn.functional.leaky_relu(z, 0.01)}[activation]
        L = 0.5 * (a - y) ** 2
    else:
        L = torch.nn.functional.binary_cross_entropy_with_logits(
            z, torch.tensor(y, dtype=torch.float64))
    L.backward()
    assert_close("loss", s["loss"], L.item(), 1e-10)
    assert_close("dL_dw", s["dL_dw"], tw.grad.numpy(), 1e-10)
    assert_close("dL_db", s["dL_db"], tb.grad.item(), 1e-10)


def test_saturated_bce_neuron_is_finite():
    s = lp.neuron_step(1000.0, 1.0, 0.0, 0.0, loss="binary_cross_entropy")
    assert all(np.isfinite(v) for v in (s["loss"], s["dL_da"], s["dL_dz"], s["dL_dw"]))
    assert_close("loss", s["loss"], 1000.0, 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["C", "F", "strided", "1d"])
def test_sgd_update_in_place(rng, dtype, layout):
    base = rand(rng, (5, 6), dtype)
    grad = rand(rng, (5, 6), dtype)
    if layout == "F":
        param = np.asfortranarray(base.copy())
    elif layout == "strided":
        holder = np.zeros((5, 12), dtype)
        holder[:, ::2] = base
        param = holder[:, ::2]
    elif layout == "1d":
        base, grad = base.ravel(), grad.ravel()
        param = base.copy()
    else:
        param = base.copy()
    expected = vec.sgd_update(base.copy(), grad, 0.1)
    out = lp.sgd_update(param, grad, 0.1)
    assert out is param
    assert_close("param", param, expected, 1e-6 if dtype == np.float32 else 1e-15)
    if layout == "strided":
        assert_close("holder", holder[:, ::2], expected, 1e-6 if dtype == np.float32 else 1e-15)
        assert (holder[:, 1::2] == 0).all()


def test_sgd_update_on_overlapping_views_matches_numpy():
    a = np.arange(6.0)
    lp.sgd_update(a[1:], a[:-1], 1.0)
    b = np.arange(6.0)
    b[1:] -= 1.0 * b[:-1]
    np.testing.assert_array_equal(a, b)  # [0, 1, 1, 1, 1, 1]


def test_sgd_update_on_0d_arrays():
    p = np.array(2.0)
    lp.sgd_update(p, np.array(1.0), 0.5)
    assert p[()] == 1.5


@pytest.mark.parametrize("dtype", DTYPES)
def test_threaded_sgd_and_momentum_are_the_formulas_on_any_thread_count(rng, dtype):
    """The epoch's SGD and momentum updates run over blocks split between threads (from two
    blocks on): one thread and two give the same bits, and both equal NumPy's
    ``θ − η·g`` and ``v ← βv + g; θ − η·v`` (three blocks and a partial one)."""
    from loopprop.kernels.optim import BLOCK, _momentum_threads, _sgd_threads

    n = 3 * BLOCK + 5
    theta, grad, vel = (rand(rng, n, dtype) for _ in range(3))
    lr, beta = dtype(0.05), dtype(0.9)
    outs = []
    for threads in (1, 2):
        t1, t2, v2 = theta.copy(), theta.copy(), vel.copy()
        _sgd_threads(t1, grad, lr, threads)
        _momentum_threads(t2, grad, v2, lr, beta, threads)
        outs.append((t1, t2, v2))
    for one, two in zip(*outs):
        np.testing.assert_array_equal(one, two)
    v_ref = beta * vel.astype(np.float64) + grad
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    assert_close("sgd", outs[0][0], theta.astype(np.float64) - lr * grad.astype(np.float64), rtol)
    assert_close("velocity", outs[0][2], v_ref, rtol)
    assert_close("momentum", outs[0][1], theta.astype(np.float64) - lr * v_ref, rtol)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n", [1, 5000, 3 * (1 << 16) + 5])
def test_threaded_zeroing_clears_every_value(rng, n, threads):
    """A batch's gradients start from zero (§12): every value of every block, the partial
    last one included, on one thread or split between two."""
    from loopprop.kernels.optim import _zero_threads

    v = rand(rng, n, np.float64) + 1.0
    _zero_threads(v, threads)
    np.testing.assert_array_equal(v, np.zeros(n))
