"""Numerical stability (the README's "Conventions"): |z| up to 1e4, finite everywhere, no warnings.

pyproject's ``filterwarnings = error::RuntimeWarning`` turns any NumPy overflow or invalid-value
warning into a failure.
"""

import warnings

import numpy as np
import pytest
from helpers import DTYPES

import loopprop as lp

EXTREME = np.array([[-1e4, -1e3, -50.0, 0.0, 50.0, 1e3, 1e4]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softmax", "relu", "leaky_relu"])
def test_activations_are_finite_at_extremes(dtype, name):
    Z = np.vstack([EXTREME, -EXTREME, EXTREME[:, ::-1]]).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A = lp.activation_forward(name, Z)
        dZ = lp.activation_backward(name, np.ones_like(Z), Z)
    assert np.isfinite(A).all() and np.isfinite(dZ).all()
    if name == "sigmoid":
        assert A[0, 0] == 0.0 and A[0, -1] == 1.0
    if name == "softmax":
        np.testing.assert_allclose(A.sum(axis=0), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_confident_wrong_answer_costs_large_finite_loss(dtype):
    Z = np.array([[1e4], [-1e4]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, dZ = lp.softmax_cross_entropy(Z, np.array([1]))
        bloss, bdZ = lp.sigmoid_binary_cross_entropy(Z, np.array([[0.0], [1.0]], dtype=dtype))
    assert np.isfinite(loss) and loss == pytest.approx(2e4)
    assert np.isfinite(dZ).all() and dZ[:, 0] == pytest.approx([1.0, -1.0])
    assert np.isfinite(bloss) and bloss == pytest.approx(2e4)
    assert np.isfinite(bdZ).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_confident_right_answer_costs_nothing(dtype):
    loss, dZ = lp.softmax_cross_entropy(np.array([[1e4], [-1e4]], dtype=dtype), np.array([0]))
    assert loss == 0.0 and np.isfinite(dZ).all()


def test_wide_random_logits_stay_finite():
    rng = np.random.default_rng(0)
    Z = rng.uniform(-1e4, 1e4, size=(10, 64))
    y = rng.integers(0, 10, 64)
    loss, dZ = lp.softmax_cross_entropy(Z, y)
    assert np.isfinite(loss) and np.isfinite(dZ).all()
