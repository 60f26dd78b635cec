"""gradcheck: centered finite differences, and what it reports when a gradient is NaN or the
step is not a positive number."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import HEADS, HIDDEN, problem, rand

import loopprop as lp


def test_gradcheck_reports_nan_gradients_as_nan():
    net = lp.Network([2, 2], ["sigmoid"], "mse", seed=0)
    X, Y = np.ones((2, 3)), np.zeros((2, 3))
    net.params[0][0][0, 0] = np.nan
    report = lp.gradcheck(net, X, Y, report=True)
    assert math.isnan(report.max_rel_error)
    assert not lp.gradcheck(net, X, Y) < 1e-6


@pytest.mark.parametrize("eps,exc", [(float("nan"), ValueError), (0.0, ValueError),
                                     (-1e-6, ValueError), ("small", TypeError)])
def test_gradcheck_validates_eps(eps, exc):
    net = lp.Network([2, 2], ["sigmoid"], "mse", seed=0)
    with pytest.raises(exc, match="eps"):
        lp.gradcheck(net, np.ones((2, 3)), np.zeros((2, 3)), eps=eps)




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
