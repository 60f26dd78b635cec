"""Losses and their seeds (guide §9): MSE, softmax + CE (P − Y), sigmoid + BCE (σ(Z) − Y)."""

import numpy as np
import pytest
from helpers import DTYPES, RTOL, assert_close, numeric_grad, rand, torch_or_skip

import loopprop as lp
from loopprop import vectorized as vec
from decimal import Decimal, getcontext

SHAPES = [(1, 1), (3, 17), (10, 33), (17, 3)]


def labels_and_onehot(rng, c, m, dtype):
    y = rng.integers(0, c, size=m)
    Y = np.zeros((c, m), dtype=dtype)
    Y[y, np.arange(m)] = 1
    return y, Y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", SHAPES)
def test_mse_matches_twin_and_torch(rng, dtype, n, m):
    A, Y = rand(rng, (n, m), dtype), rand(rng, (n, m), dtype)
    rtol = RTOL[np.dtype(dtype)]
    loss, dA = lp.mse_loss(A, Y)
    rloss, rdA = vec.mse_loss(A, Y)
    assert_close("loss", loss, rloss, rtol)
    assert_close("dA", dA, rdA, rtol)
    torch = pytest.importorskip("torch")
    tA = torch.tensor(A, requires_grad=True)
    tl = 0.5 * ((tA - torch.tensor(Y)) ** 2).sum() / m
    tl.backward()
    assert_close("loss vs torch", loss, tl.item(), rtol)
    assert_close("dA vs torch", dA, tA.grad.numpy(), rtol)


@pytest.mark.parametrize("impl", ["tuned", "naive"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c,m", SHAPES)
def test_softmax_cross_entropy_labels_and_onehot(rng, impl, dtype, c, m):
    Z = rand(rng, (c, m), dtype, scale=3)
    y, Y = labels_and_onehot(rng, c, m, dtype)
    rtol = RTOL[np.dtype(dtype)]
    rloss, rdZ = vec.softmax_cross_entropy(Z, Y)
    for target in (y, Y):
        loss, dZ = lp.softmax_cross_entropy(Z, target, impl=impl)
        assert dZ.dtype == dtype
        assert_close("loss", loss, rloss, rtol)
        assert_close("dZ", dZ, rdZ, rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c,m", SHAPES)
def test_softmax_cross_entropy_matches_torch(rng, dtype, c, m):
    torch = torch_or_skip()
    Z = rand(rng, (c, m), dtype, scale=3)
    y, _ = labels_and_onehot(rng, c, m, dtype)
    tZ = torch.tensor(Z, requires_grad=True)
    # torch wants examples as rows: transpose in, and its default reduction is the batch mean
    tl = torch.nn.functional.cross_entropy(tZ.T, torch.tensor(y))
    tl.backward()
    loss, dZ = lp.softmax_cross_entropy(Z, y)
    rtol = RTOL[np.dtype(dtype)]
    assert_close("loss", loss, tl.item(), rtol)
    assert_close("dZ", dZ, tZ.grad.numpy(), rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", SHAPES)
def test_sigmoid_bce_matches_twin_and_torch(rng, dtype, n, m):
    Z = rand(rng, (n, m), dtype, scale=3)
    Y = rng.integers(0, 2, size=(n, m)).astype(dtype)
    rtol = RTOL[np.dtype(dtype)]
    loss, dZ = lp.sigmoid_binary_cross_entropy(Z, Y)
    rloss, rdZ = vec.sigmoid_binary_cross_entropy(Z, Y)
    assert_close("loss", loss, rloss, rtol)
    assert_close("dZ", dZ, rdZ, rtol)
    torch = pytest.importorskip("torch")
    tZ = torch.tensor(Z, requires_grad=True)
    tl = torch.nn.functional.binary_cross_entropy_with_logits(
        tZ, torch.tensor(Y), reduction="sum") / m
    tl.backward()
    assert_close("loss vs torch", loss, tl.item(), rtol)
    assert_close("dZ vs torch", dZ, tZ.grad.numpy(), rtol)


def test_seeds_match_finite_differences(rng):
    Z = rand(rng, (4, 5), scale=2)
    y, Y = labels_and_onehot(rng, 4, 5, np.float64)
    B = rng.uniform(size=(4, 5))
    cases = [
        ("mse", lambda: lp.mse_loss(Z, B)),
        ("softmax_ce", lambda: lp.softmax_cross_entropy(Z, y)),
        ("sigmoid_bce", lambda: lp.sigmoid_binary_cross_entropy(Z, B)),
    ]
    for name, f in cases:
        assert_close(name, f()[1], numeric_grad(lambda f=f: f()[0], Z), 1e-6)


def test_soft_targets_are_probability_distributions(rng):
    Z = rand(rng, (3, 4))
    Y = rng.dirichlet(np.ones(3), size=4).T
    loss, dZ = lp.softmax_cross_entropy(Z, Y)
    rloss, rdZ = vec.softmax_cross_entropy(Z, Y)
    assert_close("loss", loss, rloss, 1e-10)
    assert_close("dZ", dZ, rdZ, 1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tuned_cross_entropy_equals_naive_twin(rng, dtype):
    Z = rand(rng, (10, 1023), dtype, scale=30)
    y = rng.integers(0, 10, 1023)
    lt, dt = lp.softmax_cross_entropy(Z, y, impl="tuned")
    ln, dn = lp.softmax_cross_entropy(Z, y, impl="naive")
    assert_close("loss", lt, ln, RTOL[np.dtype(dtype)])
    assert_close("dZ", dt, dn, RTOL[np.dtype(dtype)])


def _exact_softmax_ce_grad(Z, labels):
    getcontext().prec = 60
    c, m = Z.shape
    out = np.zeros_like(Z)
    for k in range(m):
        e = [Decimal(float(Z[i, k])).exp() for i in range(c)]
        s = sum(e)
        for i in range(c):
            out[i, k] = float((e[i] / s - (1 if i == labels[k] else 0)) / m)
    return out


def test_softmax_cross_entropy_gradient_is_accurate_for_large_logits():
    Z = np.array([[46.7061, -96.2181], [22.5558, -10.5883]])
    y = np.array([0, 1])
    exact = _exact_softmax_ce_grad(Z, y)
    scale = np.abs(exact).max()
    one_hot = np.eye(2)[:, y]
    for name, dZ in (("naive labels", lp.softmax_cross_entropy(Z, y, impl="naive")[1]),
                     ("tuned labels", lp.softmax_cross_entropy(Z, y)[1]),
                     ("one-hot", lp.softmax_cross_entropy(Z, one_hot)[1]),
                     ("vectorized", vec.softmax_cross_entropy(Z, y)[1])):
        err = np.abs(dZ - exact).max() / scale
        assert err < 2e-6, f"{name}: relative error {err:.2e} (was 8.9e-5 via exp(Z − lse))"


def test_softmax_cross_entropy_without_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one class"):
        lp.softmax_cross_entropy(np.ones((0, 3)), np.ones((0, 3)))
